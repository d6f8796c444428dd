"""The only reader of the environment and `.env`: the defaults, `Settings`, URL masking.

Every default is one constant here, with its unit; the CLI shows and uses these, and the
library's option objects (WorkerOptions, RetryPolicy, RefreshOptions, RunOptions) default to
them. `Settings` is what the environment says, read once per command by the CLI's root
callback (after `.env`); options given on the command line win over it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

ENV_PREFIX = "TUTORMAX_"

# -- defaults ------------------------------------------------------------------------------------

DEFAULT_DATABASE_URL = "sqlite:///tutormax.db"  # a file in the working folder
DEFAULT_REDIS_URL = "redis://localhost:6379/0"  # the local server, database 0
DEFAULT_TIMEZONE = "UTC"  # IANA name of the reporting timezone
DEFAULT_BATCH_ROWS = 16_000  # rows per batch and transaction (enrich, refresh); README: Memory
DEFAULT_WORKER_BATCH = 5_000  # entries the worker reads per stream per batch
DEFAULT_WORKER_BATCH_BYTES = 128 << 20  # bytes a batch reads, at most (streams.ReadBudget)
DEFAULT_BLOCK_MS = 2_000  # the worker's longest wait for new entries
DEFAULT_MAX_ATTEMPTS = 5  # attempts of a record whose parent is missing (not on its way)
DEFAULT_RETRY_BASE_MS = 1_000  # first retry delay; doubles per attempt
DEFAULT_RETRY_MAX_MS = 30_000  # longest retry delay
DEFAULT_RECLAIM_IDLE_MS = 60_000  # a consumer idle this long is gone; its entries are taken over
DEFAULT_HEARTBEAT_TTL_S = 60  # a worker's counters outlive its last heartbeat by this much
DEFAULT_METRICS_ADDR = "127.0.0.1"  # --metrics-port serves this host only unless told
DEFAULT_DLQ_LIMIT = 50  # dead letters `dlq list` shows


@dataclass(frozen=True)
class Settings:
    """What the environment and `.env` say, read once (`Settings.load`).

    `TUTORMAX_DATABASE_URL` and `TUTORMAX_REDIS_URL` (the `--db` / `--redis` options read them
    too); `TUTORMAX_FAULT` / `TUTORMAX_FAULT_PAUSE_S`, the fault injection the tests use on a
    worker (queue/runtime.py). Other options (`TUTORMAX_TIMEZONE`, `TUTORMAX_STREAMS`, …) are
    read by the CLI's option parser, which names them in `--help`."""

    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    fault: str = ""
    fault_pause_s: str = ""
    dotenv: Path | None = None  # the `.env` file read, if any

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, *, dotenv: bool = True) -> Settings:
        found = load_dotenv() if dotenv and environ is None else None
        env = os.environ if environ is None else environ

        def get(name: str) -> str:
            return (env.get(ENV_PREFIX + name) or "").strip()

        return cls(
            database_url=get("DATABASE_URL") or DEFAULT_DATABASE_URL,
            redis_url=get("REDIS_URL") or DEFAULT_REDIS_URL,
            fault=get("FAULT"),
            fault_pause_s=get("FAULT_PAUSE_S"),
            dotenv=found,
        )

    def database(self, option: str | None) -> str:
        """The database URL: the option's, else the environment's, else the default."""
        return _given(option, "--db") or self.database_url

    def redis(self, option: str | None) -> str:
        return _given(option, "--redis") or self.redis_url


def _given(option: str | None, name: str) -> str | None:
    """An option's URL; an empty one typed on purpose (`--db "$URL"` with URL unset) is a
    usage error, not the default: the default database is another database."""
    if option is not None and not option.strip():
        raise UsageError(
            f"{name} is empty", hint=f"give a URL, or leave {name} out for the default"
        )
    return option


# -- secrets -------------------------------------------------------------------------------------

# Query parameters whose values are secrets (`redis://h/0?password=…`).
# A query parameter (or libpq key=value) whose name holds one of these is a secret:
# password, sslpassword, passwd, pwd, client_secret, token, auth_token…
_SECRET_WORDS = ("pass", "pwd", "secret", "token")
# Such a pair in text that is not a URL: `name=value`, the value quoted or up to a blank,
# `&`, `;` or `#`.
_SECRET_PAIR = re.compile(
    r"(?i)(\b[\w.-]*(?:pass|pwd|secret|token)[\w.-]*\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s&;#]*)"
)
_SECRETS: set[str] = set()
_HIDDEN = "tutormaxhiddenvalue"  # stands in for a secret query value while rendering


