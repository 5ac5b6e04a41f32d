"""Telling systemd how the daemon is doing: the ``sd_notify`` protocol, standard library only.

The protocol is one datagram of newline-separated ``NAME=value`` lines sent to the
``AF_UNIX`` socket named by ``$NOTIFY_SOCKET`` (a leading ``@`` means Linux's abstract
namespace). Without ``NOTIFY_SOCKET`` the process is not supervised and every call is a no-op
that returns False, so the daemon calls these helpers unconditionally.

Why not a package: ``sdnotify`` (PyPI) last shipped in 2017, swallows every error and knows
nothing of ``RELOADING=1``/``MONOTONIC_USEC``; ``systemd-python`` needs libsystemd headers to
build. The protocol is a dozen lines of ``socket``.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from collections.abc import Mapping

__all__ = [
    "notify", "ready", "reloading", "status", "stopping", "watchdog", "watchdog_interval",
]

log = logging.getLogger(__name__)


def notify(*lines: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``lines`` (``"READY=1"``, ``"STATUS=..."``) as one datagram to ``$NOTIFY_SOCKET``.

    Returns True once sent; False when the variable is unset or empty (not run by systemd)
    and when sending failed. A failure is logged as a warning naming the socket, never
    raised: losing touch with systemd must not stop the alerting (under ``WatchdogSec=``,
    systemd restarts the daemon when the pings stop, and the log says why).
    """
    address = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if not lines:
        raise ValueError("sd_notify: nothing to send")
    for line in lines:
        if "\n" in line or "=" not in line:
            raise ValueError(f"not a NAME=value line for sd_notify: {line!r}")
    payload = "\n".join(lines).encode("utf-8")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(payload, _socket_address(address))
    except OSError as exc:
        log.warning("sd_notify: sending %s to NOTIFY_SOCKET=%s failed: %s",
                    lines[0], address, exc.strerror or exc)
        return False
    return True


def _socket_address(address: str) -> bytes:
    if address.startswith("@"):
        return b"\0" + os.fsencode(address[1:])
    if address.startswith("/"):
        return os.fsencode(address)
    # systemd ≥ 254 may also hand out vsock: addresses (for VMs); we never run there.
    raise OSError(errno.EAFNOSUPPORT, f"unsupported NOTIFY_SOCKET address {address!r}")


def ready(status_text: str | None = None) -> bool:
    """Startup (or a reload) is complete: ``systemctl start`` returns now."""
    return notify("READY=1", *_status_lines(status_text))


def reloading() -> bool:
    """A reload has begun; :func:`ready` ends it. ``Type=notify-reload`` (systemd ≥ 253)
    requires the ``MONOTONIC_USEC`` timestamp, ``Type=notify`` accepts it."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}")


def stopping() -> bool:
    """Shutdown has begun (draining the last tick)."""
    return notify("STOPPING=1")


def watchdog() -> bool:
    """Still alive and working: resets the ``WatchdogSec=`` timer."""
    return notify("WATCHDOG=1")


def status(text: str) -> bool:
    """A one-line free-form status, shown by ``systemctl status``."""
    return notify(*_status_lines(text))


def _status_lines(text: str | None) -> list[str]:
    # The protocol is line-based: a newline in an error message would start a new assignment.
    return [] if text is None else ["STATUS=" + " ".join(text.splitlines())]


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """The watchdog timeout in seconds when systemd expects :func:`watchdog` pings from this
    process, else None. Ping at least twice per interval (systemd's own advice).

    ``WATCHDOG_PID``, when set, names the process the timeout is meant for: a child that
    inherited the environment is not expected to ping.
    """
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 1_000_000
