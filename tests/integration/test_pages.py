"""The status pages over real HTTP, on a real SQLite store: what each page shows, the JSON
under /api/v1 against the store, hostile names shown as text under a policy that forbids
script, the bearer token, read-only. (The pages in a real browser: test_pages_browser.py.)"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from runwatch.metrics import HttpServer, Metrics, health_app
from runwatch.model import AlertState, AlertStatus, RunRef, Severity, fingerprint
from runwatch.state_json import alert_json, silence_json
from runwatch.store.base import Matcher, open_store
from runwatch.web.app import CSP, Context, Pages
from runwatch.web.board import RunBoard

NOW = 1_796_000_000.0
HOSTILE = "<script>alert(1)</script>"


def alert(rule: str, name: str, status: AlertStatus, severity: Severity = Severity.CRITICAL,
          **changes) -> AlertState:
    ref = RunRef(source="rundir", id=name, name=name, project="llm", entity="team")
    fields = {"active_since": NOW - 600, "fired_at": NOW - 500, "last_seen": NOW} | changes
    return AlertState(fingerprint=fingerprint(rule, ref), rule=rule, run=ref,
                      severity=severity, status=status, summary=f"{rule} on {name}", **fields)


@pytest.fixture
def served(tmp_path: Path):
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    store.commit_tick(source="rundir", now=NOW, cursors={}, alerts=[
        alert("grad-norm-exploding", HOSTILE, AlertStatus.FIRING),
        alert("run-stalled", "llama-7b", AlertStatus.PENDING, Severity.WARNING,
              fired_at=None),
        alert("loss-nonfinite", "gpt-small", AlertStatus.RESOLVED, resolved_at=NOW - 60,
              resolution="run ended: finished"),
        alert("loss-nonfinite", "old-run", AlertStatus.RESOLVED, resolved_at=NOW - 3 * 86400),
    ])
    store.add_silence(matchers=[Matcher.parse(f"run={HOSTILE}")], ends_at=NOW + 3600,
                      now=NOW, created_by="ana", comment="known <b>bad</b> run")
    store.save_status("rundir", {"ok": True, "runs": 3, "duration": 0.02, "errors": [],
                                 "by": "run", "last_tick": NOW - 30}, NOW - 30)
    access: dict = {"token": lambda: None, "users": None, "board": RunBoard()}
    pages = Pages(Context(store=store, clock=lambda: NOW, sources=lambda: ["rundir", "wandb"],
                          leader=lambda: "leading (epoch 1)", token=lambda: access["token"](),
                          users=lambda: access["users"], board=access["board"]))
    server = HttpServer("127.0.0.1", 0, health_app(Metrics(), lambda: (True, "ready"),
                                                   pages=pages))
    server.start()
    yield server, store, access
    server.stop()
    store.close()


def get(server, path: str, **headers: str) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, _joined(r.headers), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, _joined(exc.headers), exc.read().decode()


def _joined(headers) -> dict[str, str]:
    """Headers by name, a repeated one's values joined (WWW-Authenticate comes twice)."""
    return {name: ", ".join(headers.get_all(name)) for name in set(headers.keys())}


def test_alerts_page_shows_firing_pending_and_recently_resolved_as_text(served):
    server, _, _ = served
    status, headers, body = get(server, "/alerts")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Content-Security-Policy"] == CSP and "script-src" not in CSP
    assert "default-src 'none'" in CSP
    assert "<script" not in body.lower()  # no script of ours, none from a run's name
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    firing, pending, resolved = (body.split(f'<section id="{s}">')[1].split("</section>")[0]
                                 for s in ("firing", "pending", "resolved"))
    assert "grad-norm-exploding" in firing and "8m20s ago" in firing
    assert "run-stalled" in pending and "llama-7b" in pending
    assert "gpt-small" in resolved and "run ended: finished" in resolved
    assert "old-run" not in body  # resolved three days ago: not recent
    assert "leading (epoch 1)" in body


