"""logs.py's filter on APScheduler's skip warnings: one line per stall, not one a second."""

from __future__ import annotations

import logging

from runwatch.logs import OncePerStall

MESSAGE = 'Execution of job "%s" skipped: maximum number of running instances reached (%d)'


def record(job: str, at: float, msg: str = MESSAGE) -> logging.LogRecord:
    rec = logging.LogRecord("apscheduler.scheduler", logging.WARNING, __file__, 1, msg,
                            (job, 1), None)
    rec.created = at
    return rec


def test_a_stall_is_one_line_per_job():
    f = OncePerStall(quiet=600)
    # the outbox job comes due every second for five minutes of a stuck worker
    kept = [f.filter(record("outbox", 1000 + s)) for s in range(300)]
    assert kept.count(True) == 1 and kept[0]
    assert f.filter(record("tick rundir", 1100))  # another job: its own line
    assert f.filter(record("outbox", 1299 + 600))  # quiet for ten minutes: a new stall
    assert f.filter(record("outbox", 5000, msg="Job %s executed"))  # other lines untouched
