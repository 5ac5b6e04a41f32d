"""``runwatch.sdnotify`` against real ``AF_UNIX`` datagram sockets, as systemd listens."""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
import uuid

import pytest

from runwatch import sdnotify


@pytest.fixture
def listener(tmp_path, monkeypatch):
    """A datagram socket bound in a temp dir, named by ``NOTIFY_SOCKET``."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(os.fspath(path))
    sock.settimeout(5)  # a datagram to a local socket is queued before sendto returns
    monkeypatch.setenv("NOTIFY_SOCKET", os.fspath(path))
    yield sock
    sock.close()


def received(sock: socket.socket) -> bytes:
    return sock.recv(4096)


def nothing_queued(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    return False


@pytest.mark.parametrize(("send", "datagram"), [
    (sdnotify.ready, b"READY=1"),
    (sdnotify.watchdog, b"WATCHDOG=1"),
    (sdnotify.stopping, b"STOPPING=1"),
    (lambda: sdnotify.status("3 runs, 1 firing"), b"STATUS=3 runs, 1 firing"),
    (lambda: sdnotify.ready("first tick done"), b"READY=1\nSTATUS=first tick done"),
    (lambda: sdnotify.notify("READY=1", "STATUS=x"), b"READY=1\nSTATUS=x"),
])
def test_sends_exactly_the_protocol_lines(listener, send, datagram):
    assert send() is True
    assert received(listener) == datagram
    assert nothing_queued(listener)


def test_a_multiline_status_is_sent_as_one_line(listener):
    assert sdnotify.status("store unreachable:\nconnection refused")
    assert received(listener) == b"STATUS=store unreachable: connection refused"


def test_reloading_carries_the_monotonic_time_notify_reload_needs(listener):
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert sdnotify.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = received(listener).decode().split("\n")
    assert first == "RELOADING=1"
    name, _, usec = second.partition("=")
    assert name == "MONOTONIC_USEC"
    assert before <= int(usec) <= after


@pytest.mark.skipif(sys.platform != "linux", reason="the abstract namespace is Linux's")
def test_abstract_socket_named_with_at(monkeypatch):
    name = f"runwatch-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"


def test_env_mapping_overrides_the_process_environment(listener, monkeypatch):
    address = os.environ["NOTIFY_SOCKET"]
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert sdnotify.notify("READY=1", env={"NOTIFY_SOCKET": address})
    assert received(listener) == b"READY=1"


@pytest.mark.parametrize("value", [None, ""])
def test_without_notify_socket_nothing_is_sent(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    else:
        monkeypatch.setenv("NOTIFY_SOCKET", value)
    assert sdnotify.ready() is False
    assert sdnotify.watchdog() is False
    assert sdnotify.notify("NONSENSE") is False  # not even validated: nobody listens


@pytest.mark.parametrize("line", ["READY=1\nWATCHDOG=1", "READY"])
def test_a_line_that_is_not_one_assignment_is_refused(listener, line):
    with pytest.raises(ValueError, match="NAME=value"):
        sdnotify.notify(line)
    assert nothing_queued(listener)


def test_nothing_to_send_is_refused(listener):
    with pytest.raises(ValueError, match="nothing to send"):
        sdnotify.notify()


def test_an_unusable_socket_is_logged_and_not_raised(tmp_path, monkeypatch, caplog):
    missing = os.fspath(tmp_path / "gone.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", missing)
    with caplog.at_level(logging.WARNING, logger="runwatch.sdnotify"):
        assert sdnotify.watchdog() is False
    (record,) = caplog.records
    assert "WATCHDOG=1" in record.getMessage() and missing in record.getMessage()


def test_an_address_that_is_no_unix_socket_is_logged(monkeypatch, caplog):
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    with caplog.at_level(logging.WARNING, logger="runwatch.sdnotify"):
        assert sdnotify.ready() is False
    assert "unsupported NOTIFY_SOCKET address" in caplog.text


@pytest.mark.parametrize(("env", "expected"), [
    ({}, None),
    ({"WATCHDOG_USEC": "600000000"}, 600.0),
    ({"WATCHDOG_USEC": "1500000", "WATCHDOG_PID": str(os.getpid())}, 1.5),
    ({"WATCHDOG_USEC": "600000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
    ({"WATCHDOG_USEC": "600000000", "WATCHDOG_PID": "x"}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "-5"}, None),
    ({"WATCHDOG_USEC": "ten minutes"}, None),
    ({"WATCHDOG_PID": str(os.getpid())}, None),
], ids=["unset", "set", "for-us", "for-another-pid", "bad-pid", "zero", "negative",
        "not-a-number", "pid-only"])
def test_watchdog_interval(env, expected):
    assert sdnotify.watchdog_interval(env) == expected


def test_watchdog_interval_reads_the_process_environment(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert sdnotify.watchdog_interval() == 2.0
