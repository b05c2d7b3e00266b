"""Route → service → storage: only ``server/storage`` holds SQLAlchemy sessions and the engine."""

from __future__ import annotations

import ast
from pathlib import Path

SERVER = Path(__file__).resolve().parents[2] / "server"
#: The storage layer, the migration scripts (run by it) and where the extension is created.
ALLOWED = ("storage/", "migrations/", "extensions.py")


def _offences(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "server.extensions":
            found.append(f"line {node.lineno}: imports the SQLAlchemy extension")
        if (
            isinstance(node, ast.Attribute)
            and node.attr in {"session", "engine"}
            and isinstance(node.value, ast.Name)
            and node.value.id == "db"
        ):
            found.append(f"line {node.lineno}: db.{node.attr}")
    return found


def test_only_the_storage_layer_touches_sessions_and_the_engine() -> None:
    offences = {
        str(path.relative_to(SERVER)): found
        for path in sorted(SERVER.rglob("*.py"))
        if not str(path.relative_to(SERVER)).startswith(ALLOWED) and (found := _offences(path))
    }
    assert offences == {}
