"""Sneakernet: importing a device's outbox file (``village-device export-outbox``).

The file's body is the ``/sync`` request the device would have sent, so the import runs it
through the one exchange (:func:`server.services.sync.handle_exchange`) with every guarantee of
a sync: the envelopes are verified as the device's, each op is applied once by its sequence,
and the device learns the acks when it next syncs (the server answers the ops it sends again
with their stored acks). Importing the same file twice changes nothing: its hello's envelope
sequence is already used, which the import reports as "already imported".
"""

from __future__ import annotations

from dataclasses import dataclass

from server.errors import (
    ApiError,
    Conflict,
    Forbidden,
    NotFound,
    ValidationFailed,
    from_library_error,
)
from server.services import sync
from server.services.access import Actor
from server.services.context import ServiceContext
from server.storage import devices as device_store
from server.storage.database import end_read, writing
from sync_protocol import outbox_file
from sync_protocol.errors import OutboxFileInvalid

#: The largest outbox file accepted (weeks of offline work is a few MB).
MAX_FILE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ImportResult:
    """What one import did: the device, how many ops the file carried, how far the server's
    acknowledged op sequence moved, and whether the file had been imported before."""

    device_id: str
    ops_in_file: int
    acked_before: int
    acked_after: int
    already_imported: bool
    refused: tuple[str, ...] = ()

    @property
    def newly_acked(self) -> int:
        """Ops the server acknowledged because of this import."""
        return self.acked_after - self.acked_before


def _acked(device_id: str, area_prefix: str) -> int:
    counts = device_store.op_counts(area_prefix).get(device_id)
    return counts.acked if counts is not None else 0


def import_file(ctx: ServiceContext, data: bytes, *, actor: Actor) -> ImportResult:
    """Import an outbox file for a device of the actor's area; audited (``outbox.import``).

    Raises :class:`ValidationFailed` (``outbox_file_invalid``, ``details.where`` naming the line,
    header field or body) for a file that is not one, was cut short or altered; :class:`NotFound`
    (``device_not_found``) when its device is not enrolled in the actor's area; the envelope
    errors of a sync (``envelope_bad_signature`` …) for sealed parts that do not verify.
    """
    if len(data) > MAX_FILE_BYTES:
        raise ValidationFailed(
            en=f"an outbox file is at most {MAX_FILE_BYTES} bytes",
            zh="文件过大，不是待发送数据文件",
            code="outbox_file_invalid",
            details={"where": "file"},
        )
    try:
        parsed = outbox_file.decode(data)
    except OutboxFileInvalid as exc:
        raise from_library_error(
            exc, ValidationFailed, code="outbox_file_invalid", details={"where": exc.where}
        ) from None
    device_id = parsed.header["device_id"]
    device = device_store.device_in_area(device_id, actor.area_prefix)
    if device is None:
        raise NotFound(
            en=f"device {device_id} is not enrolled in your area",
            zh="该文件所属设备未在您的管辖范围内注册",
            code="device_not_found",
        )
    if device.status != "active":
        raise Forbidden(
            en="the device is revoked: its outbox file is not imported",
            zh="该设备已被停用，其数据文件不予导入",
            code="device_revoked",
        )
    before = _acked(device_id, actor.area_prefix)
    end_read()
    already = False
    refused: tuple[str, ...] = ()
    try:
        result = sync.handle_exchange(ctx, parsed.body)
    except Conflict as exc:
        if exc.code != "envelope_replayed":
            raise
        already = True
    except ApiError as exc:
        # The sealed parts did not verify as this device's (tampered, another server's keys …).
        exc.details = {**(exc.details or {}), "where": "body"}
        raise
    else:
        refused = result.refused
        if result.status != 200:
            # The whole exchange was refused (sealed refusal): nothing was applied.
            raise ValidationFailed(
                en=f"the server refused the file's exchange: {', '.join(refused)}",
                zh=f"文件中的同步请求被拒绝（{', '.join(refused)}），未导入任何修改",
                code="outbox_file_invalid",
                details={"where": "body", "refused": list(refused)},
            )
        if result.device_id and result.device_id != device_id:
            raise ValidationFailed(
                en="the header names another device than the sealed hello",
                zh="文件头中的设备与加密内容中的设备不一致",
                code="outbox_file_invalid",
                details={"where": "header.device_id"},
            )
    end_read()
    after = _acked(device_id, actor.area_prefix)
    outcome = ImportResult(
        device_id=device_id,
        ops_in_file=int(parsed.header["ops"]),
        acked_before=before,
        acked_after=after,
        already_imported=already,
        refused=refused,
    )
    with writing():
        actor.audit(
            "outbox.import",
            target_type="device",
            target_id=device_id,
            area_code=device.scope,
            details={
                "ops_in_file": outcome.ops_in_file,
                "newly_acked": outcome.newly_acked,
                "already_imported": already,
                "refused": list(refused),
                "first_seq": parsed.header["first_seq"],
                "last_seq": parsed.header["last_seq"],
            },
        )
    return outcome
