"""The fake W&B server, driven through the real ``wandb.Api`` and its wandb-core sidecar.

Nothing of wandb is patched: every request below goes Python → wandb-core → HTTP → the fake.
One ``wandb.Api`` (and one wandb-core) serves the whole module; its retry waits are set to
whole seconds (wandb-core truncates fractions) so the retry tests stay short.
"""

from __future__ import annotations

import json
import math

import pytest
import wandb
from wandb.sdk.lib.service.service_connection import WandbApiFailedError

from fixtures.fakewandb import read_rundir

KEY = "k" * 40

RUNS_QUERY = """
query RunwatchRuns($entity: String!, $project: String!, $filters: JSONString, $cursor: String, $perPage: Int!, $withConfig: Boolean!) {
  project(name: $project, entityName: $entity) {
    runs(filters: $filters, after: $cursor, first: $perPage, order: "+created_at") {
      edges { node { name displayName state createdAt heartbeatAt tags group historyLineCount summaryMetrics config @include(if: $withConfig) } }
      pageInfo { endCursor hasNextPage }
    }
  }
}
"""  # noqa: E501

HISTORY_QUERY = """
query RunwatchHistory($entity: String!, $project: String!, $n0: String!, $s0: [JSONString!]!, $n1: String!, $s1: [JSONString!]!) {
  project(name: $project, entityName: $entity) {
    r0: run(name: $n0) { sampledHistory(specs: $s0) }
    r1: run(name: $n1) { sampledHistory(specs: $s1) }
  }
}
"""  # noqa: E501

PROJECTS_QUERY = """
query RunwatchProjects($entity: String!, $cursor: String) {
  models(entityName: $entity, first: 100, after: $cursor) { edges { node { name } } pageInfo { endCursor hasNextPage } }
}
"""  # noqa: E501

VIEWER_QUERY = "query RunwatchViewer { viewer { id username entity } }"

T0 = 1795420800.0  # 2026-11-23T08:00:00 UTC


@pytest.fixture(scope="module")
def api(fake_wandb, tmp_path_factory):
    """One real wandb.Api against the fake, with no way out to the internet."""
    home = tmp_path_factory.mktemp("wandb-home")
    with pytest.MonkeyPatch.context() as env:
        for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_ENTITY", "WANDB_PROJECT"):
            env.delenv(name, raising=False)
        env.setenv("WANDB_BASE_URL", fake_wandb.url)
        env.setenv("WANDB_SILENT", "true")
        for name in ("DIR", "CONFIG_DIR", "CACHE_DIR", "DATA_DIR"):
            env.setenv(f"WANDB_{name}", str(home / name.lower()))
        wandb.setup(wandb.Settings(
            x_graphql_retry_max=2,
            x_graphql_retry_wait_min_seconds=1,
            x_graphql_retry_wait_max_seconds=1,
            x_graphql_timeout_seconds=10,
        ))
        yield wandb.Api(api_key=KEY, overrides={"base_url": fake_wandb.url}, timeout=20)


def gql(api, query: str, variables: dict | None = None, timeout: float = 20):
    return api._service_api.execute_graphql(query, variables or {}, timeout=timeout)


def runs_page(api, filters=None, *, cursor=None, per_page=50, with_config=False):
    data = gql(api, RUNS_QUERY, {
        "entity": "team", "project": "proj", "filters": json.dumps(filters or {}),
        "cursor": cursor, "perPage": per_page, "withConfig": with_config,
    })
    return data["project"]["runs"]


def add_runs(server) -> None:
    """Five runs an hour apart, created at T0, T0+1h, ... with differing fields."""
    for i, (state, tags, group) in enumerate([
        ("running", ["a"], "g"),
        ("finished", ["a", "b"], "g"),
        ("crashed", ["b"], "h"),
        ("running", [], None),
        ("failed", ["a"], "g"),
    ]):
        server.add_run(
            "team", "proj", f"run{i}", name=f"Run {i}", state=state, tags=tags, group=group,
            created_at=T0 + 3600 * i, heartbeat_at=T0 + 3600 * i + 600,
            config={"lr": 0.1 * (i + 1), "model": {"layers": i}},
            rows=[{"loss": 1.0, "_timestamp": T0 + 3600 * i + 1}],
        )


# --- construction, viewer, projects ------------------------------------------------------