SCRUB_MIN_CHARS = 4  # shorter secrets are masked in URLs, but not hunted in free text


def register_secret(secret: str | None) -> None:
    """Remember a secret (a URL's password) so that `scrub` removes it from any text.

    A secret under SCRUB_MIN_CHARS characters is not hunted in free text: replacing every
    "ab" in a message would mangle it and hide nothing a URL mask does not."""
    if secret and len(secret) >= SCRUB_MIN_CHARS:
        _SECRETS.add(secret)


def scrub(text: str) -> str:
    """`text` as it may be shown: every registered secret replaced by `***` (longest
    first), then every URL-shaped secret masked (`mask_text`), registered or not. Every
    message tutormax prints goes through here (cli.common's error console, the logs,
    Click's usage errors: cli.ScrubbingGroup)."""
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    return mask_text(text)


def register_arguments(args: Iterable[str]) -> None:
    """Register the secrets of every URL-shaped command-line argument (`mask_url`), before
    Click parses them: a URL typed where an argument goes (`--db` left out) is echoed by
    a usage error or a file error, and a password holding a blank is found only so."""
    for arg in args:
        if _URL_SHAPED.search(arg) or _ARGUMENT_USERINFO.search(arg):
            mask_url(arg)


def check_url(url: str, option: str) -> None:
    """Refuse a URL whose password holds a raw `@` (every parser splits it at the wrong
    place and would hand part of the password to a driver as the host name), or a Redis URL
    whose user-info holds a raw `/`, `?` or `#` (redis-py's parser ends the authority
    there: `redis://S3c?r3t@host` connected to host `s3c`, and said so)."""
    scheme, sep, rest = _split_scheme(str(url))
    if sep and rest.count("@") > 1:
        raise UsageError(
            f"{option} {mask_url(url)}: the password holds a raw @",
            hint="percent-encode it: @ is %40, / is %2F, # is %23, : is %3A",
        )
    at = rest.rfind("@")
    info = rest[:at] if at >= 0 else ""
    if sep and _password_only(scheme) and any(c in info for c in "/?#") and not _query(info):
        raise UsageError(
            f"{option} {mask_url(url)}: the password holds a raw /, ? or #",
            hint="percent-encode it: / is %2F, ? is %3F, # is %23, @ is %40, : is %3A",
        )


def mask_url(url: str) -> str:
    """The URL with its password hidden, in every form a user may type one.

    SQLAlchemy's `make_url(...).render_as_string(hide_password=True)` for anything that
    parses as a URL (password query parameters masked too); a string that does not, or
    whose authority holds more than one `@`, is shown with everything between `://` (or
    the start) and the last `@` masked. With no `@`, what follows the authority's `:` is
    masked to the end unless it is a port (`postgresql://app:***`: the host forgotten, or
    `:` typed for `@`). The secrets found are registered for `scrub`."""
    text = str(url)
    _register_userinfo(text)
    scheme, sep, rest = _split_scheme(text)
    if "@" in text and (not sep or rest.count("@") > 1):
        return _mask_authority(text)
    if _secret_after_colon(_host_part(rest if sep else text)) >= 0:
        # `scheme://user:SECRET` with no `@host` (the host forgotten, `:` typed for `@`),
        # or a port that is not a number: what follows the `:` may be a password
        return _mask_authority(text)
    if _password_only(scheme) and _ambiguous_userinfo(rest):
        # redis://SECRET@host: redis-cli (and Redis's own docs) take a lone user-info as
        # the password; and one holding a raw / ? or # is cut short by URL parsers. Either
        # is masked whole, up to the last @, whatever a driver makes of it.
        return _mask_authority(text)
    try:
        from sqlalchemy.engine import make_url

        u = make_url(text)
    except Exception:  # not a URL at all: mask what could be credentials
        return _mask_authority(text)
    register_secret(u.password if isinstance(u.password, str) else None)
    query: dict[str, str | tuple[str, ...]] = {}
    for k, v in u.query.items():
        if _secret_param(k):
            for value in (v,) if isinstance(v, str) else v:
                register_secret(value)
            v = _HIDDEN
        query[k] = v
    masked: str = u.set(query=query).render_as_string(hide_password=True)
    return masked.replace(_HIDDEN, "***")


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")


