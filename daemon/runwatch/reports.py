"""Where a report's runs come from: a RUN argument or a config, read through the sources.

The edge between the CLI (or the digest job) and the pure ``analysis`` package: it turns
``entity/project/run_id``, a W&B run URL or a local run directory into a snapshot with its
history, and a config's sources into the runs ``watch`` looks at. Reads never touch a
cursor or an alert: a report costs the daemon nothing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from runwatch.analysis.characterize import KeyFilter
from runwatch.config import Config
from runwatch.config.sources import WandbSource as WandbSpec
from runwatch.model import RunSnapshot

if TYPE_CHECKING:
    from runwatch.sources.wandb_client import WandbClient

DEFAULT_BASE_URL = "https://api.wandb.ai"
# Points per key a run costs when many runs are read (watch, the digest); one run's report
# reads wandb_reports' larger defaults.
MANY_SAMPLES, MANY_RECENT = 120, 60
_PATH = re.compile(r"^([\w.-]+)/([\w.-]+)/(?:runs/)?([\w.-]+)$")


class ReportError(Exception):
    """A run that cannot be found or read: one line naming it."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RunSpec:
    """A run as the user named it: a local run directory, or a W&B run."""

    text: str
    directory: str | None = None
    entity: str = ""
    project: str = ""
    run_id: str = ""
    base_url: str | None = None  # from a URL; None: the config's or the default


@dataclass(kw_only=True)
class WandbAccess:
    """How to reach W&B: a base URL and a key (None: WANDB_API_KEY or ~/.netrc)."""

    base_url: str = DEFAULT_BASE_URL
    api_key: str | None = None
    app_url: str | None = None
    timeout: float = 60.0
    clients: dict[str, WandbClient] = field(default_factory=dict)

    @classmethod
    def from_spec(cls, spec: WandbSpec | None) -> WandbAccess:
        if spec is None:
            return cls(base_url=os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL)
        return cls(base_url=spec.base_url,
                   api_key=spec.api_key.get_secret_value() if spec.api_key else None,
                   app_url=spec.app_url, timeout=max(spec.request_timeout, 30.0))

    def client(self, base_url: str | None = None) -> WandbClient:
        from runwatch.sources.wandb_client import WandbClient

        url = base_url or self.base_url
        if url not in self.clients:
            key = self.api_key if url == self.base_url else None
            self.clients[url] = WandbClient(base_url=url, api_key=key, timeout=self.timeout)
        return self.clients[url]

    def app(self, base_url: str | None = None) -> str:
        from runwatch.sources.wandb_api import app_url

        url = base_url or self.base_url
        return self.app_url if self.app_url and url == self.base_url else app_url(url)

    def requests(self) -> int:
        return sum(c.requests for c in self.clients.values())

    def bytes_received(self) -> int:
        return sum(c.bytes_received for c in self.clients.values())

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
        self.clients.clear()


def parse_run(text: str) -> RunSpec:
    """A RUN argument: an existing directory, a W&B run URL or ``entity/project/run_id``."""
    if os.path.isdir(text):
        return RunSpec(text=text, directory=text)
    parts = urlsplit(text)
    if parts.scheme in ("http", "https") and parts.netloc:
        found = _PATH.match(parts.path.strip("/"))
        if not found:
            raise ReportError(f"run {text}: not a W&B run URL"
                              " (expected https://HOST/ENTITY/PROJECT/runs/RUN_ID)")
        # W&B cloud serves its API from api.wandb.ai; a W&B Server, from its own address
        cloud = parts.netloc in ("wandb.ai", "www.wandb.ai")
        api = f"{parts.scheme}://api.wandb.ai" if cloud else f"{parts.scheme}://{parts.netloc}"
        entity, project, run_id = found.groups()
        return RunSpec(text=text, entity=entity, project=project, run_id=run_id, base_url=api)
    found = _PATH.match(text.strip("/"))
    if found and not os.path.exists(text):
        entity, project, run_id = found.groups()
        return RunSpec(text=text, entity=entity, project=project, run_id=run_id)
    raise ReportError(f"run {text}: no such run directory, and not ENTITY/PROJECT/RUN_ID"
                      " or a W&B run URL")


