"""Redis fixtures shared by the queue tests.

conftest.py loads this module as a plugin (`pytest_plugins`): every test module can ask for
`redis_url`, `prefix` and `streams`.

Every test gets its own key prefix `tmtest:<hex>:` on `TUTORMAX_TEST_REDIS_URL` (default
`redis://127.0.0.1:6379/0`), and its keys are deleted afterwards; nothing is flushed. If the
server is unreachable the test is skipped — unless `CI=true`, where it fails.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import suppress
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlparse

import pytest
import redis

from tutormax_cli.config import mask_url
from tutormax_cli.queue.streams import Streams

REDIS_URL = os.environ.get("TUTORMAX_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_client() -> redis.Redis:
    """A plain client for poking at keys directly (close it); skip/fail if unreachable."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        message = f"Redis not reachable at {mask_url(REDIS_URL)}: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return client


@pytest.fixture(name="redis_url")
def redis_url_fixture() -> str:
    redis_client().close()
    return REDIS_URL


@pytest.fixture(name="prefix")
def prefix_fixture(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"tmtest:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis_client()
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(name="streams")
def streams_fixture(redis_url: str, prefix: str) -> Iterator[Streams]:
    s = Streams(redis_url, prefix)
    try:
        yield s
    finally:
        s.close()


def jsonable(record: dict[str, Any]) -> dict[str, Any]:
    """A record as a producer sends it: timestamps as ISO-8601 text."""
    return {k: v.isoformat() if isinstance(v, datetime | date) else v for k, v in record.items()}


def publish(streams: Streams, kind: str, records: list[dict[str, Any]]) -> int:
    return streams.publish(kind, ((jsonable(r), {"test": True}) for r in records))


def dead_letters(streams: Streams) -> list[tuple[str, dict[str, Any]]]:
    """(entry id, envelope) of every dead letter, oldest first."""
    return [(r.entry_id, r.envelope) for r in streams.dead_letters()]


def xadd_raw(streams: Streams, kind: str, fields: dict[str, Any]) -> str:
    """Put an arbitrary entry on an input stream (for poison messages)."""
    client = redis_client()
    try:
        key = streams.dead_letter_key if kind == "dead_letter" else streams.stream(kind)
        return client.xadd(key, fields).decode()
    finally:
        client.close()


def pending(streams: Streams, group: str = "enrichment-workers") -> int:
    client = redis_client()
    try:
        total = 0
        for kind in ("tutors", "sessions", "feedback"):
            if client.exists(streams.stream(kind)):
                groups = client.xinfo_groups(streams.stream(kind))
                total += sum(int(g["pending"]) for g in groups if g["name"].decode() == group)
        return total
    finally:
        client.close()


def producer_envelope(channel: str, data: dict[str, Any], metadata: dict | None = None) -> str:
    """What a TutorMax producer's MessageSerializer.serialize writes, reimplemented here."""
    import hashlib

    message = {
        "id": str(uuid.uuid4()),
        "timestamp": datetime.now(UTC).replace(tzinfo=None).isoformat(),  # naive, as utcnow()
        "channel": channel,
        "data": data,
        "metadata": metadata or {},
    }
    digest = hashlib.sha256(json.dumps(message["data"], sort_keys=True).encode()).hexdigest()
    message["checksum"] = digest
    return json.dumps(message)


class FlakyProxy:
    """A TCP proxy in front of the test Redis that a test can cut: `cut()` drops every
    connection and refuses new ones until `restore()`. A real outage, seen only by the
    clients that connect through it (the shared Redis server is never touched)."""

    def __init__(self, target_url: str = REDIS_URL) -> None:
        import socket
        import threading

        u = urlparse(target_url)
        self._target = (u.hostname or "127.0.0.1", u.port or 6379)
        self._db = u.path or "/0"
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self._up = threading.Event()
        self._up.set()
        self._closing = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._spawn(self._accept)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}{self._db}"

    def _spawn(self, target: Any, *args: Any) -> None:
        import threading

        t = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(t)
        t.start()

    def _accept(self) -> None:
        import socket

        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            if not self._up.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=3)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            self._spawn(self._pump, client, upstream)
            self._spawn(self._pump, upstream, client)

    @staticmethod
    def _pump(src: Any, dst: Any) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        for s in (src, dst):
            with suppress(OSError):
                s.shutdown(2)

    def _drop_all(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            with suppress(OSError):
                s.shutdown(2)
            s.close()

    def cut(self) -> None:
        self._up.clear()
        self._drop_all()

    def restore(self) -> None:
        self._up.set()

    def close(self) -> None:
        self._closing = True
        self._drop_all()
        for t in self._threads:
            t.join(timeout=5)
        self._listener.close()
