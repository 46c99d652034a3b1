"""The catalog from YAML merged with rows an admin edited in the database. Pure: rows come in.

The rules, in the order they are applied:

1. **Tiers** (``rows.tiers``, one dict per tier with the YAML tier's fields):
   a row whose ``code`` names a YAML tier replaces the fields the row sets
   and keeps the rest; a row with a new code adds a tier, which must then be
   complete (``allowed_models`` may come from rule 2).
2. **Model access** (``rows.tier_model_access``: ``tier_code``, ``pattern``,
   ``effect`` allow|deny): when any row names a tier, that tier's
   ``allowed_models`` and ``denied_models`` are replaced entirely by its rows,
   in ``position`` order when rows carry one, else in the order given.
3. **Markup rules** (``rows.pricing_rules``, the fields of a YAML rule): a row
   whose ``id`` names a YAML rule replaces that rule in its place (so
   tie-breaks by order are unchanged); a new id is added after the YAML rules.
   ``active: false`` keeps a rule but never selects it, which is how a row
   switches off a rule written in the YAML.

In every row, ``updated_at``, ``updated_by``, ``created_at``, ``created_by``
(and ``id`` in tier and access rows) are bookkeeping and ignored; a null is
the same as an absent field; a ``data`` field holding a mapping (or its JSON
text) is read as more fields of the row, for tables that store them as JSON.

The merged document is validated as a whole, exactly as YAML is. A problem
in a row is reported as ``CatalogError(file="database", location=...,
line=None)`` with locations such as ``pricing_rules[id=gpt4o-min].kind``,
``tiers[code=pro].monthly_credits`` or ``tier_model_access[3].effect``; a
problem in the YAML keeps its file and line. ``version`` hashes the YAML text
and every row (bookkeeping included), so it changes when any of them does;
with no rows it equals :func:`~pricing.loading.parse_catalog`'s.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pricing.catalog import Catalog
from pricing.errors import CatalogError
from pricing.loading import Located, Path, build_catalog, format_path, locate_line, read_yaml, text_version

DATABASE = "database"

_BOOKKEEPING = frozenset({"updated_at", "updated_by", "created_at", "created_by"})
_EFFECTS = ("allow", "deny")


@dataclass(frozen=True)
class CatalogRows:
    """The catalog's rows as read from the database, one dict per row."""

    tiers: list[dict[str, Any]] = field(default_factory=list)
    tier_model_access: list[dict[str, Any]] = field(default_factory=list)
    pricing_rules: list[dict[str, Any]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.tiers or self.tier_model_access or self.pricing_rules)


@dataclass
class _TierOrigin:
    yaml_index: int | None
    label: str | None = None  # "tiers[code=pro]" when a row touched the tier
    row_fields: set[str] = field(default_factory=set)
    access_rows: dict[str, list[int]] = field(default_factory=dict)  # list field -> row index per entry


@dataclass
class _RuleOrigin:
    yaml_index: int | None
    label: str | None = None


def merge_catalog(base: str | Mapping[str, Any], rows: CatalogRows, source: str = "<string>") -> Catalog:
    """The catalog of YAML ``base`` (text, or the mapping it parses to) with ``rows`` laid over it."""
    if isinstance(base, str):
        base_text = base
        data, lines = read_yaml(base, source)
    else:
        base_text = json.dumps(base, sort_keys=True, default=str)
        data, lines = copy.deepcopy(dict(base)), {}
    version = text_version(base_text) if not rows else _version(base_text, rows)
    yaml_tiers = data.get("tiers") if isinstance(data, dict) else None
    yaml_rules = data.get("rules") if isinstance(data, dict) else None
    if not (isinstance(data, dict) and _list_of_dicts(yaml_tiers) and _list_of_dicts(yaml_rules)):
        # The YAML's own shape is wrong; report it as parse_catalog would, rows or not.
        return build_catalog(data, _Locator(source, lines, [], []), source=source, version=version)

    tiers = [dict(tier) for tier in yaml_tiers or []]
    tier_origins = [_TierOrigin(index) for index in range(len(tiers))]
    _merge_tiers(tiers, tier_origins, rows.tiers)
    _merge_access(tiers, tier_origins, rows.tier_model_access)
    rules = [dict(rule) for rule in yaml_rules or []]
    rule_origins = [_RuleOrigin(index) for index in range(len(rules))]
    _merge_rules(rules, rule_origins, rows.pricing_rules)

    merged = {**data, "tiers": tiers, "rules": rules}
    locator = _Locator(source, lines, tier_origins, rule_origins)
    return build_catalog(merged, locator, source=source, version=version)


