"""Pydantic's validation errors as one human line each, at the YAML line they are about."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, NamedTuple, Union

from pydantic import BaseModel, ValidationError

from runwatch.config.document import Document, PathKey, Problem, at


class ConfigError(Exception):
    """Every error found in a config or rule file, one ``file:line: message`` line each."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = list(errors)

    @classmethod
    def from_problems(cls, problems: Iterable[Problem]) -> ConfigError:
        return cls([str(p) for p in problems])


# Fields that hold credentials; each may be given as ``<name>_file`` instead.
SECRET_FIELDS = frozenset({"api_key", "token", "webhook_url", "password", "bearer_token",
                           "hmac_secret"})
# Fields whose input is never echoed back in a message (a store URL may hold a password).
_NOT_SHOWN = SECRET_FIELDS | {"store"}
# Keys that select a member of a discriminated union; pydantic puts the tag in ``loc``.
_DISCRIMINATORS = ("kind", "type")

_EXPECTED = {
    "string_type": "a string", "str_type": "a string",
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number",
    "bool_type": "true or false", "bool_parsing": "true or false",
    "list_type": "a list", "tuple_type": "a list", "set_type": "a list",
    "dict_type": "a mapping", "mapping_type": "a mapping", "model_type": "a mapping",
    "model_attributes_type": "a mapping", "dataclass_type": "a mapping",
    "datetime_type": "a date and time", "datetime_parsing": "a date and time",
    "datetime_from_date_parsing": "a date and time", "none_required": "nothing (null)",
}
_BOUNDS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="),
           "less_than": ("lt", "<"), "less_than_equal": ("le", "<=")}


class _Located(NamedTuple):
    data_path: PathKey  # keys present in the data: where the line comes from
    shown: PathKey  # the path the message names (a missing field's name included)
    via_union: bool  # reached through the name of a union member
    error: Mapping[str, Any]


def problems_from(exc: ValidationError, doc: Document, *, base: PathKey = (),
                  root: Any = None, prefix: str = "") -> list[Problem]:
    """One problem per distinct error in ``exc``, which validated ``doc.data`` at ``base``.

    ``root`` is the validated type (a model or a union), used to suggest field names;
    ``prefix`` (``rule 'x'``) starts every message. The errors of one value against every
    member of a plain union are merged into one.
    """
    data = _walk(doc.data, base)
    located = [_locate(error, data) for error in exc.errors(include_url=False)]
    located = [
        entry for entry in located
        if not any((*base, *entry.data_path)[: len(p)] == p for p in doc.unexpanded)
        and not _said_by_another(entry, located)
    ]
    unions: dict[PathKey, list[Mapping[str, Any]]] = {}
    firsts = []
    for entry in located:
        if entry.via_union and entry.error["type"] in _EXPECTED:
            unions.setdefault(entry.shown, []).append(entry.error)
            if len(unions[entry.shown]) > 1:
                continue
        firsts.append(entry)
    problems = []
    for entry in firsts:
        union = unions.get(entry.shown, [])
        message = (_union_message(union, entry.shown) if len(union) > 1
                   else _message(entry.error, entry.shown, root))
        problems.append(doc.problem((*base, *entry.data_path),
                                    f"{prefix}: {message}" if prefix else message))
    return problems


def _said_by_another(entry: _Located, located: list[_Located]) -> bool:
    """A list whose only item failed is also "too short": the item's error says it all."""
    n = len(entry.data_path)
    return entry.error["type"] == "too_short" and any(
        len(other.data_path) > n and other.data_path[:n] == entry.data_path
        for other in located)


def _walk(data: Any, path: PathKey) -> Any:
    for part in path:
        data = data[part]
    return data


def _locate(error: Mapping[str, Any], data: Any) -> _Located:
    """Map the error's ``loc`` onto the data, skipping the names pydantic adds for union
    members and discriminator tags."""
    loc = error["loc"]
    node = data
    data_path: list[str | int] = []
    shown: list[str | int] = []
    via_union = False
    for i, part in enumerate(loc):
        if isinstance(node, dict):
            if any(node.get(d) == part for d in _DISCRIMINATORS):
                continue  # the tag pydantic adds for a discriminated union
            key = part if part in node else f"{part}_file"  # a secret read from a file
            if key in node:
                node = node[key]
                data_path.append(key)
                shown.append(key)
                continue
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            data_path.append(part)
            shown.append(part)
            continue
        if error["type"] == "missing" and i == len(loc) - 1:
            shown.append(part)
        else:
            via_union = True
    if error["type"] == "union_tag_invalid":  # point at the `kind:` line itself
        disc = error["ctx"]["discriminator"].strip("'")
        if isinstance(node, dict) and disc in node:
            data_path.append(disc)
    return _Located(tuple(data_path), tuple(shown), via_union, error)


