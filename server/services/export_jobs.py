"""Large exports in the background: checked and audited like a download, written by a worker.

:func:`start` applies exactly the rules of a synchronous export (``exports.start_export``:
area scoping, masking, the unmasked right of county admins only, the audit entry) and records
a queued job; :func:`run` writes the file in the export folder, updating the job's progress as
records are read; the page polls the job and offers the file once it is done. Only the account
that started a job sees it or downloads it (another's job id looks absent), and each download
is audited too.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from server.errors import NotFound
from server.services import exports
from server.services.access import Actor, Principal
from server.services.indicators import effective_area
from server.storage import export_jobs as store
from server.storage.database import end_read, writing
from server.storage.export_jobs import ExportJobRow
from server.storage.exports import count_form_records

#: Progress is written every this many records (one small UPDATE each).
PROGRESS_EVERY = 500
#: A queued or running job whose row has not moved for this long lost its worker (the process
#: stopped): it is shown as failed, so its page stops reloading and says to start again.
STALE_AFTER = timedelta(minutes=15)


def _as_seen(job: ExportJobRow, now: datetime | None = None) -> ExportJobRow:
    now = now or datetime.now(UTC)
    if job.status in ("queued", "running") and now - job.updated_at > STALE_AFTER:
        return replace(job, status="failed", error="导出进程已中断 / the export worker stopped")
    return job


def file_path(folder: Path, job: ExportJobRow) -> Path:
    """Where a job's file lives in the export folder."""
    return Path(folder) / f"{job.id}.{job.fmt}"


def start(
    principal: Principal,
    actor: Actor,
    form_id: str,
    *,
    fmt: str,
    village: str | None = None,
    round: str | None = None,
    unmasked: bool = False,
) -> ExportJobRow:
    """Check and audit the export as :func:`exports.start_export` does, then queue a job.

    Raises what ``start_export`` raises (``unmasked_export_forbidden``, ``outside_area``,
    ``form_not_found``, a bad format).
    """
    export = exports.start_export(
        principal, actor, form_id, fmt=fmt, village=village, round=round, unmasked=unmasked
    )
    total = count_form_records(export.definition.id, export.area, round=export.round)
    with writing():
        return store.create(
            job_id=str(uuid.uuid4()),
            user_id=principal.user_id,
            area=export.area,
            form_id=export.definition.id,
            form_version=export.definition.version,
            fmt=fmt,
            round=export.round,
            masked=export.masked,
            total_records=total,
        )


def run(job_id: str, folder: Path) -> ExportJobRow | None:
    """Write a queued job's file into ``folder``, with progress; the job ends ``done`` or
    ``failed`` (its message kept), never half-written: the file appears under its final name
    only when complete. Returns the finished job (None for an unknown id)."""
    job = store.get(job_id)
    if job is None or job.status != "queued":
        return job
    with writing():
        store.update(job_id, status="running")
    target = file_path(folder, job)
    partial = target.with_suffix(target.suffix + ".part")

    seen = [0]

    def progress(count: int) -> None:
        seen[0] = count
        if count % PROGRESS_EVERY == 0:
            end_read()
            with writing():
                store.update(job_id, done_records=count)

    try:
        export = exports.prepared_export(
            job.form_id,
            job.form_version,
            job.area,
            job.round,
            masked=job.masked,
            on_record=progress,
        )
        Path(folder).mkdir(parents=True, exist_ok=True)
        if job.fmt == "csv":
            with open(partial, "wb") as handle:
                for chunk in export.csv_chunks(exports.MAIN_SHEET):
                    handle.write(chunk)
        else:
            export.write_xlsx(partial)
        os.replace(partial, target)
    except Exception as exc:  # the page shows why; the job must not stay "running"
        partial.unlink(missing_ok=True)
        end_read()
        with writing():
            store.update(
                job_id, status="failed", error=str(exc) or type(exc).__name__, finished=True
            )
        return store.get(job_id)
    end_read()
    with writing():
        store.update(job_id, status="done", done_records=seen[0], finished=True)
    return store.get(job_id)


def get(principal: Principal, job_id: str) -> ExportJobRow:
    """The principal's own job. Raises :class:`NotFound` for any other (or unknown) id."""
    job = store.get(job_id)
    if job is None or job.user_id != principal.user_id:
        raise NotFound(en=f"no export job {job_id}", zh="没有这个导出任务", code="not_found")
    return _as_seen(job)


def list_jobs(principal: Principal) -> list[ExportJobRow]:
    """The principal's newest jobs."""
    return [_as_seen(job) for job in store.list_for_user(principal.user_id)]


def download(
    principal: Principal, actor: Actor, job_id: str, folder: Path
) -> tuple[ExportJobRow, Path]:
    """The finished file of the principal's own job; audited (``export.download``).

    Raises :class:`NotFound` for another's job, one not finished, or a file since removed.
    """
    job = get(principal, job_id)
    path = file_path(folder, job)
    if job.status != "done" or not path.is_file():
        raise NotFound(en="the export is not ready", zh="导出文件尚未生成", code="not_found")
    with writing():
        actor.audit(
            "export.download",
            target_type="export_job",
            target_id=job.id,
            area_code=job.area,
            details={"form_id": job.form_id, "format": job.fmt, "masked": job.masked},
        )
    return job, path


def is_large(
    principal: Principal,
    form_id: str,
    *,
    village: str | None,
    round: str | None,
    threshold: int,
) -> bool:
    """True when the export would hold more than ``threshold`` records (so it should run in the
    background). Raises :class:`server.errors.Forbidden` (``outside_area``) like an export."""
    area = effective_area(principal, village)
    return count_form_records(form_id, area, round=round) > threshold
