"""Accounts and API keys."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from ledger_testlib import CR, raw_rows

from ledger import Ledger, hash_key
from pricing.errors import AccountNotFound, InvalidOperation


def test_open_account_is_get_or_create(ledger: Ledger) -> None:
    first = ledger.open_account("user", "alice", tier="free")
    again = ledger.open_account("user", "alice", tier="pro")
    assert again == first
    assert again.tier == "free", "an existing account keeps its tier"
    other_kind = ledger.open_account("team", "alice", tier="free")
    assert other_kind.id != first.id
    assert ledger.find_account("user", "alice") == first
    assert ledger.find_account("user", "bob") is None
    assert ledger.get_account(first.id) == first
    assert first.status == "active"
    assert (first.balance, first.held, first.debt, first.overdraft_limit) == (0, 0, 0, 0)
    assert first.created_at.tzinfo is not None


def test_welcome_grant_is_given_once(ledger: Ledger) -> None:
    account = ledger.open_account("end_user", "e-42", tier="free", welcome_micro=5 * CR)
    assert account.balance == 5 * CR
    again = ledger.open_account("end_user", "e-42", tier="free", welcome_micro=5 * CR)
    assert again.balance == 5 * CR
    (grant,) = ledger.grants(account.id)
    assert (grant.source, grant.external_ref) == ("welcome", "welcome:end_user:e-42")


def test_open_account_concurrently_creates_one(ledger: Ledger) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(
            pool.map(
                lambda _: ledger.open_account("user", "racer", tier="free", welcome_micro=CR),
                range(16),
            )
        )
    assert len({a.id for a in results}) == 1
    assert ledger.balance(results[0].id).balance == CR


def test_open_account_validates(ledger: Ledger) -> None:
    with pytest.raises(InvalidOperation):
        ledger.open_account("robot", "x", tier="free")
    with pytest.raises(InvalidOperation):
        ledger.open_account("user", "", tier="free")
    with pytest.raises(InvalidOperation):
        ledger.open_account("user", "x", tier="free", overdraft_limit=-1)


def test_tier_status_and_overdraft(ledger: Ledger) -> None:
    account = ledger.open_account("user", "alice", tier="free")
    assert ledger.set_tier(account.id, "pro").tier == "pro"
    assert ledger.set_status(account.id, "suspended").status == "suspended"
    assert ledger.set_overdraft_limit(account.id, 7).overdraft_limit == 7
    with pytest.raises(InvalidOperation):
        ledger.set_status(account.id, "frozen")
    with pytest.raises(AccountNotFound):
        ledger.set_tier(9999, "pro")
    with pytest.raises(AccountNotFound):
        ledger.get_account(9999)
    with pytest.raises(AccountNotFound):
        ledger.balance(9999)


def test_issue_and_lookup_key(ledger: Ledger, db_url: str) -> None:
    account = ledger.open_account("user", "alice", tier="free")
    issued = ledger.issue_key(account.id, user_id="alice", team_id="t1", alias="laptop")
    assert issued.plaintext.startswith("sk-cr-")
    assert len(issued.plaintext) > 40
    assert issued.key.key_prefix == issued.plaintext[:10]
    assert issued.key.key_hash == hash_key(issued.plaintext)
    assert issued.plaintext not in repr(issued)

    found = ledger.lookup_key(issued.plaintext)
    assert found == issued.key
    assert (found.account_id, found.user_id, found.team_id, found.alias) == (
        account.id,
        "alice",
        "t1",
        "laptop",
    )
    assert ledger.get_key_by_hash(issued.key.key_hash) == issued.key
    assert ledger.lookup_key(issued.plaintext + "x") is None
    assert ledger.lookup_key("") is None

    # The secret itself is nowhere in the table, in any column.
    for row in raw_rows(db_url, "api_keys"):
        for value in row:
            assert issued.plaintext not in str(value)

    second = ledger.issue_key(account.id)
    assert second.plaintext != issued.plaintext
    assert [k.id for k in ledger.list_keys(account.id)] == [issued.key.id, second.key.id]


def test_revoke_key(ledger: Ledger) -> None:
    account = ledger.open_account("user", "alice", tier="free")
    issued = ledger.issue_key(account.id)
    assert ledger.revoke_key(issued.key.id) is True
    assert ledger.revoke_key(issued.key.id) is False
    assert ledger.lookup_key(issued.plaintext) is None
    (listed,) = ledger.list_keys(account.id)
    assert listed.revoked_at is not None
    with pytest.raises(AccountNotFound):
        ledger.issue_key(9999)
