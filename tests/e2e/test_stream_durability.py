"""A stream ends at the client only after its charge is on disk.

The test blocks the charge for a while (it locks ``usage_events`` in PostgreSQL)
and checks that the client's stream cannot finish before the charge is written.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Iterator

import openai
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from conftest import PG_ADMIN_URL, service_missing
from ledger import Ledger

from .proxy import RunningProxy

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

MICRO = 1_000_000
LOCK_SECONDS = 2.0


@pytest.fixture(scope="module")
def db_file_url(pg_admin: Engine | str) -> Iterator[str]:
    """This module's proxy keeps its ledger in a fresh PostgreSQL database."""
    if isinstance(pg_admin, str):
        service_missing("PostgreSQL", pg_admin)
    name = f"credits_e2e_{os.getpid()}_{secrets.token_hex(4)}"
    with pg_admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    with pg_admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_the_stream_does_not_end_before_its_charge_is_written(
    proxy: RunningProxy, books: Ledger, db_file_url: str
) -> None:
    account = books.open_account("user", "streamer", tier="pro")
    books.grant(account.id, 1000 * MICRO, source="purchase")
    api = openai.OpenAI(
        base_url=f"{proxy.base_url}/v1", api_key=books.issue_key(account.id).plaintext, max_retries=0
    )
    locker = create_engine(db_file_url)
    locked = threading.Event()
    released_at: list[float] = []

    def hold_the_table() -> None:
        with locker.begin() as connection:
            connection.execute(text("LOCK TABLE usage_events IN EXCLUSIVE MODE"))
            locked.set()
            time.sleep(LOCK_SECONDS)
            released_at.append(time.monotonic())

    blocker = threading.Thread(target=hold_the_table)
    blocker.start()
    assert locked.wait(10)
    try:
        stream = api.chat.completions.create(
            model="demo-fast", messages=[{"role": "user", "content": "hi"}], max_tokens=50, stream=True
        )
        chunks = list(stream)
        ended_at = time.monotonic()
        events_at_end = books.usage(account.id)
    finally:
        blocker.join()
        locker.dispose()

    assert chunks
    assert ended_at >= released_at[0], "the client's stream ended while the charge was still blocked"
    assert len(events_at_end) == 1 and events_at_end[0].stream is True
