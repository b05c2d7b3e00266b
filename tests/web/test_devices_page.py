"""The devices page: ops acknowledged vs received, held ops, and which tablets still run an
old form version (also on the forms page), inside the signed-in area."""

from __future__ import annotations

import io
from collections.abc import Callable

from flask import Flask

from tests.server.conftest import login
from tests.server.sync_device import HOUSE_A, SyncDevice
from tests.web.conftest import Browser, add_account, text
from tests.web.xlsform_files import housing_form

V1, FAR = "530102001201", "530102002301"


def _row(page: str, device_id: str) -> str:
    """The devices-table row of one device."""
    return page.split(f"<code>{device_id[:8]}</code>")[1].split("</tr>")[0]


def test_devices_show_acked_ops_and_who_lacks_the_newest_form_version(
    app: Flask, admin: Browser, browser_for: Callable[[str], Browser]
) -> None:
    headers = login(app.test_client(), "admin")
    tablet = SyncDevice.enroll(admin.client, headers, V1)
    far = SyncDevice.enroll(admin.client, headers, FAR)
    tablet.create("housing_safety", HOUSE_A, village=V1, household_no="H1")
    tablet.create("housing_safety", HOUSE_A, village=V1, household_no="H2")
    tablet.sync()
    far.sync()
    page = text(admin.get("/devices"))
    assert "2/2" in _row(page, tablet.device_id) and "未知" in _row(page, tablet.device_id)
    # No hello has reported a manifest cursor after a page was applied yet: nothing is known.
    tablet.sync()
    far.sync()
    assert "最新" in _row(text(admin.get("/devices")), tablet.device_id)

    uploaded = admin.post(
        "/forms/upload",
        {"file": (io.BytesIO(housing_form(2)), "housing_v2.xlsx")},
        content_type="multipart/form-data",
    )
    assert uploaded.status_code == 201
    assert admin.post("/forms/housing_safety/2/publish", {"at": ""}).status_code == 302
    tablet.sync()  # this hello still reports the old manifest cursor: v2 arrives in the reply
    row = _row(text(admin.get("/devices")), tablet.device_id)
    assert "旧版本" in row and "未收到第2版" in row
    forms_page = text(admin.get("/forms"))
    assert "2 台设备尚未收到最新发布版本" in forms_page and tablet.device_id[:8] in forms_page

    tablet.sync()  # now the hello says the v2 page was applied
    assert "最新" in _row(text(admin.get("/devices")), tablet.device_id)
    assert "1 台设备尚未收到最新发布版本" in text(admin.get("/forms"))

    add_account(app, "reviewer", "township_reviewer", "530102001")
    reviewer = text(browser_for("reviewer").get("/devices"))
    assert tablet.device_id[:8] in reviewer and far.device_id[:8] not in reviewer


def test_devices_show_the_app_each_tablet_named_on_its_last_sync(
    app: Flask, admin: Browser
) -> None:
    headers = login(app.test_client(), "admin")
    tablet = SyncDevice.enroll(admin.client, headers, V1)
    quiet = SyncDevice.enroll(admin.client, headers, V1)
    tablet.app = "field-app/0123abcd"
    tablet.sync()
    quiet.sync()  # names nothing: shown as unknown, served the same
    page = text(admin.get("/devices"))
    assert "field-app/0123abcd" in _row(page, tablet.device_id)
    assert "field-app" not in _row(page, quiet.device_id)
    listed = {d["id"]: d["app"] for d in admin.client.get("/api/v1/devices", headers=headers).json}
    assert listed == {tablet.device_id: "field-app/0123abcd", quiet.device_id: None}

    # The newest sync wins; what a device names is kept printable and short, never trusted.
    tablet.app = "village-device/9.9\x07<b>" + "x" * 200
    tablet.sync()
    named = {d["id"]: d["app"] for d in admin.client.get("/api/v1/devices", headers=headers).json}
    assert named[tablet.device_id].startswith("village-device/9.9<b>x")
    assert len(named[tablet.device_id]) == 80
    assert "&lt;b&gt;" in _row(text(admin.get("/devices")), tablet.device_id)  # escaped on the page
