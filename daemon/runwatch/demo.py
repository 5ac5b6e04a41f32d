"""``runwatch demo``: sample runs written by the real wandb SDK, watched by the real tick.

Five runs (``demo_runs.py``: healthy, exploding gradients, NaN loss, crashed, stalled) are
written in parallel subprocesses in offline mode — no account, no network — into a fresh
directory. Then the demo ticks three times with explicit clocks (nothing waits for real
time): right away, 15 and 40 minutes later. Each tick is ``service.tick`` followed by
``service.deliver`` — ``run_cycle``'s two halves, the very path of ``runwatch check`` and
the daemon, with the tick's header printed between them — over a SQLite store in scratch
space (the user's state directory is never touched). The config is the one a user writes —
the default rules, one Slack receiver — except that the pipeline is handed a
:class:`~runwatch.notify.console.ConsoleNotifier` under that receiver's name, so every
message is printed as a panel instead of posted.

Why two runs stay alive through the first tick: an alert that fires on a run's final rows
resolves with the run in the same tick, and a receiver is never told of a resolution it
never heard fire. A run that explodes or turns NaN is, in life, a run still training; so
those two are still running when the first tick reads them, and are stopped (as Ctrl-C
would) before the second — whose resolutions the receiver then hears.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

from rich.console import Console, Group
from rich.panel import Panel
from rich.text import Text

from runwatch import demo_runs, service
from runwatch.config import Config
from runwatch.model import AlertStatus, RunState, status_word
from runwatch.notify.console import ConsoleNotifier
from runwatch.notify.render import printable
from runwatch.store.base import Store, open_store
from runwatch.tick import TickReport

RECEIVER = "team-slack"
CHANNEL = "#training-alerts"
WRITE_TIMEOUT = 120.0  # seconds for every run to be written; usually a few

# What each sample run does, in the order they are introduced.
STORIES = {
    "healthy": ("healthy", "trains and finishes; its code raises run.alert on a checkpoint"),
    "exploding": ("exploding-grads", "grad norm climbs past 10 — still training"),
    "nan_loss": ("nan-loss", "loss turns NaN — still training"),
    "crashed": ("crashed", "raises an exception (CUDA out of memory)"),
    "stalled": ("stalled", "its process is killed mid-training: no exit record"),
}


@dataclass(frozen=True, kw_only=True, slots=True)
class Tick:
    """One tick of the demo's story: when (after the first), and what happened before."""

    offset: float
    before: str = ""


TICKS = (
    Tick(offset=0.0),
    Tick(offset=15 * 60.0,
         before="You stop exploding-grads and nan-loss (Ctrl-C). The demo moves its clock "
                "15 minutes on; the stalled run's process is gone and writes nothing."),
    Tick(offset=40 * 60.0, before="25 more minutes pass. Still nothing from stalled."),
)

CONFIG_SNIPPET = """\
sources:
  - type: rundir
    path: ~/path/to/experiments     # searched for wandb/ run directories
receivers:
  - name: team-slack
    slack: {token: "${SLACK_BOT_TOKEN}", channel: "#training-alerts"}
"""


class DemoError(Exception):
    """The sample runs could not be written: the demo cannot go on."""


class KeepDirError(DemoError):
    """``--keep`` names something other than a new or empty directory."""


