"""`tutormax worker`: the long-lived consumer of the input streams."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer

from ..config import (
    DEFAULT_BLOCK_MS,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_METRICS_ADDR,
    DEFAULT_RECLAIM_IDLE_MS,
    DEFAULT_RETRY_BASE_MS,
    DEFAULT_RETRY_MAX_MS,
    DEFAULT_TIMEZONE,
    DEFAULT_WORKER_BATCH,
    DEFAULT_WORKER_BATCH_BYTES,
)
from .common import handle_errors, open_streams, parse_timezone, print_json, settings
from .options import (
    GROUP_DEFAULT,
    PREFIX_DEFAULT,
    STREAMS_DEFAULT,
    DbUrl,
    Format,
    Group,
    JsonFlag,
    Level,
    LogFormat,
    LogLevel,
    Prefix,
    Quiet,
    ReclaimIdleMs,
    RedisUrl,
    Streams,
    Timezone,
    Verbose,
)

log = logging.getLogger("tutormax.worker")


@handle_errors
def worker(
    consumer: Annotated[
        str | None, typer.Option(metavar="NAME", help="Consumer name (default: <hostname>-<pid>).")
    ] = None,
    group: Group = GROUP_DEFAULT,
    batch_size: Annotated[
        int, typer.Option(min=1, metavar="N", help="Entries read per stream per batch.")
    ] = DEFAULT_WORKER_BATCH,
    batch_mib: Annotated[
        int,
        typer.Option(
            min=1, metavar="MIB", help="Most bytes a batch reads, in MiB (whatever --batch-size)."
        ),
    ] = DEFAULT_WORKER_BATCH_BYTES >> 20,
    max_attempts: Annotated[
        int,
        typer.Option(
            min=1,
            metavar="N",
            help="Attempts for a record whose parent is missing (not on its way).",
        ),
    ] = DEFAULT_MAX_ATTEMPTS,
    reclaim_idle_ms: ReclaimIdleMs = DEFAULT_RECLAIM_IDLE_MS,
    block_ms: Annotated[
        int, typer.Option(min=1, metavar="MS", help="Longest wait for new entries.")
    ] = DEFAULT_BLOCK_MS,
    retry_base_ms: Annotated[
        int, typer.Option(min=1, metavar="MS", help="First retry delay (doubles per attempt).")
    ] = DEFAULT_RETRY_BASE_MS,
    retry_max_ms: Annotated[
        int, typer.Option(min=1, metavar="MS", help="Longest retry delay.")
    ] = DEFAULT_RETRY_MAX_MS,
    burst: Annotated[
        bool,
        typer.Option(
            "--burst",
            help="Exit 0 once the group has nothing new, pending or "
            "waiting for a retry (a gone consumer's entries are reclaimed first).",
        ),
    ] = False,
    timezone: Timezone = DEFAULT_TIMEZONE,
    db: DbUrl = None,
    redis: RedisUrl = None,
    streams: Streams = STREAMS_DEFAULT,
    prefix: Prefix = PREFIX_DEFAULT,
    metrics_port: Annotated[
        int | None,
        typer.Option(metavar="PORT", help="Serve /metrics, /healthz and /readyz on this port."),
    ] = None,
    metrics_addr: Annotated[
        str, typer.Option(metavar="ADDR", help="Address for --metrics-port (0.0.0.0: all).")
    ] = DEFAULT_METRICS_ADDR,
    log_level: Level = LogLevel.info,
    log_format: Format = LogFormat.text,
    verbose: Verbose = False,
    quiet: Quiet = False,
    json_out: JsonFlag = False,
) -> None:
    """Consume the input streams: enrich, persist, acknowledge, retry, dead-letter.

    SIGTERM or Ctrl-C finishes the current batch (commit, then ack) and exits 0 — during
    an outage at once, the batch left pending; a second one exits at once. Exit 2: a fatal
    problem (the database's schema is not this version's, a bad option); 3: a bug.

    Example:

      tutormax worker --db postgresql://app@localhost/tutoring --redis redis://localhost:6379/0
    """
    import time

    from ..queue.metrics import Metrics
    from ..queue.policy import RetryPolicy
    from ..queue.runtime import default_consumer, install_signal_handlers
    from ..queue.worker import Worker, WorkerOptions
    from ..store import Store
    from ..store.migrate import check
    from . import logs

    logs.setup(log_level, log_format, verbose=verbose, quiet=quiet)
    env = settings()
    opts = WorkerOptions(
        group=group,
        consumer=consumer or default_consumer(),
        batch_size=batch_size,
        batch_bytes=batch_mib << 20,
        reclaim_idle_ms=reclaim_idle_ms,
        block_ms=block_ms,
        timezone=parse_timezone(timezone),
        retry=RetryPolicy(max_attempts=max_attempts, base_ms=retry_base_ms, max_ms=retry_max_ms),
        fault=env.fault,
        fault_pause_s=env.fault_pause_s,
    )
    with open_streams(redis, prefix, streams, block_ms) as s:
        s.ping()
        with Store.connect(env.database(db)) as store:
            check(store, create=True)  # behind or ahead of this version: exit 2
            metrics = None
            if metrics_port is not None:
                metrics = Metrics(metrics_port, metrics_addr, ready=_readiness(s, store))
                log.info(
                    "metrics on http://%s:%d/metrics (and /healthz, /readyz)",
                    metrics_addr,
                    metrics.port,
                )
            disarm = None
            try:
                w = Worker(s, store, opts, metrics)
                disarm = install_signal_handlers(w)
                started = time.monotonic()
                totals = _run(w, burst)
                seconds = round(time.monotonic() - started, 3)
            finally:
                if disarm is not None:
                    disarm()
                if metrics is not None:
                    metrics.close()
    if json_out:
        rate = round((totals["persisted"] + totals["dead_lettered"]) / max(seconds, 1e-3), 1)
        print_json(
            {
                "consumer": opts.consumer,
                "group": group,
                **totals,
                "seconds": seconds,
                "msgs_per_s": rate,
            }
        )


def _run(w: Any, burst: bool) -> dict[str, int]:
    """The worker's own boundary: a fatal problem or a bug is logged through the worker's
    log (text or JSON), the batch stays pending, and the exit code says which it was."""
    from ..errors import EXIT_BUG, TutormaxError

    try:
        return dict(w.run(burst=burst))
    except TutormaxError as exc:
        n = w.in_hand
        held = f"; its batch of {n:,} message{'s' * (n != 1)} stays pending" if n else ""
        log.error("stopping: %s%s%s", exc.message, f" ({exc.hint})" if exc.hint else "", held)
        raise typer.Exit(exc.exit_code) from None
    except Exception:
        log.exception(
            "stopping on an internal error (a bug in tutormax); the batch stays "
            "pending and will be delivered again after a restart"
        )
        raise typer.Exit(EXIT_BUG) from None


def _readiness(streams: Any, store: Any) -> Any:
    """/readyz: Redis and the database both answer, on connections of their own."""

    def ready() -> tuple[bool, str]:
        try:
            streams.ping()
        except Exception as exc:
            return False, f"Redis: {getattr(exc, 'message', exc)}"
        try:
            store.ping()
        except Exception as exc:
            return False, f"database: {getattr(exc, 'message', exc)}"
        return True, "ok: Redis and the database answer"

    return ready
