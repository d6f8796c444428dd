"""The README stays true: its field table is the registry's, its commands run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tutormax_cli.cli import app
from tutormax_cli.fields import markdown_table

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


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
