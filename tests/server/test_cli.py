"""The ``server`` command line, and ``serve`` as a real process over real HTTP."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

import forms
from forms.instruments import builtin_json
from server.cli import main
from server.storage import schema

ROOT = Path(__file__).resolve().parents[2]
XLSX_DIR = Path(forms.__file__).resolve().parent / "instruments" / "xlsx"


@pytest.fixture
def cli_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "VILLAGE_SYNC_DATABASE_URL": database_url,
        "VILLAGE_SYNC_KEY_DIR": str(tmp_path / "keys"),
    }


def run(env: dict[str, str], *args: str) -> str:
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_init_db_create_admin_issue_code_and_publish(cli_env: dict, tmp_path: Path) -> None:
    head = schema.head_revision()
    assert f"schema revision {head}" in run(cli_env, "init-db")
    assert f"schema revision {head}" in run(cli_env, "init-db")
    out = run(cli_env, "create-admin", "--username", "chen")
    password = re.search(r"password: (\S+)", out).group(1)
    assert len(password) >= 10
    out = run(
        cli_env,
        "create-admin",
        "--username",
        "li",
        "--role",
        "township_reviewer",
        "--area",
        "530102001",
        "--password",
        "a-long-password",
    )
    assert "password" not in out
    failed = CliRunner().invoke(main, ["create-admin", "--username", "li"], env=cli_env)
    assert failed.exit_code != 0 and "username_taken" in failed.output

    out = run(cli_env, "issue-code", "--scope", "530102001201", "--days", "3")
    assert re.search(r"enrollment code: [A-Z2-9]{4}(-[A-Z2-9]{4}){3}", out)
    bad = CliRunner().invoke(main, ["issue-code", "--scope", "53"], env=cli_env)
    assert bad.exit_code != 0 and "validation_failed" in bad.output

    definition = tmp_path / "housing.json"
    definition.write_text(json.dumps(builtin_json("housing_safety")), encoding="utf-8")
    assert "housing_safety version 1: published" in run(cli_env, "publish-form", str(definition))
    xlsx = XLSX_DIR / "drinking_water.xlsx"
    assert "drinking_water version 1: draft" in run(cli_env, "publish-form", "--draft", str(xlsx))
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"id": "x", "version": 1}), encoding="utf-8")
    refused = CliRunner().invoke(main, ["publish-form", str(broken)], env=cli_env)
    assert refused.exit_code != 0 and "form_invalid" in refused.output

    out = run(cli_env, "reset-password", "chen")
    assert re.search(r"password of chen reset: \S+", out)
    first = run(cli_env, "rotate-keys")
    second = run(cli_env, "rotate-keys")
    assert "(1 kept)" in first and "(2 kept)" in second


def test_backup_copies_a_live_sqlite_database(sqlite_url: str, tmp_path: Path) -> None:
    env = {"VILLAGE_SYNC_DATABASE_URL": sqlite_url, "VILLAGE_SYNC_KEY_DIR": str(tmp_path / "k")}
    run(env, "create-admin", "--username", "chen")
    target = tmp_path / "backups" / "county-copy.db"
    assert "backup written" in run(env, "backup", "--to", str(target))
    with sqlite3.connect(target) as copy:
        assert copy.execute("select username from users").fetchall() == [("chen",)]
        assert copy.execute("pragma integrity_check").fetchone() == ("ok",)
    copy.close()
    # The copy holds ID numbers and password hashes: owner-only, in an owner-only folder.
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    # An existing world-readable file is made owner-only before it is overwritten.
    again = tmp_path / "again.db"
    again.write_bytes(b"")
    again.chmod(0o644)
    run(env, "backup", "--to", str(again))
    assert stat.S_IMODE(again.stat().st_mode) == 0o600
    with sqlite3.connect(again) as copy:
        audited = copy.execute(
            "select actor, target_id from audit_log where action = 'database.backup'"
        ).fetchall()
    copy.close()
    assert audited == [("cli", str(target))]  # the first backup, audited after its copy


def test_bad_settings_are_reported_without_a_traceback(tmp_path: Path) -> None:
    env = {"VILLAGE_SYNC_DATABASE_URL": f"sqlite:///{tmp_path}/c.db", "VILLAGE_SYNC_PORT": "x"}
    result = CliRunner().invoke(main, ["init-db"], env=env)
    assert result.exit_code == 1 and "PORT: expected an integer" in result.output
    env = {
        "VILLAGE_SYNC_DATABASE_URL": f"sqlite:///{tmp_path}/c.db",
        "VILLAGE_SYNC_KEY_DIR": str(tmp_path / "keys"),
        "VILLAGE_SYNC_COUNTY_CODE": "53",
    }
    result = CliRunner().invoke(main, ["serve", "--port", "0"], env=env)
    assert result.exit_code == 1 and "area_prefix" in result.output


def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    env = {"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"}
    result = CliRunner().invoke(main, ["init-db"], env=env)
    assert result.exit_code == 1 and "cannot open the database" in result.output


def test_backup_refuses_postgresql(postgres_url: str, tmp_path: Path) -> None:
    env = {"VILLAGE_SYNC_DATABASE_URL": postgres_url, "VILLAGE_SYNC_KEY_DIR": str(tmp_path)}
    result = CliRunner().invoke(main, ["backup", "--to", str(tmp_path / "x.db")], env=env)
    assert result.exit_code != 0 and "pg_dump" in result.output


def _start_server(
    tmp_path: Path, *, terminal: bool = False
) -> tuple[subprocess.Popen, dict[str, str]]:
    """Start ``serve`` with its output into a pipe (as under a service manager, into logs) or,
    with ``terminal``, into a real pseudo-terminal."""
    env = {
        **os.environ,
        "VILLAGE_SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'var' / 'county.db'}",
        "VILLAGE_SYNC_SERVE_THREADS": "2",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DATABASE_URL", None)
    command = [sys.executable, "-m", "server", "serve", "--host", "127.0.0.1", "--port", "0"]
    if terminal:
        import pty

        leader, follower = pty.openpty()
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdin=follower, stdout=follower, stderr=follower
        )
        os.close(follower)
        output = open(leader, encoding="utf-8", errors="replace", newline=None)
    else:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert process.stdout is not None
        output = process.stdout
    printed: dict[str, str] = {}
    lines: list[str] = []
    for line in output:
        line = line.replace("\r", "")
        lines.append(line)
        match = re.match(r"\s+password file:\s+(\S+)", line)
        if match:
            printed["password_file"] = match.group(1)
        for key in ("URL", "username", "password"):
            match = re.match(rf"\s+{key}:\s+(\S+)", line)
            if match:
                printed[key] = match.group(1)
        if line.startswith("listening on "):
            printed["listening"] = line.split()[-1]
            break
    if terminal:
        output.close()
    if "listening" not in printed:
        process.kill()
        raise AssertionError("server did not start:\n" + "".join(lines))
    printed["output"] = "".join(lines)
    return process, printed


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    finally:
        if process.stdout:
            process.stdout.close()


def _http(url: str, body: dict | None = None, token: str | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_serve_prints_the_admin_login_and_serves_the_builtins(tmp_path: Path) -> None:
    """Under a service manager stdout goes to the logs: the first admin password goes to an
    owner-only file whose path is printed, never to stdout (leak 12)."""
    process, printed = _start_server(tmp_path)
    try:
        url = printed["URL"]
        assert url == printed["listening"]
        assert "password" not in printed
        secret = Path(printed["password_file"])
        assert stat_mode(secret) == 0o600
        password = secret.read_text(encoding="utf-8").strip()
        assert len(password) >= 10 and password not in printed["output"]
        token = _http(
            f"{url}/api/v1/auth/login",
            {"username": printed["username"], "password": password},
        )["token"]
        published = _http(f"{url}/api/v1/forms", token=token)
        assert sorted(f["form_id"] for f in published) == sorted(
            (*forms.instruments.BUILTIN_IDS, *forms.instruments.SYSTEM_IDS)
        )
        assert all(f["versions"][0]["status"] == "published" for f in published)
    finally:
        _stop(process)
    assert stat_mode(tmp_path / "var" / "keys") == 0o700

    process, printed = _start_server(tmp_path)
    try:
        assert "password" not in printed
        assert "reset-password admin" in printed["output"]
        again = _http(f"{printed['listening']}/api/v1/openapi.json")
        assert "/api/v1/devices/enroll" in again["paths"]
    finally:
        _stop(process)


def test_serve_on_a_terminal_prints_the_admin_password_once(tmp_path: Path) -> None:
    process, printed = _start_server(tmp_path, terminal=True)
    try:
        assert "password_file" not in printed
        token = _http(
            f"{printed['listening']}/api/v1/auth/login",
            {"username": printed["username"], "password": printed["password"]},
        )["token"]
        assert token
    finally:
        _stop(process)
    assert not list((tmp_path / "var").rglob("*password*"))


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.mark.parametrize("url", ["mysql://root:secret@localhost/county", "not a url"])
@pytest.mark.parametrize("command", ["serve", "init-db"])
def test_an_unsupported_database_url_is_one_clear_line(
    tmp_path: Path, url: str, command: str
) -> None:
    env = {"VILLAGE_SYNC_DATABASE_URL": url, "VILLAGE_SYNC_KEY_DIR": str(tmp_path / "keys")}
    result = CliRunner().invoke(main, [command], env=env)
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "unsupported database URL" in lines[0], result.output
    assert "secret" not in result.output


def test_load_area_names_names_all_rows_or_reports_each_bad_one(
    cli_env: dict, tmp_path: Path
) -> None:
    run(cli_env, "init-db")
    table = tmp_path / "names.csv"
    table.write_text("530102001,太平镇\n530102001201,小寨村\n", encoding="utf-8")
    assert "named 2 areas" in run(cli_env, "load-area-names", str(table))
    table.write_text("530102001,太平镇\n12x,坏\n", encoding="utf-8")
    refused = CliRunner().invoke(main, ["load-area-names", str(table)], env=cli_env)
    assert refused.exit_code != 0
    assert "row 2 A: an area code is 6, 9 or 12 digits" in refused.output
    assert "area_names_invalid" in refused.output


def test_serve_freezes_what_start_up_built_and_collects_young_objects_less_often() -> None:
    import gc

    from server.cli import GC_YOUNG_THRESHOLD, _settle_garbage_collector

    threshold = gc.get_threshold()
    try:
        _settle_garbage_collector()
        assert gc.get_freeze_count() > 10_000  # this test process's modules, at least
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *threshold[1:])
        # A cycle made afterwards is still collected.
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
