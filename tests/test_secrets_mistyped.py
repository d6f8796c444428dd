"""Secrets in mistyped URLs never reach output (SPEC §7: "in any form a user may type a URL").

Two ways a password was printed in clear (review C, D8 and D9): a URL with no `@host` after
its user-info (the host forgotten, `:` typed for `@`) was shown as typed; and a URL typed
where an argument goes (`--db` left out) was echoed by Click's usage error or by a file
error. Here a corpus of mistyped forms goes in by every way a URL reaches tutormax —
`--db`, `--redis`, the TUTORMAX_* environment, a `.env` file, a stray argument to each
command — and no piece of the password may come out, while the command exits 2; then a
property test draws passwords and URL shapes for the masking functions themselves.
"""

from __future__ import annotations

import os
import re
import string
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tutormax_cli import config
from tutormax_cli.cli import app
from tutormax_cli.config import mask_text, mask_url, register_arguments, scrub

TUTORMAX = str(Path(sys.executable).with_name("tutormax"))
TUTORS = str(Path(__file__).parent.parent / "sample_data" / "tutors.csv")

# Passwords that share no 4 characters with anything tutormax says: any piece is a leak.
PASSWORDS = ["Hunter2Pass", "Zq8/Kv3#Wm", "k7Qz%3AXw9v", "Pg5 Xq9zWk"]


def pieces(password: str) -> set[str]:
    """Every 4-character piece of the password, as typed and percent-encoded."""
    forms = {password, quote(password, safe="")}
    return {f[i : i + 4] for f in forms for i in range(max(1, len(f) - 3))}


def leaked(password: str, text: str) -> list[str]:
    return sorted(p for p in pieces(password) if p in text)


def database_forms(pw: str) -> list[str]:
    """Database URLs as they are mistyped: none parses, or each names no reachable server."""
    enc = quote(pw, safe="")
    return [
        f"postgresql://app:{pw}:5432/tutoring",  # `:` typed for `@`
        f"postgresql://app:{pw}/tutoring",  # the host forgotten
        f"postgresql://app:{pw}",
        f"postgresql://app:{enc}",  # percent-encoded, the host forgotten
        f"postgresql://:{enc}:5432/tutoring",
        f"postgresql://app:{pw}@x@127.0.0.1:1/tutoring",  # an `@` in it, unescaped
        f"postgresql:/app:{enc}@127.0.0.1:1/tutoring",  # one slash
        f"app:{enc}:127.0.0.1/tutoring",  # no scheme, `:` for `@`
        f"app:{pw}",  # no scheme, no host
    ]


def redis_forms(pw: str) -> list[str]:
    enc = quote(pw, safe="")
    return [
        f"redis://default:{pw}/0",  # the host forgotten
        f"redis://:{pw}:6379/0",  # `:` typed for `@`
        f"redis://:{enc}",
        f"rediss://app:{enc}:6380",
        f"redis://:{pw}@x@127.0.0.1:1/0",  # an `@` in it, unescaped
        f"redis//127.0.0.1:1/0?password={enc}",  # the scheme's `:` forgotten
        f"app:{enc}",
    ]


def stray_forms(pw: str) -> list[str]:
    """URLs typed where an argument goes (`--db` / `--redis` left out): well-formed ones too."""
    enc = quote(pw, safe="")
    return [
        f"postgresql://app:{enc}@db.example/tutoring",
        f"postgresql://app:{pw}@db.example/tutoring",
        f"redis://:{enc}@cache.example:6379/0",
        f"redis://{enc}@cache.example:6379/0",  # redis-cli's lone password
        f"app:{enc}@db.example/tutoring",  # no scheme
        *database_forms(pw)[:4],
        *redis_forms(pw)[:2],
    ]


CORPUS = [(pw, url) for pw in PASSWORDS for url in database_forms(pw)]
REDIS_CORPUS = [(pw, url) for pw in PASSWORDS for url in redis_forms(pw)]
STRAY = [(pw, url) for pw in PASSWORDS for url in stray_forms(pw)]


