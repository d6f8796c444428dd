"""Secrets never reach output or logs (SPEC §7), in any form a user may type a URL.

A password may hold `/`, `@`, `#`, `:`, `%`, spaces — raw or percent-encoded — and the URL
may miss its scheme. The property test runs the commands in-process over passwords drawn
from every printable character; the process test runs the installed command against
services that really take the password (PostgreSQL trusts any; a private redis-server
requires it) and reads stdout, stderr, `--json` and the `/metrics` body.

In the property test, a leak is a 4-character piece of the password (as typed, or
percent-encoded) in the output that is not there when the same command runs with a *twin*
password of the same shape (every letter and digit replaced, punctuation kept): so "127."
in a password is not taken for a leak of the host name. That tells a piece from its twin
only if the piece holds one of the password's letters or digits — a piece of punctuation
alone ("/@:#") is the same in both runs and could never be caught — so the passwords drawn
have a letter or digit in every 4 characters, and only pieces that differ from the twin's
piece at the same place count (every piece of the password as typed; the encoded form's
`%2F` and the like are the same in both). The installed-command test uses passwords that
share no text with the output, so there any piece of either form is a leak.
"""

from __future__ import annotations

import signal
import string
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import pytest
from dbfixtures import fresh_pg_database
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from procfixtures import PrivateRedis, start, wait_for
from typer.testing import CliRunner

from tutormax_cli.cli import app

TUTORMAX = str(Path(sys.executable).with_name("tutormax"))
SAMPLE = Path(__file__).parent.parent / "sample_data"
PRINTABLE = string.ascii_letters + string.digits + string.punctuation + " "
ALNUM = string.ascii_letters + string.digits


def twin(password: str) -> str:
    """Same shape, other letters and digits."""
    out = []
    for c in password:
        if c in string.ascii_lowercase:
            out.append(chr((ord(c) - 97 + 13) % 26 + 97))
        elif c in string.ascii_uppercase:
            out.append(chr((ord(c) - 65 + 13) % 26 + 65))
        elif c in string.digits:
            out.append(str((int(c) + 5) % 10))
        else:
            out.append(c)
    return "".join(out)


def pieces(text: str) -> list[str]:
    """Every 4-character piece, in order (a shorter text is its own piece)."""
    return [text[i : i + 4] for i in range(len(text) - 3)] or [text]


def typed_forms(password: str) -> tuple[str, str]:
    return password, quote(password, safe="")


def telling(password: str) -> set[str]:
    """The pieces of the password, as typed and percent-encoded, that differ from its
    twin's piece at the same place: those holding one of its letters or digits. (A twin
    keeps the shape, and percent-encoding keeps letters and digits, so the pieces line up.)"""
    out: set[str] = set()
    for mine, its in zip(typed_forms(password), typed_forms(twin(password)), strict=True):
        out |= {p for p, t in zip(pieces(mine), pieces(its), strict=True) if p != t}
    return out


def leaks(password: str, output: str, twin_output: str) -> list[str]:
    return sorted(p for p in telling(password) if p in output and p not in twin_output)


def every_piece(password: str) -> set[str]:
    """Every 4-character piece of the password as typed and percent-encoded."""
    return {p for form in typed_forms(password) for p in pieces(form)}


def _passwords() -> st.SearchStrategy[str]:
    """Any printable characters, with a letter or digit in every 4 (at most 3 others in a
    row, at the start, between two and at the end), 4 to 27 characters."""
    others = st.text(alphabet=PRINTABLE, max_size=3)
    segment = st.tuples(others, st.sampled_from(ALNUM)).map("".join)
    body = st.lists(segment, min_size=2, max_size=6).map("".join)
    return st.tuples(body, others).map("".join).filter(lambda p: len(p) >= 4)


PASSWORDS = _passwords()


