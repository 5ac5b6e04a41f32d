"""Slack receivers end to end: the real slack_sdk clients against the fake Slack Web API
(tests/fixtures/fakeslack.py), asserting on what the fake received."""

from __future__ import annotations

import dataclasses
import json
import socket

import pytest

from builders import T0, notify_message
from builders import notify_alert as alert
from runwatch.config.receivers import Receiver
from runwatch.notify.base import Chart, DigestContent, Message, Reason
from runwatch.notify.charts import PNG_SIGNATURE
from runwatch.notify.outbox import shown_alerts
from runwatch.notify.receivers import build_notifier
from runwatch.notify.slack import SlackNotifier, SlackWebhookNotifier

TOKEN = "xoxb-1111-2222-secretsecret"


def message(firing=(), resolved=(), *, refs=None, charts=None, id="out-1") -> Message:
    return notify_message(firing, resolved, receiver="team-slack", refs=refs, charts=charts,
                          id=id, reason=Reason.RESOLVED if not firing else Reason.FIRST)


@pytest.fixture
def slack(fake_slack):
    notifier = SlackNotifier("team-slack", token=TOKEN, channel="#training-alerts",
                             base_url=fake_slack.api_url, timeout=5, retries=2)
    yield notifier
    notifier.close()


def all_text(call) -> str:
    return json.dumps(call.blocks, ensure_ascii=False) + (call.text or "")


# --- posting, threads, updates --------------------------------------------------------

def test_build_notifier_gives_a_bot_notifier():
    receiver = Receiver.model_validate({"name": "team-slack", "slack": {
        "token": TOKEN, "channel": "#training-alerts", "charts": True}})
    notifier = build_notifier(receiver, timeout=5)
    assert isinstance(notifier, SlackNotifier)
    assert (notifier.name, notifier.channel, notifier.charts) == (
        "team-slack", "#training-alerts", True)


def test_first_message_posts_blocks_and_returns_thread_and_message_refs(fake_slack, slack):
    a, b = alert(), alert("loss-spike", severity="warning")
    delivery = slack.send(message([a, b]))
    assert delivery.ok, delivery.detail
    [post] = fake_slack.calls_to("chat.postMessage")
    assert post.channel == "#training-alerts" and post.thread_ts is None
    assert post.headers["authorization"] == f"Bearer {TOKEN}"
    assert post.blocks[0]["text"]["text"] == "🔴 CRITICAL grad-norm-exploding: llama-7b (+1 more)"
    assert "<https://wandb.ai/team/pretrain/runs/abc123|llama-7b>" in all_text(post)
    assert "Firing for 1h" in all_text(post)
    assert post.text.startswith("CRITICAL grad-norm-exploding: llama-7b (+1 more)")
    here = f"CTRAININGAL:{post.ts}"
    shown = delivery.refs.pop(f"shown:{here}")
    # The channel's ID, for looking up a post whose answer a killed process never read.
    assert delivery.refs.pop("channel") == "CTRAININGAL #training-alerts"
    assert delivery.refs == {"thread:team/pretrain/abc123": here,
                             f"message:{a.fingerprint}": here,
                             f"message:{b.fingerprint}": here}
    assert [x.fingerprint for x in shown_alerts(shown)] == [a.fingerprint, b.fingerprint]
    assert TOKEN not in delivery.detail


def test_later_messages_about_a_run_go_into_its_thread(fake_slack, slack):
    first = slack.send(message([alert()]))
    later = alert("loss-nonfinite")
    second = slack.send(message([later], refs=first.refs, id="out-2"))
    assert second.ok, second.detail
    one, two = fake_slack.calls_to("chat.postMessage")
    assert two.thread_ts == one.ts and two.channel == "CTRAININGAL"
    # The thread stays the run's first message; the new alert is announced in the reply.
    assert second.refs.keys() == {f"message:{later.fingerprint}", f"shown:CTRAININGAL:{two.ts}"}
    assert second.refs[f"message:{later.fingerprint}"] == f"CTRAININGAL:{two.ts}"


