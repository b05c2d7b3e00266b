"""The ``server`` command line: ``python -m server …`` or ``village-server …``.

Commands: ``init-db``, ``create-admin``, ``reset-password``, ``issue-code``, ``publish-form``,
``rotate-keys``, ``export``, ``import-roster``, ``export-roster``, ``import-department``,
``export-housing-appraisal``, ``serve``, ``backup``, ``load-households``, ``rebuild-indicators``,
``export-task-outcomes`` and ``run-round-alerts``. Each builds the app from the settings
(environment variables ``VILLAGE_SYNC_*`` / ``DATABASE_URL``); under ``flask --app server`` the
same commands run on that app.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from flask import Flask, current_app, has_app_context
from sqlalchemy.exc import OperationalError

from server.errors import ApiError
from server.services.context import EXTENSION_KEY, ServiceContext
from server.settings import SettingError

if TYPE_CHECKING:
    from server.services.bootstrap import StartReport


@contextmanager
def _app_context(**overrides: Any) -> Iterator[Flask]:
    """The app the command works on: the current one under ``flask``, else a new one."""
    if has_app_context():
        yield current_app._get_current_object()  # type: ignore[attr-defined]
        return
    from server.app import create_app
    from server.storage.database import dispose

    try:
        app = create_app(overrides or None)
    except SettingError as exc:
        raise click.ClickException(str(exc)) from None
    except OperationalError as exc:
        raise click.ClickException(f"cannot open the database: {exc.orig}") from None
    with app.app_context():
        try:
            yield app
        except OperationalError as exc:
            raise click.ClickException(f"cannot open the database: {exc.orig}") from None
        finally:
            dispose()


def _services(app: Flask) -> ServiceContext:
    """The service context the app factory built for ``app``."""
    context: ServiceContext = app.extensions[EXTENSION_KEY]
    return context


def _fail(exc: ApiError) -> NoReturn:
    raise click.ClickException(f"{exc.text} [{exc.code}] {exc.details or ''}".rstrip())


@click.group(help="Village Sync county server.")
def main() -> None:
    """Entry point of the ``village-server`` console script."""


@main.command("init-db")
def init_db() -> None:
    """Create or upgrade the database schema (runs pending migrations)."""
    from server.storage import schema
    from server.storage.database import engine

    with _app_context(MIGRATE_ON_START=False):
        revision = schema.upgrade(engine())
        click.echo(f"database at schema revision {revision}")


@main.command("create-admin")
@click.option("--username", required=True, help="Login name of the new account.")
@click.option(
    "--role",
    type=click.Choice(["county_admin", "township_reviewer"]),
    default="county_admin",
    show_default=True,
)
@click.option("--area", default="", help="Area code prefix: 6-digit county or 9-digit township.")
@click.option("--password", default=None, help="Password (default: a random one, printed).")
def create_admin(username: str, role: str, area: str, password: str | None) -> None:
    """Create an admin account (county admin or township reviewer)."""
    from server.services import auth

    with _app_context():
        shown = password or auth.new_password()
        try:
            auth.create_user(
                username=username, password=shown, role=role, area_prefix=area, actor="cli"
            )
        except ApiError as exc:
            _fail(exc)
        click.echo(f"created {role} {username}" + ("" if password else f" password: {shown}"))


@main.command("reset-password")
@click.argument("username")
@click.option("--password", default=None, help="New password (default: a random one, printed).")
def reset_password(username: str, password: str | None) -> None:
    """Set a new password for USERNAME and revoke its tokens."""
    from server.services import auth

    with _app_context():
        shown = password or auth.new_password()
        try:
            active = auth.reset_password(username, shown, actor="cli")
        except ApiError as exc:
            _fail(exc)
        click.echo(f"password of {username} reset" + ("" if password else f": {shown}"))
        if not active:
            click.echo(
                f"{username} stays disabled (an admin enables it: POST /api/v1/users/<id>/enable)"
            )


@main.command("issue-code")
@click.option("--scope", required=True, help="Village (12 digits) or township (9 digits) code.")
@click.option("--days", type=int, default=None, help="Validity in days (default: the setting).")
@click.option("--label", default="", help="A note shown in the admin list (team, tablet).")
def issue_code(scope: str, days: int | None, label: str) -> None:
    """Issue a one-time enrollment code and print it (it is stored hashed)."""
    from server.services import enrollment
    from server.services.access import CLI_ACTOR

    with _app_context() as app:
        try:
            issued = enrollment.issue_code(
                _services(app), scope, days=days, actor=CLI_ACTOR, label=label
            )
        except ApiError as exc:
            _fail(exc)
        click.echo(f"enrollment code: {issued.code}")
        click.echo(f"scope: {issued.scope}  expires: {issued.expires_at.isoformat()}")


@main.command("load-area-names")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def load_area_names(file: Path) -> None:
    """Name townships and villages from a `code,name` CSV (all rows or none; audited)."""
    from server.services import areas
    from server.services.access import CLI_ACTOR

    with _app_context():
        try:
            count = areas.import_table(file.read_bytes(), actor=CLI_ACTOR)
        except ApiError as exc:
            for issue in (exc.details or {}).get("issues", []):
                click.echo(
                    f"row {issue['row']} {issue['column']}: {issue['message']['en']}", err=True
                )
            _fail(exc)
        click.echo(f"named {count} areas / 已导入 {count} 个名称")


@main.command("import-batch")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def import_batch(file: Path) -> None:
    """Import a device's outbox file (village-device export-outbox); importing it again
    changes nothing. The device learns the acks on its next sync."""
    from server.services import outbox_import
    from server.services.access import CLI_ACTOR

    with _app_context() as app:
        try:
            result = outbox_import.import_file(_services(app), file.read_bytes(), actor=CLI_ACTOR)
        except ApiError as exc:
            _fail(exc)
        if result.already_imported:
            click.echo(f"{file}: already imported, nothing changed (device {result.device_id})")
            click.echo("该文件已导入过，未做任何改动")
            return
        click.echo(
            f"{file}: device {result.device_id}, {result.ops_in_file} ops in the file, "
            f"{result.newly_acked} newly acknowledged"
            + (f", refused: {', '.join(result.refused)}" if result.refused else "")
        )
        click.echo(f"已导入：文件中 {result.ops_in_file} 项修改，新确认 {result.newly_acked} 项")


@main.command("publish-form")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--at", "at", default=None, help="Publish at this ISO time (with zone) instead.")
@click.option("--draft", is_flag=True, help="Only upload as a draft.")
def publish_form(file: Path, at: str | None, draft: bool) -> None:
    """Upload FILE (JSON definition or XLSForm .xlsx) and publish it."""
    from server.services import forms as form_service
    from server.services.access import CLI_ACTOR

    when = _parse_time(at) if at else None
    with _app_context():
        try:
            if file.suffix.lower() == ".xlsx":
                document, source = (
                    form_service.document_from_xlsform(file.read_bytes(), file.name),
                    "xlsform",
                )
            else:
                document, source = json.loads(file.read_text(encoding="utf-8")), "json"
            row = form_service.upload_draft(document, actor=CLI_ACTOR, source=source)
            if not draft:
                row = form_service.publish(row.form_id, row.version, actor=CLI_ACTOR, at=when)
        except ApiError as exc:
            for issue in exc.details.get("issues", []):
                click.echo(f"  {issue.get('path')}: {issue.get('message')}", err=True)
            _fail(exc)
        except json.JSONDecodeError as exc:
            raise click.ClickException(f"{file} is not JSON: {exc}") from None
        click.echo(f"{row.form_id} version {row.version}: {row.status}")


def _parse_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 time: {text}") from None
    if value.tzinfo is None:
        raise click.BadParameter("give a time zone, e.g. 2026-12-01T08:00+08:00")
    return value


@main.command("rotate-keys")
def rotate_keys() -> None:
    """Make a new server key pair current; older keys keep decrypting."""
    with _app_context() as app:
        ring = _services(app).keys.rotate()
        click.echo(f"current server key id: {ring.current_id} ({len(ring.bundles)} kept)")


@main.command("export")
@click.argument("form_id", metavar="FORM")
@click.option("--format", "fmt", type=click.Choice(["csv", "xlsx"]), required=True)
@click.option("--out", "target", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--village", default=None, help="Village, township or county code prefix.")
@click.option("--round", "round_", default=None, help="Only records of this survey round.")
@click.option("--sheet", default="main", show_default=True, help="CSV only: main or a repeat.")
@click.option("--unmasked", is_flag=True, help="Keep ID numbers, phones and health (audited).")
def export(
    form_id: str,
    fmt: str,
    target: Path,
    village: str | None,
    round_: str | None,
    sheet: str,
    unmasked: bool,
) -> None:
    """Write FORM's records to FILE as CSV or XLSX; sensitive fields masked unless --unmasked.

    The export is audited (actor ``cli``). FILE is created owner-only (0600): it holds personal
    data.
    """
    from server.services import exports
    from server.services.access import CLI_ACTOR, CLI_PRINCIPAL

    with _app_context():
        try:
            job = exports.start_export(
                CLI_PRINCIPAL,
                CLI_ACTOR,
                form_id,
                fmt=fmt,
                village=village,
                round=round_,
                unmasked=unmasked,
                sheet=sheet,
            )
        except ApiError as exc:
            _fail(exc)
        _create_private(target)
        if fmt == "csv":
            with target.open("wb") as handle:
                for chunk in job.csv_chunks(sheet):
                    handle.write(chunk)
        else:
            job.write_xlsx(target)
        masking = "unmasked" if unmasked else "masked"
        click.echo(f"{form_id} exported to {target} ({fmt}, {masking})")


def _create_private(target: Path) -> None:
    """Create (or truncate) ``target`` owner-only, its new parent folders 0700."""
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600))
    target.chmod(0o600)


@main.command("backup")
@click.option("--to", "target", required=True, type=click.Path(dir_okay=False, path_type=Path))
def backup(target: Path) -> None:
    """Copy the SQLite database to FILE while the server keeps running (online backup API).

    FILE is created owner-only (0600), missing folders 0700; the backup is audited.
    """
    from server.jobs import backup_to
    from server.services.access import CLI_ACTOR

    with _app_context():
        try:
            written = backup_to(target, CLI_ACTOR)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"backup written to {written} ({written.stat().st_size} bytes)")


@main.command("serve")
@click.option("--host", default=None, help="Interface to listen on (default: the HOST setting).")
@click.option("--port", type=int, default=None, help="Port (default: the PORT setting; 0 = any).")
def serve(host: str | None, port: int | None) -> None:
    """Run migrations, prepare a fresh database (admin, instruments), then serve with waitress."""
    import waitress

    from server.services.bootstrap import prepare

    with _app_context() as app:
        host = host or app.config["HOST"]
        port = app.config["PORT"] if port is None else port
        try:
            report = prepare(_services(app))
        except ApiError as exc:
            _fail(exc)
        processes = max(1, int(app.config["SERVE_PROCESSES"]))
        # Several processes share one socket bound here; their waitress servers (whose task
        # threads start when they are created) are made after the fork, one per process.
        listener = _listen(host, port) if processes > 1 else None
        options = {
            "threads": app.config["SERVE_THREADS"],
            # waitress strips X-Forwarded-* of an untrusted peer by default, before the app's
            # ProxyFix (TRUSTED_PROXIES) could read them: leave them to ProxyFix when trusted.
            "clear_untrusted_proxy_headers": int(app.config["TRUSTED_PROXIES"]) == 0,
        }
        server = None
        if listener is None:
            server = waitress.create_server(app, host=host, port=port, **options)
            bound_port = server.effective_port  # type: ignore[union-attr]
        else:
            bound_port = listener.getsockname()[1]
        url = app.config["PUBLIC_URL"] or f"http://{host}:{bound_port}"
        _print_start(report, url, app)
        # This app context lives as long as the server: a read transaction left open here by
        # the start-up would pin its snapshot, and SQLite could never checkpoint the WAL past it.
        from server.storage.database import dispose, end_read

        end_read()
        _settle_garbage_collector()
        workers: list[int] = []
        if listener is not None:
            # Connections opened by the start-up must not be shared across the fork.
            dispose()
            workers = _fork_workers(processes - 1, lambda: _serve_on(app, listener, options))
            server = waitress.create_server(app, sockets=[listener], **options)
            click.echo(f"serving with {processes} processes (pids {os.getpid()} {workers})")
            sys.stdout.flush()
        from server.jobs import start_scheduler

        scheduler = start_scheduler(app)  # None when SCHEDULER_ENABLED is off
        try:
            server.run()  # type: ignore[union-attr]
        except KeyboardInterrupt:
            click.echo("stopped")
        finally:
            if scheduler is not None:
                scheduler.shutdown(wait=False)
            _stop_workers(workers)


#: Allocations (minus deallocations) of container objects between two young-generation
#: collections; CPython's default is 700.
GC_YOUNG_THRESHOLD = 20_000


def _settle_garbage_collector() -> None:
    """Keep the cyclic garbage collector off what start-up built and out of every exchange.

    Measured under ``bench ingest`` (``gc.callbacks``, thread CPU): the collector took 11-13 %
    of the server's CPU, most of it in full collections walking the ~160,000 objects start-up
    leaves (modules, SQLAlchemy metadata, form definitions), the rest in ~300 young
    collections of an exchange's short-lived dicts. Frozen, those objects are never walked
    again (and stay shared, untouched, with forked workers); with a young threshold of
    20,000 a sync phase ran 3 collections instead of 300: ~1 % of its CPU. Cycles still get
    collected, a little later.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def _listen(host: str, port: int) -> Any:
    """A listening TCP socket on ``host``:``port`` (port 0: a free one), for worker processes."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=1024)


def _serve_on(app: Flask, listener: Any, options: dict[str, Any]) -> None:
    import waitress

    waitress.create_server(app, sockets=[listener], **options).run()


def _fork_workers(count: int, serve: Any) -> list[int]:
    """Fork ``count`` processes that run ``serve`` and end when this process ends.

    A worker watches its parent: if the parent is gone (SIGKILL included, when no cleanup
    runs), it exits, so no orphan keeps answering on the port after a restart.
    """
    import threading
    import time

    parent = os.getpid()
    pids = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:

            def watch() -> None:
                while os.getppid() == parent:
                    time.sleep(0.5)
                os._exit(0)

            threading.Thread(target=watch, daemon=True).start()
            try:
                serve()
            finally:
                os._exit(0)
        pids.append(pid)
    return pids


def _stop_workers(pids: list[int]) -> None:
    import signal

    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


@main.command("load-households")
@click.argument("file", type=click.File("r", encoding="utf-8"))
def load_households(file: Any) -> None:
    """Load households from a JSON Lines FILE (``-`` for stdin) through the ingest rules.

    One household a line: {"village_code", "household_no", "round", "records": {form id:
    data}}. Records are validated and merged as a tablet's would be (refused ones go to the
    quarantine), and the dashboard rows are kept in the same transactions.
    """
    from server.services.household_load import load_households as load

    with _app_context():
        try:
            report = load(
                file,
                progress=lambda r: click.echo(
                    f"  {r.households} households, {r.records} records", err=True
                ),
            )
        except ApiError as exc:
            _fail(exc)
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(report.statuses.items()))
    click.echo(f"loaded {report.households} households, {report.records} records ({statuses})")
    for number, message in report.bad_lines[:20]:
        click.echo(f"  line {number} skipped: {message}", err=True)
    if report.bad_lines:
        raise click.ClickException(f"{len(report.bad_lines)} lines could not be read")


@main.command("rebuild-indicators")
def rebuild_indicators() -> None:
    """Recompute every household's dashboard rows (after an upgrade, or to check)."""
    from server.services import indicators

    with _app_context():
        done = indicators.rebuild(progress=lambda n: click.echo(f"  {n} households", err=True))
    click.echo(f"rebuilt the indicator rows of {done} households")


