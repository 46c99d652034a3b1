"""Model-name patterns: an exact name, or an ``fnmatch`` glob (``*``, ``?``, ``[...]``).

Matching is case-sensitive on every platform (``fnmatchcase``): model names
are identifiers, and a catalog must price the same way on every host.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

_GLOB_CHARS = frozenset("*?[")

# Scores of how specifically a pattern names a model; higher is more specific.
EXACT = 2
GLOB = 1
ABSENT = 0


def is_glob(pattern: str) -> bool:
    return any(char in _GLOB_CHARS for char in pattern)


def matches(pattern: str, name: str) -> bool:
    if is_glob(pattern):
        return fnmatchcase(name, pattern)
    return pattern == name


def matches_any(patterns: tuple[str, ...], name: str) -> bool:
    return any(matches(pattern, name) for pattern in patterns)


def model_score(pattern: str | None, name: str) -> int | None:
    """How specifically ``pattern`` names ``name``; ``None`` when it does not match."""
    if pattern is None:
        return ABSENT
    if not matches(pattern, name):
        return None
    return GLOB if is_glob(pattern) else EXACT