def test_the_json_is_the_store_s(served):
    server, store, _ = served
    status, headers, body = get(server, "/api/v1/alerts")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    data = json.loads(body)
    stored = {a.fingerprint: alert_json(a) for a in store.alerts()}
    assert [a["run"]["name"] for a in data["firing"]] == [HOSTILE]
    for group in data.values():
        for shown in group:
            assert shown == stored[shown["fingerprint"]]
    assert [a["run"]["name"] for a in data["resolved"]] == ["gpt-small"]
    _, _, body = get(server, "/api/v1/silences")
    assert json.loads(body) == [silence_json(s, NOW) for s in store.silences(NOW)]
    _, _, body = get(server, "/api/v1/status")
    shown = json.loads(body)
    assert shown["sources"]["rundir"]["runs"] == 3 and shown["sources"]["wandb"] is None
    assert (shown["firing"], shown["outbox"]) == (1, 0)
    assert shown["this_replica"] == "leading (epoch 1)"


def test_silences_and_status_pages(served):
    server, store, _ = served
    _, _, body = get(server, "/silences")
    assert "run=&lt;script&gt;" in body and "known &lt;b&gt;bad&lt;/b&gt; run" in body
    assert "active" in body and "in 1h" in body and "ana" in body
    store.expire_silence(store.silences(NOW)[0].id, NOW - 10)
    _, _, body = get(server, "/silences")
    assert "expired" in body and "active" not in body
    _, _, body = get(server, "/status")
    assert "rundir" in body and "30s ago" in body and "never ticked" in body
    assert "1 alerts firing; 0 notifications waiting" in body


def test_a_token_closes_pages_and_json_but_not_the_probes(served):
    server, _, access = served
    access["token"] = lambda: "s3cret-token"
    for path in ("/alerts", "/api/v1/alerts", "/status"):
        status, headers, _ = get(server, path)
        assert status == 401 and 'Bearer realm="runwatch"' in headers["WWW-Authenticate"]
        assert get(server, path, Authorization="Bearer wrong")[0] == 401
        assert get(server, path, Authorization="Bearer s3cret-token")[0] == 200
    assert get(server, "/readyz")[0] == 200
    assert get(server, "/static/style.css")[0] == 200


def test_read_only_unknown_paths_and_a_store_that_does_not_answer(served):
    server, store, _ = served
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}/alerts", data=b"x",
                                     method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 405
    assert get(server, "/api/v1/nothing")[0] == 404
    assert get(server, "/")[0] == 200  # the runs (none on this board)
    store.close()
    status, _, body = get(server, "/alerts")
    assert status == 503 and "the store is unavailable" in body and "Traceback" not in body
    status, _, body = get(server, "/api/v1/alerts")
    assert status == 503 and "store is closed" in json.loads(body)["error"]


def test_a_hostile_name_in_every_column_stays_text(served):
    server, store, _ = served
    nasty = alert("r", "x", AlertStatus.FIRING)
    nasty = replace(nasty, rule=HOSTILE, summary=f'"><img src=x onerror=alert(1)>{HOSTILE}',
                    run=replace(nasty.run, project=HOSTILE, id="y"))
    store.commit_tick(source="rundir", now=NOW, cursors={}, alerts=[nasty])
    _, _, body = get(server, "/alerts")
    assert "<img" not in body and "<script" not in body.lower()
    assert body.count("&lt;script&gt;") >= 3


# --- in a real browser: Debian's chromium driven by Playwright ----------------------------

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="no playwright: pip install"
                                   " playwright")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no browser at {CHROMIUM}: apt-get install chromium")
    with sync_api.sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=CHROMIUM,
                                                  args=["--no-sandbox"])
        except Exception as exc:  # a browser that cannot start here: said in one line
            pytest.skip(f"chromium does not start: {str(exc).splitlines()[0]}")
        yield launched
        launched.close()


