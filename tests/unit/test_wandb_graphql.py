"""The W&B source's queries and how it reads answers: plain values in, values out."""

from __future__ import annotations

import json
import math

import pytest

from runwatch.model import RunState
from runwatch.sources.wandb_api import app_url
from runwatch.sources.wandb_client import WandbError, classify
from runwatch.sources.wandb_graphql import (
    HistoryRead,
    flat_summary,
    history_query,
    history_rows,
    history_variables,
    iso,
    key_rows,
    number,
    plain_config,
    read_node,
    runs_filter,
    series_from_rows,
    wandb_time,
)


@pytest.mark.parametrize(("raw", "want"), [
    (1, 1.0), (2.5, 2.5), (True, 1.0), ("NaN", math.nan), ("Infinity", math.inf),
    ("-Infinity", -math.inf), (math.nan, math.nan), ("loss", None), (None, None), ({}, None),
])
def test_number_reads_both_nonfinite_forms(raw, want):
    got = number(raw)
    if want is None:
        assert got is None
    elif math.isnan(want):
        assert math.isnan(got)
    else:
        assert got == want


def test_times_are_utc_whatever_the_zone_spelling():
    assert wandb_time("2026-11-23T08:00:00") == 1795420800.0
    assert wandb_time("2026-11-23T08:00:00Z") == 1795420800.0
    assert wandb_time("2026-11-23T09:00:00+01:00") == 1795420800.0
    assert wandb_time("yesterday") is None
    assert iso(1795420800.9) == "2026-11-23T08:00:00"


def test_runs_filter_reads_running_runs_and_those_updated_since():
    got = runs_filter(updated_after=1795420800.0, tags=("a",), group="g",
                      created_after=1795420800.0, query={"config.lr.value": 0.1})
    assert got == {"$and": [
        {"$or": [{"state": "running"}, {"heartbeatAt": {"$gt": "2026-11-23T08:00:00"}}]},
        {"tags": {"$in": ["a"]}}, {"group": "g"},
        {"createdAt": {"$gt": "2026-11-23T08:00:00"}}, {"config.lr.value": 0.1},
    ]}
    assert len(runs_filter(updated_after=0.0)["$and"]) == 1


def test_summary_and_config_come_out_flat_and_plain():
    assert flat_summary({"eval": {"loss": 1.0}, "img": {"_type": "image-file", "w": 2}}) == {
        "eval.loss": 1.0, "img": {"_type": "image-file", "w": 2}}
    raw = json.dumps({"lr": {"value": 0.1, "desc": None}, "_wandb": {"value": {}}, "bare": 3})
    assert plain_config(raw) == {"lr": 0.1, "bare": 3}
    assert plain_config("not json") == {}


def test_a_runs_node_becomes_a_snapshot_without_history():
    node = {"name": "abc123", "displayName": "llama-7b", "state": "crashed",
            "createdAt": "2026-11-23T07:00:00", "heartbeatAt": "2026-11-23T08:00:00",
            "tags": ["x"], "group": "g", "historyLineCount": 7,
            "summaryMetrics": '{"_step": 6, "_timestamp": 1795420700.5, "loss": NaN}',
            "config": '{"lr": {"value": 0.1}}'}
    got = read_node(node, source="wandb:team", entity="team", project="p",
                    app_url="https://wandb.ai")
    snap = got.snapshot
    assert (snap.ref.path, snap.ref.name, snap.ref.location) == (
        "team/p/abc123", "llama-7b", "https://wandb.ai/team/p/runs/abc123")
    assert snap.state is RunState.CRASHED
    assert (snap.heartbeat, snap.progress, snap.started, snap.last_step) == (
        1795420800.0, 1795420700.5, 1795417200.0, 6)
    assert math.isnan(snap.summary["loss"])
    assert snap.keys == {"_step", "_timestamp", "loss"}
    assert snap.config == {"lr": 0.1}
    assert (got.history_lines, got.snapshot.last_step) == (7, 6)
    assert read_node({"name": "r", "state": "preempting"}, source="s", entity="e", project="p",
                     app_url="u").snapshot.state is RunState.RUNNING


