"""config.Settings: what the environment says, read once; options win; defaults are constants."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tutormax_cli import config
from tutormax_cli.config import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, Settings
from tutormax_cli.errors import UsageError
from tutormax_cli.queue.runtime import Faults


def test_defaults_when_the_environment_is_silent() -> None:
    s = Settings.load({})
    assert (s.database_url, s.redis_url, s.fault) == (DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, "")
    assert s.database(None) == DEFAULT_DATABASE_URL and s.redis(None) == DEFAULT_REDIS_URL


def test_the_environment_then_the_option() -> None:
    env = {"TUTORMAX_DATABASE_URL": " sqlite:///env.db ", "TUTORMAX_REDIS_URL": "redis://h/1"}
    s = Settings.load(env)
    assert s.database(None) == "sqlite:///env.db" and s.redis(None) == "redis://h/1"
    assert s.database("sqlite:///opt.db") == "sqlite:///opt.db"
    assert s.redis("redis://o/2") == "redis://o/2"


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings.load({}).database_url = "x"  # type: ignore[misc]


def test_every_default_is_a_documented_constant() -> None:
    """Each DEFAULT_* constant in config.py carries its unit or meaning on its line."""
    lines = Path(config.__file__).read_text().splitlines()
    defaults = [line for line in lines if line.startswith("DEFAULT_")]
    assert len(defaults) >= 10
    assert [d for d in defaults if "#" not in d] == []


@pytest.mark.parametrize(
    ("spec", "pause", "message"),
    [
        ("nowhere", "", "expected <point>[:<n>]"),
        ("before_commit:x", "", "expected <point>[:<n>]"),
        ("before_commit", "soon", "not a number of seconds"),
    ],
)
def test_bad_fault_settings_are_usage_errors(spec: str, pause: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Faults.parse(spec, pause)


def test_faults_parse() -> None:
    f = Faults.parse("after_commit_before_ack:3", "0.5")
    assert (f.point, f.nth, f.pause_s) == ("after_commit_before_ack", 3, 0.5)
    assert Faults.parse("").point is None


def test_dotenv_is_read_once_by_the_root_and_real_environment_wins(tmp_path: Path) -> None:
    """`.env` in the working folder supplies TUTORMAX_* values the environment lacks."""
    (tmp_path / ".env").write_text(
        "TUTORMAX_DATABASE_URL=sqlite:///from-dotenv.db\nTUTORMAX_REDIS_URL=redis://dotenv/3\n"
    )
    code = (
        "from tutormax_cli.cli.common import load_settings, settings\n"
        "s = load_settings(); assert settings() is s\n"
        "print(s.database_url, s.redis_url, s.dotenv.name)"
    )
    env = {"PATH": "/usr/bin:/bin", "TUTORMAX_REDIS_URL": "redis://real/4"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["sqlite:///from-dotenv.db", "redis://real/4", ".env"]


def test_dotenv_through_the_installed_command_from_a_parent_folder(tmp_path: Path) -> None:
    """`.env` as people write it (`export`, quotes, inline comments), two folders above the
    working one: python-dotenv's reading, found upwards, by the installed command."""
    db_file = tmp_path / "my #1 db.sqlite"  # quoted: neither ` #1` nor the spaces are lost
    (tmp_path / ".env").write_text(
        "# tutormax settings\n"
        f'export TUTORMAX_DATABASE_URL="sqlite:///{db_file}"  # exported, double-quoted\n'
        "TUTORMAX_TIMEZONE=Europe/Berlin   # an inline comment\n"
        "\n"
        "TUTORMAX_LOG_LEVEL='debug'\n"
    )
    work = tmp_path / "project" / "src"
    work.mkdir(parents=True)
    tutormax = str(Path(sys.executable).with_name("tutormax"))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TUTORMAX_")}

    def tm(*args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([tutormax, *args], cwd=work, env={**clean, **env},
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    init = tm("db", "init", "--json")
    assert init.returncode == 0, init.stderr
    assert db_file.exists() and not (work / "tutormax.db").exists()
    refresh = tm("refresh", "--dry-run", "--json")
    assert refresh.returncode == 0, refresh.stderr
    doc = json.loads(refresh.stdout)
    assert doc["timezone"] == "Europe/Berlin"  # the comment is not part of the value
    assert doc["database"] == json.loads(init.stdout)["database"]
    assert " DEBUG database: sqlite:///" in refresh.stderr  # the single-quoted log level
    # the real environment beats `.env`; an option beats both
    env_wins = tm("refresh", "--dry-run", "--json", TUTORMAX_TIMEZONE="Asia/Tokyo")
    assert json.loads(env_wins.stdout)["timezone"] == "Asia/Tokyo"
    option_wins = tm("refresh", "--dry-run", "--json", "--timezone", "UTC",
                     TUTORMAX_TIMEZONE="Asia/Tokyo")  # fmt: skip
    assert json.loads(option_wins.stdout)["timezone"] == "UTC"


@pytest.mark.parametrize(
    "content",
    [b"\xff\xfe\x00T\x00U\x00", b"TUTORMAX_TIMEZONE=Europe/Paris\nX=\xe9t\xe9\n", b"\x00\x9f\xff"],
    ids=["utf-16", "latin-1", "binary"],
)
def test_a_dotenv_that_is_not_utf8_is_named_not_a_traceback(tmp_path: Path, content: bytes) -> None:
    """Every command reads `.env` first: one that is not UTF-8 (saved as UTF-16 or Latin-1
    by an editor, or not text at all) crashed every command with a UnicodeDecodeError."""
    (tmp_path / ".env").write_bytes(content)
    tutormax = str(Path(sys.executable).with_name("tutormax"))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TUTORMAX_")}
    for args in (["refresh", "--db", "sqlite:///x.db"], ["stats", "--json"], ["db", "current"]):
        out = subprocess.run([tutormax, *args], cwd=tmp_path, env=clean, capture_output=True,
                             text=True, timeout=120)  # fmt: skip
        assert out.returncode == 2, (args, out.stderr)
        assert "Traceback" not in out.stderr
        assert ".env: not UTF-8 text" in out.stderr and "save the .env file as UTF-8" in out.stderr
