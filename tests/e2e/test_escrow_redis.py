"""The escrow tests again, with the escrow in Redis (shared by replicas), lent in blocks."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
import redis

from .test_escrow_local import (  # collected here, against this module's proxy
    test_a_failed_call_gives_its_loan_back,
    test_an_account_that_cannot_cover_the_worst_case_gets_402,
    test_calls_lent_from_escrows_are_each_charged_once,
    test_the_proxy_lends_from_an_escrow,
)

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

PROXY_ENV = {
    "CREDITS_SETTLE_MODE": "journal",
    "CREDITS_ESCROW": "redis",
    "CREDITS_REDIS_URL": "redis://127.0.0.1:6379/9",
    "CREDITS_REDIS_PREFIX": f"credits-e2e-{secrets.token_hex(4)}",
    "CREDITS_ESCROW_CALLS": "5",
    "CREDITS_ESCROW_BLOCK_CALLS": "2",  # each proxy lends blocks of 2 calls from memory
    "CREDITS_ESCROW_RICH_FACTOR": "2",
}

__all__ = [
    "test_a_failed_call_gives_its_loan_back",
    "test_an_account_that_cannot_cover_the_worst_case_gets_402",
    "test_calls_lent_from_escrows_are_each_charged_once",
    "test_the_proxy_lends_from_an_escrow",
]


@pytest.fixture(autouse=True)
def _redis_is_there(redis_url: str) -> None:
    """Fail (in CI) or skip when Redis is not running, like every Redis test."""


@pytest.fixture(autouse=True, scope="module")
def _forget_keys() -> Iterator[None]:
    """The proxy's escrow keys go with the module (they would expire with the hold TTL)."""
    yield
    client = redis.Redis.from_url(PROXY_ENV["CREDITS_REDIS_URL"], socket_timeout=2)
    try:
        keys = list(client.scan_iter(match=f"{PROXY_ENV['CREDITS_REDIS_PREFIX']}:*"))
        if keys:
            client.delete(*keys)
    except redis.RedisError:
        pass  # Redis missing: the other fixture already said so
    finally:
        client.close()