def sdk_env(wandb_dir: Path, sdk_home: Path) -> dict[str, str]:
    """The environment of a sample run: offline, silent, nothing of the user's wandb
    settings (API key, entity, base URL) and nowhere to send anything if it tried."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        WANDB_DIR=str(wandb_dir),
        WANDB_BASE_URL="http://127.0.0.1:9",  # the discard port: refused, never routed
        WANDB_DISABLE_GIT="true",
        WANDB_DISABLE_CODE="true",
        WANDB_CONSOLE="wrap",
        WANDB_CACHE_DIR=str(sdk_home / "cache"),
        WANDB_CONFIG_DIR=str(sdk_home / "config"),
        WANDB_DATA_DIR=str(sdk_home / "data"),
        PYTHONUNBUFFERED="1",
    )
    return env


class SampleRuns:
    """The scenario processes of ``demo_runs.py``: started together, each in its own
    process (wandb-core per run, as in life), ended by :meth:`close` whatever happened."""

    def __init__(self, directory: Path, sdk_home: Path) -> None:
        self.directory = directory
        self.sdk_home = sdk_home
        self._procs: dict[str, subprocess.Popen[str]] = {}
        self._stderr: dict[str, IO[str]] = {}
        self._stopped = False

    def start(self) -> None:
        env = sdk_env(self.directory, self.sdk_home)
        script = Path(demo_runs.__file__).resolve()  # by path: the child imports no runwatch
        for name in demo_runs.SCENARIOS:
            live = name in demo_runs.LIVE
            err = self._stderr[name] = open(self.sdk_home / f"{name}.stderr", "w+")  # noqa: SIM115
            self._procs[name] = subprocess.Popen(
                [sys.executable, str(script), name], env=env, cwd=self.directory, text=True,
                stdin=subprocess.PIPE if live else subprocess.DEVNULL,
                stdout=subprocess.PIPE if live else subprocess.DEVNULL, stderr=err,
            )

    def wait_written(self) -> None:
        """Until every run is on disk: the live ones said ``ready``, the others ended.
        Every child bounds its own waits (wandb.init's timeout, the block wait), so a
        blocking read ends too."""
        for name in demo_runs.LIVE:
            line = self._procs[name].stdout.readline()  # type: ignore[union-attr]
            if line.strip() != demo_runs.READY:
                self._procs[name].wait(timeout=WRITE_TIMEOUT)
                raise DemoError(self._failure(name))
        for name, proc in self._procs.items():
            if name not in demo_runs.LIVE:
                self._wait(name, proc)

    def stop_live(self) -> None:
        """Stop the runs still training, as their owner's Ctrl-C would (once)."""
        if self._stopped:
            return
        self._stopped = True
        for name in demo_runs.LIVE:
            stdin = self._procs[name].stdin
            assert stdin is not None
            stdin.write("stop\n")
            stdin.close()
        for name in demo_runs.LIVE:
            self._wait(name, self._procs[name])

    def _wait(self, name: str, proc: subprocess.Popen[str]) -> None:
        try:
            proc.wait(timeout=WRITE_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise DemoError(f"sample run {name}: still running after {WRITE_TIMEOUT:.0f} s"
                            ) from None
        if proc.returncode not in demo_runs.EXPECTED_EXIT[name]:
            raise DemoError(self._failure(name))

    def _failure(self, name: str) -> str:
        err = self._stderr[name]
        err.flush()
        err.seek(0)
        tail = err.read()[-2000:].strip()
        code = self._procs[name].returncode
        return f"sample run {name}: wandb SDK exited with {code}" + (f":\n{tail}" if tail else "")

    def close(self) -> None:
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None and not stream.closed:
                    stream.close()
        for err in self._stderr.values():
            err.close()


def demo_config(directory: Path, state_dir: Path) -> Config:
    """What a user's ``runwatch.yaml`` holds (``CONFIG_SNIPPET``) over the demo's runs,
    with the embedded SQLite store in the demo's scratch directory: the demo leaves no
    state behind and never touches the user's own."""
    return Config.model_validate({
        "sources": [{"type": "rundir", "path": [str(directory)]}],
        "state_dir": str(state_dir),
        "store": "sqlite:///" + str(Path(state_dir).resolve() / "state.db"),
        # Never contacted: the demo hands the pipeline a console notifier under this name.
        "receivers": [{"name": RECEIVER,
                       "slack": {"token": "xoxb-runwatch-demo", "channel": CHANNEL}}],
    }, context={"base_dir": directory})


def console_for(*, no_color: bool = False, file: IO[str] | None = None) -> Console:
    """The demo's console: colour unless asked not to (or NO_COLOR), and a readable width
    when the output is not a terminal."""
    system = None if no_color else "auto"  # None: no styles at all, not only no colours
    console = Console(file=file, color_system=system, no_color=no_color, highlight=False)
    if not console.is_terminal:
        console = Console(file=file, color_system=system, no_color=no_color, highlight=False,
                          width=100)
    return console


@contextmanager
def _directories(keep: Path | None) -> Iterator[tuple[Path, Path]]:
    """(where the runs go, scratch for the SDK's cache and logs); both temporary unless
    ``keep`` names where the runs should stay."""
    with tempfile.TemporaryDirectory(prefix="runwatch-demo-sdk-",
                                     ignore_cleanup_errors=True) as sdk_home:
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            yield keep, Path(sdk_home)
            return
        with tempfile.TemporaryDirectory(prefix="runwatch-demo-",
                                         ignore_cleanup_errors=True) as runs:
            yield Path(runs), Path(sdk_home)


def run_demo(console: Console, *, keep: Path | None = None) -> None:
    """The whole demo, printed to ``console``. Raises :class:`DemoError` when the sample
    runs cannot be written, :class:`KeepDirError` when ``keep`` is not new or empty."""
    if keep is not None:
        where = keep.expanduser()
        if where.exists() and (not where.is_dir() or any(where.iterdir())):
            raise KeepDirError(f"--keep {keep}: not an empty directory")
    with _directories(keep and keep.expanduser().resolve()) as (directory, sdk_home):
        runs = SampleRuns(directory, sdk_home)
        try:
            _write(console, runs)
            _watch(console, runs, directory, sdk_home)
        finally:
            runs.close()
        console.print(what_next(keep))  # as the user spelled it: what they type next


def _write(console: Console, runs: SampleRuns) -> None:
    console.print(Text.assemble(
        ("runwatch demo", "bold"), ": writing 5 sample training runs with the wandb SDK "
        "(offline: no account, no network) into ", (printable(str(runs.directory)), "cyan")))
    width = max(len(name) for name, _ in STORIES.values())
    for name, story in STORIES.values():
        console.print(Text.assemble("  ", (name.ljust(width), "bold"), "  ", story))
    started = time.monotonic()
    runs.start()
    runs.wait_written()
    console.print(Text(f"written in {time.monotonic() - started:.1f} s.", style="dim"))


def _watch(console: Console, runs: SampleRuns, directory: Path, state_dir: Path) -> None:
    config = demo_config(directory, state_dir)
    notifier = ConsoleNotifier(RECEIVER, console=console, destination=f"{CHANNEL} (Slack)")
    runtime = replace(service.build_runtime(config, config.rule_set(), notify=False),
                      notifiers={RECEIVER: notifier})
    store = open_store(config.store)
    start = time.time()
    try:
        for tick in TICKS:
            if tick.offset > 0:
                runs.stop_live()
            if tick.before:
                console.print()
                console.print(Text(tick.before, style="italic"))
            now = start + tick.offset
            report = service.tick(runtime, store, now)
            console.print()
            console.rule(Text(tick_header(report, now, tick.offset), style="bold"),
                         align="left")
            for line in (*report.errors, *report.warnings):
                console.print(Text(f"warning: {printable(line)}", style="yellow"))
            printed = len(notifier.sent)
            notified = service.deliver(runtime, store, now, charts=report.charts)
            for line in notified["errors"]:
                console.print(Text(f"warning: {printable(line)}", style="yellow"))
            told = {a.fingerprint for m in notifier.sent[printed:]
                    for a in (*m.firing, *m.resolved)}
            note = quiet_note(store, told, config)
            if note:
                console.print(Text(note, style="dim"))
    finally:
        store.close()
        runtime.close()


def tick_header(report: TickReport, now: float, offset: float) -> str:
    """``tick at 08:15 (+15 min) — 5 runs checked: 1 fired, 4 resolved``."""
    when = time.strftime("%H:%M", time.localtime(now))
    later = f" (+{offset / 60:.0f} min)" if offset else ""
    counts: dict[str, int] = {}
    for t in report.transitions:
        counts[status_word(t.alert)] = counts.get(status_word(t.alert), 0) + 1
    changes = ", ".join(f"{counts[s]} {_VERB[s]}" for s in _VERB if counts.get(s))
    runs = f"{report.runs_checked} run{'' if report.runs_checked == 1 else 's'}"
    return (f"tick at {when}{later} — {runs} checked: "
            f"{changes or 'no change'}")


_VERB: Mapping[str, str] = {"firing": "fired", "pending": "pending", "told": "told",
                            "resolved": "resolved"}


def quiet_note(store: Store, told: set[str], config: Config) -> str:
    """What the receiver was not told this tick, and why: muted by an inhibit rule, or
    still firing and already told. Empty when every firing alert was in this tick's
    messages."""
    from runwatch.notify.routing import alert_labels, inhibit_rules, mute

    repeat_interval = config.repeat_interval
    every = store.alerts(status=AlertStatus.FIRING)
    labels = {a.fingerprint: alert_labels(a) for a in every}
    muted = mute(every, labels, inhibit=inhibit_rules(config.inhibit), silences=(), now=0.0)
    firing = [a for a in every if a.fingerprint not in told]
    inhibited = sorted(f"{a.rule} ({a.run.display_name})" for a in firing
                       if a.fingerprint in muted)
    firing = [a for a in firing if a.fingerprint not in muted]
    live = sorted(f"{a.rule} ({a.run.display_name})" for a in firing
                  if a.run_state == RunState.RUNNING)
    ended = sorted(f"{a.rule} ({a.run.display_name})" for a in firing
                   if a.run_state != RunState.RUNNING)
    if not firing and not inhibited:
        return "" if told else "nothing to tell."
    notes = []
    if inhibited:
        notes.append("muted while a worse alert of the same run fires (default inhibition): "
                     + printable(", ".join(inhibited)))
    if live:
        notes.append(f"still firing, already told, not repeated before"
                     f" {repeat_interval / 3600:g}h: " + printable(", ".join(live)))
    if ended:
        notes.append("told once, never repeated (the run has ended): "
                     + printable(", ".join(ended)))
    return "\n".join(notes)


def what_next(kept: Path | None) -> Panel:
    """The last thing the demo prints: what a user does next."""
    code = "bold cyan"
    lines = [
        Text("1. Check your own runs — no account, no network:"),
        Text("     runwatch check --rundir ~/path/to/wandb", style=code),
        Text("2. Tell Slack: save this as runwatch.yaml (a bot token with chat:write)"),
        Text("\n".join("     " + line for line in CONFIG_SNIPPET.splitlines()), style=code),
        Text("   check it, then start the daemon:"),
        Text("     runwatch validate --config runwatch.yaml\n"
             "     runwatch run --config runwatch.yaml", style=code),
    ]
    if kept is not None:
        lines.append(Text.assemble("The demo's runs are kept; look at them again with ",
                                   (f"runwatch check --rundir {printable(str(kept))}", code)))
    else:
        lines.append(Text.assemble("The demo's runs were temporary; ",
                                   ("runwatch demo --keep DIR", code), " keeps them."))
    return Panel(Group(*lines), title=Text("What next", style="bold"), title_align="left",
                 expand=True)
