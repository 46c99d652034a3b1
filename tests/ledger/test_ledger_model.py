"""Model-based test: random operation sequences against a plain-Python model of the books."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule
from ledger_testlib import USAGE

from ledger import Ledger
from pricing.errors import InsufficientCredits

OVERDRAFT = 50


@dataclass
class ModelGrant:
    order: int  # creation order, the ledger's tie-breaker after priority
    priority: int
    remaining: int


@dataclass
class Model:
    balance: int = 0
    debt: int = 0
    holds: dict[str, int] = field(default_factory=dict)
    grants: list[ModelGrant] = field(default_factory=list)
    refs: dict[str, int] = field(default_factory=dict)

    @property
    def held(self) -> int:
        return sum(self.holds.values())

    def add_grant(self, amount: int, priority: int) -> int:
        """Book a grant (paying debt first); returns what remains of it."""
        paid = min(self.debt, amount)
        self.debt -= paid
        self.balance += amount
        self.grants.append(ModelGrant(len(self.grants), priority, amount - paid))
        return amount - paid

    def burn_order(self) -> list[ModelGrant]:
        return sorted(self.grants, key=lambda g: (-g.priority, g.order))

    def burn(self, micro: int) -> None:
        self.balance -= micro
        # Same order as the ledger: priority high first, then oldest (no expiries here).
        for grant in self.burn_order():
            take = min(micro, grant.remaining)
            grant.remaining -= take
            micro -= take
        self.debt += micro


class LedgerMachine(RuleBasedStateMachine):
    holds = Bundle("holds")

    def __init__(self) -> None:
        super().__init__()
        self.ledger = Ledger("sqlite://")
        self.ledger.create_schema()
        self.account = self.ledger.open_account("user", "model", tier="free", overdraft_limit=OVERDRAFT).id
        self.model = Model()

    def teardown(self) -> None:
        self.ledger.dispose()

    @rule(amount=st.integers(1, 300), priority=st.integers(0, 2), ref=st.none() | st.sampled_from("abc"))
    def grant(self, amount: int, priority: int, ref: str | None) -> None:
        if ref is not None and ref in self.model.refs:
            again = self.ledger.grant(self.account, amount, source="purchase", external_ref=ref)
            assert again.id == self.model.refs[ref]
            return
        g = self.ledger.grant(self.account, amount, source="purchase", external_ref=ref, priority=priority)
        assert g.remaining == self.model.add_grant(amount, priority)
        if ref is not None:
            self.model.refs[ref] = g.id

    @rule(target=holds, amount=st.integers(0, 200))
    def hold(self, amount: int) -> str:
        fits = self.model.balance - self.model.held - amount >= -OVERDRAFT
        try:
            hold = self.ledger.hold(self.account, amount, ttl_seconds=60)
        except InsufficientCredits:
            assert not fits
            return ""
        assert fits
        self.model.holds[hold.id] = amount
        return hold.id

    @rule(hold_id=consumes(holds), micro=st.integers(0, 300))
    def settle(self, hold_id: str, micro: int) -> None:
        if not hold_id:
            return
        first = self.ledger.settle(hold_id, micro, USAGE)
        assert self.ledger.settle(hold_id, micro + 1, USAGE) == first
        self.model.holds.pop(hold_id)
        self.model.burn(micro)

    @rule(hold_id=consumes(holds))
    def void(self, hold_id: str) -> None:
        if not hold_id:
            return
        assert self.ledger.void(hold_id) is True
        assert self.ledger.void(hold_id) is False
        self.model.holds.pop(hold_id)

    @rule(micro=st.integers(-200, 200).filter(bool))
    def adjust(self, micro: int) -> None:
        self.ledger.adjust(self.account, micro, "model adjustment")
        if micro > 0:
            self.model.add_grant(micro, 0)
        else:
            self.model.burn(-micro)

    @invariant()
    def books_agree(self) -> None:
        b = self.ledger.balance(self.account)
        assert (b.balance, b.held, b.debt) == (self.model.balance, self.model.held, self.model.debt)
        assert [g.remaining for g in self.ledger.grants(self.account)] == [
            g.remaining for g in self.model.burn_order()
        ]
        assert self.ledger.audit() == []


LedgerMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
test_ledger_matches_model = LedgerMachine.TestCase
