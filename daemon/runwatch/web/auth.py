"""Who may read the status pages when they listen beyond loopback: a bearer token
(``http.token_file``) and/or users with passwords (``http.users_file``), each line
``name:pbkdf2_sha256$ITERATIONS$SALT$HASH`` as ``runwatch page-user NAME`` prints it. A
password is checked once per distinct header (PBKDF2 is slow on purpose): what passed is
remembered, by a digest of the header, until the file changes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
from collections.abc import Mapping
from pathlib import Path

ITERATIONS = 200_000
MAX_ITERATIONS = 2_000_000  # a line asking more would tie a request up for seconds
SCHEME = "pbkdf2_sha256"
_NOBODY = f"{SCHEME}${ITERATIONS}${'00' * 16}${'00' * 32}"  # unknown names cost the same


def hash_password(password: str, *, iterations: int = ITERATIONS) -> str:
    salt = secrets.token_hex(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), iterations)
    return f"{SCHEME}${iterations}${salt}${digest.hex()}"


def parse_users(text: str, where: str) -> dict[str, str]:
    """``name → hash`` from a users file's text; ValueError naming the line otherwise."""
    users: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, hashed = line.partition(":")
        parts = hashed.split("$")
        if (not sep or not name or len(parts) != 4 or parts[0] != SCHEME
                or not parts[1].isdigit() or not 1 <= int(parts[1]) <= MAX_ITERATIONS):
            raise ValueError(f"{where}:{number}: expected name:{SCHEME}$ITERATIONS$SALT$HASH,"
                             f" 1 to {MAX_ITERATIONS:,} iterations (runwatch page-user NAME"
                             " prints one)")
        try:
            bytes.fromhex(parts[2]), bytes.fromhex(parts[3])
        except ValueError:
            raise ValueError(f"{where}:{number}: salt and hash must be hex") from None
        users[name] = hashed
    if not users:
        raise ValueError(f"{where}: no users")
    return users


def _matches(password: str, hashed: str) -> bool:
    _, iterations, salt, digest = hashed.split("$")
    given = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt),
                                int(iterations))
    return hmac.compare_digest(given.hex(), digest)


class Gate:
    """Whether a request's ``Authorization`` header lets it read the pages."""

    def __init__(self) -> None:
        self._passed: dict[bytes, tuple[str, ...]] = {}
        self._lock = threading.Lock()

    def allows(self, header: str, *, token: str | None, users: Mapping[str, str] | None
               ) -> bool:
        if not token and not users:
            return True
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if token and scheme.lower() == "bearer":
            return hmac.compare_digest(value.encode(), token.encode())
        if users and scheme.lower() == "basic":
            key = hashlib.sha256(header.encode()).digest()
            stamp = tuple(sorted(users.items()))
            with self._lock:
                if self._passed.get(key) == stamp:
                    return True
            try:
                name, _, password = base64.b64decode(value, validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            hashed = users.get(name)
            if not _matches(password, hashed or _NOBODY) or hashed is None:
                return False  # (an unknown name takes as long: names are not given away)
            with self._lock:
                if len(self._passed) > 1000:
                    self._passed.clear()
                self._passed[key] = stamp
            return True
        return False


def read_users(path: Path) -> dict[str, str]:
    return parse_users(path.read_text(encoding="utf-8"), str(path))
