"""A PostgreSQL schema of its own for a test: the server at ``RUNWATCH_TEST_PG_URL``
(default ``postgresql://postgres@127.0.0.1:5432/test``), a fresh schema named after the
test's temporary directory, dropped afterwards. A test skips, with one line, where no
server answers."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest

PG_URL = os.environ.get("RUNWATCH_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


class Schema:
    def __init__(self, tmp: Path, suffix: str = "") -> None:
        psycopg = pytest.importorskip("psycopg")
        self.name = f"rwt_{zlib.crc32(str(tmp).encode()):08x}{suffix}"
        try:
            with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as admin:
                admin.execute(f"DROP SCHEMA IF EXISTS {self.name} CASCADE")
                admin.execute(f"CREATE SCHEMA {self.name}")
        except psycopg.OperationalError as exc:
            pytest.skip(f"no PostgreSQL at {PG_URL}: {str(exc).splitlines()[0]}")

    @property
    def url(self) -> str:
        joiner = "&" if "?" in PG_URL else "?"
        return f"{PG_URL}{joiner}schema={self.name}"

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f"DROP SCHEMA IF EXISTS {self.name} CASCADE")
