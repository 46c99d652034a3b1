"""The audit: every ledger invariant checked against the stored rows.

Each check is one aggregate query, so an audit reads each table a few times
whatever its size; it reports violations as lines a human can act on.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .tables import AccountRow, EntryRow, GrantRow, HoldRow, UsageEventRow


def run(session: Session) -> list[str]:
    problems: list[str] = []

    entry_sums: dict[int, tuple[int, int]] = {
        account_id: (int(amount), int(held))
        for account_id, amount, held in session.execute(
            select(EntryRow.account_id, func.sum(EntryRow.amount), func.sum(EntryRow.held_delta)).group_by(
                EntryRow.account_id
            )
        )
    }
    open_held: dict[int, int] = {
        account_id: int(total)
        for account_id, total in session.execute(
            select(HoldRow.account_id, func.sum(HoldRow.amount))
            .where(HoldRow.status == "open")
            .group_by(HoldRow.account_id)
        )
    }
    grant_left: dict[int, int] = {
        account_id: int(total)
        for account_id, total in session.execute(
            select(GrantRow.account_id, func.sum(GrantRow.remaining)).group_by(GrantRow.account_id)
        )
    }

    for acc in session.scalars(select(AccountRow).order_by(AccountRow.id)):
        name = f"account {acc.id} ({acc.kind}:{acc.external_id})"
        entries_amount, entries_held = entry_sums.get(acc.id, (0, 0))
        if acc.balance != entries_amount:
            problems.append(f"{name}: balance {acc.balance} != sum of entry amounts {entries_amount}")
        if acc.held != entries_held:
            problems.append(f"{name}: held {acc.held} != sum of entry held_delta {entries_held}")
        holds_open = open_held.get(acc.id, 0)
        if acc.held != holds_open:
            problems.append(f"{name}: held {acc.held} != sum of open holds {holds_open}")
        left = grant_left.get(acc.id, 0)
        if acc.balance != left - acc.debt:
            problems.append(f"{name}: balance {acc.balance} != grants remaining {left} - debt {acc.debt}")
        if acc.debt < 0 or acc.held < 0 or acc.overdraft_limit < 0:
            problems.append(f"{name}: negative debt, held or overdraft limit")

    problems.extend(_hold_problems(session))
    return problems


def _hold_problems(session: Session) -> list[str]:
    problems: list[str] = []
    per_hold_held: dict[str, int] = defaultdict(int)
    per_hold_charged: dict[str, int] = defaultdict(int)
    for hold_id, kind, amount, held in session.execute(
        select(EntryRow.hold_id, EntryRow.kind, func.sum(EntryRow.amount), func.sum(EntryRow.held_delta))
        .where(EntryRow.hold_id.is_not(None))
        .group_by(EntryRow.hold_id, EntryRow.kind)
    ):
        if hold_id is None:
            continue
        per_hold_held[hold_id] += int(held)
        if kind == "charge":
            per_hold_charged[hold_id] += -int(amount)
    events: dict[str, int] = {
        hold_id: charged
        for hold_id, charged in session.execute(select(UsageEventRow.hold_id, UsageEventRow.charged))
    }

    for hold in session.scalars(select(HoldRow).order_by(HoldRow.created_at, HoldRow.id)):
        name = f"hold {hold.id} (account {hold.account_id}, {hold.status})"
        still_held = per_hold_held.get(hold.id, 0)
        expected_held = hold.amount if hold.status == "open" else 0
        if still_held != expected_held:
            problems.append(f"{name}: entries leave {still_held} held, expected {expected_held}")
        event_charge = events.get(hold.id)
        if hold.status == "settled" and event_charge is None:
            problems.append(f"{name}: settled without a usage event")
        if hold.status == "open" and event_charge is not None:
            problems.append(f"{name}: still open but has a usage event")
        if (hold.charged is None) != (event_charge is None) or (
            event_charge is not None and hold.charged != event_charge
        ):
            problems.append(f"{name}: charged {hold.charged} but usage event says {event_charge}")
        entries_charged = per_hold_charged.get(hold.id, 0)
        if entries_charged != (hold.charged or 0):
            problems.append(f"{name}: charge entries total {entries_charged}, hold says {hold.charged or 0}")
    return problems
