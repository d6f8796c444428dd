"""Developer sessions: `nox -s tests lint typecheck bench demo`."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

PACKAGES = ["tutormax_cli", "tests", "bench", "noxfile.py"]
# The core (no terminal, queue or database): type-checked with --strict.
CORE = [
    *(f"tutormax_cli/{m}.py" for m in
      ("schema", "validate", "records", "json_bounds", "pipeline", "parents", "duplicates", "held",
       "config", "errors", "ordered", "session_join", "spill", "interrupts", "keyhash")),
    "tutormax_cli/rules", "tutormax_cli/fields",
]  # fmt: skip


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (service tests skip without PostgreSQL/Redis, but fail under CI=true)."""
    session.install("-e", ".[dev]")
    session.run("pytest", *(session.posargs or ["-n", "2"]))  # as the README runs it


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", *PACKAGES)
    session.run("ruff", "format", "--check", *PACKAGES)


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("mypy", "tutormax_cli")
    session.run("mypy", "--strict", *CORE)


@nox.session
def bench(session: nox.Session) -> None:
    """Generate 1M sessions + 1M feedback, time tutormax against DuckDB (and COPY)."""
    session.install("-e", ".[dev,bench]")
    session.run("python", "-m", "bench", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """Enrich the sample data (the README quick start) and show the rejects of the bad data."""
    session.install("-e", ".")
    session.run(
        "tutormax", "enrich", "sample_data/tutors.csv", "sample_data/sessions.csv",
        "sample_data/feedback.jsonl", "--out", "out/", "--db", "sqlite:///out/demo.db",
    )  # fmt: skip
    session.run(
        "tutormax", "enrich", "sample_data/bad/tutors.csv", "sample_data/bad/sessions.csv",
        "sample_data/bad/feedback.jsonl", "--out", "out/bad/", "--no-db",
        success_codes=[1],
    )  # fmt: skip
