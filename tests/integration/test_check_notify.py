"""`runwatch check` delivering end to end: real SDK run directories, the real CLI, SQLite,
and every kind of receiver on a real server — the fake Slack Web API (bot token through
`api_url`, charts), a Slack incoming webhook, aiosmtpd over STARTTLS with a private CA
(`ca_file`) and login, and a webhook receiver checking an HMAC signature. Time is frozen
at chosen moments; each test asserts what the servers received.

The hostile run is written by the real wandb SDK in a subprocess (as runmaker does) and
cached under .fixture-cache/: its name, tags and a metric key carry Slack mentions,
mrkdwn, a header injection and a format-string probe.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from freezegun import freeze_time

from fixtures import logwriter as lw
from fixtures import runmaker
from runwatch.cli import main
from runwatch.notify.charts import PNG_SIGNATURE
from runwatch.sources.rundir import RundirSource
from runwatch.store import open_store

pytestmark = [
    pytest.mark.sdk,
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning"),
]

HOSTILE_NAME = "<!channel> *bold* \r\nBcc: evil@x {value.__class__}"
HOSTILE_TAGS = ["<!channel>", "*bold*", "\r\nBcc: evil@x", "{value.__class__}"]
HOSTILE_KEY = "acc<!channel>*bold*\r\nBcc: evil@x{value.__class__}"
HMAC_SECRET = "e2e-hmac-secret-0123456789abcdef"
BOT_TOKEN = "xoxb-e2e-0000-secret"
HOUR = 3600.0

# What runs in the SDK subprocess: a live run (SIGKILLed, so never ended) whose last rows
# explode, under hostile names. Console lines push the rows out of wandb-core's memory block.
HOSTILE_SCRIPT = f"""
import os, signal, time
from pathlib import Path
import wandb
run = wandb.init(project="runwatch-fixtures", name={HOSTILE_NAME!r}, group="hostile",
                 tags={HOSTILE_TAGS!r}, config={{"lr": 0.001}},
                 settings=wandb.Settings(x_stats_sampling_interval=15.0))
Path(os.environ["RUNMAKER_OUT"]).write_text(str(Path(run.dir).parent))
for i in range(40):
    run.log({{"train/loss": 1.0 / (i + 1),
              "train/grad_norm": 1.0 if i < 35 else 2.0 ** (i - 30),
              {HOSTILE_KEY!r}: 0.5 if i < 35 else 7.0}})
log = Path(run.dir).parent / f"run-{{run.id}}.wandb"
deadline, i = time.monotonic() + 20, 0
while log.stat().st_size < 3 * 32 * 1024 and time.monotonic() < deadline:
    print(f"waiting for data loader... retry {{i}} " + "." * 60, flush=True)
    i += 1
    if i % 100 == 0:
        time.sleep(0.05)
os.kill(os.getpid(), signal.SIGKILL)
"""

RULES = f"""\
rules:
  - name: grad-norm-exploding
    kind: threshold
    metric: grad_norm
    op: ">"
    value: 10
    severity: critical
    summary: "grad norm {{value:.3g}} > {{threshold:g}} at step {{step}}"
  - name: grad-norm-spiky
    kind: threshold
    metric: grad_norm
    op: ">"
    value: 5
    severity: warning
    summary: "grad norm {{value:.3g}} > {{threshold:g}}"
  - name: hostile-metric
    kind: threshold
    metric: {json.dumps(HOSTILE_KEY)}
    op: ">"
    value: 5
    severity: critical
    summary: "{{run}} logged {{metric}} = {{value:g}}"
  - name: run-crashed
    kind: state
    states: [crashed, failed]
    severity: critical
    summary: "run {{state}} at step {{step}}"
  - name: run-stalled
    kind: heartbeat
    older_than: 30m
    severity: critical
    summary: "no heartbeat for {{age}}"
