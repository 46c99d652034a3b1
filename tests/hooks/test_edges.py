"""The adapter's edges: float cost to Decimal, identity order, errors to HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from litellm.proxy._types import UserAPIKeyAuth

from credit_hooks.http_errors import status_for, to_proxy_exception
from credit_hooks.identity import BOUND_ACCOUNT_KEY, Identity, caller_from_auth
from credit_hooks.outcome import usd
from pricing.errors import (
    AccountInactive,
    BillingUnavailable,
    InsufficientCredits,
    MaxTokensExceeded,
    ModelNotAllowed,
    QuotaExceeded,
)


@pytest.mark.parametrize(
    ("reported", "exact"),
    [
        (0.00022500000000000002, Decimal("0.000225")),  # 10 x 2.5e-6 + 20 x 1e-5 in floats
        (5.000000000000001e-05, Decimal("0.00005")),
        (0.1 + 0.2, Decimal("0.3")),
        (0.0, Decimal("0")),
        (None, Decimal("0")),
        (1e-12, Decimal("1E-12")),
        ("0.000225", Decimal("0.000225")),
    ],
)
def test_a_float_cost_becomes_the_decimal_it_stands_for(reported: object, exact: Decimal) -> None:
    assert usd(reported) == exact


@pytest.mark.parametrize("bad", [-0.01, float("nan"), float("inf")])
def test_a_nonsense_cost_is_refused(bad: float) -> None:
    with pytest.raises(ValueError):
        usd(bad)


def test_the_first_identity_in_the_order_pays() -> None:
    auth = UserAPIKeyAuth(api_key="hash1", user_id="u1", team_id="t1", end_user_id="e1")
    assert caller_from_auth(auth, ("team", "user")).identity == Identity("team", "t1")
    assert caller_from_auth(auth, ("end_user", "team")).identity == Identity("end_user", "e1")
    assert caller_from_auth(UserAPIKeyAuth(api_key="hash1"), ("team", "user", "key")).identity == Identity(
        "key", "hash1"
    )
    assert caller_from_auth(UserAPIKeyAuth(), ("team", "user")).identity is None


def test_a_bound_key_names_its_account() -> None:
    auth = UserAPIKeyAuth(api_key="h", user_id="u", metadata={BOUND_ACCOUNT_KEY: 42})
    assert caller_from_auth(auth, ("team", "user")).bound_account_id == 42


def test_every_rejection_has_its_status_and_type() -> None:
    resets = datetime.now(UTC) + timedelta(seconds=90)
    cases = [
        (InsufficientCredits("user:a", "80", "1"), 402, "insufficient_quota"),
        (AccountInactive("user:a", "suspended"), 402, "account_inactive"),
        (ModelNotAllowed("free", "gpt-4o"), 403, "model_not_allowed"),
        (QuotaExceeded("gpt-4o calls today", 100, resets), 429, "quota_exceeded"),
        (MaxTokensExceeded("free", 9000, 4096), 400, "max_tokens_exceeded"),
        (BillingUnavailable("database down"), 503, "billing_unavailable"),
    ]
    for error, status, kind in cases:
        exc = to_proxy_exception(error)
        assert (status_for(error), exc.code, exc.type) == (status, str(status), kind)
        assert error.hint and error.hint in exc.message
    quota = to_proxy_exception(cases[3][0])
    assert 89 <= int(quota.headers["Retry-After"]) <= 91
    assert resets.strftime("%Y-%m-%dT%H:%M") in quota.message
