"""Model-name patterns: an exact name, an ``fnmatch`` glob (``*``, ``?``, ``[...]``),
or a LiteLLM access group written ``group:NAME``.

Matching is case-sensitive on every platform (``fnmatchcase``): model names
are identifiers, and a catalog must price the same way on every host.

Access groups are not something a model name shows: which groups a model
belongs to lives in the proxy's model list, so the caller passes them in
(``groups``) and a ``group:NAME`` pattern matches when NAME is among them. A
glob never matches a ``group:`` pattern's text and a group pattern never
matches a model name, so ``"*"`` does not mean "every group".
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

_GLOB_CHARS = frozenset("*?[")

GROUP_PREFIX = "group:"

# Scores of how specifically a pattern names a model; higher is more specific.
EXACT = 2
GLOB = 1
ABSENT = 0

NO_GROUPS: frozenset[str] = frozenset()


def is_glob(pattern: str) -> bool:
    return any(char in _GLOB_CHARS for char in pattern)


def is_group(pattern: str) -> bool:
    return pattern.startswith(GROUP_PREFIX)


def matches(pattern: str, name: str, groups: frozenset[str] = NO_GROUPS) -> bool:
    if is_group(pattern):
        return pattern[len(GROUP_PREFIX) :] in groups
    if is_glob(pattern):
        return fnmatchcase(name, pattern)
    return pattern == name


def matches_any(patterns: Iterable[str], name: str, groups: frozenset[str] = NO_GROUPS) -> bool:
    return any(matches(pattern, name, groups) for pattern in patterns)


def model_score(pattern: str | None, name: str) -> int | None:
    """How specifically ``pattern`` names ``name``; ``None`` when it does not match."""
    if pattern is None:
        return ABSENT
    if not matches(pattern, name):
        return None
    return GLOB if is_glob(pattern) else EXACT
