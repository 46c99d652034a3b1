"""The benchmark's CPU accounting: the event loop's thread apart from the process's others."""

from __future__ import annotations

import os
import threading
import time

from bench.procs import ThreadUse, cpu_seconds_of, loop_thread_cpu_seconds, threads


def _spin(seconds: float) -> None:
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


def test_the_main_thread_is_counted_apart_from_the_others() -> None:
    me = os.getpid()
    loop_before, all_before = loop_thread_cpu_seconds(me), cpu_seconds_of([me])
    side = threading.Thread(target=_spin, args=(0.3,))
    side.start()
    side.join()  # another thread's CPU: the process's, not the main thread's
    loop_mid, all_mid = loop_thread_cpu_seconds(me), cpu_seconds_of([me])
    _spin(0.3)  # the main thread's own
    loop_after = loop_thread_cpu_seconds(me)
    assert all_mid - all_before >= 0.2
    assert loop_mid - loop_before < 0.1
    assert loop_after - loop_mid >= 0.2


def test_a_process_that_is_gone_counts_nothing() -> None:
    assert cpu_seconds_of([2**22 + 12345]) == 0.0


def test_threads_counts_each_threads_context_switches_and_cpu_by_name() -> None:
    me = os.getpid()
    before = threads(me)
    ping, pong, done = threading.Event(), threading.Event(), threading.Event()

    def side() -> None:
        for _ in range(20):
            ping.wait()  # blocks: a voluntary switch each time
            ping.clear()
            pong.set()
        done.wait()  # stays until counted: a thread gone takes its counts along

    helper = threading.Thread(target=side)
    helper.start()
    for _ in range(20):
        ping.set()
        pong.wait()
        pong.clear()
    _spin(0.2)
    after = threads(me)
    done.set()
    helper.join()
    loop = after["event loop"] - before["event loop"]
    assert loop.cpu_s >= 0.1
    others = sum((use for name, use in after.items() if name != "event loop"), ThreadUse())
    others -= sum((use for name, use in before.items() if name != "event loop"), ThreadUse())
    assert others.switches >= 10
    assert loop.switches >= 10  # the main thread waited for each pong too
