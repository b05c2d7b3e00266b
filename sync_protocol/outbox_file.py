"""The sneakernet file: a device's pending outbox as the same sealed request it would POST to
``/sync``, for carrying on a USB stick to an office that has a link (docs/outbox-file.md).

Layout (bytes)::

    VILLAGE-SYNC-OUTBOX 1\\n          line 1: magic and format version
    {"device_id": …, …}\\n            line 2: one JSON object (the header below), UTF-8
    <body>                            the /sync request body: hello frame + batch frames

The body is exactly what the device would send: a sealed, signed hello and sealed, signed upload
batches, so the server imports it through the ordinary exchange, with every guarantee of a sync
(envelope sequences, op sequence idempotency). The header is for people and for checking the
file arrived whole; it is not trusted for anything the envelopes prove.

Pure: bytes in, bytes out (the CLI and the server do the file I/O).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Final

from sync_protocol.errors import OutboxFileInvalid

MAGIC: Final = b"VILLAGE-SYNC-OUTBOX 1\n"
#: The header's fields and their JSON types.
HEADER_FIELDS: Final = {
    "device_id": str,
    "server_url": str,
    "created_at_ms": int,
    "ops": int,
    "first_seq": int,
    "last_seq": int,
    "body_bytes": int,
    "body_sha256": str,
}
#: A header longer than this is not a header.
MAX_HEADER_BYTES: Final = 4096


@dataclass(frozen=True)
class OutboxFile:
    """A parsed outbox file: its header and the request body."""

    header: dict[str, Any]
    body: bytes


def encode(header: dict[str, Any], body: bytes) -> bytes:
    """The file's bytes for ``body`` with ``header`` (``body_bytes`` and ``body_sha256`` are
    filled in here)."""
    full = {**header, "body_bytes": len(body), "body_sha256": hashlib.sha256(body).hexdigest()}
    line = json.dumps(full, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return MAGIC + line.encode("utf-8") + b"\n" + body


def decode(data: bytes) -> OutboxFile:
    """Parse and check a file. Raises :class:`OutboxFileInvalid` naming where it is wrong."""
    if not data.startswith(MAGIC):
        raise OutboxFileInvalid(
            "line 1 is not 'VILLAGE-SYNC-OUTBOX 1': not an outbox file (or a newer format)",
            message_zh="第1行不是 VILLAGE-SYNC-OUTBOX 1：不是待发送数据文件（或格式版本更新）",
            where="line 1",
        )
    rest = data[len(MAGIC) :]
    end = rest.find(b"\n", 0, MAX_HEADER_BYTES)
    if end < 0:
        raise OutboxFileInvalid(
            "line 2 (the header) does not end within 4096 bytes",
            message_zh="第2行（文件头）不完整",
            where="line 2",
        )
    try:
        header = json.loads(rest[:end].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise OutboxFileInvalid(
            "line 2 (the header) is not JSON", message_zh="第2行（文件头）不是 JSON", where="line 2"
        ) from None
    if not isinstance(header, dict):
        raise OutboxFileInvalid(
            "line 2 (the header) is not a JSON object",
            message_zh="第2行（文件头）不是 JSON 对象",
            where="line 2",
        )
    for name, kind in HEADER_FIELDS.items():
        value = header.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise OutboxFileInvalid(
                f"header field {name} is missing or not a {kind.__name__}",
                message_zh=f"文件头字段 {name} 缺失或类型错误",
                where=f"header.{name}",
            )
    body = rest[end + 1 :]
    if len(body) != header["body_bytes"]:
        raise OutboxFileInvalid(
            f"the body holds {len(body)} bytes, the header promises {header['body_bytes']}: "
            "the file was cut short or added to",
            message_zh=f"数据部分有 {len(body)} 字节，文件头记录为 {header['body_bytes']} 字节："
            "文件不完整或被改动",
            where="body",
        )
    if hashlib.sha256(body).hexdigest() != header["body_sha256"]:
        raise OutboxFileInvalid(
            "the body's SHA-256 differs from the header's: the file was altered or damaged",
            message_zh="数据部分的校验值与文件头不符：文件已损坏或被改动",
            where="body",
        )
    return OutboxFile(header, body)
