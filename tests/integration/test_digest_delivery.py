"""The digest end to end: the daemon's digest job with freezegun against run directories
and the fake Slack server (once a period across restarts, the missed-digest grace), the
email through a real SMTP server, the webhook body, W&B runs through the fake W&B server,
and `runwatch digest` on the command line."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from freezegun import freeze_time

from fixtures import logwriter as lw
from runwatch.cli import main
from runwatch.daemon import Daemon
from runwatch.notify.charts import PNG_SIGNATURE

pytestmark = pytest.mark.filterwarnings(
    "ignore:Requiring AUTH while not requiring TLS:UserWarning")

TOKEN = "xoxb-1111-2222-digesttokensecret"
EIGHT = datetime(2026, 12, 2, 8, 0, tzinfo=UTC).timestamp()  # the digest's time
DAY, HOUR = 86400.0, 3600.0
KEY = "k" * 40


def at(seconds: float):
    return freeze_time(datetime.fromtimestamp(seconds, UTC))


def write_run(root: Path, run_id: str, *, name: str, project: str, end: float,
              rows: int = 30, grad: float = 1.0, exit_code: int | None = None) -> None:
    """A run directory whose last row is at ``end`` (and its exit, if any)."""
    run = root / "wandb" / f"offline-run-20261201_000000-{run_id}"
    run.mkdir(parents=True)
    log = run / f"run-{run_id}.wandb"
    start = end - 60 * rows
    records = [lw.run(1, run_id=run_id, name=name, project=project, start=start)]
    num = 2
    for i in range(rows):
        step = lw.step(num, i, {"train/loss": 2.0 / (1 + 0.1 * i),
                                "train/grad_norm": grad if i == rows - 1 else 1.0},
                       time=start + 60 * (i + 1))
        records += step
        num += len(step)
    if exit_code is not None:
        records.append(lw.exit_(num, exit_code))
    lw.write(log, records)


def write_config(tmp_path: Path, receivers: str, *, digest_receivers: str,
                 grace: str = "6h", sources: str | None = None) -> Path:
    config = tmp_path / "runwatch.yaml"
    config.write_text(
        "sources:\n" + (sources or f"  - {{type: rundir, path: {tmp_path / 'runs'}}}\n")
        + "store: sqlite:///state.db\nreceivers:\n" + receivers
        + f"digest: {{schedule: '0 8 * * *', timezone: UTC, grace: {grace},"
          f" receivers: [{digest_receivers}]}}\n")
    return config


def slack_receiver(url: str) -> str:
    return (f"  - name: team-slack\n    slack: {{token: {TOKEN}, channel: '#training',"
            f" api_url: '{url}'}}\n")


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    write_run(root / "a", "live0001", name="llama-7b", project="pretrain", end=EIGHT - 300)
    write_run(root / "b", "boom0002", name="exploded", project="pretrain", end=EIGHT - 5 * HOUR,
              grad=50.0, exit_code=1)
    write_run(root / "c", "rlrun003", name="ppo-sweep", project="rl", end=EIGHT - 2 * HOUR,
              exit_code=0)
    write_run(root / "d", "oldr0004", name="last-week", project="rl", end=EIGHT - 3 * DAY,
              exit_code=0)
    return root


def digests_posted(fake_slack) -> list:
    return [c for c in fake_slack.calls_to("chat.postMessage")
            if c.blocks and c.blocks[0]["type"] == "header"
            and "runwatch digest" in c.blocks[0]["text"]["text"]]


def daemon_at(config: Path, when: float) -> Daemon:
    with at(when):
        return Daemon(config)


def close(d: Daemon) -> None:
    d.runtime.close()
    d.store.close()


def digest_job_at(config: Path, when: float) -> None:
    """A daemon started at ``when`` runs its digest job then (what start-up does)."""
    d = daemon_at(config, when)
    with at(when):
        d.digest()
    close(d)


def test_the_digest_goes_out_once_a_period_across_restarts(tmp_path, runs, fake_slack):
    config = write_config(tmp_path, slack_receiver(fake_slack.api_url),
                          digest_receivers="team-slack")
    d = daemon_at(config, EIGHT - 10 * HOUR)
    with at(EIGHT - 10 * HOUR):  # the daemon ticked all night: it saw the crash
        d.tick_source(d.config.sources[0].name)
    with at(EIGHT + 5):
        d.digest()
    [post] = digests_posted(fake_slack)
    text = json.dumps(post.blocks, ensure_ascii=False)
    assert post.channel == "#training"
    assert "2 ended (1 failed, 1 finished)" in text and "1 running" in text
    assert "exploded" in text and "ppo-sweep" in text and "last-week" not in text
    assert "grad-norm-exploding" in text  # fired in the period
    [upload] = fake_slack.calls_to("upload")
    assert upload.body.startswith(PNG_SIGNATURE)
    [complete] = fake_slack.calls_to("files.completeUploadExternal")
    assert complete.params["thread_ts"] == post.ts

    with at(EIGHT + 60):  # the job again (a misfire, a second replica's clock)
        d.digest()
    close(d)
    d = daemon_at(config, EIGHT + 120)  # a restart within the grace
    with at(EIGHT + 120):
        d.digest()
    assert len(digests_posted(fake_slack)) == 1  # never a period twice
    with at(EIGHT + DAY + 30):  # the next morning
        d.digest()
    close(d)
    posts = digests_posted(fake_slack)
    assert len(posts) == 2
    assert "ppo-sweep" not in json.dumps(posts[1].blocks)  # ended before this period


@pytest.mark.parametrize(("down_until", "sent"), [(EIGHT + 5 * HOUR, True),
                                                  (EIGHT + 7 * HOUR, False)])
def test_a_digest_missed_while_down_is_sent_within_the_grace(tmp_path, runs, fake_slack,
                                                             down_until, sent):
    config = write_config(tmp_path, slack_receiver(fake_slack.api_url),
                          digest_receivers="team-slack")
    digest_job_at(config, down_until)  # started after 08:00: what start-up runs
    assert len(digests_posted(fake_slack)) == int(sent)


def test_the_daemon_schedules_the_digest_at_start_up_and_on_its_cron(tmp_path, runs,
                                                                     fake_slack):
    import time

    from apscheduler.schedulers.background import BackgroundScheduler

    config = write_config(tmp_path, slack_receiver(fake_slack.api_url),
                          digest_receivers="team-slack")
    d = Daemon(config)
    d.scheduler = BackgroundScheduler(timezone=UTC)
    d.scheduler.start(paused=True)  # next run times computed, nothing run
    try:
        d._schedule_digest(startup=True)
        job = d.scheduler.get_job("digest")
        assert job.next_run_time.timestamp() == pytest.approx(time.time(), abs=30)
        assert job.misfire_grace_time == 6 * 3600
        d._schedule_digest(startup=False)  # a reload: back on the cron, 08:00 UTC
        job = d.scheduler.get_job("digest")
        assert (job.next_run_time.hour, job.next_run_time.minute) == (8, 0)
    finally:
        d.scheduler.shutdown(wait=False)
        close(d)


def test_the_digest_by_email_has_text_html_and_the_chart_inline(tmp_path, runs, mail_server):
    receiver = (f"  - name: oncall\n    email: {{smtp: '127.0.0.1:{mail_server.port}',"
                " username: alice, password: secret, from: runwatch@example.com,"
                " to: [ml@example.com]}\n")
    config = write_config(tmp_path, receiver, digest_receivers="oncall")
    digest_job_at(config, EIGHT + 10)
    [got] = mail_server.received
    email = got.message
    assert email["Subject"] == "runwatch digest, Wed 02 Dec 2026"
    text = email.get_body(("plain",)).get_content()
    html = email.get_body(("html",))
    assert "1 running · 2 ended (1 failed, 1 finished)" in text
    assert "💥" not in text and "❌ exploded — failed at step 29" in text
    assert '<img src="cid:digest-chart@runwatch.invalid"' in html.get_content()
    [image] = [p for p in email.walk() if p.get_content_type() == "image/png"]
    assert image["Content-ID"] == "<digest-chart@runwatch.invalid>"
    assert image.get_content().startswith(PNG_SIGNATURE)


def test_the_digest_to_a_webhook_is_its_json_body(tmp_path, runs, webhook_server):
    receiver = f"  - name: hook\n    webhook: {{url: '{webhook_server.url}/digest'}}\n"
    config = write_config(tmp_path, receiver, digest_receivers="hook")
    digest_job_at(config, EIGHT + 10)
    [request] = webhook_server.requests
    body = request.json
    assert body["kind"] == "digest"
    assert body["period"] == {"start": EIGHT - DAY, "end": EIGHT + 10}
    assert body["totals"]["ended"] == {"failed": 1, "finished": 1}
    assert [p["project"] for p in body["projects"]] == ["pretrain", "rl"]
    assert body["projects"][1]["ended"][0]["run"]["name"] == "ppo-sweep"


def test_a_digest_of_wandb_runs(tmp_path, wandb_server, fake_slack):
    for i in range(3):
        wandb_server.add_run("team", "llm", f"run{i}", name=f"llm-{i}",
                             created_at=EIGHT - 3 * HOUR,
                             rows=[{"_step": s, "_timestamp": EIGHT - 3 * HOUR + 60 * s,
                                    "loss": 2.0 / (1 + s), "train/grad_norm": 1.0}
                                   for s in range(100)])
    wandb_server.add_run("team", "llm", "gone", name="llm-crashed", state="crashed",
                         created_at=EIGHT - 5 * HOUR,
                         rows=[{"_step": 0, "_timestamp": EIGHT - 4 * HOUR, "loss": 1.0}])
    source = (f"  - {{type: wandb, entity: team, projects: [llm], api_key: {KEY},"
              f" base_url: '{wandb_server.url}'}}\n")
    config = write_config(tmp_path, slack_receiver(fake_slack.api_url),
                          digest_receivers="team-slack", sources=source)
    digest_job_at(config, EIGHT + 10)
    [post] = digests_posted(fake_slack)
    text = json.dumps(post.blocks, ensure_ascii=False)
    assert "3 running" in text and "1 ended (1 crashed)" in text
    assert "<http" in text and "llm-crashed" in text  # W&B runs link to their pages


# --- runwatch digest ----------------------------------------------------------------------


def test_digest_command_dry_run_and_send(tmp_path, runs, fake_slack, capsys):
    config = write_config(tmp_path, slack_receiver(fake_slack.api_url),
                          digest_receivers="team-slack")
    now = datetime.fromtimestamp(EIGHT, UTC).isoformat()
    assert main(["digest", "--config", str(config), "--now", now, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "runwatch digest, Wed 02 Dec 2026" in out and "ppo-sweep" in out
    assert fake_slack.calls_to("chat.postMessage") == []  # a dry run sends nothing
    assert main(["digest", "--config", str(config), "--now", now, "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "digest"

    assert main(["digest", "--config", str(config), "--now", now]) == 0
    assert "1 sent" in capsys.readouterr().out
    assert len(digests_posted(fake_slack)) == 1
    # The daemon's job at 08:00 finds the period sent.
    digest_job_at(config, EIGHT + 30)
    assert len(digests_posted(fake_slack)) == 1


@pytest.mark.parametrize(("argv", "message"), [
    (["--receiver", "nope"], "receiver nope: not in"),
    (["--now", "yesterday"], "invalid time 'yesterday'"),
])
def test_digest_command_errors_are_one_line(tmp_path, fake_slack, capsys, argv, message):
    (tmp_path / "runs").mkdir()
    config = write_config(tmp_path, slack_receiver(fake_slack.api_url),
                          digest_receivers="team-slack")
    assert main(["digest", "--config", str(config), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