def test_constructing_an_api_sends_one_viewer_query(wandb_server, api):
    wandb.Api(api_key=KEY, overrides={"base_url": wandb_server.url}, timeout=20)

    assert wandb_server.ops() == ["Viewer"]
    # (wandb-core also posts its own /sdk/otel/v1/metrics now and then: not GraphQL)
    [request] = wandb_server.requests_of("Viewer")
    assert request.status == 200 and request.errors == ()
    assert gql(api, VIEWER_QUERY)["viewer"] == {
        "id": "VXNlcjp2MTpmYWtlLXVzZXI=", "username": "fake-user", "entity": "fake-entity",
    }


def test_projects_are_paged_100_at_a_time(wandb_server, api):
    for i in range(105):
        wandb_server.add_project("team", f"p{i:03d}")
    wandb_server.add_project("other", "elsewhere")

    names, cursor, pages = [], None, 0
    while True:
        models = gql(api, PROJECTS_QUERY, {"entity": "team", "cursor": cursor})["models"]
        names += [edge["node"]["name"] for edge in models["edges"]]
        pages += 1
        if not models["pageInfo"]["hasNextPage"]:
            break
        cursor = models["pageInfo"]["endCursor"]

    assert names == [f"p{i:03d}" for i in range(105)]
    assert pages == 2


# --- runs: filters, paging, fields ------------------------------------------------------


def test_runs_query_as_the_daemon_sends_it(wandb_server, api):
    add_runs(wandb_server)
    filters = {"$and": [
        {"$or": [{"state": "running"}, {"heartbeatAt": {"$gt": "2026-11-23T09:00:00"}}]},
        {"tags": {"$in": ["a"]}},
        {"group": "g"},
        {"createdAt": {"$gt": "2026-11-01T00:00:00"}},
    ]}

    runs = runs_page(api, filters)

    assert [e["node"]["name"] for e in runs["edges"]] == ["run0", "run1", "run4"]
    node = runs["edges"][0]["node"]
    assert node["displayName"] == "Run 0"
    assert node["createdAt"] == "2026-11-23T08:00:00"
    assert node["heartbeatAt"] == "2026-11-23T08:10:00"
    assert node["tags"] == ["a"] and node["group"] == "g" and node["historyLineCount"] == 1
    assert "config" not in node
    summary = json.loads(node["summaryMetrics"])
    assert summary["loss"] == 1.0 and summary["_step"] == 0
    assert summary["_timestamp"] == T0 + 1

    with_config = runs_page(api, {"name": "run1"}, with_config=True)["edges"][0]["node"]
    assert json.loads(with_config["config"]) == {
        "lr": {"value": 0.2, "desc": None}, "model": {"value": {"layers": 1}, "desc": None},
    }


@pytest.mark.parametrize(("filters", "expected"), [
    ({}, ["run0", "run1", "run2", "run3", "run4"]),
    ({"state": "running"}, ["run0", "run3"]),
    ({"state": {"$ne": "running"}}, ["run1", "run2", "run4"]),
    ({"state": {"$in": ["crashed", "failed"]}}, ["run2", "run4"]),
    ({"state": {"$nin": ["crashed", "failed"]}}, ["run0", "run1", "run3"]),
    ({"tags": "b"}, ["run1", "run2"]),
    ({"tags": {"$nin": ["a"]}}, ["run2", "run3"]),
    ({"displayName": {"$eq": "Run 3"}}, ["run3"]),
    ({"group": None}, ["run3"]),
    ({"createdAt": {"$gte": "2026-11-23T10:00:00", "$lt": "2026-11-23T12:00:00"}},
     ["run2", "run3"]),
    ({"heartbeatAt": {"$lte": "2026-11-23T09:10:00Z"}}, ["run0", "run1"]),
    ({"config.lr.value": {"$gt": 0.35}}, ["run3", "run4"]),
    ({"config.model.value.layers": 2}, ["run2"]),
    ({"$or": [{"name": "run0"}, {"$and": [{"tags": "b"}, {"state": "crashed"}]}]},
     ["run0", "run2"]),
])
def test_run_filters(wandb_server, api, filters, expected):
    add_runs(wandb_server)

    assert [e["node"]["name"] for e in runs_page(api, filters)["edges"]] == expected


