"""The daemon config: what ``runwatch run`` watches, where it keeps state, whom it tells.

Frozen pydantic models, strict (``extra="forbid"``); see ``fields.py`` for the shared value
types and ``sources.py``/``receivers.py`` for those parts.
"""

from __future__ import annotations

import importlib.resources
import re
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar

import platformdirs
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PlainValidator,
    PrivateAttr,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from runwatch import keys
from runwatch.config.fields import (
    Address,
    StrictModel,
    base_dir,
    host_port,
    resolve,
)
from runwatch.config.receivers import Receiver
from runwatch.config.rules import RuleSet, load_rules, rule_files
from runwatch.config.sources import Source
from runwatch.fieldtypes import (
    NAMES_SCHEMA,
    SCALAR_SCHEMA,
    Duration,
    Interval,
    Names,
    names_schema,
    one_or_many,
    scalar_text,
)
from runwatch.store.base import Matcher, parse_store_url

_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:/-]*")
_SELECTOR_HELP = ("expected a mapping of label: value (literal or glob, or a list of them),"
                  " or a list of matchers like 'severity=~warning|critical'")


# Whom a route or the digest tells: one receiver's name or several, at least one.
Receivers = Annotated[Names, Field(min_length=1), WithJsonSchema(names_schema(at_least=1))]


def _label_text(value: Any) -> str:
    text = scalar_text(value)
    if not isinstance(text, str):
        raise ValueError(f"{_SELECTOR_HELP}, got {value!r}")
    return text


def _selector(value: Any) -> Mapping[str, str | tuple[str, ...]] | tuple[str, ...]:
    """Selects alerts by their labels (see notify/routing.py): a mapping of label → literal
    or glob (or a list of them: any one), or a list of matchers (name=v, !=, =~, !~)."""
    if isinstance(value, Mapping):
        selected: dict[str, str | tuple[str, ...]] = {}
        for name, wanted in value.items():
            if not isinstance(name, str) or not _LABEL_NAME.fullmatch(name):
                raise ValueError(f"invalid label name {name!r}")
            if isinstance(wanted, list | tuple):
                if not wanted:
                    raise ValueError(f"label {name}: an empty list matches nothing")
                selected[name] = tuple(_label_text(v) for v in wanted)
            else:
                selected[name] = _label_text(wanted)
        return selected
    if isinstance(value, list | tuple):
        for text in value:
            if not isinstance(text, str):
                raise ValueError(f"{_SELECTOR_HELP}, got {text!r}")
            Matcher.parse(text)  # ValueError: "not a matcher: ..." or a bad regex
        return tuple(value)
    raise ValueError(f"{_SELECTOR_HELP}, got {value!r}")


Selector = Annotated[Any, PlainValidator(_selector), WithJsonSchema({
    "anyOf": [
        {"type": "object", "additionalProperties": {"anyOf": [
            SCALAR_SCHEMA, {"type": "array", "items": SCALAR_SCHEMA, "minItems": 1}]}},
        {"type": "array", "items": {"type": "string"}},
    ],
    "description": "label: value (literal or glob, or a list of them), or a list of"
                   " matchers like 'severity=~warning|critical'",
})]


class Route(StrictModel):
    """Alerts whose labels match ``match`` go to ``receivers``, grouped by ``group_by``;
    the first matching route wins unless it says ``continue: true``.

    Unset, ``group_by`` is ``[rule]``; ``[]`` is one group for everything, ``["..."]`` one
    group per alert. ``group_wait`` holds a new group's first message until its oldest
    alert has fired that long (the alerts of one tick always go together).
    ``repeat_interval`` and ``send_resolved`` default to the config's.
    """

    match: Selector = Field(default_factory=dict)
    receivers: Receivers
    continue_: bool = Field(default=False, alias="continue")
    group_by: Names | None = None
    group_wait: Duration = 0.0
    repeat_interval: Interval | None = None  # the config's repeat_interval when unset
    send_resolved: bool | None = None  # the config's send_resolved when unset


def _not_empty(value: Any) -> Any:
    if not value:
        raise ValueError("must not be empty")
    return value


class Inhibit(StrictModel):
    """A firing ``source`` alert mutes ``target`` alerts that agree on every ``equal`` label."""

    source: Annotated[Selector, AfterValidator(_not_empty)]
    target: Annotated[Selector, AfterValidator(_not_empty)]
    equal: Names = ()

    @model_validator(mode="after")
    def _not_self(self) -> Inhibit:
        if _canonical(self.source) == _canonical(self.target):
            raise ValueError(
                "source and target select the same alerts: they would mute each other")
        return self


