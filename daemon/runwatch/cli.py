"""The ``runwatch`` command. Thin: parse arguments, call the library, print.

Exit codes: 0 done (alerts or not), 1 a runtime failure (store unreachable), 2 invalid
config or rules. Errors are one line each on stderr — never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runwatch import __version__
from runwatch.config import (
    Checked,
    Config,
    ConfigError,
    RuleSet,
    check_all,
    default_config,
    load_all,
)
from runwatch.config.loader import ReceiverCheck
from runwatch.duration import format_duration
from runwatch.leader import Leadership
from runwatch.model import AlertStatus, RunState, Transition, status_word
from runwatch.notify.render import printable  # what every terminal output goes through
from runwatch.notify.report_json import number  # JSON has no NaN: W&B's strings
from runwatch.service import build_runtime, run_cycle, tune_gc
from runwatch.state_json import (
    alert_json,
    outbox_json,
    silence_json,
    source_names,
    status_json,
)
from runwatch.store.base import StoreError, WriterBusy, open_store, redact_url, writer_name
from runwatch.tick import TickReport
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
    except WriterBusy as exc:  # another process ticks into this store: a setup to fix
        print(f"runwatch: {exc}; stop it, or use --dry-run to look without writing",
              file=sys.stderr)
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
    validate.add_argument("--online", action="store_true",
                          help="also contact every source (W&B: the API key, the projects)")
    validate.set_defaults(func=cmd_validate)

    rules = sub.add_parser("rules", help="list the loaded rules")
    _config_args(rules)
    rules.add_argument("--json", action="store_true", help="print JSON")
    rules.set_defaults(func=cmd_rules)

    tests = sub.add_parser("test-rules", help="replay rule tests: synthetic runs, expected alerts")
    tests.add_argument("files", nargs="+", metavar="FILE", help="rule test files (YAML)")
    tests.set_defaults(func=cmd_test_rules)

    backtest = sub.add_parser("backtest", help="replay past runs through the rules: what"
                                               " would have fired, and what it would cost")
    backtest.add_argument("runs", nargs="*", metavar="RUN",
                          help="run directories, W&B runs (ENTITY/PROJECT/RUN_ID or a URL)")
    backtest.add_argument("--project", default=None, metavar="ENTITY/PROJECT",
                          help="and the runs of this W&B project (see --state, --since,"
                               " --limit)")
    backtest.add_argument("--state", default=None, choices=[s.value for s in RunState],
                          help="only the project's runs in this state (e.g. finished)")
    backtest.add_argument("--since", default=None, metavar="DURATION",
                          help="only the project's runs alive within this (e.g. 30d)")
    backtest.add_argument("--limit", type=int, default=None, metavar="N",
                          help="at most the N newest of the project's runs")
    backtest.add_argument("--rules", nargs="+", metavar="FILE", default=None,
                          help="rule files (default: the config's, else the shipped rules)")
    backtest.add_argument("--config", type=Path, default=None,
                          help="take rules, aliases, receivers, routes, inhibit rules,"
                               " repeat_interval and send_resolved here")
    backtest.add_argument("--interval", default="1m", help="the daemon's tick (default 1m)")
    backtest.add_argument("--delay", default="15s",
                          help="how late a point is seen: wandb-core's flush (default 15s)")
    backtest.add_argument("--tail", default="1h",
                          help="how long a run with no exit record is watched after its"
                               " last record (default 1h)")
    backtest.add_argument("--label", action="append", default=[], metavar="run=ID:bad@STEP",
                          help="a run known bad from STEP on (or run=ID:good): score the"
                               " rules on the labelled runs")
    backtest.add_argument("--labels", type=Path, default=None, metavar="FILE",
                          help="labels in a YAML file: a list of run=ID:bad@STEP lines")
    backtest.add_argument("--json", action="store_true", help="print JSON")
    backtest.set_defaults(func=cmd_backtest)

    schema = sub.add_parser("schema", help="print the JSON Schema of rule files or the config")
    schema.add_argument("what", choices=("rules", "config"), nargs="?", default="rules",
                        help="rules (a rule file; the default) or config (the daemon config)")
    schema.set_defaults(func=cmd_schema)

    test = sub.add_parser("notify-test", help="send a test message to one receiver")
    test.add_argument("--config", "-c", type=Path, metavar="FILE", required=True,
                      help="daemon config (YAML)")
    test.add_argument("--receiver", required=True, metavar="NAME", help="a configured receiver")
    test.set_defaults(func=cmd_notify_test)

    silence = sub.add_parser("silence", help="mute matching alerts for a while")
    verbs = silence.add_subparsers(dest="verb", required=True, metavar="VERB")
    add = verbs.add_parser("add", help="add a silence")
    _config_args(add)
    add.add_argument("--match", "-m", action="append", required=True, metavar="MATCHER",
                     help="label=value, label!=value, label=~regex or label!~regex (repeatable;"
                          " all must match), e.g. run=team/proj/abc123, rule=~run-.*")
    add.add_argument("--duration", "-d", required=True, help="how long, e.g. 2h, 30m, 1d")
    add.add_argument("--comment", required=True, help="why")
    add.add_argument("--author", default=os.environ.get("USER", ""), help="who (default: $USER)")
    add.set_defaults(func=cmd_silence_add)
    listing = verbs.add_parser("list", help="list active and pending silences")
    _config_args(listing)
    listing.add_argument("--all", action="store_true", help="expired ones too")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=cmd_silence_list)
    expire = verbs.add_parser("expire", help="end a silence now")
    _config_args(expire)
    expire.add_argument("id", help="the silence's id")
    expire.set_defaults(func=cmd_silence_expire)

    demo = sub.add_parser("demo", help="watch sample runs (written offline by the wandb SDK)"
                                       " set off alerts; no account, no network")
    demo.add_argument("--keep", type=Path, metavar="DIR",
                      help="write the sample runs into DIR (new or empty) and keep them")
    demo.add_argument("--no-color", action="store_true", help="plain text, no colours")
    demo.set_defaults(func=cmd_demo)

    run = sub.add_parser("run", help="the daemon: tick every source on its schedule, notify")
    run.add_argument("--config", "-c", type=Path, metavar="FILE", required=True,
                     help="daemon config (YAML)")
    run.add_argument("--log-format", choices=("auto", "json", "console"), default="auto",
                     help="JSON lines, readable lines, or JSON unless on a terminal (default)")
    run.add_argument("--watch-config", action="store_true",
                     help="reload when the config or a rule file changes")
    run.set_defaults(func=cmd_run)

    alerts = sub.add_parser("alerts", help="list alert state from the store")
    _config_args(alerts)
    alerts.add_argument("--state", choices=[s.value for s in AlertStatus], action="append",
                        help="only alerts in this state (repeatable; default: firing and"
                             " pending)")
    alerts.add_argument("--json", action="store_true", help="print JSON")
    alerts.set_defaults(func=cmd_alerts)

    status = sub.add_parser("status", help="what the daemon last did for each source")
    _config_args(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=cmd_status)

    user = sub.add_parser("page-user", help="print a users_file line for the status pages")
    user.add_argument("name", help="the user's name (no colon)")
    user.add_argument("--password-stdin", action="store_true",
                      help="read the password from standard input, not the terminal")
    user.set_defaults(func=cmd_page_user)

    from runwatch.cli_reports import add_commands

    add_commands(sub)
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


def cmd_run(args: argparse.Namespace) -> int:
    from runwatch import logs
    from runwatch.daemon import Daemon

    logs.configure(args.log_format)
    try:
        daemon = Daemon(args.config, watch_config=args.watch_config)
    except ConfigError as exc:
        for line in exc.errors:
            logs.get("runwatch.daemon").error("invalid config; not starting", detail=line)
        return EXIT_CONFIG
    except StoreError as exc:  # a store that cannot be used is the config's to fix
        logs.get("runwatch.daemon").error("cannot open the store; not starting",
                                          error=str(exc))
        return EXIT_FAILURE if exc.temporary else EXIT_CONFIG
    try:
        return daemon.run()
    except ConfigError as exc:  # e.g. http.listen's port is taken
        for line in exc.errors:
            logs.get("runwatch.daemon").error("cannot start", detail=line)
        return EXIT_CONFIG


def cmd_alerts(args: argparse.Namespace) -> int:
    config, _ = _load(args)
    states = tuple(AlertStatus(s) for s in args.state or ("firing", "pending"))
    store = open_store(config.store)
    try:
        alerts = store.alerts(status=states)
        outbox = store.outbox(include_failed=True)
    finally:
        store.close()
    alerts.sort(key=lambda a: (a.status != AlertStatus.FIRING, a.severity != "critical",
                               a.run.path, a.rule))
    failed = [e for e in outbox if e.failed_at is not None]
    if args.json:
        print(json.dumps({"alerts": [alert_json(a) for a in alerts],
                          "undelivered": [outbox_json(e) for e in outbox]},
                         indent=2, allow_nan=False))
        return EXIT_OK
    from rich.text import Text

    now = time.time()
    table = _titled_table(f"{len(alerts)} alerts ({', '.join(states)})",
                          "status", "severity", "rule", "run", "since", "value", "summary")
    for a in alerts:
        since = a.fired_at if a.status == AlertStatus.FIRING else a.active_since
        table.add_row(str(a.status), str(a.severity), Text(printable(a.rule)),
                      Text(printable(f"{a.run.display_name} ({a.run.path})")),
                      format_duration(max(0.0, now - since)) if since else "",
                      "" if a.value is None else f"{a.value:.4g}", Text(printable(a.summary)))
    _console().print(table)
    if outbox:
        _console().print(Text(f"outbox: {len(outbox) - len(failed)} waiting to be sent,"
                              f" {len(failed)} failed"))
    for entry in failed:
        _console().print(Text(f"failed: receiver {entry.receiver}: {printable(entry.last_error)}",
                              style="red"))
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    config, _ = _load(args)
    store = open_store(config.store)
    try:
        saved = store.load_status()
        depth = store.outbox_depth()
        firing = len(store.alerts(status=AlertStatus.FIRING))
        leases = store.leases()
    finally:
        store.close()
    configured = [s.name for s in config.sources]
    names = source_names(configured, saved)
    if args.json:
        print(json.dumps(status_json(sources=configured, saved=saved, outbox=depth,
                                     firing=firing, leases=leases), indent=2, allow_nan=False))
        return EXIT_OK
    from rich.text import Text

    now = time.time()
    table = _titled_table("what the daemon last did",
                          "source", "last tick", "by", "took", "runs", "result", "errors")
    for name in names:
        st = saved.get(name)
        if st is None:
            table.add_row(Text(printable(name)), "never", "", "", "", "", "")
            continue
        ago = format_duration(max(0.0, now - st["last_tick"])) + " ago"
        result = Text("ok", style="green") if st.get("ok") else Text("failed", style="red")
        first = printable(st["errors"][0]) if st.get("errors") else ""
        more = f" (+{st['error_count'] - 1} more)" if st.get("error_count", 0) > 1 else ""
        by = f"{st.get('by', 'run')} (pid {st['pid']})" if st.get("pid") else st.get("by", "")
        table.add_row(Text(printable(name)), ago, by, f"{st['duration']:.2f}s",
                      str(st["runs"]), result, Text(first + more))
    _console().print(table)
    _console().print(Text(f"{firing} alerts firing; {depth} notifications waiting in the"
                          " outbox"))
    for lease in leases:
        _console().print(Text(_lease_line(lease, now)))
    return EXIT_OK


def _lease_line(lease: Any, now: float) -> str:
    """Who acts on the store: ``writer lease: host-a:4242, epoch 3, for 24s more``."""
    if not lease.holder:
        return f"{lease.name} lease: nobody holds it"
    left = lease.expires_at - now
    if lease.expires_at == 0:
        when = "released"
    elif left > 0:
        when = f"for {format_duration(left)} more"
    else:
        when = f"ran out {format_duration(-left)} ago"
    return f"{lease.name} lease: {printable(lease.holder)}, epoch {lease.epoch}, {when}"


def cmd_page_user(args: argparse.Namespace) -> int:
    """``NAME:pbkdf2_sha256$…`` for ``http.users_file``: the password asked twice."""
    import getpass

    from runwatch.web.auth import hash_password

    if not args.name or ":" in args.name or any(c.isspace() for c in args.name):
        print("runwatch: a user name must be non-empty, without a colon or spaces",
              file=sys.stderr)
        return EXIT_CONFIG
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        try:
            password = getpass.getpass("password: ")
            again = getpass.getpass("again: ")
        except EOFError:  # no terminal, or ^D
            print("runwatch: no password given (--password-stdin reads one from a pipe)",
                  file=sys.stderr)
            return EXIT_FAILURE
        if again != password:
            print("runwatch: the passwords differ", file=sys.stderr)
            return EXIT_FAILURE
    if len(password) < 8:
        print("runwatch: a password needs at least 8 characters", file=sys.stderr)
        return EXIT_FAILURE
    print(f"{args.name}:{hash_password(password)}")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    tune_gc()
    config, rule_set = _load(args)
    runtime = build_runtime(config, rule_set, notify=not args.dry_run)
    store = open_store(config.store)
    heartbeat = None
    try:
        if not args.dry_run:
            # The writer lease, as a daemon's (WriterBusy while a replica holds it), renewed
            # while the tick runs.
            holder, ttl = writer_name("check"), config.ha.lease_ttl
            store.claim_writer(holder, ttl=ttl)
            heartbeat = Leadership(store, holder=holder, ttl=ttl, clock=time.time)
            heartbeat.start()
        now, started = time.time(), time.monotonic()
        cycle = run_cycle(runtime, store, now, dry_run=args.dry_run)
        firing = None
        if not args.dry_run:
            firing = len(store.alerts(status=AlertStatus.FIRING))
            _save_statuses(store, cycle, now, time.monotonic() - started)
    finally:
        if heartbeat is not None:
            heartbeat.stop()
        runtime.close()
        store.close()
    report, notified = cycle.tick, cycle.notifications
    if args.json:
        print(json.dumps(report_json(report) | {"notifications": notified}, indent=2,
                         allow_nan=False))
    else:
        print_report(report, firing=firing)
        if notified is not None:
            print_notifications(notified)
    return EXIT_OK


def _save_statuses(store: Any, cycle: Any, now: float, duration: float) -> None:
    """``runwatch status`` shows a check's ticks beside the daemon's."""
    from runwatch.service import source_status

    transitions: dict[str, int] = {}
    for t in cycle.tick.transitions:
        transitions[t.alert.run.source] = transitions.get(t.alert.run.source, 0) + 1
    for name, result in cycle.tick.by_source.items():
        store.save_status(name, source_status(
            started_at=now, duration=duration, ok=result.ok, runs=result.runs,
            errors=result.errors, transitions=transitions.get(name, 0), by="check",
            last_ok=now if result.ok else None), now)


def print_notifications(summary: dict[str, Any]) -> None:
    from rich.text import Text

    err = _console(stderr=True)
    if "skipped" in summary:
        err.print(Text(f"notifications skipped: {summary['skipped']}", style="yellow"))
        return
    for line in summary["errors"]:
        err.print(Text(f"warning: {printable(line)}", style="yellow"), soft_wrap=True)
    _console().print(Text(
        f"notifications: {summary['sent']} sent, {summary['queued']} queued, "
        f"{summary['retrying']} retrying, {summary['failed']} failed, "
        f"{summary['pending']} pending, {summary['muted']} alerts muted"))


def cmd_validate(args: argparse.Namespace) -> int:
    """Everything ``run`` checks at start-up (the config, its rule files, the store URL) and
    what would keep a receiver from working: all in one round, each ``file:line: ...``."""
    if args.config is None or args.rundir:
        config, rule_set = _load(args)  # the default config; or --rundir with --config
        checked = Checked(config=config, rule_set=rule_set, errors=())
    else:
        checked = check_all(args.config, receiver_checks=_receiver_checks())
    config, rule_set = checked.config, checked.rule_set
    if config is not None and rule_set is not None:
        from runwatch.notify.routing import rule_name_problems

        inhibit = () if config.inhibit_is_default else config.inhibit  # defaults: no noise
        for line in rule_name_problems(config.routes, inhibit, [r.name for r in rule_set.rules]):
            print(f"warning: {_where(config, line)}: {line}", file=sys.stderr)
    problems = list(checked.errors)
    if args.online and config is not None:
        problems += [line for source in build_sources(config)
                     for line in getattr(source, "check_online", list)()]
        for line in _receivers_online(config) if not problems else ():
            print(f"warning: {line}", file=sys.stderr)
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        return EXIT_CONFIG
    assert config is not None and rule_set is not None
    names = ", ".join(s.name for s in config.sources) or "none"
    receivers = ", ".join(r.name for r in config.receivers) or "none"
    print(f"ok: {len(rule_set.rules)} rules, sources: {names}, receivers: {receivers}, "
          f"store: {redact_url(config.store)}")
    return EXIT_OK


def _where(config: Config, problem: str) -> str:
    """``file:line`` of the config entry a problem names (``inhibit[0].source: …``)."""
    if config.path is None:
        return "config"
    import re

    from runwatch.config.document import read

    found = re.match(r"(\w+)\[(\d+)\]\.(\w+):", problem)
    doc, _ = read(config.path, str(config.path), what="config file")
    if found is None or doc is None:
        return str(config.path)
    line = doc.line_of((found.group(1), int(found.group(2)), found.group(3)))
    return f"{config.path}:{line}" if line else str(config.path)


def _receiver_checks() -> ReceiverCheck | None:
    """The offline checks of a receiver's settings (a Slack token's kind, a secret sent in
    clear), which the loader runs on every receiver that is valid."""
    try:
        from runwatch.notify.receivers import receiver_findings
    except ModuleNotFoundError as exc:
        if exc.name != "runwatch.notify.receivers":
            raise
        print("warning: receivers not checked: this build of runwatch has no notifiers",
              file=sys.stderr)
        return None
    return receiver_findings


def _receivers_online(config: Config) -> list[str]:
    """What each receiver's credentials cannot do that delivery relies on (asked online)."""
    from runwatch.notify.receivers import build_notifier

    lines = []
    for receiver in config.receivers:
        notifier = build_notifier(receiver)
        try:
            lines += getattr(notifier, "check_online", list)()
        finally:
            notifier.close()
    return lines


