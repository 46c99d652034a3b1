"""Charges that could not reach the ledger, kept on local disk until they can.

LiteLLM swallows exceptions raised in its success callbacks, so a charge the
database refused would vanish. Instead it is appended here (one JSON line,
flushed and fsync'd before ``append`` returns) and ``drain`` settles it later.
Settling is idempotent by hold id, so a line applied twice, or applied by a
process that crashed before rewriting the file, is still charged once.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from dataclasses import dataclass, fields
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from pricing.errors import AccountNotFound, CreditsError, HoldNotFound

from .service import Ledger
from .types import UsageRecord

log = logging.getLogger("credits.outbox")

_USAGE_FIELDS = tuple(f.name for f in fields(UsageRecord))
# the start of a line, for a hold id made of plain characters: ``to_line`` writes no
# space after the colon, lines written before it (by json.dumps) have one
_HOLD_ID = re.compile(rb'\{"hold_id": ?"([0-9A-Za-z_.:-]*)"')


def _exact_text(value: object) -> str:
    # orjson calls this for what it cannot write itself: the usage's Decimal cost, as
    # its exact text (``from_json`` reads it back with ``Decimal``)
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


@dataclass(frozen=True, slots=True)
class PendingCharge:
    """A charge to write. ``account_id`` is set for a call served without a hold (the
    ledger was unreachable at pre-call): ``drain`` then charges it with ``settle_unheld``
    when no hold with this id exists. Lines written before the field existed load with
    ``account_id=None`` and are drained as before."""

    hold_id: str
    micro: int
    usage: UsageRecord
    account_id: int | None = None
    # A call whose credit was lent from an escrow hold: charged with ``settle_escrowed``.
    escrow_hold_id: str | None = None

    def to_line(self) -> bytes:
        """The charge as one JSON line, newline included (what the outbox and the settle
        journal write; ``hold_id`` first, for ``Outbox.hold_ids``)."""
        raw: dict[str, Any] = {"hold_id": self.hold_id, "micro": self.micro, "usage": self.usage}
        if self.account_id is not None:
            raw["account_id"] = self.account_id
        if self.escrow_hold_id is not None:
            raw["escrow_hold_id"] = self.escrow_hold_id
        try:
            # orjson: a third of the standard library's time, on every journaled call
            return orjson.dumps(raw, default=_exact_text, option=orjson.OPT_APPEND_NEWLINE)
        except orjson.JSONEncodeError:
            # what orjson refuses (an integer beyond 64 bits, text that is not UTF-8)
            # the standard library writes: a charge is never lost to its encoding
            raw["usage"] = {name: getattr(self.usage, name) for name in _USAGE_FIELDS}
            return (json.dumps(raw, default=_exact_text) + "\n").encode()

    def to_json(self) -> str:
        return self.to_line()[:-1].decode()

    @classmethod
    def from_json(cls, line: str) -> PendingCharge:
        raw: dict[str, Any] = json.loads(line)
        usage = dict(raw["usage"])
        usage["provider_cost_usd"] = Decimal(usage["provider_cost_usd"])
        account_id = raw.get("account_id")
        escrow = raw.get("escrow_hold_id")
        return cls(
            hold_id=str(raw["hold_id"]),
            micro=int(raw["micro"]),
            usage=UsageRecord(**usage),
            account_id=int(account_id) if account_id is not None else None,
            escrow_hold_id=str(escrow) if escrow is not None else None,
        )


class Outbox:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def append(self, charge: PendingCharge) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("ab") as out:
                out.write(charge.to_line())
                out.flush()
                os.fsync(out.fileno())

    def pending(self) -> list[PendingCharge]:
        with self._lock:
            return self._read()

    def _read(self) -> list[PendingCharge]:
        if not self.path.exists():
            return []
        charges: list[PendingCharge] = []
        for number, text in enumerate(self.path.read_text(encoding="utf-8").splitlines(), start=1):
            # NUL bytes: space a settle journal reserved ahead of its lines (or around a
            # line a crash left unwritten), never part of a line
            line = text.strip("\0")
            if not line.strip():
                continue
            try:
                charges.append(PendingCharge.from_json(line))
            except (ValueError, KeyError, TypeError) as exc:
                # a torn last line from a crash mid-write: that charge never returned, keep going
                log.error("outbox %s:%d unreadable, skipped: %s", self.path, number, exc)
        return charges

    def hold_ids(self) -> list[str]:
        """The hold id of every readable line, without building its charge.

        A line starts with its hold id (``to_line``), which a match reads; a line that
        does not match is parsed as JSON (and skipped when torn, as ``pending`` does).
        """
        if not self.path.exists():
            return []
        ids: list[str] = []
        with self._lock:
            lines = self.path.read_bytes().splitlines()
        for raw in lines:
            line = raw.strip(b"\0")
            if not line.strip():
                continue
            found = _HOLD_ID.match(line)
            if found is not None:
                ids.append(found[1].decode())
                continue
            try:
                ids.append(str(json.loads(line)["hold_id"]))
            except (ValueError, KeyError, TypeError):
                continue
        return ids

    def drain(self, ledger: Ledger) -> int:
        """Settle every pending charge; keep those the ledger still refuses. Returns how many landed."""
        with self._lock:
            charges = self._read()
            if not charges:
                return 0
            kept: list[PendingCharge] = []
            landed = 0
            for charge in charges:
                try:
                    apply_one(ledger, charge)
                    landed += 1
                except HoldNotFound:
                    log.critical("outbox: hold %s is unknown to the ledger; charge dropped", charge.hold_id)
                except AccountNotFound:
                    log.critical(
                        "outbox: account %s of unheld charge %s is unknown to the ledger; charge dropped",
                        charge.account_id,
                        charge.hold_id,
                    )
                except CreditsError as exc:
                    log.warning("outbox: hold %s still pending: %s", charge.hold_id, exc)
                    kept.append(charge)
            tmp = self.path.with_suffix(self.path.suffix + ".tmp")
            with tmp.open("wb") as out:
                out.writelines(c.to_line() for c in kept)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
            return landed


def apply_one(ledger: Ledger, charge: PendingCharge) -> None:
    """Charge one pending line, once, by its hold id (the outbox's and the journal's rule)."""
    if charge.escrow_hold_id is not None and charge.account_id is not None:
        ledger.settle_escrowed(
            charge.hold_id, charge.escrow_hold_id, charge.account_id, charge.micro, charge.usage
        )
        return
    try:
        ledger.settle(charge.hold_id, charge.micro, charge.usage)
    except HoldNotFound:
        if charge.account_id is None:
            raise
        # Served without a hold (fail-open), or its hold was lost with an async commit:
        # charge it now, once, by its hold id.
        ledger.settle_unheld(charge.hold_id, charge.account_id, charge.micro, charge.usage)