def test_a_resolve_updates_the_announcement_and_replies_in_the_thread(fake_slack, slack):
    firing = alert()
    refs = slack.send(message([firing])).refs
    delivery = slack.send(message(resolved=[alert(status="resolved")], refs=refs, id="out-2"))
    assert delivery.ok, delivery.detail
    announcement, reply = fake_slack.calls_to("chat.postMessage")
    [update] = fake_slack.calls_to("chat.update")
    assert (update.channel, update.params["ts"]) == ("CTRAININGAL", announcement.ts)
    assert update.blocks[0]["text"]["text"] == "✅ RESOLVED grad-norm-exploding: llama-7b"
    assert "resolved after 1h" in all_text(update).lower()
    assert reply.thread_ts == announcement.ts
    assert reply.blocks[0]["text"]["text"] == "✅ RESOLVED grad-norm-exploding: llama-7b"
    assert fake_slack.messages[("CTRAININGAL", announcement.ts)]["edited"] is True


def test_an_announcement_of_several_alerts_keeps_the_others_firing(fake_slack, slack):
    a, b = alert(), alert("loss-spike", severity="warning")
    refs = slack.send(message([a, b])).refs
    assert slack.send(message([b], [alert(status="resolved")], refs=refs, id="o2")).ok
    [update] = fake_slack.calls_to("chat.update")
    # Still firing first, then what resolved.
    assert update.blocks[0]["text"]["text"] == "🟠 WARNING loss-spike: llama-7b, 1 resolved"
    assert update.blocks[1]["text"]["text"].startswith("🟠 *WARNING*")
    assert update.blocks[3]["text"]["text"].startswith("✅ *RESOLVED*")


def headers_of(blocks) -> list[str]:
    """The alert lines of a message: each alert's first section, mark and severity."""
    return [b["text"]["text"].split(" ", 2)[0] + " " + b["text"]["text"].split("*")[1]
            for b in blocks if b["type"] == "section" and b["text"]["text"][:1] in "🔴🟠✅"]


def test_a_rewrite_keeps_an_alert_that_fired_and_resolved_unannounced(fake_slack, slack):
    """The announcement showed a crash firing and a NaN that had already come and gone (it
    never had a message of its own): when the crash resolves, the rewrite still shows the
    NaN — every alert a message ever showed, each as it now stands."""
    crash = alert("run-crashed")
    flash = alert("loss-nonfinite", severity="critical", status="resolved")
    refs = slack.send(message([crash], [flash])).refs
    assert f"message:{flash.fingerprint}" not in refs  # it was never shown firing
    assert slack.send(message(resolved=[alert("run-crashed", status="resolved")], refs=refs,
                              id="out-2")).ok
    [update] = fake_slack.calls_to("chat.update")
    text = all_text(update)
    assert "run-crashed" in text and "loss-nonfinite" in text
    assert update.blocks[0]["text"]["text"] == "✅ RESOLVED run-crashed: llama-7b (+1 more)"
    assert headers_of(update.blocks) == ["✅ RESOLVED", "✅ RESOLVED"]


def test_every_message_that_showed_an_alert_firing_is_updated_when_it_resolves(
        fake_slack, slack):
    """An alert announced on its own, then shown firing again in a channel post about two
    runs: both messages are rewritten when it resolves, the second keeping the other run's
    alert firing; neither shows it 🔴 afterwards."""
    a = alert(run_id="r1", name="one")
    first = slack.send(message([a])).refs
    b = alert("loss-spike", run_id="r2", name="two", severity="warning")
    second = slack.send(message([a, b], refs=first, id="out-2")).refs
    one, two = fake_slack.calls_to("chat.postMessage")
    assert two.thread_ts is None  # news about two runs: the channel
    assert second[f"message:{a.fingerprint}"] == f"CTRAININGAL:{one.ts} CTRAININGAL:{two.ts}"
    refs = {**first, **second}
    assert slack.send(message([b], [alert(run_id="r1", name="one", status="resolved")],
                              refs=refs, id="out-3")).ok
    updates = {u.params["ts"]: u for u in fake_slack.calls_to("chat.update")}
    assert set(updates) == {one.ts, two.ts}
    assert headers_of(updates[one.ts].blocks) == ["✅ RESOLVED"]
    assert headers_of(updates[two.ts].blocks) == ["🟠 WARNING", "✅ RESOLVED"]
    for ts in (one.ts, two.ts):
        assert "🔴" not in json.dumps(fake_slack.messages[("CTRAININGAL", ts)]["blocks"],
                                     ensure_ascii=False)