def cmd_notify_test(args: argparse.Namespace) -> int:
    from runwatch.config import load_config

    config = load_config(args.config)
    receiver = config.receiver(args.receiver)
    if receiver is None:
        known = ", ".join(r.name for r in config.receivers) or "none"
        print(f"runwatch: receiver {args.receiver}: not in {args.config} (receivers: {known})",
              file=sys.stderr)
        return EXIT_CONFIG
    from runwatch.notify.base import Message, Reason
    from runwatch.notify.receivers import build_notifier

    now = time.time()
    message = Message(id=f"test-{int(now)}", receiver=receiver.name, group_key="test",
                      group_labels={"rule": "runwatch-test"}, firing=(_test_alert(now),),
                      reason=Reason.TEST, created_at=now)
    notifier = build_notifier(receiver)
    try:
        delivery = notifier.send(message)
        warnings = getattr(notifier, "check_online", list)() if delivery.ok else []
    finally:
        notifier.close()
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    if not delivery.ok:
        retry = " (temporary: retrying may help)" if delivery.temporary else ""
        print(f"runwatch: receiver {receiver.name}: {delivery.detail or 'failed'}{retry}",
              file=sys.stderr)
        return EXIT_FAILURE
    print(f"ok: receiver {receiver.name}: {delivery.detail or 'delivered'}")
    return EXIT_OK


