"""The devices page imports an outbox file: once, inside the signed-in area, with located
errors for a bad file; CSRF and sign-in as every form."""

from __future__ import annotations

import io
from collections.abc import Callable

from flask import Flask

from sync_protocol import outbox_file
from tests.server.conftest import login
from tests.server.sync_device import HOUSE_A, SyncDevice
from tests.web.conftest import Browser, add_account, text

V1, FAR = "530102001201", "530102002301"


def _file_of(device: SyncDevice) -> bytes:
    request = device.build()
    ops = device.pending
    return outbox_file.encode(
        {
            "device_id": device.device_id,
            "server_url": "http://county.example",
            "created_at_ms": 0,
            "ops": len(ops),
            "first_seq": ops[0].seq,
            "last_seq": ops[-1].seq,
        },
        request.body,
    )


def _upload(browser: Browser, data: bytes, **kw: object) -> object:
    return browser.post(
        "/devices/outbox",
        {"outbox": (io.BytesIO(data), "tablet.vsync")},
        content_type="multipart/form-data",
        **kw,
    )


def test_an_outbox_file_imports_once_and_bad_files_say_where(
    app: Flask, admin: Browser, browser_for: Callable[[str], Browser]
) -> None:
    headers = login(app.test_client(), "admin")
    tablet = SyncDevice.enroll(admin.client, headers, V1)
    tablet.create("housing_safety", HOUSE_A, village=V1, household_no="H1")
    data = _file_of(tablet)

    assert _upload(admin, data, csrf=False).status_code == 400
    cut = _upload(admin, data[:-5])
    assert (
        cut.status_code == 400 and "文件不完整或被改动" in text(cut) and "位置：body" in text(cut)
    )
    other = _upload(admin, b"hello")
    assert other.status_code == 400 and "位置：line 1" in text(other)

    add_account(app, "far", "township_reviewer", "530102002")
    far = _upload(browser_for("far"), data)
    assert far.status_code == 404 and "未在您的管辖范围内注册" in text(far)

    done = _upload(admin, data)
    assert done.status_code == 200 and "新确认 1 项" in text(done)
    assert "H1" in text(admin.get(f"/households?area={V1}"))
    twice = _upload(admin, data)
    assert twice.status_code == 200 and "已导入过，未做任何改动" in text(twice)
    audit = text(admin.get("/audit?action=outbox.import"))
    assert audit.count("<td>outbox.import</td>") == 2

    # The tablet hears the ack on its next ordinary sync.
    reply = tablet.sync()
    assert [a.status for ack in reply.acks for a in ack.acks] == ["applied"]
    assert tablet.pending == []
    # A revoked tablet's file is refused whole, in Chinese.
    tablet.create("housing_safety", HOUSE_A, village=V1, household_no="H2")
    late = _file_of(tablet)
    assert admin.post(f"/devices/{tablet.device_id}/revoke").status_code == 302
    revoked = _upload(admin, late)
    assert revoked.status_code == 403 and "该设备已被停用" in text(revoked)
    assert "H2" not in text(admin.get(f"/households?area={V1}"))