@pytest.fixture(name="here")
def here_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working folder of its own (no `.env`, no default database), and an environment
    the command's `.env` reading leaves as it found it."""
    monkeypatch.chdir(tmp_path)
    before = {k: v for k, v in os.environ.items() if k.startswith("TUTORMAX_")}
    for key in before:
        monkeypatch.delenv(key)
    yield tmp_path
    for key in [k for k in os.environ if k.startswith("TUTORMAX_")]:
        del os.environ[key]
    os.environ.update(before)


def invoke(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, args, env=env)
    shown = result.stdout + result.stderr
    assert "Traceback" not in shown, shown
    return result.exit_code, shown


def database_commands(db_option: list[str]) -> list[list[str]]:
    return [
        ["db", "current", *db_option],
        ["db", "upgrade", *db_option],
        ["enrich", TUTORS, *db_option],
        ["refresh", *db_option],
    ]


def redis_commands(redis_option: list[str], sqlite: str) -> list[list[str]]:
    return [
        ["stats", "--db", sqlite, *redis_option],
        ["dlq", "list", *redis_option],
        ["publish", TUTORS, *redis_option],
        ["worker", "--burst", "--db", sqlite, *redis_option],
    ]


@pytest.mark.parametrize(("password", "url"), CORPUS)
def test_a_mistyped_database_url_never_shows_its_password(
    password: str, url: str, here: Path
) -> None:
    """By --db, by TUTORMAX_DATABASE_URL and by a `.env` file: exit 2, the password hidden."""
    for args in database_commands(["--db", url]):
        code, shown = invoke(args)
        assert (code, leaked(password, shown)) == (2, []), (args, shown)
    for args in database_commands([]):
        code, shown = invoke(args, env={"TUTORMAX_DATABASE_URL": url})
        assert (code, leaked(password, shown)) == (2, []), (args, shown)
    (here / ".env").write_text(f"TUTORMAX_DATABASE_URL='{url}'\n")
    code, shown = invoke(["db", "current"])
    assert (code, leaked(password, shown)) == (2, []), shown
    assert "***" in shown  # the URL was shown, masked


@pytest.mark.parametrize(("password", "url"), REDIS_CORPUS)
def test_a_mistyped_redis_url_never_shows_its_password(password: str, url: str, here: Path) -> None:
    """By --redis, by TUTORMAX_REDIS_URL and by a `.env` file: exit 2, the password hidden."""
    sqlite = f"sqlite:///{here / 'x.db'}"
    for args in redis_commands(["--redis", url], sqlite):
        code, shown = invoke(args)
        assert (code, leaked(password, shown)) == (2, []), (args, shown)
    for args in redis_commands([], sqlite):
        code, shown = invoke(args, env={"TUTORMAX_REDIS_URL": url})
        assert (code, leaked(password, shown)) == (2, []), (args, shown)
    (here / ".env").write_text(f"TUTORMAX_REDIS_URL='{url}'\n")
    code, shown = invoke(["dlq", "list"])
    assert (code, leaked(password, shown)) == (2, []), shown


def stray_commands(url: str) -> list[list[str]]:
    """Each command with the URL where an argument goes (--db / --redis forgotten)."""
    return [
        ["enrich", url],
        ["enrich", TUTORS, url, "--no-db"],
        ["db", "upgrade", url],
        ["db", "current", url],
        ["db", "init", url],
        ["worker", url],
        ["stats", url],
        ["dlq", "list", url],
        ["dlq", "drain", "--out", "drained.jsonl", url],
        ["publish", url],
        ["publish", TUTORS, url, "--redis", "redis://127.0.0.1:1/0"],  # never reached
        ["refresh", url],
        [url],  # the command itself forgotten
        ["refresh", "--batch-size", url],  # an option's value of the wrong type
    ]


