"""A tiny HTTP reverse proxy on loopback, standing in for the county's nginx.

It runs as its own process (``python -m tests.e2e.reverse_proxy --target URL``), prints
``proxy listening on http://127.0.0.1:PORT`` and forwards every request to the target with
``X-Forwarded-For`` set to the address the client connected from, as nginx does with
``proxy_set_header X-Forwarded-For $remote_addr``. Clients on one machine look like different
clients by connecting from different loopback addresses (127.0.0.2, 127.0.0.3 …): Linux routes
all of 127.0.0.0/8 to the loopback interface.
"""

from __future__ import annotations

import argparse
import http.client
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

#: Hop-by-hop headers a proxy does not pass on (RFC 9110 §7.6.1), plus the ones it sets itself.
_DROPPED = {"connection", "keep-alive", "transfer-encoding", "upgrade", "host", "x-forwarded-for"}


def make_handler(target: str) -> type[BaseHTTPRequestHandler]:
    """A request handler forwarding to ``target`` (``http://127.0.0.1:PORT``)."""
    parts = urlsplit(target)
    if parts.hostname not in ("127.0.0.1", "localhost"):
        raise SystemExit(f"loopback targets only, got {target}")

    class Forward(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _DROPPED}
            headers["X-Forwarded-For"] = self.client_address[0]
            headers["Host"] = f"{parts.hostname}:{parts.port}"
            upstream = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
            try:
                upstream.request(self.command, self.path, body=body, headers=headers)
                reply = upstream.getresponse()
                data = reply.read()
            finally:
                upstream.close()
            self.send_response(reply.status, reply.reason)
            for key, value in reply.getheaders():
                if key.lower() not in _DROPPED and key.lower() != "content-length":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_HEAD = do_PUT = do_DELETE = _forward

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: the test reads only the listening line

    return Forward


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True, help="http://127.0.0.1:PORT of the server")
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(args.target))
    server.daemon_threads = True
    print(f"proxy listening on http://127.0.0.1:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
