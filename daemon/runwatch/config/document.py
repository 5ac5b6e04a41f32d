"""YAML documents that remember the line of every value, with ``${VAR}`` expansion.

A config error is only useful with its file and line, so a document is composed into
PyYAML's node tree and built by hand: every mapping key and sequence item records its line
under its path (``("routes", 0, "receivers")``), and a validation error's ``loc`` is mapped
back to the nearest recorded line.

A file is read by a daemon that must outlive a bad one (a reload re-reads it), so what a
file may cost is bounded: its size, its nesting, and how much its aliases expand — a
kilobyte of "billion laughs" aliases would otherwise build gigabytes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from runwatch.files import open_regular

PathKey = tuple[str | int, ...]

# What one file may cost. Config files are a few kilobytes; a team's rule file may hold
# thousands of rules (some 12 values each). Pure-Python PyYAML takes some 60 µs and 1 kB a
# value, so these keep the worst file to a few seconds and about a hundred megabytes.
MAX_FILE_BYTES = 1 << 20
MAX_VALUES = 100_000  # values (nodes) in the file as written
MAX_DEPTH = 64  # nesting levels (a config needs about 8)
# Values built through aliases beyond the file's own: anchors for shared settings take
# a few per value written (ALIAS_RATIO); a "billion laughs" of a kilobyte, billions.
MAX_ALIASED = 10_000
ALIAS_RATIO = 10


@dataclass(frozen=True, kw_only=True, slots=True)
class Problem:
    """One error, printed as ``file:line: message``."""

    file: str | None
    line: int | None
    message: str

    def __str__(self) -> str:
        if self.file is None:
            return self.message
        if self.line is None:
            return f"{self.file}: {self.message}"
        return f"{self.file}:{self.line}: {self.message}"


def format_path(path: PathKey) -> str:
    """``("routes", 0, "receivers")`` → ``routes[0].receivers``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def at(path: PathKey, message: str) -> str:
    """``message`` prefixed with the dotted path it is about, when there is one."""
    return f"{format_path(path)}: {message}" if path else message


