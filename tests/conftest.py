"""Shared pytest setup. Sections are owned by the part of runwatch that needs them."""

from __future__ import annotations

import pytest

# --- sources/rundir: real wandb run directories ------------------------------------------
# Written once per fixture-code hash by the real SDK (tests/fixtures/runmaker.py) and
# cached in .fixture-cache/, so only the first session after a change waits for them.


@pytest.fixture(scope="session")
def wandb_runs():
    """Every runmaker scenario's run directory (treat as read-only: copy to modify)."""
    from fixtures import runmaker

    return runmaker.build()


# --- notify: fake Slack, a real SMTP server, a webhook receiver -------------------------
# One server of each per session (they listen on 127.0.0.1, port chosen by the OS), reset
# before every test that asks for it.


@pytest.fixture(scope="session")
def _fake_slack_server():
    from fixtures.fakeslack import FakeSlack

    fake = FakeSlack()
    yield fake
    fake.close()


@pytest.fixture
def fake_slack(_fake_slack_server):
    _fake_slack_server.reset()
    return _fake_slack_server


@pytest.fixture(scope="session")
def _webhook_server():
    from fixtures.webhookserver import WebhookServer

    server = WebhookServer()
    yield server
    server.close()


@pytest.fixture
def webhook_server(_webhook_server):
    _webhook_server.reset()
    return _webhook_server


@pytest.fixture(scope="session")
def mail_cert(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1: (cert.pem, key.pem)."""
    from fixtures.mailserver import self_signed_cert

    try:
        return self_signed_cert(tmp_path_factory.mktemp("mailcert"))
    except (RuntimeError, OSError) as exc:
        pytest.skip(f"no certificate for the TLS mail tests: {exc}")


@pytest.fixture(scope="session")
def _mail_servers():
    servers = {}
    yield servers
    for server in servers.values():
        server.close()


@pytest.fixture
def mail_server(_mail_servers, request):
    """A running MailServer; parametrise indirectly with a mode ("plain", "starttls",
    "tls") — TLS modes use ``mail_cert``, every mode requires AUTH as alice/secret."""
    from fixtures.mailserver import MailServer

    mode = getattr(request, "param", "plain")
    if mode not in _mail_servers:
        cert = request.getfixturevalue("mail_cert") if mode != "plain" else None
        _mail_servers[mode] = MailServer(mode=mode, cert=cert, user=("alice", "secret"))
    server = _mail_servers[mode]
    server.reset()
    return server


# --- sources/wandb: a fake W&B server over real HTTP (tests/fixtures/fakewandb) -----------
# One server per session; `wandb_server` hands it to a test with no runs, counters or faults.


@pytest.fixture(scope="session")
def fake_wandb():
    """The session's FakeWandb, started on 127.0.0.1 (prefer `wandb_server` in tests)."""
    from fixtures.fakewandb import FakeWandb

    with FakeWandb() as fake:
        yield fake


@pytest.fixture
def wandb_server(fake_wandb):
    """The fake W&B server, reset before and after the test."""
    fake_wandb.reset()
    yield fake_wandb
    fake_wandb.reset()


# --- sources: the .wandb reader, compiled and pure Python -------------------------------
# runwatch reads logs with a compiled fast path where the install could build one
# (sources/_wandblog.c) and in pure Python elsewhere; reader tests run both ways.


@pytest.fixture(params=["compiled", "python"])
def reader_path(request, monkeypatch):
    from runwatch.sources import wandbfile

    if request.param == "python":
        monkeypatch.setattr(wandbfile, "compiled", None)
    elif wandbfile.compiled is None:
        pytest.skip("no compiled reader on this machine (built where a C compiler is)")
    return request.param
