"""The command line: exit codes, one-line errors, JSON shape. Runs `main()` in-process."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from fixtures.fakeslack import FakeSlack
from runwatch.cli import main
from runwatch.config import ConfigError
from runwatch.model import AlertState, AlertStatus, RunRef, Severity, fingerprint
from runwatch.store import open_store

TESTDATA = Path(__file__).parent.parent / "testdata"


def write_config(tmp_path: Path, rules_yaml: str | None = None, extra: str = "") -> Path:
    runs = tmp_path / "runs"
    runs.mkdir(exist_ok=True)
    lines = [
        "sources:",
        "  - type: rundir",
        f"    path: {runs}",
        "store: sqlite:///state.db",
    ]
    if rules_yaml is not None:
        (tmp_path / "rules.yaml").write_text(rules_yaml)
        lines.append("rules: [rules.yaml]")
    path = tmp_path / "runwatch.yaml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def test_validate_ok(tmp_path, capsys):
    config = write_config(tmp_path)
    assert main(["validate", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: 9 rules, sources: rundir, receivers: none, store: sqlite:////")


def test_invalid_rules_exit_2_with_one_line_per_error(tmp_path, capsys):
    shutil.copy(TESTDATA / "rules" / "three-errors.yaml", tmp_path / "bad.yaml")
    config = write_config(tmp_path, extra="rules: [bad.yaml]\n")
    assert main(["check", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3
    assert all(line.split(":")[0].endswith("bad.yaml") for line in err)
    assert "Traceback" not in "".join(err)


def test_broken_yaml_config_exit_2(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("sources:\n  - type: rundir\n    path: [unclosed\n")
    assert main(["validate", "--config", str(path)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"{path}:") and "invalid YAML" in line


def test_missing_config_file_exit_2(tmp_path, capsys):
    assert main(["validate", "--config", str(tmp_path / "nope.yaml")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "nope.yaml" in line


def test_rundir_and_config_are_exclusive(tmp_path, capsys):
    config = write_config(tmp_path)
    assert main(["check", "--config", str(config), "--rundir", str(tmp_path)]) == 2
    assert "--rundir cannot be combined with --config" in capsys.readouterr().err


def test_rules_lists_names_kinds_and_origins(tmp_path, capsys):
    config = write_config(tmp_path, "rules:\n  - name: nan\n    kind: nonfinite\n"
                                    "    metric: loss\n    severity: critical\n")
    assert main(["rules", "--config", str(config), "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry == {"name": "nan", "kind": "nonfinite", "severity": "critical",
                     "origin": f"{tmp_path / 'rules.yaml'}:2"}


def test_rules_table_describes_the_default_rules(tmp_path, capsys):
    assert main(["rules", "--rundir", str(tmp_path), "--state-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "grad-norm-exploding" in out and "grad_norm > 10 (any)" in out
    assert "progress-stalled" in out


def test_check_on_an_empty_directory_reports_zero_runs(tmp_path, capsys):
    args = ["check", "--rundir", str(tmp_path), "--state-dir", str(tmp_path / "state"),
            "--json"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out) == {
        "transitions": [], "runs_checked": 0, "errors": [], "warnings": [],
        "notifications": {"skipped": "no receivers configured"}}
    assert (tmp_path / "state" / "state.db").exists()


def test_an_unopenable_store_is_one_line_and_exit_1(tmp_path, capsys):
    (tmp_path / "state.db").write_text("this is not a database")
    config = write_config(tmp_path)
    assert main(["check", "--config", str(config)]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("runwatch: store ") and "state.db" in line


@pytest.mark.parametrize("command", ["check", "validate", "rules", "notify-test",
                                     "silence add", "silence list", "silence expire"])
def test_help_works(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command.split(), "--help"])
    assert exit_.value.code == 0
    assert "--config" in capsys.readouterr().out


def test_printable_defuses_terminal_escapes_and_bidi_overrides():
    from runwatch.cli import printable

    assert printable("run\x1b[31m-red\u202e\nx") == "run\ufffd[31m-red\ufffd\ufffdx"
    assert printable("llama-7b · ünïcode") == "llama-7b · ünïcode"




# --- notifications ------------------------------------------------------------------------


@pytest.fixture
def slack():
    fake = FakeSlack()
    yield fake
    fake.close()


def slack_config(tmp_path: Path, slack: FakeSlack, extra: str = "") -> Path:
    return write_config(tmp_path, extra=(
        "receivers:\n"
        "  - name: team-slack\n"
        f"    slack: {{webhook_url: '{slack.webhook_url}'}}\n" + extra))


def firing_alert(run_id: str = "r1") -> AlertState:
    ref = RunRef(source="rundir", id=run_id, name="llama", project="p", entity="e")
    return AlertState(fingerprint=fingerprint("run-crashed", ref), rule="run-crashed", run=ref,
                      severity=Severity.CRITICAL, status=AlertStatus.FIRING, fired_at=1.0,
                      summary="run crashed at step 7")


def test_check_delivers_what_the_tick_decided(tmp_path, capsys, slack):
    config = slack_config(tmp_path, slack)
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    store.commit_tick(source="rundir", alerts=[firing_alert()], cursors={}, now=1.0)
    store.close()
    assert main(["check", "--config", str(config), "--json"]) == 0
    notified = json.loads(capsys.readouterr().out)["notifications"]
    assert notified == {"queued": 1, "sent": 1, "retrying": 0, "failed": 0, "muted": 0,
                        "pending": 0, "errors": [], "receivers": {"team-slack": {"sent": 1}}}
    (call,) = slack.calls_to("webhook")
    assert "llama" in json.dumps(call.params)
    assert main(["check", "--config", str(config)]) == 0  # nothing new: nothing sent
    assert "notifications: 0 sent, 0 queued" in capsys.readouterr().out
    assert len(slack.calls_to("webhook")) == 1


def test_check_keeps_an_undeliverable_message_and_says_so(tmp_path, capsys, slack):
    config = slack_config(tmp_path, slack)
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    store.commit_tick(source="rundir", alerts=[firing_alert()], cursors={}, now=1.0)
    store.close()
    slack.fail("webhook", status=404, error="no_service", times=5)
    assert main(["check", "--config", str(config)]) == 0
    captured = capsys.readouterr()
    assert "notifications: 0 sent, 1 queued, 0 retrying, 1 failed" in captured.out
    (line,) = [x for x in captured.err.splitlines() if x.startswith("warning:")]
    assert "receiver team-slack: message" in line and "Traceback" not in captured.err


def test_dry_run_sends_nothing(tmp_path, capsys, slack):
    config = slack_config(tmp_path, slack)
    assert main(["check", "--config", str(config), "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["notifications"] is None
    assert slack.calls == []


def test_notify_test_prints_the_answer(tmp_path, capsys, slack):
    config = slack_config(tmp_path, slack)
    assert main(["notify-test", "--config", str(config), "--receiver", "team-slack"]) == 0
    assert capsys.readouterr().out.startswith("ok: receiver team-slack")
    (call,) = slack.calls_to("webhook")
    assert "notify-test" in json.dumps(call.params)


def test_notify_test_failure_is_one_line_and_exit_1(tmp_path, capsys, slack):
    config = slack_config(tmp_path, slack)
    slack.fail("webhook", status=403, error="invalid_token", times=5)
    assert main(["notify-test", "--config", str(config), "--receiver", "team-slack"]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("runwatch: receiver team-slack: ")


@pytest.mark.parametrize("scopes", ["all", "no history"])
def test_notify_test_and_validate_online_say_when_posts_cannot_be_looked_up(
        tmp_path, capsys, slack, scopes):
    (tmp_path / "runs").mkdir(exist_ok=True)
    config = tmp_path / "bot.yaml"
    config.write_text(
        "sources: [{type: rundir, path: runs}]\nstore: sqlite:///state.db\nreceivers:\n"
        "  - {name: team-slack, slack: {token: xoxb-1-2-bot, channel: '#alerts',"
        f" api_url: '{slack.api_url}'}}}}\n")
    if scopes == "no history":
        slack.scopes -= {"channels:history", "groups:history"}
    assert main(["notify-test", "--config", str(config), "--receiver", "team-slack"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("ok: receiver team-slack: ") and " posted " in out
    assert main(["validate", "--online", "--config", str(config)]) == 0
    err += capsys.readouterr().err
    warned = [line for line in err.splitlines() if "channels:history" in line]
    if scopes == "all":
        assert warned == []
    else:
        assert len(warned) == 2 and all(w.startswith("warning: slack receiver 'team-slack':"
                                                     " the token lacks") for w in warned)


def test_notify_test_unknown_receiver(tmp_path, capsys, slack):
    config = slack_config(tmp_path, slack)
    assert main(["notify-test", "--config", str(config), "--receiver", "pager"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == f"runwatch: receiver pager: not in {config} (receivers: team-slack)"


def test_validate_reports_receiver_problems_and_rule_typos(tmp_path, capsys):
    config = write_config(tmp_path, extra=(
        "receivers:\n"
        "  - name: team-slack\n"
        "    slack: {token: xoxp-user-token, channel: '#alerts'}\n"
        "inhibit:\n"
        "  - source: {rule: run-crashd}\n"
        "    target: {rule: run-stalled}\n"
        "    equal: [run]\n"))
    assert main(["validate", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"warning: {config}:9: inhibit[0].source: rule=run-crashd matches none of the loaded"
        " rules",
        f"{config}:7: receiver 'team-slack': slack token is a user token (xoxp-); runwatch"
        " needs a bot token (xoxb-)",
    ]


def test_silences_add_list_expire(tmp_path, capsys):
    config = write_config(tmp_path)
    assert main(["silence", "add", "--config", str(config), "--match", "run=e/p/r1",
                 "--match", "rule=~run-.*", "--duration", "2h", "--comment", "maintenance",
                 "--author", "ana"]) == 0
    out = capsys.readouterr().out
    silence_id = out.split(":")[0]
    assert out == f"{silence_id}: silenced run=e/p/r1, rule=~run-.* for 2h\n"
    assert main(["silence", "list", "--config", str(config), "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert (listed["id"], listed["matchers"], listed["state"], listed["created_by"],
            listed["comment"]) == (silence_id, ["run=e/p/r1", "rule=~run-.*"], "active", "ana",
                                   "maintenance")
    assert listed["ends_at"] - listed["starts_at"] == 7200
    assert main(["silence", "list", "--config", str(config)]) == 0
    assert silence_id in capsys.readouterr().out
    assert main(["silence", "expire", "--config", str(config), silence_id]) == 0
    assert capsys.readouterr().out == f"{silence_id}: expired\n"
    assert main(["silence", "list", "--config", str(config), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["silence", "list", "--config", str(config), "--json", "--all"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["state"] == "expired"


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--match", "run~x", "--duration", "1h"], 2, "runwatch: silence: not a matcher: 'run~x'"),
    (["--match", "run=x", "--duration", "soon"], 2, "runwatch: silence: invalid duration"),
    (["--match", "run=x", "--duration", "0s"], 2, "runwatch: silence: invalid duration"),
    (["--match", "run!=x", "--duration", "1h"], 2,
     "runwatch: silence: a silence needs at least one matcher that does not match"),
])
def test_silence_add_errors_are_one_line(tmp_path, capsys, args, code, message):
    config = write_config(tmp_path)
    assert main(["silence", "add", "--config", str(config), "--comment", "c", *args]) == code
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(message)


def test_expiring_an_unknown_silence(tmp_path, capsys):
    config = write_config(tmp_path)
    assert main(["silence", "expire", "--config", str(config), "nope"]) == 1
    assert capsys.readouterr().err == "runwatch: silence nope: no such silence\n"


def test_alerts_lists_what_the_store_holds(tmp_path, capsys):
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    quiet = AlertState(fingerprint="f-quiet", rule="grad-norm-spiky",
                       run=RunRef(source="rundir", id="r2"), severity=Severity.WARNING,
                       status=AlertStatus.RESOLVED, resolved_at=2.0)
    store.commit_tick(source="rundir", alerts=[firing_alert(), quiet], cursors={}, now=1.0)
    store.close()
    args = ["alerts", "--state-dir", str(tmp_path), "--json"]
    assert main(args) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(a["rule"], a["status"], a["run"]["path"]) for a in listed["alerts"]] == [
        ("run-crashed", "firing", "e/p/r1")]
    assert listed["undelivered"] == []
    assert main([*args, "--state", "resolved"]) == 0
    assert [a["rule"] for a in json.loads(capsys.readouterr().out)["alerts"]] == [
        "grad-norm-spiky"]
    assert main(["alerts", "--state-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "run-crashed" in out and "run crashed at step 7" in out


def test_status_shows_what_the_daemon_last_did(tmp_path, capsys):
    assert main(["status", "--state-dir", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sources"] == {"rundir": None}
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    store.save_status("rundir", {"last_tick": 100.0, "duration": 0.25, "ok": False,
                                 "runs": 3, "errors": ["run x: bad CRC"], "error_count": 2},
                      100.0)
    store.close()
    assert main(["status", "--state-dir", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sources"]["rundir"]["runs"] == 3
    assert main(["status", "--state-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "failed" in out and "run x: bad CRC (+1 more)" in out


def test_status_shows_the_ticks_of_check_too(tmp_path, capsys):
    config = write_config(tmp_path)
    assert main(["check", "--config", str(config), "--dry-run"]) == 0
    capsys.readouterr()
    assert main(["status", "--config", str(config), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sources"] == {"rundir": None}  # dry: no
    assert main(["check", "--config", str(config)]) == 0
    capsys.readouterr()
    assert main(["status", "--config", str(config), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)["sources"]["rundir"]
    assert (st["by"], st["ok"], st["runs"], st["pid"]) == ("check", True, 0, os.getpid())
    assert main(["status", "--config", str(config)]) == 0
    assert f"check (pid {os.getpid()})" in capsys.readouterr().out


def test_rules_lists_the_inhibition_too(tmp_path, capsys):
    config = write_config(tmp_path, extra=(
        "inhibit:\n"
        "  - source: {rule: run-crashed}\n"
        "    target: {rule: [run-stalled, run-slow]}\n"
        "    equal: [run]\n"))
    assert main(["rules", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    [row] = [line.split() for line in out.splitlines() if "rule=run-crashed" in line]
    assert row == ["rule=run-crashed", "rule=run-stalled|run-slow", "run", str(config)]
    assert main(["rules", "--rundir", str(tmp_path)]) == 0  # the shipped inhibition
    rows = [line.split() for line in capsys.readouterr().out.splitlines()
            if line.strip().endswith(" default")]
    assert rows == [["rule=grad-norm-exploding", "rule=grad-norm-spiky", "run", "default"],
                    ["rule=run-stalled", "rule=run-slow", "run", "default"],
                    ["rule=run-crashed", "rule=run-stalled|run-slow|progress-stalled", "run",
                     "default"]]


# --- validate says what run and check will say, all at once -------------------------------

BAD_RULES = "rules:\n  - {name: hot, kind: threshold, metric: loss, op: '>', value: ten,\n" \
            "     severity: critical}\n"

# config after its 3-line `sources:` → every error, each after "{config}:" (the rule file's
# after "{rules}:"): what `run` and `check` refuse at start, and `validate` in one round.
REFUSED_AT_START = {
    "store option that is no number": (
        "store: sqlite:///state.db?busy_timeout=x\n",
        ["{config}:4: store: busy_timeout must be a number of seconds, 0 to 86400"]),
    "store option unknown": (
        "store: sqlite:///state.db?journal=off\n",
        ["{config}:4: store: unknown option 'journal' (sqlite takes busy_timeout)"]),
    "store of a kind not supported": (
        "store: mysql://runwatch@db/runwatch\n",
        ["{config}:4: store: unknown store scheme 'mysql' (expected sqlite:///path.db,"
         " postgresql://host/database or memory://)"]),
    "memory store with a path": (
        "store: memory://somewhere\n", ["{config}:4: store: memory:// takes no path"]),
    "digest schedule the scheduler refuses": (
        "store: sqlite:///state.db\n"
        "receivers: [{name: hook, webhook: {url: 'https://example.com/h'}}]\n"
        "digest: {schedule: '0 5-1 * * *', receivers: [hook]}\n",
        ["{config}:6: digest.schedule: invalid cron schedule '0 5-1 * * *': The minimum"
         " value in a range must not be higher than the maximum"]),
    "every kind of error in one file": (
        "    interval: soon\n"
        "store: sqlite:///state.db?busy_timeout=-1\n"
        "rules: [bad-rules.yaml]\n"
        "receivers:\n"
        "  - name: mail\n"
        "    email: {smtp: 'smtp.example.com:587', starttls: true, tls: true,\n"
        "            password: pw, from: a@example.com, to: nobody}\n"
        "routes: [{receivers: [pager]}]\n",
        ["{config}:4: sources[0].interval: invalid duration 'soon': expected a number with a"
         " unit like 30s, 10m, 2h, 1d",
         "{config}:5: store: busy_timeout must be a number of seconds, 0 to 86400",
         "{config}:9: receivers[0].email.tls: use tls or starttls, not both",
         "{config}:10: receivers[0].email.password: a password needs a username",
         "{config}:10: receivers[0].email.to: invalid email address 'nobody'",
         '{config}:11: routes[0]: undefined receiver "pager" used in route',
         "{rules}:2: rule 'hot': value: expected a number, got 'ten'"]),
}


def bad_config(tmp_path: Path, text: str) -> Path:
    (tmp_path / "runs").mkdir(exist_ok=True)
    (tmp_path / "bad-rules.yaml").write_text(BAD_RULES)
    path = tmp_path / "runwatch.yaml"
    path.write_text("sources:\n  - type: rundir\n    path: runs\n" + text)
    return path


@pytest.mark.parametrize("case", sorted(REFUSED_AT_START))
def test_validate_refuses_what_run_and_check_refuse_all_at_once(case, tmp_path, capsys):
    from runwatch.daemon import Daemon

    text, lines = REFUSED_AT_START[case]
    config = bad_config(tmp_path, text)
    expected = [line.format(config=config, rules=tmp_path / "bad-rules.yaml")
                for line in lines]
    assert main(["validate", "--config", str(config)]) == 2
    assert capsys.readouterr() == ("", "\n".join(expected) + "\n")
    assert main(["check", "--dry-run", "--config", str(config)]) == 2
    assert capsys.readouterr() == ("", "\n".join(expected) + "\n")
    with pytest.raises(ConfigError) as caught:  # what `runwatch run` starts with
        Daemon(config)
    assert caught.value.errors == expected
    assert not (tmp_path / "state.db").exists()


def test_validate_creates_no_store(tmp_path, capsys):
    config = write_config(tmp_path, extra="state_dir: state\n").with_name("runwatch.yaml")
    config.write_text(config.read_text().replace("store: sqlite:///state.db",
                                                 "store: sqlite:///db/state.db"))
    assert main(["validate", "--config", str(config)]) == 0
    assert "store: sqlite:///" in capsys.readouterr().out
    assert not (tmp_path / "db").exists()


def test_receiver_checks_come_in_the_same_round_as_every_other_error(tmp_path, capsys):
    """`validate` also refuses receiver settings that would fail or leak a secret, which
    `check` lets through; each at its line, with everything else."""
    config = bad_config(tmp_path, (
        "    depth: deep\n"
        "rules: [bad-rules.yaml]\n"
        "receivers:\n"
        "  - name: team-slack\n"
        "    slack: {token: xoxp-user-token, channel: '#alerts'}\n"
        "  - name: hook\n"
        "    webhook: {url: 'http://hooks.example.com/x', bearer_token: t,\n"
        "              hmac_secret: short}\n"))
    rules = tmp_path / "bad-rules.yaml"
    loaded = [f"{config}:4: sources[0].depth: expected an integer, got 'deep'",
              f"{rules}:2: rule 'hot': value: expected a number, got 'ten'"]
    assert main(["validate", "--config", str(config)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        loaded[0],
        f"{config}:8: receiver 'team-slack': slack token is a user token (xoxp-); runwatch"
        " needs a bot token (xoxb-)",
        f"{config}:10: receiver 'hook': webhook sends its bearer token in clear over http://",
        f"{config}:11: receiver 'hook': webhook hmac_secret is shorter than 16 characters",
        loaded[1],
    ]
    assert main(["check", "--dry-run", "--config", str(config)]) == 2
    assert capsys.readouterr().err.splitlines() == loaded


def test_a_receiver_with_an_unset_variable_is_not_also_checked(tmp_path, capsys):
    config = bad_config(tmp_path, "receivers:\n  - name: team-slack\n"
                                  "    slack: {token: '${RUNWATCH_TEST_UNSET}', channel: '#a'}\n")
    assert main(["validate", "--config", str(config)]) == 2
    assert capsys.readouterr().err == (
        f"{config}:6: receivers[0].slack.token: environment variable RUNWATCH_TEST_UNSET is"
        " not set\n")  # and not: "does not look like a bot token"


@pytest.mark.parametrize(("email", "refused"), [
    ("smtp: 'smtp.example.com:25', username: u, password: pw", True),
    ("smtp: 'smtp.example.com:25', username: u, password_file: pw.txt", True),
    ("smtp: 'smtp.example.com:25', username: u, password: pw, insecure: true", False),
    ("smtp: 'localhost:25', username: u, password: pw", False),
    ("smtp: 'smtp.example.com:587', starttls: true, username: u, password: pw", False),
    ("smtp: 'smtp.example.com:25'", False),  # no password to leak
])
def test_an_smtp_password_in_clear_needs_insecure(email, refused, tmp_path, capsys):
    (tmp_path / "pw.txt").write_text("pw\n")
    config = bad_config(tmp_path, "store: sqlite:///state.db\nreceivers:\n  - name: mail\n"
                                  f"    email: {{{email},\n"
                                  "            from: a@example.com, to: b@example.com}\n")
    assert main(["validate", "--config", str(config)]) == (2 if refused else 0)
    err = capsys.readouterr().err
    assert err == (f"{config}:7: receiver 'mail': email would send the password unencrypted:"
                   " set starttls or tls\n" if refused else "")
