"""Model-based test: random operation sequences against a plain-Python model of the books.

Two accounts (one with an overdraft), a clock the test moves, and every operation
that changes balances: grants (some expiring), refunds, holds (which expire),
settles (also late ones, after a void or an expiry), voids, the two sweepers,
adjustments and transfers in both directions. After every step the ledger must
agree with the model, the audit must pass (entries sum to balances, each hold
resolved at most once and charged at most once), and every hold or transfer the
ledger accepted must have fitted within the source's overdraft limit.

Runs on an in-memory SQLite database per example and on one PostgreSQL database
shared by fewer examples (each with accounts of its own).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from ledger_testlib import USAGE

from ledger import Ledger
from pricing.errors import InsufficientCredits, InvalidOperation

OVERDRAFTS = (50, 0)  # account 0 may go 50 µcr below zero, account 1 not at all
START = datetime(2026, 1, 1, tzinfo=UTC)
FAR = datetime(2999, 1, 1, tzinfo=UTC)
ACCOUNT = st.integers(0, len(OVERDRAFTS) - 1)


class Clock:
    now = START

    def __call__(self) -> datetime:
        return self.now


@dataclass
class ModelGrant:
    order: int  # creation order: the ledger's tie-breaker after priority and expiry
    priority: int
    expires_at: datetime | None
    remaining: int

    def burn_key(self) -> tuple[int, bool, datetime, int]:
        return (-self.priority, self.expires_at is None, self.expires_at or START, self.order)

    def live(self, now: datetime) -> bool:
        return self.remaining > 0 and (self.expires_at is None or self.expires_at > now)


@dataclass
class ModelAccount:
    overdraft: int
    balance: int = 0
    held: int = 0
    debt: int = 0
    grants: list[ModelGrant] = field(default_factory=list)

    def fits(self, micro: int) -> bool:
        return self.balance - self.held - micro >= -self.overdraft

    def burn_order(self) -> list[ModelGrant]:
        return sorted(self.grants, key=ModelGrant.burn_key)


@dataclass
class ModelHold:
    account: int
    amount: int
    expires_at: datetime
    status: str = "open"
    charged: int | None = None


@dataclass
class Model:
    accounts: list[ModelAccount]
    holds: dict[str, ModelHold] = field(default_factory=dict)
    grant_refs: dict[str, tuple[int, int]] = field(default_factory=dict)  # ref -> (account, grant id)
    transfer_refs: dict[str, tuple[int, int]] = field(default_factory=dict)  # ref -> (from, to)
    grants_made: int = 0

    def add_grant(self, account: int, amount: int, priority: int, expires_at: datetime | None) -> int:
        """Book a grant (paying debt first); returns what remains of it."""
        acc = self.accounts[account]
        paid = min(acc.debt, amount)
        acc.debt -= paid
        acc.balance += amount
        acc.grants.append(ModelGrant(self.grants_made, priority, expires_at, amount - paid))
        self.grants_made += 1
        return amount - paid

    def burn(self, account: int, micro: int, now: datetime) -> None:
        acc = self.accounts[account]
        acc.balance -= micro
        for grant in acc.burn_order():
            if grant.live(now):
                take = min(micro, grant.remaining)
                grant.remaining -= take
                micro -= take
        acc.debt += micro

    def release(self, hold: ModelHold, status: str) -> None:
        self.accounts[hold.account].held -= hold.amount
        hold.status = status


class LedgerMachine(RuleBasedStateMachine):
    """``shared`` None: a fresh in-memory SQLite ledger per example; else that ledger."""

    shared: Ledger | None = None
    group_commit = False
    clock = Clock()
    holds = Bundle("holds")

    def __init__(self) -> None:
        super().__init__()
        self.clock.now = START
        if self.shared is None:
            self.ledger = Ledger("sqlite://", clock=self.clock, group_commit=self.group_commit)
            self.ledger.create_schema()
        else:
            self.ledger = self.shared
            # What earlier examples left open is swept now, so the counts below are ours.
            self.ledger.expire_stale_holds(FAR)
            self.ledger.expire_grants(FAR)
        self.tag = uuid.uuid4().hex[:8]  # keeps references apart in a shared database
        self.ids = [
            self.ledger.open_account("user", f"model-{self.tag}-{n}", tier="free", overdraft_limit=limit).id
            for n, limit in enumerate(OVERDRAFTS)
        ]
        self.model = Model([ModelAccount(limit) for limit in OVERDRAFTS])

    def teardown(self) -> None:
        if self.shared is None:
            self.ledger.dispose()

    @property
    def now(self) -> datetime:
        return self.clock.now

    # -- credit in --------------------------------------------------------------

    @rule(
        account=ACCOUNT,
        amount=st.integers(1, 300),
        priority=st.integers(0, 1),
        ttl=st.sampled_from([None, 10, 30, 60]),
        ref=st.none() | st.sampled_from("abc"),
    )
    def grant(self, account: int, amount: int, priority: int, ttl: int | None, ref: str | None) -> None:
        expires_at = self.now + timedelta(seconds=ttl) if ttl is not None else None
        key = f"{self.tag}-{ref}" if ref is not None else None

        def call() -> int:
            return self.ledger.grant(
                self.ids[account],
                amount,
                source="purchase",
                external_ref=key,
                priority=priority,
                expires_at=expires_at,
            ).id

        if key is not None and key in self.model.grant_refs:
            owner, grant_id = self.model.grant_refs[key]
            if owner != account:
                with pytest.raises(InvalidOperation):
                    call()
                return
            assert call() == grant_id
            return
        g = self.ledger.grant(
            self.ids[account],
            amount,
            source="purchase",
            external_ref=key,
            priority=priority,
            expires_at=expires_at,
        )
        assert g.remaining == self.model.add_grant(account, amount, priority, expires_at)
        if key is not None:
            self.model.grant_refs[key] = (account, g.id)

    @rule(account=ACCOUNT, amount=st.integers(1, 200), ref=st.sampled_from(["r1", "r2", "r3"]))
    def refund(self, account: int, amount: int, ref: str) -> None:
        key = f"{self.tag}-refund-{ref}"
        if key in self.model.grant_refs:
            owner, grant_id = self.model.grant_refs[key]
            if owner != account:
                with pytest.raises(InvalidOperation):
                    self.ledger.refund(self.ids[account], amount, reference=key)
                return
            assert self.ledger.refund(self.ids[account], amount, reference=key).id == grant_id
            return
        g = self.ledger.refund(self.ids[account], amount, reference=key)
        assert g.remaining == self.model.add_grant(account, amount, 0, None)
        self.model.grant_refs[key] = (account, g.id)

    @rule(account=ACCOUNT, micro=st.integers(-200, 200).filter(bool))
    def adjust(self, account: int, micro: int) -> None:
        self.ledger.adjust(self.ids[account], micro, "model adjustment")
        if micro > 0:
            self.model.add_grant(account, micro, 0, None)
        else:
            self.model.burn(account, -micro, self.now)

    # -- holds ------------------------------------------------------------------

    @rule(target=holds, account=ACCOUNT, amount=st.integers(0, 200), ttl=st.sampled_from([5, 30, 120]))
    def hold(self, account: int, amount: int, ttl: int) -> str:
        fits = self.model.accounts[account].fits(amount)
        try:
            hold = self.ledger.hold(self.ids[account], amount, ttl_seconds=ttl)
        except InsufficientCredits:
            assert not fits
            return ""
        assert fits, "the ledger accepted a hold beyond the overdraft limit"
        self.model.accounts[account].held += amount
        self.model.holds[hold.id] = ModelHold(account, amount, self.now + timedelta(seconds=ttl))
        return hold.id

    @rule(target=holds, account=ACCOUNT, over=st.booleans())
    def hold_everything(self, account: int, over: bool) -> str:
        """The boundary: exactly what is spendable fits, one µcr more does not."""
        acc = self.model.accounts[account]
        spendable = acc.balance - acc.held + acc.overdraft
        if spendable < 0:
            return ""
        return self.hold(account, spendable + int(over), 60)

    @rule(hold_id=holds, micro=st.integers(0, 300))
    def settle(self, hold_id: str, micro: int) -> None:
        if not hold_id:
            return
        hold = self.model.holds[hold_id]
        settled = self.ledger.settle(hold_id, micro, USAGE)
        if hold.status == "settled":
            assert settled.charged == hold.charged  # a repeat: the first result, nothing moves
            return
        assert settled.late == (hold.status != "open")
        if hold.status == "open":
            self.model.release(hold, "settled")
        hold.status = "settled"
        hold.charged = micro
        self.model.burn(hold.account, micro, self.now)
        assert self.ledger.settle(hold_id, micro + 1, USAGE) == settled

    @rule(hold_id=holds)
    def void(self, hold_id: str) -> None:
        if not hold_id:
            return
        hold = self.model.holds[hold_id]
        assert self.ledger.void(hold_id) is (hold.status == "open")
        if hold.status == "open":
            self.model.release(hold, "voided")
        assert self.ledger.void(hold_id) is False

    # -- time and the sweepers --------------------------------------------------

    @rule(seconds=st.sampled_from([1, 5, 20, 45]))
    def tick(self, seconds: int) -> None:
        self.clock.now += timedelta(seconds=seconds)

    @rule()
    def sweep_holds(self) -> None:
        due = [h for h in self.model.holds.values() if h.status == "open" and h.expires_at <= self.now]
        assert self.ledger.expire_stale_holds() == len(due)
        for hold in due:
            self.model.release(hold, "expired")

    @rule()
    def sweep_grants(self) -> None:
        due = [
            (acc, g)
            for acc in self.model.accounts
            for g in acc.grants
            if g.remaining > 0 and g.expires_at is not None and g.expires_at <= self.now
        ]
        assert self.ledger.expire_grants() == len(due)
        for acc, g in due:
            acc.balance -= g.remaining
            g.remaining = 0

    # -- transfers --------------------------------------------------------------

    @rule(source=ACCOUNT, amount=st.integers(1, 200), ref=st.sampled_from("tuv"))
    def transfer(self, source: int, amount: int, ref: str) -> None:
        target = 1 - source
        key = f"{self.tag}-{ref}"
        done = self.model.transfer_refs.get(key)
        if done is not None:
            if done != (source, target):
                with pytest.raises(InvalidOperation):
                    self.ledger.transfer(self.ids[source], self.ids[target], amount, reference=key)
            else:
                again = self.ledger.transfer(self.ids[source], self.ids[target], amount, reference=key)
                assert again.reference == key
            return
        fits = self.model.accounts[source].fits(amount)
        try:
            moved = self.ledger.transfer(self.ids[source], self.ids[target], amount, reference=key)
        except InsufficientCredits:
            assert not fits
            return
        assert fits, "the ledger accepted a transfer beyond the overdraft limit"
        assert sum(e.amount for e in moved.debits) == -amount
        self.model.burn(source, amount, self.now)
        assert moved.grant.remaining == self.model.add_grant(target, amount, 0, None)
        self.model.transfer_refs[key] = (source, target)

    @rule(source=ACCOUNT, over=st.booleans(), ref=st.sampled_from("wxyz"))
    def transfer_everything(self, source: int, over: bool, ref: str) -> None:
        acc = self.model.accounts[source]
        spendable = acc.balance - acc.held + acc.overdraft
        if spendable + int(over) > 0:
            self.transfer(source, spendable + int(over), ref)

    # -- invariants -------------------------------------------------------------

    @invariant()
    def books_agree(self) -> None:
        for account_id, model in zip(self.ids, self.model.accounts, strict=True):
            b = self.ledger.balance(account_id)
            assert (b.balance, b.held, b.debt) == (model.balance, model.held, model.debt)
            assert [g.remaining for g in self.ledger.grants(account_id)] == [
                g.remaining for g in model.burn_order()
            ]
        assert self.ledger.audit() == []


LedgerMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
test_ledger_matches_model = LedgerMachine.TestCase


class GroupCommitMachine(LedgerMachine):
    """The same model with ``hold`` and ``settle`` going through the group-commit writer."""

    group_commit = True


GroupCommitMachine.TestCase.settings = settings(max_examples=20, stateful_step_count=30, deadline=None)
test_ledger_matches_model_with_group_commit = GroupCommitMachine.TestCase


@pytest.mark.postgres
@pytest.mark.parametrize("group_commit", [False, True], ids=["one-commit-each", "group-commit"])
def test_ledger_matches_model_on_postgres(pg_url: str, group_commit: bool) -> None:
    book = Ledger(pg_url, clock=LedgerMachine.clock, group_commit=group_commit)
    book.create_schema()

    class OnPostgres(LedgerMachine):
        shared = book

    try:
        run_state_machine_as_test(
            OnPostgres,
            settings=settings(max_examples=12 if group_commit else 25, stateful_step_count=20, deadline=None),
        )
        assert book.audit() == []
    finally:
        book.dispose()
