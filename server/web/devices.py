"""Devices and enrolment: issue a one-time code (text and QR), list tablets, revoke one."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import segno
from flask import current_app, redirect, render_template, request, url_for

from server.api.wire import service_context
from server.errors import ApiError
from server.services import devices as device_service
from server.services import enrollment, outbox_import
from server.services.access import COUNTY_ADMIN, Principal
from server.web.base import actor_of, blueprint, field_messages, signed_in, zh_message


def enrolment_payload(server_url: str, code: str) -> str:
    """What the QR code carries: the server to enrol with and the one-time code.

    ``villagesync:enroll?server=<url>&code=<code>`` — a tablet's scanner (or a person) gets
    both values ``village-device enroll --server … --code …`` needs.
    """
    return "villagesync:enroll?" + urlencode({"server": server_url, "code": code})


def _server_url() -> str:
    return current_app.config["PUBLIC_URL"] or request.host_url.rstrip("/")


def _devices_page(principal: Principal, **extra: Any) -> Any:
    listing = device_service.list_devices(principal)
    codes = enrollment.list_codes(principal) if principal.role == COUNTY_ADMIN else []
    defaults = {
        "error": None,
        "fields": {},
        "typed": {},
        "issued": None,
        "imported": None,
        "outbox_error": None,
        "outbox_where": None,
        "outbox_name": "",
    }
    return render_template(
        "devices.html",
        devices=listing,
        codes=codes,
        conflicts=device_service.open_conflicts_by_device(principal),
        op_counts=device_service.op_counts(principal),
        behind=device_service.forms_behind(principal),
        **{**defaults, **extra},
    )


@blueprint.get("/devices")
@signed_in()
def devices(principal: Principal) -> Any:
    """Tablets of the caller's area with their last sync; unused enrolment codes."""
    return _devices_page(principal)


@blueprint.post("/devices/codes")
@signed_in(COUNTY_ADMIN)
def issue_code(principal: Principal) -> Any:
    """Issue a code for a village or township; shown once, as text and as a QR code."""
    typed = {k: request.form.get(k, "") for k in ("scope", "days", "label")}
    try:
        days = int(typed["days"]) if typed["days"].strip() else None
    except ValueError:
        return _devices_page(
            principal, error="有效天数应为整数", fields={"days": ["整数"]}, typed=typed
        ), 400
    try:
        issued = enrollment.issue_code(
            service_context(),
            typed["scope"],
            days=days,
            actor=actor_of(principal),
            label=typed["label"][:120],
        )
    except ApiError as exc:
        page = _devices_page(
            principal, error=zh_message(exc), fields=field_messages(exc), typed=typed
        )
        return page, exc.status
    payload = enrolment_payload(_server_url(), issued.code)
    qr = segno.make(payload, error="m")
    return render_template(
        "code.html",
        issued=issued,
        payload=payload,
        server_url=_server_url(),
        qr_png=qr.png_data_uri(scale=6, border=4),
    )


@blueprint.post("/devices/outbox")
@signed_in()
def import_outbox(principal: Principal) -> Any:
    """Import an outbox file a tablet wrote with ``export-outbox`` (brought on a USB stick)."""
    upload = request.files.get("outbox")
    data = upload.read(outbox_import.MAX_FILE_BYTES + 1) if upload is not None else b""
    name = upload.filename if upload is not None else ""
    try:
        result = outbox_import.import_file(service_context(), data, actor=actor_of(principal))
    except ApiError as exc:
        where = exc.details.get("where") if isinstance(exc.details, dict) else None
        page = _devices_page(
            principal, outbox_error=zh_message(exc), outbox_where=where, outbox_name=name
        )
        return page, exc.status
    return _devices_page(principal, imported=result, outbox_name=name)


@blueprint.route("/devices/<device_id>/revoke", methods=["GET", "POST"])
@signed_in(COUNTY_ADMIN)
def revoke_device(principal: Principal, device_id: str) -> Any:
    """Ask for confirmation (GET), then revoke (POST): the tablet's next sync is refused."""
    if request.method == "GET":
        device = device_service.get_device(principal, device_id)
        return render_template("revoke.html", device=device)
    device_service.revoke(actor_of(principal), device_id)
    return redirect(url_for("web.devices"))
