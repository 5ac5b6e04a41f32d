"""The report commands of ``runwatch``: ``characterize``, ``watch`` and ``compare``.

Thin, like ``cli``: parse, read the runs (``reports``), judge them (``analysis``), print
(``notify.report_view`` on a terminal, ``notify.report_json`` with ``--json``). The rules
are the config's (``--config``) or the shipped defaults, so a report judges a run exactly as
the daemon's alerts do. A run that cannot be found or read is one line naming it, exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from runwatch.cli import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, _console  # the same terminal
from runwatch.config import Config, ConfigError, RuleSet, default_config, load_all
from runwatch.notify.render import printable


def add_commands(sub: Any) -> None:
    char = sub.add_parser("characterize", help="one run's health: loss trend, grad norm,"
                                               " evals, pace and ETA, verdict")
    char.add_argument("run", metavar="RUN",
                      help="entity/project/run_id, a W&B run URL, or a local run directory")
    _common(char)
    char.set_defaults(func=cmd_characterize)

    watch = sub.add_parser("watch", help="every running run worst first, and the runs that"
                                         " ended lately")
    watch.add_argument("entity", nargs="?", metavar="ENTITY",
                       help="a W&B entity (without it: --rundir, or the config's sources)")
    which = watch.add_mutually_exclusive_group()
    which.add_argument("--projects", metavar="A,B", help="these W&B projects of ENTITY")
    which.add_argument("--all-projects", action="store_true",
                       help="every project of ENTITY (the default with ENTITY)")
    watch.add_argument("--hours", type=float, default=24.0,
                       help="how far back ended runs are listed (default 24)")
    watch.add_argument("--rundir", action="append", default=[], metavar="DIR",
                       help="a directory searched for wandb run directories (repeatable)")
    _common(watch)
    watch.set_defaults(func=cmd_watch)

    digest = sub.add_parser("digest", help="the daily digest: show it, or send it now")
    digest.add_argument("--config", "-c", type=Path, metavar="FILE", required=True,
                        help="daemon config (YAML): its sources, store, rules and receivers")
    digest.add_argument("--now", metavar="TIME",
                        help="compose it as of TIME (ISO 8601, e.g. 2026-12-02T08:00:00+01:00,"
                             " or Unix seconds); default: now")
    digest.add_argument("--receiver", action="append", metavar="NAME",
                        help="send to this receiver (repeatable; default: the digest's)")
    digest.add_argument("--dry-run", action="store_true",
                        help="print it to the terminal; send nothing, record nothing")
    digest.add_argument("--json", action="store_true", help="with --dry-run: print the"
                                                            " webhook's JSON body")
    digest.set_defaults(func=cmd_digest)

    comp = sub.add_parser("compare", help="two runs side by side, and which is ahead")
    comp.add_argument("run_a", metavar="RUN_A")
    comp.add_argument("run_b", metavar="RUN_B")
    _common(comp)
    comp.set_defaults(func=cmd_compare)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", type=Path, metavar="FILE",
                        help="daemon config: its rules, aliases and W&B access (default: the"
                             " shipped rules; W&B from WANDB_API_KEY/WANDB_BASE_URL)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _rules(args: argparse.Namespace) -> tuple[Config | None, RuleSet]:
    if args.config is not None:
        config, rule_set = load_all(args.config)
        return config, rule_set
    config = default_config([Path(".")])
    return None, config.rule_set()


def _access(config: Config | None, entity: str | None = None) -> Any:
    from runwatch.reports import WandbAccess

    specs = [s for s in (config.sources if config else ()) if s.type == "wandb"]
    chosen = next((s for s in specs if entity is None or s.entity == entity),
                  specs[0] if specs else None)
    return WandbAccess.from_spec(chosen)


def _stored(config: Config | None, run_path: str | None = None) -> dict[str, list[Any]]:
    """The daemon's firing alerts (of ``run_path`` only, if given) by run path, when a
    config names its store: a report counts them too. A store that cannot be read is a
    warning, not a failure."""
    if config is None:
        return {}
    from runwatch.model import AlertStatus
    from runwatch.store.base import StoreError, open_store

    try:
        store = open_store(config.store)
        try:
            alerts = store.alerts(status=AlertStatus.FIRING, run_path=run_path)
        finally:
            store.close()
    except StoreError as exc:
        print(f"warning: {printable(str(exc))}; the daemon's alerts are not counted",
              file=sys.stderr)
        return {}
    found: dict[str, list[Any]] = {}
    for alert in alerts:
        found.setdefault(alert.run.path, []).append(alert)
    return found


def _fail(line: str, code: int = EXIT_CONFIG) -> int:
    print(f"runwatch: {printable(line)}", file=sys.stderr)
    return code


def read_labels(texts: Iterable[str], path: Path | None) -> list[Any]:
    """``backtest``'s labels: ``--label`` texts, then those of a YAML file (a list of the
    same texts). ConfigError with a line per bad one, ``file:line`` for the file's."""
    from runwatch.backtest import Label
    from runwatch.config.document import Problem, display_path, read

    labels, problems = [], []
    for text in texts:
        try:
            labels.append(Label.parse(text))
        except ValueError as exc:
            problems.append(Problem(file=None, line=None, message=f"--label: {exc}"))
    if path is not None:
        doc, read_problems = read(path, display_path(str(path)), what="labels file")
        problems += read_problems
        items = doc.data if doc is not None else None
        if doc is not None and not isinstance(items, list):
            problems.append(doc.problem((), "expected a list of run=ID:bad@STEP or"
                                            " run=ID:good"))
        for i, text in enumerate(items if isinstance(items, list) else ()):
            try:
                labels.append(Label.parse(str(text)))
            except ValueError as exc:
                problems.append(doc.problem((i,), str(exc)))
    if problems:
        raise ConfigError.from_problems(problems)
    return labels


