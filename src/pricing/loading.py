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
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from pricing.catalog import Catalog, Markup, MarkupRule, ModelPrice, PositiveMoney, Tier
from pricing.errors import CatalogError
from pricing.money import DEFAULT_USD_PER_CREDIT

Path = tuple[str | int, ...]


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
    data, lines = _read_yaml(text, source)
    if not isinstance(data, dict):
        raise CatalogError(
            source, "document", "the catalog must be a mapping with tiers, rules and models", lines.get((), 1)
        )
    try:
        document = _Document.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc.errors(), lines, source) from None
    _cross_check(document, lines, source)
    return Catalog(
        usd_per_credit=document.usd_per_credit,
        tiers={tier.code: tier for tier in document.tiers},
        rules=tuple(document.rules),
        models=dict(document.models),
        version=hashlib.sha256(text.encode("utf-8")).hexdigest()[:12],
        source=source,
    )


def _read_yaml(text: str, source: str) -> tuple[object, dict[Path, int]]:
    """Parse once into nodes (for line numbers) and construct data from the same nodes."""
    loader = _Loader(text)
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
                    _format_path((*path, key)),
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


def _first_error(errors: list[ErrorDetails], lines: dict[Path, int], source: str) -> CatalogError:
    located = [(_locate(tuple(error["loc"]), lines), error) for error in errors]
    (path, line), error = min(located, key=lambda item: _line_order(item[0][1]))
    return CatalogError(source, _format_path(path), _reason(error, path), line)


def _line_order(line: int | None) -> float:
    return math.inf if line is None else line


def _locate(loc: Path, lines: dict[Path, int]) -> tuple[Path, int | None]:
    """The document path of a pydantic error location, and the line to show for it."""
    loc = tuple(part for part in loc if part != "[key]")
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


def _allowed_keys(parent: Path) -> tuple[str, ...]:
    if parent == ():
        return tuple(_Document.model_fields)
    if len(parent) == 2 and parent[0] == "tiers":
        return tuple(Tier.model_fields)
    if len(parent) == 3 and parent[0] == "tiers" and parent[2] == "default_markup":
        return _MARKUP_KEYS
    if len(parent) == 2 and parent[0] == "rules":
        return _RULE_KEYS
    if len(parent) == 2 and parent[0] == "models":
        return tuple(ModelPrice.model_fields)
    return ()


def _cross_check(document: _Document, lines: dict[Path, int], source: str) -> None:
    """Checks that span entries: unique tier codes and rule ids, rules naming defined tiers."""
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
    rule_at: dict[str, int] = {}
    for index, rule in enumerate(document.rules):
        if rule.id in rule_at:
            first = rule_at[rule.id]
            problems.append((("rules", index, "id"), f"duplicate rule id {rule.id!r} (also rules[{first}])"))
        else:
            rule_at[rule.id] = index
        if rule.tier is not None and rule.tier not in tier_at:
            defined = ", ".join(tier_at) or "none"
            problems.append(
                (("rules", index, "tier"), f"unknown tier {rule.tier!r}; defined tiers: {defined}")
            )
    if problems:
        located = [(_locate(path, lines), reason) for path, reason in problems]
        (path, line), reason = min(located, key=lambda item: _line_order(item[0][1]))
        raise CatalogError(source, _format_path(path), reason, line)


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _format_path(path: Path) -> str:
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