def urls(password: str, form: str) -> tuple[str, str]:
    """(database URL, Redis URL) holding the password in one of the forms users type."""
    pw = quote(password, safe="") if form == "encoded" else password
    if form == "no-scheme":
        return f"app:{pw}@127.0.0.1:1/tutoring", f"app:{pw}@127.0.0.1:1/0"
    if form == "query":
        return (f"postgresql://app@127.0.0.1:1/tutoring?password={quote(password, safe='')}",
                f"redis://127.0.0.1:1/0?password={quote(password, safe='')}")  # fmt: skip
    if form == "sslpassword":  # the client key's passphrase: a secret too
        return (f"postgresql://app@127.0.0.1:1/tutoring?sslpassword={quote(password, safe='')}",
                f"redis://127.0.0.1:1/0?password={quote(password, safe='')}")  # fmt: skip
    if form == "no-scheme-query":  # the scheme forgotten: not a URL, its query still masked
        q = quote(password, safe="")
        return f"app@127.0.0.1:1/tutoring?password={q}", f"127.0.0.1:1/0?password={q}"
    if form == "keyvalue":  # libpq's key=value form, which tutormax does not take
        quoted = "'" + password.replace("\\", "\\\\").replace("'", "\\'") + "'"
        return (f"host=127.0.0.1 port=1 user=app password={quoted} dbname=tutoring",
                f"host=127.0.0.1 port=1 password={quoted}")  # fmt: skip
    if form == "redis-cli":  # redis-cli and Redis's docs: a lone user-info is the password
        q = quote(password, safe="")
        return f"postgresql://app:{q}@127.0.0.1:1/tutoring", f"redis://{q}@127.0.0.1:1/0"
    if form == "redis-cli-raw":  # the same, not encoded: a / ? or # in it ends the authority
        q = quote(password, safe="")
        return f"postgresql://app:{q}@127.0.0.1:1/tutoring", f"redis://{password}@127.0.0.1:1/0"
    return f"postgresql://app:{pw}@127.0.0.1:1/tutoring", f"redis://app:{pw}@127.0.0.1:1/0"


def commands(db: str, redis: str, tmp: Path) -> dict[str, list[str]]:
    tutors = str(SAMPLE / "tutors.csv")
    return {
        "enrich": ["enrich", tutors, "--db", db],
        "enrich-json": ["enrich", tutors, "--db", db, "--json"],
        "db-init": ["db", "init", "--db", db, "--json"],
        "stats": ["stats", "--db", db, "--redis", redis],
        "stats-json": ["stats", "--db", db, "--redis", redis, "--json"],
        "dlq-list": ["dlq", "list", "--redis", redis],
        "dlq-show": ["dlq", "show", "1-0", "--redis", redis],
        "publish": ["publish", tutors, "--redis", redis],
        "worker": ["worker", "--burst", "--db", db, "--redis", redis],
        "refresh": ["refresh", "--db", db, "-v"],
        "refresh-json": ["refresh", "--db", db, "--json"],
        "db-upgrade": ["db", "upgrade", "--db", db],
        "db-current": ["db", "current", "--db", db, "--json"],
        "dlq-replay": ["dlq", "replay", "--all", "--redis", redis],
        "dlq-drain": ["dlq", "drain", "--out", str(tmp / "drained.jsonl"), "--redis", redis],
    }


def invoke(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    return result.stdout + result.stderr + (repr(result.exception) if result.exception else "")


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    password=PASSWORDS,
    form=st.sampled_from(
        [
            "raw",
            "encoded",
            "no-scheme",
            "query",
            "sslpassword",
            "no-scheme-query",
            "keyvalue",
            "redis-cli",
            "redis-cli-raw",
        ]  # fmt: skip
    ),
    command=st.sampled_from(
        [
            "enrich",
            "enrich-json",
            "db-init",
            "stats",
            "stats-json",
            "dlq-list",
            "dlq-show",
            "publish",
            "worker",
            "refresh",
            "refresh-json",
            "db-upgrade",
            "db-current",
            "dlq-replay",
            "dlq-drain",
        ]  # fmt: skip
    ),
)
@example(password="a@0a0", form="keyvalue", command="enrich")  # an @ in a key=value value
@example(password="p@ss@x", form="no-scheme-query", command="stats")
@example(password="Zq9Pw-secret", form="redis-cli", command="stats-json")
@example(password="S3c?r3tA", form="redis-cli-raw", command="stats-json")
@example(password="pa/ss3cr3tword", form="redis-cli-raw", command="worker")
def test_no_command_ever_shows_a_password(
    password: str, form: str, command: str, tmp_path: Path
) -> None:
    # A piece found in the twin's output must be there for another reason than the twin's
    # own password (rot13 and +5 can map one piece of a password onto another).
    assume(not telling(password) & every_piece(twin(password)))
    out = invoke(commands(*urls(password, form), tmp_path)[command])
    other = invoke(commands(*urls(twin(password), form), tmp_path)[command])
    assert not leaks(password, out, other), out


@settings(max_examples=300)
@given(password=PASSWORDS)
def test_every_piece_of_a_drawn_password_can_be_told_from_its_twin(password: str) -> None:
    """The blind spot closed: no 4 characters of a drawn password are punctuation alone, so
    every piece of it, as typed, is one the property test can catch."""
    assert all(any(c in ALNUM for c in p) for p in pieces(password))
    assert set(pieces(password)) <= telling(password)