def _test_alert(now: float) -> Any:
    from runwatch.model import AlertState, RunRef, Severity

    run = RunRef(source="runwatch", id="notify-test", name="runwatch notify-test")
    return AlertState(fingerprint="0" * 16, rule="runwatch-test", run=run,
                      severity=Severity.INFO, status=AlertStatus.FIRING, active_since=now,
                      fired_at=now, summary="a test message from runwatch notify-test")


# --- silences -----------------------------------------------------------------------------


def _store_of(args: argparse.Namespace) -> Any:
    config, _ = _load(args)
    return open_store(config.store)


def cmd_silence_add(args: argparse.Namespace) -> int:
    from runwatch.duration import parse_duration
    from runwatch.store.base import Matcher

    try:
        matchers = [Matcher.parse(text) for text in args.match]
        duration = parse_duration(args.duration)
        if duration <= 0:
            raise ValueError(f"invalid duration {args.duration!r}: must be more than zero")
    except ValueError as exc:
        print(f"runwatch: silence: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    store = _store_of(args)
    try:
        now = time.time()
        silence = store.add_silence(matchers=matchers, ends_at=now + duration, now=now,
                                    created_by=args.author, comment=args.comment)
    except ValueError as exc:
        print(f"runwatch: silence: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    finally:
        store.close()
    print(f"{silence.id}: silenced {', '.join(map(str, silence.matchers))} for "
          f"{format_duration(duration)}")
    return EXIT_OK


def cmd_silence_list(args: argparse.Namespace) -> int:
    store = _store_of(args)
    try:
        now = time.time()
        silences = store.silences(now, include_expired=args.all)
    finally:
        store.close()
    if args.json:
        print(json.dumps([silence_json(s, now) for s in silences], indent=2))
        return EXIT_OK
    from rich.table import Table
    from rich.text import Text

    table = Table("id", "state", "matchers", "ends", "by", "comment", box=None)
    for s in silences:
        data = silence_json(s, now)
        left = s.ends_at - now
        ends = f"in {format_duration(left)}" if left > 0 else f"{format_duration(-left)} ago"
        table.add_row(s.id, data["state"], Text(printable(", ".join(data["matchers"]))), ends,
                      Text(printable(s.created_by)), Text(printable(s.comment)))
    _console().print(table if silences else Text("no silences"))
    return EXIT_OK


def cmd_silence_expire(args: argparse.Namespace) -> int:
    store = _store_of(args)
    try:
        found = store.expire_silence(args.id, time.time())
    finally:
        store.close()
    if not found:
        print(f"runwatch: silence {args.id}: no such silence", file=sys.stderr)
        return EXIT_FAILURE
    print(f"{args.id}: expired")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from runwatch.demo import DemoError, KeepDirError, console_for, run_demo

    try:
        run_demo(console_for(no_color=args.no_color), keep=args.keep)
    except DemoError as exc:
        print(f"runwatch demo: {exc}", file=sys.stderr)
        return EXIT_CONFIG if isinstance(exc, KeepDirError) else EXIT_FAILURE
    return EXIT_OK


def cmd_rules(args: argparse.Namespace) -> int:
    config, rule_set = _load(args)
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
    origin = "default" if config.inhibit_is_default else str(config.path or "config")
    inhibit = Table("inhibit: a firing …", "mutes …", "on the same", "origin", box=None)
    for entry in config.inhibit:
        inhibit.add_row(_selector_text(entry.source), _selector_text(entry.target),
                        ", ".join(entry.equal) or "(anything)", origin)
    _console().print(inhibit if config.inhibit else "inhibit: none")
    return EXIT_OK


def cmd_test_rules(args: argparse.Namespace) -> int:
    from runwatch.ruletests import run_file

    failed = broken = 0
    for name in args.files:
        try:
            result = run_file(Path(name))
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            broken += 1
            continue
        for failure in result.failures:
            print(failure)
        failed += len(result.failures)
        verdict = "ok" if not result.failures else f"{len(result.failures)} FAILED"
        print(f"{result.file}: {result.tests} tests, {verdict}")
    if broken:
        return EXIT_CONFIG
    return EXIT_FAILURE if failed else EXIT_OK


def cmd_backtest(args: argparse.Namespace) -> int:
    from rich.table import Table
    from rich.text import Text

    from runwatch.backtest import Options, backtest_run, replay_of, score, summarize
    from runwatch.cli_reports import _fail, _rules, progress_bar, read_labels
    from runwatch.config import load_config
    from runwatch.config.rules import load_rules
    from runwatch.duration import parse_duration
    from runwatch.reports import ReportError
    from runwatch.tick import wanted_keys

    try:
        interval, delay, tail = map(parse_duration, (args.interval, args.delay, args.tail))
    except ValueError as exc:
        return _fail(str(exc))
    if interval <= 0:
        return _fail(f"--interval {args.interval}: must be more than zero")
    # What narrows --project's runs, checked before any run is read.
    narrowing = [name for name, value in (("--state", args.state), ("--since", args.since),
                                          ("--limit", args.limit)) if value is not None]
    if narrowing and args.project is None:
        return _fail(f"{narrowing[0]} narrows the runs of --project ENTITY/PROJECT; give one")
    if args.limit is not None and args.limit < 1:
        return _fail(f"--limit {args.limit}: must be at least 1")
    try:
        args.since = parse_duration(args.since) if args.since is not None else None
    except ValueError as exc:
        return _fail(f"--since: {exc}")
    if args.rules:
        # `--rules a.yaml RUN...` takes the RUNs as rule files too: a directory, or a name
        # that is no YAML file, is a RUN.
        moved = [r for r in args.rules if os.path.isdir(r) or not r.endswith((".yaml", ".yml"))]
        args.rules = [r for r in args.rules if r not in moved]
        args.runs = [*args.runs, *moved]
    if args.rules:  # ConfigError: main prints it, a line per problem
        config = load_config(args.config) if args.config is not None else None
        rule_set = load_rules(args.rules, Path.cwd(), config.aliases if config else None)
    else:
        config, rule_set = _rules(args)
    labels = read_labels(args.label, args.labels)
    settings = Options(interval=interval, tail=tail) if config is None else Options(
        interval=interval, tail=tail, repeat_interval=config.repeat_interval,
        send_resolved=config.send_resolved, config=config)
    if not args.runs and args.project is None:
        return _fail("backtest: name a RUN or --project ENTITY/PROJECT")
    keys = wanted_keys(rule_set.rules, rule_set.aliases) | {"_timestamp"}
    try:
        snapshots = _backtest_runs(args, config, keys)
    except ReportError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot read: {exc.strerror or exc}", EXIT_FAILURE)
    results = []
    for snapshot in snapshots:
        with progress_bar(f"replaying {snapshot.ref.display_name}") as update:
            try:
                results.append(backtest_run(replay_of(snapshot, delay), rule_set.rules,
                                            rule_set.aliases, settings, progress=update))
            except ValueError as exc:  # too many ticks
                return _fail(str(exc))
    summary = summarize(results, rule_set.rules)
    try:
        scores = score(results, labels, rule_set.rules) if labels else []
    except ValueError as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps({"runs": [r.as_json() for r in results],
                          "rules": [s.as_json() for s in summary],
                          "scores": [s.as_json() for s in scores]}, indent=2))
        return EXIT_OK
    table = Table("run", "rule", "fired", "resolved", "notifications", box=None)
    for result in results:
        name = Text(printable(result.name))  # Text: a run's name is not rich markup
        if not result.episodes:
            table.add_row(name, "(nothing fired)", "", "", "0")
        for e in result.episodes:
            table.add_row(
                name, e.rule, f"+{format_duration(e.fired_at)} step {e.fired_step}",
                "" if e.resolved_at is None else
                Text(f"+{format_duration(e.resolved_at)} ({printable(e.resolution)})"),
                str(e.notifications))
    _console().print(table)
    rules = Table("rule", "runs fired", "alerts", "notifications", "per 100 run-hours",
                  box=None)
    for s in summary:
        rules.add_row(s.rule, f"{s.runs_fired}/{s.runs}", str(s.alerts), str(s.notifications),
                      f"{s.per_100_run_hours:.1f}")
    _console().print(rules)
    if scores:
        scored = Table("rule", "detected", "missed", "false alerts", "per 100 run-hours",
                       "median time to detect", box=None)
        for sc in scores:
            scored.add_row(sc.rule, f"{sc.detected}/{sc.bad_runs}", str(sc.missed),
                           str(sc.false_alerts), f"{sc.false_per_100_run_hours:.1f}",
                           "" if sc.median_time_to_detect is None
                           else format_duration(sc.median_time_to_detect))
        _console().print(scored)
    return EXIT_OK


def _backtest_runs(args: argparse.Namespace, config: Any, keys: frozenset[str]) -> list[Any]:
    """The runs a backtest replays, read whole, in the order named: run directories, W&B
    runs (each read once, in pages), then ``--project``'s. ReportError naming what
    cannot be found or read."""
    from runwatch.cli_reports import _access, progress_bar
    from runwatch.reports import ReportError, parse_run
    from runwatch.sources import wandb_reports
    from runwatch.sources.rundir_reports import RunNotFound, read_run
    from runwatch.sources.wandb_client import WandbError

    def pick(snapshot: Any) -> list[str]:
        return sorted(k for k in snapshot.keys | {"_timestamp"} if k in keys)

    def whole(client: Any, entity: str, project: str, nodes: list[Any], what: str) -> Any:
        with progress_bar(f"reading {what}") as update:
            return wandb_reports.read_whole(client, entity=entity, project=project,
                                            nodes=nodes, keys=pick, timeout=access.timeout,
                                            progress=update)

    access = _access(config)
    out = []
    try:
        for text in args.runs:
            if os.path.exists(text) or text.startswith(("/", ".", "~")):  # a run directory
                try:
                    snapshot, damage = read_run(text, keys)
                except RunNotFound as exc:
                    raise ReportError(str(exc)) from None
                for line in damage:
                    print(printable(line), file=sys.stderr)
                out.append(snapshot)
                continue
            spec = parse_run(text)
            where = f"run {spec.entity}/{spec.project}/{spec.run_id}"
            try:
                client = access.client(spec.base_url)
                node = wandb_reports.run_node(
                    client, entity=spec.entity, project=spec.project, run_id=spec.run_id,
                    source="wandb", app_url=access.app(spec.base_url), timeout=access.timeout)
                read = whole(client, spec.entity, spec.project, [node], text)
            except WandbError as exc:
                raise ReportError(f"{where}: {exc}") from None
            if node.snapshot.ref.path not in read:
                raise ReportError(f"{where}: disappeared from W&B while being read")
            out.append(read[node.snapshot.ref.path])
        if args.project is not None:
            entity, _, project = args.project.partition("/")
            if not entity or not project or "/" in project:
                raise ReportError(f"--project {args.project}: expected ENTITY/PROJECT")
            since = args.since  # seconds, parsed with the other options
            try:
                client = access.client()
                nodes = wandb_reports.list_runs(
                    client, entity=entity, project=project, source="wandb",
                    app_url=access.app(), timeout=access.timeout,
                    ended_since=time.time() - since if since is not None else 0.0)
                nodes = [n for n in nodes if args.state is None
                         or n.snapshot.state == args.state]
                nodes.sort(key=lambda n: -(n.snapshot.heartbeat or 0.0))
                nodes = nodes[:args.limit] if args.limit is not None else nodes
                read = whole(client, entity, project, nodes, args.project)
            except WandbError as exc:
                raise ReportError(f"project {args.project}: {exc}") from None
            out += [read[n.snapshot.ref.path] for n in nodes if n.snapshot.ref.path in read]
    finally:
        access.close()
    return out


def cmd_schema(args: argparse.Namespace) -> int:
    from runwatch.schema import SCHEMAS

    print(json.dumps(SCHEMAS[args.what](), indent=2))
    return EXIT_OK


def _selector_text(selector: Any) -> str:
    if isinstance(selector, dict):
        return ", ".join(f"{k}={'|'.join([v] if isinstance(v, str) else v)}"
                         for k, v in selector.items())
    return ", ".join(map(str, selector))


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
        "code_alert": lambda r: "run.alert from the training code, told once"
        + (f" (titles {', '.join(r.match.title)})" if r.match.title else ""),
    }[rule.kind](rule)
    return parts + (f" for {rule.hold}" if rule.hold else "")