# Inhibition out of the box, for the shipped rules: on one run, the critical alert of a
# family mutes its warning, and a crashed run is not also stalled or slow. A config's own
# `inhibit:` replaces these (`inhibit: []`: none).
DEFAULT_INHIBIT: tuple[Mapping[str, Any], ...] = (
    {"source": {"rule": "grad-norm-exploding"}, "target": {"rule": "grad-norm-spiky"},
     "equal": ["run"]},
    {"source": {"rule": "run-stalled"}, "target": {"rule": "run-slow"}, "equal": ["run"]},
    {"source": {"rule": "run-crashed"},
     "target": {"rule": ["run-stalled", "run-slow", "progress-stalled"]}, "equal": ["run"]},
)


def default_inhibit() -> tuple[Inhibit, ...]:
    return tuple(Inhibit.model_validate(entry) for entry in DEFAULT_INHIBIT)


def _canonical(selector: Any) -> Any:
    if isinstance(selector, Mapping):
        return sorted((k, (v,) if isinstance(v, str) else tuple(v)) for k, v in selector.items())
    return sorted(selector)


_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_CRON_FIELDS = (  # label, lowest, highest, names from the lowest up
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day-of-month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 7, _WEEKDAYS),
)


def _cron(text: str) -> str:
    """A five-field crontab schedule: each field ``*``, values, ranges and ``/steps``."""
    fields = text.split()
    if len(fields) != 5:
        raise ValueError(
            f"invalid cron schedule {text!r}: expected 5 fields"
            f" (minute hour day-of-month month day-of-week), got {len(fields)}"
        )
    for field, (label, low, high, names) in zip(fields, _CRON_FIELDS, strict=True):
        for item in field.split(","):
            if not _cron_item(item, low, high, names):
                raise ValueError(
                    f"invalid cron schedule {text!r}: {label} {item!r} is not a value,"
                    f" range or step within {low}-{high}"
                )
    from runwatch.schedule import cron_trigger  # APScheduler: only when there is a digest

    try:  # what the daemon schedules with refuses more (a range 5-1, a step past its range)
        cron_trigger(text)
    except ValueError as exc:
        raise ValueError(f"invalid cron schedule {text!r}: {exc}") from None
    return text


def _cron_item(item: str, low: int, high: int, names: tuple[str, ...]) -> bool:
    span, slash, step = item.partition("/")
    if slash and not (step.isdigit() and int(step) > 0):
        return False
    if span == "*":
        return True
    bounds = span.split("-")
    if len(bounds) > 2:
        return False
    for bound in bounds:
        if bound.lower() in names:
            continue
        if not bound.isdigit() or not low <= int(bound) <= high:
            return False
    return True


def _zone(name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        message = f"unknown time zone {name!r} (expected e.g. Europe/Berlin, UTC)"
        raise ValueError(message) from None
    return name


class Digest(StrictModel):
    """The daily digest: what ran, finished, failed and fired."""

    schedule: Annotated[str, AfterValidator(_cron)] = "0 8 * * *"
    timezone: Annotated[str, AfterValidator(_zone)] | None = None  # the host's when unset
    receivers: Receivers
    # A digest missed while runwatch was down is sent at start-up if its time passed less
    # than this long ago; an older one is skipped (yesterday's news), and said so.
    grace: Interval = 6 * 3600.0

    @property
    def zone(self) -> zoneinfo.ZoneInfo | None:
        return zoneinfo.ZoneInfo(self.timezone) if self.timezone else None


def _read_token(path: Path) -> str:
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise ValueError(f"token_file {path} is empty")
    return token


def _read_users(path: Path) -> dict[str, str]:
    from runwatch.web.auth import read_users

    return read_users(path)


_ACCESS_READERS = {"token_file": _read_token, "users_file": _read_users}


class Http(StrictModel):
    """Health, readiness, Prometheus metrics and the status pages."""

    listen: Address = "127.0.0.1:9465"
    # A file holding the token the status pages and their JSON ask for (``Authorization:
    # Bearer …``); the probes and /metrics stay open. Set it when listening beyond loopback.
    token_file: Path | None = None
    # Users who may read them with a password (HTTP basic auth), a line each as
    # `runwatch page-user NAME` prints it; either this or the token lets a request in.
    users_file: Path | None = None

    @field_validator("token_file", "users_file", mode="before")
    @classmethod
    def _access_file(cls, value: Any, info: ValidationInfo) -> Any:
        """Read once at load, as each request will (an empty or malformed file refused
        now, with its name), so a config that loads serves pages that open."""
        if not isinstance(value, str | Path):
            return value
        path = Path(resolve(value, info))
        try:
            _ACCESS_READERS[info.field_name](path)
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read {info.field_name} {path}:"
                             f" {getattr(exc, 'strerror', None) or exc}") from None
        return path

    def token(self) -> str | None:
        """The token, read now (a rotated file is picked up); None when there is none.
        ValueError for a file emptied since start-up: the pages close, they never open."""
        return None if self.token_file is None else _read_token(self.token_file)

    def users(self) -> dict[str, str] | None:
        """The users file, read now (edits are picked up); None when there is none."""
        return None if self.users_file is None else _read_users(self.users_file)

    @property
    def host(self) -> str:
        return host_port(self.listen)[0]

    @property
    def port(self) -> int:
        return host_port(self.listen)[1]