def _split_scheme(text: str) -> tuple[str, str, str]:
    """(scheme, "://", the rest), or ("", "", text) when what comes before the first `://`
    is no scheme name (`app:pa://ss@host`: a password holding `://`, the scheme left out)."""
    head, sep, rest = text.partition("://")
    return (head, sep, rest) if sep and _SCHEME.fullmatch(head) else ("", "", text)


def _secret_param(name: str) -> bool:
    low = name.lower()
    return any(word in low for word in _SECRET_WORDS)


def _mask_authority(text: str) -> str:
    """Text that is not a URL (no scheme, a libpq `key=value` string, junk): everything
    before the last `@` of its authority masked, and every secret-named `name=value`."""
    text = _SECRET_PAIR.sub(_mask_pair, text)  # first: such a value may hold an `@`
    head, sep, rest = _split_scheme(text)
    if not sep:
        head, rest = "", text
    at = rest.rfind("@")
    if at >= 0:
        return f"{head}{sep}***@{_mask_after_colon(rest[at + 1 :])}"
    return f"{head}{sep}{_mask_after_colon(rest)}"


_PORT = re.compile(r"\d{1,5}")


def _host_part(rest: str) -> str:
    """What a URL's text after `://` (or a scheme-less one's) has after its last `@`."""
    return rest[rest.rfind("@") + 1 :]


def _secret_after_colon(host: str) -> int:
    """Where a possible password starts in `host` (a URL's text after its last `@`, or
    after `://` when it has none), or -1: after the authority's `:` (an IPv6 `[…]` aside)
    when what follows to the first `/ ? #` is not a port number (up to 65535). With no
    `@`, `user:SECRET` (the host forgotten), `user:SECRET:5432` (`:` typed for `@`) and
    `host:SECRET` look alike: each is masked, from the `:` to the end."""
    start = host.find("]") + 1 if host.startswith("[") else 0
    if start == 0 and host.startswith("["):
        return -1  # an unclosed `[`: no authority to tell
    end = len(host)
    for c in "/?#":
        i = host.find(c, start)
        end = i if 0 <= i < end else end
    colon = host.find(":", start, end)
    if colon < 0:
        return -1
    port = host[colon + 1 : end]
    if _PORT.fullmatch(port) and int(port) <= 65535:
        return -1
    return colon + 1


def _mask_after_colon(host: str) -> str:
    at = _secret_after_colon(host)
    return host if at < 0 or at == len(host) else host[:at] + "***"


# In free text: a scheme (one slash is enough: pathlib makes `postgresql:/…` of a URL
# taken for a file), or `user:…@` with no scheme.
_URL_SHAPED = re.compile(r"(?i)(?<![a-z0-9+.-])[a-z][a-z0-9+.-]*:/+")
_USERINFO_AT = re.compile(r"(?<![\w.~%+-])[\w.~%+-]+:[^\s@]*@")
_ARGUMENT_USERINFO = re.compile(r"[\w.~%+-]:.*@", re.DOTALL)  # (an argument may hold blanks)
_TOKEN = re.compile(r"\S+")
_MASKED = re.compile(r"\*\*\*[:,;.)\]'\"]*")  # what masking left: `***`, then punctuation


def mask_text(text: str) -> str:
    """Free text (a message, a log line, a traceback) with every URL-shaped secret masked,
    registered or not: in each blank-separated word holding a scheme (`postgresql:/`,
    `redis://`) or a `user:…@`, the user-info's password (`user:***@`, or `***@` when it
    has no `:`), a secret query value (`?password=***`), and what follows a `:` that is
    not a port (`user:***`, the host forgotten; see _secret_after_colon). Masked text is
    left as it is. A password holding a blank is masked here only in part: whole when it
    was registered (`scrub`)."""
    if ":" not in text:
        return text
    return _TOKEN.sub(_mask_word, text)


def _mask_word(m: re.Match[str]) -> str:
    word = m.group(0)
    if ":" not in word:
        return word
    scheme, userinfo = _URL_SHAPED.search(word), _USERINFO_AT.search(word)
    lone_user = True  # whether a user-info without `:` is a user name, not a password
    if scheme is not None and (
        userinfo is None
        or scheme.start() < userinfo.start()
        or (scheme.start() == userinfo.start() and word.startswith("//", scheme.end() - 2))
    ):  # `app:/pa@h` is rather a user-info than a scheme: the reading that hides more
        head, rest = word[: scheme.end()], word[scheme.end() :]
        lone_user = not _password_only(word[scheme.start() : scheme.end()].rstrip(":/"))
    elif userinfo is not None:  # (a password may hold `x:/`: the first shape wins)
        head, rest = word[: userinfo.start()], word[userinfo.start() :]
    else:
        return word
    rest = _SECRET_PAIR.sub(lambda p: f"{p.group(1)}***", rest)
    at = rest.rfind("@")
    if at >= 0:  # even an `@` of a query (`?client_name=me@box`), as mask_url does
        user, colon, _ = rest[:at].partition(":")
        if _cut(user):  # `redis://pa/ss@h`: a password cut short by a parser
            shown = "***"
        elif colon:
            shown = f"{user}:***"
        else:  # `postgresql://app@h` names a user; `redis://SECRET@h` is a password
            shown = user if lone_user else "***"
        return f"{head}{shown}@{_mask_free_host(rest[at + 1 :])}"
    return head + _mask_free_host(rest)


