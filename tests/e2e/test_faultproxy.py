"""The fault proxy really injects each fault, measured against real loopback servers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bench.harness.faultproxy import FaultProxy, FaultProxyError, LinkProfile, kbit_per_s

REPO = Path(__file__).resolve().parents[2]


class EchoServer:
    """A tiny threaded TCP echo server on 127.0.0.1:0 (each connection echoes until EOF)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            worker = threading.Thread(target=self._echo, args=(conn,), daemon=True)
            self._workers.append(worker)
            worker.start()

    def _echo(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        with conn:
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                try:
                    conn.sendall(data)
                except OSError:
                    return

    def close(self) -> None:
        self._stop.set()
        self._accepter.join(2)
        for worker in self._workers:
            worker.join(2)
        self.sock.close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


BODY = bytes(range(256)) * 40  # 10,240 bytes


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def http_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    thread.join(5)
    server.server_close()


def _connect(proxy: FaultProxy, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(proxy.address, timeout=timeout)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    parts = bytearray()
    while len(parts) < n:
        chunk = sock.recv(n - len(parts))
        if not chunk:
            break
        parts += chunk
    return bytes(parts)


def _recv_until_closed(sock: socket.socket) -> tuple[bytes, str]:
    """Read until EOF or error; returns the bytes and how it ended ("eof", "reset", "timeout")."""
    parts = bytearray()
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return bytes(parts), "reset"
        except TimeoutError:
            return bytes(parts), "timeout"
        if not chunk:
            return bytes(parts), "eof"
        parts += chunk


def _send_all_tolerant(sock: socket.socket, payload: bytes) -> None:
    try:
        sock.sendall(payload)
    except (ConnectionResetError, BrokenPipeError):
        pass


def test_passthrough_forwards_everything_and_counts(echo: EchoServer) -> None:
    payload = os.urandom(100_000)
    with FaultProxy(("127.0.0.1", echo.port)) as proxy:
        with _connect(proxy) as sock:
            sender = threading.Thread(target=sock.sendall, args=(payload,))
            sender.start()
            received = _recv_exactly(sock, len(payload))
            sender.join()
        assert received == payload
        deadline = time.monotonic() + 2
        while proxy.counters().bytes_down < len(payload) and time.monotonic() < deadline:
            time.sleep(0.01)
        counters = proxy.counters()
    assert counters.bytes_up == len(payload)
    assert counters.bytes_down == len(payload)
    assert counters.connections == 1
    assert counters.cuts == 0


def test_one_way_delay_doubles_into_the_round_trip(echo: EchoServer) -> None:
    with FaultProxy(("127.0.0.1", echo.port), LinkProfile(delay_ms=100)) as proxy:
        with _connect(proxy) as sock:
            start = time.monotonic()
            sock.sendall(b"ping")
            assert _recv_exactly(sock, 4) == b"ping"
            rtt = time.monotonic() - start
    assert rtt >= 0.2


def test_bandwidth_cap_takes_at_least_the_byte_ideal_time(echo: EchoServer) -> None:
    rate = kbit_per_s(64)  # 8,000 bytes/s
    payload = os.urandom(12_000)
    profile = LinkProfile(bandwidth_bytes_per_s=rate)
    with FaultProxy(("127.0.0.1", echo.port), profile) as proxy:
        with _connect(proxy, timeout=10) as sock:
            start = time.monotonic()
            sender = threading.Thread(target=sock.sendall, args=(payload,))
            sender.start()
            received = _recv_exactly(sock, len(payload))
            elapsed = time.monotonic() - start
            sender.join()
    assert received == payload
    # Upload and echo overlap (each direction has its own cap), so the floor is one direction.
    assert elapsed >= len(payload) / rate


def test_cut_after_a_seeded_random_number_of_bytes(echo: EchoServer) -> None:
    payload = os.urandom(20_000)
    profile = LinkProfile(cut_after_bytes=(3_000, 6_000), seed=7)
    with FaultProxy(("127.0.0.1", echo.port), profile) as proxy:
        with _connect(proxy) as sock:
            sender = threading.Thread(target=_send_all_tolerant, args=(sock, payload))
            sender.start()
            received, ending = _recv_until_closed(sock)
            sender.join()
        counters = proxy.counters()
    assert ending in {"reset", "eof"}
    assert len(received) < len(payload)
    assert received == payload[: len(received)]
    assert counters.cuts == 1
    assert counters.bytes_up + counters.bytes_down <= 6_000


def test_same_seed_same_cut_points(echo: EchoServer) -> None:
    def forwarded_before_cut() -> int:
        profile = LinkProfile(cut_after_bytes=(1_000, 50_000), seed=42)
        with FaultProxy(("127.0.0.1", echo.port), profile) as proxy:
            with _connect(proxy) as sock:
                # Lock-step request/echo, so the byte count at the cut does not depend on
                # thread timing, only on the cut point drawn from the seeded RNG.
                total = 0
                try:
                    while True:
                        sock.sendall(b"x" * 100)
                        got = _recv_exactly(sock, 100)
                        total += len(got)
                        if len(got) < 100:
                            break
                except (ConnectionResetError, BrokenPipeError):
                    pass
            return total

    assert forwarded_before_cut() == forwarded_before_cut()


def test_cut_every_n_seconds_resets_idle_connections(echo: EchoServer) -> None:
    with FaultProxy(("127.0.0.1", echo.port), LinkProfile(cut_every_s=0.2, seed=1)) as proxy:
        with _connect(proxy) as sock:
            sock.sendall(b"hello")
            assert _recv_exactly(sock, 5) == b"hello"
            _, ending = _recv_until_closed(sock)
        assert ending in {"reset", "eof"}
        assert proxy.counters().cuts >= 1
        # The link comes back: a new connection works until the next cut.
        with _connect(proxy) as sock:
            sock.sendall(b"again")
            assert _recv_exactly(sock, 5) == b"again"


def test_stall_keeps_the_socket_open_but_forwards_nothing_more(echo: EchoServer) -> None:
    payload = os.urandom(5_000)
    with FaultProxy(("127.0.0.1", echo.port), LinkProfile(stall_after_bytes=1_000)) as proxy:
        with _connect(proxy, timeout=0.5) as sock:
            sock.sendall(payload)
            received, ending = _recv_until_closed(sock)
            # Still open: a write is accepted locally, only a read times out again.
            sock.sendall(b"more")
            with pytest.raises(TimeoutError):
                sock.recv(10)
        counters = proxy.counters()
    assert ending == "timeout"
    assert len(received) <= 1_000
    assert counters.bytes_up + counters.bytes_down <= 1_000
    assert counters.stalls == 1


def test_run_time_stall_and_resume(echo: EchoServer) -> None:
    with FaultProxy(("127.0.0.1", echo.port)) as proxy:
        with _connect(proxy, timeout=0.4) as sock:
            sock.sendall(b"one")
            assert _recv_exactly(sock, 3) == b"one"
            proxy.stall()
            time.sleep(0.1)  # let the pumps notice before sending
            sock.sendall(b"two")
            with pytest.raises(TimeoutError):
                sock.recv(3)
            proxy.resume()
            sock.settimeout(5)
            assert _recv_exactly(sock, 3) == b"two"


def test_truncated_http_response(http_server: ThreadingHTTPServer) -> None:
    port = http_server.server_address[1]
    with FaultProxy(("127.0.0.1", port), LinkProfile(truncate_response_after=500)) as proxy:
        with _connect(proxy) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            received, ending = _recv_until_closed(sock)
        counters = proxy.counters()
    assert ending == "eof"
    assert len(received) == 500
    assert received.startswith(b"HTTP/1.0 200")
    assert counters.truncations == 1
    assert counters.bytes_down == 500


def test_untruncated_http_response_passes_whole(http_server: ThreadingHTTPServer) -> None:
    port = http_server.server_address[1]
    with FaultProxy(("127.0.0.1", port), LinkProfile(delay_ms=5)) as proxy:
        with _connect(proxy) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            received, ending = _recv_until_closed(sock)
    assert ending == "eof"
    assert received.endswith(BODY)


def test_only_loopback_targets_and_sane_profiles() -> None:
    with pytest.raises(FaultProxyError):
        FaultProxy(("10.0.0.1", 80))
    with pytest.raises(FaultProxyError):
        FaultProxy(("example.org", 80))
    with pytest.raises(FaultProxyError):
        FaultProxy(("127.0.0.1", 80), LinkProfile(bandwidth_bytes_per_s=0))
    with pytest.raises(FaultProxyError):
        FaultProxy(("127.0.0.1", 80), LinkProfile(cut_after_bytes=(10, 5)))


def test_the_village_link_preset_matches_the_design_numbers() -> None:
    link = LinkProfile.village_link(seed=3)
    assert link.delay_ms * 2 == 300
    assert link.bandwidth_bytes_per_s == 8_000
    assert link.cut_every_s == 20 and link.seed == 3


def test_clean_shutdown_leaves_no_threads_and_no_listener(echo: EchoServer) -> None:
    proxy = FaultProxy(("127.0.0.1", echo.port), LinkProfile(cut_every_s=5)).start()
    sock = _connect(proxy)
    sock.sendall(b"abc")
    assert _recv_exactly(sock, 3) == b"abc"
    proxy.close()
    _, ending = _recv_until_closed(sock)
    sock.close()
    assert ending in {"reset", "eof"}
    assert not [t for t in threading.enumerate() if t.name.startswith("fp-") and t.is_alive()]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(proxy.address, timeout=1).close()


def test_command_line_proxy_forwards_and_reports_counters(echo: EchoServer) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.harness.faultproxy", "--target", f"127.0.0.1:{echo.port}"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        listen = json.loads(proc.stdout.readline())["listen"]
        host, _, port = listen.rpartition(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(b"hello proxy")
            assert _recv_exactly(sock, 11) == b"hello proxy"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    counters = json.loads(out.strip().splitlines()[-1])
    assert counters["bytes_up"] == 11
    assert counters["connections"] == 1


def test_command_line_refuses_a_remote_target() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.harness.faultproxy", "--target", "192.0.2.1:80"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "loopback" in proc.stderr
