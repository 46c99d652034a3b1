"""The escrow store on Redis, shared by every proxy replica: each step is one Lua script.

One hash per account (``{prefix}:escrow:{account_id}``), so every script touches one
key (and works on a Redis Cluster). The current escrow's fields:

- ``id``: its PostgreSQL hold id; ``rem``: µcr not lent yet (negative after calls that
  cost more than they were lent); ``inf``: calls lent and not given back;
- ``until``: lend from it only before this (ms since the epoch, the ledger's clock):
  its PostgreSQL expiry minus a margin; ``renew``: renew it from this time on;
  ``exp``: its PostgreSQL expiry;
- ``low``: its low watermark; ``refill``: the next escrow may be opened from this time
  on (a claim, like ``renew``);
- ``avail``, ``bal``: the account's figures right after the escrow was taken, for the
  estimates a loan carries.

An escrow replaced while calls it lent are still running is kept as ``r:{id}:rem``,
``r:{id}:inf``, ``r:{id}:exp`` until the last of them gives back. The hash expires
(PEXPIRE) at the current escrow's ``until``; the refill lock is a key of its own,
``{prefix}:escrow:{account_id}:refill``.

Amounts pass as decimal strings and go through HINCRBY, never through Lua arithmetic
(Lua numbers are doubles, and print large ones in exponent form).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from .escrow_store import Current, NewEscrow, StoreUnavailable, Taken

SOCKET_TIMEOUT: Final = 0.5

# KEYS[1] account hash; ARGV: micro, now_ms, renew claim, refill claim (ms).
# -> {0} nothing lent; {1, id, rem, renew?, exp, avail, bal, refill?}
TAKE: Final = """
local f = redis.call('HMGET', KEYS[1], 'id', 'rem', 'until', 'renew', 'exp', 'avail', 'bal', 'low', 'refill')
if not f[1] then return {0} end
local now = tonumber(ARGV[2])
if now >= tonumber(f[3]) or tonumber(f[2]) < tonumber(ARGV[1]) then return {0} end
local rem = redis.call('HINCRBY', KEYS[1], 'rem', '-' .. ARGV[1])
redis.call('HINCRBY', KEYS[1], 'inf', 1)
local renew = 0
if now >= tonumber(f[4]) then
    -- one lender renews; the claim runs out, so a failed renewal is tried again
    redis.call('HSET', KEYS[1], 'renew', ARGV[3])
    renew = 1
end
local refill = 0
if rem < tonumber(f[8] or '0') and now >= tonumber(f[9] or '0') then
    -- one lender opens the next escrow while the others keep lending from this one
    redis.call('HSET', KEYS[1], 'refill', ARGV[4])
    refill = 1
end
return {1, f[1], rem, renew, f[5], f[6], f[7], refill}
"""

# KEYS[1] account hash; ARGV: id, rem, inf, until, renew, exp, avail, bal, low, pexpire_ms, now_ms.
# -> {old id or '', µcr of the old escrow to shrink back now}
INSTALL: Final = """
local old = redis.call('HMGET', KEYS[1], 'id', 'rem', 'inf', 'exp')
local shrink = '0'
local old_id = ''
if old[1] then
    old_id = old[1]
    local keep = old[2]
    if tonumber(old[2]) > 0 then
        -- not lent to anyone: the account gets it back at once
        shrink = old[2]
        keep = '0'
    end
    if tonumber(old[3]) > 0 then
        local p = 'r:' .. old[1] .. ':'
        redis.call('HSET', KEYS[1], p .. 'rem', keep, p .. 'inf', old[3], p .. 'exp', old[4])
    end
end
local now = tonumber(ARGV[11])
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
    local gone = string.match(fields[i], '^r:(.+):exp$')
    if gone and tonumber(fields[i + 1]) <= now then
        local p = 'r:' .. gone .. ':'
        redis.call('HDEL', KEYS[1], p .. 'rem', p .. 'inf', p .. 'exp')
    end
end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'rem', ARGV[2], 'inf', ARGV[3], 'until', ARGV[4],
    'renew', ARGV[5], 'exp', ARGV[6], 'avail', ARGV[7], 'bal', ARGV[8], 'low', ARGV[9], 'refill', '0')
redis.call('PEXPIRE', KEYS[1], ARGV[10])
return {old_id, shrink}
"""

# KEYS[1] account hash; ARGV: escrow id, µcr back (negative: the call cost more).
# -> µcr to shrink the escrow by (its last call of a replaced escrow gave back), else 0
GIVE_BACK: Final = """
if redis.call('HGET', KEYS[1], 'id') == ARGV[1] then
    redis.call('HINCRBY', KEYS[1], 'rem', ARGV[2])
    redis.call('HINCRBY', KEYS[1], 'inf', -1)
    return 0