def test_a_vanished_announcement_does_not_stop_the_resolve_reply(fake_slack, slack):
    refs = {f"message:{alert().fingerprint}": "CTRAININGAL:1.000001"}
    delivery = slack.send(message(resolved=[alert(status="resolved")], refs=refs))
    assert delivery.ok and "message_not_found" in delivery.detail
    assert len(fake_slack.calls_to("chat.postMessage")) == 1


def test_a_group_spanning_runs_threads_every_run_on_its_message(fake_slack, slack):
    a, b = alert(run_id="r1", name="one"), alert(run_id="r2", name="two", severity="warning")
    delivery = slack.send(message([b, a]))
    [post] = fake_slack.calls_to("chat.postMessage")
    here = f"CTRAININGAL:{post.ts}"
    assert delivery.refs["thread:team/pretrain/r1"] == here
    assert delivery.refs["thread:team/pretrain/r2"] == here
    # Later news about several runs goes to the channel, not into one run's thread.
    c = alert("other", run_id="r3", name="three")
    refs = {"thread:team/pretrain/r2": here}
    assert slack.send(message([c, alert("x", run_id="r2")], refs=refs, id="o2")).ok
    assert fake_slack.calls_to("chat.postMessage")[1].thread_ts is None
    # … and news about one run into its thread.
    assert slack.send(message([alert("y", run_id="r2")], refs=refs, id="o3")).ok
    assert fake_slack.calls_to("chat.postMessage")[2].thread_ts == post.ts


def test_a_deleted_thread_starts_a_new_one(fake_slack, slack):
    refs = {"thread:team/pretrain/abc123": "CTRAININGAL:99.000001"}
    delivery = slack.send(message([alert()], refs=refs))
    assert delivery.ok, delivery.detail
    post = fake_slack.calls_to("chat.postMessage")[-1]
    assert post.thread_ts is None
    assert delivery.refs["thread:team/pretrain/abc123"] == f"CTRAININGAL:{post.ts}"


# --- charts ---------------------------------------------------------------------------

def chart() -> Chart:
    return Chart(metric="grad_norm", steps=tuple(range(0, 1300, 100)),
                 values=tuple([1.0] * 12 + [12.3]), threshold=10.0, firing_step=1200)


def test_a_chart_is_uploaded_into_the_thread_with_files_upload_v2(fake_slack):
    slack = SlackNotifier("team-slack", token=TOKEN, channel="#training-alerts", charts=True,
                          base_url=fake_slack.api_url, timeout=5)
    a = alert()
    delivery = slack.send(message([a], charts={a.fingerprint: chart()}))
    assert delivery.ok, delivery.detail
    [post] = fake_slack.calls_to("chat.postMessage")
    # The post is delivered (and recorded) first; its charts are a follow-up of their own.
    assert fake_slack.calls_to("files.getUploadURLExternal", ok=None) == []
    [followup] = delivery.followups
    assert (followup.follows, followup.id) == (f"CTRAININGAL:{post.ts}", "out-1-charts")
    uploaded = slack.send(followup)
    assert uploaded.ok and uploaded.refs == {} and uploaded.followups == ()
    assert len(fake_slack.calls_to("chat.postMessage")) == 1
    [get_url] = fake_slack.calls_to("files.getUploadURLExternal")
    [upload] = fake_slack.calls_to("upload")
    [complete] = fake_slack.calls_to("files.completeUploadExternal")
    assert get_url.params["filename"] == f"{a.fingerprint}.png"
    assert upload.body.startswith(PNG_SIGNATURE)
    assert int(get_url.params["length"]) == len(upload.body)
    assert complete.params["channel_id"] == "CTRAININGAL"
    assert complete.params["thread_ts"] == post.ts


