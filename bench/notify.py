"""A burst of 1,000 alerts across 50 runs through the real notify pipeline into a rate-
limited Slack: figures, not a test.

The real pieces: a SQLite store in a temp dir, ``notify_after_tick`` (plan → outbox →
drain) then ``drain_only`` until the outbox is empty, the real ``SlackNotifier`` (slack_sdk
WebClient) against the fake Slack Web API (tests/fixtures/fakeslack.py), which answers
every second API call with 429 and ``Retry-After``. A 429 goes back to the outbox (the
notifier never sleeps on one), which defers that entry (backoff, at least Retry-After) and
leaves the receiver alone for the rest of the drain; the bench drains again
``Retry-After`` later on the store's clock (explicit ``now``), the way the daemon's next
drain would.

The worker: each drain runs on the daemon's one worker, between ticks; ``drain_ms`` is how
long each drain held it (median and longest) — a 429 ends the receiver's drain at once, so
a tick waits at most one drain, never a burst.

Two groupings: ``group_by: ["..."]`` (one message per alert: the 1,000-message burst) and
the default ``group_by: [rule]`` (one message per rule). Duplicates are counted from what
Slack received: posts carrying the same outbox id (message metadata) or the same alert.

Run: .venv/bin/python bench/notify.py [--retry-after 1]
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import benchdata  # noqa: F401  (puts daemon/ and tests/ on sys.path)

from fixtures.fakeslack import FakeSlack
from runwatch.config import Config
from runwatch.model import AlertState, AlertStatus, RunRef, Severity, fingerprint
from runwatch.notify.pipeline import drain_only, notify_after_tick
from runwatch.notify.slack import SlackNotifier
from runwatch.store import open_store

RUNS, RULES = 50, 20  # 1,000 alerts
T0 = 1_760_000_000.0
TOKEN = "xoxb-bench"


def alerts() -> list[AlertState]:
    found = []
    for r in range(RUNS):
        ref = RunRef(source="bench", id=f"run{r:03d}", name=f"llm-{r:03d}", project="pretrain",
                     entity="team")
        for k in range(RULES):
            rule = f"rule-{k:02d}"
            found.append(AlertState(
                fingerprint=fingerprint(rule, ref), rule=rule, run=ref,
                severity=Severity.CRITICAL if k % 2 else Severity.WARNING,
                status=AlertStatus.FIRING, fired_at=T0, metric="train/grad_norm",
                value=12.5 + k, step=1000 + r, summary=f"grad norm {12.5 + k} > 10"))
    return found


def config(group_by: list[str]) -> Config:
    return Config.model_validate({
        "sources": [{"type": "rundir", "path": "runs"}],
        "receivers": [{"name": "team-slack",
                       "slack": {"token": TOKEN, "channel": "#training-alerts"}}],
        "routes": [{"receivers": ["team-slack"], "group_by": group_by}],
    }, context={"base_dir": Path(tempfile.gettempdir())})


def run(fake: FakeSlack, *, mode: str, group_by: list[str], retry_after: int) -> dict:
    fake.reset()
    fake.rate_limit_every(2, retry_after=retry_after)
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{tmp}/state.db")
        burst = alerts()
        store.commit_tick(source="bench", now=T0, cursors={}, alerts=burst)
        notifier = SlackNotifier("team-slack", token=TOKEN, channel="#training-alerts",
                                 base_url=fake.api_url, timeout=10)
        notifiers = {"team-slack": notifier}
        now, drains = T0, 1
        started = time.perf_counter()
        report = notify_after_tick(store, config(group_by), notifiers, now)
        held = [time.perf_counter() - started]  # the first drain also planned the burst
        queued, sent, deferred = report.queued, report.sent, report.retrying
        while report.pending:
            # The daemon drains again later; here, on the store's clock, once the earliest
            # deferred entry is due (a 429 defers by its backoff, at least Retry-After).
            due = min(e.next_attempt_at for e in store.outbox(include_failed=False))
            now = max(now + retry_after, due)
            began = time.perf_counter()
            report = drain_only(store, notifiers, now)
            held.append(time.perf_counter() - began)
            drains += 1
            sent += report.sent
            deferred += report.retrying
        wall = time.perf_counter() - started
        store.close()
    posts = fake.calls_to("chat.postMessage")
    by_id = collections.Counter(p.metadata["event_payload"]["outbox_id"] for p in posts)
    # What each post is about: its alert (one per message) or its rule (one group per rule).
    subject = collections.Counter(_subject(p, group_by) for p in posts)
    limited = [c for c in fake.calls if c.status == 429]
    return {
        "mode": mode, "group_by": group_by, "alerts": len(burst), "queued": queued,
        "posted": len(posts), "sent": sent, "429s": len(limited),
        "outbox_deferrals": deferred, "drains": drains,
        "wall_s": round(wall, 2), "store_clock_s": round(now - T0, 1),
        "drain_ms_median": round(statistics.median(held) * 1000, 1),
        "drain_ms_max": round(max(held) * 1000, 1),
        "duplicate_posts": sum(n - 1 for n in by_id.values()),
        "subjects_posted_twice": sum(1 for n in subject.values() if n > 1),
        "queued_never_posted": queued - len(by_id),
    }


def _subject(post, group_by: list[str]) -> str:
    fields = [f["text"] for b in post.blocks for f in b.get("fields") or []]
    rule = next(f for f in fields if f.startswith("Rule: "))
    if group_by == ["rule"]:
        return rule
    section = next(b["text"]["text"] for b in post.blocks if b["type"] == "section")
    return f"{rule} {section}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--retry-after", type=int, default=1, help="seconds (default 1)")
    args = parser.parse_args()
    logging.getLogger("runwatch").setLevel(logging.ERROR)  # a line per 429 otherwise
    print(f"config: {RUNS} runs x {RULES} rules = {RUNS * RULES} firing alerts, one receiver"
          f" (SlackNotifier, real slack_sdk) -> fake Slack answering every 2nd API call 429"
          f" with Retry-After: {args.retry_after}s; SQLite store in a temp dir")
    fake = FakeSlack()
    try:
        for mode, group_by in (("outbox", ["..."]), ("outbox", ["rule"])):
            print(json.dumps(run(fake, mode=mode, group_by=group_by,
                                 retry_after=args.retry_after)), flush=True)
    finally:
        fake.close()


if __name__ == "__main__":
    main()