def test_history_reads_ask_one_spec_per_key_over_their_inclusive_range():
    read = HistoryRead(run_id="r", keys=("grad", "loss"), first=101, last=200, samples=100)
    assert [json.loads(spec) for spec in read.specs()] == [
        {"keys": ["_step", "_timestamp", key], "minStep": 101, "maxStep": 200,
         "samples": 100} for key in ("grad", "loss")]
    query = history_query(2)
    assert "r1: run(name: $n1) { sampledHistory(specs: $s1) }" in query
    variables = history_variables("e", "p", [read, read])
    assert variables["n1"] == "r" and len(variables["s0"]) == 2


def test_history_rows_become_sorted_columns_with_both_nonfinite_forms():
    data = {"project": {"r0": {"sampledHistory": [
        [{"_step": 3, "_timestamp": 30.0, "loss": "NaN"},
         {"_step": 1, "_timestamp": 10.0, "loss": 1.5},
         {"_step": 2, "_timestamp": 20.0, "loss": math.nan},
         {"_step": 4, "_timestamp": 40.0, "loss": {"_type": "histogram"}}],  # not a number
        [{"_step": 1, "_timestamp": 10.0, "acc": "Infinity"}],
        [],
    ]}, "r1": None}}
    rows = history_rows(data, 0, ("loss", "acc", "missing"))
    assert history_rows(data, 1, ("loss",)) is None
    answer = series_from_rows(rows)
    series = answer.series
    assert series["loss"].steps == (1, 2, 3)
    assert series["loss"].values[0] == 1.5 and all(map(math.isnan, series["loss"].values[1:]))
    assert series["acc"].values == (math.inf,)
    assert "missing" not in series
    assert (answer.newest, answer.unread) == (30.0, None)


def rows_of(*steps, key="loss"):
    return [{"_step": s, "_timestamp": 100.0 + i, key: float(i)} for i, s in enumerate(steps)]


def test_integral_float_steps_are_the_steps_they_stand_for():
    answer = series_from_rows({"loss": rows_of(510.0, 511, 512.0)}, after=509)
    assert answer.unread is None
    assert answer.series["loss"].steps == (510, 511, 512)
    assert all(type(s) is int for s in answer.series["loss"].steps)


@pytest.mark.parametrize(("bad", "shown"), [
    ("abc", '"abc"'), (12.5, "12.5"), (None, "missing"), (True, "true"), (math.inf, "Infinity"),
])
def test_a_row_whose_step_cannot_be_read_ends_the_read_before_it(bad, shown):
    loss = rows_of(10, 11, 12, 13)
    loss[2]["_step"] = bad
    grad = rows_of(10, 11, 12, 13, key="grad")  # judged only as far as the loss is
    answer = series_from_rows({"loss": loss, "grad": grad}, after=9)
    assert answer.unread is not None
    assert (answer.unread.key, answer.unread.after) == ("loss", 11)
    assert answer.unread.describe() == (
        f"the history row after step 11 has _step {shown}, not a whole number")
    assert answer.series["loss"].steps == answer.series["grad"].steps == (10, 11)
    assert answer.newest == 101.0  # of the rows judged


def test_an_unreadable_first_row_judges_nothing_of_the_read():
    answer = series_from_rows({"loss": [{"_step": "x", "loss": 1.0}, *rows_of(5, 6)]},
                              after=4)
    assert answer.series == {} and answer.newest is None
    assert answer.unread is not None and answer.unread.after == 4
    first = series_from_rows({"loss": [{"_step": "x", "loss": 1.0}]})
    assert first.unread is not None and first.unread.describe() == (
        'the first history row has _step "x", not a whole number')


def test_history_keys_complete_what_the_summary_misses():
    node = {"name": "r", "state": "running", "summaryMetrics": '{"loss": {"min": 0.8}}',
            "historyKeys": {"lastStep": 4, "keys": {"loss": {}, "_step": {}, "eval": {}}}}
    snap = read_node(node, source="s", entity="e", project="p", app_url="u").snapshot
    assert snap.keys == {"loss.min", "loss", "_step", "eval"}


@pytest.mark.parametrize(("base", "app"), [
    ("https://api.wandb.ai", "https://wandb.ai"),
    ("https://wandb.corp.example", "https://wandb.corp.example"),
    ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
])
def test_links_point_at_the_app(base, app):
    assert app_url(base) == app


class _Failed(Exception):
    def __init__(self, message, status):
        super().__init__(message)
        self.response = type("R", (), {"http_status": status})()


