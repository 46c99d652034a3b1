import math
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pricing import MICRO_PER_CREDIT, credits_to_micro, micro_to_credits, micro_to_usd, usd_to_micro


def test_one_credit_is_a_million_micro() -> None:
    assert MICRO_PER_CREDIT == 1_000_000
    assert usd_to_micro(Decimal("0.001"), Decimal("0.001")) == 1_000_000


@pytest.mark.parametrize(
    ("usd", "usd_per_credit", "micro"),
    [
        (Decimal("0.000225"), Decimal("0.001"), 225_000),  # LiteLLM's gpt-4o mock cost
        (Decimal("0.06"), Decimal("0.001"), 60_000_000),
        (Decimal("0"), Decimal("0.001"), 0),
        (Decimal("0.000000001"), Decimal("0.001"), 1),  # exactly one µcr
        (Decimal("0.0000000010000001"), Decimal("0.001"), 2),  # a hair above rounds up
        (Decimal("0.0000000000001"), Decimal("0.001"), 1),  # any positive amount costs >= 1 µcr
        (Decimal("0.000225"), Decimal("0.01"), 22_500),
        (Decimal("0.0000000105"), Decimal("0.01"), 2),  # 1.05 µcr at $0.01/credit → 2
        (Decimal("1"), Decimal("0.003"), 333_333_334),  # non-terminating quotient, still a ceiling
        (Decimal("0.1"), Decimal("1"), 100_000),
    ],
)
def test_usd_to_micro_rounds_up_to_whole_micro(usd: Decimal, usd_per_credit: Decimal, micro: int) -> None:
    assert usd_to_micro(usd, usd_per_credit) == micro


def test_usd_to_micro_default_rate_is_a_tenth_of_a_cent() -> None:
    assert usd_to_micro(Decimal("0.000225")) == 225_000


def test_usd_to_micro_ignores_the_callers_decimal_context() -> None:
    from decimal import localcontext

    with localcontext() as ctx:
        ctx.prec = 3
        assert usd_to_micro(Decimal("0.123456789"), Decimal("0.001")) == 123_456_789


@given(
    usd=st.decimals(min_value=Decimal("-1e6"), max_value=Decimal("1e6"), allow_nan=False, places=20),
    rate=st.decimals(min_value=Decimal("1e-9"), max_value=Decimal("100"), allow_nan=False, places=12),
)
def test_usd_to_micro_is_the_exact_ceiling(usd: Decimal, rate: Decimal) -> None:
    assert usd_to_micro(usd, rate) == math.ceil(Fraction(usd) * MICRO_PER_CREDIT / Fraction(rate))


def test_usd_to_micro_refuses_floats_and_bad_rates() -> None:
    with pytest.raises(TypeError):
        usd_to_micro(0.1, Decimal("0.001"))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        usd_to_micro(Decimal("1"), Decimal("0"))
    with pytest.raises(ValueError):
        usd_to_micro(Decimal("NaN"), Decimal("0.001"))


def test_micro_to_credits_is_exact() -> None:
    assert micro_to_credits(225_000) == Decimal("0.225")
    assert str(micro_to_credits(225_000)) == "0.225"
    assert micro_to_credits(60_000_000) == Decimal("60")
    assert micro_to_credits(1) == Decimal("0.000001")
    assert micro_to_credits(-1_500_000) == Decimal("-1.5")


def test_micro_to_usd_is_exact() -> None:
    assert micro_to_usd(225_000, Decimal("0.001")) == Decimal("0.000225")
    assert micro_to_usd(1, Decimal("0.003")) == Decimal("0.000000003")
    assert micro_to_usd(22_500, Decimal("0.01")) == Decimal("0.000225")


@pytest.mark.parametrize(
    ("credits", "micro"),
    [
        (Decimal("60"), 60_000_000),
        (Decimal("0.000001"), 1),
        (Decimal("1.5"), 1_500_000),
        (Decimal("-2"), -2_000_000),
        (5, 5_000_000),
        ("12.25", 12_250_000),
    ],
)
def test_credits_to_micro(credits: Decimal | int | str, micro: int) -> None:
    assert credits_to_micro(credits) == micro


@pytest.mark.parametrize("credits", [Decimal("0.0000001"), Decimal("1.0000005"), "abc", Decimal("Infinity")])
def test_credits_to_micro_rejects_fractions_of_a_micro_and_junk(credits: Decimal | str) -> None:
    with pytest.raises(ValueError):
        credits_to_micro(credits)


def test_round_trip_credits_micro() -> None:
    for micro in (0, 1, 999_999, 1_000_000, 123_456_789_012):
        assert credits_to_micro(micro_to_credits(micro)) == micro
