"""Money units: USD as ``Decimal``, balances as integer micro-credits (µcr).

The one rounding rule of the product lives here: a USD amount becomes µcr by
:func:`usd_to_micro`, which rounds **up** to the next whole µcr. ``price()``
and ``quote()`` call it once, at the very end; nothing else rounds.

The ceiling is computed on the exact integer ratios of both amounts rather
than in a ``decimal`` context, so the result does not depend on the caller's
context precision and a ``usd_per_credit`` such as ``0.003`` (whose quotients
do not terminate) still rounds correctly.
"""

from __future__ import annotations

from decimal import Context, Decimal, InvalidOperation
from fractions import Fraction

MICRO_PER_CREDIT = 1_000_000
DEFAULT_USD_PER_CREDIT = Decimal("0.001")

# Enough digits that sums and products of catalog prices and token counts are
# exact; the default context (28 digits) could round a large product silently.
EXACT_PRECISION = 60
# Passed to the operations below instead of entering a ``localcontext()``, which copies
# a context and swaps the thread's twice per use: these run a few times per call. Only
# its flags ever change, and nothing reads them.
_EXACT = Context(prec=EXACT_PRECISION)
_MICRO = Decimal(MICRO_PER_CREDIT)


def as_decimal(value: object, what: str = "amount") -> Decimal:
    """Return ``value`` as a finite ``Decimal``; floats are refused.

    A float reaching this layer means a conversion was skipped at the edge
    (``Decimal(str(x))`` in ``credit_hooks``), so it is a bug, not input.
    """
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise TypeError(f"{what} must be a Decimal or int, not {type(value).__name__}")
    result = Decimal(value)
    if not result.is_finite():
        raise ValueError(f"{what} must be finite, got {result}")
    return result


def usd_to_micro(usd: Decimal, usd_per_credit: Decimal = DEFAULT_USD_PER_CREDIT) -> int:
    """USD → integer µcr, rounded up (ceiling) to the next whole µcr."""
    usd = as_decimal(usd, "usd")
    rate = as_decimal(usd_per_credit, "usd_per_credit")
    if rate <= 0:
        raise ValueError(f"usd_per_credit must be > 0, got {rate}")
    # ceil(usd / rate * 10**6) on integers: it runs twice per call (quote and price),
    # and building Fractions took a third of a quote's time
    usd_num, usd_den = usd.as_integer_ratio()
    rate_num, rate_den = rate.as_integer_ratio()
    return -(-usd_num * MICRO_PER_CREDIT * rate_den // (usd_den * rate_num))


def micro_to_credits(micro: int) -> Decimal:
    """Integer µcr → credits, exactly (``225000`` → ``Decimal("0.225")``)."""
    micro = _as_int(micro, "micro")
    return _EXACT.divide(Decimal(micro), _MICRO)


def micro_to_usd(micro: int, usd_per_credit: Decimal = DEFAULT_USD_PER_CREDIT) -> Decimal:
    """Integer µcr → USD, exactly."""
    micro = _as_int(micro, "micro")
    rate = as_decimal(usd_per_credit, "usd_per_credit")
    return _EXACT.divide(_EXACT.multiply(Decimal(micro), rate), _MICRO)


def credits_to_micro(credits: Decimal | int | str) -> int:
    """Credits typed by an operator → integer µcr.

    Refuses amounts finer than one µcr instead of rounding them: an operator
    granting ``0.0000001`` credits has made a typo, and a silent rounding
    would hide it.
    """
    if isinstance(credits, str):
        try:
            credits = Decimal(credits.strip())
        except InvalidOperation:
            raise ValueError(f"not a number: {credits!r}") from None
    amount = as_decimal(credits, "credits")
    micro = Fraction(amount) * MICRO_PER_CREDIT
    if micro.denominator != 1:
        raise ValueError(f"{amount} credits is finer than 1 µcr (0.000001 credit)")
    return micro.numerator


def format_decimal(value: Decimal) -> str:
    """Plain notation without trailing zeros: ``Decimal("6.0E+1")`` → ``"60"``."""
    return format(value.normalize(_EXACT), "f")


def format_usd(value: Decimal) -> str:
    return f"-${format_decimal(-value)}" if value < 0 else f"${format_decimal(value)}"


def _as_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    return value
