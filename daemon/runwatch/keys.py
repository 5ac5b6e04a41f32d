"""Metric key aliases: a logical name resolves to the first key a run actually logs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

DEFAULT_ALIASES: Mapping[str, tuple[str, ...]] = {
    "loss": ("train/loss", "loss", "train_loss", "training_loss"),
    "grad_norm": ("train/grad_norm", "grad_norm", "gradient_norm"),
    "step": ("train/global_step", "global_step", "step", "_step"),
    "eval_loss": ("eval/loss", "eval_loss"),
    "eval_accuracy": ("eval/accuracy", "eval_acc"),
}


def merge_aliases(extra: Mapping[str, Iterable[str]] | None) -> dict[str, tuple[str, ...]]:
    """The default aliases with the configured ones added (a configured name replaces one)."""
    merged = dict(DEFAULT_ALIASES)
    for name, keys in (extra or {}).items():
        merged[name] = tuple(keys)
    return merged


def candidates(name: str, aliases: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    """Every key ``name`` may stand for, in order of preference; an exact key stands for itself."""
    return aliases.get(name, (name,))


def resolve(name: str, run_keys: frozenset[str] | set[str],
            aliases: Mapping[str, tuple[str, ...]]) -> str | None:
    """The first candidate key of ``name`` that the run logs, or None."""
    for key in candidates(name, aliases):
        if key in run_keys:
            return key
    return None
