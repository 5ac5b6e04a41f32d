"""``compare``: two runs side by side — what differs in their config, how their loss and
grad norm compare at the same steps, their evals and their pace — and which is ahead. Pure.

Curves are compared at common steps (the runs' overlapping range), each value smoothed
over the same window (``curves.value_at``): row indexes mean nothing across runs that log
at different intervals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runwatch.analysis import curves, runconfig
from runwatch.analysis.characterize import RunReport, characterize, higher_is_better
from runwatch.checks import Rule
from runwatch.model import AlertState, RunSnapshot, Series

CHECKPOINTS = 5
CLEAR_MARGIN = 0.01  # a metric better by less than 1 % is no clear win


@dataclass(frozen=True, kw_only=True, slots=True)
class Aligned:
    step: int
    a: float | None
    b: float | None


@dataclass(frozen=True, kw_only=True, slots=True)
class EvalPair:
    """One eval metric of both runs (paired through the aliases: ``eval/loss`` of one run
    with ``eval_loss`` of the other), each at the last step both reached."""

    key: str
    step: int | None  # the common step ``a`` and ``b`` are read at; None: not both logged it
    a: float | None
    b: float | None
    best_a: float | None
    best_b: float | None
    higher_is_better: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class Comparison:
    a: RunReport
    b: RunReport
    config: tuple[tuple[str, Any, Any], ...]  # (key, a, b), important first
    loss: tuple[Aligned, ...]
    grad_norm: tuple[Aligned, ...]
    evals: tuple[EvalPair, ...]
    winner: str | None  # "a", "b", or None: no clear winner
    reasons: tuple[str, ...]


def compare(a: RunSnapshot, b: RunSnapshot, *, rules: Sequence[Rule],
            aliases: Mapping[str, tuple[str, ...]], now: float,
            stored: Mapping[str, Sequence[AlertState]] | None = None,
            checkpoints: int = CHECKPOINTS) -> Comparison:
    """``stored``: the daemon's firing alerts by run path, when a store is at hand."""
    stored = stored or {}
    ra = characterize(a, rules=rules, aliases=aliases, now=now,
                      stored=stored.get(a.ref.path, ()))
    rb = characterize(b, rules=rules, aliases=aliases, now=now,
                      stored=stored.get(b.ref.path, ()))
    loss = aligned(_series(a, ra.loss_key), _series(b, rb.loss_key), checkpoints)
    grad_a = ra.grad.key if ra.grad else None
    grad_b = rb.grad.key if rb.grad else None
    grad = aligned(_series(a, grad_a), _series(b, grad_b), checkpoints)
    evals = _eval_pairs(a, b, ra, rb, aliases)
    winner, reasons = _winner(ra, rb, loss, evals)
    return Comparison(a=ra, b=rb, config=tuple(runconfig.differences(a.config, b.config)),
                      loss=loss, grad_norm=grad, evals=evals, winner=winner,
                      reasons=tuple(reasons))


def _series(run: RunSnapshot, key: str | None) -> Series | None:
    return run.history.get(key) if key else None


def aligned(a: Series | None, b: Series | None, checkpoints: int) -> tuple[Aligned, ...]:
    """Both curves at ``checkpoints`` steps spread over the steps both runs reached."""
    if not a or not b or not a.steps or not b.steps:
        return ()
    lo, hi = max(a.steps[0], b.steps[0]), min(a.steps[-1], b.steps[-1])
    if hi < lo:
        return ()
    if checkpoints < 2 or hi == lo:
        steps = [hi]
    else:
        steps = sorted({round(lo + i * (hi - lo) / (checkpoints - 1))
                        for i in range(checkpoints)})
    return tuple(Aligned(step=s, a=curves.value_at(a, s), b=curves.value_at(b, s))
                 for s in steps)


def _family(key: str, aliases: Mapping[str, tuple[str, ...]]) -> str:
    return next((name for name, keys in aliases.items() if key in keys), key)


def _eval_pairs(a: RunSnapshot, b: RunSnapshot, ra: RunReport, rb: RunReport,
                aliases: Mapping[str, tuple[str, ...]]) -> tuple[EvalPair, ...]:
    ea = {_family(e.key, aliases): e for e in ra.evals}
    eb = {_family(e.key, aliases): e for e in rb.evals}
    pairs = []
    for name in sorted(ea.keys() | eb.keys(), key=lambda k: (higher_is_better(k), k)):
        x, y = ea.get(name), eb.get(name)
        up = (x or y).higher_is_better  # type: ignore[union-attr]
        step = va = vb = None
        if x and y:
            step = min(x.latest_step, y.latest_step)
            va = curves.value_at(a.history[x.key], step, window=1)
            vb = curves.value_at(b.history[y.key], step, window=1)
        else:
            va, vb = (x.latest if x else None), (y.latest if y else None)
        key = x.key if x and (not y or x.key == y.key) else (
            y.key if not x else f"{x.key} / {y.key}")
        pairs.append(EvalPair(key=key, step=step, a=va, b=vb,
                              best_a=x.best if x else None, best_b=y.best if y else None,
                              higher_is_better=up))
    return tuple(pairs)


def _better(x: float | None, y: float | None, up: bool) -> str | None:
    """"a" or "b" when one is better by a clear margin, else None."""
    if x is None or y is None or not (math.isfinite(x) or math.isfinite(y)):
        return None
    if not math.isfinite(x):
        return "b"
    if not math.isfinite(y):
        return "a"
    scale = max(abs(x), abs(y)) or 1.0
    if abs(x - y) / scale < CLEAR_MARGIN:
        return None
    return ("a" if x > y else "b") if up else ("a" if x < y else "b")


def _winner(a: RunReport, b: RunReport, loss: Sequence[Aligned],
            evals: Sequence[EvalPair]) -> tuple[str | None, list[str]]:
    names = {"a": a.run.display_name, "b": b.run.display_name}
    if a.health.rank != b.health.rank:
        side = "a" if a.health.rank < b.health.rank else "b"
        worse = b if side == "a" else a
        return side, [f"{names[side]} is {(a if side == 'a' else b).health}, "
                      f"{worse.run.display_name} is {worse.health}"
                      + (f": {worse.reasons[0].text}" if worse.reasons else "")]
    votes: list[tuple[str, str]] = []
    for pair in evals:  # the first eval metric both runs report decides, losses first
        side = _better(pair.a, pair.b, pair.higher_is_better)
        if pair.step is not None:
            if side:
                votes.append((side, f"{pair.key} at step {pair.step}: {names[side]}"
                                    f" {_fmt(pair, side)}"))
            break
    if loss:
        last = loss[-1]
        side = _better(last.a, last.b, False)
        if side:
            votes.append((side, f"loss at step {last.step}: {names[side]} "
                                f"{_num(last.a if side == 'a' else last.b)} vs "
                                f"{_num(last.b if side == 'a' else last.a)}"))
    sides = {s for s, _ in votes}
    if len(sides) == 1:
        return sides.pop(), [text for _, text in votes]
    if not votes:
        return None, ["no clear winner: no metric differs by more than"
                      f" {CLEAR_MARGIN:.0%} at a common point"]
    return None, ["no clear winner: " + "; ".join(text for _, text in votes)]


def _fmt(pair: EvalPair, side: str) -> str:
    mine, other = (pair.a, pair.b) if side == "a" else (pair.b, pair.a)
    return f"{_num(mine)} vs {_num(other)}"


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"