def transition_json(t: Transition) -> dict[str, Any]:
    a = t.alert
    return {
        "rule": a.rule, "severity": str(a.severity), "status": status_word(a),
        "run": {"id": a.run.id, "name": a.run.name, "project": a.run.project,
                "entity": a.run.entity, "path": a.run.path},
        "metric": a.metric, "value": number(a.value), "step": a.step, "summary": a.summary,
        "resolution": a.resolution or None,
    }


def report_json(report: TickReport) -> dict[str, Any]:
    return {
        "transitions": [transition_json(t) for t in report.transitions],
        "runs_checked": report.runs_checked,
        "errors": list(report.errors),
        "warnings": list(report.warnings),
    }


def _titled_table(title: str, *columns: str) -> Any:
    from rich.table import Table

    return Table(*columns, title=title, title_justify="left")


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
        err.print(Text(f"warning: {printable(line)}", style="yellow"), soft_wrap=True)
    if report.transitions:
        table = Table("status", "severity", "rule", "run", "summary", "path", box=None)
        for t in report.transitions:
            a = t.alert
            # Run names and summaries are untrusted: Text() keeps rich markup out of them,
            # printable() terminal escapes and bidi overrides.
            table.add_row(Text(status_word(a)), Text(str(a.severity), _STYLE[a.severity]),
                          Text(a.rule), Text(printable(a.run.display_name)),
                          Text(printable(a.summary)), Text(printable(a.run.path)))
        console.print(table)
    total = "" if firing is None else f", {firing} alerts firing in all"
    console.print(Text(f"{report.runs_checked} runs checked, {len(report.transitions)} "
                       f"transitions, {len(report.errors)} errors{total}"))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
