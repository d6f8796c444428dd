"""One Redis connection and the stream names (see queue/streams/__init__.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any, Self

from ...config import check_url, mask_url, register_secret, scrub
from ...errors import QueueError, UsageError
from ...schema import KIND_ORDER

DEFAULT_PREFIX = "tutormax:"

DEFAULT_STREAMS = "{prefix}{kind}:enrichment"  # SPEC §6: TutorMax's enrichment queues

DEFAULT_GROUP = "enrichment-workers"

PUBLISH_CHUNK = 1000  # XADDs per round trip


class QueueUnavailable(QueueError):
    """Redis did not answer (connection refused, reset or timed out): an outage, not a fault."""


class GroupVanished(QueueError):
    """The consumer group (or its stream) is gone: Redis restarted empty, or someone deleted
    it. The worker recreates it and goes on."""

    def __init__(self, message: str, stream: str) -> None:
        super().__init__(message)
        self.stream = stream


def check_template(template: str) -> str:
    """`--streams`: a name with `{kind}` (and optionally `{prefix}`), else UsageError."""
    try:
        names = {template.format(kind=k, prefix="") for k in KIND_ORDER}
    except (KeyError, IndexError, ValueError) as exc:
        raise UsageError(
            f"--streams {template!r}: only {{kind}} and {{prefix}} may appear in braces ({exc})"
        ) from None
    if "{kind}" not in template or len(names) != len(KIND_ORDER):
        raise UsageError(f"--streams {template!r}: must contain {{kind}}, e.g. 'tutormax:{{kind}}'")
    return template


class Connection:
    """One Redis (connected on first use) and the key names of one template and prefix."""

    def __init__(
        self,
        url: str,
        prefix: str = DEFAULT_PREFIX,
        timeout_s: float = 30.0,
        *,
        streams: str = DEFAULT_STREAMS,
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s  # socket timeout: longer than any blocking read
        self.url_masked = mask_url(url)
        self.prefix = prefix
        self.template = check_template(streams)
        self._names = {k: self.template.format(kind=k, prefix=prefix) for k in KIND_ORDER}
        self._kinds = {v: k for k, v in self._names.items()}
        self.dead_letter_key = f"{prefix}dead_letter"
        self._index_key = f"{prefix}dead_letter:sources"  # "<stream> <id>" → dead-letter id
        if self.dead_letter_key in self._kinds:
            raise UsageError(f"--streams {streams!r}: a stream would be the dead-letter stream")
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        self._cursors: dict[str, str] = {}  # XAUTOCLAIM scan position per stream

    def stream(self, kind: str) -> str:
        return self._names[kind]

    @property
    def names(self) -> dict[str, str]:
        """kind → input stream name."""
        return dict(self._names)

    def kind_of(self, stream: str) -> str | None:
        return self._kinds.get(stream)

    def worker_key(self, consumer: str) -> str:
        return f"{self.prefix}workers:{consumer}"

    @property
    def r(self) -> Any:
        if self._client is None:
            import redis
            from redis.backoff import ExponentialBackoff
            from redis.connection import parse_url
            from redis.retry import Retry

            check_url(self.url, "--redis")
            try:  # a password holding a raw `/` or `#` does not parse: one masked line
                parsed = parse_url(self.url)
            except (ValueError, TypeError):  # its message may quote part of the password
                raise UsageError(
                    f"--redis {self.url_masked}: not a Redis URL (expected "
                    "redis://USER:PASSWORD@HOST:6379/0, each part but HOST optional; "
                    "rediss://…; unix://PATH)",
                    hint="percent-encode special characters of the password: / is %2F, "
                    "# is %23, @ is %40, : is %3A",
                ) from None
            register_secret(parsed.get("password"))
            _check_options(parsed, self.url_masked)
            tcp = "path" not in parsed  # unix:// sockets take no TCP keepalive
            # redis-py itself retries a dropped connection twice, quickly; a longer outage
            # surfaces as QueueUnavailable, which the worker backs off from.
            self._client = redis.Redis.from_url(
                self.url,
                protocol=2,
                socket_connect_timeout=5,
                socket_timeout=self.timeout_s,
                retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
                **({"socket_keepalive": True} if tcp else {}),
            )
            # read_new parses XREADGROUP's reply itself (the worker's hot path).
            self._client.set_response_callback("XREADGROUP", _raw_reply)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def errors(self, action: str) -> Iterator[None]:
        """Redis errors → QueueUnavailable (outage) or QueueError, with the URL masked."""
        import redis

        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise QueueUnavailable(
                f"{action}: Redis at {self.url_masked} unavailable: {self._scrub(exc)}"
            ) from exc
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc) or "UNBLOCKED" in str(exc):  # group or stream deleted
                raise GroupVanished(f"{action}: {self._scrub(exc)}", action) from exc
            if "LOADING" in str(exc) or "BUSY" in str(exc):  # restarting, or a slow script
                raise QueueUnavailable(f"{action}: Redis busy: {self._scrub(exc)}") from exc
            if "WRONGTYPE" in str(exc):
                raise QueueError(f"{action} on {self.url_masked}: {self._wrong_types()}",
                                 hint="another program's keys? choose another --prefix or "
                                 "--streams") from exc  # fmt: skip
            raise QueueError(f"{action} on {self.url_masked}: {self._scrub(exc)}") from exc
        except redis.RedisError as exc:
            raise QueueError(f"{action} on {self.url_masked}: {self._scrub(exc)}") from exc

    def _wrong_types(self) -> str:
        """Which of tutormax's keys holds another type than it writes there (WRONGTYPE)."""
        want = {**dict.fromkeys([*self._names.values(), self.dead_letter_key], "stream"),
                self._index_key: "hash"}  # fmt: skip
        wrong = []
        with suppress(Exception):
            for key, kind in want.items():
                got = self.r.type(key)
                got = got.decode() if isinstance(got, bytes) else str(got)
                if got not in ("none", kind):
                    wrong.append(f"{key} holds a {got}, not a {kind}")
        return "; ".join(wrong) or "a key of tutormax's holds another type than it writes"

    def _scrub(self, exc: BaseException) -> str:
        line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        line = _SCRIPT_WHERE.sub("", line)  # an error inside one of our scripts: Redis' words
        return line.replace(self.url, self.url_masked)

    def _script(self, name: str, source: str) -> Any:
        if name not in self._scripts:
            self._scripts[name] = self.r.register_script(source)
        return self._scripts[name]

    def ping(self) -> None:
        with self.errors("connecting"):
            self.r.ping()


# What Redis adds to an error raised by a command inside a script (Redis 7): the script's
# sha and line, noise to an operator (`… argument script: eab5…, on @user_script:36.`).
_SCRIPT_WHERE = re.compile(r"\s*script: [0-9a-f]{40}, on @user_script:\d+\.?")


def _raw_reply(response: Any, **_options: Any) -> Any:
    return response


def _check_options(parsed: dict[str, Any], masked: str) -> None:
    """A query option redis-py does not know (`?x=1`) failed at the first command, inside
    redis-py: exit 3 with a traceback. A connection is built here (it connects only when
    used) so that such a URL is one line, exit 2, before anything is read or written."""
    from redis.connection import Connection

    options = {k: v for k, v in parsed.items() if k != "connection_class"}
    try:
        parsed.get("connection_class", Connection)(**options)
    except TypeError as exc:
        raise UsageError(
            f"--redis {masked}: an option of its query is not one redis-py knows "
            f"({scrub(str(exc))})",
            hint="the options: db, socket_timeout, socket_connect_timeout, client_name, …",
        ) from None
