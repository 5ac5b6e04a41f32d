"""Reading the daemon config file: parse, expand, validate, cross-check — all errors at once."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from runwatch.config.document import Document, PathKey, Problem, display_path, parse
from runwatch.config.errors import ConfigError, problems_from
from runwatch.config.models import Config
from runwatch.config.rules import RuleSet


def load_config(path: Path, *, env: Mapping[str, str] | None = None) -> Config:
    """The config in ``path``, with ``${VAR}`` expanded from ``env`` (default: the process
    environment). Raises :class:`ConfigError` listing every problem, ``file:line: ...``."""
    shown = display_path(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError([f"{shown}: cannot read config file: {reason}"]) from None
    doc, problems = parse(text, shown, env=os.environ if env is None else env)
    if doc is None:
        raise ConfigError.from_problems(
            problems or [Problem(file=shown, line=1, message="empty config file")])
    if not isinstance(doc.data, dict):
        problems.append(doc.problem((), "expected a mapping of settings at the top level"))
        raise ConfigError.from_problems(problems)
    problems.extend(_receiver_references(doc))
    absolute = Path(os.path.abspath(path))
    config = None
    try:
        config = Config.model_validate(
            doc.data, context={"base_dir": absolute.parent, "path": absolute})
    except ValidationError as exc:
        problems.extend(problems_from(exc, doc, root=Config))
    if config is not None:
        problems.extend(_source_names(config, doc))
    if problems:
        raise ConfigError.from_problems(sorted(problems, key=lambda p: p.line or 0))
    assert config is not None
    return config


def load_all(path: Path, *, env: Mapping[str, str] | None = None) -> tuple[Config, RuleSet]:
    """The config and the rules it names: what ``runwatch`` needs at start and on reload."""
    config = load_config(path, env=env)
    return config, config.rule_set()


def default_config(rundir_paths: Iterable[str | os.PathLike[str]], *,
                   state_dir: str | os.PathLike[str] | None = None) -> Config:
    """The config without a file: one rundir source over ``rundir_paths`` (relative to the
    working directory), the packaged default rules, SQLite under the state directory."""
    data: dict[str, Any] = {
        "sources": [{"type": "rundir", "path": [os.fspath(p) for p in rundir_paths]}],
    }
    if state_dir is not None:
        data["state_dir"] = os.fspath(state_dir)
    try:
        return Config.model_validate(data, context={"base_dir": Path.cwd()})
    except ValidationError as exc:
        doc = Document(file=None, data=data)
        raise ConfigError.from_problems(problems_from(exc, doc, root=Config)) from None


def _receiver_references(doc: Document) -> list[Problem]:
    """Receiver names unique, and every name a route or the digest uses defined. Checked on
    the raw data so that they are reported alongside every other error."""
    problems = []
    defined: dict[str, PathKey] = {}
    for path, receiver in _items(doc.data, ("receivers",)):
        name = receiver.get("name") if isinstance(receiver, dict) else None
        if not isinstance(name, str):
            continue
        if name in defined:
            first = f"{doc.file}:{doc.line_of(defined[name])}"
            problems.append(doc.problem(
                (*path, "name"), f'receivers[{path[-1]}]: receiver "{name}" already defined'
                                 f" at {first}"))
        else:
            defined[name] = (*path, "name")
    for path, route in _items(doc.data, ("routes",)):
        for where, name in _names(route, (*path, "receivers")):
            if name not in defined:
                problems.append(doc.problem(
                    where, f'routes[{path[-1]}]: undefined receiver "{name}" used in route'))
    digest = doc.data.get("digest")
    for where, name in _names(digest, ("digest", "receivers")):
        if name not in defined:
            problems.append(doc.problem(
                where, f'digest: undefined receiver "{name}" used in digest'))
    return problems


def _items(data: dict[str, Any], path: PathKey) -> list[tuple[PathKey, Any]]:
    value = data.get(path[-1])
    return [((*path, i), v) for i, v in enumerate(value)] if isinstance(value, list) else []


def _names(parent: Any, path: PathKey) -> list[tuple[PathKey, str]]:
    """The names at ``path`` inside ``parent`` (one name or a list of them)."""
    value = parent.get(path[-1]) if isinstance(parent, dict) else None
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, list):
        return [((*path, i), v) for i, v in enumerate(value) if isinstance(v, str)]
    return []


def _source_names(config: Config, doc: Document) -> list[Problem]:
    problems = []
    first: dict[str, int] = {}
    for i, source in enumerate(config.sources):
        if source.name in first:
            where = f"{doc.file}:{doc.line_of(('sources', first[source.name]))}"
            problems.append(doc.problem(
                ("sources", i), f"sources[{i}]: source '{source.name}' already defined at"
                                f" {where}; give each source a distinct name"))
        else:
            first[source.name] = i
    return problems