def _message(error: Mapping[str, Any], shown: PathKey, root: Any) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    parent, name = shown[:-1], shown[-1] if shown else ""
    if kind == "missing":
        return at(parent, f"missing required field '{name}'")
    if kind == "extra_forbidden":
        return at(parent, f"unknown field '{name}'{_suggest(name, root, error['loc'][:-1])}")
    if kind == "union_tag_invalid":
        disc = ctx["discriminator"].strip("'")
        tags = ", ".join(t.strip().strip("'") for t in ctx["expected_tags"].split(","))
        return at(shown, f"unknown {disc} '{ctx['tag']}' (expected one of {tags})")
    if kind == "union_tag_not_found":
        disc = ctx["discriminator"].strip("'")
        return at(shown, f"missing required field '{disc}'"
                         f"{_choices(root, error['loc'], disc)}")
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return at(shown, str(ctx["error"]))
    if kind in ("literal_error", "enum"):
        return at(shown, f"expected {ctx['expected']}, got {_shown_input(error, shown)}")
    if kind in _EXPECTED:
        return at(shown, f"expected {_EXPECTED[kind]}, got {_shown_input(error, shown)}")
    if kind in _BOUNDS:
        key, op = _BOUNDS[kind]
        return at(shown, f"must be {op} {ctx[key]}, got {_shown_input(error, shown)}")
    if kind in ("too_short", "string_too_short"):
        if ctx.get("min_length") == 1:
            return at(shown, "must not be empty")
        return at(shown, f"needs at least {ctx['min_length']} items")
    if kind in ("too_long", "string_too_long"):
        return at(shown, f"takes at most {ctx['max_length']} items")
    return at(shown, error["msg"].removeprefix("Value error, "))


def _union_message(errors: list[Mapping[str, Any]], shown: PathKey) -> str:
    expected = list(dict.fromkeys(
        _EXPECTED[e["type"]].replace("true or false", "a boolean") for e in errors))
    text = ", ".join(expected[:-1]) + f" or {expected[-1]}"
    return at(shown, f"expected {text}, got {_shown_input(errors[0], shown)}")


def _shown_input(error: Mapping[str, Any], shown: PathKey) -> str:
    value = error.get("input")
    if any(isinstance(p, str) and p in _NOT_SHOWN for p in shown):
        return "a value that is not shown (secret)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if value is None:
        return "nothing (null)"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _suggest(name: str | int, root: Any, loc: Sequence[str | int]) -> str:
    model = _model_at(root, loc)
    if model is None or not isinstance(name, str):
        return ""
    names = [f.alias or n for n, f in model.model_fields.items()]
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _choices(root: Any, loc: Sequence[str | int], disc: str) -> str:
    tags = [t for m in _members(_type_at(root, loc)) for t in _literal_values(m, disc)]
    return f" (one of {', '.join(tags)})" if tags else ""


def _model_at(tp: Any, loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model that validated the value at ``loc`` under type ``tp``, when it is one."""
    tp = _unwrap(_type_at(tp, loc))
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _type_at(tp: Any, loc: Sequence[str | int]) -> Any:
    """The declared type of the value at ``loc`` under type ``tp``; None when unknown."""
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = next((f for n, f in tp.model_fields.items() if part in (n, f.alias)), None)
            if field is None:
                return None
            tp = field.annotation
            continue
        members = _members(tp)
        if len(members) > 1:  # a discriminated union: ``part`` is the tag
            tp = next((m for m in members if any(
                part in _literal_values(m, d) for d in _DISCRIMINATORS)), None)
            if tp is None:
                return None
            continue
        args = typing.get_args(tp)
        if typing.get_origin(tp) in (tuple, list) and args:
            tp = args[0]
        elif typing.get_origin(tp) in (dict, Mapping) and len(args) == 2:
            tp = args[1]
        else:
            return None
    return tp


def _unwrap(tp: Any) -> Any:
    while True:
        if typing.get_origin(tp) is Annotated:
            tp = typing.get_args(tp)[0]
            continue
        members = [m for m in _union_args(tp) if m is not type(None)]
        if len(members) == 1:
            tp = members[0]
            continue
        return tp


def _members(tp: Any) -> list[Any]:
    tp = _unwrap(tp)
    return [_unwrap(m) for m in _union_args(tp) if m is not type(None)]


def _union_args(tp: Any) -> tuple[Any, ...]:
    if typing.get_origin(tp) in (Union, types.UnionType):
        return typing.get_args(tp)
    return ()


def _literal_values(model: Any, field_name: str) -> tuple[Any, ...]:
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return ()
    field = model.model_fields.get(field_name)
    if field is None or typing.get_origin(field.annotation) is not typing.Literal:
        return ()
    return typing.get_args(field.annotation)
