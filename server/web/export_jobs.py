"""Background exports: start one, watch its progress (the page refreshes itself with
``<meta refresh>``, since the pages run no script), download the file when it is done."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from flask import Flask, current_app, redirect, render_template, request, send_file, url_for

from server.errors import ApiError
from server.services import export_jobs
from server.services import forms as form_service
from server.services.access import Principal
from server.settings import resolve_export_dir
from server.web.base import actor_of, blueprint, signed_in, zh_message

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
#: Seconds between the progress page's reloads.
REFRESH_SECONDS = 2


def export_folder() -> Path:
    """The export folder of this app."""
    return resolve_export_dir(current_app.config)


def _work(app: Flask, job_id: str, folder: Path) -> None:
    with app.app_context():
        export_jobs.run(job_id, folder)


def start_worker(job_id: str) -> threading.Thread:
    """Run the job on a worker thread of this process, in its own app context."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    worker = threading.Thread(
        target=_work, args=(app, job_id, export_folder()), name=f"export-{job_id[:8]}", daemon=True
    )
    worker.start()
    return worker


def start_background(principal: Principal, form_id: str, fmt: str) -> Any:
    """Queue the export the query string describes and send the browser to its page."""
    job = export_jobs.start(
        principal,
        actor_of(principal),
        form_id,
        fmt=fmt,
        village=(request.values.get("village") or "").strip() or None,
        round=(request.values.get("round") or "").strip() or None,
        unmasked=request.values.get("unmasked") == "1",
    )
    start_worker(job.id)
    return redirect(url_for("web.export_job", job_id=job.id))


@blueprint.post("/exports/<string:form_id>.<any(csv, xlsx):fmt>/background")
@signed_in()
def background_export(principal: Principal, form_id: str, fmt: str) -> Any:
    """Start a background export (same checks, masking and audit as a download)."""
    try:
        return start_background(principal, form_id, fmt)
    except ApiError as exc:
        page = render_template(
            "exports.html",
            forms=form_service.list_forms(),
            jobs=export_jobs.list_jobs(principal),
            error=zh_message(exc),
        )
        return page, 404 if exc.code == "outside_area" else exc.status


@blueprint.get("/exports/jobs/<string:job_id>")
@signed_in()
def export_job(principal: Principal, job_id: str) -> Any:
    """A job's progress; reloads itself until it is done or failed."""
    job = export_jobs.get(principal, job_id)
    return render_template(
        "export_job.html",
        job=job,
        refresh=REFRESH_SECONDS if job.status in ("queued", "running") else None,
    )


@blueprint.get("/exports/jobs/<string:job_id>/file")
@signed_in()
def export_job_file(principal: Principal, job_id: str) -> Any:
    """The finished file (audited)."""
    job, path = export_jobs.download(principal, actor_of(principal), job_id, export_folder())
    return send_file(
        path,
        mimetype=XLSX_TYPE if job.fmt == "xlsx" else "text/csv; charset=utf-8",
        as_attachment=True,
        download_name=f"{job.form_id}.{job.fmt}",
    )