def _merge_tiers(tiers: list[dict[str, Any]], origins: list[_TierOrigin], rows: list[dict[str, Any]]) -> None:
    at = {tier.get("code"): index for index, tier in enumerate(tiers)}
    seen: set[str] = set()
    for number, raw in enumerate(rows):
        row = _clean(raw, f"tiers[{number}]", drop_id=True)
        code = row.get("code")
        if not isinstance(code, str) or not code:
            raise _row_error(
                f"tiers[{number}].code",
                "missing required key 'code'" if code is None else f"must be a tier code, got {code!r}",
            )
        label = f"tiers[code={code}]"
        if code in seen:
            raise _row_error(f"{label}.code", f"two rows for tier {code!r}")
        seen.add(code)
        if code in at:
            index = at[code]
            tiers[index].update(row)
        else:
            index = len(tiers)
            at[code] = index
            tiers.append(row)
            origins.append(_TierOrigin(None))
        origins[index].label = label
        origins[index].row_fields |= set(row) - {"code"}


def _merge_access(
    tiers: list[dict[str, Any]], origins: list[_TierOrigin], rows: list[dict[str, Any]]
) -> None:
    at = {tier.get("code"): index for index, tier in enumerate(tiers)}
    lists: dict[int, dict[str, list[tuple[int, str]]]] = {}
    ordered = sorted(enumerate(rows), key=lambda item: _position(item[1]))
    for number, raw in ordered:
        where = f"tier_model_access[{number}]"
        row = _clean(raw, where, drop_id=True)
        row.pop("position", None)
        for key in ("tier_code", "pattern", "effect"):
            if key not in row:
                raise _row_error(f"{where}.{key}", f"missing required key {key!r}")
        unknown = sorted(set(row) - {"tier_code", "pattern", "effect"})
        if unknown:
            raise _row_error(
                f"{where}.{unknown[0]}",
                f"unknown key {unknown[0]!r}; allowed here: tier_code, pattern, effect",
            )
        if row["effect"] not in _EFFECTS:
            raise _row_error(f"{where}.effect", f"must be 'allow' or 'deny', got {row['effect']!r}")
        if row["tier_code"] not in at:
            defined = ", ".join(str(code) for code in at) or "none"
            raise _row_error(
                f"{where}.tier_code", f"unknown tier {row['tier_code']!r}; defined tiers: {defined}"
            )
        target = "allowed_models" if row["effect"] == "allow" else "denied_models"
        lists.setdefault(at[row["tier_code"]], {"allowed_models": [], "denied_models": []})[target].append(
            (number, row["pattern"])
        )
    for index, by_field in lists.items():
        for name, entries in by_field.items():
            tiers[index][name] = [pattern for _, pattern in entries]
            origins[index].access_rows[name] = [number for number, _ in entries]


def _merge_rules(rules: list[dict[str, Any]], origins: list[_RuleOrigin], rows: list[dict[str, Any]]) -> None:
    at = {rule.get("id"): index for index, rule in enumerate(rules)}
    seen: set[str] = set()
    for number, raw in enumerate(rows):
        row = _clean(raw, f"pricing_rules[{number}]", drop_id=False)
        rule_id = row.get("id")
        if not isinstance(rule_id, str) or not rule_id:
            raise _row_error(
                f"pricing_rules[{number}].id",
                "missing required key 'id'" if rule_id is None else f"must be a rule id, got {rule_id!r}",
            )
        label = f"pricing_rules[id={rule_id}]"
        if rule_id in seen:
            raise _row_error(f"{label}.id", f"two rows for rule {rule_id!r}")
        seen.add(rule_id)
        if rule_id in at:
            index = at[rule_id]
            rules[index] = row  # replaces the rule, not merged into it: a rule is one price
        else:
            index = len(rules)
            at[rule_id] = index
            rules.append(row)
            origins.append(_RuleOrigin(None))
        origins[index].label = label


