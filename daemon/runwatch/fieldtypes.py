"""Pydantic field types shared by the daemon config and the rule models (the YAML edge)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

from runwatch.duration import UNITS as DURATION_UNITS
from runwatch.duration import parse_duration


def one_or_many(value: Any) -> Any:
    """One name may be written without the list around it."""
    return (value,) if isinstance(value, str) else value


def scalar_text(value: Any) -> Any:
    """A scalar as the text it was written as (``match: {step: 5}`` means "5"); anything
    else as it is."""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value) if isinstance(value, int | float) else value


def _positive_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"invalid duration {value!r}: must be more than zero")
    return seconds


# What each type accepts, as JSON Schema (``runwatch schema``): written beside the type,
# since a value's YAML form (``10m``) is not its Python one (600.0).
_UNIT = "|".join(sorted(DURATION_UNITS, key=len, reverse=True))  # "ms" before "m"
_DURATION = rf" *(?:(?:[0-9]+(?:\.[0-9]+)? *(?:{_UNIT}) *)+|[0-9]+(?:\.[0-9]+)? *)$"
DURATION_TEXT = "^" + _DURATION


def duration_schema(*, above_zero: bool = False) -> dict[str, Any]:
    if above_zero:  # a digit other than 0 somewhere: not "0s", "0.0m"
        number, text = {"exclusiveMinimum": 0}, "^(?=[^1-9]*[1-9])" + _DURATION
    else:
        number, text = {"minimum": 0}, DURATION_TEXT
    return {
        "anyOf": [{"type": "number", **number}, {"type": "string", "pattern": text}],
        "description": "seconds, or a duration: 30s, 10m, 2h, 1d, 1h30m",
    }


def names_schema(item: dict[str, Any] | None = None, *, at_least: int = 0) -> dict[str, Any]:
    """One item, or a list of them (``one_or_many``)."""
    item = item or {"type": "string"}
    many: dict[str, Any] = {"type": "array", "items": item}
    if at_least:
        many["minItems"] = at_least
    return {"anyOf": [item, many], "description": "one, or a list"}


NAMES_SCHEMA = names_schema()
SCALAR_SCHEMA = {"type": ["string", "number", "boolean"]}

Duration = Annotated[float, BeforeValidator(parse_duration), WithJsonSchema(duration_schema())]
"""A duration: ``30s``, ``10m``, ``2h`` in YAML, seconds in Python."""
Interval = Annotated[float, BeforeValidator(_positive_duration),
                     WithJsonSchema(duration_schema(above_zero=True))]
"""A duration that must be more than zero."""
Names = Annotated[tuple[str, ...], BeforeValidator(one_or_many), WithJsonSchema(NAMES_SCHEMA)]
Labels = Mapping[str, Annotated[str, BeforeValidator(scalar_text), WithJsonSchema(SCALAR_SCHEMA)]]
