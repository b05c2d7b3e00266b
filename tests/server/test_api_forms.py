"""Form publishing over HTTP: JSON and XLSForm drafts, located errors, publish, schedule, retire."""

from __future__ import annotations

import copy
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

import forms
from forms.instruments import builtin_json
from server.services import forms as form_service
from tests.server.conftest import assert_error

XLSX_DIR = Path(forms.__file__).resolve().parent / "instruments" / "xlsx"


@pytest.fixture
def housing() -> dict:
    return copy.deepcopy(builtin_json("housing_safety"))


def test_upload_json_draft_then_publish(
    client: FlaskClient, admin_headers: dict[str, str], housing: dict
) -> None:
    created = client.post("/api/v1/forms", json=housing, headers=admin_headers)
    assert created.status_code == 201, created.json
    assert created.json["status"] == "draft" and created.json["version"] == 1
    published = client.post(
        "/api/v1/forms/housing_safety/versions/1/publish", headers=admin_headers
    )
    assert published.status_code == 200 and published.json["status"] == "published"
    assert published.json["published_at"] is not None
    again = client.post("/api/v1/forms/housing_safety/versions/1/publish", headers=admin_headers)
    assert_error(again, 409, "form_not_publishable")
    one = client.get("/api/v1/forms/housing_safety/versions/1", headers=admin_headers).json
    assert one["definition"] == forms.dump_definition(forms.load_definition(housing))
    listing = client.get("/api/v1/forms", headers=admin_headers).json
    assert [(f["form_id"], [v["status"] for v in f["versions"]]) for f in listing] == [
        ("housing_safety", ["published"])
    ]


def test_invalid_definition_is_422_with_located_issues(
    client: FlaskClient, admin_headers: dict[str, str], housing: dict
) -> None:
    first, second = housing["fields"][0]["name"], housing["fields"][1]["name"]
    bad_type = copy.deepcopy(housing)
    bad_type["fields"][0]["type"] = "telepathy"
    error = assert_error(
        client.post("/api/v1/forms", json=bad_type, headers=admin_headers), 422, "form_invalid"
    )
    assert [i["path"] for i in error["details"]["issues"]] == [f"fields/{first}/type"]

    bad_reference = copy.deepcopy(housing)
    bad_reference["fields"][1]["relevant"] = "${nowhere} = 1"
    error = assert_error(
        client.post("/api/v1/forms", json=bad_reference, headers=admin_headers),
        422,
        "form_invalid",
    )
    issues = error["details"]["issues"]
    assert any(i["path"] == f"fields/{second}/relevant" for i in issues), issues
    assert all({"path", "code", "message"} <= set(i) for i in issues)
    assert client.get("/api/v1/forms", headers=admin_headers).json == []


def test_versions_only_go_up_and_published_ones_are_frozen(
    client: FlaskClient, admin_headers: dict[str, str], housing: dict
) -> None:
    housing["version"] = 2
    assert client.post("/api/v1/forms", json=housing, headers=admin_headers).status_code == 201
    # A draft may be replaced by uploading the same version again.
    assert client.post("/api/v1/forms", json=housing, headers=admin_headers).status_code == 201
    client.post("/api/v1/forms/housing_safety/versions/2/publish", headers=admin_headers)
    frozen = client.post("/api/v1/forms", json=housing, headers=admin_headers)
    assert_error(frozen, 409, "form_version_exists")
    older = copy.deepcopy(housing) | {"version": 1}
    assert_error(
        client.post("/api/v1/forms", json=older, headers=admin_headers),
        409,
        "form_version_not_increasing",
    )


def test_scheduled_publish_waits_for_its_time(
    client: FlaskClient, app: Flask, admin_headers: dict[str, str], housing: dict
) -> None:
    client.post("/api/v1/forms", json=housing, headers=admin_headers)
    at = datetime.now(UTC) + timedelta(hours=2)
    scheduled = client.post(
        "/api/v1/forms/housing_safety/versions/1/publish",
        json={"at": at.isoformat()},
        headers=admin_headers,
    )
    assert scheduled.json["status"] == "scheduled"
    assert datetime.fromisoformat(scheduled.json["publish_at"]) == at
    naive = client.post(
        "/api/v1/forms/housing_safety/versions/1/publish",
        json={"at": "2026-12-01T08:00:00"},
        headers=admin_headers,
    )
    assert_error(naive, 400, "validation_failed")
    with app.app_context():
        assert form_service.publish_due(datetime.now(UTC)) == []
        assert form_service.publish_due(at + timedelta(seconds=1)) == [("housing_safety", 1)]
    versions = client.get("/api/v1/forms/housing_safety/versions", headers=admin_headers).json
    assert versions[0]["status"] == "published"
    actions = [e["action"] for e in client.get("/api/v1/audit", headers=admin_headers).json]
    assert actions[:2] == ["form.publish", "form.schedule"]


