"""Hold ids: 32 hex digits, unique, in the order they were made (the indexes they go into
take them on their last pages instead of a random one)."""

from __future__ import annotations

import itertools
import os
import threading
import time

from ledger.ids import BLOCK_IDS, new_hold_id


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


def test_threads_get_ids_of_their_own_from_the_shared_random_blocks() -> None:
    # more ids than several blocks, taken by threads at once: none handed out twice
    per_thread = 3 * BLOCK_IDS
    made: list[list[str]] = [[] for _ in range(4)]

    def take(mine: list[str]) -> None:
        mine.extend(new_hold_id() for _ in range(per_thread))

    threads = [threading.Thread(target=take, args=(mine,)) for mine in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for mine in made for i in mine]
    assert len(every) == 4 * per_thread
    assert len(set(every)) == len(every)


def test_a_forked_child_does_not_hand_out_the_ids_its_parent_does() -> None:
    new_hold_id()  # a block is open in the parent, most of it not handed out yet
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, then gone, whatever happens (never back into pytest)
        try:
            os.close(read)
            os.write(write, "".join(new_hold_id()[12:] for _ in range(10)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        text = pipe.read()
    os.waitpid(pid, 0)
    child = {text[n : n + 20] for n in range(0, len(text), 20)}
    parent = {new_hold_id()[12:] for _ in range(10)}
    assert len(child) == 10
    assert not child & parent