@pytest.mark.parametrize(("exc", "kind", "temporary"), [
    (_Failed("unauthorized", 401), "auth", False),
    (_Failed("slow down", 429), "rate-limited", True),
    (_Failed("bad gateway", 502), "unavailable", True),
    (_Failed("nope", 400), "query", False),
    # The status decides before the text does: these bodies name the key, yet retrying helps.
    (_Failed("rate limit exceeded for this API key", 429), "rate-limited", True),
    (_Failed("authentication service unavailable", 503), "unavailable", True),
    (_Failed("connection refused", 0), "unavailable", True),
    (Exception("POST /graphql giving up after 2 attempt(s) while retrying: HTTP 429: slow"),
     "rate-limited", True),
    (Exception("POST /graphql giving up after 3 attempt(s) while retrying: HTTP 503: down"),
     "unavailable", True),
    (Exception("the service process is busy and did not respond in time."), "timeout", True),
    (Exception("No authentication configured. Use `wandb login` to log in."), "auth", False),
])
def test_failures_say_whether_retrying_helps(exc, kind, temporary):
    got = classify(exc)
    assert isinstance(got, WandbError)
    assert (got.kind, got.temporary) == (kind, temporary)
    assert "\n" not in str(got)


def test_a_rate_limit_says_so_without_wandb_cores_retry_story():
    got = classify(Exception("POST http://w/graphql giving up after 2 attempt(s) while"
                             " retrying: HTTP 429: slow down"))
    assert (str(got), got.status) == ("rate limited by W&B (HTTP 429)", 429)


def test_without_any_key_the_client_says_so_instead_of_prompting(tmp_path, monkeypatch):
    from runwatch.sources.wandb_client import WandbClient

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))  # none there
    client = WandbClient(base_url="http://127.0.0.1:9", api_key=None)
    with pytest.raises(WandbError) as caught:
        client.execute("query { viewer { id } }")
    assert caught.value.kind == "auth"
    assert str(caught.value).startswith("no W&B API key for http://127.0.0.1:9")


def test_a_key_from_netrc_is_found_as_wandb_login_writes_it(tmp_path, monkeypatch):
    from runwatch.sources.wandb_client import _stored_key

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password k123\n")
    (tmp_path / "netrc").chmod(0o600)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert _stored_key("https://api.wandb.ai") == "k123"
    assert _stored_key("https://wandb.corp.example") is None
    monkeypatch.setenv("WANDB_API_KEY", "from-env")
    assert _stored_key("https://api.wandb.ai") == "from-env"


def test_key_rows_add_up_each_keys_type_counts():
    raw = {"lastStep": 9, "keys": {
        "loss": {"typeCounts": [{"type": "number", "count": 8}, {"type": "string", "count": 2}]},
        "img": {"typeCounts": [{"type": "image-file", "count": 1}]}, "odd": {"x": 1}}}
    assert key_rows(raw) == {"loss": 10, "img": 1}
    assert key_rows(json.dumps(raw)) == {"loss": 10, "img": 1}
    assert key_rows(None) == {}
    node = read_node({"name": "r", "historyKeys": raw}, source="s", entity="e", project="p",
                     app_url="u")
    assert node.key_rows == {"loss": 10, "img": 1}


def test_a_spec_of_several_keys_shares_its_rows_among_them():
    read = HistoryRead(run_id="r", keys=("a", "b", "c"), first=0, last=9, samples=10,
                       groups=(("_timestamp", "a", "b"), ("c",)))
    assert [json.loads(spec)["keys"] for spec in read.specs()] == [
        ["_step", "_timestamp", "a", "b"], ["_step", "_timestamp", "c"]]
    assert read.expected == 10 * 3
    data = {"project": {"r0": {"sampledHistory": [
        [{"_step": 1, "_timestamp": 10.0, "a": 1.0, "b": 2.0}],
        [{"_step": 2, "_timestamp": 20.0, "c": 3.0}],
    ]}}}
    series = series_from_rows(history_rows(data, 0, read.specs_keys)).series
    assert {key: (s.steps, s.values) for key, s in series.items()} == {
        "_timestamp": ((1,), (10.0,)), "a": ((1,), (1.0,)), "b": ((1,), (2.0,)),
        "c": ((2,), (3.0,))}
