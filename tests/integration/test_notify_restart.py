"""Restarts: each `runwatch check` is a real process (time frozen inside it with freezegun)
sharing one SQLite store; what one process queued and could not send, a later one sends
exactly once — and a process SIGKILLed with a post in flight leaves neither a duplicate
nor a loss: the next one finds the post by the outbox id in its metadata and adopts it
(see notify/outbox.py and notify/slack.py)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.fakeslack import WEBHOOK_PATH, FakeSlack
from runwatch.model import AlertState, AlertStatus, RunRef, Severity, fingerprint
from runwatch.notify.outbox import DEFAULT_LEASE
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


# --- SIGKILL with a message in flight ----------------------------------------------------
# The two windows of a crash: between decision and send (the outbox holds an entry no
# request has been made for) and between send and record (Slack took the post, the process
# died before the transaction that settles the entry). The fake Slack holds the first
# chat.postMessage open — recorded, unanswered — while the test SIGKILLs the process.

BOT_TOKEN = "xoxb-restart-0000"


def write_bot_config(tmp_path: Path, api_url: str) -> Path:
    (tmp_path / "runs").mkdir(exist_ok=True)
    path = tmp_path / "runwatch.yaml"
    path.write_text(
        "sources: [{type: rundir, path: runs}]\n"
        "store: sqlite:///state.db\n"
        "receivers:\n"
        f"  - {{name: team-slack, slack: {{token: {BOT_TOKEN}, channel: '#alerts',"
        f" api_url: '{api_url}'}}}}\n")
    return path


def commit_alerts(tmp_path: Path, *rules: str) -> dict[str, str]:
    """One firing alert per rule, each on its own run; answers rule → group key."""
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    alerts = []
    for n, rule in enumerate(rules):
        ref = RunRef(source="rundir", id=f"r{n}", name=f"run-{n}", project="p", entity="e")
        alerts.append(AlertState(fingerprint=fingerprint(rule, ref), rule=rule, run=ref,
                                 severity=Severity.CRITICAL, status=AlertStatus.FIRING,
                                 fired_at=T0, summary=f"{rule} on run-{n}"))
    store.commit_tick(source="rundir", now=T0, cursors={}, alerts=alerts)
    store.close()
    return {rule: f'default:{{rule="{rule}"}}' for rule in rules}


def killed_while_posting(at: float, config: Path, slack: FakeSlack) -> str:
    """Run `check`, SIGKILL it while its first post is held, then let Slack serve the post
    (Slack finishes a request whose client has gone). Answers the held post's outbox id."""
    slack.hold("chat.postMessage")
    proc = subprocess.Popen([sys.executable, "-c", FROZEN_MAIN, str(at), "check", "--config",
                             str(config), "--json"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        held = slack.wait_held(timeout=60)
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == -9, err
    slack.release()
    return held.metadata["event_payload"]["outbox_id"]


def posted(slack: FakeSlack) -> dict[str, list[str]]:
    """Outbox ids of the posts Slack made, by the rule they announce."""
    found: dict[str, list[str]] = {}
    for call in slack.calls_to("chat.postMessage"):
        rule = "run-crashed" if "run-crashed" in (call.text or "") else "loss-nonfinite"
        found.setdefault(rule, []).append(call.metadata["event_payload"]["outbox_id"])
    return found


def test_sigkill_between_decision_send_and_record(tmp_path, slack):
    """Two groups, two outbox entries. The process dies while the first post is in flight:
    that entry was sent but not recorded, the other decided but never sent. The next
    process takes the writer lease at a newer epoch, so the dead one's claims are void at
    once: it sends the unsent one, and looks for the in-flight one in the channel, finds it
    by the outbox id in its metadata and adopts it, not posted again; then nothing more,
    and nothing was lost."""
    groups = commit_alerts(tmp_path, "run-crashed", "loss-nonfinite")
    config = write_bot_config(tmp_path, slack.api_url)

    in_flight = killed_while_posting(T0, config, slack)
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    try:
        entries = {e.id: e for e in store.outbox()}
        assert len(entries) == 2
        sent_once = entries.pop(in_flight)
        [(unsent_id, unsent)] = entries.items()
        assert (sent_once.attempts, sent_once.claimed(T0 + 1)) == (1, True)
        assert (unsent.attempts, unsent.claimed(T0 + 1)) == (0, False)
        assert store.last_notification(sent_once.group_key, "team-slack") is None
    finally:
        store.close()
    assert sum(len(ids) for ids in posted(slack).values()) == 1  # Slack has the held post

    # Restarted within the claim's lease: the decided-but-unsent entry goes out once, as
    # decided, and the in-flight one is looked up in the channel, found, adopted.
    early = check(T0 + 60, config)
    assert (early["queued"], early["sent"], early["pending"]) == (0, 2, 0)
    assert check(T0 + DEFAULT_LEASE + 120, config)["sent"] == 0
    assert len(slack.calls_to("conversations.history")) == 1  # only the uncertain one looks

    by_rule = posted(slack)
    held_rule = next(r for r, key in groups.items() if key == sent_once.group_key)
    other_rule = next(r for r in groups if r != held_rule)
    assert by_rule[held_rule] == [in_flight]  # exactly once
    assert by_rule[other_rule] == [unsent_id]  # decided before the crash, sent exactly once
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    try:
        for key in groups.values():
            record = store.last_notification(key, "team-slack")
            assert record is not None and record.sent_at == T0  # as decided by the first
    finally:
        store.close()


def test_sigkill_before_any_request_sends_everything_once(tmp_path, slack):
    """Killed with every entry decided and none sent (Slack refuses the held first post
    with a 503, as if the process died before its request got anywhere): the next process
    sends each entry exactly once — the one the dead process had claimed at once, its claim
    void under the newer lease epoch, looked for first and not found."""
    groups = commit_alerts(tmp_path, "run-crashed", "loss-nonfinite")
    config = write_bot_config(tmp_path, slack.api_url)
    slack.fail("chat.postMessage", status=503, error="service_unavailable")
    in_flight = killed_while_posting(T0, config, slack)
    assert posted(slack) == {}

    early = check(T0 + 60, config)
    assert (early["sent"], early["pending"]) == (2, 0)
    assert check(T0 + DEFAULT_LEASE + 60, config)["sent"] == 0
    by_rule = posted(slack)
    assert sorted(map(len, by_rule.values())) == [1, 1]  # no duplicate, nothing lost
    assert in_flight in {ids[0] for ids in by_rule.values()}
    assert set(by_rule) == set(groups)
