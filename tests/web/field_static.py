"""A loopback HTTP server for the field app's JavaScript under test.

It serves ``server/field/static/`` at ``/field/static/``, the protocol vectors at ``/vectors/``
and the browser-side test modules (``tests/web/field_protocol/``) at ``/tests/``. 127.0.0.1 is a
secure context, so ``crypto.subtle`` works as it does on the county server. Given an
``upstream`` (a county server's base URL), it forwards ``/api/…`` there byte for byte, so the
page and the county API share one origin, as they will once the county server serves the app.
``controls["drop_replies"] = n`` makes it deliver the next ``n`` sync requests to the county
server and then cut the connection instead of passing the reply back: a reply lost on the way.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

ROOT = Path(__file__).resolve().parents[2]
MOUNTS = {
    "/field/static/": ROOT / "server" / "field" / "static",
    "/vectors/": ROOT / "sync_protocol" / "vectors",
    "/tests/": ROOT / "tests" / "web" / "field_protocol",
}
PAGE = b"<!doctype html><meta charset='utf-8'><title>field protocol tests</title>"
_FORWARDED = ("Content-Type", "Accept", "Authorization")


@dataclass
class StaticServer:
    """A running server: its base URL and the fault controls of its forwarding."""

    url: str
    controls: dict[str, int] = field(default_factory=lambda: {"drop_replies": 0})


class _Handler(SimpleHTTPRequestHandler):
    upstream: str | None = None
    controls: ClassVar[dict[str, int]] = {}
    extensions_map: ClassVar[dict[str, str]] = {
        **SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript",
    }

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet

    def translate_path(self, path: str) -> str:
        clean = path.split("?", 1)[0]
        for prefix, directory in MOUNTS.items():
            if clean.startswith(prefix):
                base = directory.resolve()
                target = (base / clean[len(prefix) :]).resolve()
                if target == base or base in target.parents:
                    return str(target)
        return str(ROOT / "no-such-file")

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        request = urllib.request.Request(
            f"{self.upstream}{self.path}",
            data=body,
            method=self.command,
            headers={k: v for k, v in self.headers.items() if k in _FORWARDED},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                status, headers, data = answer.status, answer.headers, answer.read()
        except urllib.error.HTTPError as error:
            status, headers, data = error.code, error.headers, error.read()
        if self.command == "POST" and self.controls.get("drop_replies", 0) > 0:
            # The server has committed the request; the device never hears back.
            self.controls["drop_replies"] -= 1
            self.close_connection = True
            return
        self.send_response(status)
        for name in ("Content-Type", "Retry-After"):
            if headers.get(name):
                self.send_header(name, headers[name])
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.upstream and self.path.startswith("/api/"):
            self._forward()
        elif self.path in ("/", "/index.html"):
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(PAGE)))
            self.end_headers()
            self.wfile.write(PAGE)
        else:
            super().do_GET()

    def do_POST(self) -> None:
        if self.upstream and self.path.startswith("/api/"):
            self._forward()
        else:
            self.send_error(405)


@contextmanager
def serve_field_static(upstream: str | None = None) -> Iterator[StaticServer]:
    """Serve the mounts on 127.0.0.1 (a free port), ``/api/`` forwarded to ``upstream``."""
    running = StaticServer("")
    handler = type(
        "Handler",
        (_Handler,),
        {"upstream": upstream.rstrip("/") if upstream else None, "controls": running.controls},
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        running.url = f"http://127.0.0.1:{server.server_address[1]}"
        yield running
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