def test_in_a_browser_names_are_text_no_script_runs_and_the_policy_holds(served, browser,
                                                                         tmp_path):
    server, _, _ = served
    page = browser.new_page()
    dialogs: list[str] = []
    refused: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("console", lambda m: refused.append(m.text)
            if "Content Security Policy" in m.text else None)
    base = f"http://127.0.0.1:{server.port}"
    page.goto(f"{base}/alerts")
    assert page.title() == "alerts · runwatch"
    firing = page.locator("#firing tbody tr")
    assert firing.count() == 1
    assert firing.first.locator("td").nth(2).inner_text().startswith(HOSTILE)  # as text
    assert page.locator("#pending tbody tr td").nth(1).inner_text() == "run-stalled"
    assert "run ended: finished" in page.locator("#resolved").inner_text()
    assert page.evaluate("document.scripts.length") == 0
    # The page's own policy refuses script even when one is put into it.
    page.evaluate("""() => { const s = document.createElement('script');
                             s.textContent = 'window.ran = true'; document.body.append(s); }""")
    assert page.evaluate("window.ran === undefined")
    assert refused, "the browser did not report the refused script"
    page.screenshot(path=str(tmp_path / "alerts.png"), full_page=True)
    assert (tmp_path / "alerts.png").stat().st_size > 10_000

    page.click("text=silences")
    assert page.title() == "silences · runwatch"
    row = page.locator("tbody tr").first
    assert row.locator("td").first.inner_text() == "active"
    assert HOSTILE in row.inner_text() and "known <b>bad</b> run" in row.inner_text()
    page.click("text=status")
    assert "1 alerts firing" in page.locator("main").inner_text()
    assert page.locator("header .leader").inner_text() == "leading (epoch 1)"
    assert dialogs == []
    page.close()


# --- the runs page, from a real daemon's ticks over real SDK run directories ----------------


@pytest.fixture
def daemon_pages(tmp_path, wandb_runs, fake_slack):
    import shutil

    from freezegun import freeze_time

    from runwatch.daemon import Daemon

    runs = tmp_path / "runs" / "wandb"
    for scenario in ("healthy", "exploding", "crashed", "hostile"):
        source = wandb_runs.runs[scenario]
        shutil.copytree(source, runs / source.name, symlinks=True)
    config = tmp_path / "runwatch.yaml"
    config.write_text("sources: [{type: rundir, path: runs}]\nstore: sqlite:///state.db\n"
                      "receivers:\n  - name: team-slack\n    slack: {token: xoxb-1-2-pagetoken,"
                      f" channel: '#a', api_url: '{fake_slack.api_url}'}}\n")
    from runwatch.sources.rundir import RundirSource

    seen = RundirSource("probe", [runs.parent]).poll({}, frozenset(), 0.0).snapshots
    now = max(s.heartbeat or 0.0 for s in seen) + 60  # a minute after the runs' last word
    daemon = Daemon(config)
    with freeze_time(datetime.fromtimestamp(now, UTC)):
        daemon.tick_source("rundir")
        server = HttpServer("127.0.0.1", 0, health_app(daemon.metrics, daemon.ready,
                                                       pages=daemon.pages()))
        server.start()
        try:
            yield server, daemon
        finally:
            server.stop()
            daemon.runtime.close()
            daemon.store.close()


