"""A tokenizer-free, deliberately high estimate of a prompt's tokens, for holds.

A hold must cover the worst case, so this errs high: real tokenizers average
about 4 characters per token on English text and rarely fall below 3, so
``ceil(chars / 3)`` over-counts. Each message adds 4 tokens of framing and the
reply priming adds 3 (the figures OpenAI documents for chat formats). Images
are not measured (their cost depends on size and detail the request may not
state); each counts a flat 1000 tokens, above a high-detail 1024px tile set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

CHARS_PER_TOKEN = 3
TOKENS_PER_MESSAGE = 4
TOKENS_PER_REPLY = 3
TOKENS_PER_IMAGE = 1000

_IMAGE_PART_TYPES = frozenset({"image_url", "input_image", "image"})


def estimate_prompt_tokens(messages: Sequence[Mapping[str, Any] | str] | str | None) -> int:
    """Over-estimate the prompt tokens of chat ``messages``, a text prompt, or a list of texts.

    A plain string (a completion prompt, an embedding input) counts as one
    message; ``None`` or an empty list counts as nothing.
    """
    if messages is None:
        return 0
    items: Sequence[Mapping[str, Any] | str] = [messages] if isinstance(messages, str) else messages
    if not items:
        return 0
    chars = 0
    images = 0
    for item in items:
        if isinstance(item, str):
            chars += len(item)
            continue
        for key, value in item.items():
            if key == "content":
                part_chars, part_images = _content_size(value)
                chars += part_chars
                images += part_images
            elif key != "role":
                # name, tool_calls (function names and JSON arguments), tool_call_id:
                # all are sent to the model as prompt tokens.
                chars += _text_length(value)
    text_tokens = -(-chars // CHARS_PER_TOKEN)
    return text_tokens + TOKENS_PER_MESSAGE * len(items) + TOKENS_PER_REPLY + TOKENS_PER_IMAGE * images


def _content_size(content: object) -> tuple[int, int]:
    """(characters, images) of a message's content: a string or a list of parts."""
    if isinstance(content, str):
        return len(content), 0
    if not isinstance(content, Sequence):
        return _text_length(content), 0
    chars = images = 0
    for part in content:
        if isinstance(part, Mapping):
            if part.get("type") in _IMAGE_PART_TYPES:
                images += 1
            elif part.get("type") == "text":
                chars += _text_length(part.get("text"))
            else:
                # audio, files, future part types: count every string in them, erring high.
                chars += _text_length(part)
        else:
            chars += _text_length(part)
    return chars, images


def _text_length(value: object) -> int:
    """Characters of every string inside ``value`` (nested dicts and lists included)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, Mapping):
        return sum(_text_length(item) for item in value.values())
    if isinstance(value, list | tuple):
        return sum(_text_length(item) for item in value)
    return 0
