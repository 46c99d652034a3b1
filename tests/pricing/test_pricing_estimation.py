from pricing import estimate_prompt_tokens


def test_hello_world_is_at_least_its_real_token_count() -> None:
    # "hello world" is 2 tokens in every OpenAI tokenizer; with chat framing 3+.
    assert estimate_prompt_tokens("hello world") >= 3
    assert estimate_prompt_tokens([{"role": "user", "content": "hello world"}]) >= 3


def test_formula_chars_over_three_plus_framing() -> None:
    messages = [
        {"role": "system", "content": "x" * 10},
        {"role": "user", "content": "y" * 20},
    ]
    # ceil(30 / 3) + 4 * 2 + 3
    assert estimate_prompt_tokens(messages) == 10 + 8 + 3


def test_rounds_characters_up() -> None:
    assert estimate_prompt_tokens([{"role": "user", "content": "abcd"}]) == 2 + 4 + 3


def test_never_below_a_four_chars_per_token_lower_bound() -> None:
    # Real tokenizers average ~4 characters per English token; the estimate must exceed that.
    text = "The quick brown fox jumps over the lazy dog. " * 50
    assert estimate_prompt_tokens(text) >= len(text) / 4


def test_text_parts_count_and_images_add_a_flat_1000() -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is in this picture?"},  # 24 chars
                {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 90_000}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            ],
        }
    ]
    assert estimate_prompt_tokens(messages) == 8 + 4 + 3 + 2 * 1000


def test_tool_calls_and_names_are_counted() -> None:
    plain = [{"role": "assistant", "content": None}]
    with_tool = [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}" * 30}}
            ],
        }
    ]
    assert estimate_prompt_tokens(with_tool) > estimate_prompt_tokens(plain) + 20


def test_none_and_empty_cost_nothing() -> None:
    assert estimate_prompt_tokens(None) == 0
    assert estimate_prompt_tokens([]) == 0


def test_list_of_strings_counts_each_as_a_message() -> None:
    # embedding inputs: ceil(6 / 3) + 4 * 2 + 3
    assert estimate_prompt_tokens(["abc", "def"]) == 2 + 8 + 3
