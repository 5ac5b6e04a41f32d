"""Config in, live objects out: the sources a tick reads. Shared by the CLI and the daemon."""

from __future__ import annotations

from runwatch.config import Config
from runwatch.sources.base import Source


def build_sources(config: Config) -> list[Source]:
    """One live source per configured source, in config order. Building one contacts
    nothing: a W&B source connects on its first poll (or ``check_online``)."""
    from runwatch.sources.rundir import RundirSource
    from runwatch.sources.wandb_api import WandbApiSource

    sources: list[Source] = []
    for spec in config.sources:
        if spec.type == "rundir":
            sources.append(RundirSource(name=spec.name, paths=[str(p) for p in spec.paths],
                                        depth=spec.depth, rescan=spec.rescan,
                                        dead_after=spec.dead_after,
                                        first_read=spec.first_read))
        else:
            sources.append(WandbApiSource(spec))
    return sources