def load_run(spec: RunSpec, keys: KeyFilter, *, access: WandbAccess,
             warnings: list[str] | None = None) -> RunSnapshot:
    """The run ``spec`` names, with the history of ``keys``; ReportError naming it if it
    cannot be found or read. What was read around (a damaged record, a log with nothing
    readable) goes into ``warnings``, a line each."""
    if spec.directory is not None:
        from runwatch.sources.rundir_reports import RunNotFound, read_run

        try:
            snapshot, damage = read_run(spec.directory, keys)
        except RunNotFound as exc:
            raise ReportError(f"run {exc}") from None
        except OSError as exc:
            raise ReportError(f"run {spec.text}: cannot read: {exc.strerror or exc}") from None
        if warnings is not None:
            warnings += damage
            if snapshot.started is None and not snapshot.keys and not snapshot.config:
                warnings.append(f"run {snapshot.ref.location}: its log holds no record"
                                " runwatch can read (yet): the report knows nothing of it")
        return snapshot
    from runwatch.sources import wandb_reports
    from runwatch.sources.wandb_client import WandbError

    try:
        return wandb_reports.read_run(
            access.client(spec.base_url), entity=spec.entity, project=spec.project,
            run_id=spec.run_id, source="wandb", app_url=access.app(spec.base_url),
            keys=lambda snap: keys.pick(snap.keys), timeout=access.timeout)
    except WandbError as exc:
        raise ReportError(f"run {spec.entity}/{spec.project}/{spec.run_id}: {exc}") from None


@dataclass(frozen=True, kw_only=True, slots=True)
class Found:
    runs: tuple[RunSnapshot, ...]
    errors: tuple[str, ...]


def rundir_runs(paths: Iterable[str], keys: KeyFilter, now: float, *,
                dead_after: float | None = None) -> Found:
    from runwatch.sources.rundir_reports import read_tree

    read = read_tree(paths, keys, now, dead_after=dead_after)
    return Found(runs=read.runs, errors=read.errors)


def wandb_runs(access: WandbAccess, *, entity: str, projects: Sequence[str] | None,
               since: float, keys: KeyFilter, samples: int | None = None,
               recent: int | None = None,
               progress: Callable[[int, int], None] | None = None) -> Found:
    """The running runs of ``projects`` (None: all the entity's) and those that ended
    since ``since``, with their sampled history; a project that fails is one error line.
    ``progress(done, total)`` is told of every project read."""
    from runwatch.sources import wandb_reports
    from runwatch.sources.wandb_client import WandbError

    client = access.client()
    app = access.app()
    if projects is None:
        try:
            projects = wandb_reports.project_names(client, entity=entity,
                                                   timeout=access.timeout)
        except WandbError as exc:
            return Found(runs=(), errors=(f"entity {entity}: {exc}",))
        if not projects:
            return Found(runs=(), errors=(f"entity {entity}: no projects this API key can see"
                                          " (unknown entity?)",))
    runs: list[RunSnapshot] = []
    errors: list[str] = []
    for done, project in enumerate(projects):
        if progress:
            progress(done, len(projects))
        try:
            nodes = wandb_reports.list_runs(client, entity=entity, project=project,
                                            source="wandb", app_url=app, ended_since=since,
                                            timeout=access.timeout)
            read = wandb_reports.read_histories(
                client, entity=entity, project=project, nodes=nodes,
                keys=lambda snap: keys.pick(snap.keys), timeout=access.timeout,
                samples=samples or MANY_SAMPLES, recent=recent or MANY_RECENT)
        except WandbError as exc:
            errors.append(f"project {entity}/{project}: {exc}")
            continue
        for node in nodes:
            runs.append(read.get(node.snapshot.ref.path, node.snapshot))
    if progress:
        progress(len(projects), len(projects))
    return Found(runs=tuple(runs), errors=tuple(errors))


def config_runs(config: Config, keys: KeyFilter, *, since: float, now: float,
                samples: int | None = None, recent: int | None = None) -> Found:
    """The runs of every source ``config`` names: run directories read whole, W&B runs
    running or ended since ``since`` with a sampled history; one error line per source (or
    project) that could not be read, the others still read."""
    runs: list[RunSnapshot] = []
    errors: list[str] = []
    for spec in config.sources:
        if spec.type == "rundir":
            found = rundir_runs([str(p) for p in spec.paths], keys, now,
                                dead_after=spec.dead_after)
        else:
            access = WandbAccess.from_spec(spec)
            try:
                found = wandb_runs(access, entity=spec.entity,
                                   projects=None if spec.projects == "all" else list(spec.projects),
                                   since=since, keys=keys, samples=samples, recent=recent)
            finally:
                access.close()
        runs += found.runs
        errors += [f"source {spec.name}: {line}" for line in found.errors]
    return Found(runs=tuple(runs), errors=tuple(errors))
