"""The layers DESIGN.md and STYLE.md describe, checked over the import graph of every module.

The graph is grimp's (every ``import`` statement of every module, function-level ones included,
third-party packages squashed to their top-level name). The rules are data (:data:`RULES`), so a
synthetic graph can prove that each one fails on the violation it is there to catch, and a temp
copy of the tree with one broken import proves the whole check fails end to end. There is no
list of tolerated violations: the tree holds every rule.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "server"
#: Every first-party top-level package; the graph covers all their modules.
PACKAGES = ("server", "forms", "sync_protocol", "village_client_stub", "bench", "tests")
FRAMEWORKS = ("flask", "flask_sqlalchemy", "sqlalchemy", "alembic", "sqlite_utils")


@dataclass(frozen=True)
class Rule:
    """Modules under any of ``importers`` must not directly import anything under ``forbidden``."""

    name: str
    importers: tuple[str, ...]
    forbidden: tuple[str, ...]


#: The view packages: the JSON API, the admin pages and the field app's shell.
VIEWS = ("server.api", "server.web", "server.field")

RULES = (
    # A view parses, calls a service and renders; transactions (end_read, rollback) and tables
    # are storage's business, reached through services — or, for the rollback of a failed
    # request, through the one error-mapping place (server.http_errors).
    Rule("views do not reach storage", VIEWS, ("server.storage",)),
    # Services run without Flask and without a database library: storage hands them plain data.
    Rule(
        "services know neither Flask nor SQLAlchemy nor the ORM",
        ("server.services",),
        # (werkzeug itself is allowed: auth hashes passwords with werkzeug.security.)
        (*FRAMEWORKS, "server.storage.models", *VIEWS, "server.http_errors"),
    ),
    # Services import the catalogue to raise its errors: it must not pull Flask in behind them.
    Rule(
        "the error catalogue is framework-free",
        ("server.errors",),
        (*FRAMEWORKS, "werkzeug", "server.http_errors", *VIEWS),
    ),
    Rule(
        "storage does not call up",
        ("server.storage",),
        ("server.services", *VIEWS, "server.http_errors"),
    ),
    # The benchmarks are a product command; a test tree is not shipped with it.
    Rule("bench does not import tests", ("bench",), ("tests",)),
    # The pure cores run on a tablet and (re-implemented) in a browser.
    Rule(
        "forms and sync_protocol import no framework and no edge",
        ("forms", "sync_protocol"),
        (*FRAMEWORKS, "server", "village_client_stub", "bench", "tests"),
    ),
)

#: Pure-core modules allowed to touch files: a command-line edge reads and writes what it is given.
FILE_IO_EDGES = frozenset({"forms.cli"})


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def layer_violations(graph: grimp.ImportGraph) -> set[tuple[str, str]]:
    """Every (importer, imported) pair of ``graph`` that breaks a rule of :data:`RULES`, plus every
    import that closes a cycle between first-party modules (outside ``tests``)."""
    found: set[tuple[str, str]] = set()
    for importer in graph.modules:
        for imported in graph.find_modules_directly_imported_by(importer):
            for rule in RULES:
                if _under(importer, rule.importers) and _under(imported, rule.forbidden):
                    found.add((importer, imported))
    return found | cycle_imports(graph) | frameworks_behind_services(graph)


def frameworks_behind_services(graph: grimp.ImportGraph) -> set[tuple[str, str]]:
    """``(service module, framework)`` for every framework a service reaches through a chain of
    imports that does not pass through storage (which alone may use them): importing a helper
    that imports Flask is importing Flask."""
    found = set()
    for service in graph.modules:
        if not _under(service, ("server.services",)):
            continue
        seen, todo = {service}, [service]
        while todo:
            for imported in graph.find_modules_directly_imported_by(todo.pop()):
                if imported in seen or _under(imported, ("server.storage",)):
                    continue
                seen.add(imported)
                if _under(imported, FRAMEWORKS):
                    found.add((service, imported))
                else:
                    todo.append(imported)
    return found


def cycle_imports(graph: grimp.ImportGraph) -> set[tuple[str, str]]:
    """The imports between first-party modules (outside ``tests``) that lie on an import cycle,
    direct (``server.app`` ↔ ``server.cli``) or through other modules, function-level imports
    included: a lazy import hides a cycle from the interpreter, not from the design.

    An import ``a → b`` lies on a cycle exactly when ``a`` and ``b`` are in one strongly connected
    component of the graph (Tarjan's algorithm, iterative so a deep package cannot overflow).
    """
    shipped = [m for m in graph.modules if _under(m, PACKAGES) and not _under(m, ("tests",))]
    edges = {
        m: sorted(i for i in graph.find_modules_directly_imported_by(m) if i in set(shipped))
        for m in shipped
    }
    component: dict[str, int] = {}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    for root in sorted(shipped):
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            step = next(successors, None)
            if step is not None:
                if step not in index:
                    index[step] = low[step] = len(index)
                    stack.append(step)
                    on_stack.add(step)
                    work.append((step, iter(edges[step])))
                elif step in on_stack:
                    low[node] = min(low[node], index[step])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component[member] = index[node]
                    if member == node:
                        break
    return {
        (importer, imported)
        for importer, imports in edges.items()
        for imported in imports
        if component[importer] == component[imported]
    }


#: ``os``/``shutil``/``tempfile`` calls and path methods that read, write or change files.
_OS_FILE_CALLS = {"open", "fdopen", "replace", "rename", "remove", "unlink", "chmod", "makedirs"}
_PATH_FILE_METHODS = {"read_text", "read_bytes", "write_text", "write_bytes", "mkdir", "touch"}


def _reads_package_data(node: ast.AST) -> bool:
    """True when the call chain starts at ``importlib.resources.files`` (installed package data,
    which a tablet build bundles; not a file the user names)."""
    while isinstance(node, ast.Attribute | ast.Call):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == "files":
                return True
            node = func
        else:
            node = node.value
    return False


def file_io_calls(source: str) -> list[int]:
    """Line numbers of file reads and writes in ``source`` (package-data reads excepted)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id == "open":
            lines.append(node.lineno)
        elif isinstance(func, ast.Attribute):
            owner = func.value.id if isinstance(func.value, ast.Name) else None
            if (owner == "os" and func.attr in _OS_FILE_CALLS) or owner in {"shutil", "tempfile"}:
                lines.append(node.lineno)
            elif func.attr in _PATH_FILE_METHODS and not _reads_package_data(func.value):
                lines.append(node.lineno)
    return lines


def file_io_violations(root: Path) -> set[tuple[str, str]]:
    found = set()
    for package in ("forms", "sync_protocol"):
        for path in sorted((root / package).rglob("*.py")):
            module = ".".join(path.relative_to(root).with_suffix("").parts)
            module = module.removesuffix(".__init__")
            if module not in FILE_IO_EDGES and file_io_calls(path.read_text(encoding="utf-8")):
                found.add((module, "<file I/O>"))
    return found


def _graph_of(root: Path) -> grimp.ImportGraph:
    """The import graph of the packages found under ``root``.

    Built in a child interpreter: grimp finds packages through ``sys.path`` and this process has
    already imported the real ``server``, so a temp copy could not be told apart in-process.
    """
    script = (
        "import json, sys, grimp\n"
        f"g = grimp.build_graph(*{PACKAGES!r}, include_external_packages=True, cache_dir=None)\n"
        "print(json.dumps([[m, sorted(g.find_modules_directly_imported_by(m))]"
        " for m in sorted(g.modules)]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    graph = grimp.ImportGraph()
    for module, imports in json.loads(out):
        graph.add_module(module)
        for imported in imports:
            graph.add_import(importer=module, imported=imported)
    return graph


def _violations(root: Path) -> set[tuple[str, str]]:
    return layer_violations(_graph_of(root)) | file_io_violations(root)


def test_the_tree_keeps_its_layers() -> None:
    assert sorted(_violations(ROOT)) == [], "layer violations"


def test_each_rule_fails_on_the_violation_it_names() -> None:
    # One synthetic edge per kind of violation issue 12 lists; each must be reported.
    breaks = [
        ("server.services.sync", "server.storage.models"),
        ("server.services.auth", "sqlalchemy"),
        ("server.services.keys", "flask"),
        ("server.services.records", "flask_sqlalchemy"),
        ("server.api.devices", "server.storage.models"),
        ("server.api.guard", "server.storage.database"),
        ("server.web.base", "server.storage.database"),
        ("server.field", "server.storage.records"),
        ("server.errors", "flask"),
        ("server.errors", "sqlalchemy"),
        ("server.services.sync", "server.http_errors"),
        ("server.storage.jobs", "server.services.devices"),
        ("bench.weak_link", "tests.e2e.county"),
        ("forms.household", "flask"),
        ("sync_protocol.crypto", "server.services.keys"),
    ]
    for importer, imported in breaks:
        graph = grimp.ImportGraph()
        graph.add_import(importer=importer, imported=imported)
        assert layer_violations(graph) == {(importer, imported)}, (importer, imported)

    cycle = grimp.ImportGraph()
    cycle.add_import(importer="server.app", imported="server.cli")
    cycle.add_import(importer="server.cli", imported="server.app")
    assert layer_violations(cycle) == {("server.app", "server.cli"), ("server.cli", "server.app")}

    # A cycle through a third module (the lazy import forms.household once used) is one too;
    # the import hanging off it is not.
    around = grimp.ImportGraph()
    around.add_import(importer="forms.household", imported="forms.indicators")
    around.add_import(importer="forms.indicators", imported="forms.checks")
    around.add_import(importer="forms.checks", imported="forms.household")
    around.add_import(importer="forms.checks", imported="forms.text")
    assert layer_violations(around) == {
        ("forms.household", "forms.indicators"),
        ("forms.indicators", "forms.checks"),
        ("forms.checks", "forms.household"),
    }

    # Flask behind a helper module is Flask all the same; behind storage it is storage's own.
    behind = grimp.ImportGraph()
    behind.add_import(importer="server.services.records", imported="server.errors")
    behind.add_import(importer="server.errors", imported="flask")
    behind.add_import(importer="server.services.sync", imported="server.storage.database")
    behind.add_import(importer="server.storage.database", imported="flask_sqlalchemy")
    assert layer_violations(behind) == {
        ("server.errors", "flask"),
        ("server.services.records", "flask"),
    }

    allowed = grimp.ImportGraph()
    allowed.add_import(importer="server.api.records", imported="server.services.records")
    allowed.add_import(importer="server.services.records", imported="server.storage.records")
    allowed.add_import(importer="server.storage.records", imported="sqlalchemy")
    allowed.add_import(importer="server.services.records", imported="server.errors")
    allowed.add_import(importer="server.web.base", imported="server.http_errors")
    allowed.add_import(importer="server.http_errors", imported="server.storage.database")
    allowed.add_import(importer="tests.e2e.conftest", imported="bench.harness.county_server")
    assert layer_violations(allowed) == set()


def test_file_io_is_found_but_package_data_is_not() -> None:
    assert file_io_calls("open('k')\n") == [1]
    assert file_io_calls("import os\nos.replace(a, b)\n") == [2]
    assert file_io_calls("p.write_bytes(b'')\n") == [1]
    assert file_io_calls("resources.files('forms').joinpath('x.json').read_text()\n") == []
    assert file_io_calls("text.replace('a', 'b')\n") == []


def test_a_broken_import_in_a_copy_of_the_tree_fails_the_check(tmp_path: Path) -> None:
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    broken = tmp_path / "server" / "services" / "access.py"
    broken.write_text(
        broken.read_text(encoding="utf-8") + "\nfrom server.storage.models import Device\n",
        encoding="utf-8",
    )
    # The cycle issue 12 found, brought back as the lazy import that once hid it.
    app = tmp_path / "server" / "app.py"
    app.write_text(
        app.read_text(encoding="utf-8") + "\n\ndef _commands():\n    from server import cli\n",
        encoding="utf-8",
    )
    assert _violations(tmp_path) == {
        ("server.services.access", "server.storage.models"),
        ("server.app", "server.cli"),
        ("server.cli", "server.app"),
    }


# The narrower check that came first, kept: it also catches `db.session` reached through an
# attribute, which no import shows.
#: The storage layer (which creates the handle) and the migration scripts (run by it).
ALLOWED = ("storage/", "migrations/")


def _offences(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module == "server.storage.database"
            and any(alias.name == "db" for alias in node.names)
        ):
            found.append(f"line {node.lineno}: imports the SQLAlchemy handle")
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


#: Transaction control: storage's ``writing``/``end_read``/``rollback``, a session's ``commit``.
#: A view must not call any of them, whatever name or module it reached them through (an
#: import rule alone misses a service that re-exports ``end_read``).
_TRANSACTION_CALLS = {"writing", "end_read", "rollback", "commit", "begin"}


def transaction_calls(source: str) -> list[str]:
    """``line N: name()`` for every call of a transaction-control function in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name in _TRANSACTION_CALLS:
                found.append(f"line {node.lineno}: {name}()")
    return found


def test_views_do_no_transaction_control() -> None:
    views = [SERVER / "api", SERVER / "web", SERVER / "field"]
    offences = {
        str(path.relative_to(SERVER)): found
        for folder in views
        for path in sorted(folder.rglob("*.py"))
        if (found := transaction_calls(path.read_text(encoding="utf-8")))
    }
    assert offences == {}
    # The check finds each spelling a view could use.
    assert transaction_calls("from server.services.sync import end_read\nend_read()\n") == [
        "line 2: end_read()"
    ]
    assert transaction_calls("with database.writing():\n    pass\n") == ["line 1: writing()"]
    assert transaction_calls("db.session.rollback()\n") == ["line 1: rollback()"]
