"""Background export jobs: created by a request, advanced by a worker thread, read by pages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from server.storage.database import db
from server.storage.models import ExportJob
from server.storage.types import utcnow


@dataclass(frozen=True)
class ExportJobRow:
    """One job as the service hands it on."""

    id: str
    user_id: int
    area: str
    form_id: str
    form_version: int
    fmt: str
    round: str | None
    masked: bool
    status: str
    done_records: int
    total_records: int
    error: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


def _row(job: ExportJob) -> ExportJobRow:
    return ExportJobRow(
        job.id,
        job.user_id,
        job.area,
        job.form_id,
        job.form_version,
        job.fmt,
        job.round,
        job.masked,
        job.status,
        job.done_records,
        job.total_records,
        job.error,
        job.created_at,
        job.updated_at,
        job.finished_at,
    )


def create(
    *,
    job_id: str,
    user_id: int,
    area: str,
    form_id: str,
    form_version: int,
    fmt: str,
    round: str | None,
    masked: bool,
    total_records: int,
) -> ExportJobRow:
    """Add a queued job (inside a write transaction)."""
    now = utcnow()
    job = ExportJob(
        id=job_id,
        user_id=user_id,
        area=area,
        form_id=form_id,
        form_version=form_version,
        fmt=fmt,
        round=round,
        masked=masked,
        status="queued",
        done_records=0,
        total_records=total_records,
        error="",
        created_at=now,
        updated_at=now,
    )
    db.session.add(job)
    db.session.flush()
    return _row(job)


def get(job_id: str) -> ExportJobRow | None:
    """The job, or None."""
    job = db.session.get(ExportJob, job_id)
    return _row(job) if job is not None else None


def list_for_user(user_id: int, *, limit: int = 20) -> list[ExportJobRow]:
    """The user's newest jobs first."""
    rows = db.session.scalars(
        sa.select(ExportJob)
        .where(ExportJob.user_id == user_id)
        .order_by(ExportJob.created_at.desc(), ExportJob.id)
        .limit(limit)
    )
    return [_row(r) for r in rows]


def update(
    job_id: str,
    *,
    status: str | None = None,
    done_records: int | None = None,
    error: str | None = None,
    finished: bool = False,
) -> None:
    """Advance a job (inside a write transaction)."""
    now = utcnow()
    values: dict[str, object] = {"updated_at": now}
    if status is not None:
        values["status"] = status
    if done_records is not None:
        values["done_records"] = done_records
    if error is not None:
        values["error"] = error[:500]
    if finished:
        values["finished_at"] = now
    db.session.execute(sa.update(ExportJob).where(ExportJob.id == job_id).values(**values))