class _Locator:
    """Maps a path in the merged document back to the YAML line or the database row it came from."""

    def __init__(
        self, source: str, lines: dict[Path, int], tiers: list[_TierOrigin], rules: list[_RuleOrigin]
    ) -> None:
        self.source, self.lines, self.tiers, self.rules = source, lines, tiers, rules

    def __call__(self, path: Path) -> Located:
        if len(path) >= 2 and path[0] == "tiers" and isinstance(path[1], int) and path[1] < len(self.tiers):
            origin = self.tiers[path[1]]
            rest = path[2:]
            if rest and rest[0] in origin.access_rows:
                numbers = origin.access_rows[str(rest[0])]
                if len(rest) >= 2 and isinstance(rest[1], int) and rest[1] < len(numbers):
                    return self._row(f"tier_model_access[{numbers[rest[1]]}].pattern", path)
                return self._row(f"{origin.label or 'tier_model_access'}", path)
            if origin.label is not None and (
                origin.yaml_index is None or (rest and rest[0] in origin.row_fields)
            ):
                return self._row(origin.label + _suffix(rest), path)
            if origin.yaml_index is not None:
                return self._yaml(("tiers", origin.yaml_index, *rest), path)
        if len(path) >= 2 and path[0] == "rules" and isinstance(path[1], int) and path[1] < len(self.rules):
            rule = self.rules[path[1]]
            if rule.label is not None:
                # A rule's markup fields are written flat in a row, as in YAML.
                rest = path[3:] if path[2:3] == ("markup",) else path[2:]
                return self._row(rule.label + _suffix(rest), ("rules", path[1], *rest))
            if rule.yaml_index is not None:
                return self._yaml(("rules", rule.yaml_index, *path[2:]), path)
        return self._yaml(path, path)

    def _row(self, location: str, path: Path) -> Located:
        return Located(DATABASE, location, None, path)

    def _yaml(self, yaml_path: Path, merged_path: Path) -> Located:
        found, line = locate_line(yaml_path, self.lines)
        # Keep the YAML's own indices in the message, the merged ones for wording the reason.
        flattened = merged_path[:2] + found[2:] if len(found) >= 2 else merged_path
        return Located(self.source, format_path(found), line, flattened)


def _suffix(rest: Path) -> str:
    if not rest:
        return ""
    text = format_path(rest)
    return text if text.startswith("[") else f".{text}"


def _clean(raw: object, where: str, *, drop_id: bool) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise _row_error(where, f"a row must be a mapping, got {type(raw).__name__}")
    row = {str(key): value for key, value in raw.items()}
    extra = row.pop("data", None)
    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except json.JSONDecodeError as exc:
            raise _row_error(f"{where}.data", f"is not JSON: {exc.msg}") from None
    if extra is not None:
        if not isinstance(extra, Mapping):
            raise _row_error(f"{where}.data", f"must hold a mapping, got {type(extra).__name__}")
        row = {**{str(key): value for key, value in extra.items()}, **row}
    ignored = _BOOKKEEPING | ({"id"} if drop_id else set())
    return {key: value for key, value in row.items() if key not in ignored and value is not None}


def _position(row: object) -> int:
    value = row.get("position") if isinstance(row, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _list_of_dicts(value: object) -> bool:
    return value is None or (isinstance(value, list) and all(isinstance(item, dict) for item in value))


def _row_error(location: str, reason: str) -> CatalogError:
    return CatalogError(DATABASE, location, reason, None)


def _version(base_text: str, rows: CatalogRows) -> str:
    payload = json.dumps(
        [rows.tiers, rows.tier_model_access, rows.pricing_rules], sort_keys=True, default=str
    )
    return hashlib.sha256(f"{base_text}\n\0{payload}".encode()).hexdigest()[:12]
