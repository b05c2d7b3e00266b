"""A fault-injecting TCP proxy on loopback, standing in for a weak village link.

The kernel on our machines has no ``netem``, so weak-network tests put this user-space proxy
between the device and the county server. It listens on ``127.0.0.1:0`` and forwards every
accepted connection to one loopback target, adding, as configured in a :class:`LinkProfile`:

* **latency** — a one-way delay per direction (so a round trip costs twice the delay);
* **bandwidth** — a byte-rate cap applied to each direction separately, shared by every
  connection through the proxy the way one radio link is shared;
* **cuts** — the connection is reset after a random number of forwarded bytes (seeded RNG,
  range per connection) and/or every ~N seconds (all live connections at once);
* **stalls** — after K forwarded bytes a connection stops forwarding but keeps both sockets open
  (``stall()``/``resume()`` do the same for the whole proxy at run time);
* **truncated responses** — only the first K bytes the server sends on a connection are passed
  on, then the connection is closed gracefully (the client sees a short response, not an error).

Counters (:class:`ProxyCounters`) record bytes each way, connections, cuts, stalls and
truncations. The proxy runs in-process (threads; ``with FaultProxy(...) as proxy:``) or as
``python -m bench.harness.faultproxy --target 127.0.0.1:PORT ...`` for benchmarks.

Only loopback addresses are accepted, so a test can never be pointed at a real network.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import queue
import random
import signal
import socket
import struct
import sys
import threading
import time
from dataclasses import asdict, dataclass

# Largest chunk read from a socket at a time. Small enough that the pacing of a 64 kbit/s link
# stays smooth (1 KiB at 8,000 B/s is 128 ms), large enough that unthrottled loopback is fast.
_CHUNK = 1024

# A queued unit of work for a writer: (due time, kind, bytes); kind is "data", "eof", "cut" or
# "truncate". Kinds are separate from the bytes so no payload can be mistaken for a command.
_Item = tuple[float, str, bytes]


class FaultProxyError(Exception):
    """A fault proxy was configured wrongly (non-loopback target, impossible numbers).

    Attributes:
        code: stable machine-readable code.
        message: English explanation.
    """

    code = "faultproxy_config"

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(f"[{self.code}] {message}")


def kbit_per_s(kbits: float) -> float:
    """Convert a link speed in kbit/s (1 kbit = 1,000 bits) to bytes per second."""
    return kbits * 1000.0 / 8.0


@dataclass(frozen=True)
class LinkProfile:
    """What the proxy does to traffic. Every fault is off by default.

    Attributes:
        delay_ms: one-way delay added in each direction (RTT grows by twice this).
        bandwidth_bytes_per_s: cap on each direction, shared by all connections; None = no cap.
        cut_after_bytes: (low, high) — each connection is reset once it has forwarded a number
            of bytes (both directions together) drawn uniformly from this range.
        cut_every_s: every ~N seconds (drawn uniformly from 0.5 N … 1.5 N) all live connections
            are reset.
        stall_after_bytes: a connection stops forwarding, sockets left open, after this many
            bytes (both directions together).
        truncate_response_after: only the first K bytes from the server on each connection are
            forwarded, then the connection is closed gracefully.
        seed: seed of the RNG that draws cut points and cut intervals (runs are repeatable).
    """

    delay_ms: float = 0.0
    bandwidth_bytes_per_s: float | None = None
    cut_after_bytes: tuple[int, int] | None = None
    cut_every_s: float | None = None
    stall_after_bytes: int | None = None
    truncate_response_after: int | None = None
    seed: int = 0

    @classmethod
    def village_link(cls, seed: int = 0) -> LinkProfile:
        """The weak link of DESIGN §5: 64 kbit/s, 300 ms round trip, a drop every ~20 s."""
        return cls(
            delay_ms=150.0, bandwidth_bytes_per_s=kbit_per_s(64), cut_every_s=20.0, seed=seed
        )

    def check(self) -> None:
        """Refuse impossible settings.

        Raises:
            FaultProxyError: a negative delay, a non-positive rate or interval, a bad range.
        """
        if self.delay_ms < 0:
            raise FaultProxyError("delay_ms must be >= 0")
        if self.bandwidth_bytes_per_s is not None and self.bandwidth_bytes_per_s <= 0:
            raise FaultProxyError("bandwidth_bytes_per_s must be > 0")
        if self.cut_after_bytes is not None:
            low, high = self.cut_after_bytes
            if low < 1 or high < low:
                raise FaultProxyError("cut_after_bytes must be a range 1 <= low <= high")
        if self.cut_every_s is not None and self.cut_every_s <= 0:
            raise FaultProxyError("cut_every_s must be > 0")
        for name in ("stall_after_bytes", "truncate_response_after"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise FaultProxyError(f"{name} must be >= 0")


@dataclass
class ProxyCounters:
    """Running totals; read them through :meth:`FaultProxy.counters` (a consistent copy)."""

    bytes_up: int = 0  # client -> server, bytes actually delivered to the server
    bytes_down: int = 0  # server -> client, bytes actually delivered to the client
    connections: int = 0
    cuts: int = 0
    stalls: int = 0
    truncations: int = 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Pacer:
    """A byte-rate limiter for one direction of the link (a token bucket with no burst).

    Each chunk reserves the link for ``len/rate`` seconds after the previous reservation ends,
    so the total time for N bytes is never below N/rate: the byte-ideal time is a true floor.
    """

    def __init__(self, rate: float | None) -> None:
        self._rate = rate
        self._lock = threading.Lock()
        self._free_at = 0.0

    def reserve(self, nbytes: int) -> float:
        """Return the monotonic time at which ``nbytes`` have finished crossing the link."""
        now = time.monotonic()
        if self._rate is None:
            return now
        with self._lock:
            start = max(now, self._free_at)
            self._free_at = start + nbytes / self._rate
            return self._free_at


class _Connection:
    """One proxied connection: two directions, each a reader thread and a writer thread."""

    def __init__(self, proxy: FaultProxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.server = server
        profile = proxy.profile
        self._lock = threading.Lock()
        self._forwarded = 0  # both directions, counted when read and let through
        self._down_forwarded = 0
        self._closed = threading.Event()
        self._stalled = threading.Event()
        self._done_directions = 0
        self._doomed = False
        with proxy._rng_lock:
            self._cut_at = (
                proxy._rng.randint(*profile.cut_after_bytes) if profile.cut_after_bytes else None
            )
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for src, dst, up in ((self.client, self.server, True), (self.server, self.client, False)):
            chunks: queue.Queue[_Item] = queue.Queue(maxsize=64)
            name = "up" if up else "down"
            self._threads.append(
                threading.Thread(
                    target=self._read, args=(src, chunks, up), name=f"fp-read-{name}", daemon=True
                )
            )
            self._threads.append(
                threading.Thread(
                    target=self._write, args=(dst, chunks, up), name=f"fp-write-{name}", daemon=True
                )
            )
        for thread in self._threads:
            thread.start()

    # --- fault decisions -------------------------------------------------------------------

    def _admit(self, data: bytes, up: bool) -> tuple[bytes, str | None]:
        """Decide how much of ``data`` may pass and what happens afterwards.

        Returns the bytes to forward and an action: None (carry on), "cut" or "truncate" (to
        apply once the returned bytes are delivered) or "hold" (the connection is stalled: the
        bytes are held back for good). A stall takes effect at once, here.
        """
        profile = self.proxy.profile
        with self._lock:
            if self._stalled.is_set() or self._doomed:
                return b"", "hold"
            limit = len(data)
            action: str | None = None
            candidates: list[tuple[int, str]] = []
            if self._cut_at is not None:
                candidates.append((self._cut_at - self._forwarded, "cut"))
            if profile.stall_after_bytes is not None:
                candidates.append((profile.stall_after_bytes - self._forwarded, "stall"))
            if not up and profile.truncate_response_after is not None:
                candidates.append(
                    (profile.truncate_response_after - self._down_forwarded, "truncate")
                )
            for room, what in sorted(candidates):
                if room <= limit:
                    limit, action = max(room, 0), what
                    break
            self._forwarded += limit
            if not up:
                self._down_forwarded += limit
            if action in ("cut", "truncate"):
                # Nothing more passes in either direction; the close follows the bytes already
                # admitted, so "cut after N bytes" never lets byte N+1 through.
                self._doomed = True
            elif action == "stall":
                # Stop both directions for good; the sockets stay open until a peer or the
                # proxy gives up, which is exactly what a client's read timeout must cope with.
                self._stalled.set()
                self.proxy._count("stalls", 1)
                action = None
            return data[:limit], action

    # --- pumps -----------------------------------------------------------------------------

    def _read(self, src: socket.socket, chunks: queue.Queue[_Item], up: bool) -> None:
        pacer = self.proxy._pacer_up if up else self.proxy._pacer_down
        delay = self.proxy.profile.delay_ms / 1000.0
        while not self._closed.is_set():
            self._wait_unstalled()
            try:
                data = src.recv(_CHUNK)
            except OSError:
                data = b""
            if not data:
                self._put(chunks, (time.monotonic() + delay, "eof", b""))
                return
            # A run-time stall may have begun while we were blocked in recv(): hold the bytes.
            self._wait_unstalled()
            data, action = self._admit(data, up)
            if action == "hold":
                continue
            if data:
                # Serialisation on the capped link first, then propagation delay.
                self._put(chunks, (pacer.reserve(len(data)) + delay, "data", data))
            if action is not None:
                self._put(chunks, (time.monotonic() + delay, action, b""))
                return

    def _write(self, dst: socket.socket, chunks: queue.Queue[_Item], up: bool) -> None:
        while not self._closed.is_set():
            try:
                due, kind, data = chunks.get(timeout=0.1)
            except queue.Empty:
                continue
            wait = due - time.monotonic()
            if wait > 0 and self._closed.wait(wait):
                return
            if kind == "cut":
                self.cut()
                return
            if kind == "truncate":
                self.close(abort=False, counter="truncations")
                return
            if kind == "eof":
                self._half_close(dst)
                return
            try:
                dst.sendall(data)
            except OSError:
                self.close(abort=True)
                return
            self.proxy._count("bytes_up" if up else "bytes_down", len(data))

    def _put(self, chunks: queue.Queue[_Item], item: _Item) -> None:
        while not self._closed.is_set():
            try:
                chunks.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _wait_unstalled(self) -> None:
        while not self._closed.is_set() and (
            self._stalled.is_set() or self.proxy._stalled.is_set()
        ):
            self._closed.wait(0.05)

    def _half_close(self, dst: socket.socket) -> None:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        with self._lock:
            self._done_directions += 1
            both = self._done_directions == 2
        if both:
            self.close(abort=False)

    # --- teardown --------------------------------------------------------------------------

    def cut(self) -> None:
        """Reset this connection now (counted once as a cut)."""
        self.close(abort=True, counter="cuts")

    def close(self, abort: bool, counter: str | None = None) -> bool:
        """Close both sockets; ``abort`` sends a reset instead of an orderly close.

        ``counter`` names the :class:`ProxyCounters` field to bump, once, *before* the sockets
        close, so a client that sees the close also sees the count. Returns True for the call
        that actually closed, False if already closed.
        """
        with self._lock:
            if self._closed.is_set():
                return False
            self._closed.set()
        if counter is not None:
            self.proxy._count(counter, 1)
        for sock in (self.client, self.server):
            try:
                if abort:
                    # SO_LINGER 0 turns close() into a TCP RST, like a link that dropped;
                    # SHUT_RD wakes our own reader blocked in recv() without sending a FIN.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.shutdown(socket.SHUT_RD)
                else:
                    sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                sock.close()
            except OSError:
                pass
        self.proxy._forget(self)
        return True

    def alive(self) -> bool:
        """True while any of this connection's threads is still running."""
        return any(thread.is_alive() for thread in self._threads)

    def join(self, timeout: float) -> None:
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)


