"""The credit gate's end-to-end tests again, with the ledger's group commit switched on."""

from __future__ import annotations

import pytest

from .proxy import RunningProxy
from .test_credit_gate import (  # collected here, against this module's proxy
    test_a_call_is_charged_litellm_cost_times_markup,
    test_a_failed_upstream_call_releases_the_hold,
    test_a_stream_is_charged_from_its_final_usage,
    test_an_account_that_cannot_cover_the_worst_case_gets_402,
    test_embeddings_go_through_the_same_gate,
)

pytestmark = pytest.mark.e2e

PROXY_ENV = {"CREDITS_GROUP_COMMIT": "true"}

__all__ = [
    "test_a_call_is_charged_litellm_cost_times_markup",
    "test_a_failed_upstream_call_releases_the_hold",
    "test_a_stream_is_charged_from_its_final_usage",
    "test_an_account_that_cannot_cover_the_worst_case_gets_402",
    "test_embeddings_go_through_the_same_gate",
]


def test_the_proxy_runs_with_group_commit(proxy: RunningProxy) -> None:
    assert "with group commit" in proxy.log()