def test_an_unsupported_filter_is_a_graphql_error_naming_it(wandb_server, api):
    add_runs(wandb_server)

    with pytest.raises(WandbApiFailedError, match="unsupported filter field 'summary'"):
        runs_page(api, {"summary": {"$gt": 1}})


def test_runs_are_paged_with_opaque_cursors(wandb_server, api):
    add_runs(wandb_server)

    names, cursor = [], None
    while True:
        page = runs_page(api, cursor=cursor, per_page=2)
        names += [e["node"]["name"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        cursor = page["pageInfo"]["endCursor"]
        assert "run" not in cursor  # opaque, not the run's name

    assert names == ["run0", "run1", "run2", "run3", "run4"]
    assert wandb_server.counters.requests["RunwatchRuns"] == 3


def test_api_runs_and_an_unknown_project(wandb_server, api):
    add_runs(wandb_server)

    runs = api.runs("team/proj", filters={"state": "running"})
    assert [run.id for run in runs] == ["run0", "run3"]
    assert runs[0].config == {"lr": 0.1, "model": {"layers": 0}}
    assert gql(api, RUNS_QUERY.replace("+created_at", "-created_at"), {
        "entity": "team", "project": "nope", "filters": None, "cursor": None,
        "perPage": 5, "withConfig": False,
    }) == {"project": None}
    with pytest.raises(ValueError, match="Could not find project nope"):
        list(api.runs("team/nope"))


# --- history ------------------------------------------------------------------------------


def spec(keys, lo, hi, samples):
    return json.dumps({"keys": keys, "minStep": lo, "maxStep": hi, "samples": samples})


def test_sampled_history_is_inclusive_and_keeps_only_rows_with_all_the_keys(wandb_server, api):
    rows = [{"loss": float(i), "acc": i / 10} if i % 3 else {"acc": i / 10} for i in range(10)]
    wandb_server.add_run("team", "proj", "a", rows=rows)
    wandb_server.add_run("team", "proj", "b", rows=[{"grad": 2.0}] * 4)

    data = gql(api, HISTORY_QUERY, {
        "entity": "team", "project": "proj",
        "n0": "a", "s0": [spec(["_step", "loss"], 2, 8, 100), spec(["_step", "acc"], 8, 9, 100)],
        "n1": "b", "s1": [spec(["_step", "grad", "absent"], 3, 3, 100)],
    })["project"]

    loss, acc = data["r0"]["sampledHistory"]
    assert loss == [{"_step": s, "loss": float(s)} for s in (2, 4, 5, 7, 8)]
    assert acc == [{"_step": 8, "acc": 0.8}, {"_step": 9, "acc": 0.9}]
    assert data["r1"]["sampledHistory"] == [[]]  # no row holds "absent"
    assert wandb_server.counters.requests["RunwatchHistory"] == 1


def test_too_few_samples_visibly_drops_rows(wandb_server, api):
    wandb_server.add_run("team", "proj", "a", rows=[{"loss": float(i)} for i in range(100)])
    wandb_server.add_run("team", "proj", "b", rows=[])

    data = gql(api, HISTORY_QUERY, {
        "entity": "team", "project": "proj",
        "n0": "a", "s0": [spec(["_step", "_timestamp", "loss"], 0, 99, 10)],
        "n1": "b", "s1": [spec(["_step", "loss"], 0, 99, 10)],
    })["project"]

    steps = [row["_step"] for row in data["r0"]["sampledHistory"][0]]
    assert len(steps) == 10
    assert steps[0] == 0 and steps[-1] == 99
    assert steps == sorted(set(steps))
    assert data["r1"]["sampledHistory"] == [[]]


def test_non_finite_values_in_both_encodings(wandb_server, api):
    nan, inf = float("nan"), float("inf")
    path = wandb_server.add_run("team", "proj", "a", rows=[
        {"loss": 1.0}, {"loss": nan}, {"loss": inf}, {"loss": -inf},
    ])

    data = gql(api, HISTORY_QUERY, {
        "entity": "team", "project": "proj",
        "n0": "a", "s0": [spec(["_step", "loss"], 0, 3, 10)],
        "n1": "a", "s1": [spec(["loss"], 3, 3, 10)],
    })["project"]
    values = [row["loss"] for row in data["r0"]["sampledHistory"][0]]
    assert values == [1.0, "NaN", "Infinity", "-Infinity"]  # JSON-typed field: strings

    node = runs_page(api)["edges"][0]["node"]
    assert "-Infinity" in node["summaryMetrics"]  # JSONString: bare, as json.dumps writes
    assert json.loads(node["summaryMetrics"])["loss"] == -inf
    lines = gql(api, "query H { project(name: \"proj\", entityName: \"team\") {"
                     " run(name: \"a\") { history(minStep: 1, maxStep: 2, samples: 10) } } }")
    assert lines["project"]["run"]["history"] == [wandb_server.run(path).history_page(1, 2, 10)[0]]
    assert math.isnan(json.loads(lines["project"]["run"]["history"][0])["loss"])


@pytest.mark.sdk
def test_scan_history_returns_every_row_of_a_real_run_directory(wandb_server, api, wandb_runs):
    loaded = read_rundir(wandb_runs.runs["long"])
    path = wandb_server.load_rundir(wandb_runs.runs["long"], entity="team", project="proj")

    run = api.run(path)
    scanned = list(run.scan_history())

    assert [row["_step"] for row in scanned] == list(range(2000)) == [
        row["_step"] for row in loaded.rows
    ]
    assert scanned == loaded.rows
    assert run.state == "finished" and run.displayName == "long"
    assert run.config["lr"] == 0.01
    # GetDefaultEntity comes once per Api, before whichever test uses it first.
    ops = [op for op in wandb_server.ops() if op != "GetDefaultEntity"]
    assert ops[:3] == ["Run", "RunHistoryKeys", "RunParquetHistory"]
    assert ops[3:] == ["HistoryPage"] * 2


@pytest.mark.sdk
@pytest.mark.parametrize(("scenario", "state"), [
    ("crashed", "failed"), ("interrupted", "killed"), ("killed", "running"),
    ("nan_loss", "finished"),
])
def test_load_rundir_judges_as_the_rundir_source(wandb_server, api, wandb_runs, scenario, state):
    path = wandb_server.load_rundir(wandb_runs.runs[scenario], entity="team", project="proj")

    node = runs_page(api)["edges"][0]["node"]
    stored = wandb_server.run(path)
    assert node["state"] == state
    assert node["historyLineCount"] == len(stored.rows) > 0
    assert node["tags"] == ["fixture", scenario.replace("_loss", "")]
    # The summary is the log's, as the rundir source reads it: for the SIGKILLed run it
    # is one step ahead of the last row that made it to disk.
    loaded = read_rundir(wandb_runs.runs[scenario])
    assert json.loads(node["summaryMetrics"])["_step"] == loaded.summary["_step"]
    assert stored.heartbeat_at == loaded.heartbeat_at


# --- auth, faults, retries, counters ------------------------------------------------------


def test_an_invalid_key_gets_401(wandb_server, api):
    wandb_server.invalid_keys.add(KEY)

    with pytest.raises(wandb.errors.AuthenticationError, match="user is not logged in"):
        wandb.Api(api_key=KEY, overrides={"base_url": wandb_server.url})
    with pytest.raises(WandbApiFailedError) as failed:
        gql(api, VIEWER_QUERY)
    assert failed.value.response.http_status == 401
    graphql = [r.status for r in wandb_server.received if r.path == "/graphql"]
    assert graphql == [401, 401]  # not retried


def test_500_and_429_are_retried_by_wandb_core(wandb_server, api):
    wandb_server.fail_next(2, status=500)
    assert gql(api, VIEWER_QUERY)["viewer"]["username"] == "fake-user"
    assert [r.status for r in wandb_server.received] == [500, 500, 200]

    wandb_server.reset()
    wandb_server.rate_limit_next(1, retry_after=1)
    gql(api, VIEWER_QUERY)
    first, second = wandb_server.received
    assert (first.status, second.status) == (429, 200)
    assert second.at - first.at >= 0.9  # Retry-After honoured

    wandb_server.reset()
    wandb_server.fail_next(5, status=503)
    with pytest.raises(WandbApiFailedError, match=r"giving up after 3 attempt\(s\)"):
        gql(api, VIEWER_QUERY)
    assert wandb_server.counters.requests["RunwatchViewer"] == 3  # x_graphql_retry_max=2


def test_faults_can_target_one_operation(wandb_server, api):
    wandb_server.add_run("team", "proj", "a", rows=[{"loss": 1.0}])
    wandb_server.fail_next(1, status=400, op="RunwatchHistory",
                           body='{"errors": [{"message": "no"}]}')

    assert runs_page(api)["edges"]
    with pytest.raises(WandbApiFailedError):
        gql(api, HISTORY_QUERY, {
            "entity": "team", "project": "proj", "n0": "a", "s0": [], "n1": "a", "s1": [],
        })
    assert [(r.op, r.status) for r in wandb_server.received] == [
        ("RunwatchRuns", 200), ("RunwatchHistory", 400),
    ]


def test_a_hung_request_times_out_in_the_client(wandb_server, api):
    wandb_server.hang_next(1, seconds=60)

    with pytest.raises(WandbApiFailedError, match="did not respond in time"):
        gql(api, VIEWER_QUERY, timeout=1)
    (hung,) = wandb_server.wait_for("RunwatchViewer")
    assert hung.status == 0  # still hanging: never answered


def test_down_and_up(wandb_server, api):
    wandb_server.down()
    with pytest.raises(WandbApiFailedError, match="HTTP 503"):
        gql(api, VIEWER_QUERY)
    assert {r.status for r in wandb_server.received if r.path == "/graphql"} == {503}

    wandb_server.up()
    wandb_server.down(refuse=True)
    with pytest.raises(WandbApiFailedError, match="connection refused"):
        gql(api, VIEWER_QUERY)
    wandb_server.up()
    assert gql(api, VIEWER_QUERY)["viewer"]["entity"] == "fake-entity"


def test_counters_per_operation(wandb_server, api):
    wandb_server.add_run("team", "proj", "a", rows=[{"loss": float(i)} for i in range(50)])

    gql(api, VIEWER_QUERY)
    runs_page(api)
    runs_page(api)
    variables = {"entity": "team", "project": "proj",
                 "n0": "a", "s0": [spec(["_step", "loss"], 10, 19, 100)],
                 "n1": "a", "s1": [spec(["_step", "loss"], 20, 29, 100)]}
    gql(api, HISTORY_QUERY, variables)

    counters = wandb_server.counters
    otel = sum(n for op, n in counters.requests.items() if op.startswith("/"))  # wandb-core's
    assert {op: n for op, n in counters.requests.items() if not op.startswith("/")} == {
        "RunwatchViewer": 1, "RunwatchRuns": 2, "RunwatchHistory": 1}
    assert counters.total_requests == 4 + otel
    assert counters.request_bytes["RunwatchHistory"] > len(HISTORY_QUERY)
    assert counters.response_bytes["RunwatchHistory"] > 20 * len('{"_step":10,"loss":10.0}')
    assert counters.total_bytes == sum(counters.request_bytes.values()) + sum(
        counters.response_bytes.values()
    )
    (history,) = wandb_server.requests_of("RunwatchHistory")
    specs = history.variables["s0"] + history.variables["s1"]
    assert [json.loads(text)["minStep"] for text in specs] == [10, 20]


def test_rows_can_be_served_with_another_step(wandb_server, api):
    """``serve_steps``: W&B's backend sometimes answers ``_step`` as a float, and a damaged
    row may carry anything; the row stays where its real step puts it in a range."""
    path = wandb_server.add_run("team", "proj", "a", rows=[{"loss": float(i)} for i in range(6)])
    wandb_server.serve_steps(path, {2: 2.0, 3: "abc"})
    with pytest.raises(KeyError, match="no row at step 9"):
        wandb_server.serve_steps(path, {9: 9.0})

    data = gql(api, HISTORY_QUERY, {
        "entity": "team", "project": "proj",
        "n0": "a", "s0": [spec(["_step", "loss"], 2, 4, 10)],
        "n1": "a", "s1": [spec(["_step", "loss"], 4, 5, 10)],
    })["project"]
    got = data["r0"]["sampledHistory"][0]
    assert [row["_step"] for row in got] == [2.0, "abc", 4]
    assert type(got[0]["_step"]) is float  # through wandb-core as W&B sent it
    assert [row["_step"] for row in data["r1"]["sampledHistory"][0]] == [4, 5]
    page = json.loads(wandb_server.run(path).history_page(3, 4, 10)[0])
    assert page == {**page, "_step": "abc", "loss": 3.0}
