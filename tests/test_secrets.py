"""Secrets never reach output or logs (SPEC §7), in any form a user may type a URL.

A password may hold `/`, `@`, `#`, `:`, `%`, spaces — raw or percent-encoded — and the URL
may miss its scheme. The property test runs the commands in-process over passwords drawn
from every printable character; the process test runs the installed command against
services that really take the password (PostgreSQL trusts any; a private redis-server
requires it) and reads stdout, stderr, `--json` and the `/metrics` body.

A leak is a 4-character piece of the password in the output that is not there when the
same command runs with a *twin* password of the same shape (every letter and digit
replaced, punctuation kept): so "127." in a password is not taken for a leak of the host
name, while any piece of what the user typed is.
"""

from __future__ import annotations

import signal
import string
import subprocess
import sys
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from procfixtures import PrivateRedis, start, wait_for
from typer.testing import CliRunner

from tutormax_cli.cli import app

TUTORMAX = str(Path(sys.executable).with_name("tutormax"))
SAMPLE = Path(__file__).parent.parent / "sample_data"
PRINTABLE = string.ascii_letters + string.digits + string.punctuation + " "


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


def leaks(password: str, output: str, twin_output: str) -> list[str]:
    pieces = {password[i : i + 4] for i in range(len(password) - 3)} | {password}
    return sorted(p for p in pieces if p in output and p not in twin_output)


def urls(password: str, form: str) -> tuple[str, str]:
    """(database URL, Redis URL) holding the password in one of the forms users type."""
    pw = quote(password, safe="") if form == "encoded" else password
    if form == "no-scheme":
        return f"app:{pw}@127.0.0.1:1/tutoring", f"app:{pw}@127.0.0.1:1/0"
    if form == "query":
        return (f"postgresql://app@127.0.0.1:1/tutoring?password={quote(password, safe='')}",
                f"redis://127.0.0.1:1/0?password={quote(password, safe='')}")  # fmt: skip
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
    }


def invoke(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    return result.stdout + result.stderr + (repr(result.exception) if result.exception else "")


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    password=st.text(alphabet=PRINTABLE, min_size=4, max_size=24),
    form=st.sampled_from(["raw", "encoded", "no-scheme", "query"]),
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
        ]  # fmt: skip
    ),
)
def test_no_command_ever_shows_a_password(
    password: str, form: str, command: str, tmp_path: Path
) -> None:
    out = invoke(commands(*urls(password, form), tmp_path)[command])
    other = invoke(commands(*urls(twin(password), form), tmp_path)[command])
    assert not leaks(password, out, other), out


# -- the installed command, against services that take the password ---------------------------


HOSTILE = ["Pg5/Xq9zWk", "a@b#c:d/e%f", "wX ir7?&=pj", "%2Fqz9%40Xw"]  # no English in them


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.parametrize("password", HOSTILE)
def test_the_installed_command_masks_every_password_everywhere(
    password: str, pg_url: str, tmp_path: Path
) -> None:
    redis = PrivateRedis(tmp_path, "--requirepass", password)
    try:
        seen = _every_command(password, pg_url, redis.port, tmp_path)
        assert not leaks(password, seen, ""), seen  # these passwords share no text with us
        assert "***" in seen  # the URLs were shown, masked
    finally:
        redis.stop()


def _every_command(password: str, pg_url: str, redis_port: int, tmp: Path) -> str:
    import sqlalchemy as sa

    enc = quote(password, safe="")
    db = sa.make_url(pg_url).set(password=password).render_as_string(hide_password=False)
    redis = f"redis://:{enc}@127.0.0.1:{redis_port}/0"
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
    seen.append((tmp / "r.jsonl").read_text() if (tmp / "r.jsonl").exists() else "")
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
