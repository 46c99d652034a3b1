"""Transfers: credit moved from one account to another, once per reference.

The source's grants burn down like a charge (entries of kind ``transfer``); the
target gets a ``transfer`` grant whose external reference ``transfer:{reference}``
is unique, so a repeat finds the first transfer instead of moving credit twice.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from pricing.errors import AccountInactive, InsufficientCredits, InvalidOperation

from . import accounts, convert, grants
from .tables import AccountRow, EntryRow, GrantRow
from .types import Transfer, micro_to_credit_str

TRANSFER_SOURCE = "transfer"


def transfer_ref(reference: str) -> str:
    return f"transfer:{reference}"


def load(session: Session, grant: GrantRow, from_account_id: int, to_account_id: int) -> Transfer:
    """The transfer that created ``grant``, read back from its entries."""
    ref = grant.external_ref or ""
    debits = [
        convert.entry(row)
        for row in session.scalars(
            select(EntryRow)
            .where(EntryRow.kind == "transfer", EntryRow.reference == ref, EntryRow.amount < 0)
            .order_by(EntryRow.id)
        )
    ]
    credit = session.scalars(
        select(EntryRow).where(
            EntryRow.grant_id == grant.id, EntryRow.kind == "transfer", EntryRow.amount > 0
        )
    ).one()
    source_id = debits[0].account_id if debits else None
    if grant.account_id != to_account_id or source_id != from_account_id:
        raise InvalidOperation(
            f"transfer reference {ref.removeprefix('transfer:')!r} was already used for a transfer "
            f"from account {source_id} to account {grant.account_id}"
        )
    return Transfer(
        reference=ref.removeprefix("transfer:"),
        from_account_id=from_account_id,
        to_account_id=to_account_id,
        amount=grant.amount,
        debits=tuple(debits),
        credit=convert.entry(credit),
        grant=convert.grant(grant),
    )


def transfer(
    session: Session,
    from_account_id: int,
    to_account_id: int,
    micro: int,
    *,
    reference: str,
    reason: str,
    now: datetime,
) -> Transfer:
    ref = transfer_ref(reference)
    # Both accounts locked in id order: transfers a→b and b→a cannot deadlock.
    locked: dict[int, AccountRow] = {}
    for account_id in sorted((from_account_id, to_account_id)):
        locked[account_id] = accounts.lock(session, account_id)
    found = grants.by_ref(session, ref)
    if found is not None:
        return load(session, found, from_account_id, to_account_id)

    source, target = locked[from_account_id], locked[to_account_id]
    label = f"{source.kind}:{source.external_id}"
    if source.status != "active":
        raise AccountInactive(label, source.status)
    # Strict, like a hold: a transfer may not take the source below its overdraft limit.
    if source.balance - source.held - micro < -source.overdraft_limit:
        spendable = source.balance - source.held + source.overdraft_limit
        raise InsufficientCredits(label, micro_to_credit_str(micro), micro_to_credit_str(max(spendable, 0)))
    text = reason or f"transfer from account {source.id} to account {target.id}"
    grants.burn(
        session, source, micro, entry_kind="transfer", hold_id=None, reference=ref, reason=text, now=now
    )
    grant = grants.add(
        session,
        target,
        micro,
        source=TRANSFER_SOURCE,
        external_ref=ref,
        priority=0,
        expires_at=None,
        reason=text,
        entry_kind="transfer",
        now=now,
    )
    return load(session, grant, from_account_id, to_account_id)