def test_a_leak_of_punctuation_and_of_the_encoded_form_is_caught() -> None:
    """What the old check missed: a leak of the percent-encoded form, and of a password
    whose letters sit between long runs of punctuation (now never drawn)."""
    password = "a/b/c/d"
    encoded = quote(password, safe="")  # a%2Fb%2Fc%2Fd
    assert leaks(password, f"shown: {encoded}", f"shown: {quote(twin(password), safe='')}")
    assert leaks(password, "shown: a/b/c/d", "shown: n/o/p/q")
    assert not leaks(password, "host 127.0.0.1", "host 127.0.0.1")


# -- the installed command, against services that take the password ---------------------------


HOSTILE = [  # no English in them; each holds `/`, `@`, `#` or `:`, or is percent-encoded
    "Pg5/Xq9zWk",
    "a@b#c:d/e%f",
    "wX ir7?&=pj",
    "%2Fqz9%40Xw",
    "k7:Q@zx/9#Vm",
]
HEX = set(string.hexdigits)


def chance_free(found: set[str]) -> set[str]:
    """The pieces that cannot turn up by chance: the output is full of stream ids,
    timestamps and hex checksums, so a piece of hex digits alone (`2540` of `%2540`, the
    encoded `%40`) may be there without any leak."""
    return {p for p in found if not set(p) <= HEX}


def test_every_hostile_password_keeps_pieces_that_cannot_match_by_chance() -> None:
    """The filter above leaves every form of every password checked end to end."""
    for password in HOSTILE:
        for form in typed_forms(password):
            kept = chance_free(set(pieces(form)))
            assert len(kept) >= len(pieces(form)) - 2, (form, kept)
    assert chance_free({"2540", "252F", "beef"}) == set()
    assert chance_free({"40Xw", "%254"}) == {"40Xw", "%254"}


ORPHANS = "session_id,tutor_id,student_id,scheduled_start,duration_minutes,subject\n" + "".join(
    f"Q{i},NOBODY9,st{i},2024-11-09T0{i}:00:00Z,60,Math\n" for i in range(1, 4)
)


@pytest.fixture(scope="module", name="every_command_run")
def every_command_run_fixture(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future[str]]]:
    """Every selected password's run of every command, two passwords at a time (each about
    45 processes that wait on each other and on the services; alone, one after another,
    they took a tenth of the suite). Each run has a database and a redis-server of its own."""
    wanted = [
        item.callspec.params["password"]
        for item in request.session.items
        if item.module is sys.modules[__name__] and "every_command_run" in item.fixturenames
    ]

    def work(password: str, tmp: Path) -> str:
        with fresh_pg_database() as pg_url:
            redis = PrivateRedis(tmp, "--requirepass", password)
            try:
                return _every_command(password, pg_url, redis.port, tmp)
            finally:
                redis.stop()

    with ThreadPoolExecutor(max_workers=2) as pool:
        # the directories are made here: tmp_path_factory is not safe across threads
        futures = {p: pool.submit(work, p, tmp_path_factory.mktemp("masked")) for p in wanted}
        yield futures
        for f in futures.values():
            f.cancel()


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.parametrize("password", HOSTILE)
def test_the_installed_command_masks_every_password_everywhere(
    password: str, every_command_run: dict[str, Future[str]]
) -> None:
    seen = every_command_run[password].result()
    # these passwords share no text with us: any piece of them, typed or encoded, leaks
    shown = sorted(p for p in chance_free(every_piece(password)) if p in seen)
    assert not shown, seen
    assert "***" in seen  # the URLs were shown, masked


