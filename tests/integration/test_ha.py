"""Replicas: real `runwatch run` processes sharing one PostgreSQL schema (the real server,
through a forwarder the test can cut), real SDK run directories and the fake Slack API.
One acts, the others stand by and say so; a leader SIGKILLed mid-send, or SIGSTOPped past
its lease, is replaced within the lease plus a tick, and every alert reaches Slack exactly
once; a database that refuses connections for 30 s stops nobody and loses nothing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from fixtures.tcpproxy import TcpProxy
from pgtest import PG_URL, Schema
from runwatch.store.base import open_store

pytestmark = pytest.mark.sdk
TOKEN = "xoxb-1111-2222-replicatokensecret"
TTL = 3.0
INTERVAL = 1.0
RULES = """rules:
  - {name: run-crashed, kind: state, states: [crashed, failed], severity: critical}
  - {name: loss-nonfinite, kind: nonfinite, metric: loss, severity: critical}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], object], what: str, timeout: float = 60.0) -> object:
    """Poll another process's state (its HTTP endpoint, the database) until ``check``."""
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout}s")
        time.sleep(0.05)
    return found


class Replica:
    def __init__(self, name: str, config: Path, home: Path) -> None:
        self.name = name
        self.port = free_port()
        self.log = home / f"{name}.log"
        env = {**os.environ, "RUNWATCH_REPLICA": name, "RW_PORT": str(self.port),
               "HOME": str(home), "WANDB_DIR": str(home), "WANDB_SILENT": "true"}
        env.pop("NOTIFY_SOCKET", None)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "runwatch", "run", "--config", str(config),
                 "--log-format", "json"], env=env, stdout=log, stderr=log, cwd=config.parent)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def metric(self, name: str) -> float | None:
        status, text = self.get("/metrics")
        for line in text.splitlines() if status == 200 else ():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        return None

    def ticks(self) -> float:
        _, text = self.get("/metrics")
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("runwatch_ticks_total{"))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@pytest.fixture
def schema(tmp_path: Path) -> Iterator[Schema]:
    made = Schema(tmp_path)
    yield made
    made.drop()


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    where = urlsplit(PG_URL)
    forwarder = TcpProxy(where.hostname or "127.0.0.1", where.port or 5432)
    yield forwarder
    forwarder.close()


def write_config(tmp_path: Path, store_url: str, fake_slack, source: str = "") -> Path:
    fake_slack.epoch = time.time()  # the daemons run on the real clock: so does Slack
    (tmp_path / "runs").mkdir()
    (tmp_path / "rules.yaml").write_text(RULES)
    config = tmp_path / "runwatch.yaml"
    source = source or f"{{type: rundir, path: runs, interval: {INTERVAL:g}s}}"
    config.write_text(
        f"sources:\n  - {source}\n"
        f"store: '{store_url}'\nhttp: {{listen: '127.0.0.1:${{RW_PORT}}'}}\n"
        f"ha: {{lease_ttl: {TTL:g}s}}\nrules: [rules.yaml]\n"
        f"receivers:\n  - name: s\n    slack: {{token: {TOKEN}, channel: '#a',"
        f" api_url: '{fake_slack.api_url}'}}\n")
    return config


def add_run(tmp_path: Path, wandb_runs, scenario: str) -> None:
    source = wandb_runs.runs[scenario]
    shutil.copytree(source, tmp_path / "runs" / "wandb" / source.name, symlinks=True)


def posts(fake_slack, rule: str) -> list:
    """The posts about ``rule`` (the NaN run has ended by the time it is read: its alert
    fires and resolves in one tick, told in one post)."""
    return [c for c in fake_slack.calls_to("chat.postMessage") if rule in (c.text or "")]


def leader(store) -> tuple[str, int]:
    leases = store.leases()
    return (leases[0].holder, leases[0].epoch) if leases else ("", 0)


def acting(replicas: list[Replica]) -> list[Replica]:
    return [r for r in replicas if r.proc.poll() is None and r.metric("runwatch_leader") == 1]