end
local p = 'r:' .. ARGV[1] .. ':'
if redis.call('HEXISTS', KEYS[1], p .. 'inf') == 0 then return 0 end
local rem = redis.call('HINCRBY', KEYS[1], p .. 'rem', ARGV[2])
if redis.call('HINCRBY', KEYS[1], p .. 'inf', -1) > 0 then return 0 end
redis.call('HDEL', KEYS[1], p .. 'rem', p .. 'inf', p .. 'exp')
if rem > 0 then return rem end
return 0
"""

# KEYS[1] account hash; ARGV: id, until, renew, exp, pexpire_ms. -> 1 when still current
RENEWED: Final = """
if redis.call('HGET', KEYS[1], 'id') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'until', ARGV[2], 'renew', ARGV[3], 'exp', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""

# KEYS[1] account hash; ARGV: id. Forget an escrow PostgreSQL no longer holds open.
RETIRE_DEAD: Final = """
if redis.call('HGET', KEYS[1], 'id') ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], 'id', 'rem', 'inf', 'until', 'renew', 'exp', 'avail', 'bal', 'low', 'refill')
return 1
"""

# KEYS[1] refill lock; ARGV: token, px. -> the token when taken, else what holds it
ACQUIRE: Final = """
local held = redis.call('GET', KEYS[1])
if held then return held end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
"""

# KEYS[1] refill lock; ARGV: token, mark ('' to delete), px of the mark.
RELEASE: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
    redis.call('DEL', KEYS[1])
else
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
"""


@contextmanager
def _unavailable() -> Iterator[None]:
    try:
        yield
    except RedisError as exc:
        raise StoreUnavailable(f"Redis: {type(exc).__name__}: {exc}") from exc


class RedisEscrowStore:
    """``EscrowStore`` on Redis: every replica's book on the same Redis shares each escrow."""

    def __init__(self, redis_url: str, *, prefix: str = "credits") -> None:
        self._prefix = prefix
        # No retries: a give back sent twice would return its credit twice.
        self._redis = redis.Redis.from_url(
            redis_url,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )
        self._take = self._redis.register_script(TAKE)
        self._install = self._redis.register_script(INSTALL)
        self._give_back = self._redis.register_script(GIVE_BACK)
        self._renewed = self._redis.register_script(RENEWED)
        self._retire_dead = self._redis.register_script(RETIRE_DEAD)
        self._acquire = self._redis.register_script(ACQUIRE)
        self._release = self._redis.register_script(RELEASE)

    def key(self, account_id: int) -> str:
        """The account's Redis hash (tests and operators look at it)."""
        return f"{self._prefix}:escrow:{account_id}"

    def lock_key(self, account_id: int) -> str:
        return f"{self.key(account_id)}:refill"

    def take(
        self, account_id: int, micro: int, now_ms: int, renew_claim: int, refill_claim: int
    ) -> Taken | None:
        with _unavailable():
            got: list[Any] = self._take(
                keys=[self.key(account_id)], args=[micro, now_ms, renew_claim, refill_claim]
            )
        if got[0] == 0:
            return None
        _, escrow_id, rem, renew, exp, avail, bal, refill = got
        return Taken(escrow_id, int(rem), bool(renew), bool(refill), int(exp), int(avail), int(bal))

    def install(self, account_id: int, escrow: NewEscrow, now_ms: int) -> tuple[str, int]:
        e = escrow
        args: list[str | int] = [e.id, e.rem, e.inf, e.until, e.renew, e.exp, e.avail, e.bal, e.low]
        args += [max(1, e.until - now_ms), now_ms]
        with _unavailable():
            old_id, shrink = self._install(keys=[self.key(account_id)], args=args)
        return str(old_id), int(shrink)

    def give_back(self, account_id: int, escrow_id: str, micro_back: int, now_ms: int) -> int:
        # now_ms is not needed: Redis expires the hash by itself
        with _unavailable():
            return int(self._give_back(keys=[self.key(account_id)], args=[escrow_id, micro_back]))

    def renewed(self, account_id: int, escrow_id: str, until: int, renew: int, exp: int, now_ms: int) -> bool:
        args: list[str | int] = [escrow_id, until, renew, exp, max(1, until - now_ms)]
        with _unavailable():
            return bool(self._renewed(keys=[self.key(account_id)], args=args))

    def retire_dead(self, account_id: int, escrow_id: str) -> bool:
        with _unavailable():
            return bool(self._retire_dead(keys=[self.key(account_id)], args=[escrow_id]))

    def current(self, account_id: int, now_ms: int) -> Current | None:
        with _unavailable():
            f: list[Any] = self._redis.hmget(
                self.key(account_id), ["id", "rem", "inf", "until", "renew", "exp"]
            )
        if f[0] is None:
            return None
        return Current(str(f[0]), int(f[1]), int(f[2]), int(f[3]), int(f[4]), int(f[5]))

    def acquire(self, account_id: int, token: str, ttl_ms: int) -> str:
        with _unavailable():
            return str(self._acquire(keys=[self.lock_key(account_id)], args=[token, ttl_ms]))

    def release(self, account_id: int, token: str, mark: str, mark_ttl_ms: int) -> None:
        with _unavailable():
            self._release(keys=[self.lock_key(account_id)], args=[token, mark, mark_ttl_ms])

    def holder(self, account_id: int) -> str | None:
        with _unavailable():
            held = self._redis.get(self.lock_key(account_id))
        return None if held is None else str(held)

    def close(self) -> None:
        self._redis.close()
