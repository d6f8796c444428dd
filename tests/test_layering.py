"""The layers of tutormax_cli, checked on every module (see CONTRIBUTING.md).

The core (schema, rules, records, validate, fields, pipeline, duplicates, config, errors)
knows nothing of a terminal, a queue or a database. Each wing imports the core and its own
adapter library, and no other wing's library: redis in queue/streams, sqlalchemy in store,
psycopg2 in the PostgreSQL backend, alembic in the migrations, typer and rich in cli. The
check reads every import statement, the lazy ones inside functions too, so a wing cannot
borrow a library by importing it late.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import tutormax_cli

PACKAGE = Path(tutormax_cli.__file__).parent
CORE_PACKAGES = ("rules", "fields")
CORE_MODULES = (
    "schema", "validate", "records", "json_bounds", "pipeline", "parents", "duplicates", "held",
    "config", "errors", "ordered", "session_join", "spill", "interrupts", "keyhash",
)  # fmt: skip
WINGS = ("files", "queue", "store", "generate", "cli")
ENTRY = ("__main__",)  # `python -m tutormax_cli`: the CLI's entry
ADAPTERS = (
    "typer",
    "rich",
    "redis",
    "sqlalchemy",
    "psycopg2",
    "alembic",
    "click",
    "prometheus_client",
    "dotenv",
)

# Where each adapter library may be imported: a module path prefix (dotted, under tutormax_cli).
ALLOWED: dict[str, tuple[str, ...]] = {
    "typer": ("cli",),
    "click": ("cli",),
    "rich": ("cli",),
    "redis": ("queue.streams",),
    "prometheus_client": ("queue.metrics",),
    "sqlalchemy": ("store",),
    "psycopg2": ("store.postgres",),
    "alembic": ("store.migrate", "store.migrations"),
    "dotenv": ("config",),
}
# The one borrowing the core is allowed: URL parsing for masking secrets, loaded inside the
# function that masks, never at import (the import-time check below holds it to that).
LAZY_EXCEPTIONS = {("config", "sqlalchemy")}

# Which of our own layers a layer may import.
MAY_IMPORT: dict[str, set[str]] = {
    "core": {"core"},
    "files": {"core", "files"},
    "generate": {"core", "generate"},
    "store": {"core", "store"},
    "queue": {"core", "queue", "store", "files"},
    "cli": {"core", "files", "queue", "store", "generate", "cli"},
}


def all_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages([str(PACKAGE)], prefix="tutormax_cli."):
        if ".migrations" in info.name:  # Alembic's scripts, loaded by Alembic alone
            continue
        names.append(info.name.removeprefix("tutormax_cli."))
    return sorted(names)


def layer_of(module: str) -> str:
    top = module.split(".")[0]
    if top in CORE_PACKAGES or top in CORE_MODULES:
        return "core"
    if top in WINGS:
        return top
    if top in ENTRY:
        return "cli"
    raise AssertionError(
        f"tutormax_cli.{module} belongs to no layer: add it to tests/test_layering.py"
    )


def source_of(module: str) -> Path:
    path = PACKAGE.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imports_of(module: str) -> list[tuple[str, int]]:
    """Every absolute module name the file imports, relative imports resolved."""
    path = source_of(module)
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(["tutormax_cli", *base, *([node.module] if node.module else [])])
                if node.module is None:
                    found += [(f"{target}.{alias.name}", node.lineno) for alias in node.names]
                else:
                    found.append((target, node.lineno))
            else:
                found.append((node.module or "", node.lineno))
    return found


MODULES = all_modules()
CORE = [m for m in MODULES if layer_of(m) == "core"]


def test_every_module_is_checked() -> None:
    assert len(MODULES) > 40
    for name in (
        "schema",
        "rules.check",
        "fields.sessions",
        "files.csv",
        "queue.worker",
        "store.postgres",
        "cli.enrich",
    ):
        assert name in MODULES


@pytest.mark.parametrize("module", MODULES)
def test_imports_stay_in_their_layer(module: str) -> None:
    layer = layer_of(module)
    wrong = []
    for name, line in imports_of(module):
        top = name.split(".")[0]
        where = f"tutormax_cli/{source_of(module).relative_to(PACKAGE)}:{line} imports {name}"
        if top == "tutormax_cli":
            parts = name.split(".")
            if len(parts) == 1:
                raise AssertionError(f"{where}: import the module you mean, not the package")
            inner = ".".join(parts[1:])
            if source_of(inner).exists() or PACKAGE.joinpath(*parts[1:]).is_dir():
                target = layer_of(inner)
            elif len(parts) == 2:  # `from .. import __version__`: the package's own face
                continue
            else:  # `from .pkg import name`: the name is a member of a module
                target = layer_of(".".join(parts[1:-1]))
            if target not in MAY_IMPORT[layer]:
                wrong.append(f"{where}: a {layer} module may not import the {target} layer")
        elif top in ALLOWED:
            if (module.split(".")[0], top) in LAZY_EXCEPTIONS:
                continue
            if not any(module == p or module.startswith(p + ".") for p in ALLOWED[top]):
                wrong.append(f"{where}: {top} belongs to {', '.join(ALLOWED[top])}")
    assert wrong == []


@pytest.mark.parametrize("module", CORE + ["files", "files.run", "generate"])
def test_core_loads_no_adapter_libraries(module: str) -> None:
    code = (
        f"import importlib, json, sys; importlib.import_module('tutormax_cli.' + {module!r}); "
        f"print(json.dumps(sorted(m for m in {list(ADAPTERS)!r} if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_help_needs_no_services() -> None:
    """`tutormax --help` imports no database or queue client (they load inside commands)."""
    clients = ["redis", "sqlalchemy", "psycopg2", "alembic"]
    code = (
        "import sys, json\nfrom tutormax_cli.cli import app\n"
        f"print(json.dumps(sorted(m for m in {clients!r} if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_the_checker_sees_a_lazy_import(tmp_path: Path) -> None:
    """The AST reader finds imports inside functions and resolves relative ones."""
    assert ("redis", 1) not in imports_of("files.csv")
    found = {name for name, _ in imports_of("queue.worker")}
    assert "tutormax_cli.store" in found or any(n.startswith("tutormax_cli.store") for n in found)
    lazy = {name for name, _ in imports_of("config")}
    assert "sqlalchemy.engine" in lazy and "dotenv" in lazy


def test_the_strict_typecheck_covers_the_core() -> None:
    """noxfile.py's `mypy --strict` list is the core this file checks, module for module."""
    import runpy

    listed = runpy.run_path(str(PACKAGE.parent / "noxfile.py"))["CORE"]
    covered = set()
    for entry in listed:
        path = PACKAGE.parent / entry
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for f in files:
            rel = f.relative_to(PACKAGE).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            covered.add(".".join(parts))
    assert covered == set(CORE)
