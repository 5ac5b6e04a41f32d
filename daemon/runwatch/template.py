"""Summary templates: ``str.format`` syntax limited to documented, plain fields.

Run names, tags and config values come from whoever launched the run, so a template may
name a field and give it a format spec (``{value:.3g}``) but never reach an attribute or
an item of it (``{run.__class__}``, ``{config[secret]}``).
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

FIELDS = frozenset({
    "rule", "severity", "run", "run_id", "path", "project", "entity", "group", "state",
    "metric", "value", "step", "threshold", "age", "for",
    "since_step", "first_value", "latest", "latest_step",
    "title", "text",  # of an alert the training code raised (code_alert rules)
})

_FORMATTER = string.Formatter()


def template_errors(template: str) -> list[str]:
    """What is wrong with ``template``, as messages; empty when it is usable."""
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as exc:
        return [f"invalid template {template!r}: {exc}"]
    errors = []
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if conversion not in (None, "r", "s", "a"):
            errors.append(f"template {template!r}: unknown conversion !{conversion}")
        if field == "" or field.isdigit():
            errors.append(f"template {template!r}: positional fields are not allowed")
        elif field not in FIELDS:
            errors.append(
                f"template {template!r}: unknown field {{{field}}}"
                f" (allowed: {', '.join(sorted(FIELDS))})"
            )
        elif spec and "{" in spec:
            errors.append(f"template {template!r}: nested fields are not allowed")
    return errors


def render(template: str, fields: Mapping[str, Any]) -> str:
    """``template`` filled from ``fields``; a spec that does not fit its value (``{value:.3g}``
    of a missing value) falls back to the plain value instead of failing the tick."""
    out = []
    for literal, field, spec, conversion in _FORMATTER.parse(template):
        out.append(literal)
        if field is None:
            continue
        value = fields.get(field)
        if value is None:
            out.append("n/a")
            continue
        try:
            if conversion:
                value = _FORMATTER.convert_field(value, conversion)
            out.append(format(value, spec or ""))
        except (TypeError, ValueError):
            out.append(str(value))
    return "".join(out)
