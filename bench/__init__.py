"""Benchmark suite of litellm-credits: ``python -m bench`` (see docs/BENCHMARKS.md)."""

import os

# Before any module of the suite imports litellm (the proxies it starts inherit it too):
# litellm otherwise fetches its cost map from GitHub at import, and nothing here may
# download at run time.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