@dataclass(frozen=True, kw_only=True, slots=True)
class Document:
    """A parsed YAML file: plain data plus the line of every key and item."""

    file: str | None
    data: Any
    lines: Mapping[PathKey, int] = field(default_factory=dict)
    # Values that failed ${VAR} expansion: their validation errors would only repeat it.
    unexpanded: frozenset[PathKey] = frozenset()

    def line_of(self, path: PathKey) -> int | None:
        """The line of ``path``, else of its nearest recorded ancestor."""
        for end in range(len(path), -1, -1):
            if (line := self.lines.get(path[:end])) is not None:
                return line
        return None

    def problem(self, path: PathKey, message: str) -> Problem:
        return Problem(file=self.file, line=self.line_of(path), message=message)


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: ``no``, ``on``, ``off`` stay strings (a project
    named NO is a project, not False); pydantic still reads them as booleans where a field
    wants one. Nesting and size are bounded."""

    _depth = 0
    _values = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        # PyYAML composes recursively: past Python's recursion limit a deep file would
        # raise RecursionError, a traceback. Refused well before, where it gets too deep.
        problem = (f"nested deeper than {MAX_DEPTH} levels" if self._depth >= MAX_DEPTH
                   else f"more than {MAX_VALUES:,} values" if self._values >= MAX_VALUES
                   else None)
        if problem is not None:
            raise yaml.composer.ComposerError(None, None, problem, self.peek_event().start_mark)
        self._values += 1
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def read(path: str | os.PathLike[str], file: str, *, what: str,
         env: Mapping[str, str] | None = None) -> tuple[Document | None, list[Problem]]:
    """The document in the file at ``path``, shown as ``file``; ``what`` names the kind of
    file in messages ("config file"). Reads no more than :data:`MAX_FILE_BYTES`."""
    try:
        with open_regular(os.fspath(path)) as stream:  # a FIFO must not block a reload
            data = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        return None, [Problem(file=file, line=None,
                              message=f"cannot read {what}: {exc.strerror or exc}")]
    if len(data) > MAX_FILE_BYTES:
        return None, [Problem(
            file=file, line=data.count(b"\n", 0, MAX_FILE_BYTES) + 1,
            message=f"{what} is larger than {MAX_FILE_BYTES >> 10} KiB: not read")]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, [Problem(file=file, line=data.count(b"\n", 0, exc.start) + 1,
                              message=f"cannot read {what}: not UTF-8 text")]
    return parse(text, file, env=env)


def parse(text: str, file: str | None, *, env: Mapping[str, str] | None = None,
          ) -> tuple[Document | None, list[Problem]]:
    """The document in ``text``; None when it is empty or not YAML (with the problem).

    With ``env``, ``${VAR}`` and ``${VAR:-default}`` in string values are expanded and
    ``$$`` is a literal dollar.
    """
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, []
        _check_aliases(root)
        builder = _Builder(loader, file, env)
        data = builder.build(root, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "unreadable"
        if exc.problem and exc.context and exc.context_mark:
            problem += f" ({exc.context} at line {exc.context_mark.line + 1})"
        return None, [Problem(file=file, line=line, message=f"invalid YAML: {problem}")]
    except yaml.YAMLError as exc:
        return None, [Problem(file=file, line=None, message=f"invalid YAML: {exc}")]
    except _TooAliased as exc:
        return None, [Problem(file=file, line=exc.line,
                              message=f"YAML aliases expand to more than {MAX_ALIASED:,}"
                                      " values: not read")]
    finally:
        loader.dispose()
    document = Document(file=file, data=data, lines=builder.lines,
                        unexpanded=frozenset(builder.unexpanded))
    return document, builder.problems


class _TooAliased(Exception):
    def __init__(self, line: int):
        self.line = line


def _check_aliases(root: yaml.Node) -> None:
    """Raise :class:`_TooAliased` at the line of the alias that takes building ``root``
    past :data:`MAX_ALIASED` values beyond the file's own nodes (or ALIAS_RATIO times the
    nodes met so far, for a long file that shares anchors).

    Counted on the node graph, where an alias is one more reference to its anchor's node
    (``<<: *a`` too): each node's size is worked out once, so nothing is expanded to count.
    """
    sizes: dict[int, int] = {}  # node id → values built under it, aliases followed
    aliased = 0

    def size(node: yaml.Node, line: int) -> int:
        nonlocal aliased
        if (known := sizes.get(id(node))) is not None:  # a second reference: an alias
            aliased += known
            if aliased > max(MAX_ALIASED, ALIAS_RATIO * len(sizes)):
                raise _TooAliased(line + 1)
            return known
        sizes[id(node)] = 1  # a recursive alias meets this; the builder reports it
        total = 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                total += size(key, key.start_mark.line) + size(value, key.start_mark.line)
        elif isinstance(node, yaml.SequenceNode):  # an alias item has no line of its own
            total += sum(size(item, node.start_mark.line) for item in node.value)
        sizes[id(node)] = total
        return total

    size(root, root.start_mark.line)


class _Builder:
    def __init__(self, loader: _Loader, file: str | None, env: Mapping[str, str] | None):
        self.loader = loader
        self.file = file
        self.env = env
        self.lines: dict[PathKey, int] = {}
        self.problems: list[Problem] = []
        self.unexpanded: set[PathKey] = set()
        self._open: set[int] = set()  # nodes being built: a recursive alias would loop

    def _problem(self, node: yaml.Node, message: str) -> None:
        self.problems.append(
            Problem(file=self.file, line=node.start_mark.line + 1, message=message)
        )

    def build(self, node: yaml.Node, path: PathKey) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if id(node) in self._open:
            self._problem(node, at(path, "recursive YAML alias"))
            return None
        self._open.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            return self._scalar(node, path)
        finally:
            self._open.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: PathKey) -> dict[str, Any]:
        own = sum(1 for key, _ in node.value if key.tag != "tag:yaml.org,2002:merge")
        self.loader.flatten_mapping(node)  # `<<: *anchor` pairs first, then the node's own
        merged = len(node.value) - own
        result: dict[str, Any] = {}
        written: set[str] = set()  # keys the node itself gives; they override merged ones
        # A merged value the node overrides is not built at all (a thousand rules merging
        # one anchor would otherwise each build, then forget, its values).
        overridden = {str(k.value) for k, _ in node.value[merged:]
                      if isinstance(k, yaml.ScalarNode)}
        for index, (key_node, value_node) in enumerate(node.value):
            if index < merged and isinstance(key_node, yaml.ScalarNode) \
                    and str(key_node.value) in overridden:
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self._problem(key_node, at(path, "a mapping key must be a plain string"))
                continue
            # Keys are names: take them verbatim (`on:` is "on", not True).
            key = str(key_node.value)
            if key in written:
                self._problem(key_node, at(path, f"duplicate key '{key}'"))
                continue
            if index >= merged:
                written.add(key)
            if key in result:  # overriding a merged value: forget where that one came from
                self.lines = {p: n for p, n in self.lines.items()
                              if p[: len(path) + 1] != (*path, key)}
            self.lines[(*path, key)] = key_node.start_mark.line + 1
            result[key] = self.build(value_node, (*path, key))
        return result

    def _scalar(self, node: yaml.Node, path: PathKey) -> Any:
        try:
            value = self.loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            self._problem(node, at(path, f"invalid YAML: {exc.problem}"))
            return None
        except ValueError as exc:  # a timestamp-shaped scalar that is no date, e.g.
            self._problem(node, at(path, f"invalid YAML value: {exc}"))
            return None
        if self.env is None or not isinstance(value, str):
            return value
        try:
            return expand(value, self.env)
        except ExpansionError as exc:
            self._problem(node, at(path, str(exc)))
            self.unexpanded.add(path)
            return value


class ExpansionError(ValueError):
    """A ``${...}`` reference that cannot be expanded; names the variable, never a value."""


_REFERENCE = re.compile(r"\$(?:(\$)|\{([^}]*)\}|(\{))")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def expand(text: str, env: Mapping[str, str]) -> str:
    """``text`` with ``${VAR}``, ``${VAR:-default}`` (default when unset or empty) and
    ``$$`` replaced; any other ``$`` is literal."""

    def replace(m: re.Match[str]) -> str:
        if m.group(1):
            return "$"
        if m.group(3):
            raise ExpansionError("unterminated '${' (write '$$' for a literal dollar)")
        name, sep, default = m.group(2).partition(":-")
        if not _NAME.match(name):
            raise ExpansionError(
                f"invalid variable reference '${{{m.group(2)}}}':"
                " expected ${NAME} or ${NAME:-default}"
            )
        value = env.get(name)
        if sep:
            return value if value else default
        if value is None:
            raise ExpansionError(f"environment variable {name} is not set")
        return value

    return _REFERENCE.sub(replace, text)


def display_path(path: str | os.PathLike[str]) -> str:
    """``path`` as an error message shows it: relative to the working directory when it is
    inside it (``rules/gpu.yaml``), absolute otherwise; symlinks are not resolved."""
    absolute = os.path.abspath(path)
    relative = os.path.relpath(absolute)
    return absolute if relative.startswith(os.pardir) else relative
