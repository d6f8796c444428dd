"""Suite-wide rules. Under CI=true a skipped test is a failure: CI has every service."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"

# The service fixtures (pg_url, db_url, store; redis_url, prefix, streams), for every module.
pytest_plugins = ["dbfixtures", "redisfixtures"]


@pytest.fixture(autouse=True)
def _forget_secrets() -> object:
    """Each test starts with no secret registered for scrubbing (config.register_secret):
    a command is a process of its own, and one test's password (`127.0.0.1` registered by a
    mistyped URL, say) would mask another test's host."""
    from tutormax_cli import config

    yield
    config._SECRETS.clear()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if IN_CI and skipped:
        reporter.write_line(
            f"CI=true: {len(skipped)} test(s) skipped; every service must run in CI"
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
