"""Large exports run in the background: a job row, a worker thread, a progress page that
reloads itself, a download link; scoped, masked and audited exactly like a download."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import openpyxl
import pytest
from flask import Flask

from forms.instruments.samples import problem_household, sample_household
from server.services import forms as form_service
from tests.server.conftest import make_app
from tests.server.survey_data import store_household
from tests.web.conftest import Browser, add_account, text

V1, V2, FAR = "530102001201", "530102001202", "530102002301"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    """Every export of more than one record goes to the background."""
    application = make_app(
        f"sqlite:///{tmp_path / 'county.db'}",
        tmp_path,
        EXPORT_BACKGROUND_RECORDS=1,
        EXPORT_DIR=str(tmp_path / "exports"),
    )
    with application.app_context():
        form_service.publish_builtins()
    for village, number, household in [
        (V1, "H1", sample_household(3, village_code=V1)),
        (V2, "H2", problem_household("dangerous_house", 4, village_code=V2)),
        (FAR, "H9", sample_household(6, village_code=FAR)),
    ]:
        store_household(application, household, village_code=village, household_no=number)
    yield application
    with application.app_context():
        from server.storage.database import db

        db.engine.dispose()


def _finished(browser: Browser, location: str) -> str:
    """The job page once the worker is done (the page the browser would reload to)."""
    for _ in range(400):
        page = text(browser.get(location))
        if 'data-status="done"' in page or 'data-status="failed"' in page:
            return page
        assert '<meta http-equiv="refresh"' in page  # still running: the page reloads itself
        time.sleep(0.05)
    raise AssertionError("the export job did not finish")


def _file(browser: Browser, location: str) -> bytes:
    """The finished job's file (the response is closed, as a browser closes the download)."""
    response = browser.get(location + "/file")
    try:
        assert response.status_code == 200
        return response.get_data()
    finally:
        response.close()


def test_a_large_download_runs_in_the_background_masked_and_audited(
    app: Flask, admin: Browser
) -> None:
    started = admin.get("/exports/household_roster.xlsx")
    assert started.status_code == 302 and "/exports/jobs/" in started.location
    page = _finished(admin, started.location)
    assert "已处理 3 / 3 条记录" in page and '<meta http-equiv="refresh"' not in page
    book = openpyxl.load_workbook(io.BytesIO(_file(admin, started.location)), read_only=True)
    main = list(book.worksheets[0].iter_rows(values_only=True))
    assert sorted(row[2] for row in main[1:]) == ["H1", "H2", "H9"]
    members = list(book.worksheets[1].iter_rows(values_only=True))
    assert any(isinstance(c, str) and "*" in c for row in members[1:] for c in row)
    assert "我的后台导出" in text(admin.get("/exports"))
    assert "export.download" in text(admin.get("/audit?action=export.download"))
    assert "household_roster" in text(admin.get("/audit?action=export"))


def test_a_reviewer_s_background_export_holds_only_its_township_and_stays_its_own(
    app: Flask, admin: Browser, browser_for: Callable[[str], Browser]
) -> None:
    add_account(app, "reviewer", "township_reviewer", "530102001")
    reviewer = browser_for("reviewer")
    started = reviewer.post("/exports/household_roster.xlsx/background", {"unmasked": ""})
    assert started.status_code == 302
    assert "已处理 2 / 2 条记录" in _finished(reviewer, started.location)
    book = openpyxl.load_workbook(io.BytesIO(_file(reviewer, started.location)), read_only=True)
    rows = list(book.worksheets[0].iter_rows(values_only=True))
    assert sorted(row[2] for row in rows[1:]) == ["H1", "H2"]
    # Another account's job looks absent, page and file alike.
    assert admin.get(started.location).status_code == 404
    assert admin.get(started.location + "/file").status_code == 404
    unmasked = reviewer.post("/exports/household_roster.xlsx/background", {"unmasked": "1"})
    assert unmasked.status_code == 403 and "只有县级管理员" in text(unmasked)
    outside = reviewer.post("/exports/household_roster.xlsx/background", {"village": FAR})
    assert outside.status_code == 404
    refused = reviewer.post("/exports/household_roster.xlsx/background", {}, csrf=False)
    assert refused.status_code == 400


def test_a_county_admin_s_unmasked_background_export_is_audited_as_such(
    app: Flask, admin: Browser
) -> None:
    started = admin.post(
        "/exports/household_roster.csv/background", {"unmasked": "1", "village": V1}
    )
    page = _finished(admin, started.location)
    assert "未脱敏" in page
    csv = _file(admin, started.location).decode("utf-8-sig")
    assert "记录ID" in csv and "H1" in csv and "H2" not in csv
    assert "household_roster" in text(admin.get("/audit?action=export.unmasked"))