def test_the_runs_page_lists_every_run_worst_first_with_its_verdict(daemon_pages):
    server, daemon = daemon_pages
    status, _, body = get(server, "/api/v1/runs")
    assert status == 200
    runs = json.loads(body)
    verdicts = {r["run"]["name"]: r["verdict"] for r in runs}
    assert verdicts == {"healthy": "healthy", "exploding-grads": "critical",
                        "crashed": "critical", HOSTILE: "critical"}
    assert [r["verdict"] for r in runs][-1] == "healthy"  # worst first
    firing = {}
    for a in daemon.store.alerts(status=AlertStatus.FIRING):
        firing.setdefault(a.run.path, set()).add(a.rule)
    for run in runs:
        assert {a["rule"] for a in run["alerts"] if a["status"] == "firing"} == firing.get(
            run["run"]["path"], set())
    healthy = next(r for r in runs if r["verdict"] == "healthy")
    assert healthy["state"] == "finished" and healthy["step"] == 59
    assert len(healthy["curves"]["loss"]["steps"]) > 10  # the sparkline's points
    assert "grad-norm-exploding" in {a["rule"] for a in next(
        r for r in runs if r["run"]["name"] == HOSTILE)["alerts"]}

    _, _, body = get(server, "/?verdict=healthy")
    assert "healthy" in body and "exploding-grads" not in body and "1 of 4 runs" in body
    _, _, body = get(server, "/api/v1/runs?state=failed&verdict=critical")
    assert [r["run"]["name"] for r in json.loads(body)] == ["crashed"]
    _, _, body = get(server, "/api/v1/runs?state=failed&state=finished&source=rundir")
    assert len(json.loads(body)) == 4
    _, _, body = get(server, "/")
    assert "<script" not in body.lower() and "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "&lt;b&gt;hostile&lt;/b&gt;" in body and "<polyline" in body

    # One run: its row and every alert it had, as the store holds them.
    from urllib.parse import quote

    exploding = next(r for r in runs if r["run"]["name"] == "exploding-grads")
    path = exploding["run"]["path"]
    status, _, body = get(server, "/api/v1/runs/" + quote(path, safe=""))
    assert status == 200
    one = json.loads(body)
    assert one["verdict"] == "critical" and one["state"] == "finished"
    told = {a["rule"]: a.pop("deliveries") for a in one["history"]}
    assert [(d["receiver"], d["as"]) for d in told["grad-norm-exploding"]] == [
        ("team-slack", "resolved")]  # fired and ended in one tick: one message
    assert told["grad-norm-spiky"] == []  # inhibited by the exploding one: nobody told
    assert sorted(one["history"], key=lambda a: a["fingerprint"]) == sorted(
        (alert_json(a) for a in daemon.store.alerts(run_path=path)
         if a.status != AlertStatus.INACTIVE),
        key=lambda a: a["fingerprint"])
    assert {a["rule"] for a in one["history"]} == {"grad-norm-exploding", "grad-norm-spiky"}
    status, _, body = get(server, "/runs/" + quote(path, safe=""))
    assert status == 200 and "run ended: finished" in body and body.count("<polyline") >= 2
    assert "team-slack: resolved" in body and "none logged" in body
    # Its characterize report: the daemon's alerts, no rule replayed, the board's curves.
    report = one["report"]
    assert report["health"] == "critical" and report["liveness"] == "ended"
    assert {r["rule"] for r in report["reasons"]} >= {"grad-norm-exploding"}
    assert report["grad_norm"]["latest"] > 10 and report["loss"]["direction"] == "improving"
    assert report["pace"]["steps_per_hour"] > 0 and report["pace"]["eta_s"] is None
    assert '<ul id="reasons">' in body
    assert get(server, "/runs/" + quote("/no/such/run", safe=""))[0] == 404


def test_the_runs_page_in_a_browser(daemon_pages, browser, tmp_path):
    server, _ = daemon_pages
    page = browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"http://127.0.0.1:{server.port}/")
    rows = page.locator("#runs tbody tr")
    assert rows.count() == 4
    names = [rows.nth(i).locator("td").nth(1).inner_text() for i in range(4)]
    assert any(n.startswith(HOSTILE) and "<b>hostile</b>" in n for n in names)
    assert rows.last.locator("td").first.inner_text() == "healthy"
    assert page.locator("svg.spark").count() >= 4
    page.screenshot(path=str(tmp_path / "runs.png"), full_page=True)
    page.click(f"#runs >> text={HOSTILE}")  # through to the run's own page
    assert page.title() == f"{HOSTILE} · runwatch"
    assert "grad-norm-exploding" in page.locator("#history").inner_text()
    assert page.locator("figure.chart svg").count() >= 2
    page.screenshot(path=str(tmp_path / "run.png"), full_page=True)
    page.go_back()
    page.click("text=verdict: >> text=critical")
    assert page.locator("#runs tbody tr").count() == 3
    page.click("header >> text=alerts")
    assert HOSTILE in page.locator("#resolved").inner_text()  # when its run ended
    assert dialogs == [] and page.evaluate("document.scripts.length") == 0
    page.close()


