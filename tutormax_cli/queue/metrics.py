"""The worker's HTTP endpoint: Prometheus metrics, liveness and readiness.

* `/metrics` — prometheus-client's text format, from a registry of our own: counters of
  messages by outcome and kind, the batch-latency histogram, gauges of each input stream
  (length, lag, pending, age of the oldest pending entry), dead letters by error code, the
  time of the last committed batch and `tutormax_build_info{version}`.
* `/healthz` — 200 while the worker's loop has gone round within `stale_after_s` (a loop
  waiting out an outage goes round too), else 503: the process is stuck.
* `/readyz` — 200 only while Redis and the database both answer (checked at most once a
  second, on connections of its own), else 503.

Served by the standard library's threading HTTP server on `--metrics-addr` (default
127.0.0.1: exposing it is a choice) and `--metrics-port`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..config import DEFAULT_METRICS_ADDR
from ..errors import UsageError

HEALTH_STALE_S = 120.0  # /healthz turns 503 when the loop has not gone round for this long
READY_CACHE_S = 1.0  # /readyz checks the services at most this often


class Metrics:
    """Metrics, health and readiness; `close()` stops the server."""

    def __init__(
        self,
        port: int,
        addr: str = DEFAULT_METRICS_ADDR,
        *,
        ready: Callable[[], tuple[bool, str]] | None = None,
        stale_after_s: float = HEALTH_STALE_S,
    ) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        from .. import __version__

        self.registry = r = CollectorRegistry()
        self.messages = Counter(
            "tutormax_worker_messages",
            "Messages handled, by outcome and kind.",
            ["outcome", "kind"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            "tutormax_worker_batch_seconds",
            "Seconds to process, commit and ack one batch.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        stream = ["stream"]
        self.length = Gauge("tutormax_stream_length", "Entries in the stream.", stream, registry=r)
        self.lag = Gauge(
            "tutormax_stream_lag", "Entries not yet delivered to the group.", stream, registry=r
        )
        self.pending = Gauge(
            "tutormax_stream_pending", "Entries delivered, not acknowledged.", stream, registry=r
        )
        self.oldest_pending = Gauge(
            "tutormax_stream_oldest_pending_seconds",
            "Age of the group's oldest pending entry (0: none).",
            stream,
            registry=r,
        )
        self.dead_letters = Gauge(
            "tutormax_dead_letters", "Dead letters by error code.", ["error"], registry=r
        )
        self.last_commit = Gauge(
            "tutormax_worker_last_commit_timestamp_seconds",
            "Unix time of the last committed batch.",
            registry=r,
        )
        self.recoveries = Counter(
            "tutormax_worker_recoveries",
            "Times the consumer group had vanished and was recreated.",
            registry=r,
        )
        info = Gauge("tutormax_build_info", "tutormax's version.", ["version"], registry=r)
        info.labels(__version__).set(1)
        self._ready = ready
        self._ready_at = 0.0
        self._ready_state = (False, "not checked yet")
        self._lock = threading.Lock()
        self.stale_after_s = stale_after_s
        self.last_cycle = time.monotonic()
        self._server = _serve(addr, port, self)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="tutormax-metrics", daemon=True
        )
        self._thread.start()

    # -- what the worker calls -----------------------------------------------------------------

    def cycle(self) -> None:
        """The loop went round (liveness)."""
        self.last_cycle = time.monotonic()

    def streams(self, marks: dict[str, Any], lengths: dict[str, int], now_ms: int) -> None:
        for stream, mark in marks.items():
            self.length.labels(stream).set(lengths.get(stream, 0))
            self.pending.labels(stream).set(mark.pending)
            if mark.lag is not None:
                self.lag.labels(stream).set(mark.lag)
            oldest = mark.oldest_pending
            age = max(now_ms - int(oldest.split("-")[0]), 0) / 1000 if oldest else 0.0
            self.oldest_pending.labels(stream).set(age)

    def dead_letter_counts(self, by_error: dict[str, int]) -> None:
        self.dead_letters.clear()
        for error, n in by_error.items():
            self.dead_letters.labels(error).set(n)

    # -- what the HTTP handler asks --------------------------------------------------------------

    def healthy(self) -> tuple[bool, str]:
        quiet = time.monotonic() - self.last_cycle
        if quiet <= self.stale_after_s:
            return True, f"ok: the loop went round {quiet:.1f} s ago"
        return False, f"stuck: the loop has not gone round for {quiet:.0f} s"

    def ready(self) -> tuple[bool, str]:
        if self._ready is None:
            return True, "ok"
        with self._lock:
            if time.monotonic() - self._ready_at >= READY_CACHE_S:
                try:
                    self._ready_state = self._ready()
                except Exception as exc:  # a check that fails is "not ready", never a crash
                    self._ready_state = (False, f"{type(exc).__name__}: {exc}")
                self._ready_at = time.monotonic()
            return self._ready_state

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _serve(addr: str, port: int, metrics: Metrics) -> ThreadingHTTPServer:
    if not 0 <= port <= 65535:
        raise UsageError(f"--metrics-port {port}: not a port (0–65535)")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the http.server name)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

                self._send(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                ok, why = metrics.healthy() if path == "/healthz" else metrics.ready()
                self._send(200 if ok else 503, (why + "\n").encode(), "text/plain")
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain")

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:  # scrapes are not worth a log line
            pass

    try:
        return ThreadingHTTPServer((addr, port), Handler)
    except OSError as exc:
        raise UsageError(
            f"--metrics-addr {addr} --metrics-port {port}: cannot listen: {exc.strerror or exc}"
        ) from None
    except (OverflowError, ValueError) as exc:  # a port out of range, a malformed address
        raise UsageError(f"--metrics-addr {addr} --metrics-port {port}: {exc}") from None