@main.command("run-round-alerts")
@click.option("--round", "round_", required=True, help="The survey round, e.g. 2026-11.")
@click.option("--area", default="", help="Only villages under this code prefix (default all).")
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
def run_round_alerts(round_: str, area: str, as_json: bool) -> None:
    """Compare a round with each household's previous round (收入骤减、支出骤增 and problems
    new / persisting / resolved); store the run and open the verification tasks."""
    from server.services import round_alerts
    from server.services.access import CLI_ACTOR

    with _app_context() as app:
        try:
            result = round_alerts.run_round_alerts(
                round_, actor=CLI_ACTOR, area=area or None, ctx=_services(app)
            )
        except ApiError as exc:
            _fail(exc)
    run = result["run"]
    if as_json:
        click.echo(json.dumps(result, ensure_ascii=False, indent=2))
        return
    verb = "stored run" if result["created"] else "unchanged since run"
    reasons = ", ".join(f"{k} {v}" for k, v in run["counts"]["reasons"].items())
    click.echo(
        f"{verb} {run['id']} of round {run['round']}: {run['households']} households, "
        f"{run['counts']['compared']} with a previous round, {run['signals']} signals ({reasons})"
    )


def _print_start(report: StartReport, url: str, app: Flask) -> None:
    click.echo("Village Sync county server 县级服务器")
    click.echo(f"  database:  {_safe_url(app.config['DATABASE_URL'])}")
    click.echo(f"  server key id: {report.key_id}" + (" (new)" if report.keys_created else ""))
    for form_id, version in report.published_forms:
        click.echo(f"  published built-in form {form_id} v{version}")
    if report.first_start:
        click.echo(
            "First start — admin login (shown once, keep it) 首次启动管理员账号（仅显示一次）:"
        )
        click.echo(f"  URL:       {url}")
        click.echo(f"  username:  {report.admin_username}")
        if sys.stdout.isatty():
            click.echo(f"  password:  {report.admin_password}")
        else:
            # Not a terminal: stdout ends up in service logs, so the password goes to a file
            # only the server account can read.
            where = _write_password_file(app, report.admin_password or "")
            click.echo(f"  password file: {where}  (mode 0600; delete it after the first login)")
        click.echo(
            f"Open {url} in a browser, log in and change this password at {url}/password "
            "在浏览器中打开上面的地址登录，并立即修改密码"
        )
    else:
        click.echo(
            f"Admin account exists. To reset its password: "
            f"python -m server reset-password {report.admin_username}"
        )
    click.echo(f"listening on {url}")
    sys.stdout.flush()