def test_a_sparkline_keeps_its_newest_point_and_its_size_over_many_ticks():
    from runwatch.model import Series
    from runwatch.web.board import POINTS, extend, spark

    curve = Series()
    for tick in range(50):  # 50 ticks of 20 new rows each, one of them NaN
        steps = tuple(range(tick * 20, tick * 20 + 20))
        values = tuple(float("nan") if s == 7 else float(s) for s in steps)
        curve = extend(curve, Series(steps=steps, times=steps, values=values))
        assert len(curve.steps) <= POINTS and curve.steps[-1] == steps[-1]
    assert curve.steps[0] == 0 and curve.steps == tuple(sorted(curve.steps))
    assert 7 not in curve.steps  # not finite: not drawn
    assert extend(curve, Series(steps=(5,), times=(5,), values=(1.0,))) is curve  # old rows
    resumed = extend(Series(), Series(steps=(10, 20, 15, 20, 30), times=(1,) * 5,
                                      values=(1.0,) * 5))
    assert resumed.steps == (10, 20, 30)  # a run resumed from a checkpoint repeats steps
    points = spark(curve).split()
    assert len(points) == len(curve.steps) and points[0] == "0.0,24.0" and points[-1] == (
        "100.0,0.0")


def test_users_with_passwords_from_a_file(served, tmp_path, capsys, monkeypatch):
    """`runwatch page-user` prints the line; the pages then take that user's password
    (HTTP basic auth) — or the token, when both are set."""
    import base64
    import io

    from runwatch.cli import main
    from runwatch.web.auth import parse_users, read_users

    server, _, access = served
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse\n"))
    assert main(["page-user", "ana", "--password-stdin"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("ana:pbkdf2_sha256$") and "correct horse" not in line
    (tmp_path / "users").write_text(f"# who may read the pages\n{line}\n")
    access["users"] = read_users(tmp_path / "users")
    access["token"] = lambda: "s3cret-token"

    def basic(name: str, password: str) -> str:
        return "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()

    status, headers, _ = get(server, "/alerts")
    assert status == 401 and "Basic" in headers["WWW-Authenticate"]
    assert get(server, "/alerts", Authorization=basic("ana", "correct horse"))[0] == 200
    assert get(server, "/alerts", Authorization=basic("ana", "correct horse"))[0] == 200
    assert get(server, "/alerts", Authorization=basic("ana", "wrong horse"))[0] == 401
    assert get(server, "/alerts", Authorization=basic("bob", "correct horse"))[0] == 401
    assert get(server, "/alerts", Authorization="Basic !!notbase64")[0] == 401
    assert get(server, "/alerts", Authorization="Bearer s3cret-token")[0] == 200
    with pytest.raises(ValueError, match=r"users:2: expected name:pbkdf2_sha256"):
        parse_users("ok:pbkdf2_sha256$1$00$00\nbroken line\n", "users")
    assert main(["page-user", "a:b", "--password-stdin"]) == 2


def test_a_running_run_s_pace_and_eta_from_its_config_and_curve():
    from runwatch.model import RunRef, RunSnapshot, RunState, Series
    from runwatch.web.board import RunBoard

    board = RunBoard()
    ref = RunRef(source="rundir", id="r1", name="r1")
    steps = tuple(range(0, 200, 10))  # 10 steps a second
    loss = Series(steps=steps, times=tuple(NOW - 20 + s / 10 for s in steps),
                  values=tuple(1.0 for _ in steps))
    board.update([RunSnapshot(ref=ref, state=RunState.RUNNING, last_step=190,
                              config={"trainer": {"max_steps": 1190}},
                              keys=frozenset({"loss"}), history={"loss": loss})], NOW, {})
    row = board.row(ref.path)
    assert (row.total, round(row.rate, 6), round(row.done_at)) == (1190, 10.0, NOW + 100)
    board.update([RunSnapshot(ref=ref, state=RunState.FINISHED, last_step=1190)], NOW + 100,
                 {})
    ended = board.row(ref.path)
    assert ended.done_at is None and ended.total == 1190  # the config kept from before


def test_the_pages_close_rather_than_open_on_a_broken_access_file(served, tmp_path):
    """A token file emptied while running, or a users file edited to ask for zero
    iterations: every request is refused, one line, no traceback."""
    from runwatch.config.models import Http
    from runwatch.web.auth import parse_users

    server, _, access = served
    (tmp_path / "token").write_text("s3cret\n")
    http = Http(listen="0.0.0.0:9465", token_file=tmp_path / "token")
    access["token"] = http.token
    assert get(server, "/alerts", Authorization="Bearer s3cret")[0] == 200
    (tmp_path / "token").write_text("")  # emptied while rotating it
    assert get(server, "/alerts")[0] == 401
    assert get(server, "/alerts", Authorization="Bearer ")[0] == 401
    access["token"] = lambda: None
    with pytest.raises(ValueError, match="1 to 2,000,000 iterations"):
        parse_users("ana:pbkdf2_sha256$0$00$00\n", "users")
    access["users"] = {"ana": "pbkdf2_sha256$0$00$00"}  # (as if read past the check)
    status, _, body = get(server, "/alerts", Authorization="Basic YW5hOng=")
    assert status == 401 and "Traceback" not in body


def test_a_run_directory_named_in_utf_8_is_found_and_head_has_no_body(served):
    from urllib.parse import quote

    from runwatch.model import RunRef, RunSnapshot, RunState

    server, _, access = served
    ref = RunRef(source="rundir", id="été", name="été", location="/data/runs/été")
    access["board"].update([RunSnapshot(ref=ref, state=RunState.RUNNING)], NOW, {})
    status, _, body = get(server, "/runs/" + quote(ref.path, safe=""))
    assert status == 200 and "été" in body
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}/alerts", method="HEAD")
    with urllib.request.urlopen(request, timeout=5) as r:
        assert r.status == 200 and r.read() == b""


# --- the board in the store: a restart and a standby show what the writer saw -------------


def test_the_board_saves_a_new_or_ended_run_at_once_and_other_changes_each_minute():
    from runwatch.model import RunSnapshot, RunState, Series
    from runwatch.store.base import BoardEntry
    from runwatch.web.board import KEEP_ENDED, RESAVE, SAVE_EVERY, decode

    ref = RunRef(source="rundir", id="r1", name="r1", location="/runs/r1")

    def snap(upto: int, state=RunState.RUNNING) -> RunSnapshot:
        steps = tuple(range(upto - 10, upto))
        loss = Series(steps=steps, times=tuple(NOW + s for s in steps),
                      values=tuple(1.0 / (1 + s) for s in steps))
        return RunSnapshot(ref=ref, state=state, last_step=upto - 1, heartbeat=NOW + upto,
                           config={"trainer": {"max_steps": 500, "notes": "x" * 9000}},
                           keys=frozenset({"loss"}), history={"loss": loss})

    board = RunBoard()
    board.update([snap(10)], NOW, {})
    [saved] = board.to_save(NOW)  # a new run: at once
    row = board.row(ref.path)
    assert decode(saved.body) == row and (saved.path, saved.seen) == (ref.path, NOW)
    assert row.config == {"trainer.max_steps": 500}  # what the pages read, not all of it
    board.update([snap(20)], NOW + 10, {})
    assert board.to_save(NOW + 10) is None  # changed, but saved a minute after the last
    assert [decode(e.body).step for e in board.to_save(NOW + SAVE_EVERY)] == [19]
    board.update([replace(snap(20), tags=())], NOW + SAVE_EVERY + 1, {})  # only seen again
    assert board.to_save(NOW + 2 * SAVE_EVERY) == []
    board.update([snap(30, RunState.CRASHED)], NOW + 2 * SAVE_EVERY + 1, {})
    ended = board.to_save(NOW + 2 * SAVE_EVERY + 1)  # a state change: at once
    assert [decode(e.body).state for e in ended] == [RunState.CRASHED]
    board.unsaved(ended)  # the store did not take it: it goes with the next save
    assert board.to_save(NOW + 2 * SAVE_EVERY + 2) == ended
    board.update([snap(30, RunState.CRASHED)], NOW + RESAVE + SAVE_EVERY, {})  # read again
    assert [e.path for e in board.to_save(NOW + RESAVE + 2 * SAVE_EVERY + 2)] == [ref.path]
    # Saved again once only while no tick reads it: its time seen has not moved.
    assert board.to_save(NOW + 2 * RESAVE + 4 * SAVE_EVERY) == []

    shown = RunBoard()
    odd = json.loads(ended[0].body) | {"curves": []}  # JSON, but not a row's
    problems = shown.load([*ended, BoardEntry(path="/runs/bad", source="rundir", seen=NOW,
                                              body="{not json"),
                           replace(ended[0], path="/runs/odd", body=json.dumps(odd)),
                           replace(ended[0], path="x/y/z", source="removed"),
                           replace(ended[0], path="/runs/old", seen=NOW - KEEP_ENDED - 1)],
                          ["rundir"], NOW + 2 * SAVE_EVERY + 2)
    assert shown.rows() == [decode(ended[0].body)]
    assert len(problems) == 2 and "'/runs/bad' cannot be read" in problems[0]
    assert "'/runs/odd' cannot be read" in problems[1]


def test_a_restarted_daemon_shows_the_runs_that_ended_before_it(daemon_pages, tmp_path):
    from urllib.parse import quote

    from runwatch.daemon import Daemon

    server, daemon = daemon_pages
    before = json.loads(get(server, "/api/v1/runs")[2])
    crashed = next(r["run"]["path"] for r in before if r["run"]["name"] == "crashed")
    one = json.loads(get(server, "/api/v1/runs/" + quote(crashed, safe=""))[2])
    daemon.runtime.close()
    daemon.store.close()
    again = Daemon(tmp_path / "runwatch.yaml")  # it has read no run yet: the store's board
    restarted = HttpServer("127.0.0.1", 0, health_app(again.metrics, again.ready,
                                                      pages=again.pages()))
    restarted.start()
    try:
        assert json.loads(get(restarted, "/api/v1/runs")[2]) == before
        assert json.loads(get(restarted, "/api/v1/runs/" + quote(crashed, safe=""))[2]) == one
        assert one["report"]["liveness"] == "ended" and one["verdict"] == "critical"
    finally:
        restarted.stop()
        again.runtime.close()
        again.store.close()


def test_a_run_s_report_knows_each_alert_s_kind_and_the_grad_norm_bounds(tmp_path):
    """No rule is replayed on a page, but the rules say what a firing alert means: a
    heartbeat rule firing is a dead run, a progress rule a hung one."""
    from runwatch.checks import RULE_ADAPTER
    from runwatch.config.rules import RuleSet
    from runwatch.keys import DEFAULT_ALIASES
    from runwatch.model import RunSnapshot, RunState, Series

    rules = tuple(RULE_ADAPTER.validate_python(r) for r in (
        {"name": "stalled", "kind": "heartbeat", "older_than": "30m", "severity": "critical"},
        {"name": "hung", "kind": "progress", "older_than": "30m", "severity": "warning"},
        {"name": "grad-high", "kind": "threshold", "metric": "grad_norm", "op": ">",
         "value": 10, "severity": "critical"}))
    board = RunBoard()
    grads = Series(steps=(1, 2, 3), times=(NOW - 3, NOW - 2, NOW - 1), values=(1.0, 2.0, 3.0))
    for name in ("quiet", "hanging"):
        board.update([RunSnapshot(ref=RunRef(source="rundir", id=name, name=name,
                                             project="llm", entity="team"),
                                  state=RunState.RUNNING, last_step=3, heartbeat=NOW - 3600,
                                  keys=frozenset({"grad_norm"}),
                                  history={"grad_norm": grads})], NOW, {})
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    store.commit_tick(source="rundir", now=NOW, cursors={}, alerts=[
        alert("stalled", "quiet", AlertStatus.FIRING),
        alert("hung", "hanging", AlertStatus.FIRING, Severity.WARNING)])
    pages = Pages(Context(store=store, clock=lambda: NOW, sources=lambda: ["rundir"],
                          board=board, rules=lambda: RuleSet(rules=rules, origins={},
                                                             aliases=DEFAULT_ALIASES)))
    server = HttpServer("127.0.0.1", 0, health_app(Metrics(), lambda: (True, "ready"),
                                                   pages=pages))
    server.start()
    try:
        reports = {name: json.loads(get(server, f"/api/v1/runs/team/llm/{name}")[2])["report"]
                   for name in ("quiet", "hanging")}
    finally:
        server.stop()
        store.close()
    assert reports["quiet"]["liveness"] == "dead" and reports["hanging"]["liveness"] == "hung"
    assert reports["quiet"]["grad_norm"]["bounds"] == ["> 10 critical (grad-high)"]
