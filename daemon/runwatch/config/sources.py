"""Where runs come from: local run directories, or the W&B API."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationInfo, WithJsonSchema, field_validator

from runwatch.config.fields import (
    BaseUrl,
    Secret,
    StrictModel,
    WithSecrets,
    resolve,
)
from runwatch.fieldtypes import NAMES_SCHEMA, Interval, Names, duration_schema, one_or_many
from runwatch.window import DEFAULT_FIRST_READ, ROWS_TEXT, STEPS_TEXT, Window, parse_first_read

# A run seen for the first time is read this far back, or as far as the rules need if
# more: `10000` / `10000 rows`, `50000 steps`, a duration (`6h`), or `all`.
FirstRead = Annotated[Window, BeforeValidator(parse_first_read), WithJsonSchema({
    "anyOf": [
        {"type": "integer", "minimum": 1},
        {"type": "string", "pattern": ROWS_TEXT},
        {"type": "string", "pattern": STEPS_TEXT},
        duration_schema(above_zero=True)["anyOf"][1],
        {"const": "all"},
    ],
    "description": "rows (10000, '10000 rows'), steps ('50000 steps'), a duration ('6h')"
                   " or all",
})]


class RundirSource(StrictModel):
    """Local wandb run directories (``run-*``, ``offline-run-*``) under ``path``."""

    type: Literal["rundir"]
    paths: Annotated[tuple[Path, ...], Field(alias="path", min_length=1),
                     WithJsonSchema(NAMES_SCHEMA)]
    depth: int = Field(default=6, ge=0, le=64)
    interval: Interval = 60.0
    rescan: Interval = 600.0  # the full search; changed folders are listed at every tick
    dead_after: Interval = 7200.0  # a run with no record this long is taken as crashed
    first_read: FirstRead = DEFAULT_FIRST_READ
    name: str = Field(default="", validate_default=True)

    @field_validator("paths", mode="before")
    @classmethod
    def _paths(cls, value: Any, info: ValidationInfo) -> Any:
        value = one_or_many(value)
        if not isinstance(value, list | tuple):
            return value
        return tuple(resolve(p, info) if isinstance(p, str | Path) else p for p in value)

    @field_validator("name")
    @classmethod
    def _default_name(cls, value: str, info: ValidationInfo) -> str:
        # A stable default: cursors are kept per source name, so a name built from the
        # paths would make adding a path re-read every run from its start.
        return value or "rundir"


class WandbFilters(StrictModel):
    """Which runs of the projects to watch; all given filters must hold."""

    tags: Names = ()  # runs carrying any of these tags
    group: str | None = None
    created_after: datetime | None = None
    query: Mapping[str, Any] = Field(default_factory=dict)  # a raw W&B (MongoDB) filter

    @field_validator("created_after", mode="before")
    @classmethod
    def _aware(cls, value: Any) -> Any:
        if isinstance(value, date) and not isinstance(value, datetime):
            return datetime(value.year, value.month, value.day, tzinfo=UTC)
        return value

    @field_validator("created_after")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return value.replace(tzinfo=UTC) if value and value.tzinfo is None else value


def _projects(value: Any) -> tuple[str, ...] | Literal["all"]:
    if value == "all":
        return "all"
    value = one_or_many(value)
    if not isinstance(value, list | tuple) or not value or not all(
        isinstance(p, str) and p for p in value
    ):
        raise ValueError("expected a list of project names, or: all")
    return tuple(value)


class WandbSource(WithSecrets):
    """W&B cloud or a W&B Server, through the public API."""

    type: Literal["wandb"]
    entity: str = Field(min_length=1)
    projects: Annotated[tuple[str, ...] | Literal["all"], BeforeValidator(_projects)]
    api_key: Secret | None = None  # else wandb's own: WANDB_API_KEY, ~/.netrc
    base_url: BaseUrl = "https://api.wandb.ai"
    app_url: BaseUrl | None = None  # the web UI, for links; derived from base_url when unset
    interval: Interval = 120.0
    lookback: Interval = 86400.0  # runs updated longer ago than this are not read
    request_timeout: Interval = 30.0  # the longest one request may take, retries included
    # wandb-core retries per request; at least 1 (it reads 0 as "its default", 20)
    request_retries: int = Field(default=2, ge=1, le=10)
    tick_timeout: Interval = 90.0  # the longest one tick of this source may take
    unreachable_after: Interval = 600.0  # no answer for this long: `source-unreachable` fires
    first_read: FirstRead = DEFAULT_FIRST_READ
    filters: WandbFilters = Field(default_factory=WandbFilters)
    name: str = Field(default="", validate_default=True)

    @field_validator("base_url", "app_url")
    @classmethod
    def _no_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @field_validator("name")
    @classmethod
    def _default_name(cls, value: str, info: ValidationInfo) -> str:
        return value or f"wandb:{info.data.get('entity', '')}"

    @property
    def paths(self) -> tuple[Path, ...]:
        """No local directories: every source answers ``paths``."""
        return ()


Source = Annotated[RundirSource | WandbSource, Field(discriminator="type")]
