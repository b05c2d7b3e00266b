"""``POST /api/v1/sync``: the sealed exchange of a device (no token: the envelopes are the
credential). The body is read as a stream, frame by frame, so a connection that drops in the
middle still gets every complete batch before the cut committed (docs in
:mod:`server.services.sync`)."""

from __future__ import annotations

import time
from typing import IO, Any

from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import ClientDisconnected

from server.api import API_PREFIX
from server.api.wire import service_context
from server.http_errors import note_refusal
from server.services import sync

blueprint = Blueprint("sync", __name__, url_prefix=API_PREFIX)
#: The request header a device names its app and version in (docs/protocol.md §2).
APP_HEADER = "Village-Sync-App"
#: The reply header carrying the server's own time on the exchange (W3C Server-Timing:
#: ``app;dur=<ms>``), so a device on a slow link can tell the server's think time from link
#: time and not shrink its batches because the server was busy (docs/protocol.md §2).
TIMING_HEADER = "Server-Timing"


class _Body:
    """The request stream, where a client that went away reads as the end of the body."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._gone = False

    def read(self, size: int = -1) -> bytes:
        if self._gone:
            return b""
        try:
            return self._stream.read(size)
        except ClientDisconnected:
            # The frames read so far stand; the one in flight comes back "truncated".
            self._gone = True
            return b""


@blueprint.post("/sync")
def exchange() -> Any:
    """One sync exchange: sealed hello + upload batches in, one sealed signed reply out.

    Content-Type ``application/vnd.village-sync.exchange`` both ways; a client tells a sealed
    reply from a JSON error by the Content-Type (docs/protocol.md §2). Errors before the device is
    authenticated use the JSON error body: ``exchange_empty``, ``frame_malformed``, envelope codes
    (``envelope_bad_signature``, ``envelope_truncated``, ``envelope_unknown_key_id`` …, 400),
    ``device_unknown`` (401), ``envelope_replayed`` (409). Sealed refusals: ``device_revoked``,
    ``scope_denied``, ``clock_skew`` (403); ``exchange_invalid`` (400).
    """
    # waitress hands the app a request whose body has fully arrived, so this measures the
    # server's work on the exchange, not the upload.
    started = time.perf_counter()
    retry_ms = int(current_app.config.get("BUSY_RETRY_AFTER_SECONDS", 2)) * 1000
    result = sync.handle_exchange(
        service_context(),
        _Body(request.stream),  # type: ignore[arg-type]
        busy_retry_ms=retry_ms,
        ops_per_transaction=int(current_app.config["SYNC_OPS_PER_TRANSACTION"]),
        app=request.headers.get(APP_HEADER),
    )
    for code in result.refused:  # sealed refusals and rejected frames are audited too
        note_refusal(
            code, result.status, actor=f"device:{result.device_id}", area_code=result.scope
        )
    response = Response(result.body, status=result.status, content_type=result.content_type)
    response.headers[TIMING_HEADER] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
    return response