def test_no_chart_without_charts_true(fake_slack, slack):
    a = alert()
    assert slack.send(message([a], charts={a.fingerprint: chart()})).ok
    assert fake_slack.calls_to("files.getUploadURLExternal", ok=None) == []


def test_a_failed_chart_upload_does_not_fail_the_posted_message(fake_slack):
    slack = SlackNotifier("team-slack", token=TOKEN, channel="#training-alerts", charts=True,
                          base_url=fake_slack.api_url, timeout=5)
    fake_slack.fail("files.completeUploadExternal", error="missing_scope")
    a = alert()
    delivery = slack.send(message([a], charts={a.fingerprint: chart()}))
    assert delivery.ok and f"message:{a.fingerprint}" in delivery.refs
    failed = slack.send(delivery.followups[0])
    assert (failed.ok, failed.temporary) == (False, False)
    assert "missing_scope" in failed.detail


# --- exactly once: a post an earlier attempt may have made ---------------------------

def again(msg: Message, refs) -> Message:
    """``msg`` taken up again after an attempt whose answer was lost."""
    return dataclasses.replace(msg, refs=dict(refs), maybe_sent=True)


def test_a_post_made_by_a_lost_attempt_is_adopted_not_repeated(fake_slack, slack):
    first = message([alert()])
    posted = slack.send(first)
    found = slack.send(again(first, {}))  # refs as before the first attempt: none
    assert found.ok and "not posted again" in found.detail
    assert len(fake_slack.calls_to("chat.postMessage")) == 1
    [history] = fake_slack.calls_to("conversations.history")
    assert history.params["channel"] == "CTRAININGAL"  # by name → ID (conversations.list)
    assert history.params["include_all_metadata"] in ("1", "true", "True")
    assert float(history.params["oldest"]) < first.created_at
    assert found.refs == posted.refs  # the same ts adopted: threads and updates hang on it


def test_a_lost_reply_is_found_in_its_thread(fake_slack, slack):
    refs = slack.send(message([alert()])).refs
    reply = message([alert("loss-nonfinite")], refs=refs, id="out-2")
    posted = slack.send(reply)
    assert slack.send(again(reply, refs)).refs == posted.refs
    assert len(fake_slack.calls_to("chat.postMessage")) == 2
    [replies] = fake_slack.calls_to("conversations.replies")
    assert replies.params["ts"] == fake_slack.calls_to("chat.postMessage")[0].ts


def test_a_lost_attempt_that_never_posted_posts_once(fake_slack, slack):
    refs = slack.send(message([alert()])).refs  # the channel's ID is known from now on
    delivery = slack.send(again(message([alert("x")], refs=refs, id="o2"), refs))
    assert delivery.ok and delivery.detail.startswith("slack receiver 'team-slack': posted")
    assert len(fake_slack.calls_to("chat.postMessage")) == 2
    assert fake_slack.calls_to("conversations.list", ok=None) == []


def test_without_the_history_scope_a_lost_post_is_posted_again(fake_slack, slack):
    assert slack.check_online() == []
    fake_slack.scopes -= {"channels:history", "groups:history"}
    [line] = slack.check_online()
    assert "lacks channels:history" in line and "at least once" in line
    first = message([alert()])
    slack.send(first)
    delivery = slack.send(again(first, {}))
    assert delivery.ok and "not looked up (missing_scope)" in delivery.detail
    assert len(fake_slack.calls_to("chat.postMessage")) == 2  # the promised at-least-once


def test_a_rate_limited_look_up_goes_back_to_the_outbox(fake_slack, slack):
    fake_slack.fail("conversations.history", status=429, error="ratelimited", retry_after=3)
    delivery = slack.send(again(message([alert()]), {}))
    assert (delivery.ok, delivery.temporary, delivery.retry_after) == (False, True, 3.0)
    assert fake_slack.calls_to("chat.postMessage", ok=None) == []


