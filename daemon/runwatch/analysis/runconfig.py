"""What a run's config says about it: the parameters people look at first, and how many
steps the run means to take. Pure.

Configs nest (``optimizer: {name: adam, lr: 3e-4}``) and every framework names things its
own way (``lr``, ``learning_rate``, ``optimizer.lr``), so keys are matched by their last
dotted part (or last two, joined by ``_``), case-insensitively, against the names below,
in the order given.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

# The parameters a reader looks for first, most important first; each with the names
# frameworks give it.
IMPORTANT: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("learning rate", ("lr", "learning_rate", "max_lr", "base_lr", "peak_lr")),
    ("batch size", ("batch_size", "global_batch_size", "train_batch_size",
                    "per_device_train_batch_size", "micro_batch_size", "batch")),
    ("model", ("model", "model_name", "model_name_or_path", "arch", "architecture",
               "model_type")),
    ("optimizer", ("optimizer", "optim", "optimizer_name", "opt")),
    ("seed", ("seed", "random_seed")),
    ("weight decay", ("weight_decay", "wd")),
    ("warmup", ("warmup_steps", "warmup", "warmup_ratio", "warmup_iters")),
    ("max steps", ("max_steps", "total_steps", "num_train_steps", "train_steps",
                   "max_iters")),
    ("epochs", ("epochs", "num_epochs", "num_train_epochs", "max_epochs")),
    ("grad accumulation", ("gradient_accumulation_steps", "grad_accum", "accumulate_grad_batches")),
    ("precision", ("precision", "dtype", "mixed_precision", "fp16", "bf16")),
    ("dropout", ("dropout", "dropout_rate", "hidden_dropout")),
    ("scheduler", ("lr_scheduler_type", "scheduler", "lr_scheduler", "lr_schedule")),
)
TOTAL_STEPS = ("max_steps", "total_steps", "num_train_steps", "train_steps", "max_iters",
               "num_steps", "total_iters")
EPOCHS = ("epochs", "num_epochs", "num_train_epochs", "max_epochs")
STEPS_PER_EPOCH = ("steps_per_epoch", "num_steps_per_epoch", "iters_per_epoch")


def flatten(config: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, leaf value) of a nested config; lists are leaves."""
    for key, value in config.items():
        if str(key).startswith("_wandb"):
            continue
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from flatten(value, f"{dotted}.")
        else:
            yield dotted, value


def names_of(key: str) -> tuple[str, ...]:
    """The names a dotted key answers to: its last part, and its last two parts joined
    (``optimizer.name`` is ``optimizer_name``, ``model.type`` is ``model_type``)."""
    parts = key.lower().split(".")
    return (parts[-1], "_".join(parts[-2:])) if len(parts) > 1 else (parts[-1],)


def _by_leaf(config: Mapping[str, Any]) -> dict[str, list[tuple[str, Any]]]:
    found: dict[str, list[tuple[str, Any]]] = {}
    for key, value in flatten(config):
        for name in names_of(key):
            found.setdefault(name, []).append((key, value))
    return found


def importance(key: str) -> int:
    """The rank of a dotted config key among IMPORTANT (lower first); len(IMPORTANT) if
    it is none of them."""
    mine = names_of(key)
    for rank, (_, names) in enumerate(IMPORTANT):
        if any(name in names for name in mine):
            return rank
    return len(IMPORTANT)


def highlights(config: Mapping[str, Any]) -> dict[str, Any]:
    """The important parameters the config sets, by their dotted key, most important
    first (shallow keys before nested ones of the same name)."""
    leaves = _by_leaf(config)
    out: dict[str, Any] = {}
    for _, names in IMPORTANT:
        for name in names:
            for key, value in sorted(leaves.get(name, ()), key=lambda kv: kv[0].count(".")):
                if _shown(value) and key not in out:
                    out[key] = value
    return out


def essentials(config: Mapping[str, Any]) -> dict[str, Any]:
    """The leaves of ``config`` that ``highlights`` and ``total_steps`` read, by dotted key
    (a flat mapping both read as they read ``config``): what is worth keeping of a run's
    config once it is read, where a W&B config may run to megabytes."""
    wanted = {n for _, names in IMPORTANT for n in names}.union(
        TOTAL_STEPS, EPOCHS, STEPS_PER_EPOCH)
    return {key: value for key, value in flatten(config)
            if _shown(value) and not wanted.isdisjoint(names_of(key))}


def _shown(value: Any) -> bool:
    return value is not None and not (isinstance(value, list | tuple | dict) and len(value) > 8)


def _positive(value: Any) -> float | None:
    """A config number (or numeric text) above zero; None for anything else (booleans too)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number > 0 else None


def total_steps(config: Mapping[str, Any]) -> tuple[int, str] | None:
    """How many steps the run means to take, and the config keys that say so; None when
    the config does not say (HF's ``max_steps: -1`` says "by epochs")."""
    leaves = _by_leaf(config)
    for name in TOTAL_STEPS:
        for key, value in leaves.get(name, ()):
            if (n := _positive(value)) is not None:
                return int(n), key
    for epochs_name in EPOCHS:
        for ekey, evalue in leaves.get(epochs_name, ()):
            epochs = _positive(evalue)
            if epochs is None:
                continue
            for per_name in STEPS_PER_EPOCH:
                for pkey, pvalue in leaves.get(per_name, ()):
                    if (per := _positive(pvalue)) is not None:
                        return int(epochs * per), f"{ekey} × {pkey}"
    return None


def differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(dotted key, value in a, value in b) for every key whose value differs or that only
    one side has (the missing side is ``MISSING``), important parameters first."""
    fa, fb = dict(flatten(a)), dict(flatten(b))
    keys = sorted(fa.keys() | fb.keys(), key=lambda k: (importance(k), k))
    return [(k, fa.get(k, MISSING), fb.get(k, MISSING)) for k in keys
            if fa.get(k, MISSING) != fb.get(k, MISSING)]


class _Missing:
    def __repr__(self) -> str:
        return "—"

    def __str__(self) -> str:
        return "—"


MISSING: Any = _Missing()
