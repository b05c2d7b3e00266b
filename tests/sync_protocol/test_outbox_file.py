"""The outbox file format: round trip, and each way a file can be wrong names its place."""

from __future__ import annotations

import json

import pytest

from sync_protocol import outbox_file
from sync_protocol.errors import OutboxFileInvalid

HEADER = {
    "device_id": "d-1",
    "server_url": "http://county",
    "created_at_ms": 1,
    "ops": 2,
    "first_seq": 1,
    "last_seq": 2,
}
BODY = b"\x00\x01frames\nwith newlines\n"


def test_a_file_round_trips_with_its_length_and_checksum() -> None:
    data = outbox_file.encode(HEADER, BODY)
    parsed = outbox_file.decode(data)
    assert parsed.body == BODY and parsed.header["body_bytes"] == len(BODY)
    assert data.startswith(b"VILLAGE-SYNC-OUTBOX 1\n")


def _header_line(**changes: object) -> bytes:
    header = {**HEADER, "body_bytes": len(BODY), "body_sha256": "0" * 64, **changes}
    return outbox_file.MAGIC + json.dumps(header).encode() + b"\n" + BODY


@pytest.mark.parametrize(
    ("data", "where"),
    [
        (b"PK\x03\x04 a zip", "line 1"),
        (outbox_file.MAGIC + b"not json\n" + BODY, "line 2"),
        (outbox_file.MAGIC + b"[1, 2]\n" + BODY, "line 2"),
        (outbox_file.MAGIC + b"{" * 5000, "line 2"),
        (_header_line(ops="two"), "header.ops"),
        (_header_line(device_id=None), "header.device_id"),
        (outbox_file.encode(HEADER, BODY)[:-1], "body"),
        (outbox_file.encode(HEADER, BODY) + b"x", "body"),
        (outbox_file.encode(HEADER, BODY)[:-1] + b"X", "body"),
    ],
)
def test_a_bad_file_is_refused_with_its_place_in_both_languages(data: bytes, where: str) -> None:
    with pytest.raises(OutboxFileInvalid) as refused:
        outbox_file.decode(data)
    assert refused.value.where == where
    assert refused.value.code == "outbox_file_invalid" and refused.value.message_zh
