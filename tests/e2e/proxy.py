"""Start and stop a real LiteLLM proxy process with the plugin loaded from a config file."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

MASTER_KEY = "sk-test-master-7f3a9c1e5b2d4f6a8c0e2b4d6f8a0c2e"
CONFIG = Path(__file__).with_name("proxy_config.yaml")
LITELLM = Path(sys.executable).with_name("litellm")
# What most proxies under test run: each charge committed to the ledger before its
# response and each call its own hold, so a test may read the ledger the moment a call
# returns. The defaults (settle journal, local escrow) run in test_defaults.py and in the
# fast paths' modules.
DIRECT_SETTLE_ENV = {"CREDITS_SETTLE_MODE": "direct", "CREDITS_ESCROW": "off"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningProxy:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_proxy(
    workdir: Path, env: Mapping[str, str], config: Path = CONFIG, timeout: float = 90
) -> RunningProxy:
    port = free_port()
    log_path = workdir / f"proxy-{port}.log"
    full_env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_MASTER_KEY": MASTER_KEY,
        "CREDITS_OUTBOX_PATH": str(workdir / "outbox.jsonl"),
        **env,
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(LITELLM), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
            cwd=workdir,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    proxy = RunningProxy(process, port, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"proxy exited with {process.returncode}:\n{proxy.log()[-4000:]}")
        try:
            if httpx.get(f"{proxy.base_url}/health/liveliness", timeout=1).status_code == 200:
                return proxy
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proxy.stop()
    raise RuntimeError(f"proxy not up after {timeout}s:\n{proxy.log()[-4000:]}")
