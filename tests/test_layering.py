"""The core imports neither the terminal, the queue nor the database layers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CORE = [
    "tutormax_cli.pipeline",
    "tutormax_cli.enrich",
    "tutormax_cli.fields",
    "tutormax_cli.validate",
    "tutormax_cli.files",
    "tutormax_cli.writers",
]
FORBIDDEN = ["typer", "rich", "redis", "sqlalchemy", "psycopg2"]


@pytest.mark.parametrize("module", CORE)
def test_core_loads_no_adapter_libraries(module: str) -> None:
    code = (
        f"import importlib, json, sys; importlib.import_module({module!r}); "
        f"print(json.dumps(sorted(m for m in {FORBIDDEN!r} if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_help_needs_no_services() -> None:
    """`tutormax --help` imports no database or queue client (they load inside commands)."""
    code = (
        "import sys, json\nfrom tutormax_cli.cli import app\n"
        "print(json.dumps(sorted(m for m in ['redis', 'sqlalchemy'] if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