def test_retire(client: FlaskClient, admin_headers: dict[str, str], housing: dict) -> None:
    client.post("/api/v1/forms", json=housing, headers=admin_headers)
    client.post("/api/v1/forms/housing_safety/versions/1/publish", headers=admin_headers)
    retired = client.post("/api/v1/forms/housing_safety/versions/1/retire", headers=admin_headers)
    assert retired.json["status"] == "retired" and retired.json["retired_at"] is not None
    assert_error(
        client.post("/api/v1/forms/housing_safety/versions/1/retire", headers=admin_headers),
        409,
        "form_already_retired",
    )
    assert_error(
        client.post("/api/v1/forms/housing_safety/versions/1/publish", headers=admin_headers),
        409,
        "form_not_publishable",
    )
    assert_error(
        client.get("/api/v1/forms/housing_safety/versions/9", headers=admin_headers),
        404,
        "form_version_not_found",
    )
    assert_error(
        client.get("/api/v1/forms/nothing/versions", headers=admin_headers), 404, "form_not_found"
    )


def test_upload_xlsform_workbook(client: FlaskClient, admin_headers: dict[str, str]) -> None:
    content = (XLSX_DIR / "drinking_water.xlsx").read_bytes()
    response = client.post(
        "/api/v1/forms",
        data={"file": (io.BytesIO(content), "drinking_water.xlsx")},
        headers=admin_headers,
        content_type="multipart/form-data",
    )
    assert response.status_code == 201, response.json
    assert response.json["form_id"] == "drinking_water"
    assert response.json["source"] == "xlsform"