@contextlib.contextmanager
def progress_bar(text: str) -> Iterator[Any]:
    """A progress bar on stderr, when stderr is a terminal: yields ``update(done, total)``."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    if not console.is_terminal:
        yield None
        return
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(text, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


@contextlib.contextmanager
def _status(text: str) -> Iterator[None]:
    """A spinner on stderr while a long read runs, when stderr is a terminal."""
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        yield
        return
    with console.status(text):
        yield


def _print(renderable: Any) -> None:
    _console().print(renderable)


def _load(spec_text: str, rule_set: RuleSet, access: Any) -> Any:
    from runwatch.analysis import report_keys
    from runwatch.reports import load_run, parse_run

    spec = parse_run(spec_text)
    warnings: list[str] = []
    with _status(f"reading {spec_text}"):
        run = load_run(spec, report_keys(rule_set.rules, rule_set.aliases), access=access,
                       warnings=warnings)
    for line in warnings:
        print(f"warning: {printable(line)}", file=sys.stderr)
    return run


def _runs(args: argparse.Namespace, *texts: str) -> tuple[Config | None, RuleSet, list[Any]]:
    """The rules, and the runs ``texts`` name, read; ReportError naming one that fails."""
    config, rule_set = _rules(args)
    access = _access(config)
    try:
        return config, rule_set, [_load(text, rule_set, access) for text in texts]
    finally:
        access.close()


def _show(args: argparse.Namespace, value: Any, as_json: Any, view: Any) -> int:
    """``value`` as JSON with ``--json``, else its rich view."""
    if args.json:
        print(json.dumps(as_json(value), indent=2, allow_nan=False))
    else:
        _print(view(value))
    return EXIT_OK


def cmd_characterize(args: argparse.Namespace) -> int:
    from runwatch.analysis import characterize
    from runwatch.notify.report_json import SCHEMA_VERSION, run_json
    from runwatch.notify.report_view import characterize_view
    from runwatch.reports import ReportError

    try:
        config, rule_set, (run,) = _runs(args, args.run)
    except ReportError as exc:
        return _fail(str(exc))
    report = characterize(run, rules=rule_set.rules, aliases=rule_set.aliases, now=time.time(),
                          stored=_stored(config, run.ref.path).get(run.ref.path, ()))
    return _show(args, report, lambda r: {"version": SCHEMA_VERSION, **run_json(r)},
                 characterize_view)


def cmd_compare(args: argparse.Namespace) -> int:
    from runwatch.analysis import compare
    from runwatch.notify.report_json import compare_json
    from runwatch.notify.report_view import compare_view
    from runwatch.reports import ReportError

    try:
        config, rule_set, (a, b) = _runs(args, args.run_a, args.run_b)
    except ReportError as exc:
        return _fail(str(exc))
    result = compare(a, b, rules=rule_set.rules, aliases=rule_set.aliases, now=time.time(),
                     stored=_stored(config))
    return _show(args, result, compare_json, compare_view)


def cmd_watch(args: argparse.Namespace) -> int:
    from runwatch.analysis import report_keys, watch
    from runwatch.reports import config_runs, rundir_runs, wandb_runs

    if args.config is not None and args.rundir:
        raise ConfigError([f"{args.config}: --rundir cannot be combined with --config"])
    if (args.projects or args.all_projects) and not args.entity:
        return _fail("watch: --projects and --all-projects need an ENTITY")
    config, rule_set = _rules(args)
    now = time.time()
    since = now - args.hours * 3600
    keys = report_keys(rule_set.rules, rule_set.aliases)
    if args.entity:
        access = _access(config, args.entity)
        projects = [p for p in (args.projects or "").split(",") if p] or None
        try:
            with progress_bar(f"reading the projects of {args.entity}") as update:
                found = wandb_runs(access, entity=args.entity, projects=projects, since=since,
                                   keys=keys, progress=update)
        finally:
            access.close()
        if not found.runs and found.errors:  # W&B said no to everything: nothing to show
            for line in found.errors:
                print(f"runwatch: {printable(line)}", file=sys.stderr)
            return EXIT_CONFIG
    elif config is None:
        with _status("reading run directories"):
            found = rundir_runs(args.rundir or ["."], keys, now)
    else:
        with _status("reading the runs of every source"):
            found = config_runs(config, keys, since=since, now=now)
    report = watch(found.runs, since=since, now=now, rules=rule_set.rules,
                   aliases=rule_set.aliases, stored=_stored(config))
    for line in found.errors:
        print(f"warning: {printable(line)}", file=sys.stderr)
    from runwatch.notify.report_json import watch_json
    from runwatch.notify.report_view import watch_view

    return _show(args, report, watch_json, watch_view)


def parse_time(text: str) -> float:
    """ISO 8601 (a time without a zone is UTC) or Unix seconds."""
    from datetime import UTC, datetime

    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"invalid time {text!r}: expected ISO 8601 (2026-12-02T08:00:00Z)"
                         " or Unix seconds") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def cmd_digest(args: argparse.Namespace) -> int:
    from runwatch import digests
    from runwatch.store.base import open_store

    config, rule_set = load_all(args.config)
    try:
        now = parse_time(args.now) if args.now else time.time()
    except ValueError as exc:
        return _fail(f"digest: {exc}")
    receivers = list(args.receiver or (config.digest.receivers if config.digest else ()))
    for name in receivers:
        if config.receiver(name) is None:
            known = ", ".join(r.name for r in config.receivers) or "none"
            return _fail(f"digest: receiver {name}: not in {args.config} (receivers: {known})")
    if not receivers and not args.dry_run:
        return _fail(f"digest: {args.config} names no digest receivers; use --receiver NAME"
                     " or --dry-run")
    _, zone = digests.trigger_of(config)
    store = open_store(config.store)
    try:
        sent = [t for name in receivers if (t := digests.sent_at(store, name)) is not None]
        start = max(max(sent, default=now - 86400.0), now - digests.MAX_PERIOD)
        with _status("reading the runs"):
            digest = digests.build(config, rule_set, store,
                                   digests.Period(start=min(start, now), end=now))
        if args.dry_run:
            from runwatch.notify.digest_render import body
            from runwatch.notify.report_view import digest_view

            return _show(args, digest, body, lambda d: digest_view(d, zone))
        return _send_digest(config, store, digests.content(digest, zone), receivers, now)
    finally:
        store.close()


def _send_digest(config: Config, store: Any, rendered: Any, receivers: list[str],
                 now: float) -> int:
    from runwatch import digests
    from runwatch.notify.outbox import drain
    from runwatch.notify.receivers import build_notifier

    notifiers = {name: build_notifier(config.receiver(name)) for name in receivers}
    try:
        digests.queue(store, rendered, receivers, now)
        report = drain(store, notifiers, max(now, time.time()))
    finally:
        for notifier in notifiers.values():
            notifier.close()
    for line in report.errors:
        print(f"runwatch: {printable(line)}", file=sys.stderr)
    print(f"digest: {report.sent} sent, {report.retrying} waiting for a retry (the daemon"
          f" sends it), {report.failed} failed")
    return EXIT_OK if not report.failed else EXIT_FAILURE