"""


@pytest.fixture(scope="session")
def hostile_run() -> Path:
    """The hostile run's directory, written once per script and wandb version."""
    import wandb

    digest = hashlib.sha256((HOSTILE_SCRIPT + wandb.__version__).encode()).hexdigest()[:12]
    target = runmaker.DEFAULT_CACHE / f"hostile-{digest}"
    marker = target / "run.path"
    if not marker.exists():
        scratch = runmaker.DEFAULT_CACHE / f"hostile-{digest}.tmp-{os.getpid()}"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        env = runmaker.sdk_env(scratch) | {"RUNMAKER_OUT": str(scratch / "run.path")}
        done = subprocess.run([sys.executable, "-c", HOSTILE_SCRIPT], env=env, cwd=scratch,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == -9, done.stderr[-2000:]
        run = Path((scratch / "run.path").read_text())
        (scratch / "run.path").write_text(str(run.relative_to(scratch)))
        try:
            scratch.rename(target)
        except OSError:  # another pytest worker was quicker: use its copy
            shutil.rmtree(scratch, ignore_errors=True)
    return target / marker.read_text()


def at(seconds: float):
    # real_asyncio: aiosmtpd's event loop (another thread) keeps its own clock.
    return freeze_time(datetime.fromtimestamp(seconds, UTC), real_asyncio=True)


def check(capsys, config: Path, when: float) -> dict:
    with at(when):
        assert main(["check", "--config", str(config), "--json"]) == 0
    out = capsys.readouterr().out
    return json.loads(out)


def newest_record(run_dir: Path) -> float:
    poll = RundirSource("probe", [run_dir]).poll({}, frozenset(), 0.0)
    return max(s.heartbeat for s in poll.snapshots if s.heartbeat is not None)


def copy_run(run_dir: Path, root: Path, name: str) -> Path:
    target = root / name / "wandb" / run_dir.name
    shutil.copytree(run_dir, target, symlinks=True)
    return target


def cut_to_whole_records(run_dir: Path) -> Path:
    """A SIGKILLed writer leaves half a record at the end of its log; cut it off, so that
    records appended later are framed as a live writer's would be. Returns the log."""
    log = next(run_dir.glob("run-*.wandb"))
    [cursor] = RundirSource("probe", [run_dir]).poll({}, frozenset(), 0.0).cursors.values()
    os.truncate(log, json.loads(cursor)["offset"])
    return log


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def email_receiver(port: int, cert: Path, *, name: str = "oncall-email",
                   charts: bool = True) -> str:
    return (f"  - name: {name}\n"
            f"    email: {{smtp: '127.0.0.1:{port}', starttls: true, ca_file: '{cert}',"
            " username: alice, password: secret, from: runwatch@example.com,"
            f" to: [oncall@example.com], charts: {str(charts).lower()}}}\n")


CRASH_RULE = RULES[:RULES.index("  - name: grad-norm-exploding")] + \
    RULES[RULES.index("  - name: run-crashed"):RULES.index("  - name: run-stalled")]


def write_config(tmp_path: Path, receivers: str, routes: str = "", extra: str = "", *,
                 rules: str = RULES) -> Path:
    (tmp_path / "rules.yaml").write_text(rules)
    path = tmp_path / "runwatch.yaml"
    path.write_text("sources: [{type: rundir, path: runs}]\nstore: sqlite:///state.db\n"
                    f"rules: [rules.yaml]\nreceivers:\n{receivers}{routes}{extra}")
    return path


# --- checks on what arrived -------------------------------------------------------------


def mrkdwn_texts(call) -> list[str]:
    """Every text Slack would parse as mrkdwn in a post: the fallback and mrkdwn objects."""
    found = [call.text or ""]

    def walk(node):
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn":
                found.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(call.blocks)
    return found


def assert_inert_slack(call) -> None:
    everything = json.dumps(call.blocks, ensure_ascii=False) + (call.text or "")
    assert "<class" not in everything  # {value.__class__} was data, never a format field
    assert "\r" not in everything
    for text in mrkdwn_texts(call):
        assert "<!channel>" not in text  # escaped: &lt;!channel&gt;, no mention
        assert "*bold*" not in text  # fenced with zero-width spaces: shown, not bold
        assert "\nBcc" not in text


def signature_ok(request) -> bool:
    timestamp = request.headers["x-runwatch-timestamp"]
    mac = hmac.new(HMAC_SECRET.encode(), timestamp.encode() + b"." + request.body,
                   hashlib.sha256).hexdigest()
    return hmac.compare_digest(request.headers["x-runwatch-signature"], f"sha256={mac}")


def assert_clean_email(received) -> None:
    assert received.rcpt_tos == ("oncall@example.com",)
    email = received.message
    assert email["Bcc"] is None
    raw_headers = received.data.split(b"\r\n\r\n", 1)[0]
    assert b"\nBcc" not in raw_headers and b"\rBcc" not in raw_headers
    html = email.get_body(("html",)).get_content()
    assert "<!channel>" not in html and "<class" not in html
    text = email.get_body(("plain",)).get_content()
    assert "<class" not in text


# --- the whole story ----------------------------------------------------------------------


@pytest.mark.parametrize("mail_server", ["starttls"], indirect=True)
def test_check_delivers_repeats_and_resolves_through_every_receiver(
        wandb_runs, hostile_run, fake_slack, webhook_server, mail_server, mail_cert,
        tmp_path, capsys):
    runs = tmp_path / "runs"
    hostile = copy_run(hostile_run, runs, "hostile")
    log = cut_to_whole_records(hostile)
    copy_run(wandb_runs.runs["crashed"], runs, "crashed")
    receivers = (
        f"  - {{name: team-slack, slack: {{token: {BOT_TOKEN}, channel: '#training-alerts',"
        f" charts: true, api_url: '{fake_slack.api_url}'}}}}\n"
        f"  - {{name: chatter, slack: {{webhook_url: '{fake_slack.webhook_url}'}}}}\n"
        + email_receiver(mail_server.port, mail_cert[0])
        + f"  - {{name: ops-hook, webhook: {{url: '{webhook_server.url}',"
          f" hmac_secret: {HMAC_SECRET}}}}}\n")
    routes = ("routes:\n"
              "  - match: {severity: critical}\n"
              "    receivers: [team-slack, oncall-email, ops-hook]\n"
              "    group_by: [run]\n"
              "    repeat_interval: 1h\n"
              "  - receivers: [chatter]\n")
    # The crashed fixture run has ended, so it can never also be stalled; the inhibit rule
    # matches on the project the two runs share so that the mute is visible here.
    extra = ("repeat_interval: 4h\n"
             "inhibit:\n"
             "  - source: {rule: run-crashed}\n"
             "    target: {rule: run-stalled*}\n"
             "    equal: [project]\n")
    config = write_config(tmp_path, receivers, routes, extra)
    t1 = newest_record(hostile) + 60

    # --- first check: every receiver hears each group once ---------------------------
    first = check(capsys, config, t1)
    fired = {(t["rule"], t["status"]) for t in first["transitions"]}
    assert fired >= {("grad-norm-exploding", "firing"), ("hostile-metric", "firing"),
                     ("grad-norm-spiky", "firing"), ("run-crashed", "firing")}
    sent = first["notifications"]
    # team-slack, oncall-email, ops-hook: one group per run (2 each); chatter: the warning.
    assert (sent["queued"], sent["sent"], sent["pending"], sent["errors"]) == (7, 7, 0, [])

    posts = fake_slack.calls_to("chat.postMessage")
    assert len(posts) == 2 and all(p.thread_ts is None for p in posts)
    assert all(p.headers["authorization"] == f"Bearer {BOT_TOKEN}" for p in posts)
    by_run = {("hostile" if "hostile-metric" in json.dumps(p.blocks) else "crashed"): p
              for p in posts}
    assert set(by_run) == {"hostile", "crashed"}  # group_by [run]: one post per run
    for post in posts:
        assert_inert_slack(post)
    hostile_post = by_run["hostile"]
    assert "&lt;!channel&gt;" in json.dumps(hostile_post.blocks, ensure_ascii=False)
    # charts: true — two PNGs (grad norm, the hostile key) in the hostile run's thread.
    uploads = list(fake_slack.uploads.values())
    assert len(uploads) == 2
    assert all(u["data"].startswith(PNG_SIGNATURE) for u in uploads)
    assert {u["thread_ts"] for u in uploads} == {hostile_post.ts}
    [hooked] = fake_slack.calls_to("webhook")
    assert "grad-norm-spiky" in json.dumps(hooked.params) and "hostile-metric" not in \
        json.dumps(hooked.params)  # critical alerts stop at the first route
    assert_inert_slack(hooked)

    mails = mail_server.received
    assert len(mails) == 2 and all(m.login == "alice" for m in mails)
    for received in mails:
        assert_clean_email(received)
    hostile_mail = next(m.message for m in mails if "hostile-metric" in m.message["Subject"]
                        or "grad-norm" in m.message["Subject"])
    assert "\n" not in hostile_mail["Subject"] and "\r" not in hostile_mail["Subject"]
    related = hostile_mail.get_payload()[1]
    assert related.get_content_type() == "multipart/related"
    html_part, *images = related.get_payload()
    assert len(images) == 2
    for image in images:
        assert image.get_content_type() == "image/png"
        assert image.get_content().startswith(PNG_SIGNATURE)
        assert f'src="cid:{image["Content-ID"].strip("<>")}"' in html_part.get_content()
    assert "&lt;!channel&gt;" in html_part.get_content()

    hooks = webhook_server.requests
    assert len(hooks) == 2 and all(signature_ok(r) for r in hooks)
    assert {r.json["status"] for r in hooks} == {"firing"}
    assert {tuple(r.json["groupLabels"]) for r in hooks} == {("run",)}
    names = {a["labels"].get("run_name") for r in hooks for a in r.json["alerts"]}
    assert HOSTILE_NAME in names  # raw in JSON, as documented: escaping is the reader's

    # --- the same data again: nothing is sent twice ----------------------------------
    again = check(capsys, config, t1 + 60)["notifications"]
    assert (again["queued"], again["sent"]) == (0, 0)
    assert len(fake_slack.calls_to("chat.postMessage")) == 2
    assert (len(mail_server.received), len(webhook_server.requests)) == (2, 2)

    # --- an hour on: one repeat per group of the live run, into its thread (the crashed
    # run has ended: its crash is not repeated); the stall is inhibited ----------------
    t2 = t1 + HOUR
    repeat = check(capsys, config, t2)
    assert ("run-stalled", "firing") in {(t["rule"], t["status"])
                                         for t in repeat["transitions"]}
    sent = repeat["notifications"]
    assert (sent["queued"], sent["sent"], sent["muted"]) == (3, 3, 1)
    replies = fake_slack.calls_to("chat.postMessage")[2:]
    assert [r.thread_ts for r in replies] == [hostile_post.ts]
    assert not any("run-stalled" in json.dumps(c.params) for c in fake_slack.calls)
    assert len(fake_slack.uploads) == 2  # charts come with the firing, not with repeats
    assert len(fake_slack.calls_to("webhook")) == 1  # chatter repeats after 4h
    assert [r.json["reason"] for r in webhook_server.requests[2:]] == ["repeat"]
    assert all(signature_ok(r) for r in webhook_server.requests)
    repeat_mails = mail_server.received[2:]
    assert len(repeat_mails) == 1
    assert repeat_mails[0].message["In-Reply-To"] == hostile_mail["Message-ID"]

    # --- calm rows arrive: the hostile run's alerts resolve ---------------------------
    lw.append(log, lw.step(90_000, 40, {"train/grad_norm": 1.0, HOSTILE_KEY: 0.5},
                           time=t2 + 60))
    resolved = check(capsys, config, t2 + 120)
    assert {("grad-norm-exploding", "resolved"), ("hostile-metric", "resolved"),
            ("grad-norm-spiky", "resolved")} <= {(t["rule"], t["status"])
                                                 for t in resolved["transitions"]}
    sent = resolved["notifications"]
    # team-slack, oncall-email, ops-hook about the hostile run; chatter about the warning.
    assert (sent["queued"], sent["sent"], sent["pending"]) == (4, 4, 0)
    # The announcement and the repeat in its thread both showed the alerts firing: both
    # are rewritten, and neither shows them firing any more.
    updates = fake_slack.calls_to("chat.update")
    channel = hostile_post.response["channel"]  # the ID Slack answered with
    assert {(u.channel, u.params["ts"]) for u in updates} == {
        (channel, hostile_post.ts), (channel, replies[0].ts)}
    for update in updates:
        assert fake_slack.messages[(channel, update.params["ts"])]["edited"] is True
        assert_inert_slack(update)
        assert "🔴" not in json.dumps(update.blocks, ensure_ascii=False)
    reply = fake_slack.calls_to("chat.postMessage")[-1]
    assert reply.thread_ts == hostile_post.ts
    assert "resolved" in (reply.text or "").lower()
    assert_inert_slack(reply)
    assert len(fake_slack.calls_to("webhook")) == 2
    last_hook = webhook_server.requests[-1]
    assert signature_ok(last_hook) and last_hook.json["status"] == "resolved"
    last_mail = mail_server.received[-1]
    assert_clean_email(last_mail)
    assert last_mail.message["Subject"].startswith("[runwatch] RESOLVED")


# --- validate, and an SMTP host that is down --------------------------------------------


def test_validate_names_the_receiver_with_an_app_token(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    config = write_config(tmp_path, "  - {name: team-slack, slack: {token: xapp-1-A0-secret,"
                                    " channel: '#training-alerts'}}\n"
                                    "  - {name: ok-slack, slack: {token: xoxb-1,"
                                    " channel: '#training-alerts'}}\n")
    assert main(["validate", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"{config}:5: receiver 'team-slack': slack token is an app-level token"
                   " (xapp-); runwatch needs a bot token (xoxb-)"]


@pytest.mark.parametrize("mail_server", ["starttls"], indirect=True)
def test_an_unreachable_smtp_host_keeps_the_alert_until_it_is_up(
        wandb_runs, mail_server, mail_cert, tmp_path, capsys):
    runs = tmp_path / "runs"
    crashed = copy_run(wandb_runs.runs["crashed"], runs, "crashed")
    t0 = newest_record(crashed) + 60
    config = write_config(tmp_path, email_receiver(closed_port(), mail_cert[0]),
                          rules=CRASH_RULE)

    with at(t0):
        assert main(["check", "--config", str(config)]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "oncall-email" in err[0] and "ConnectionRefusedError" in err[0]
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    try:
        [entry] = store.outbox()
        assert (entry.receiver, entry.attempts, entry.failed) == ("oncall-email", 1, False)
    finally:
        store.close()

    config = write_config(tmp_path, email_receiver(mail_server.port, mail_cert[0]),
                          rules=CRASH_RULE)
    early = check(capsys, config, t0 + 5)["notifications"]  # the host is up; backoff holds
    assert (early["sent"], early["pending"], len(mail_server.received)) == (0, 1, 0)
    later = check(capsys, config, t0 + 120)["notifications"]
    assert (later["queued"], later["sent"], later["pending"], later["errors"]) == (0, 1, 0, [])
    [received] = mail_server.received
    assert received.message["Subject"].startswith("[runwatch] CRITICAL run-crashed")
    assert check(capsys, config, t0 + 180)["notifications"]["sent"] == 0


@pytest.mark.parametrize("mail_server", ["starttls"], indirect=True)
def test_no_chart_for_a_receiver_without_charts(hostile_run, mail_server, mail_cert,
                                                tmp_path, capsys):
    hostile = copy_run(hostile_run, tmp_path / "runs", "hostile")
    config = write_config(tmp_path, email_receiver(mail_server.port, mail_cert[0],
                                                   charts=False))
    # group_by [rule]: grad-norm-exploding, hostile-metric (grad-norm-spiky is muted by the
    # default inhibition: the exploding alert of the same run fires)
    assert check(capsys, config, newest_record(hostile) + 60)["notifications"]["sent"] == 2
    for received in mail_server.received:
        assert [p.get_content_type() for p in received.message.get_payload()] == [
            "text/plain", "text/html"]  # no multipart/related, no PNG
