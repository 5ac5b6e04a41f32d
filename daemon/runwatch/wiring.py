"""Config in, live objects out: the sources a tick reads. Shared by the CLI and the daemon."""

from __future__ import annotations

from runwatch.config import Config, ConfigError
from runwatch.sources.base import Source


def build_sources(config: Config) -> list[Source]:
    """One live source per configured source, in config order.

    The ``wandb`` source arrives with the W&B API issue; until then a config that names
    one is refused at load time rather than silently skipped.
    """
    from runwatch.sources.rundir import RundirSource

    sources: list[Source] = []
    for spec in config.sources:
        if spec.type == "rundir":
            sources.append(RundirSource(name=spec.name, paths=[str(p) for p in spec.paths],
                                        depth=spec.depth))
        else:
            origin = config.path or "config"
            raise ConfigError([f"{origin}: source {spec.name!r}: type {spec.type!r} is not"
                               " supported by this version of runwatch"])
    return sources
