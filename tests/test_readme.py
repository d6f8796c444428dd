"""The README stays true: its field table is the registry's, its commands run."""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tutormax_cli.cli import app
from tutormax_cli.fields import markdown_table

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
TUTORMAX = str(Path(sys.executable).with_name("tutormax"))


def test_field_table_matches_the_registry() -> None:
    section = README.split("<!-- fields:start -->")[1].split("<!-- fields:end -->")[0]
    assert section.strip() == markdown_table()


def test_quick_start_runs_the_sample_data(tmp_path: Path, monkeypatch) -> None:
    """The quick start's enrich command, as written, on the sample data: exit 0."""
    line = next(x for x in README.splitlines() if "tutormax enrich sample_data/" in x)
    argv = shlex.split(line.split(".venv/bin/tutormax ", 1)[1])
    monkeypatch.chdir(tmp_path)
    argv = [str(ROOT / a) if a.startswith("sample_data/") else a for a in argv]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.stderr
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "tutors.csv",
        "sessions.csv",
        "feedback.jsonl",
    }
    assert (tmp_path / "tutormax.db").exists()


def test_quick_start_through_the_installed_command(tmp_path: Path) -> None:
    """The quick start as a newcomer runs it, in a folder holding a copy of sample_data/:
    its first command through the installed `tutormax`, which leaves junior, mid and senior
    tutors to look at; then its "look at what it stored" step, both ways, as written."""
    shutil.copytree(ROOT / "sample_data", tmp_path / "sample_data")
    # no TUTORMAX_* of ours, and no Redis (as on a laptop; the shared one is not touched)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUTORMAX_")}
    env["TUTORMAX_REDIS_URL"] = "redis://127.0.0.1:1/0"

    def run(argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)  # fmt: skip

    line = next(x for x in README.splitlines() if "tutormax enrich sample_data/" in x)
    first = run([TUTORMAX, *shlex.split(line.split(".venv/bin/tutormax ", 1)[1])])
    assert first.returncode == 0, first.stderr
    assert first.stdout == "" and re.search(r"^total +375 +375 ", first.stderr, re.M)
    with sqlite3.connect(tmp_path / "tutormax.db") as conn:
        spread = dict(conn.execute("select experience_level, count(*) from tutors group by 1"))
    assert spread == {"junior": 2, "mid": 2, "senior": 21}

    look = README.split("To look at what it stored:", 1)[1].split("```bash\n", 1)[1]
    lines = look.split("```", 1)[0].splitlines()
    stats_line = next(x for x in lines if x.startswith(".venv/bin/tutormax stats"))
    stats = run([TUTORMAX, *shlex.split(stats_line, comments=True)[1:]])
    assert stats.returncode == 0, stats.stderr
    counts = re.findall(r"(tutors|sessions|feedback) (\d+)", stats_line.split("#", 1)[1])
    assert counts == [("tutors", "25"), ("sessions", "200"), ("feedback", "150")]
    assert "tables (sqlite:///tutormax.db): tutors 25, sessions 200, feedback 150" in stats.stdout
    assert "Redis" in stats.stdout + stats.stderr  # the streams part says why it is missing
    i, query_line = next((i, x) for i, x in enumerate(lines) if x.startswith("python3 -c "))
    query = run([sys.executable, *shlex.split(query_line)[1:]])
    assert query.returncode == 0, query.stderr
    shown = lines[i + 1].removeprefix("# ")
    assert query.stdout.strip() == shown
    assert dict(ast.literal_eval(shown)) == spread


def test_bad_sample_data_is_rejected_with_reasons(tmp_path: Path) -> None:
    bad = sorted((ROOT / "sample_data" / "bad").glob("*.*sv")) + sorted(
        (ROOT / "sample_data" / "bad").glob("*.jsonl")
    )
    result = CliRunner().invoke(
        app, ["enrich", *map(str, bad), "--out", str(tmp_path), "--no-db", "--json"]
    )
    assert result.exit_code == 1
    assert (tmp_path / "rejects.jsonl").read_text().count("\n") >= 10


def test_the_test_command_is_what_ci_runs() -> None:
    command = next(x for x in README.splitlines() if "python -m pytest" in x).strip()
    assert command in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize(
    "example",
    re.findall(r"^tutormax (?:enrich|db|generate|publish|worker|dlq|stats) .*$", README, re.M),
)
def test_documented_options_exist(example: str) -> None:
    """Every option in a README example is one the command knows (checked by --help)."""
    words = shlex.split(example, comments=True)[1:]
    command = [w for w in words[:2] if not w.startswith("-") and "/" not in w and "." not in w]
    help_text = CliRunner().invoke(app, [*command, "--help"]).stdout
    for option in (w for w in words if w.startswith("--")):
        assert option in help_text, f"{option} not in `tutormax {' '.join(command)} --help`"
