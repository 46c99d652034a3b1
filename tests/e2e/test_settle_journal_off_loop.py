"""The settle journal with every fsync waited for off the event loop (``CREDITS_JOURNAL_LOOP_SYNC_MS=0``).

By default a proxy records a charge on its event loop once the journal's fsyncs have
proved quick; this module keeps the other way, on the ledger pool, covered end to end:
the same calls, each charged once.
"""

from __future__ import annotations

import pytest

from .proxy import RunningProxy
from .test_settle_journal import (  # collected here, against this module's proxy
    test_a_journaled_call_is_charged_once_and_its_headers_say_so,
    test_a_journaled_stream_is_charged_from_its_final_usage,
    test_concurrent_calls_of_one_account_are_each_charged_once,
)

pytestmark = pytest.mark.e2e

PROXY_ENV = {"CREDITS_SETTLE_MODE": "journal", "CREDITS_JOURNAL_LOOP_SYNC_MS": "0"}

__all__ = [
    "test_a_journaled_call_is_charged_once_and_its_headers_say_so",
    "test_a_journaled_stream_is_charged_from_its_final_usage",
    "test_concurrent_calls_of_one_account_are_each_charged_once",
]


def test_the_proxy_says_it_waits_for_fsyncs_off_the_loop(proxy: RunningProxy) -> None:
    assert "settle journal (every fsync waited for off the event loop)" in proxy.log()
