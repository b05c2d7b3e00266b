"""HTTP for the device: one request per connection, byte counts, progress while sending.

The device talks to the county server with the standard library's :mod:`http.client` (no extra
dependency on a tablet image). Every request opens its own connection: a village link drops
often, and a fresh connection never inherits a half-dead socket from the previous exchange.

Anything that goes wrong on the way — refused connection, reset, timeout (a stalled link), a
body shorter than its ``Content-Length`` — raises :class:`TransportError`, a
:class:`~village_client_stub.errors.DeviceError` with code ``network_error``: the sync client
treats it as "no reply" and retries with backoff. An HTTP error status is not an exception
here; the caller reads :attr:`HttpResponse.status` and the server's one JSON error shape
(:meth:`HttpResponse.error`).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from village_client_stub.errors import BadInput, DeviceError

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "HttpResponse",
    "HttpTransport",
    "ServerError",
    "TransportError",
    "error_message",
    "server_timing_s",
]

#: Seconds a socket may sit idle (connect, one send, one receive) before the link counts as dead.
DEFAULT_TIMEOUT_S: Final = 60.0
# Bytes handed to the socket at a time while sending a body, so progress moves smoothly on a
# 64 kbit/s link (4 KiB is half a second there) without costing anything on a fast one.
_SEND_CHUNK: Final = 4096


class TransportError(DeviceError):
    """No usable HTTP response: the connection failed, dropped, stalled or came back short."""

    code = "network_error"
    default_message = "the server could not be reached"
    default_message_zh = "无法连接服务器"

    def __init__(
        self, message: str | None = None, *, message_zh: str | None = None, refused: bool = False
    ) -> None:
        super().__init__(message, message_zh=message_zh)
        #: The server's host actively refused the connection (nothing listens on the port).
        self.refused = refused


class ServerError(DeviceError):
    """The server answered with its JSON error shape (``code``, ``message``, ``details``).

    Attributes:
        status: the HTTP status.
        server_code: the server's stable error code (e.g. ``invalid_enrollment_code``).
        details: the error's ``details`` object.
    """

    code = "server_error"
    default_message = "the server refused the request"
    default_message_zh = "服务器拒绝了请求"

    def __init__(
        self,
        status: int,
        server_code: str,
        message: str,
        *,
        message_zh: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.server_code = server_code
        self.details = dict(details or {})
        super().__init__(f"{message} (HTTP {status}, {server_code})", message_zh=message_zh)


def error_message(message: Any, fallback: str) -> tuple[str | None, str]:
    """``(zh, en)`` of a server error's ``message``, whichever age of server sent it.

    ``{"zh": "中文", "en": "English"}`` (current servers) or ``"中文 / English"`` (the first
    release); a string without ``" / "`` is taken as English. ``zh`` is ``None`` when the
    server gave none; ``en`` falls back to ``fallback``.
    """
    if isinstance(message, Mapping):
        zh, en = message.get("zh"), message.get("en")
        zh_text = str(zh) if isinstance(zh, str) and zh else None
        en_text = str(en) if isinstance(en, str) and en else None
        return zh_text, en_text or zh_text or fallback
    text = str(message) if isinstance(message, str) and message else fallback
    zh_part, _, en_part = text.partition(" / ")
    return (zh_part, en_part) if en_part else (None, zh_part)


@dataclass(frozen=True)
class HttpResponse:
    """A complete HTTP response: status, headers (names lower-cased) and the whole body.

    ``wait_s``: seconds from the start of the request to the response's head (the request's
    upload, a round trip and the server's work); ``elapsed_s``: to the end of the body.
    """

    status: int
    headers: dict[str, str]
    body: bytes
    wait_s: float = 0.0
    elapsed_s: float = 0.0

    @property
    def server_s(self) -> float | None:
        """The server's own time on the request from its ``Server-Timing: app;dur=<ms>``
        header, or None when it sent none (a server from before the header, a proxy page)."""
        return server_timing_s(self.headers.get("server-timing", ""))

    @property
    def content_type(self) -> str:
        """The media type without parameters (``application/json``)."""
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    def json(self) -> Any:
        """The body parsed as JSON.

        Raises:
            TransportError: the body is not JSON (a proxy page, a cut response).
        """
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise TransportError(
                f"HTTP {self.status}: the body is not JSON ({exc})",
                message_zh=f"服务器应答无法解析（HTTP {self.status}）",
            ) from exc

    def error(self) -> ServerError:
        """The server's error as an exception object (for a status >= 400).

        A current server sends ``"message": {"zh": …, "en": …}``; a server of the first release
        sent one string ``"<中文> / <English>"``. Both are read (:func:`error_message`). A body that
        is not the server's error shape still gives a :class:`ServerError` (code ``http_<status>``).
        """
        code, en, zh, details = f"http_{self.status}", f"HTTP {self.status}", None, {}
        try:
            payload = json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            payload = None
        if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
            error = payload["error"]
            code = str(error.get("code") or code)
            zh, en = error_message(error.get("message"), en)
            details = error.get("details") if isinstance(error.get("details"), dict) else {}
        return ServerError(self.status, code, en, message_zh=zh, details=details)


@dataclass
class _Counters:
    bytes_sent: int = 0
    bytes_received: int = 0
    requests: int = 0
    failures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class HttpTransport:
    """Requests to one server (``http://host:port`` or ``https://…``), one connection each.

    ``bytes_sent`` / ``bytes_received`` count bodies and headers as written and read (the
    request line and headers are counted as built, the response headers as received).
    Thread-safe: several devices of the simulator may share nothing but this class.
    """

    def __init__(self, base_url: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        """Prepare requests to ``base_url``.

        Raises:
            BadInput: the URL is not an ``http``/``https`` URL with a host.
        """
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadInput(
                f"the server URL must look like http://host:port, got {base_url!r}",
                message_zh=f"服务器地址应形如 http://主机:端口，而不是 {base_url!r}",
            )
        self.base_url = base_url.rstrip("/")
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self._counters = _Counters()

    @property
    def bytes_sent(self) -> int:
        """Bytes written to the network so far (request lines, headers, bodies)."""
        return self._counters.bytes_sent

    @property
    def bytes_received(self) -> int:
        """Bytes read from the network so far (status lines, headers, bodies)."""
        return self._counters.bytes_received

    def _connection(self) -> http.client.HTTPConnection:
        if self._scheme == "https":
            return http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout)
        return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        on_sent: Callable[[int], None] | None = None,
    ) -> HttpResponse:
        """Send one request and read the whole response.

        ``on_sent(n)`` is called as each piece of the body leaves (``n`` bytes), for progress
        bars. Raises:
            TransportError: connection refused, reset, timed out, or the response was cut short.
        """
        all_headers = {"Connection": "close", **dict(headers or {})}
        if body is not None:
            all_headers["Content-Length"] = str(len(body))
        target = self._prefix + path
        head_size = len(f"{method} {target} HTTP/1.1\r\nHost: {self._host}\r\n") + sum(
            len(k) + len(v) + 4 for k, v in all_headers.items()
        )
        started = time.monotonic()
        connection = self._connection()
        with self._counters.lock:
            self._counters.requests += 1
        try:
            connection.putrequest(method, target, skip_accept_encoding=True)
            for name, value in all_headers.items():
                connection.putheader(name, value)
            connection.endheaders()
            self._count_sent(head_size + 2)
            if body:
                for piece in _pieces(body):
                    connection.send(piece)
                    self._count_sent(len(piece))
                    if on_sent is not None:
                        on_sent(len(piece))
            response = connection.getresponse()
            head_at = time.monotonic()
            data = response.read()
            received_head = sum(len(k) + len(v) + 4 for k, v in response.getheaders()) + 17
            self._count_received(received_head + len(data))
            return HttpResponse(
                status=response.status,
                headers={k.lower(): v for k, v in response.getheaders()},
                body=data,
                wait_s=head_at - started,
                elapsed_s=time.monotonic() - started,
            )
        except (OSError, http.client.HTTPException) as exc:
            with self._counters.lock:
                self._counters.failures += 1
            raise TransportError(
                f"{method} {self.base_url}{path} failed: {_describe(exc)}",
                message_zh=f"网络中断或服务器无应答（{_describe(exc)}）",
                refused=isinstance(exc, ConnectionRefusedError),
            ) from exc
        finally:
            connection.close()

    def post_json(self, path: str, payload: Any, headers: Mapping[str, str] | None = None) -> Any:
        """POST a JSON body and return the JSON answer of a 2xx response.

        Raises:
            TransportError: the request did not complete.
            ServerError: the server answered with an error status.
        """
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        response = self.request(
            "POST",
            path,
            body,
            {"Content-Type": "application/json", "Accept": "application/json", **(headers or {})},
        )
        if response.status >= 400:
            raise response.error()
        return response.json()

    def get_json(self, path: str, headers: Mapping[str, str] | None = None) -> Any:
        """GET a resource and return its JSON.

        Raises:
            TransportError: the request did not complete.
            ServerError: the server answered with an error status.
        """
        response = self.request(
            "GET", path, None, {"Accept": "application/json", **(headers or {})}
        )
        if response.status >= 400:
            raise response.error()
        return response.json()

    def _count_sent(self, amount: int) -> None:
        with self._counters.lock:
            self._counters.bytes_sent += amount

    def _count_received(self, amount: int) -> None:
        with self._counters.lock:
            self._counters.bytes_received += amount


def server_timing_s(value: str) -> float | None:
    """Seconds of the ``app`` metric of a ``Server-Timing`` header value (``app;dur=12.5`` →
    0.0125), or None when it names none or is malformed."""
    for metric in value.split(","):
        name, *params = (part.strip() for part in metric.split(";"))
        if name != "app":
            continue
        for param in params:
            key, _, number = param.partition("=")
            if key.strip() == "dur":
                try:
                    ms = float(number.strip().strip('"'))
                except ValueError:
                    return None
                return ms / 1000.0 if ms >= 0 else None
    return None


def _pieces(body: bytes) -> Iterator[bytes]:
    view = memoryview(body)
    for start in range(0, len(body), _SEND_CHUNK):
        yield bytes(view[start : start + _SEND_CHUNK])


def _describe(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, http.client.IncompleteRead):
        return f"response cut short after {len(exc.partial)} bytes"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return "connection reset"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    return type(exc).__name__ + (f": {exc}" if str(exc) else "")
