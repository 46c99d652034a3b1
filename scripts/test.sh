#!/usr/bin/env bash
# Set up and run every check: lint, types, and the test suite (PostgreSQL at
# 127.0.0.1:5432 and Redis at 127.0.0.1:6379 are expected; in CI a missing
# service fails the tests that need it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export LITELLM_LOCAL_MODEL_COST_MAP=True
.venv/bin/ruff check src tests examples bench
.venv/bin/ruff format --check src tests examples bench
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
