"""YAML → :class:`~pricing.catalog.Catalog`, with errors that name file, place and line.

The catalog format::

    usd_per_credit: "0.001"        # USD per credit; optional, default 0.001; must be > 0

    tiers:                         # plans; an account names one by its code
      - code: free                 # required, unique, no spaces or ':'
        name: Free                 # optional, defaults to the code
        allowed_models: ["demo-*"] # required: exact names or fnmatch globs;
                                   #   [] allows nothing, ["*"] allows every model
        denied_models: ["demo-premium"]   # optional; deny wins over allow
        default_markup: {kind: multiplier, value: "1.5"}   # optional; see rules

    rules:                         # markup rules; the most specific match wins
      - id: pro-gpt4o              # required, unique
        tier: pro                  # optional; must name a tier above
        model: "gpt-4o*"           # optional; exact name or glob
        provider: openai           # optional; LiteLLM's provider name
        priority: 10               # optional int, default 0; breaks ties
        kind: multiplier           # passthrough | multiplier | percentage | fixed | override
        value: "2.0"               # multiplier: factor > 0 (2.0 = +100%)
                                   # percentage: percent added > -100 (10 = +10%)
        fee_usd: "0.001"           # fixed: required fee per call; other kinds: optional extra
        input_per_1m: "2.50"       # override only: USD per 1M input tokens ...
        output_per_1m: "10.00"     #   ... and output tokens; replace LiteLLM's cost
        min_charge_usd: "0.01"     # optional on any kind: the floor of a charge

    models:                        # optional: rates LiteLLM lacks, or worst-case caps
      demo-gpt: {input_per_1m: "2.50", output_per_1m: "10.00", max_output_tokens: 4096}

    byok_rules: [...]              # fees for bring-your-own-key calls (pricing.byok)
    free_models: {...}             # models the provider does not charge for (pricing.free_models)
    time_windows: [...]            # multipliers by local time of day (pricing.adjustments)
    volume_discounts: [...]        # discounts by the period's provider spend (pricing.adjustments)

Tiers also take allocation, rollover, quota and limit fields (pricing.tiers),
and ``allowed_models``/``denied_models`` accept ``group:NAME`` for a LiteLLM
access group.

Precedence when a call is priced (each step is listed in ``Priced.steps``):

1. a BYOK call is charged its BYOK fee and nothing else;
2. else a free model (matching ``free_models.patterns``, or reporting a cost
   of exactly 0 without being a cache hit, unless an ``override`` rule prices
   it) is charged by the ``free_models`` rule (rule id ``free-model``);
3. else the winning markup rule, the tier's ``default_markup``, or passthrough
   (rule choice below), including its ``fee_usd``;
4. then the first time window containing ``now`` multiplies the result;
5. then the highest volume discount reached by the period's spend reduces it;
6. then the base rule's ``min_charge_usd`` is the floor (a discount never
   takes a charge below the operator's minimum).

Rule choice: among matching rules, the highest (model, tier, provider)
specificity wins, where a model given as an exact name scores 2, as a glob 1,
absent 0, and a tier or provider present scores 1; ties go to the higher
``priority``, then to the earlier rule. With no matching rule the tier's
``default_markup`` applies, else passthrough. A rule with no selectors at all
matches every call, so it overrides every tier's default.

Numbers may be written as YAML numbers or strings. YAML floats are read from
their source text straight into ``Decimal`` (never through ``float``), so
``0.1`` is exactly 0.1. Unknown keys are errors, so a typo cannot silently
drop a price. The first problem (earliest line) is raised as a
:class:`~pricing.errors.CatalogError` such as
``pricing.yaml:14: rules[2].kind: unknown markup kind 'mult'; ...``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from pricing.adjustments import TimeWindow, VolumeDiscount
from pricing.byok import ByokRule
from pricing.catalog import Catalog, Markup, MarkupRule, ModelPrice, PositiveMoney, Tier
from pricing.errors import CatalogError
from pricing.free_models import FreeModels
from pricing.money import DEFAULT_USD_PER_CREDIT
from pricing.tiers import ModelQuota, Rollover, StripePriceIds

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Located:
    """Where a problem found at a document path is shown to the operator."""

    file: str
    location: str
    line: int | None
    path: Path
    """The document path, used to word the reason (the key's name, the keys allowed next to it)."""


Locator = Callable[[Path], Located]


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads floats as ``Decimal`` from their source text."""


def _construct_decimal(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Decimal | str:
    text = node.value.replace("_", "")
    try:
        return Decimal(text)
    except InvalidOperation:
        # .inf, .nan, sexagesimal: hand the text on so validation rejects it by name.
        return str(node.value)


_Loader.add_constructor("tag:yaml.org,2002:float", _construct_decimal)


class _Document(BaseModel):
    """The YAML document as written (tiers as a list), before cross-checks."""

    model_config = ConfigDict(extra="forbid")

    usd_per_credit: PositiveMoney = DEFAULT_USD_PER_CREDIT
    tiers: list[Tier] = Field(default_factory=list)
    rules: list[MarkupRule] = Field(default_factory=list)
    models: dict[str, ModelPrice] = Field(default_factory=dict)
    byok_rules: list[ByokRule] = Field(default_factory=list)
    free_models: FreeModels | None = None
    time_windows: list[TimeWindow] = Field(default_factory=list)
    volume_discounts: list[VolumeDiscount] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        # "rules:" with every entry commented out reads as null; treat it as empty.
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None or key == "usd_per_credit"}
        return data


_MARKUP_KEYS = tuple(Markup.model_fields)
_RULE_KEYS = tuple(key for key in MarkupRule.model_fields if key != "markup") + _MARKUP_KEYS


def load_catalog(path: str | os.PathLike[str]) -> Catalog:
    """Read and validate the catalog file at ``path``."""
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise CatalogError(source, "file", f"cannot be read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise CatalogError(source, "file", f"is not UTF-8 text: {exc.reason}") from exc
    return parse_catalog(text, source)


def parse_catalog(text: str, source: str = "<string>") -> Catalog:
    """Validate catalog YAML given as a string; ``source`` names it in errors."""
    data, lines = read_yaml(text, source)
    return build_catalog(data, yaml_locator(source, lines), source=source, version=text_version(text))


def text_version(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def build_catalog(data: object, locate: Locator, *, source: str, version: str) -> Catalog:
    """Validate a parsed document; ``locate`` turns a document path into the place an error names."""
    if not isinstance(data, dict):
        where = locate(())
        raise CatalogError(
            where.file,
            "document",
            "the catalog must be a mapping with tiers, rules and models",
            where.line or 1,
        )
    try:
        document = _Document.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc.errors(), locate) from None
    _cross_check(document, locate)
    return Catalog(
        usd_per_credit=document.usd_per_credit,
        tiers={tier.code: tier for tier in document.tiers},
        rules=tuple(document.rules),
        models=dict(document.models),
        byok_rules=tuple(document.byok_rules),
        free_models=document.free_models,
        time_windows=tuple(document.time_windows),
        volume_discounts=tuple(document.volume_discounts),
        version=version,
        source=source,
    )


def read_yaml(text: str, source: str) -> tuple[object, dict[Path, int]]:
    """Parse once into nodes (for line numbers) and construct data from the same nodes."""
    try:
        # the reader checks the characters as it is built: a NUL byte fails here
        loader = _Loader(text)
    except yaml.YAMLError as exc:
        raise CatalogError(
            source, "yaml", str(exc).splitlines()[0] if str(exc) else "unreadable YAML"
        ) from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise CatalogError(source, "document", "the catalog is empty", 1)
        lines: dict[Path, int] = {(): node.start_mark.line + 1}
        _index_lines(node, (), lines, source, set())
        return loader.construct_document(node), lines
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = " ".join(part for part in (exc.context, exc.problem) if part) or "invalid YAML"
        raise CatalogError(source, "yaml", reason, mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise CatalogError(source, "yaml", str(exc)) from None
    finally:
        loader.dispose()


def _index_lines(node: yaml.Node, path: Path, lines: dict[Path, int], source: str, active: set[int]) -> None:
    """Record the 1-based line of every key and list item; reject duplicate keys."""
    if id(node) in active:  # a recursive alias (&a [*a]); constructing it will fail or loop elsewhere
        return
    active.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key, line = str(key_node.value), key_node.start_mark.line + 1
            # PyYAML keeps the last of duplicate keys silently; in a price list that hides a typo.
            if key in seen:
                raise CatalogError(
                    source,
                    format_path((*path, key)),
                    f"duplicate key {key!r} (first at line {seen[key]})",
                    line,
                )
            seen[key] = line
            lines[(*path, key)] = line
            _index_lines(value_node, (*path, key), lines, source, active)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            _index_lines(item, (*path, index), lines, source, active)
    active.discard(id(node))


def _first_error(errors: list[ErrorDetails], locate: Locator) -> CatalogError:
    located = [(locate(tuple(part for part in error["loc"] if part != "[key]")), error) for error in errors]
    where, error = min(located, key=lambda item: _line_order(item[0].line))
    return CatalogError(where.file, where.location, _reason(error, where.path), where.line)


def _line_order(line: int | None) -> float:
    return math.inf if line is None else line


def yaml_locator(source: str, lines: dict[Path, int]) -> Locator:
    def locate(path: Path) -> Located:
        found, line = locate_line(path, lines)
        return Located(source, format_path(found), line, found)

    return locate


def locate_line(loc: Path, lines: dict[Path, int]) -> tuple[Path, int | None]:
    """The document path of a pydantic error location, and the line to show for it."""
    candidates = [loc]
    if len(loc) >= 3 and loc[0] == "rules" and loc[2] == "markup":
        # A rule's markup fields are written flat in the rule (see MarkupRule).
        candidates.append(loc[:2] + loc[3:])
    for candidate in candidates:
        if candidate in lines:
            return candidate, lines[candidate]
    # A missing key has no line of its own: show the line of what should hold it.
    path = candidates[-1]
    for depth in range(len(path), -1, -1):
        if path[:depth] in lines:
            return path, lines[path[:depth]]
    return path, None


def _reason(error: ErrorDetails, path: Path) -> str:
    kind, message = error["type"], error["msg"]
    if kind == "value_error":
        return message.removeprefix("Value error, ")
    if kind == "extra_forbidden" and path:
        key = str(path[-1])
        allowed = _allowed_keys(path[:-1])
        close = difflib.get_close_matches(key, allowed, n=1)
        if close:
            return f"unknown key {key!r} (did you mean {close[0]!r}?)"
        return (
            f"unknown key {key!r}; allowed here: {', '.join(allowed)}" if allowed else f"unknown key {key!r}"
        )
    if kind == "missing" and path:
        return f"missing required key {path[-1]!r}"
    given = error.get("input")
    if isinstance(given, Decimal):
        return f"{message}, got {given}"
    if isinstance(given, str | int | bool) or given is None:
        return f"{message}, got {given!r}"
    return message


# The keys allowed at a place in the document, by the shape of its path
# (a str names a key, int any list index, str-the-type any mapping key).
_SHAPES: tuple[tuple[tuple[object, ...], tuple[str, ...]], ...] = (
    ((), tuple(_Document.model_fields)),
    (("tiers", int), tuple(Tier.model_fields)),
    (("tiers", int, "default_markup"), _MARKUP_KEYS),
    (("tiers", int, "rollover"), tuple(Rollover.model_fields)),
    (("tiers", int, "quotas", int), tuple(ModelQuota.model_fields)),
    (("tiers", int, "stripe_price_ids"), tuple(StripePriceIds.model_fields)),
    (("rules", int), _RULE_KEYS),
    (("models", str), tuple(ModelPrice.model_fields)),
    (("byok_rules", int), tuple(ByokRule.model_fields)),
    (("free_models",), tuple(FreeModels.model_fields)),
    (("time_windows", int), tuple(TimeWindow.model_fields)),
    (("volume_discounts", int), tuple(VolumeDiscount.model_fields)),
)


def _allowed_keys(parent: Path) -> tuple[str, ...]:
    for shape, keys in _SHAPES:
        if len(shape) == len(parent) and all(
            _fits(part, want) for part, want in zip(parent, shape, strict=True)
        ):
            return keys
    return ()


def _fits(part: str | int, want: object) -> bool:
    if want is int:
        return isinstance(part, int)
    if want is str:
        return isinstance(part, str)
    return part == want


def _cross_check(document: _Document, locate: Locator) -> None:
    """Checks that span entries: unique codes and ids, references to defined tiers."""
    problems: list[tuple[Path, str]] = []
    tier_at: dict[str, int] = {}
    for index, tier in enumerate(document.tiers):
        if tier.code in tier_at:
            first = tier_at[tier.code]
            problems.append(
                (("tiers", index, "code"), f"duplicate tier code {tier.code!r} (also tiers[{first}])")
            )
        else:
            tier_at[tier.code] = index
    defined = ", ".join(tier_at) or "none"
    rule_at: dict[str, int] = {}
    for index, rule in enumerate(document.rules):
        if rule.id in rule_at:
            first = rule_at[rule.id]
            problems.append((("rules", index, "id"), f"duplicate rule id {rule.id!r} (also rules[{first}])"))
        else:
            rule_at[rule.id] = index
        if rule.tier is not None and rule.tier not in tier_at:
            problems.append(
                (("rules", index, "tier"), f"unknown tier {rule.tier!r}; defined tiers: {defined}")
            )
    # (id, tiers) of each entry of the sections that name tiers
    sections: dict[str, list[tuple[str, tuple[str, ...]]]] = {
        "byok_rules": [(entry.id, entry.tiers) for entry in document.byok_rules],
        "time_windows": [(entry.id, entry.tiers) for entry in document.time_windows],
        "volume_discounts": [(entry.id, entry.tiers) for entry in document.volume_discounts],
    }
    for section, entries in sections.items():
        id_at: dict[str, int] = {}
        for index, (entry_id, tiers) in enumerate(entries):
            if entry_id in id_at:
                problems.append(
                    ((section, index, "id"), f"duplicate id {entry_id!r} (also {section}[{id_at[entry_id]}])")
                )
            else:
                id_at[entry_id] = index
            for position, code in enumerate(tiers):
                where: Path = (section, index, "tiers", position)
                if code not in tier_at:
                    problems.append((where, f"unknown tier {code!r}; defined tiers: {defined}"))
                elif section == "byok_rules" and not document.tiers[tier_at[code]].byok_allowed:
                    problems.append((where, f"tier {code!r} does not set byok_allowed: true"))
    if problems:
        located = [(locate(path), reason) for path, reason in problems]
        where_found, reason = min(located, key=lambda item: _line_order(item[0].line))
        raise CatalogError(where_found.file, where_found.location, reason, where_found.line)


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def format_path(path: Path) -> str:
    """``("rules", 2, "kind")`` → ``rules[2].kind``; ``("models", "gpt-4o")`` → ``models["gpt-4o"]``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _IDENTIFIER.fullmatch(part):
            text += f".{part}" if text else part
        else:
            text += f"[{json.dumps(part)}]"
    return text or "document"