def _every_command(password: str, pg_url: str, redis_port: int, tmp: Path) -> str:
    import sqlalchemy as sa

    enc = quote(password, safe="")
    u = sa.make_url(pg_url)
    db = u.set(password=password).render_as_string(hide_password=False)  # encoded
    where = f"{u.host}:{u.port or 5432}/{u.database}"
    raw_db = f"postgresql://{u.username}:{password}@{where}"  # as typed: / @ # : unescaped
    bare_db = f"{u.username}:{enc}@{where}"  # the scheme forgotten
    redis = f"redis://:{enc}@127.0.0.1:{redis_port}/0"
    raw_redis = f"redis://:{password}@127.0.0.1:{redis_port}/0"
    bare_redis = f"app:{password}@127.0.0.1:{redis_port}/0"
    bad_db = f"postgresql://app:{password}@127.0.0.1:1/x"  # raw, unreachable
    seen: list[str] = []

    def tm(*args: str) -> None:
        done = subprocess.run([TUTORMAX, *args], capture_output=True, text=True, timeout=60)
        seen.append(done.stdout + done.stderr)

    tm("enrich", str(SAMPLE / "tutors.csv"), str(SAMPLE / "bad" / "tutors.csv"), "--db", db,
       "--json", "--rejects", str(tmp / "r.jsonl"))  # fmt: skip
    tm("enrich", str(SAMPLE / "tutors.csv"), "--db", bad_db)
    tm("db", "init", "--db", db)
    tm("publish", str(SAMPLE / "sessions.csv"), "--redis", redis)
    tm("stats", "--db", db, "--redis", redis)
    tm("stats", "--db", bad_db, "--redis", redis, "--json")
    tm("dlq", "list", "--redis", redis, "--json")
    tm("worker", "--burst", "--db", db, "--redis", redis, "--block-ms", "50",
       "--log-format", "json")  # fmt: skip
    # refresh and the database reports, on the database that takes the password, then in
    # the forms it fails on (as typed, no scheme, unreachable)
    tm("refresh", "--db", db, "--as-of", "2025-01-15", "-v")
    tm("refresh", "--db", db, "--json", "--dry-run")
    tm("db", "upgrade", "--db", db)
    tm("db", "upgrade", "--db", db, "--json")
    tm("db", "current", "--db", db)
    tm("db", "current", "--db", db, "--json")
    for url in (raw_db, bare_db, bad_db):
        tm("refresh", "--db", url)
        tm("db", "upgrade", "--db", url)
        tm("db", "current", "--db", url, "--json")
    # dead letters to replay and drain: orphan sessions, dead-lettered at their first try
    orphans = tmp / "orphans.csv"
    orphans.write_text(ORPHANS)
    tm("publish", str(orphans), "--redis", redis, "-v")
    dead_letter = ("worker", "--burst", "--db", db, "--redis", redis, "--block-ms", "50",
                   "--max-attempts", "1", "--retry-base-ms", "10")  # fmt: skip
    tm(*dead_letter)
    tm("dlq", "replay", "--all", "--redis", redis, "--dry-run")
    tm("dlq", "replay", "--all", "--redis", redis)
    tm(*dead_letter)
    tm("dlq", "replay", "--all", "--redis", redis, "--json")
    tm(*dead_letter)
    tm("dlq", "drain", "--out", str(tmp / "drained.jsonl"), "--redis", redis)
    tm(*dead_letter)  # nothing left: an empty drain, in JSON
    tm("dlq", "drain", "--out", str(tmp / "drained2.jsonl"), "--redis", redis, "--json")
    for url in (raw_redis, bare_redis):
        tm("dlq", "replay", "--all", "--redis", url)
        tm("dlq", "drain", "--out", str(tmp / "never.jsonl"), "--redis", url, "--json")
    assert (tmp / "drained.jsonl").read_text().count("\n") == 3  # the dead letters were real
    port = _free_port()
    worker = start([TUTORMAX, "worker", "--db", db, "--redis", redis, "--block-ms", "50",
                    "--metrics-port", str(port), "-v"])  # fmt: skip
    try:
        wait_for(lambda: _answers(port), "the metrics endpoint")
        for path in ("/metrics", "/healthz", "/readyz"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
                seen.append(resp.read().decode())
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=30)
        seen.append(out + err)
    for written in ("r.jsonl", "drained.jsonl", "drained2.jsonl"):
        seen.append((tmp / written).read_text() if (tmp / written).exists() else "")
    return "\n".join(seen)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
            return True
    except OSError:
        return False


def test_secrets_in_json_logs_and_tracebacks_are_scrubbed(tmp_path: Path) -> None:
    """A bug's traceback and a JSON log line hold no password either."""
    from tutormax_cli.config import mask_url, scrub

    url = "postgresql://app:Zq8/Kv3@db.example/x"
    assert mask_url(url) == "postgresql://app:***@db.example/x"
    assert scrub(f"Traceback … connecting to {url} …") == (
        "Traceback … connecting to postgresql://app:***@db.example/x …"
    )
    done = subprocess.run(
        [TUTORMAX, "worker", "--burst", "--log-format", "json", "--db", url, "--redis",
         "redis://:Zq8%2FKv3@127.0.0.1:1/0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "Zq8" not in done.stdout + done.stderr and "Kv3" not in done.stdout + done.stderr