def test_a_rate_limited_channel_list_goes_back_to_the_outbox(fake_slack, slack):
    """The channel is named, its ID not yet known: conversations.list answers 429 — the
    look-up is tried again later, never skipped into a second post."""
    first = message([alert()])
    slack.send(first)
    fake_slack.fail("conversations.list", status=429, error="ratelimited", retry_after=2)
    delivery = slack.send(again(first, {}))
    assert (delivery.ok, delivery.temporary, delivery.retry_after) == (False, True, 2.0)
    assert len(fake_slack.calls_to("chat.postMessage")) == 1
    assert slack.send(again(first, {})).ok  # later: found, adopted
    assert len(fake_slack.calls_to("chat.postMessage")) == 1


def test_without_channels_read_a_named_channel_is_not_looked_up(fake_slack, slack):
    first = message([alert()])
    slack.send(first)
    fake_slack.scopes -= {"channels:read", "groups:read"}
    delivery = slack.send(again(first, {}))
    assert delivery.ok and "the token needs channels:read" in delivery.detail
    assert len(fake_slack.calls_to("chat.postMessage")) == 2  # at least once


def test_a_gone_thread_is_searched_in_the_channel(fake_slack, slack):
    """The run's thread was deleted: the lost attempt's post went to the channel, and is
    found there."""
    refs = {"thread:team/pretrain/abc123": "CTRAININGAL:99.000001"}
    lost = message([alert()], refs=refs)
    posted = slack.send(lost)
    assert posted.ok and fake_slack.calls_to("chat.postMessage")[-1].thread_ts is None
    found = slack.send(again(lost, refs))
    assert found.ok and "not posted again" in found.detail
    assert len(fake_slack.calls_to("chat.postMessage")) == 1
    assert [c.status for c in fake_slack.calls_to("conversations.replies", ok=None)] == [200]
    assert fake_slack.calls_to("conversations.replies", ok=None)[0].response["ok"] is False


def test_a_post_answered_fatal_error_is_looked_for_before_it_is_repeated(fake_slack, slack):
    fake_slack.fail("chat.postMessage", error="fatal_error")
    delivery = slack.send(message([alert()]))
    assert (delivery.ok, delivery.temporary, delivery.maybe_delivered) == (False, True, True)


def test_a_message_that_cannot_be_rewritten_does_not_hold_up_the_resolve(fake_slack, slack):
    a = alert()
    refs = slack.send(message([a])).refs
    fake_slack.fail("chat.update", error="cant_update_message")
    delivery = slack.send(message(resolved=[alert(status="resolved")], refs=refs, id="o2"))
    assert delivery.ok and "not updated" in delivery.detail
    assert len(fake_slack.calls_to("chat.postMessage")) == 2  # the reply is out
    fake_slack.fail("chat.update", status=429, error="ratelimited", retry_after=5)
    later = slack.send(message(resolved=[alert(status="resolved")], refs=refs, id="o3"))
    assert (later.ok, later.temporary, later.retry_after) == (False, True, 5.0)


def test_a_digest_a_lost_attempt_posted_is_adopted(fake_slack, slack):
    digest = DigestContent(title="runwatch digest", summary="3 runs", text="3 runs",
                           blocks=({"type": "section",
                                    "text": {"type": "mrkdwn", "text": "3 runs"}},),
                           html="<p>3 runs</p>", body={}, image=None)
    first = Message(id="digest-1", receiver="team-slack", group_key="digest",
                    reason=Reason.DIGEST, created_at=T0, digest=digest)
    assert slack.send(first).ok
    found = slack.send(again(first, {}))
    assert found.ok and "found the digest" in found.detail
    assert len(fake_slack.calls_to("chat.postMessage")) == 1


