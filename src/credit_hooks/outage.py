"""Fail-open bookkeeping: what each account owes for calls served while the ledger was down.

Under ``CREDITS_OUTAGE_POLICY=fail_open`` a known account may keep calling while
the ledger is unreachable, up to ``CREDITS_FAIL_OPEN_EXPOSURE_CREDITS`` of calls
not yet written: the worst case of its calls in flight plus the charges of its
finished calls that wait in the outbox. Past the cap, 503 ``billing_unavailable``.
The numbers live in this process only: each replica caps its own exposure.
"""

from __future__ import annotations

import threading
from collections import defaultdict

from ledger import micro_to_credit_str
from pricing.errors import BillingUnavailable


class OfflineBook:
    def __init__(self, enabled: bool, cap_micro: int) -> None:
        self.enabled = enabled
        self.cap_micro = cap_micro
        self._lock = threading.Lock()
        self._in_flight: defaultdict[int, int] = defaultdict(int)
        self._pending: defaultdict[int, int] = defaultdict(int)

    def exposure(self, account_id: int) -> int:
        return self._in_flight[account_id] + self._pending[account_id]

    def admit(self, account_id: int, worst_micro: int) -> None:
        """Count a call served without a hold, or refuse it past the cap."""
        with self._lock:
            if not self.enabled:
                raise BillingUnavailable("the ledger is unreachable")
            if self.exposure(account_id) + worst_micro > self.cap_micro:
                raise BillingUnavailable(
                    "the ledger is unreachable and this account has "
                    f"{micro_to_credit_str(self.exposure(account_id))} credits of calls not yet written "
                    f"(limit {micro_to_credit_str(self.cap_micro)})"
                )
            self._in_flight[account_id] += worst_micro

    def finished(self, account_id: int, worst_micro: int, pending_micro: int) -> None:
        """The call ended: its worst case leaves, what still waits in the outbox stays."""
        with self._lock:
            self._in_flight[account_id] = max(0, self._in_flight[account_id] - worst_micro)
            self._pending[account_id] += pending_micro

    def outbox_drained(self) -> None:
        """Everything waiting reached the ledger."""
        with self._lock:
            self._pending.clear()
