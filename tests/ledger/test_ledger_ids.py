"""Hold ids: 32 hex digits, unique, in the order they were made (the indexes they go into
take them on their last pages instead of a random one)."""

from __future__ import annotations

import itertools
import time

from ledger.ids import new_hold_id


def test_hold_ids_are_unique_hex_and_sort_in_the_order_they_were_made() -> None:
    first = [new_hold_id() for _ in range(2_000)]
    time.sleep(0.002)
    later = new_hold_id()
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in first)
    assert len(set(first)) == len(first)
    # within one millisecond the order is random; across milliseconds it is the clock's
    assert all(a[:12] <= b[:12] for a, b in itertools.pairwise(first))
    assert max(first) < later
    assert abs(int(later[:12], 16) - time.time_ns() // 1_000_000) < 60_000