def test_charts_a_lost_attempt_uploaded_are_not_uploaded_again(fake_slack):
    slack = SlackNotifier("team-slack", token=TOKEN, channel="#training-alerts", charts=True,
                          base_url=fake_slack.api_url, timeout=5)
    a, b = alert(), alert("loss-spike", severity="warning")
    delivery = slack.send(message([a, b], charts={a.fingerprint: chart(),
                                                  b.fingerprint: chart()}))
    [followup] = delivery.followups
    # The first chart goes up, the second is refused for now: some are in the thread.
    fake_slack.fail("files.getUploadURLExternal", status=429, error="ratelimited", after=1)
    failed = slack.send(followup)
    assert (failed.ok, failed.temporary, failed.maybe_delivered) == (False, True, True)
    resumed = slack.send(dataclasses.replace(followup, maybe_sent=True))
    assert resumed.ok, resumed.detail
    shared = [u["filename"] for u in fake_slack.uploads.values() if u.get("thread_ts")]
    assert sorted(shared) == sorted([f"{a.fingerprint}.png", f"{b.fingerprint}.png"])
    assert len(fake_slack.calls_to("conversations.replies")) == 1


def test_a_chart_retry_without_the_history_scope_uploads_all_again(fake_slack):
    slack = SlackNotifier("team-slack", token=TOKEN, channel="#training-alerts", charts=True,
                          base_url=fake_slack.api_url, timeout=5)
    a = alert()
    [followup] = slack.send(message([a], charts={a.fingerprint: chart()})).followups
    fake_slack.scopes -= {"channels:history", "groups:history"}
    delivery = slack.send(dataclasses.replace(followup, maybe_sent=True))
    assert delivery.ok and "not looked up (missing_scope)" in delivery.detail
    assert len([u for u in fake_slack.uploads.values() if u.get("thread_ts")]) == 1


# --- failures -------------------------------------------------------------------------

def test_a_429_goes_back_to_the_outbox_at_once(fake_slack, slack):
    # No sleep in the send: the daemon's one worker must not wait out a rate limit.
    fake_slack.fail("chat.postMessage", status=429, error="ratelimited", retry_after=1)
    delivery = slack.send(message([alert()]))
    assert (delivery.ok, delivery.temporary, delivery.retry_after) == (False, True, 1.0)
    answers = [c.status for c in fake_slack.calls_to("chat.postMessage", ok=None)]
    assert answers == [429]
    assert slack.send(message([alert()])).ok  # the outbox's next attempt


def test_every_other_call_rate_limited(fake_slack, slack):
    fake_slack.rate_limit_every(2, retry_after=0)
    first = slack.send(message([alert()]))
    second = slack.send(message([alert("x")], refs=first.refs, id="o2"))
    assert first.ok and (second.ok, second.temporary) == (False, True)
    assert [c.status for c in fake_slack.calls] == [200, 429]


def test_a_long_retry_after_goes_back_to_the_outbox(fake_slack, slack):
    fake_slack.fail("chat.postMessage", status=429, error="ratelimited", retry_after=120)
    delivery = slack.send(message([alert()]))
    assert (delivery.ok, delivery.temporary, delivery.retry_after) == (False, True, 120.0)
    assert len(fake_slack.calls_to("chat.postMessage", ok=None)) == 1
    assert delivery.detail == ("slack receiver 'team-slack': chat.postMessage failed: "
                               "ratelimited (HTTP 429)")


def test_a_post_is_never_retried_inside_a_send(fake_slack):
    """A 5xx (or a reset connection) may come after Slack took the post: the post goes back
    to the outbox as maybe delivered, for a look-up first; a 429 is surely not posted."""
    slack = SlackNotifier("s", token=TOKEN, channel="#a", base_url=fake_slack.api_url,
                          retries=1)
    fake_slack.fail("chat.postMessage", status=503, error="service_unavailable")
    delivery = slack.send(message([alert()]))
    assert (delivery.ok, delivery.temporary, delivery.maybe_delivered) == (False, True, True)
    assert [c.status for c in fake_slack.calls_to("chat.postMessage", ok=None)] == [503]
    fake_slack.fail(status=429, error="ratelimited", retry_after=0, times=5)
    delivery = slack.send(message([alert("y")], id="o3"))
    assert (delivery.ok, delivery.temporary, delivery.retry_after) == (False, True, 0.0)
    assert not delivery.maybe_delivered
    assert len(fake_slack.calls_to("chat.postMessage", ok=None)) == 2


