"""The admin CLI against a real SQLite ledger (Typer's runner, in-process)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from credit_hooks.cli import app
from ledger import Ledger
from ledger.escrow_sql import ESCROW_REFERENCE
from pricing.errors import SettingsError

from .gate_harness import PLANS

MICRO = 1_000_000


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[CliRunner, Ledger]:
    url = f"sqlite:///{tmp_path / 'credits.db'}"
    monkeypatch.setenv("CREDITS_DATABASE_URL", url)
    monkeypatch.setenv("CREDITS_PRICING_FILE", str(PLANS))
    runner = CliRunner()
    assert runner.invoke(app, ["db", "init"]).exit_code == 0
    return runner, Ledger(url)


def test_the_demo_flow(cli: tuple[CliRunner, Ledger]) -> None:
    runner, books = cli
    assert runner.invoke(app, ["account", "create", "user:alice", "--tier", "pro"]).exit_code == 0
    issued = runner.invoke(app, ["key", "issue", "user:alice", "--user-id", "alice"])
    key = issued.stdout.strip().splitlines()[0]
    assert key.startswith("sk-cr-") and books.lookup_key(key) is not None
    granted = runner.invoke(app, ["grant", "user:alice", "12.5", "--source", "purchase", "--ref", "cs_1"])
    again = runner.invoke(app, ["grant", "user:alice", "12.5", "--source", "purchase", "--ref", "cs_1"])
    assert granted.exit_code == again.exit_code == 0
    account = books.find_account("user", "alice")
    assert account is not None and books.balance(account.id).balance == 12_500_000  # the ref made it once
    assert "12.5" in runner.invoke(app, ["account", "show", "user:alice"]).stdout
    assert runner.invoke(app, ["audit"]).exit_code == 0


def test_account_show_says_how_much_of_the_held_credit_is_escrows(cli: tuple[CliRunner, Ledger]) -> None:
    runner, books = cli
    account = books.open_account("user", "rich", tier="pro")
    books.grant(account.id, 100 * MICRO, source="purchase", external_ref="rich")
    before = runner.invoke(app, ["account", "show", "user:rich"])
    assert before.exit_code == 0 and "escrow" not in before.stdout
    books.hold(account.id, 20 * MICRO, ttl_seconds=60, reference=ESCROW_REFERENCE)
    books.hold(account.id, 3 * MICRO, ttl_seconds=60, reference="demo-fast")  # a call's own
    shown = runner.invoke(app, ["account", "show", "user:rich"])
    assert shown.exit_code == 0 and "of the held credit, 20 is in escrows" in shown.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["grant", "user:nobody", "5"], "No account user:nobody"),
        (["grant", "wizard:x", "5"], "KIND"),
        (["grant", "user:alice", "-5"], "No such option"),
        (["grant", "user:alice", "abc"], "not a number"),
        (["grant", "user:alice", "1e30"], "at most"),
        (["account", "create", "user:bob", "--tier", "gold"], "not in the catalog"),
        (["catalog", "set-rule", "r1", '{"kind": "multiplyer", "value": "2"}'], "unknown markup kind"),
        (["catalog", "set-rule", "r1", "not json"], "not JSON"),
        (["account", "tier", "user:alice", "gold"], "not in the catalog"),
    ],
)
def test_bad_arguments_are_refused_by_name_and_change_nothing(
    cli: tuple[CliRunner, Ledger], args: list[str], says: str
) -> None:
    runner, books = cli
    runner.invoke(app, ["account", "create", "user:alice", "--tier", "pro"])
    before = (books.catalog_rows().stamp, [books.balance(a.id) for a in books.list_accounts()])

    result = runner.invoke(app, args)

    assert result.exit_code != 0
    assert says in result.output + str(result.exception)
    assert (books.catalog_rows().stamp, [books.balance(a.id) for a in books.list_accounts()]) == before


def test_a_valid_rule_is_stored_with_who_changed_it(cli: tuple[CliRunner, Ledger]) -> None:
    runner, books = cli
    result = runner.invoke(
        app,
        [
            "catalog",
            "set-rule",
            "promo",
            '{"model": "gpt-4o", "kind": "percentage", "value": "-20"}',
            "--by",
            "ann",
        ],
    )
    assert result.exit_code == 0, result.output
    [row] = books.catalog_rows().pricing_rules
    assert (row["id"], row["updated_by"], row["data"]["kind"]) == ("promo", "ann", "percentage")


def test_a_team_cannot_issue_keys_beyond_its_seats(cli: tuple[CliRunner, Ledger]) -> None:
    runner, _ = cli
    runner.invoke(app, ["account", "create", "team:acme", "--tier", "business"])  # 2 seats
    for user in ("ann", "bob", "ann"):  # a second key for ann takes no new seat
        assert runner.invoke(app, ["key", "issue", "team:acme", "--user-id", user]).exit_code == 0
    refused = runner.invoke(app, ["key", "issue", "team:acme", "--user-id", "cid"])
    assert refused.exit_code != 0 and "seats" in refused.output


def test_an_upgrade_now_grants_the_prorated_difference(cli: tuple[CliRunner, Ledger]) -> None:
    runner, books = cli
    runner.invoke(app, ["account", "create", "user:up", "--tier", "pro"])
    result = runner.invoke(app, ["account", "tier", "user:up", "business", "--when", "immediate"])
    assert result.exit_code == 0, result.output
    account = books.find_account("user", "up")
    assert account is not None and account.tier == "business"
    proration = [g for g in books.grants(account.id) if g.source == "proration"]
    # 4000 more credits a period, nearly all of the period left
    assert len(proration) == 1 and 3990 * MICRO < proration[0].amount <= 4000 * MICRO


def test_periods_run_is_safe_to_repeat(cli: tuple[CliRunner, Ledger]) -> None:
    runner, books = cli
    runner.invoke(app, ["account", "create", "user:p", "--tier", "pro"])
    first = runner.invoke(app, ["periods", "run"])
    second = runner.invoke(app, ["periods", "run"])
    assert "1 periods started" in first.output and "0 periods started" in second.output
    account = books.find_account("user", "p")
    assert account is not None and books.balance(account.id).balance == 1000 * MICRO


def test_a_database_without_the_schema_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDITS_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    monkeypatch.setenv("CREDITS_PRICING_FILE", str(PLANS))
    result = CliRunner().invoke(app, ["account", "show", "user:x"])
    assert isinstance(result.exception, SettingsError)
    assert "credits-admin db init" in str(result.exception)