class FaultProxy:
    """A loopback TCP proxy that injects the faults of a :class:`LinkProfile`.

    Use as a context manager (``with FaultProxy(("127.0.0.1", port), profile) as proxy``) or
    call :meth:`start` and :meth:`close`. ``proxy.port`` is where clients connect.
    """

    def __init__(self, target: tuple[str, int], profile: LinkProfile | None = None) -> None:
        """Prepare (but do not start) a proxy to ``target``.

        Raises:
            FaultProxyError: the target is not a loopback address or the profile is invalid.
        """
        host, port = target
        if not _is_loopback(host):
            raise FaultProxyError(f"target {host!r} is not a loopback address")
        self.target = (host, int(port))
        self.profile = profile or LinkProfile()
        self.profile.check()
        self._rng = random.Random(self.profile.seed)
        self._rng_lock = threading.Lock()
        self._pacer_up = _Pacer(self.profile.bandwidth_bytes_per_s)
        self._pacer_down = _Pacer(self.profile.bandwidth_bytes_per_s)
        self._counters = ProxyCounters()
        self._counters_lock = threading.Lock()
        self._connections: set[_Connection] = set()
        self._all_connections: list[_Connection] = []
        self._stalled = threading.Event()
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self.port = 0

    # --- life cycle ------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Bind 127.0.0.1:0 and start accepting. Returns self; ``self.port`` is set."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        listener.settimeout(0.1)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._threads.append(threading.Thread(target=self._accept_loop, name="fp-accept"))
        if self.profile.cut_every_s is not None:
            self._threads.append(threading.Thread(target=self._cut_loop, name="fp-cutter"))
        for thread in self._threads:
            thread.daemon = True
            thread.start()
        return self

    def close(self) -> None:
        """Stop accepting, reset every live connection and join all threads."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(5)
        if self._listener is not None:
            self._listener.close()
        for conn in list(self._connections):
            conn.close(abort=True)
        for conn in self._all_connections:
            conn.join(5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def address(self) -> tuple[str, int]:
        """Where clients connect: ``("127.0.0.1", port)``."""
        return ("127.0.0.1", self.port)

    # --- run-time controls -----------------------------------------------------------------

    def stall(self) -> None:
        """Stop forwarding on every connection (sockets stay open) until :meth:`resume`."""
        self._stalled.set()

    def resume(self) -> None:
        """Undo :meth:`stall`."""
        self._stalled.clear()

    def cut_all(self) -> int:
        """Reset every live connection now; returns how many were cut."""
        live = list(self._connections)
        for conn in live:
            conn.cut()
        return len(live)

    def counters(self) -> ProxyCounters:
        """A consistent copy of the running totals."""
        with self._counters_lock:
            return ProxyCounters(**asdict(self._counters))

    def live_connections(self) -> int:
        """How many proxied connections are open right now."""
        return len(self._connections)

    # --- internals -------------------------------------------------------------------------

    def _count(self, name: str, amount: int) -> None:
        with self._counters_lock:
            setattr(self._counters, name, getattr(self._counters, name) + amount)

    def _forget(self, conn: _Connection) -> None:
        self._connections.discard(conn)

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
                continue
            server.settimeout(None)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, client, server)
            self._connections.add(conn)
            if len(self._all_connections) >= 256:
                # Long benchmark runs open thousands of connections: keep only those whose
                # threads may still need joining.
                self._all_connections = [c for c in self._all_connections if c.alive()]
            self._all_connections.append(conn)
            self._count("connections", 1)
            conn.start()

    def _cut_loop(self) -> None:
        every = self.profile.cut_every_s
        assert every is not None
        while True:
            with self._rng_lock:
                interval = self._rng.uniform(0.5 * every, 1.5 * every)
            if self._stopping.wait(interval):
                return
            self.cut_all()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.harness.faultproxy",
        description="Fault-injecting TCP proxy on loopback (latency, bandwidth, cuts, stalls).",
    )
    parser.add_argument("--target", required=True, help="loopback HOST:PORT to forward to")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay per direction")
    parser.add_argument("--kbps", type=float, default=None, help="bandwidth cap in kbit/s")
    parser.add_argument("--cut-every", type=float, default=None, help="reset all every ~N s")
    parser.add_argument(
        "--cut-after-bytes", default=None, help="LOW-HIGH: reset each connection within this range"
    )
    parser.add_argument("--stall-after-bytes", type=int, default=None)
    parser.add_argument("--truncate-response-after", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--village-link",
        action="store_true",
        help="the DESIGN §5 weak link: 64 kbit/s, 300 ms RTT, a drop every ~20 s",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the proxy until SIGINT/SIGTERM; print the port, then the counters as JSON."""
    args = _parse_args(argv)
    host, _, port = args.target.rpartition(":")
    cut_range = None
    if args.cut_after_bytes:
        low, _, high = args.cut_after_bytes.partition("-")
        cut_range = (int(low), int(high or low))
    try:
        profile = (
            LinkProfile.village_link(args.seed)
            if args.village_link
            else LinkProfile(
                delay_ms=args.delay_ms,
                bandwidth_bytes_per_s=kbit_per_s(args.kbps) if args.kbps else None,
                cut_after_bytes=cut_range,
                cut_every_s=args.cut_every,
                stall_after_bytes=args.stall_after_bytes,
                truncate_response_after=args.truncate_response_after,
                seed=args.seed,
            )
        )
        proxy = FaultProxy((host, int(port)), profile)
    except (FaultProxyError, ValueError) as exc:
        print(f"faultproxy: {exc}", file=sys.stderr)
        return 2
    return _serve(proxy)


def _serve(proxy: FaultProxy) -> int:
    """Run ``proxy`` until SIGINT/SIGTERM, printing where it listens and then its counters."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with proxy:
        print(json.dumps({"listen": f"127.0.0.1:{proxy.port}"}), flush=True)
        stop.wait()
    print(json.dumps(asdict(proxy.counters())), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
