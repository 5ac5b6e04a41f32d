"""The ``runwatch`` command. Thin: parse arguments, call the library, print.

Exit codes: 0 done (alerts or not), 1 a runtime failure (store unreachable), 2 invalid
config or rules. Errors are one line each on stderr — never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runwatch import __version__
from runwatch.config import Config, ConfigError, RuleSet, default_config, load_all
from runwatch.duration import format_duration
from runwatch.model import AlertStatus, Transition
from runwatch.store.base import StoreError, open_store, redact_url
from runwatch.tick import TickReport, run_tick
from runwatch.wiring import build_sources

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return EXIT_CONFIG
    except StoreError as exc:
        print(f"runwatch: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `runwatch check --json | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runwatch",
        description="Alerting for machine-learning training runs tracked in Weights & Biases.",
    )
    parser.add_argument("--version", action="version", version=f"runwatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser("check", help="run one tick: read runs, evaluate rules, report")
    _config_args(check)
    check.add_argument("--dry-run", action="store_true",
                       help="evaluate without writing alert state or cursors")
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.set_defaults(func=cmd_check)

    validate = sub.add_parser("validate", help="check config and rules without reading runs")
    _config_args(validate)
    validate.set_defaults(func=cmd_validate)

    rules = sub.add_parser("rules", help="list the loaded rules")
    _config_args(rules)
    rules.add_argument("--json", action="store_true", help="print JSON")
    rules.set_defaults(func=cmd_rules)
    return parser


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", type=Path, metavar="FILE",
                        help="daemon config (YAML); without it, --rundir and the default rules")
    parser.add_argument("--rundir", action="append", default=[], metavar="DIR",
                        help="a directory searched for wandb run directories (repeatable)")
    parser.add_argument("--state-dir", type=Path, metavar="DIR",
                        help="where the SQLite state lives without --config")


def _load(args: argparse.Namespace) -> tuple[Config, RuleSet]:
    """The config file's config and rules, or the default ones over ``--rundir``."""
    if args.config is not None:
        if args.rundir:
            raise ConfigError([f"{args.config}: --rundir cannot be combined with --config"])
        return load_all(args.config)
    paths = [Path(p).expanduser() for p in args.rundir or ["."]]
    config = default_config(paths, state_dir=args.state_dir)
    return config, config.rule_set()


def cmd_check(args: argparse.Namespace) -> int:
    config, rule_set = _load(args)
    store = open_store(config.store)
    try:
        report = run_tick(
            sources=build_sources(config), rules=rule_set.rules, aliases=rule_set.aliases,
            store=store, now=time.time(), dry_run=args.dry_run,
        )
        firing = None if args.dry_run else len(store.alerts(status=AlertStatus.FIRING))
    finally:
        store.close()
    if args.json:
        print(json.dumps(report_json(report), indent=2, allow_nan=False))
    else:
        print_report(report, firing=firing)
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    config, rule_set = _load(args)
    build_sources(config)  # refuses what this version cannot read, as `check` would
    sources = ", ".join(s.name for s in config.sources) or "none"
    print(f"ok: {len(rule_set.rules)} rules, sources: {sources}, "
          f"store: {redact_url(config.store)}")
    return EXIT_OK


def cmd_rules(args: argparse.Namespace) -> int:
    _, rule_set = _load(args)
    if args.json:
        print(json.dumps([
            {"name": r.name, "kind": r.kind, "severity": str(r.severity),
             "origin": rule_set.origins.get(r.name, "")} for r in rule_set.rules
        ], indent=2))
        return EXIT_OK
    from rich.table import Table

    table = Table("rule", "kind", "severity", "condition", "origin", box=None)
    for r in rule_set.rules:
        table.add_row(r.name, r.kind, str(r.severity), describe(r),
                      rule_set.origins.get(r.name, ""))
    _console().print(table)
    return EXIT_OK


def describe(rule: Any) -> str:
    """One line saying what a rule checks, for ``runwatch rules``."""
    parts = {
        "threshold": lambda r: f"{r.metric} {r.op} {r.value:g} ({r.mode})",
        "nonfinite": lambda r: f"{r.metric} is NaN/inf",
        "heartbeat": lambda r: f"heartbeat older than {format_duration(r.older_than)}",
        "state": lambda r: "state in " + ", ".join(map(str, r.states)),
        "spike": lambda r: f"{r.metric} > {r.k:g} robust deviations ({r.window} points)",
        "plateau": lambda r: f"{r.metric} no gain of {r.min_delta:g} in {r.patience}",
        "absent": lambda r: f"{r.metric} absent for {format_duration(r.older_than)}",
        "progress": lambda r: (
            f"no row for {format_duration(r.older_than)} and {r.factor:g}x median gap"),
    }[rule.kind](rule)
    return parts + (f" for {rule.hold}" if rule.hold else "")


def _number(value: float | None) -> float | str | None:
    """JSON has no NaN/inf: say them as the strings W&B itself uses."""
    if value is None or math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def transition_json(t: Transition) -> dict[str, Any]:
    a = t.alert
    return {
        "rule": a.rule, "severity": str(a.severity), "status": str(a.status),
        "run": {"id": a.run.id, "name": a.run.name, "project": a.run.project,
                "entity": a.run.entity, "path": a.run.path},
        "metric": a.metric, "value": _number(a.value), "step": a.step, "summary": a.summary,
    }


def report_json(report: TickReport) -> dict[str, Any]:
    return {
        "transitions": [transition_json(t) for t in report.transitions],
        "runs_checked": report.runs_checked,
        "errors": list(report.errors),
        "warnings": list(report.warnings),
    }


def printable(text: str) -> str:
    """``text`` without control or format characters (ESC sequences, RTL overrides,
    newlines), each shown as U+FFFD, so an untrusted name cannot rewrite the terminal."""
    return "".join("\ufffd" if unicodedata.category(c) in ("Cc", "Cf") else c for c in text)


def _console(*, stderr: bool = False) -> Any:
    """A rich console; piped output gets wide lines instead of an 80-column wrap."""
    from rich.console import Console

    console = Console(stderr=stderr)
    return console if console.is_terminal else Console(stderr=stderr, width=200)


_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


def print_report(report: TickReport, *, firing: int | None = None) -> None:
    from rich.table import Table
    from rich.text import Text

    console = _console()
    err = _console(stderr=True)
    for line in (*report.errors, *report.warnings):  # the tick went on: warnings, both
        err.print(Text(f"warning: {printable(line)}", style="yellow"))
    if report.transitions:
        table = Table("status", "severity", "rule", "run", "summary", "path", box=None)
        for t in report.transitions:
            a = t.alert
            # Run names and summaries are untrusted: Text() keeps rich markup out of them,
            # printable() terminal escapes and bidi overrides.
            table.add_row(Text(str(a.status)), Text(str(a.severity), _STYLE[a.severity]),
                          Text(a.rule), Text(printable(a.run.display_name)),
                          Text(printable(a.summary)), Text(printable(a.run.path)))
        console.print(table)
    total = "" if firing is None else f", {firing} alerts firing in all"
    console.print(Text(f"{report.runs_checked} runs checked, {len(report.transitions)} "
                       f"transitions, {len(report.errors)} errors{total}"))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
