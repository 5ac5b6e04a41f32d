"""The real `runwatch run` in a subprocess: ready (told over a real sd_notify socket),
alerts delivered once, SIGTERM → exit 0 within 10 s, restarts send nothing twice, and a
SIGKILL in the middle of a tick loses nothing."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runwatch.daemon import STOP_TIMEOUT

pytestmark = pytest.mark.sdk
TOKEN = "xoxb-1111-2222-processtokensecret"


class Notifications:
    """A bound AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.seen: list[str] = []

    def wait_for(self, line: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while line not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {line} within {timeout}s; got {self.seen}")
            self.sock.settimeout(left)
            self.seen += self.sock.recv(4096).decode().splitlines()

    def close(self) -> None:
        self.sock.close()


def start(config: Path, notify: Notifications, home: Path) -> subprocess.Popen:
    env = {**os.environ, "NOTIFY_SOCKET": str(notify.path), "HOME": str(home),
           "WANDB_DIR": str(home), "WANDB_SILENT": "true"}
    env.pop("WANDB_API_KEY", None)
    notify.seen.clear()
    return subprocess.Popen([sys.executable, "-m", "runwatch", "run", "--config", str(config),
                             "--log-format", "json"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=config.parent)


def stop(proc: subprocess.Popen) -> tuple[int, float, str]:
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=STOP_TIMEOUT + 5)
    return proc.returncode, time.monotonic() - started, err.decode()


def crashed_run_config(tmp_path: Path, wandb_runs, fake_slack) -> Path:
    """A daemon config over the SDK's crashed run, posting to a Slack bot on ``#a``."""
    config = tmp_path / "runwatch.yaml"
    config.write_text(
        f"sources:\n  - {{type: rundir, path: {wandb_runs.runs['crashed']}, interval: 30s}}\n"
        "store: sqlite:///state.db\nhttp: {listen: '127.0.0.1:0'}\n"
        f"receivers:\n  - name: s\n    slack: {{token: {TOKEN}, channel: '#a',"
        f" api_url: '{fake_slack.api_url}'}}\n")
    return config


def rule_posts(fake_slack, rule: str) -> list:
    return [c for c in fake_slack.calls_to("chat.postMessage") if rule in (c.text or "")]


@pytest.fixture
def notify(tmp_path):
    n = Notifications(tmp_path / "notify.sock")
    yield n
    n.close()


def test_run_delivers_once_stops_cleanly_and_restarts_without_duplicates(
        wandb_runs, fake_slack, notify, tmp_path):
    config = tmp_path / "runwatch.yaml"
    config.write_text(
        f"sources:\n  - {{type: rundir, path: {wandb_runs.runs['crashed'].parent.parent},"
        " interval: 30s}\n"
        "store: sqlite:///state.db\nhttp: {listen: '127.0.0.1:0'}\n"
        f"receivers:\n  - name: s\n    slack: {{token: {TOKEN}, channel: '#a',"
        f" api_url: '{fake_slack.api_url}'}}\n")
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - {name: run-crashed, kind: state, severity: critical}\n")
    config.write_text(config.read_text() + "rules: [rules.yaml]\n")
    fake_slack.scopes -= {"channels:history", "groups:history"}  # said once at start-up
    proc = start(config, notify, tmp_path)
    try:
        notify.wait_for("READY=1")
        assert "WATCHDOG=1" in notify.seen
        assert len(rule_posts(fake_slack, "run-crashed")) == 1
        rules.write_text("rules:\n  - {name: oops, kind: thresold}\n")  # broken
        notify.seen.clear()
        proc.send_signal(signal.SIGHUP)
        notify.wait_for("RELOADING=1")
        notify.wait_for("READY=1")
    finally:
        code, took, err = stop(proc)
    assert code == 0 and took < STOP_TIMEOUT, err
    assert "STOPPING=1" in notify.seen or notify.sock.recv(4096) == b"STOPPING=1"
    assert TOKEN not in err and '"event": "stopped"' in err
    assert "reload refused; the running config stays" in err
    assert "rules.yaml:2: rule 'oops': unknown kind 'thresold'" in err
    assert err.count("the token lacks channels:history") == 1
    rules.write_text("rules:\n  - {name: run-crashed, kind: state, severity: critical}\n")

    proc = start(config, notify, tmp_path)  # a restart: same store
    try:
        notify.wait_for("READY=1")
    finally:
        code, _, err = stop(proc)
    assert code == 0, err
    assert len(rule_posts(fake_slack, "run-crashed")) == 1  # nothing twice


def test_a_sigkill_in_the_middle_of_a_tick_loses_nothing_and_sends_nothing_twice(
        wandb_runs, wandb_server, fake_slack, notify, tmp_path):
    wandb_server.load_rundir(wandb_runs.runs["nan_loss"], entity="team", project="p",
                             run_id="nanrun")
    config = tmp_path / "runwatch.yaml"
    config.write_text(
        f"sources:\n  - {{type: wandb, entity: team, projects: [p], api_key: {'k' * 40},"
        f" base_url: '{wandb_server.url}', interval: 30s, lookback: 3650d}}\n"
        "store: sqlite:///state.db\nhttp: {listen: '127.0.0.1:0'}\n"
        f"receivers:\n  - name: s\n    slack: {{token: {TOKEN}, channel: '#a',"
        f" api_url: '{fake_slack.api_url}'}}\n")
    wandb_server.hang_next(1, seconds=120, op="RunwatchListing")  # the first tick stops inside
    proc = start(config, notify, tmp_path)
    try:
        wandb_server.wait_for("RunwatchListing", timeout=60)
    finally:
        proc.kill()
        proc.communicate(timeout=10)
    assert "READY=1" not in notify.seen
    assert fake_slack.calls_to("chat.postMessage") == []

    proc = start(config, notify, tmp_path)
    try:
        notify.wait_for("READY=1")
        assert len(rule_posts(fake_slack, "loss-nonfinite")) == 1
    finally:
        code, _, err = stop(proc)
    assert code == 0, err
    proc = start(config, notify, tmp_path)
    try:
        notify.wait_for("READY=1")
    finally:
        stop(proc)
    assert len(rule_posts(fake_slack, "loss-nonfinite")) == 1


def test_one_writer_per_store_a_second_process_is_refused(wandb_runs, fake_slack, notify,
                                                          tmp_path, capsys, monkeypatch):
    from runwatch.cli import main

    config = crashed_run_config(tmp_path, wandb_runs, fake_slack)
    proc = start(config, notify, tmp_path)
    try:
        notify.wait_for("READY=1")
        monkeypatch.chdir(tmp_path)
        capsys.readouterr()
        assert main(["check", "--config", str(config)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        assert f"held by {socket.gethostname()}:{proc.pid}" in err
        assert main(["check", "--config", str(config), "--dry-run", "--json"]) == 0  # looks
        second = subprocess.run([sys.executable, "-m", "runwatch", "run", "--config",
                                 str(config), "--log-format", "json"], cwd=tmp_path,
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 2
        assert f"held by {socket.gethostname()}:{proc.pid}" in second.stderr
    finally:
        code, _, err = stop(proc)
    assert code == 0, err
    posts = [c for c in fake_slack.calls_to("chat.postMessage") if "run-crashed" in (c.text or "")]
    assert len(posts) == 1  # neither the refused check nor the dry run told Slack again
    assert main(["check", "--config", str(config)]) == 0  # the daemon is gone: the lock too


def test_two_checks_at_once_on_one_store_never_send_twice(wandb_runs, fake_slack, tmp_path):
    """50 trials: two processes run `runwatch check` on one fresh store at the same moment.
    Each time one of them holds the store (the other is refused with exit 2, or comes
    after it and finds the news told): one post per trial, never two, never none."""
    import multiprocessing

    from fixtures.racer import race

    trials = 50
    configs = []
    for n in range(trials):
        home = tmp_path / f"trial-{n}"
        home.mkdir()
        config = home / "runwatch.yaml"
        config.write_text(
            f"sources: [{{type: rundir, path: {wandb_runs.runs['crashed']}}}]\n"
            f"store: sqlite:///{home / 'state.db'}\n"
            f"receivers:\n  - name: s\n    slack: {{token: {TOKEN}, channel: '#trial-{n}',"
            f" api_url: '{fake_slack.api_url}'}}\n")
        configs.append(str(config))
    spawn = multiprocessing.get_context("spawn")
    barrier, results = spawn.Barrier(2), spawn.Queue()
    racers = [spawn.Process(target=race, args=(configs, barrier, results)) for _ in range(2)]
    for racer in racers:
        racer.start()
    outcomes = [results.get(timeout=300) for _ in range(2 * trials)]
    for racer in racers:
        racer.join(timeout=60)
        assert racer.exitcode == 0
    codes = [code for _, code, _ in outcomes]
    assert set(codes) <= {0, 2}, [err for _, code, err in outcomes if code not in (0, 2)]
    refused = [err for _, code, err in outcomes if code == 2]
    assert all("held by runwatch check" in err for err in refused), [
        e for e in refused if "held by runwatch check" not in e]
    posts: dict[str, int] = {}
    for call in fake_slack.calls_to("chat.postMessage"):
        posts[call.channel] = posts.get(call.channel, 0) + 1
    assert posts == {f"#trial-{n}": 1 for n in range(trials)}


def test_a_daemon_killed_after_slack_took_its_post_does_not_post_it_again(
        wandb_runs, fake_slack, notify, tmp_path):
    """SIGKILL while Slack holds the post (Slack then serves it: the post exists, the
    daemon never heard). The restarted daemon sees the claim's process is gone, looks for
    the post by its outbox id and adopts it: one post, not two."""
    fake_slack.epoch = time.time()  # Slack's clock: the daemon runs on real time
    config = crashed_run_config(tmp_path, wandb_runs, fake_slack)
    fake_slack.hold("chat.postMessage")
    proc = start(config, notify, tmp_path)
    try:
        held = fake_slack.wait_held(timeout=60)
    finally:
        proc.kill()
        proc.communicate(timeout=10)
    fake_slack.release()
    assert len(rule_posts(fake_slack, "run-crashed")) == 1

    proc = start(config, notify, tmp_path)
    try:
        notify.wait_for("READY=1")
    finally:
        code, _, err = stop(proc)
    assert code == 0, err
    assert len(rule_posts(fake_slack, "run-crashed")) == 1
    [looked] = fake_slack.calls_to("conversations.history")
    assert looked.params["channel"] == "CA"
    assert "looked for before it is sent again" in err
    assert held.metadata["event_payload"]["outbox_id"] in err  # adopted, by its id


def test_an_alias_bomb_through_sighup_is_refused_and_the_daemon_lives(
        wandb_runs, fake_slack, notify, tmp_path):
    """A rule file edited into a "billion laughs" file, then SIGHUP: one line, the running
    config stays, the process's memory does not balloon, and a later good edit loads."""
    config = tmp_path / "runwatch.yaml"
    rules = tmp_path / "rules.yaml"
    good = "rules:\n  - {name: run-crashed, kind: state, severity: critical}\n"
    rules.write_text(good)
    config.write_text(
        f"sources:\n  - {{type: rundir, path: {wandb_runs.runs['crashed']}, interval: 30s}}\n"
        "store: sqlite:///state.db\nhttp: {listen: '127.0.0.1:0'}\nrules: [rules.yaml]\n")
    laughs = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    laughs += [f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]"
               for i in range(8)]
    proc = start(config, notify, tmp_path)
    try:
        notify.wait_for("READY=1")
        before = _rss_kib(proc.pid)
        rules.write_text("\n".join(laughs) + "\n")  # 9^9 values expanded
        notify.seen.clear()
        proc.send_signal(signal.SIGHUP)
        notify.wait_for("RELOADING=1")
        notify.wait_for("READY=1")
        assert proc.poll() is None
        assert _rss_kib(proc.pid) - before < 50 * 1024
        rules.write_text(good + "  - {name: run-failed, kind: state, states: [failed],"
                                " severity: warning}\n")
        notify.seen.clear()
        proc.send_signal(signal.SIGHUP)
        notify.wait_for("RELOADING=1")
        notify.wait_for("READY=1")
    finally:
        code, _, err = stop(proc)
    assert code == 0, err
    assert "Traceback" not in err and "MemoryError" not in err
    assert "YAML aliases expand to more than" in err and "reload refused" in err
    assert err.count('"event": "config reloaded"') == 1  # the good edit, after the bomb


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")
