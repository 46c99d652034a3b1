"""Call the demo proxy with the OpenAI client and show what each call cost in credits.

.venv/bin/python examples/client.py --base-url http://127.0.0.1:4000
"""

from __future__ import annotations

import argparse
from pathlib import Path

import httpx
import openai


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", default="http://127.0.0.1:4000")
    parser.add_argument("--key", default=None, help="API key (default: var/demo-key)")
    args = parser.parse_args()
    key = args.key or Path("var/demo-key").read_text().strip()
    client = openai.OpenAI(base_url=f"{args.base_url}/v1", api_key=key, max_retries=0)

    raw = client.chat.completions.with_raw_response.create(
        model="demo-fast", messages=[{"role": "user", "content": "Say hello"}], max_tokens=100
    )
    reply = raw.parse()
    usage = reply.usage
    print("demo-fast:", reply.choices[0].message.content)
    if usage is not None:
        print(f"  tokens: {usage.prompt_tokens} in, {usage.completion_tokens} out")
    print(f"  LiteLLM cost: ${raw.headers.get('x-litellm-response-cost')}")
    print(f"  charged: {raw.headers.get('x-credits-charged')} credits")
    print(f"  remaining: {raw.headers.get('x-credits-remaining')} credits")

    stream = client.chat.completions.create(
        model="demo-fast",
        messages=[{"role": "user", "content": "Stream it"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    print("stream:", text)

    try:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    except openai.APIStatusError as exc:
        print(f"gpt-4o without a provider key: {exc.status_code}")

    balance = httpx.get(f"{args.base_url}/credits/balance", headers={"Authorization": f"Bearer {key}"}).json()
    print("balance:", balance)


if __name__ == "__main__":
    main()
