"""sync_protocol stays pure: no web framework, no database, and one module owns cryptography."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import sync_protocol

PACKAGE_DIR = Path(sync_protocol.__file__).resolve().parent
PROJECT_PACKAGES = ("sync_protocol", "server", "forms", "village_client_stub", "bench")
FORBIDDEN = (
    "flask",
    "sqlalchemy",
    "flask_sqlalchemy",
    "alembic",
    "psycopg",
    "sqlite_utils",
    "server",
)


def _modules() -> list[str]:
    names = ["sync_protocol"]
    names += [m.name for m in pkgutil.walk_packages([str(PACKAGE_DIR)], prefix="sync_protocol.")]
    return names


def test_importing_every_module_loads_no_framework_or_database() -> None:
    modules = _modules()
    assert "sync_protocol.envelope" in modules and "sync_protocol.crypto" in modules
    # A fresh interpreter, so modules other tests imported cannot hide or cause a failure.
    script = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"forbidden = {FORBIDDEN!r}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in forbidden)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=PACKAGE_DIR.parent,
    )
    assert json.loads(result.stdout) == []


def _imported_top_level_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module":
            # importlib.import_module("cryptography…") would dodge the static check.
            for argument in node.args:
                if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                    names.add(argument.value.split(".")[0])
    return names


def test_only_crypto_module_imports_cryptography() -> None:
    # The whole project, not only this package: every other part calls sync_protocol.crypto.
    project = PACKAGE_DIR.parent
    packages = [project / name for name in PROJECT_PACKAGES if (project / name).is_dir()]
    importers = sorted(
        str(path.relative_to(project))
        for package in packages
        for path in package.rglob("*.py")
        if "cryptography" in _imported_top_level_names(path)
    )
    assert importers == ["sync_protocol/crypto.py"]


def test_no_module_imports_a_framework_or_database_statically() -> None:
    offenders = {
        str(path.relative_to(PACKAGE_DIR.parent)): sorted(
            _imported_top_level_names(path) & set(FORBIDDEN)
        )
        for path in PACKAGE_DIR.rglob("*.py")
    }
    assert {path: names for path, names in offenders.items() if names} == {}