def test_one_replica_acts_and_a_leader_killed_or_paused_is_replaced_exactly_once(
        tmp_path, wandb_runs, fake_slack, schema):
    config = write_config(tmp_path, schema.url, fake_slack)
    add_run(tmp_path, wandb_runs, "crashed")
    store = open_store(schema.url)
    replicas = [Replica(name, config, tmp_path) for name in ("a", "b", "c")]
    try:
        wait_until(lambda: posts(fake_slack, "run-crashed"), "the crash announced")
        [first] = wait_until(lambda: acting(replicas), "one replica acting")
        holder, epoch = leader(store)
        assert holder == first.name
        for standby in (r for r in replicas if r is not first):
            wait_until(lambda r=standby: r.metric("runwatch_lease_epoch") == epoch,
                       f"{standby.name} saw the lease")
            status, body = standby.get("/readyz")
            assert status == 200 and "standby" in body and f"{first.name} leads" in body
            assert standby.metric("runwatch_leader") == 0
            assert standby.metric("runwatch_lease_ttl_seconds") == TTL
            status, body = standby.get("/api/v1/status")  # the status page's JSON
            assert status == 200 and json.loads(body)["leases"][0]["holder"] == first.name
            # Its run board: the leader's, as saved in the store (a standby reads no run).
            shown_runs = wait_until(lambda r=standby: json.loads(r.get("/api/v1/runs")[1]),
                                    f"{standby.name} showing the leader's runs")
            assert [(r["run"]["name"], r["state"]) for r in shown_runs] == [
                ("crashed", "failed")]
        shown = subprocess.run([sys.executable, "-m", "runwatch", "status", "--config",
                                str(config)], capture_output=True, text=True, timeout=60,
                               env={**os.environ, "RW_PORT": "0"}, cwd=tmp_path)
        assert f"leader lease: {first.name}, epoch {epoch}" in shown.stdout, shown.stderr

        # SIGKILL mid-send: the leader dies with the loss-nonfinite post in flight.
        fake_slack.hold("chat.postMessage")
        add_run(tmp_path, wandb_runs, "nan_loss")
        fake_slack.wait_held(timeout=60)
        first.proc.kill()
        killed_at = time.monotonic()
        fake_slack.release()  # Slack finishes the post its client never saw answered
        [second] = wait_until(lambda: acting(replicas), "a standby taking over")
        takeover = time.monotonic() - killed_at
        assert leader(store) == (second.name, epoch + 1)
        assert takeover < TTL + INTERVAL + 3, takeover
        wait_until(lambda: not store.outbox(include_failed=False), "the outbox emptied")
        assert len(posts(fake_slack, "loss-nonfinite")) == 1  # found in the channel, adopted
        assert fake_slack.calls_to("conversations.history")  # (looked for, not re-sent)

        # SIGSTOP past the lease, then SIGCONT: the paused one wakes, stands by, sends nothing.
        second.proc.send_signal(signal.SIGSTOP)
        [third] = wait_until(lambda: [r for r in acting(replicas) if r is not second],
                             "the last replica taking over")
        assert leader(store) == (third.name, epoch + 2)
        second.proc.send_signal(signal.SIGCONT)
        wait_until(lambda: second.metric("runwatch_leader") == 0, "the woken one standing by")
        ticks = third.ticks()
        wait_until(lambda: third.ticks() >= ticks + 3, "three more ticks")
        woke = [json.loads(line) for line in second.log.read_text().splitlines()
                if line.startswith("{")]
        assert any(e["event"].startswith("stepped down") or (
            e["event"].startswith("standing by") and e.get("holder") == third.name)
            for e in woke), "the woken leader never said it stands by for the new one"
        assert acting(replicas) == [third]
    finally:
        codes = [r.stop() for r in replicas]
        store.close()
    assert len(posts(fake_slack, "run-crashed")) == 1
    assert len(posts(fake_slack, "loss-nonfinite")) == 1
    assert codes == [-9 if r is first else 0 for r in replicas], codes
    for replica in replicas:
        assert "Traceback" not in replica.log.read_text()


