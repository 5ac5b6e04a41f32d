"""Rule files: YAML lists under ``rules:``, every rule validated, every error collected."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from runwatch import keys
from runwatch.checks import RULE_ADAPTER, Rule
from runwatch.config.document import Document, Problem, display_path, read
from runwatch.config.errors import ConfigError, problems_from


@dataclass(frozen=True, kw_only=True, slots=True)
class RuleSet:
    """The rules of every file, in file order, with where each was defined."""

    rules: tuple[Rule, ...]
    origins: Mapping[str, str]  # rule name → "file:line"
    aliases: Mapping[str, tuple[str, ...]]  # the defaults with the configured ones merged
    files: tuple[str, ...] = field(default=())


def rule_files(pattern: str, base_dir: Path) -> list[str]:
    """The files ``pattern`` (a glob, ``**`` allowed, relative to ``base_dir``) matches."""
    full = os.path.normpath(base_dir / Path(pattern).expanduser())
    return sorted(p for p in glob.glob(full, recursive=True) if os.path.isfile(p))


def load_rules(patterns: Iterable[str], base_dir: Path,
               aliases: Mapping[str, Iterable[str]] | None = None) -> RuleSet:
    """Every rule in the files ``patterns`` match; raises :class:`ConfigError` with every
    problem of every file."""
    problems: list[Problem] = []
    files: list[str] = []
    for pattern in patterns:
        matched = rule_files(pattern, base_dir)
        if not matched:
            problems.append(Problem(file=None, line=None,
                                    message=f"rules: no rule file matches '{pattern}'"))
        files.extend(f for f in matched if f not in files)
    merged = keys.merge_aliases(aliases)
    collector = _Collector(merged)
    for file in files:
        problems.extend(collector.load(file))
    if problems:
        raise ConfigError.from_problems(problems)
    return RuleSet(rules=tuple(collector.rules), origins=MappingProxyType(collector.origins),
                   aliases=MappingProxyType(merged),
                   files=tuple(display_path(f) for f in files))


class _Collector:
    def __init__(self, aliases: Mapping[str, tuple[str, ...]]):
        self.aliases = aliases
        self.rules: list[Rule] = []
        self.origins: dict[str, str] = {}  # valid rules
        self.seen: dict[str, str] = {}  # every named rule, valid or not

    def load(self, file: str) -> list[Problem]:
        shown = display_path(file)
        doc, problems = read(file, shown, what="rule file")
        if doc is None:
            return problems or [Problem(
                file=shown, line=1,
                message="empty rule file: expected a mapping with a 'rules:' list")]
        problems.extend(self._items(doc))
        return sorted(problems, key=lambda p: p.line or 0)

    def _items(self, doc: Document) -> list[Problem]:
        data = doc.data
        if not isinstance(data, dict):
            return [doc.problem((), "expected a mapping with a 'rules:' list at the top level,"
                                    f" got {_kind(data)}")]
        problems = [doc.problem((key,), f"unknown top-level key '{key}' (expected 'rules')")
                    for key in data if key != "rules"]
        if "rules" not in data:
            problems.append(doc.problem((), "missing 'rules:' (a rule file is a mapping with"
                                            " a 'rules:' list)"))
            return problems
        items = data["rules"]
        if not isinstance(items, list):
            problems.append(doc.problem(("rules",), f"rules: expected a list, got {_kind(items)}"))
            return problems
        for i, item in enumerate(items):
            problems.extend(self._rule(doc, i, item))
        return problems

    def _rule(self, doc: Document, i: int, item: Any) -> list[Problem]:
        name = item.get("name") if isinstance(item, dict) else None
        where = f"{doc.file}:{doc.line_of(('rules', i))}"
        if isinstance(name, str):
            if name in self.seen:
                return [doc.problem(("rules", i, "name"),
                                    f"rule '{name}' already defined at {self.seen[name]}")]
            self.seen[name] = where
        prefix = f"rule '{name}'" if isinstance(name, str) else f"rules[{i}]"
        try:
            rule = RULE_ADAPTER.validate_python(item)
        except ValidationError as exc:
            return problems_from(exc, doc, base=("rules", i), root=Rule, prefix=prefix)
        problems = [
            doc.problem(("rules", i, "metric"),
                        f"{prefix}: metric '{metric}' is an alias with no keys")
            for metric in rule.metrics()
            if metric in self.aliases and not self.aliases[metric]
        ]
        if not problems:
            self.rules.append(rule)
            self.origins[rule.name] = where
        return problems


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return "nothing (null)" if value is None else f"{value!r}"
