"""Ids of holds: 32 hex digits, as ``uuid.uuid4().hex`` gave them.

The same 128 bits from the OS's random source without building a ``UUID`` (which
fixes 6 of them): 0.7 µs instead of 4.9, on the event loop of every lent call.
"""

from __future__ import annotations

import os


def new_hold_id() -> str:
    return os.urandom(16).hex()
