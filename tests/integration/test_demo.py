"""`runwatch demo` for real: the SDK writes the sample runs, the tick and the pipeline
watch them, the console receiver prints what Slack would get."""

from __future__ import annotations

import re

import pytest

from runwatch.cli import EXIT_CONFIG, EXIT_OK, main
from runwatch.config import load_config
from runwatch.demo import CONFIG_SNIPPET


def _ticks(out: str) -> list[str]:
    """The output cut at each tick's header: [before the first tick, tick 1, tick 2, ...]."""
    return re.split(r"^tick at ", out, flags=re.MULTILINE)


@pytest.mark.sdk
def test_demo_writes_runs_and_prints_each_alert_as_slack_would_get_it(tmp_path, capsys,
                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--no-color", "--keep", "runs"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "\x1b[" not in out  # --no-color (and not a terminal): plain text

    parts = _ticks(out)
    assert len(parts) == 4
    intro, first, second, third = parts
    for name in ("healthy", "exploding-grads", "nan-loss", "crashed", "stalled"):
        assert name in intro

    # Right away: the crash, the NaN and the exploding gradients; the healthy and the
    # just-killed runs are quiet.
    assert first.startswith(tuple(f"{h:02d}:" for h in range(24)))
    assert "5 runs checked: 4 fired, 1 told" in first
    # The healthy run's own run.alert (offline: W&B would never deliver it), told once.
    assert "🔵 INFO training-code-alert: healthy" in first
    assert "checkpoint saved: step 149: checkpoints/step-149.pt" in first
    assert "🔴 CRITICAL run-crashed: crashed" in first
    assert "run failed at step 119" in first
    assert "🔴 CRITICAL loss-nonfinite: nan-loss" in first
    assert "train/loss = NaN at step 60" in first
    assert "🔴 CRITICAL grad-norm-exploding: exploding-grads" in first
    assert "WARNING grad-norm-spiky" not in first  # muted by the critical one
    assert ("muted while a worse alert of the same run fires (default inhibition):"
            " grad-norm-spiky (exploding-grads)") in " ".join(first.split())
    assert "→ #training-alerts (Slack)" in first
    assert not re.search(r"(CRITICAL|WARNING) \S+: (healthy|stalled)", first)

    # +15 min: the stopped runs' alerts resolve, the dead run's heartbeat is late.
    assert "(+15 min)" in second
    assert "🟠 WARNING run-slow: stalled" in second
    assert re.search(r"no heartbeat for 1[5-9]m", second)  # 15 min and the kill's age
    for resolved in ("grad-norm-exploding: exploding-grads", "loss-nonfinite: nan-loss"):
        assert f"✅ RESOLVED {resolved}" in second
    assert "grad-norm-spiky" not in second  # never told, so its end is no news either
    assert "told once, never repeated (the run has ended): run-crashed (crashed)" in second
    assert "CRITICAL run-crashed" not in second  # told once

    # +40 min: the stall is critical; nothing that was told is told again.
    assert "(+40 min)" in third
    assert "🔴 CRITICAL run-stalled: stalled" in third
    assert re.search(r"no heartbeat for 4[0-4]m", third)
    assert "the training process is gone" in third
    # the stall mutes the slow
    assert "(default inhibition): run-slow (stalled)" in " ".join(third.split())
    assert "told once, never repeated (the run has ended): run-crashed (crashed)" in third
    assert third.count("╭─") == 2  # the run-stalled message and the "what next" block

    # What a user does next.
    assert "runwatch check --rundir ~/path/to/wandb" in third
    assert 'slack: {token: "${SLACK_BOT_TOKEN}", channel: "#training-alerts"}' in third
    assert "runwatch run --config runwatch.yaml" in third
    assert "runwatch check --rundir runs" in third  # --keep as the user spelled it

    # --keep: the runs stay, as the SDK wrote them (offline, one directory each).
    kept = tmp_path / "runs"
    runs = sorted(p.name for p in (kept / "wandb").glob("offline-run-*"))
    assert len(runs) == 5
    assert all(any((kept / "wandb" / r).glob("run-*.wandb")) for r in runs)


def test_demo_refuses_to_keep_runs_in_a_directory_with_files(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["demo", "--keep", str(tmp_path)]) == EXIT_CONFIG
    assert "not an empty directory" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_the_config_the_demo_suggests_is_a_valid_config(tmp_path):
    path = tmp_path / "runwatch.yaml"
    path.write_text(CONFIG_SNIPPET)
    config = load_config(path, env={"SLACK_BOT_TOKEN": "xoxb-1-2-abc"})
    assert [r.name for r in config.receivers] == ["team-slack"]
    assert config.receivers[0].slack.channel == "#training-alerts"
