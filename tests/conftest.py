"""Shared fixtures: real databases for the ledger and everything built on it.

- ``sqlite_url``: a fresh SQLite file in the test's tmp_path.
- ``pg_url``: a fresh PostgreSQL database per test, dropped afterwards.
- ``ledger``: a ``Ledger`` with its schema, once on SQLite and once on PostgreSQL;
  after the test it must pass ``audit()``.

PostgreSQL is reached through ``CREDITS_TEST_PG_URL`` (an admin connection, default
``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``). When it is unreachable the
test is skipped locally and FAILS in CI (``CI=true``): CI must not go green by skipping.
"""

from __future__ import annotations

import os

# nothing may download at run time: LiteLLM reads its bundled cost map
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from ledger import Ledger

PG_ADMIN_URL = os.environ.get("CREDITS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def service_missing(service: str, reason: str) -> NoReturn:
    """Skip locally, fail in CI: a missing service must never make CI pass silently."""
    message = f"{service} is unreachable ({reason})"
    if in_ci():
        pytest.fail(f"{message}; CI=true, so tests that need it fail instead of skipping", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[Engine | str]:
    """An AUTOCOMMIT engine on the admin database, or the reason it is unreachable."""
    engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_size=1, max_overflow=2)
    try:
        with engine.connect() as connection:
            connection.execute(text("select 1"))
    except SQLAlchemyError as error:
        engine.dispose()
        yield str(getattr(error, "orig", error)).strip().splitlines()[0]
        return
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(pg_admin: Engine | str) -> Iterator[str]:
    """URL of a brand-new, empty PostgreSQL database (dropped after the test)."""
    if isinstance(pg_admin, str):
        service_missing(f"PostgreSQL at {make_url(PG_ADMIN_URL).render_as_string()}", pg_admin)
    name = f"credits_test_{os.getpid()}_{secrets.token_hex(4)}"
    with pg_admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with pg_admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'credits.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """A fresh database of each kind the ledger supports."""
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def ledger(db_url: str) -> Iterator[Ledger]:
    """A ledger with its schema on a fresh database; the books must balance afterwards."""
    book = Ledger(db_url)
    book.create_schema()
    try:
        yield book
        problems = book.audit()
        assert problems == [], "ledger audit failed after the test:\n" + "\n".join(problems)
    finally:
        book.dispose()


REDIS_TEST_URL = os.environ.get("CREDITS_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")


@pytest.fixture
def redis_url() -> str:
    """The test Redis (db 9 unless ``CREDITS_TEST_REDIS_URL``); skipped locally, failed in CI
    when it is unreachable. Tests keep to their own ``redis_prefix``: the database is shared."""
    import redis

    client = redis.Redis.from_url(REDIS_TEST_URL, socket_timeout=1, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as error:
        service_missing(f"Redis at {REDIS_TEST_URL}", str(error))
    finally:
        client.close()
    return REDIS_TEST_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    import redis

    prefix = f"test-{os.getpid()}-{secrets.token_hex(4)}"
    yield prefix
    client = redis.Redis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
