"""Report reads (sources/wandb_reports.py) through the real ``WandbClient`` (and so the real
wandb-core) against the local fake W&B server: what they cost, and that the curve they
return holds the run's first step, its last, and its newest steps exactly."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest

from runwatch.model import RunState
from runwatch.sources.wandb_client import WandbClient, WandbError
from runwatch.sources.wandb_graphql import VIEWER_QUERY, read_node
from runwatch.sources.wandb_reports import (
    RECENT,
    SAMPLES,
    ReportRead,
    list_runs,
    project_names,
    read_histories,
    read_run,
)

T0 = 1_795_420_800.0  # 2026-11-23T08:00:00Z
KEY = "k" * 40
WHERE = {"source": "wandb:team", "app_url": "https://wandb.example"}


@pytest.fixture(scope="module")
def client(fake_wandb):
    """One connected client for the module: connecting (wandb.Api's Viewer query) is not
    a report's cost."""
    client = WandbClient(base_url=fake_wandb.url, api_key=KEY, timeout=20.0, retry_max=1)
    client.execute(VIEWER_QUERY)
    yield client
    client.close()


class Spent:
    """What the server answered between entering and leaving: requests by operation and
    response bytes (bodies, as the fake counts them)."""

    def __init__(self, server):
        self.server = server

    def __enter__(self):
        self._requests = Counter(self.server.counters.requests)
        self._bytes = sum(self.server.counters.response_bytes.values())
        return self

    def __exit__(self, *exc):
        self.requests = dict(Counter(self.server.counters.requests) - self._requests)
        self.response_bytes = sum(self.server.counters.response_bytes.values()) - self._bytes


def test_a_long_run_costs_two_requests_and_keeps_its_ends_and_newest_steps(wandb_server,
                                                                            client):
    rows = 100_000
    path = wandb_server.add_synthetic_run("team", "p", "long", rows=rows, created_at=T0,
                                          keys=("loss", "train/grad_norm", "lr"))
    before = ReportRead.of(client)
    with Spent(wandb_server) as spent:
        snap = read_run(client, entity="team", project="p", run_id="long", **WHERE)
    cost = ReportRead.of(client).since(before)

    assert spent.requests == {"RunwatchRun": 1, "RunwatchHistory": 1}
    assert cost.requests == 2
    assert spent.response_bytes < 1_000_000, spent.response_bytes
    [history] = wandb_server.requests_of("RunwatchHistory")  # first spec: the shortest key
    assert [(history.variables[f"n{i}"], json.loads(history.variables[f"s{i}"][0]))
            for i in range(2)] == [
        ("long", {"keys": ["_step", "_timestamp", "lr"], "minStep": 0, "maxStep": rows - 1,
                  "samples": SAMPLES}),
        ("long", {"keys": ["_step", "_timestamp", "lr"], "minStep": rows - RECENT,
                  "maxStep": rows - 1, "samples": RECENT})]
    assert snap.ref.path == path and snap.state is RunState.RUNNING
    assert snap.last_step == rows - 1 and snap.progress == T0 + rows - 1
    assert set(snap.history) == {"loss", "train/grad_norm", "lr"}  # not _step, _runtime…
    stored = wandb_server.run(path)
    for key, series in snap.history.items():
        steps = series.steps
        assert len(steps) <= SAMPLES + RECENT
        assert list(steps) == sorted(set(steps))  # ordered, no step twice
        assert steps[0] == 0 and steps[-1] == rows - 1
        assert steps[-RECENT:] == tuple(range(rows - RECENT, rows))
        assert steps[-RECENT - 1] < rows - RECENT - 1  # thinned before the newest steps
        assert series.values[-RECENT:] == tuple(stored.row(s)[key] for s in steps[-RECENT:])
        assert series.times[-1] == T0 + rows - 1


def test_a_short_run_comes_back_whole_with_its_nonfinite_values(wandb_server, client):
    def row(step):
        loss = math.nan if step == 7 else math.inf if step == 9 else 1.0 / (step + 1)
        extra = {"eval/acc": step / 100} if step % 10 == 0 else {}
        return {"_step": step, "_timestamp": T0 + step, "loss": loss, "phase": "train",
                **extra}

    wandb_server.add_run("team", "p", "short", rows=[row(s) for s in range(50)],
                         config={"lr": 0.1}, summary={"_timestamp": T0 - 1000})
    with Spent(wandb_server) as spent:
        snap = read_run(client, entity="team", project="p", run_id="short", **WHERE)
    assert spent.requests == {"RunwatchRun": 1, "RunwatchHistory": 1}
    [history] = wandb_server.requests_of("RunwatchHistory")
    assert "n1" not in history.variables  # the whole-run read holds every row: no second
    assert set(snap.history) == {"loss", "eval/acc"}  # not the string key `phase`
    loss = snap.history["loss"]
    assert loss.steps == tuple(range(50))
    assert math.isnan(loss.values[7]) and loss.values[9] == math.inf
    assert loss.values[3] == 0.25
    assert snap.history["eval/acc"].steps == tuple(range(0, 50, 10))
    assert snap.config == {"lr": 0.1}
    assert snap.progress == T0 + 49  # the newest row, newer than the summary's time

    only = read_run(client, entity="team", project="p", run_id="short",
                    keys=lambda s: [k for k in s.keys if k == "loss"], **WHERE)
    assert set(only.history) == {"loss"}


def test_an_unknown_run_or_project_is_not_found_in_one_line(wandb_server, client):
    wandb_server.add_run("team", "p", "r1", rows=[{"loss": 1.0}])
    with pytest.raises(WandbError) as run:
        read_run(client, entity="team", project="p", run_id="nope", **WHERE)
    assert run.value.kind == "not-found" and not run.value.temporary
    assert str(run.value) == "no run team/p/nope in W&B"
    with pytest.raises(WandbError) as project:
        read_run(client, entity="team", project="gone", run_id="r1", **WHERE)
    assert (project.value.kind, str(project.value)) == ("not-found", "unknown project team/gone")
    assert wandb_server.counters.requests["RunwatchHistory"] == 0


def test_list_runs_gives_running_runs_and_runs_ended_since(wandb_server, client):
    def add(run_id, state, heartbeat):
        wandb_server.add_run("team", "p", run_id, state=state, created_at=T0 - 86_400,
                             heartbeat_at=heartbeat, config={"seed": run_id},
                             rows=[{"_timestamp": T0 - 86_000, "loss": 1.0}])

    add("running-quiet", "running", T0 - 80_000)  # no heartbeat for long: still listed
    add("finished-late", "finished", T0 - 60)
    add("crashed-late", "crashed", T0 - 1800)
    add("finished-early", "finished", T0 - 7200)
    add("killed-early", "killed", T0 - 3601)
    nodes = list_runs(client, entity="team", project="p", ended_since=T0 - 3600, **WHERE)
    got = {n.snapshot.ref.id: (n.snapshot.state, n.snapshot.config["seed"]) for n in nodes}
    assert got == {"running-quiet": (RunState.RUNNING, "running-quiet"),
                   "finished-late": (RunState.FINISHED, "finished-late"),
                   "crashed-late": (RunState.CRASHED, "crashed-late")}
    with pytest.raises(WandbError) as gone:
        list_runs(client, entity="team", project="gone", ended_since=T0, **WHERE)
    assert (gone.value.kind, str(gone.value)) == ("not-found", "unknown project team/gone")


def test_histories_of_many_runs_are_read_fifty_runs_a_request(wandb_server, client):
    for i in range(120):
        wandb_server.add_synthetic_run("team", "p", f"r{i:03}", rows=1000 + i, seed=i,
                                       created_at=T0, keys=("loss", "acc"))
    with Spent(wandb_server) as listing:
        nodes = list_runs(client, entity="team", project="p", ended_since=T0, **WHERE)
    assert listing.requests == {"RunwatchRuns": 2}  # 100 a page
    ghost = read_node({"name": "ghost", "state": "running",
                       "summaryMetrics": '{"_step": 10}'}, entity="team", project="p", **WHERE)
    with Spent(wandb_server) as spent:
        read = read_histories(client, entity="team", project="p", nodes=[*nodes, ghost],
                              keys=lambda s: ["loss"])
    assert spent.requests == {"RunwatchHistory": 3}
    assert len(read) == 120 and "team/p/ghost" not in read  # deleted meanwhile: left out
    for i in range(120):
        series = read[f"team/p/r{i:03}"].history["loss"]
        last = 1000 + i - 1
        assert series.steps[0] == 0 and series.steps[-RECENT:] == tuple(
            range(last - RECENT + 1, last + 1))
        assert len(series) <= SAMPLES + RECENT
    assert spent.response_bytes < 120 * (SAMPLES + RECENT) * 100, spent.response_bytes


def test_project_names_pages_through_every_project(wandb_server, client):
    for i in range(105):
        wandb_server.add_project("team", f"proj{i:03}")
    wandb_server.add_project("other", "theirs")
    with Spent(wandb_server) as spent:
        names = project_names(client, entity="team")
    assert names == [f"proj{i:03}" for i in range(105)]
    assert spent.requests == {"RunwatchProjects": 2}
    assert project_names(client, entity="nobody") == []