def test_an_update_is_retried_inside_the_send(fake_slack):
    slack = SlackNotifier("s", token=TOKEN, channel="#a", base_url=fake_slack.api_url,
                          retries=1)
    refs = slack.send(message([alert()])).refs
    fake_slack.fail("chat.update", status=503, error="service_unavailable")
    assert slack.send(message(resolved=[alert(status="resolved")], refs=refs, id="o2")).ok
    assert [c.status for c in fake_slack.calls_to("chat.update", ok=None)] == [503, 200]


@pytest.mark.parametrize("error", ["channel_not_found", "not_in_channel", "is_archived",
                                   "missing_scope", "account_inactive", "token_revoked"])
def test_slack_errors_that_no_retry_fixes_are_permanent(fake_slack, slack, error):
    fake_slack.fail("chat.postMessage", error=error)
    delivery = slack.send(message([alert()]))
    assert (delivery.ok, delivery.temporary) == (False, False)
    assert delivery.detail == f"slack receiver 'team-slack': chat.postMessage failed: {error}"


def test_a_bad_token_is_permanent_and_never_shown(fake_slack):
    for token in ("xoxb-not-known", ""):
        fake_slack.tokens = {TOKEN}
        slack = SlackNotifier("s", token=token, channel="#a", base_url=fake_slack.api_url)
        delivery = slack.send(message([alert()]))
        assert (delivery.ok, delivery.temporary) == (False, False)
        assert ("invalid_auth" if token else "not_authed") in delivery.detail
        assert token not in delivery.detail or not token
    fake_slack.tokens = None


def test_server_errors_are_temporary(fake_slack):
    slack = SlackNotifier("s", token=TOKEN, channel="#a", base_url=fake_slack.api_url,
                          retries=1)
    fake_slack.fail(status=503, error="service_unavailable", times=2)
    delivery = slack.send(message([alert()]))
    assert (delivery.ok, delivery.temporary) == (False, True)
    assert "service_unavailable (HTTP 503)" in delivery.detail


def test_connection_refused_is_temporary():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    slack = SlackNotifier("s", token=TOKEN, channel="#a", retries=0,
                          base_url=f"http://127.0.0.1:{port}/api/")
    delivery = slack.send(message([alert()]))
    assert (delivery.ok, delivery.temporary) == (False, True)
    assert "refused" in delivery.detail.lower()


def test_a_timeout_is_temporary():
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/api/"
        slack = SlackNotifier("s", token=TOKEN, channel="#a", base_url=url, timeout=0.3,
                              retries=0)
        delivery = slack.send(message([alert()]))
    assert (delivery.ok, delivery.temporary) == (False, True)
    assert "timed out" in delivery.detail


# --- untrusted text and limits --------------------------------------------------------

def test_hostile_names_reach_slack_inert(fake_slack, slack):
    hostile = alert("<!channel>", name="<!here> *bold* <http://evil|x> <@U1>",
                    summary="<!channel> ping")
    assert slack.send(message([hostile])).ok
    [post] = fake_slack.calls_to("chat.postMessage")
    mrkdwn = [post.text] + [b["text"]["text"] for b in post.blocks
                            if b.get("text", {}).get("type") == "mrkdwn"]
    for text in mrkdwn:
        for bad in ("<!channel>", "<!here>", "<@U1>", "<http://evil|x>", " *bold* "):
            assert bad not in text
    assert "&lt;!here&gt;" in mrkdwn[1]


def test_a_group_of_300_alerts_posts(fake_slack, slack):
    alerts = [alert(f"rule-{i:03d}", run_id=f"r{i}", name=f"run-{i}-" + "x" * 40)
              for i in range(300)]
    delivery = slack.send(message(alerts))
    assert delivery.ok, delivery.detail
    [post] = fake_slack.calls_to("chat.postMessage")
    assert len(post.blocks) <= 50
    assert all(f"rule-{i:03d}" in all_text(post) for i in range(300))
    assert len([k for k in delivery.refs if k.startswith("message:")]) == 300


