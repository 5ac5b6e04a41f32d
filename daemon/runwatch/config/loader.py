"""Reading the daemon config file: parse, expand, validate, cross-check — all errors at once."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from runwatch.config.document import Document, PathKey, Problem, display_path, read
from runwatch.config.errors import SECRET_FIELDS, ConfigError, problems_from
from runwatch.config.models import Config, RuleFiles
from runwatch.config.receivers import Receiver
from runwatch.config.rules import RuleSet

# An extra check of one receiver that validated: (where in the receiver, message) pairs,
# ``(("slack", "token"), "receiver 'x': ...")``. ``runwatch validate`` passes notify's.
ReceiverCheck = Callable[[Receiver], Iterable[tuple[PathKey, str]]]


def load_config(path: Path, *, env: Mapping[str, str] | None = None) -> Config:
    """The config in ``path``, with ``${VAR}`` expanded from ``env`` (default: the process
    environment). Raises :class:`ConfigError` listing every problem, ``file:line: ...``."""
    config, problems, _ = _validate(path, env, None)
    if problems:
        raise ConfigError.from_problems(problems)
    assert config is not None
    return config


def load_all(path: Path, *, env: Mapping[str, str] | None = None) -> tuple[Config, RuleSet]:
    """The config and the rules it names: what ``runwatch`` needs at start and on reload.
    Raises :class:`ConfigError` with every problem of both (see :func:`check_all`)."""
    checked = check_all(path, env=env)
    if checked.errors:
        raise ConfigError(list(checked.errors))
    assert checked.config is not None and checked.rule_set is not None
    return checked.config, checked.rule_set


@dataclass(frozen=True, kw_only=True, slots=True)
class Checked:
    """A config file and its rule files, checked: every error, ``file:line: ...``, and the
    config and the rules when they are valid themselves (the errors may be about the
    references between their parts, or found by extra checks)."""

    config: Config | None
    rule_set: RuleSet | None
    errors: tuple[str, ...]


def check_all(path: Path, *, env: Mapping[str, str] | None = None,
              receiver_checks: ReceiverCheck | None = None) -> Checked:
    """Every problem of the config in ``path`` and of the rule files it names, at once: the
    rule files are read even when the rest of the config is invalid. ``receiver_checks``
    adds its findings on each receiver that is valid (``runwatch validate`` passes
    notify's)."""
    config, problems, rule_files = _validate(path, env, receiver_checks)
    errors = [str(p) for p in problems]
    rule_set = None
    if rule_files is not None:
        try:
            rule_set = rule_files.rule_set()
        except ConfigError as exc:
            errors += exc.errors
    return Checked(config=config, rule_set=rule_set, errors=tuple(errors))


def _validate(path: Path, env: Mapping[str, str] | None, receiver_checks: ReceiverCheck | None,
              ) -> tuple[Config | None, list[Problem], RuleFiles | None]:
    """The config (None if invalid), every problem in line order, and the rule files part
    when that alone is valid."""
    shown = display_path(path)
    doc, problems = read(path, shown, what="config file",
                         env=os.environ if env is None else env)
    if doc is None:
        return None, problems or [Problem(file=shown, line=1, message="empty config file")], None
    if not isinstance(doc.data, dict):
        problems.append(doc.problem((), "expected a mapping of settings at the top level"))
        return None, problems, None
    problems.extend(_receiver_references(doc))
    absolute = Path(os.path.abspath(path))
    context = {"base_dir": absolute.parent, "path": absolute}
    config = None
    try:
        config = Config.model_validate(doc.data, context=context)
    except ValidationError as exc:
        problems.extend(problems_from(exc, doc, root=Config))
    if config is not None:
        problems.extend(_source_names(config, doc))
    if receiver_checks is not None:
        problems.extend(_checked_receivers(doc, context, receiver_checks))
    rule_files = config if config is not None else _rule_files(doc, context)
    return config, sorted(problems, key=lambda p: p.line or 0), rule_files


def _rule_files(doc: Document, context: dict[str, Any]) -> RuleFiles | None:
    part = {key: doc.data[key] for key in RuleFiles.model_fields if key in doc.data}
    try:
        return RuleFiles.model_validate(part, context=context)
    except ValidationError:
        return None  # the config's own errors say why


def _checked_receivers(doc: Document, context: dict[str, Any],
                       checks: ReceiverCheck) -> list[Problem]:
    """What ``checks`` finds in each receiver that validates on its own, at its line; not
    in one holding a ``${VAR}`` that could not be expanded (its text is no setting)."""
    problems = []
    for path, raw in _items(doc.data, ("receivers",)):
        if any(p[:len(path)] == path for p in doc.unexpanded):
            continue
        try:
            receiver = Receiver.model_validate(raw, context=context)
        except ValidationError:
            continue  # the config's errors say why
        for where, message in checks(receiver):
            where = (*path, *where)
            if where not in doc.lines and where[-1] in SECRET_FIELDS:
                where = (*where[:-1], f"{where[-1]}_file")  # read from a file
            problems.append(doc.problem(where, message))
    return problems


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
