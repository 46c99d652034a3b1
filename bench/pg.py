"""A throwaway PostgreSQL database ``credits_bench_<random>``, dropped afterwards."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from sqlalchemy.engine import make_url

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _libpq(url: str) -> str:
    """A SQLAlchemy URL as a libpq conninfo URL (no ``+psycopg``)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def available(admin_url: str) -> str | None:
    """The server version, or None when it cannot be reached."""
    try:
        with psycopg.connect(_libpq(admin_url), connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            return str(row[0]) if row else "?"
    except psycopg.Error:
        return None


def settings(url: str) -> dict[str, str]:
    """Server settings that decide commit cost: fsync, synchronous_commit, wal_sync_method."""
    out: dict[str, str] = {}
    with psycopg.connect(_libpq(url), connect_timeout=3) as conn:
        for name in ("fsync", "synchronous_commit", "wal_sync_method", "shared_buffers", "max_connections"):
            row = conn.execute(f"SHOW {name}").fetchone()
            out[name] = str(row[0]) if row else "?"
    return out


@contextmanager
def temp_database(admin_url: str) -> Iterator[str]:
    """Create a fresh database, yield its SQLAlchemy URL, drop it (WITH FORCE) at the end."""
    name = f"credits_bench_{secrets.token_hex(4)}"
    admin = _libpq(admin_url)
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def libpq_url(url: str) -> str:
    return _libpq(url)