def _cut(user: str) -> bool:
    """Whether a user name holds what ends an authority (so it is part of a password)."""
    return any(c in user for c in "/?#@")


def _mask_free_host(host: str) -> str:
    at = _secret_after_colon(host)
    if at < 0 or at == len(host) or _MASKED.fullmatch(host[at:]):
        return host
    return host[:at] + "***"


def _mask_pair(m: re.Match[str]) -> str:
    from urllib.parse import unquote

    value = m.group(2).strip("'")
    register_secret(value)
    register_secret(unquote(value))
    return f"{m.group(1)}***"


def _password_only(scheme: str) -> bool:
    """Schemes whose lone user-info redis-cli and its kin read as the password."""
    s = scheme.lower()
    return s.startswith(("redis", "valkey")) or s == "unix"


def _ambiguous_userinfo(rest: str) -> bool:
    """Whether what comes before the last `@` (after `://`) is a lone user-info (no `:`)
    or holds a raw `/`, `?` or `#` (a parser takes part of it for the host). Masked whole
    either way; even an `@` in a query (`?client_name=me@box`) is, which hides more than
    needed and nothing it should show."""
    at = rest.rfind("@")
    if at <= 0:
        return False
    info = rest[:at]
    return ":" not in info or any(c in info for c in "/?#")


_QUERY_PAIR = re.compile(r"[?&][^=&#@/?]+=")


def _query(info: str) -> bool:
    """Whether text before a URL's last `@` holds a query (`?name=`): the `@` is then the
    query's (`redis://host/0?client_name=me@box`), not a user-info's."""
    return _QUERY_PAIR.search(info) is not None


def _register_userinfo(text: str) -> None:
    """Register the password as typed between the user name and the last `@`
    (percent-encoded or not) and its decoded form, for `scrub`."""
    from urllib.parse import unquote

    scheme, sep, rest = _split_scheme(text)
    rest = rest if sep else text
    at = rest.rfind("@")
    start = _secret_after_colon(rest[at + 1 :])
    if start >= 0:  # user:SECRET with no @host, or host:SECRET (see _secret_after_colon)
        after = rest[at + 1 + start :]
        for piece in (after, *re.split(r"[/?#:@]", after)):
            if not _PORT.fullmatch(piece):
                register_secret(piece)
                register_secret(unquote(piece))
    if at < 0:
        return
    user, colon, password = rest[:at].partition(":")
    if sep and _password_only(scheme) and _ambiguous_userinfo(rest):
        if _query(rest[:at]):  # an @ in a query: no secret (see _query)
            return
        password = rest[:at]  # redis://SECRET@host, redis://a/b?c@host (see mask_url)
        for piece in re.split(r"[/?#:]", password):  # what a parser may show as a host
            register_secret(piece)
    elif not colon:
        return
    register_secret(password)
    register_secret(unquote(password))


def load_dotenv(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Path | None:
    """Put the `TUTORMAX_*` values of `.env` into the process environment; real
    environment variables win. The file is found from the working folder upwards
    (python-dotenv: inline comments, `export`, quotes, escapes). Returns the file used."""
    from dotenv import dotenv_values, find_dotenv

    env = os.environ if environ is None else environ
    found = path if path is not None else (find_dotenv(usecwd=True) or None)
    if found is None or not Path(found).is_file():
        return None
    try:
        values = dotenv_values(found, encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{found}: not UTF-8 text (byte {exc.start}); save the .env file as UTF-8"
        ) from None
    except OSError as exc:
        raise UsageError(f"{found}: cannot read it: {exc.strerror or exc}") from None
    for key, value in values.items():
        if key.startswith(ENV_PREFIX) and key not in env and value is not None:
            os.environ[key] = value
    return Path(found)
