"""A tier's cap on a request's ``max_tokens``."""

from __future__ import annotations

from pricing.catalog import Tier
from pricing.errors import MaxTokensExceeded


def enforce_max_tokens(tier: Tier, requested: int | None) -> int | None:
    """The ``max_tokens`` to use for a request, or ``MaxTokensExceeded``.

    Without a cap on the tier the request is left as it is. With one, a
    request above it is lowered to the cap under the ``clamp`` policy and
    refused under ``reject``; a request that sets no ``max_tokens`` gets the
    cap under either policy, so the worst case the hold covers is bounded and
    a client that never asked for a number is not refused for not asking.
    """
    if requested is not None and (isinstance(requested, bool) or not isinstance(requested, int)):
        raise TypeError(f"requested must be an int or None, not {type(requested).__name__}")
    if requested is not None and requested < 0:
        raise ValueError(f"requested must not be negative, got {requested}")
    limit = tier.max_tokens_per_request
    if limit is None:
        return requested
    if requested is None:
        return limit
    if requested <= limit:
        return requested
    if tier.max_tokens_policy == "clamp":
        return limit
    raise MaxTokensExceeded(tier.code, requested, limit)
