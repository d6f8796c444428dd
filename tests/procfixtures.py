"""Real worker processes for the fault tests: the command line, running and waiting."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib


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


def full_temp_disk(
    cmd: list[str], temp: Path, hint: str = "set TMPDIR to a directory with more free space"
) -> None:
    """`cmd` (python -c, setting a file-size limit first) run with TMPDIR=temp: the clear
    error of a full disk under a spill (exit 2, the folder, the hint), no traceback, and
    nothing left in the folder."""
    proc = run(cmd, timeout=300, TMPDIR=str(temp))
    assert proc.returncode == 2, proc.stderr
    assert f"error: temporary files in {temp}" in proc.stderr
    assert f"hint: {hint}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(temp.iterdir()) == []


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


class PrivateRedis:
    """A redis-server of this test's own on a free port, with no persistence: restarting
    it is a Redis that comes back empty. Stopped by pid; the shared server is never
    touched."""

    def __init__(self, tmp: Path, *extra: str) -> None:
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed")
        self.extra = extra
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.dir = tmp
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir), *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        args = list(self.extra)
        password = args[args.index("--requirepass") + 1] if "--requirepass" in args else None
        client = redis_lib.Redis(port=self.port, password=password)
        wait_for(lambda: _pings(client), "the private redis-server to start")
        client.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


def _pings(client: redis_lib.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis_lib.RedisError:
        return False