@pytest.mark.parametrize(("password", "url"), STRAY)
def test_a_url_typed_as_an_argument_is_never_echoed(password: str, url: str, here: Path) -> None:
    """Click's "Got unexpected extra argument(s) (…)", "No such command", "Invalid value",
    and a file error naming the URL as a path: each masked, each exit 2."""
    for args in stray_commands(url):
        code, shown = invoke(args)
        assert (code, leaked(password, shown)) == (2, []), (args, shown)
        assert "***" in shown, (args, shown)


@pytest.mark.parametrize(
    "args",
    [
        ["db", "current", "--db", "postgresql://app:Hunter2Pass:5432/tutoring"],
        ["stats", "--redis", "redis://default:Hunter2Pass/0", "--db", "sqlite:///none.db"],
        ["db", "upgrade", "postgresql://app:Hunter2Pass@db.example/tutoring"],
        ["worker", "redis://:Hunter2Pass@cache.example:6379/0"],
        ["enrich", TUTORS, "postgresql://app:Hunter2Pass@db.example/tutoring"],
    ],
)
def test_the_installed_command_shows_no_mistyped_password(args: list[str], tmp_path: Path) -> None:
    """Review C's repro cases, through the installed command (cli.main, not CliRunner)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TUTORMAX_")}
    done = subprocess.run([TUTORMAX, *args], cwd=tmp_path, env=clean, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    shown = done.stdout + done.stderr
    assert (done.returncode, leaked("Hunter2Pass", shown)) == (2, []), shown
    assert "***" in shown


def test_the_environment_through_the_installed_command(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TUTORMAX_")}
    env = {**clean, "TUTORMAX_DATABASE_URL": "postgresql://app:Hunter2Pass"}
    done = subprocess.run([TUTORMAX, "enrich", TUTORS], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "postgresql://app:***" in done.stderr and "Hunter" not in done.stdout + done.stderr


def test_what_is_no_secret_is_shown_as_it_is() -> None:
    """A port is no password, a template is no URL, a timestamp no user-info."""
    for url in ("redis://localhost:6379/0", "postgresql://[::1]:5432/x", "redis://h:1/0",
                "postgresql://app@db:5432/x", "sqlite:///tutormax.db"):  # fmt: skip
        assert mask_text(f"error: {url}: refused") == f"error: {url}: refused"
    for text in ("at 2024-11-07T14:00:00+05:30, 3 rows", "http://127.0.0.1:9100/metrics",
                 "error: --redis redis://default:***: not a Redis URL",
                 "cannot connect to postgresql://app:***@db.example: timeout"):  # fmt: skip
        assert mask_text(text) == text
    assert mask_url("redis://localhost:6379/0") == "redis://localhost:6379/0"
    assert mask_url("postgresql://app:Hunter2Pass:5432/x") == "postgresql://app:***"


# -- the masking functions, over drawn passwords and URL shapes ---------------------------------

TELLING = "GHJKLMNPQRSTUVWXYZ"  # upper case, not hex: nothing else in the texts holds them
OTHERS = string.ascii_lowercase + string.digits + string.punctuation


def _passwords(others: str) -> st.SearchStrategy[str]:
    """A telling letter in every 4 characters, so that every piece of 4 is one a leak shows."""
    segment = st.tuples(st.text(alphabet=others, max_size=3), st.sampled_from(TELLING))
    body = st.lists(segment.map("".join), min_size=1, max_size=6).map("".join)
    tail = st.text(alphabet=others, max_size=3)
    return st.tuples(body, tail).map("".join).filter(lambda p: len(p) >= 4)


SHAPES = {  # a URL shape: (the URL, whether the password may hold `@`)
    "no-host": ("{s}://app:{pw}", False),
    "no-host-db": ("{s}://app:{pw}/tutoring", False),
    "colon-for-at": ("{s}://app:{pw}:5432/tutoring", False),
    "no-user-colon-for-at": ("{s}://:{pw}:6379/0", False),
    "at": ("{s}://app:{pw}@db.example:5432/tutoring", True),
    "one-slash": ("{s}:/app:{pw}@db.example/tutoring", True),
    "no-scheme": ("app:{pw}@db.example/tutoring", True),
    "no-scheme-no-host": ("app:{pw}", False),
}
SCHEMES = ["postgresql", "postgresql+psycopg2", "redis", "rediss", "sqlite", "unix", "mysql"]


def shaped(shape: str, scheme: str, password: str, encoded: bool) -> str:
    pw = quote(password, safe="") if encoded else password
    return SHAPES[shape][0].format(s=scheme, pw=pw)


def telling_pieces(password: str) -> set[str]:
    return {p for p in pieces(password) if any(c in TELLING for c in p)}


@settings(max_examples=400, deadline=None)
@given(
    password=_passwords(OTHERS.replace("@", "")) | _passwords(OTHERS),
    shape=st.sampled_from(sorted(SHAPES)),
    scheme=st.sampled_from(SCHEMES),
    encoded=st.booleans(),
)
@example(password="Hunter2Pass", shape="no-host", scheme="postgresql", encoded=False)
@example(password="Hx/Yq", shape="colon-for-at", scheme="postgresql", encoded=False)
@example(password="[Q:7", shape="no-user-colon-for-at", scheme="redis", encoded=False)
@example(password="p@ssW", shape="at", scheme="postgresql", encoded=False)
@example(password="W?password=Z", shape="no-host", scheme="redis", encoded=False)
def test_masking_hides_every_drawn_password(
    password: str, shape: str, scheme: str, encoded: bool
) -> None:
    """mask_url (a URL given as an option) and mask_text (a message that quotes one) hide
    every piece of the password, as typed or encoded, in every shape.

    Two shapes tell nothing and are left out: with no `@host`, a password whose start is a
    port number (`app:5432/X` is host `app`, port 5432, database X), and a password holding
    `@` (`app:X@Y` is password X at host Y); and with no scheme, one that starts with `//`
    (`app://X@Y` is scheme app, user X). In free text a word ends at a blank, and
    `app:X` with neither scheme nor `@` is no URL (`key:value`): both are masked as option
    values and registered arguments (see the tests above and below), not here."""
    typed = quote(password, safe="") if encoded else password
    assume(SHAPES[shape][1] or "@" not in typed)
    assume(SHAPES[shape][1] or not port_first(typed))
    assume(not shape.startswith("no-scheme") or not typed.startswith("//"))  # `app://X`
    url = shaped(shape, scheme, password, encoded)
    assert not _leaks(password, mask_url(url)), mask_url(url)
    if shape != "no-scheme-no-host" and not any(c.isspace() for c in typed):
        for text in (f"error: got unexpected extra argument(s) ({url})", f"error: {url}: no"):
            assert not _leaks(password, mask_text(text)), mask_text(text)


def port_first(password: str) -> bool:
    """Whether the password starts with a port number, up to what ends an authority."""
    start = re.split(r"[/?#]", password)[0]
    return start.isdigit() and int(start) <= 65535


def _leaks(password: str, text: str) -> list[str]:
    return sorted(p for p in telling_pieces(password) if p in text)


@settings(max_examples=150, deadline=None)
@given(
    password=_passwords(OTHERS.replace("@", "") + " "),
    shape=st.sampled_from(["no-host", "colon-for-at", "at", "no-scheme"]),
)
def test_an_argument_registered_is_scrubbed_whole(password: str, shape: str) -> None:
    """A password holding a blank ends a word of free text, so mask_text alone may miss
    its end; an argument registered (cli.ScrubbingGroup) is scrubbed whole."""
    assume(not port_first(password))
    url = shaped(shape, "postgresql", password, encoded=False)
    registered = set(config._SECRETS)  # (this example's alone: the others' might hide it)
    config._SECRETS.clear()
    try:
        register_arguments(["db", "upgrade", url])
        shown = scrub(f"error: got unexpected extra argument(s) ({url})")
    finally:
        config._SECRETS |= registered
    assert not _leaks(password, shown), shown
