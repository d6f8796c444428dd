"""Real worker processes for the fault tests: the command line, running and waiting."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any


def worker_cmd(db_url: str, redis_url: str, prefix: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tutormax_cli", "worker", "--burst", "--json",
            "--db", db_url, "--redis", redis_url, "--prefix", prefix, "--batch-size", "100",
            "--max-attempts", "2", "--retry-base-ms", "10", "--retry-max-ms", "50",
            "--block-ms", "100", *extra]  # fmt: skip


def run(
    cmd: list[str], fault: str | None = None, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env, **({"TUTORMAX_FAULT": fault} if fault else {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout)


def start(cmd: list[str], **env: str) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env})  # fmt: skip


def wait_for(condition: Callable[[], Any], what: str, timeout_s: float = 20) -> Any:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")
