"""Inputs for the rundir benchmarks, generated once and cached in .fixture-cache/bench/.

The 100,000-step run is written by the real SDK (tests/fixtures/runmaker.py, scenario
``bench``). Bigger logs are synthesized from its record bytes: each step's three records
(runtime summary, step summary, history) are repeated with new record numbers, steps and
times, and framed with tests/fixtures/logwriter.py exactly as wandb-core frames them.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "daemon"), str(REPO / "tests")]

from wandb.proto import wandb_internal_pb2 as pb  # noqa: E402

from fixtures import logwriter, runmaker  # noqa: E402
from runwatch.keys import DEFAULT_ALIASES  # noqa: E402

CACHE = REPO / ".fixture-cache" / "bench"

# The metrics of the default rules: every key the loss and grad norm aliases stand for.
DEFAULT_WANTED = frozenset(DEFAULT_ALIASES["loss"] + DEFAULT_ALIASES["grad_norm"])


def _prune(prefix: str, keep: Path) -> None:
    """Drop what older fixture code generated: the cache key is the runmaker hash."""
    for old in CACHE.glob(f"{prefix}-*"):
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)


def sdk_run(steps: int = 100_000) -> Path:
    """A run directory the SDK wrote with ``steps`` logged steps (cached)."""
    target = CACHE / f"sdk-{steps}-{runmaker.fixture_hash()}"
    _prune(f"sdk-{steps}", target)
    done = target / "done"
    if not done.exists():
        shutil.rmtree(target, ignore_errors=True)
        started = time.monotonic()
        print(f"writing a {steps}-step run with the wandb SDK (once)...", flush=True)
        proc = runmaker.run_scenario(["bench", str(steps)], target)
        _, err = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"SDK run failed: {err.decode()[-2000:]}")
        done.write_text(f"{time.monotonic() - started:.1f}\n")
    return next((target / "wandb").glob("offline-run-*"))


def log_of(run: Path) -> Path:
    return next(run.glob("run-*.wandb"))


def step_templates(run: Path) -> tuple[list[bytes], list[tuple[bytes, bytes, bytes]]]:
    """The records before the first step, and each step's (runtime, summary, history)."""
    head: list[bytes] = []
    steps: list[tuple[bytes, bytes, bytes]] = []
    pending: list[bytes] = []
    for data in logwriter.unframe(log_of(run).read_bytes()):
        kind = pb.Record.FromString(data).WhichOneof("record_type")
        if kind == "summary":
            pending.append(data)
        elif kind == "history" and len(pending) >= 2:
            steps.append((pending[-2], pending[-1], data))
            pending = []
        elif not steps:
            head += [*pending, data]
            pending = []
    return head, steps


def renumbered(templates: list[tuple[bytes, bytes, bytes]], first_num: int, first_step: int,
               count: int, t0: float, pace: float = 0.01) -> Iterator[bytes]:
    """``count`` steps cycled from ``templates``, continuing at ``first_num``/``first_step``,
    step ``n`` logged at ``t0 + n * pace``."""
    num, step = first_num, first_step
    for i in range(count):
        runtime, summary, history = templates[i % len(templates)]
        yield _with_num(runtime, num)
        yield _set_step(summary, num + 1, step, t0 + step * pace, "summary")
        yield _set_step(history, num + 2, step, t0 + step * pace, "history")
        num += 3
        step += 1


def _with_num(data: bytes, num: int) -> bytes:
    record = pb.Record.FromString(data)
    record.num = num
    return record.SerializeToString()


def _set_step(data: bytes, num: int, step: int, when: float, field: str) -> bytes:
    record = pb.Record.FromString(data)
    record.num = num
    message = getattr(record, field)
    items = message.item if field == "history" else message.update
    for item in items:
        key = item.nested_key[0] if item.nested_key else item.key
        if key == "_step":
            item.value_json = str(step)
        elif key == "_timestamp":
            item.value_json = repr(when)
    if field == "history":
        message.step.num = step
    return record.SerializeToString()


def big_log(rows: int, pace: float = 0.01, t0: float = 1.7e9) -> Path:
    """A run directory whose log holds ``rows`` steps made from the SDK run's records, one
    every ``pace`` seconds from ``t0``."""
    source = sdk_run()
    name = f"synth-{rows}" if pace == 0.01 else f"synth-pace{pace:g}-{t0:.0f}-{rows}"
    top = CACHE / f"{name}-{runmaker.fixture_hash()}"
    _prune(name, top)
    target = top / "wandb" / source.name
    log = target / log_of(source).name
    if not (target / "done").exists():
        shutil.rmtree(target.parent.parent, ignore_errors=True)
        target.mkdir(parents=True)
        print(f"synthesizing a {rows}-step log from the SDK run's records (once)...", flush=True)
        head, templates = step_templates(source)
        with open(log, "wb") as file:
            size = 0
            batch: list[bytes] = []
            for record in [*head, *renumbered(templates, 1000, 0, rows, t0, pace)]:
                batch.append(record)
                if len(batch) >= 30_000:
                    framed = logwriter.frame(batch, at=size)
                    file.write(framed)
                    size += len(framed)
                    batch = []
            file.write(logwriter.frame(batch, at=size))
        (target / "done").write_text("ok\n")
    return target
