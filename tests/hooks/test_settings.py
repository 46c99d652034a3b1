from __future__ import annotations

from pathlib import Path

import pytest

from credit_hooks.runtime import _fast_paths
from credit_hooks.settings import DEFAULT_PRICING_FILE, CreditSettings, load_settings
from ledger import Ledger
from ledger.escrow import EscrowBook
from pricing import load_catalog
from pricing.errors import SettingsError


def test_defaults_need_no_service(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "CREDITS_DATABASE_URL",
        "CREDITS_PRICING_FILE",
        "CREDITS_REDIS_URL",
        "CREDITS_ACCOUNT_ORDER",
    ):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.database_url.startswith("sqlite:///")
    assert settings.redis_url is None
    assert settings.pricing_file == DEFAULT_PRICING_FILE
    assert load_catalog(settings.pricing_file).tiers["free"].allows("any-model")
    assert settings.account_order == ("team", "user", "key")


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("CREDITS_DATABASE_URL", "mysql://x", "sqlite"),
        ("CREDITS_PRICING_FILE", "/nonexistent/pricing.yaml", "no such file"),
        ("CREDITS_ACCOUNT_ORDER", "team,wizard", "wizard"),
        ("CREDITS_UNKNOWN_ACCOUNTS", "maybe", "provision"),
        ("CREDITS_HOLD_TTL_SECONDS", "-5", "greater than 0"),
        ("CREDITS_WELCOME_CREDITS", "lots", "decimal"),
        ("CREDITS_CACHE_HIT_CHARGE", "half", "free"),
        ("CREDITS_JOURNAL_LINGER_MS", "-1", "greater than or equal to 0"),
        ("CREDITS_JOURNAL_LOOP_SYNC_MS", "50", "less than or equal to 10"),
    ],
)
def test_a_wrong_value_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, says: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert caught.value.setting == variable
    assert variable in str(caught.value)
    assert says in str(caught.value).lower()


def test_account_order_is_configurable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CREDITS_ACCOUNT_ORDER", " end_user , key ")
    assert load_settings().account_order == ("end_user", "key")
    assert CreditSettings(account_order="user").account_order == ("user",)


def test_the_defaults_are_the_settle_journal_and_a_local_escrow(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CREDITS_SETTLE_MODE", raising=False)
    monkeypatch.delenv("CREDITS_ESCROW", raising=False)
    monkeypatch.setenv("CREDITS_JOURNAL_DIR", str(tmp_path / "journal"))
    ledger = Ledger(f"sqlite:///{tmp_path / 'books.db'}")
    ledger.create_schema()
    journal, escrow = _fast_paths(load_settings(), ledger)
    try:
        assert journal is not None and (tmp_path / "journal").is_dir()
        assert isinstance(escrow, EscrowBook) and escrow.instant  # lends from process memory
    finally:
        if journal is not None:
            journal.close()
        if escrow is not None:
            escrow.close()
        ledger.dispose()


def test_a_journal_directory_that_cannot_be_written_is_named_at_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    not_a_directory = tmp_path / "a-file"
    not_a_directory.write_text("")
    monkeypatch.setenv("CREDITS_JOURNAL_DIR", str(not_a_directory / "journal"))
    ledger = Ledger(f"sqlite:///{tmp_path / 'books.db'}")
    ledger.create_schema()
    try:
        with pytest.raises(SettingsError) as caught:
            _fast_paths(load_settings(), ledger)
    finally:
        ledger.dispose()
    assert caught.value.setting == "CREDITS_JOURNAL_DIR"
    assert str(not_a_directory / "journal") in str(caught.value)
    assert "CREDITS_SETTLE_MODE=direct" in str(caught.value)


def test_the_journal_waits_as_long_as_configured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CREDITS_SETTLE_MODE", "journal")
    monkeypatch.setenv("CREDITS_ESCROW", "off")
    monkeypatch.setenv("CREDITS_JOURNAL_DIR", str(tmp_path / "journal"))
    monkeypatch.setenv("CREDITS_JOURNAL_LINGER_MS", "400")
    monkeypatch.setenv("CREDITS_JOURNAL_LOOP_SYNC_MS", "3")
    ledger = Ledger(f"sqlite:///{tmp_path / 'books.db'}")
    ledger.create_schema()
    journal, escrow = _fast_paths(load_settings(), ledger)
    try:
        assert journal is not None and escrow is None
        assert journal.linger_seconds == 0.4
        assert journal.fast_sync_seconds == 0.003
    finally:
        if journal is not None:
            journal.close()
        ledger.dispose()