def _lease_ttl(value: float) -> float:
    if value < 3:
        raise ValueError("lease_ttl must be at least 3s (it is renewed every third of it)")
    return value


class Ha(StrictModel):
    """Several replicas on one PostgreSQL store: one acts, the others stand by."""

    # How long the acting replica's lease lasts without a renewal (it renews every third
    # of it): a replica that dies is replaced within this plus the shortest interval.
    lease_ttl: Annotated[Interval, AfterValidator(_lease_ttl)] = 30.0


# --- the whole file -----------------------------------------------------------------


def default_rules_path() -> str:
    """The rule pack shipped inside the package."""
    return str(importlib.resources.files("runwatch").joinpath("rules", "default.yaml"))


def _rule_pattern(value: str, info: ValidationInfo) -> str:
    if not rule_files(value, base_dir(info)):
        raise ValueError(f"no rule file matches '{value}'")
    return str(resolve(value, info))


def _alias_keys(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value:
        raise ValueError("an alias needs at least one metric key")
    return value


class RuleFiles(StrictModel):
    """The rule files a config names and the metric aliases their rules read. The loader
    validates this part alone when the rest of a config is invalid, so that the rule
    files' errors are reported with the config's, in one round."""

    rules: Annotated[
        tuple[Annotated[str, AfterValidator(_rule_pattern)], ...],
        BeforeValidator(one_or_many), WithJsonSchema(NAMES_SCHEMA),
    ] = Field(default_factory=lambda: (default_rules_path(),), validate_default=True)
    aliases: Mapping[
        str, Annotated[tuple[str, ...], BeforeValidator(one_or_many), AfterValidator(_alias_keys),
                       WithJsonSchema(NAMES_SCHEMA)]
    ] = Field(default_factory=dict, validate_default=True)

    _path: Path | None = PrivateAttr(default=None)
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)

    def model_post_init(self, context: Any) -> None:
        context = context or {}
        self._path = context.get("path")
        self._base_dir = Path(context.get("base_dir") or Path.cwd())

    @field_validator("aliases")
    @classmethod
    def _merged(cls, value: Mapping[str, tuple[str, ...]]) -> Mapping[str, tuple[str, ...]]:
        return keys.merge_aliases(value)

    @property
    def path(self) -> Path | None:
        """The file this config was read from; None for :func:`default_config`."""
        return self._path

    @property
    def base_dir(self) -> Path:
        """The directory relative paths in the config are resolved against."""
        return self._base_dir

    def rule_set(self) -> RuleSet:
        """The rules the config's ``rules`` globs name, read now (again on every reload)."""
        return load_rules(self.rules, self.base_dir, self.aliases)


class Config(RuleFiles):
    """What ``runwatch run`` watches, where it keeps state, and whom it tells."""

    sources: Annotated[tuple[Source, ...], Field(min_length=1)]
    state_dir: Path = Field(default_factory=lambda: Path(platformdirs.user_state_dir("runwatch")))
    # A URL, possibly with a password: kept out of repr. SQLite paths are made absolute
    # (sqlite:///relative/to/the/config/dir.db → sqlite:////abs/path.db).
    store: str = Field(default="", validate_default=True, repr=False)
    receivers: tuple[Receiver, ...] = ()
    routes: tuple[Route, ...] = ()
    repeat_interval: Interval = 4 * 3600.0
    send_resolved: bool = True
    inhibit: tuple[Inhibit, ...] = Field(default_factory=default_inhibit)
    digest: Digest | None = None
    http: Http = Field(default_factory=Http)
    ha: Ha = Field(default_factory=Ha)

    sqlite_prefix: ClassVar[str] = "sqlite:///"

    @field_validator("state_dir", mode="before")
    @classmethod
    def _state_dir(cls, value: Any, info: ValidationInfo) -> Any:
        return resolve(value, info) if isinstance(value, str | Path) else value

    @field_validator("store")
    @classmethod
    def _store(cls, value: str, info: ValidationInfo) -> str:
        if not value:
            state_dir = info.data.get("state_dir", Path("."))
            return cls.sqlite_prefix + str(state_dir / "state.db")
        where = parse_store_url(value)  # what opening it would refuse, refused now
        if where.scheme == "sqlite":
            _, question, query = value.partition("?")
            return cls.sqlite_prefix + str(resolve(where.path, info)) + question + query
        return value

    @property
    def inhibit_is_default(self) -> bool:
        """Whether ``inhibit`` is the shipped default (the config file says nothing of it)."""
        return "inhibit" not in self.model_fields_set

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite database file, when the store is SQLite."""
        if not self.store.startswith(self.sqlite_prefix):
            return None
        return Path(self.store.removeprefix(self.sqlite_prefix).partition("?")[0])

    def receiver(self, name: str) -> Receiver | None:
        return next((r for r in self.receivers if r.name == name), None)