def test_xlsform_upload_takes_id_from_file_name_and_returns_located_warnings(
    client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    import openpyxl

    workbook = openpyxl.Workbook()
    survey = workbook.active
    survey.title = "survey"
    survey.append(["type", "name", "label", "notes"])
    survey.append(["integer", "hh_size", "Household size", "ask the head"])
    workbook.create_sheet("choices").append(["list_name", "name", "label"])
    buffer = io.BytesIO()
    workbook.save(buffer)
    response = client.post(
        "/api/v1/forms",
        data={"file": (io.BytesIO(buffer.getvalue()), "well_check.xlsx")},
        headers=admin_headers,
        content_type="multipart/form-data",
    )
    assert response.status_code == 201, response.json
    assert (response.json["form_id"], response.json["version"]) == ("well_check", 1)
    assert response.json["source"] == "xlsform"
    warnings = {w["code"]: w for w in response.json["warnings"]}
    assert warnings["id_from_file_name"]["sheet"] is None
    assert "well_check" in warnings["id_from_file_name"]["message"]["zh"]
    ignored = warnings["ignored_column"]
    assert (ignored["sheet"], ignored["row"], ignored["column"], ignored["header"]) == (
        "survey",
        1,
        "D",
        "notes",
    )
    assert "notes" in ignored["message"]["en"] and "notes" in ignored["message"]["zh"]
    stored = client.get("/api/v1/forms/well_check/versions/1", headers=admin_headers).json
    fields = stored["definition"]["fields"]
    assert [(f["name"], f["type"]) for f in fields] == [("hh_size", "integer")]


def test_json_upload_has_no_warnings(
    client: FlaskClient, admin_headers: dict[str, str], housing: dict
) -> None:
    created = client.post("/api/v1/forms", json=housing, headers=admin_headers)
    assert created.status_code == 201 and created.json["warnings"] == []


def test_broken_workbook_is_422_with_location(
    client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    response = client.post(
        "/api/v1/forms",
        data={"file": (io.BytesIO(b"PK\x03\x04 not really a zip"), "survey.xlsx")},
        headers=admin_headers,
        content_type="multipart/form-data",
    )
    error = assert_error(response, 422, "form_invalid")
    assert error["details"]["issues"][0]["code"] == "not_xlsx"


def test_workbook_errors_name_sheet_row_and_column(
    client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    import openpyxl

    workbook = openpyxl.Workbook()
    survey = workbook.active
    survey.title = "survey"
    survey.append(["type", "name", "label::zh"])
    survey.append(["text", "head_name", "户主姓名"])
    survey.append(["telepathy", "mind", "读心"])
    settings = workbook.create_sheet("settings")
    settings.append(["form_id", "version", "form_title::zh"])
    settings.append(["probe", 1, "测试"])
    content = io.BytesIO()
    workbook.save(content)
    response = client.post(
        "/api/v1/forms",
        data={"file": (io.BytesIO(content.getvalue()), "probe.xlsx")},
        headers=admin_headers,
        content_type="multipart/form-data",
    )
    error = assert_error(response, 422, "form_invalid")
    issue = error["details"]["issues"][0]
    assert (issue["sheet"], issue["row"], issue["column"], issue["code"]) == (
        "survey",
        3,
        "A",
        "unknown_type",
    )
    assert set(issue["message"]) == {"zh", "en"}


def test_upload_needs_a_document(client: FlaskClient, admin_headers: dict[str, str]) -> None:
    assert_error(
        client.post("/api/v1/forms", data="[]", headers=admin_headers), 400, "validation_failed"
    )
    text = client.post(
        "/api/v1/forms",
        data={"file": (io.BytesIO(b"not json"), "form.json")},
        headers=admin_headers,
        content_type="multipart/form-data",
    )
    assert_error(text, 400, "validation_failed")


def test_builtins_are_published_once(app: Flask) -> None:
    with app.app_context():
        first = form_service.publish_builtins()
        assert len(first) == 7  # the six instruments and the verification outcome
        assert form_service.publish_builtins() == []


def test_form_management_is_limited_to_the_forms_owner_area(
    app: Flask, client: FlaskClient, admin_headers: dict[str, str], housing: dict
) -> None:
    """Leak 3: a form published at county level belongs to that county; built-ins to the whole
    server (an unrestricted admin)."""
    from tests.server.conftest import add_user, login

    with app.app_context():
        form_service.publish_builtins()
    add_user(app, "county-a", area="530102")
    add_user(app, "county-b", area="530103")
    a, b = login(client, "county-a"), login(client, "county-b")
    builtin_v2 = {**housing, "version": 2}
    assert_error(client.post("/api/v1/forms", json=builtin_v2, headers=a), 403, "form_not_yours")
    assert_error(
        client.post("/api/v1/forms/housing_safety/versions/1/retire", headers=a),
        403,
        "form_not_yours",
    )
    own = {**copy.deepcopy(housing), "id": "county_a_housing", "version": 1}
    assert client.post("/api/v1/forms", json=own, headers=a).status_code == 201
    url = "/api/v1/forms/county_a_housing/versions"
    assert_error(client.post(f"{url}/1/publish", headers=b), 403, "form_not_yours")
    assert_error(
        client.post("/api/v1/forms", json={**own, "version": 2}, headers=b), 403, "form_not_yours"
    )
    assert client.post(f"{url}/1/publish", headers=a).status_code == 200
    assert_error(client.post(f"{url}/1/retire", headers=b), 403, "form_not_yours")
    # The server-wide admin manages every form, built-ins included.
    assert client.post(f"{url}/1/retire", headers=admin_headers).status_code == 200
    assert client.post("/api/v1/forms", json=builtin_v2, headers=admin_headers).status_code == 201


def test_xlsform_upload_takes_select_from_file_choices_from_its_attachment(
    client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    import openpyxl

    workbook = openpyxl.Workbook()
    survey = workbook.active
    survey.title = "survey"
    survey.append(["type", "name", "label"])
    survey.append(["select_one_from_file villages.csv", "village", "村"])
    buffer = io.BytesIO()
    workbook.save(buffer)

    def upload(**files: tuple[io.BytesIO, str]) -> Any:
        return client.post(
            "/api/v1/forms",
            data={"file": (io.BytesIO(buffer.getvalue()), "village_pick.xlsx"), **files},
            headers=admin_headers,
            content_type="multipart/form-data",
        )

    missing = upload()
    assert_error(missing, 422, "form_invalid")
    [issue] = missing.json["error"]["details"]["issues"]
    assert (issue["sheet"], issue["row"], issue["code"]) == ("survey", 2, "missing_attachment")
    villages = "name,label\nv1,上寨\nv2,下寨\n".encode()
    response = upload(attachment=(io.BytesIO(villages), "villages.csv"))
    assert response.status_code == 201, response.json
    stored = client.get("/api/v1/forms/village_pick/versions/1", headers=admin_headers).json[
        "definition"
    ]
    assert [c["value"] for c in stored["choice_lists"]["villages_csv"]] == ["v1", "v2"]


def test_odk_version_strings_are_ordered_as_odk_orders_them_and_kept_as_written(
    client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    def upload(written: str) -> Any:
        document = {
            "id": "stamped",
            "version": 1,
            "odk_version": written,
            "odk_form_id": "Stamped-Form",
            "title": "戳记",
            "fields": [{"name": "a", "type": "text", "label": "甲"}],
        }
        return client.post("/api/v1/forms", json=document, headers=admin_headers)

    first = upload("2026-11-25 beta")
    assert first.status_code == 201, first.json
    assert (first.json["version"], first.json["odk_version"]) == (1, "2026-11-25 beta")
    assert first.json["odk_form_id"] == "Stamped-Form"
    later = upload("2026-12-01 beta")  # sorts after: the next internal number
    assert (later.json["version"], later.json["odk_version"]) == (2, "2026-12-01 beta")
    again = upload("2026-12-01 beta")  # the same string is the same version (a draft: replaced)
    assert again.status_code == 201 and again.json["version"] == 2
    older = upload("2026-11-30")
    assert_error(older, 409, "form_version_not_increasing")
    details = older.json["error"]["details"]
    assert (details["sheet"], details["header"], details["newest"]) == (
        "settings",
        "version",
        "2026-12-01 beta",
    )
    listed = client.get("/api/v1/forms/stamped/versions", headers=admin_headers).json
    assert [(v["version"], v["odk_version"]) for v in listed] == [
        (2, "2026-12-01 beta"),
        (1, "2026-11-25 beta"),
    ]
