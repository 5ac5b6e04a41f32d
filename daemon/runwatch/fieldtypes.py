"""Pydantic field types shared by the daemon config and the rule models (the YAML edge)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BeforeValidator

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


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""A duration: ``30s``, ``10m``, ``2h`` in YAML, seconds in Python."""
Interval = Annotated[float, BeforeValidator(_positive_duration)]
"""A duration that must be more than zero."""
Names = Annotated[tuple[str, ...], BeforeValidator(one_or_many)]
Labels = Mapping[str, Annotated[str, BeforeValidator(scalar_text)]]
