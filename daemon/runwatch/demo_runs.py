"""The sample training runs of ``runwatch demo``, each written by the real wandb SDK.

Run as ``python demo_runs.py SCENARIO`` (by file path: this module imports nothing of
runwatch, nor of the tests) with ``WANDB_MODE=offline`` and ``WANDB_DIR`` set by the caller
(``runwatch.demo.sdk_env``), so the run directories are exactly what wandb-core writes for a
real training script — runwatch reads them the way it reads a user's.

Two facts of wandb-core 0.31 shape the scenarios: it writes its log in whole 32 KiB blocks
(or every ~15 s), and a process that is SIGKILLed loses the block still in memory. So a run
whose rows must be on disk before it ends — or before the demo looks at it while it is still
alive — keeps logging until enough blocks are, and its first telling rows sit early in the
file, well before the last block boundary.

Protocol with the parent: ``healthy`` and ``crashed`` end on their own (exit codes 0 and 1);
``stalled`` logs, then SIGKILLs itself (a dead process: no exit record, its heartbeat goes
stale); ``exploding`` and ``nan_loss`` keep running: once their bad rows are on disk they
print ``ready`` and wait for a line on stdin, then stop as a user's Ctrl-C would.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

BLOCK = 32 * 1024
READY = "ready"
PROJECT = "runwatch-demo"

Row = dict[str, float | int]


def _init(name: str, *, tags: list[str], config: dict | None = None):
    import wandb

    return wandb.init(
        project=PROJECT,
        name=name,
        tags=["demo", *tags],
        config=config or {"lr": 3e-4, "batch_size": 64, "model": {"layers": 12}},
    )


def _log_file(run) -> Path:
    return Path(run.dir).parent / f"run-{run.id}.wandb"


def _row(step: int, *, loss: float, grad_norm: float) -> Row:
    return {"train/loss": loss, "train/grad_norm": grad_norm, "train/global_step": step,
            "train/lr": 3e-4, "train/tokens_per_s": 51200.0 + (step * 37) % 900}


def _healthy_loss(step: int) -> float:
    return 2.5 / (1 + 0.02 * step)


def _healthy_grad(step: int) -> float:
    return 0.9 + 0.1 * math.sin(step)


def _log_until_on_disk(run, row: Callable[[int], Row], *, blocks: int, first: int = 0) -> int:
    """Log ``row(step)`` from ``first`` on until ``blocks`` whole blocks are on disk; the
    next step. wandb-core writes on its own time, so this waits for it, logging meanwhile."""
    path = _log_file(run)
    deadline = time.monotonic() + 60
    step = first
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size >= blocks * BLOCK:
            return step
        for _ in range(20):
            run.log(row(step))
            step += 1
        time.sleep(0.01)
    raise TimeoutError(f"wandb-core wrote fewer than {blocks} blocks to {path} in 60 s")


def _wait_for_stop() -> None:
    """Tell the parent the run's rows are on disk; stop when it says so, as Ctrl-C would."""
    print(READY, flush=True)
    sys.stdin.readline()
    raise KeyboardInterrupt


def healthy() -> None:
    run = _init("healthy", tags=["baseline"])
    for step in range(200):
        row = _row(step, loss=_healthy_loss(step), grad_norm=_healthy_grad(step))
        if step % 50 == 49:
            row["eval/loss"] = _healthy_loss(step) * 1.1
        run.log(row)
        if step == 149:  # the training code's own alert (run.alert): offline, runwatch tells it
            import wandb

            run.alert(title="checkpoint saved", text=f"step {step}: checkpoints/step-{step}.pt",
                      level=wandb.AlertLevel.INFO)
    run.finish()


def exploding() -> None:
    """Gradients fine for 30 steps, then growing 6% a step: past 5 at step 58, 10 at 70."""
    run = _init("exploding-grads", tags=["lr-sweep"], config={"lr": 3e-2, "batch_size": 64})

    def row(step: int) -> Row:
        if step < 30:
            return _row(step, loss=_healthy_loss(step), grad_norm=_healthy_grad(step))
        grad = min(1.06 ** (step - 30), 1e6)
        return _row(step, loss=_healthy_loss(30) + math.log1p(grad) / 10, grad_norm=grad)

    _log_until_on_disk(run, row, blocks=2)
    _wait_for_stop()


def nan_loss() -> None:
    """A loss that goes NaN at step 60 and stays there (the usual fp16 overflow story)."""
    run = _init("nan-loss", tags=["fp16"], config={"lr": 1e-3, "precision": "fp16"})

    def row(step: int) -> Row:
        loss = _healthy_loss(step) if step < 60 else float("nan")
        return _row(step, loss=loss, grad_norm=_healthy_grad(step))

    _log_until_on_disk(run, row, blocks=2)
    _wait_for_stop()


def crashed() -> None:
    run = _init("crashed", tags=["oom"], config={"lr": 3e-4, "batch_size": 512})
    for step in range(120):
        run.log(_row(step, loss=_healthy_loss(step), grad_norm=_healthy_grad(step)))
    raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")


def stalled() -> None:
    """Trains normally, then the process is killed (OOM killer, a lost node): no exit
    record, no more heartbeats — only the age of its last record tells."""
    run = _init("stalled", tags=["preemptible"])
    _log_until_on_disk(
        run, lambda step: _row(step, loss=_healthy_loss(step), grad_norm=_healthy_grad(step)),
        blocks=2)
    os.kill(os.getpid(), signal.SIGKILL)


SCENARIOS: dict[str, Callable[[], None]] = {
    "healthy": healthy,
    "exploding": exploding,
    "nan_loss": nan_loss,
    "crashed": crashed,
    "stalled": stalled,
}
# Those that stay alive until told to stop (see the module docstring).
LIVE = ("exploding", "nan_loss")
EXPECTED_EXIT: dict[str, tuple[int, ...]] = {
    "healthy": (0,),
    "crashed": (1,),
    "stalled": (-signal.SIGKILL,),
    "exploding": (1, 130, 255, -signal.SIGINT),  # KeyboardInterrupt
    "nan_loss": (1, 130, 255, -signal.SIGINT),
}


if __name__ == "__main__":
    SCENARIOS[sys.argv[1]]()
