#!/usr/bin/env bash
# Set up and start the LiteLLM proxy with litellm-credits on SQLite, serving demo
# models that need no provider key. Prints a demo API key on the pro plan
# (1000 bonus credits, plus 10000 monthly credits the proxy grants at start).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

mkdir -p var
export LITELLM_LOCAL_MODEL_COST_MAP=True
export CREDITS_DATABASE_URL=${CREDITS_DATABASE_URL:-sqlite:///./var/credits.db}
export CREDITS_PRICING_FILE=${CREDITS_PRICING_FILE:-examples/pricing.yaml}
export CREDITS_OUTBOX_PATH=${CREDITS_OUTBOX_PATH:-./var/credits-outbox.jsonl}
if [ -z "${LITELLM_MASTER_KEY:-}" ]; then
  [ -f var/master-key ] || .venv/bin/python -c 'import secrets; print("sk-" + secrets.token_hex(24))' > var/master-key
  LITELLM_MASTER_KEY=$(cat var/master-key)
  export LITELLM_MASTER_KEY
fi
PORT=${PORT:-4000}

admin=.venv/bin/credits-admin
$admin db init
$admin account create user:demo --tier pro >/dev/null
if [ ! -s var/demo-key ]; then
  $admin key issue user:demo --user-id demo --alias demo > var/demo-key
fi
$admin grant user:demo 1000 --source bonus --ref demo-welcome --reason "demo credits" >/dev/null
$admin account show user:demo

cat <<MSG

litellm-credits demo on http://127.0.0.1:$PORT  (Ctrl+C stops it)
  demo key:   $(cat var/demo-key)
  try:        .venv/bin/python examples/client.py --base-url http://127.0.0.1:$PORT
  balance:    curl -s -H "Authorization: Bearer \$(cat var/demo-key)" http://127.0.0.1:$PORT/credits/balance
  usage:      $admin usage user:demo

MSG
exec .venv/bin/litellm --config litellm_config.yaml --host 127.0.0.1 --port "$PORT"