#: Where the first admin password is written when stdout is not a terminal (in the key folder).
PASSWORD_FILE = "first-admin-password"


def _write_password_file(app: Flask, password: str) -> Path:
    """Write ``password`` to ``<key folder>/first-admin-password``, mode 0600; returns the path."""
    from server.settings import resolve_key_dir

    path = resolve_key_dir(app.config) / PASSWORD_FILE
    path.unlink(missing_ok=True)  # a leftover of an earlier database: never reuse its mode
    handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(password + "\n")
    return path


def _safe_url(url: str) -> str:
    """The database URL with any password hidden."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@main.command("import-roster")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--area", required=True, help="County (6 digits) or township (9) code prefix.")
@click.option("--round", "round_", required=True, help="Survey round, e.g. 2026-annual.")
def import_roster(file: Path, area: str, round_: str) -> None:
    """Import a roster workbook in the national system's layout (audited, actor ``cli``).

    Rows outside AREA, with a bad ID number or listed twice are printed, not imported; running
    it again with the same file changes nothing.
    """
    from server.services import roster_import
    from server.services.access import CLI_ACTOR

    with _app_context():
        try:
            report = roster_import.import_roster(
                CLI_ACTOR, file.read_bytes(), round=round_, area=area
            )
        except ApiError as exc:
            _fail(exc)
        click.echo(
            f"households created {len(report.created)}, changed {len(report.changed)}, "
            f"unchanged {len(report.unchanged)}; people {report.people}; "
            f"problems {len(report.problems)}"
        )
        for problem in report.problems:
            where = f"第{problem.row}行" + (f"「{problem.column}」" if problem.column else "")
            click.echo(
                f"  {where} [{problem.code}] {problem.message['zh']} / {problem.message['en']}"
            )


@main.command("export-roster")
@click.option("--area", required=True, help="County (6 digits) or township (9) code prefix.")
@click.option("--round", "round_", required=True, help="Survey round, e.g. 2026-annual.")
@click.option("--out", "target", required=True, type=click.Path(dir_okay=False, path_type=Path))
def export_roster(area: str, round_: str, target: Path) -> None:
    """Write the roster of AREA in the national system's layout to FILE (unmasked, audited).

    FILE is created owner-only (0600): it holds ID numbers.
    """
    from server.services import roster_import
    from server.services.access import CLI_ACTOR, CLI_PRINCIPAL

    with _app_context():
        try:
            content = roster_import.export_roster(CLI_PRINCIPAL, CLI_ACTOR, area=area, round=round_)
        except ApiError as exc:
            _fail(exc)
        _create_private(target)
        target.write_bytes(content)
        click.echo(f"roster of {area} ({round_}) written to {target}")


@main.command("import-department")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--department", required=True, help="medical_insurance, education, disability, …")
@click.option("--period", required=True, help="The list's month, e.g. 2026-11.")
@click.option("--as-of", "as_of", required=True, help="The date the list is as of, 2026-11-30.")
@click.option("--area", required=True, help="County (6 digits), township (9) or village (12).")
@click.option(
    "--mapping",
    "mapping_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON {field: header} to save as the department's column mapping first.",
)
def import_department(
    file: Path, department: str, period: str, as_of: str, area: str, mapping_file: Path | None
) -> None:
    """Import a department list (医保, 教育, 残联 …) as a round (audited, actor ``cli``).

    Rows that match no household are printed with their Excel row and why; running it again
    with the same file changes nothing (and hands over signals the task service missed).
    """
    from server.services import department_lists
    from server.services.access import CLI_ACTOR, CLI_PRINCIPAL

    columns = json.loads(mapping_file.read_text(encoding="utf-8")) if mapping_file else None
    with _app_context() as app:
        try:
            result = department_lists.import_department_list(
                _services(app),
                CLI_ACTOR,
                file.read_bytes(),
                department=department,
                period=period,
                as_of=as_of,
                area=area,
                file_name=file.name,
                columns=columns,
            )
        except ApiError as exc:
            _fail(exc)
        counts = result.counts
        if result.already_imported:
            click.echo(f"already imported as round {result.round_id}: nothing changed")
        click.echo(
            f"round {result.round_id}: rows {counts.get('rows', 0)}, matched "
            f"{counts.get('matched', 0)} ({counts.get('matched_by_name_birth_village', 0)} by "
            f"name + birth date + village), unmatched {counts.get('unmatched', 0)}; "
            f"households with findings {result.households_signalled}"
        )
        if result.signals_delivered:
            click.echo("tasks handed over to the task service")
        if not result.already_imported:
            rows, _ = department_lists.round_rows(
                _services(app), CLI_PRINCIPAL, CLI_ACTOR, result.round_id, limit=1000
            )
            for row in rows:
                click.echo(
                    f"  第{row.excel_row}行 [{row.problem}] {row.name} {row.id_number} "
                    f"{row.message['zh']} / {row.message['en']}"
                )


@main.command("export-housing-appraisal")
@click.option("--area", required=True, help="County (6 digits), township (9) or village (12).")
@click.option("--out", "target", required=True, type=click.Path(dir_okay=False, path_type=Path))
def export_housing_appraisal(area: str, target: Path) -> None:
    """Write the households of AREA whose house is not known safe, for 住建 to appraise (an
    .xlsx; the file with the grades filled in imports with ``import-department --department
    housing``). FILE is created owner-only (0600): it holds ID numbers. Audited."""
    from server.services import department_lists
    from server.services.access import CLI_ACTOR, CLI_PRINCIPAL

    with _app_context():
        try:
            content, listed = department_lists.housing_appraisal_list(
                CLI_PRINCIPAL, CLI_ACTOR, area=area
            )
        except ApiError as exc:
            _fail(exc)
        _create_private(target)
        target.write_bytes(content)
        click.echo(f"{listed} households to appraise in {area} written to {target}")


@main.command("export-task-outcomes")
@click.option(
    "--department",
    required=True,
    help="medical_insurance, civil_affairs, education, disability, human_resources, housing, "
    "public_security or emergency.",
)
@click.option("--area", default="", help="Area code prefix (empty: the whole database).")
@click.option("--format", "fmt", type=click.Choice(["csv", "xlsx"]), default="csv")
@click.option("--out", "target", required=True, type=click.Path(dir_okay=False, path_type=Path))
def export_task_outcomes(department: str, area: str, fmt: str, target: Path) -> None:
    """Write the verification-task outcomes for one department to FILE (audited): one row per
    reason that department's list gave, with the task's status and the village's outcome."""
    from server.services import tasks
    from server.services.access import CLI_ACTOR

    with _app_context():
        try:
            content = tasks.export_outcomes(CLI_ACTOR, department, area_prefix=area, fmt=fmt)
        except ApiError as exc:
            _fail(exc)
        _create_private(target)
        target.write_bytes(content)
        click.echo(f"task outcomes for {department} written to {target}")


def register_commands(app: Flask) -> None:
    """Expose the same commands under ``flask --app server …``."""
    for command in main.commands.values():
        app.cli.add_command(command)
