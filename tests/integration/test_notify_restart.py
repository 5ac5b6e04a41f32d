"""Restarts: each `runwatch check` is a real process (time frozen inside it with freezegun)
sharing one SQLite store; what one process queued and could not send, a later one sends
exactly once."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.fakeslack import WEBHOOK_PATH, FakeSlack
from runwatch.model import AlertState, AlertStatus, RunRef, Severity, fingerprint
from runwatch.store import open_store

T0 = 1_760_000_000.0

# `python -m runwatch` with the clock frozen at argv[1]: the real CLI in a real process.
FROZEN_MAIN = """
import sys
from datetime import UTC, datetime
from freezegun import freeze_time
from runwatch.cli import main
with freeze_time(datetime.fromtimestamp(float(sys.argv[1]), UTC)):
    sys.exit(main(sys.argv[2:]))
"""


def runwatch(at: float, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", FROZEN_MAIN, str(at), *args],
                          capture_output=True, text=True, timeout=120)


def check(at: float, config: Path) -> dict:
    done = runwatch(at, "check", "--config", str(config), "--json")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return json.loads(done.stdout)["notifications"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(tmp_path: Path, webhook_url: str) -> Path:
    (tmp_path / "runs").mkdir(exist_ok=True)
    path = tmp_path / "runwatch.yaml"
    path.write_text(
        "sources: [{type: rundir, path: runs}]\n"
        "store: sqlite:///state.db\n"
        "receivers:\n"
        f"  - {{name: team-slack, slack: {{webhook_url: '{webhook_url}'}}}}\n")
    return path


@pytest.fixture
def slack():
    fake = FakeSlack()
    yield fake
    fake.close()


def test_a_message_left_in_the_outbox_is_sent_once_after_a_restart(tmp_path, slack):
    ref = RunRef(source="rundir", id="r1", name="llama", project="p", entity="e")
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    store.commit_tick(source="rundir", now=T0, cursors={}, alerts=[AlertState(
        fingerprint=fingerprint("run-crashed", ref), rule="run-crashed", run=ref,
        severity=Severity.CRITICAL, status=AlertStatus.FIRING, fired_at=T0)])
    store.close()

    # The receiver is unreachable: the process queues the message, fails to send it, exits.
    config = write_config(tmp_path, f"http://127.0.0.1:{closed_port()}{WEBHOOK_PATH}")
    first = check(T0, config)
    assert (first["queued"], first["sent"], first["retrying"], first["pending"]) == (1, 0, 1, 1)
    assert "team-slack" in first["errors"][0]

    # Restarted before the retry is due: nothing is queued twice, nothing sent.
    early = check(T0 + 10, config)
    assert (early["queued"], early["sent"], early["pending"]) == (0, 0, 1)

    # The receiver is back; a later process sends the very message the first one queued.
    config = write_config(tmp_path, slack.webhook_url)
    later = check(T0 + 60, config)
    assert (later["queued"], later["sent"], later["pending"]) == (0, 1, 0)
    assert (check(T0 + 120, config)["sent"], len(slack.calls_to("webhook"))) == (0, 1)

    store = open_store(f"sqlite:///{tmp_path}/state.db")
    try:
        record = store.last_notification('default:{rule="run-crashed"}', "team-slack")
        assert record is not None and record.sent_at == T0  # decided by the first process
    finally:
        store.close()


def test_a_silence_added_by_one_process_is_seen_by_the_next(tmp_path, slack):
    config = write_config(tmp_path, slack.webhook_url)
    added = subprocess.run([sys.executable, "-m", "runwatch", "silence", "add", "--config",
                            str(config), "--match", "rule=run-crashed", "--duration", "1h",
                            "--comment", "cluster maintenance"],
                           capture_output=True, text=True, timeout=120)
    assert added.returncode == 0, added.stderr
    silence_id = added.stdout.split(":")[0]
    listed = subprocess.run([sys.executable, "-m", "runwatch", "silence", "list", "--config",
                             str(config), "--json"], capture_output=True, text=True, timeout=120)
    assert [s["id"] for s in json.loads(listed.stdout)] == [silence_id]