def test_a_database_refusing_connections_for_30s_stops_nobody_and_loses_nothing(
        tmp_path, wandb_runs, fake_slack, schema, proxy):
    where = urlsplit(schema.url)
    via_proxy = schema.url.replace(where.netloc, f"{where.username or 'postgres'}"
                                   f"@127.0.0.1:{proxy.port}", 1)
    config = write_config(tmp_path, via_proxy, fake_slack)
    add_run(tmp_path, wandb_runs, "crashed")
    replicas = [Replica(name, config, tmp_path) for name in ("a", "b")]
    try:
        wait_until(lambda: posts(fake_slack, "run-crashed"), "the crash announced")
        [first] = wait_until(lambda: acting(replicas), "one replica acting")

        proxy.refuse()
        add_run(tmp_path, wandb_runs, "nan_loss")
        down_until = time.monotonic() + 30
        wait_until(lambda: first.metric("runwatch_leader") == 0,
                   "the leader stepping down by its own clock", timeout=TTL + 5)
        status, body = first.get("/readyz")
        assert status == 503 and "store" in body
        while time.monotonic() < down_until:
            assert all(r.proc.poll() is None for r in replicas)
            assert posts(fake_slack, "loss-nonfinite") == []
            time.sleep(0.5)
        assert "cannot renew the writer lease" in first.log.read_text()
        proxy.allow()

        wait_until(lambda: posts(fake_slack, "loss-nonfinite"), "catching up")
        [now_acting] = wait_until(lambda: acting(replicas), "one replica acting again")
        ticks = now_acting.ticks()
        wait_until(lambda: now_acting.ticks() >= ticks + 3, "three more ticks")
    finally:
        codes = [r.stop() for r in replicas]
    assert codes == [0, 0]
    assert len(posts(fake_slack, "run-crashed")) == 1
    assert len(posts(fake_slack, "loss-nonfinite")) == 1
    for replica in replicas:
        assert "Traceback" not in replica.log.read_text()


def test_a_leader_killed_mid_tick_leaves_nothing_half_done_and_the_standby_goes_on(
        tmp_path, wandb_runs, wandb_server, fake_slack, schema):
    """The leader's first tick hangs inside a W&B request when it is SIGKILLed: nothing of
    that tick was written, so the standby that takes over reads every run afresh and
    announces each exactly once."""
    for scenario, run_id in (("crashed", "crashrun"), ("nan_loss", "nanrun")):
        wandb_server.load_rundir(wandb_runs.runs[scenario], entity="team", project="p",
                                 run_id=run_id)
    config = write_config(tmp_path, schema.url, fake_slack, source=(
        f"{{type: wandb, entity: team, projects: [p], api_key: {'k' * 40},"
        f" base_url: '{wandb_server.url}', interval: {INTERVAL:g}s, lookback: 3650d}}"))
    wandb_server.hang_next(1, seconds=120, op="RunwatchListing")
    first = Replica("a", config, tmp_path)
    replicas = [first]
    try:
        wandb_server.wait_for("RunwatchListing", timeout=60)  # its first tick hangs there
        second = Replica("b", config, tmp_path)
        replicas.append(second)
        wait_until(lambda: second.metric("runwatch_lease_epoch") == 1, "b standing by")
        assert first.metric("runwatch_leader") == 1 and second.metric("runwatch_leader") == 0
        first.proc.kill()
        wait_until(lambda: acting(replicas) == [second], "the standby taking over")
        wait_until(lambda: posts(fake_slack, "loss-nonfinite")
                   and posts(fake_slack, "run-crashed"), "both runs announced")
        ticks = second.ticks()
        wait_until(lambda: second.ticks() >= ticks + 3, "three more ticks")
    finally:
        codes = [r.stop() for r in replicas]
    assert codes == [-9, 0]
    assert len(posts(fake_slack, "run-crashed")) == 1
    assert len(posts(fake_slack, "loss-nonfinite")) == 1