# --- incoming webhook -----------------------------------------------------------------

def test_webhook_posts_the_same_blocks(fake_slack):
    hook = SlackWebhookNotifier("hook", url=fake_slack.webhook_url, timeout=5)
    delivery = hook.send(message([alert()]))
    assert delivery.ok and delivery.refs == {}
    [call] = fake_slack.calls_to("webhook")
    assert call.blocks[0]["text"]["text"] == "🔴 CRITICAL grad-norm-exploding: llama-7b"
    assert call.text.startswith("CRITICAL grad-norm-exploding")
    assert "thread_ts" not in call.params


def test_build_notifier_gives_a_webhook_notifier(fake_slack):
    receiver = Receiver.model_validate(
        {"name": "hook", "slack": {"webhook_url": fake_slack.webhook_url}})
    assert build_notifier(receiver).send(message([alert()])).ok


@pytest.mark.parametrize("status, error, temporary", [
    (404, "no_service", False), (403, "invalid_token", False),
    (410, "channel_is_archived", False), (500, "boom", True),
])
def test_webhook_failures(fake_slack, status, error, temporary):
    hook = SlackWebhookNotifier("hook", url=fake_slack.webhook_url, retries=0)
    fake_slack.fail("webhook", status=status, error=error)
    delivery = hook.send(message([alert()]))
    assert (delivery.ok, delivery.temporary) == (False, temporary)
    assert delivery.detail == f"slack receiver 'hook': webhook failed: HTTP {status} {error}"
    assert "hooksecret" not in delivery.detail


def test_webhook_429_is_temporary_at_once(fake_slack):
    hook = SlackWebhookNotifier("hook", url=fake_slack.webhook_url, retries=1)
    fake_slack.fail("webhook", status=429, error="rate_limited", retry_after=90)
    delivery = hook.send(message([alert()]))
    assert (delivery.ok, delivery.temporary, delivery.retry_after) == (False, True, 90.0)


# --- answers that are not JSON ----------------------------------------------------------

@pytest.mark.parametrize("body", [
    "<html><body><h1>502 Bad Gateway</h1></body></html>",  # a proxy's page, sent as a 200
    '{"ok": true, "channel": "CTRAININGAL", "ts": "17',  # cut off mid-answer
])
def test_a_200_whose_body_is_not_json_is_temporary_and_maybe_posted(fake_slack, slack, body):
    fake_slack.fail("chat.postMessage", raw=body)
    delivery = slack.send(message([alert()]))
    assert (delivery.ok, delivery.temporary, delivery.maybe_delivered) == (False, True, True)
    assert delivery.detail.startswith("slack receiver 'team-slack': chat.postMessage failed:"
                                      " HTTP 200 with a body that is not JSON: ")
    assert body[:20] in delivery.detail and "\n" not in delivery.detail
    [call] = fake_slack.calls_to("chat.postMessage", ok=None)
    assert call.status == 200 and fake_slack.calls_to("chat.postMessage") == []
    # The outbox's next attempt looks for the post first, finds none, and posts once.
    resumed = slack.send(again(message([alert()]), {}))
    assert resumed.ok, resumed.detail
    assert len(fake_slack.calls_to("conversations.history")) == 1
    assert len(fake_slack.calls_to("chat.postMessage")) == 1


def test_a_5xx_whose_body_is_not_json_says_so(fake_slack):
    slack = SlackNotifier("s", token=TOKEN, channel="#a", base_url=fake_slack.api_url,
                          retries=0)
    fake_slack.fail("chat.postMessage", status=502, raw="<html>Bad Gateway</html>")
    delivery = slack.send(message([alert()]))
    assert (delivery.ok, delivery.temporary) == (False, True)
    assert delivery.detail == ("slack receiver 's': chat.postMessage failed: HTTP 502 with a"
                               " body that is not JSON: <html>Bad Gateway</html>")
