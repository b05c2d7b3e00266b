"""Hybrid logical clock (HLC) stamps for the sync protocol (contracts §6).

A :class:`Stamp` is *48-bit wall milliseconds + 16-bit counter + node id*. Stamps are totally
ordered by ``(ms, counter, node)``; the node id (the device id) only breaks ties between two
devices that stamped the same millisecond and counter.

Two encodings, both exact round trips:

* text, ``f"{ms:012x}-{counter:04x}-{node}"`` — fixed-width lower-case hex, so plain string
  comparison of two stamp texts gives the same order as comparing the stamps (this is what the
  server stores and indexes);
* binary, 8 bytes big-endian ``ms << 16 | counter``, one length byte, then the node id in UTF-8
  (node ids are ASCII, 1–64 characters) — what a compact batch codec puts on the wire.

:class:`HybridClock` issues stamps for local events (:meth:`HybridClock.now`) and folds in stamps
or server times it receives (:meth:`HybridClock.observe`). Whatever the wall clock does (jump back,
stand still, jump forward), every stamp a clock issues is strictly greater than the previous one.

A stamp more than ``max_drift_ms`` ahead of a reference time (the server's clock) is *suspect*
(:func:`is_suspect`): a tablet whose clock runs in the future must not win races silently.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from sync_protocol.errors import ProtocolError

__all__ = [
    "DEFAULT_MAX_DRIFT_MS",
    "MAX_COUNTER",
    "MAX_MS",
    "MAX_NODE_LENGTH",
    "ClockRangeError",
    "HybridClock",
    "Stamp",
    "StampFormatError",
    "is_suspect",
    "wall_clock_ms",
]

MAX_MS = (1 << 48) - 1
MAX_COUNTER = (1 << 16) - 1
MAX_NODE_LENGTH = 64
DEFAULT_MAX_DRIFT_MS = 300_000

# Node ids are printable ASCII without spaces, so a stamp text never needs quoting and its byte
# order equals its character order.
_NODE_RE = re.compile(r"[!-~]{1,64}")
_TEXT_RE = re.compile(r"([0-9a-f]{12})-([0-9a-f]{4})-([!-~]{1,64})")


class StampFormatError(ProtocolError):
    """A stamp's text or binary form, or one of its parts, is not valid."""

    code = "stamp_invalid"
    default_message = "the clock stamp is not valid"
    default_message_zh = "时间戳格式无效"


class ClockRangeError(ProtocolError):
    """The clock would leave the 48-bit millisecond range (a wall clock after the year 10889)."""

    code = "clock_out_of_range"
    default_message = "the clock is out of the representable range"
    default_message_zh = "时钟超出可表示的范围"


def _check_node(node: object) -> str:
    if not isinstance(node, str) or not _NODE_RE.fullmatch(node):
        raise StampFormatError(
            f"node id must be 1-{MAX_NODE_LENGTH} printable ASCII characters without spaces, "
            f"got {node!r}",
            message_zh=f"节点编号必须是 1 至 {MAX_NODE_LENGTH} 个不含空格的可打印 ASCII 字符",
        )
    return node


@dataclass(frozen=True, order=True, slots=True)
class Stamp:
    """One HLC stamp: an immutable, hashable value ordered by ``(ms, counter, node)``.

    Raises:
        StampFormatError: (from the constructor) when ``ms`` is not in ``0..2**48-1``,
            ``counter`` not in ``0..65535`` or ``node`` not 1–64 printable ASCII characters.
    """

    ms: int
    counter: int
    node: str

    def __post_init__(self) -> None:
        if isinstance(self.ms, bool) or not isinstance(self.ms, int) or not 0 <= self.ms <= MAX_MS:
            raise StampFormatError(
                f"stamp milliseconds must be an integer in 0..{MAX_MS}, got {self.ms!r}",
                message_zh="时间戳毫秒数超出范围",
            )
        if (
            isinstance(self.counter, bool)
            or not isinstance(self.counter, int)
            or not 0 <= self.counter <= MAX_COUNTER
        ):
            raise StampFormatError(
                f"stamp counter must be an integer in 0..{MAX_COUNTER}, got {self.counter!r}",
                message_zh="时间戳计数器超出范围",
            )
        _check_node(self.node)

    def to_text(self) -> str:
        """Return the fixed-width text form; text order equals stamp order."""
        return f"{self.ms:012x}-{self.counter:04x}-{self.node}"

    def __str__(self) -> str:
        return self.to_text()

    @classmethod
    def parse(cls, text: str) -> Stamp:
        """Parse the text form made by :meth:`to_text`.

        Only the canonical form is accepted (lower-case hex, exact widths), so two texts are
        equal exactly when their stamps are.

        Raises:
            StampFormatError: when ``text`` is not a canonical stamp text.
        """
        match = _TEXT_RE.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise StampFormatError(
                f"not a clock stamp (want 12 hex digits, '-', 4 hex digits, '-', node): {text!r}",
                message_zh="不是有效的时间戳文本",
            )
        return cls(int(match.group(1), 16), int(match.group(2), 16), match.group(3))

    def to_bytes(self) -> bytes:
        """Return the binary form: 8 bytes ``ms << 16 | counter`` big-endian, length, node."""
        node = self.node.encode("ascii")
        return ((self.ms << 16) | self.counter).to_bytes(8, "big") + bytes((len(node),)) + node

    @classmethod
    def from_bytes(cls, data: bytes) -> Stamp:
        """Decode exactly one binary stamp (no trailing bytes).

        Raises:
            StampFormatError: when ``data`` is truncated, has trailing bytes or a bad node.
        """
        stamp, end = cls.read_from(data, 0)
        if end != len(data):
            raise StampFormatError(
                f"{len(data) - end} trailing bytes after the binary stamp",
                message_zh="二进制时间戳后有多余字节",
            )
        return stamp

    @classmethod
    def read_from(cls, data: bytes, offset: int = 0) -> tuple[Stamp, int]:
        """Decode one binary stamp starting at ``offset``; return it and the offset after it.

        Raises:
            StampFormatError: when the bytes are truncated or the node is not valid ASCII.
        """
        if len(data) < offset + 9:
            raise StampFormatError("binary stamp is truncated", message_zh="二进制时间戳不完整")
        packed = int.from_bytes(data[offset : offset + 8], "big")
        length = data[offset + 8]
        end = offset + 9 + length
        if len(data) < end:
            raise StampFormatError("binary stamp is truncated", message_zh="二进制时间戳不完整")
        try:
            node = bytes(data[offset + 9 : end]).decode("ascii")
        except UnicodeDecodeError as exc:
            raise StampFormatError(
                "binary stamp node id is not ASCII", message_zh="二进制时间戳的节点编号不是 ASCII"
            ) from exc
        return cls(packed >> 16, packed & MAX_COUNTER, node), end


def wall_clock_ms() -> int:
    """Milliseconds since the Unix epoch from the system clock."""
    return time.time_ns() // 1_000_000


def is_suspect(
    stamp: Stamp | str, reference_ms: int, max_drift_ms: int = DEFAULT_MAX_DRIFT_MS
) -> bool:
    """True when ``stamp`` is more than ``max_drift_ms`` ahead of ``reference_ms``.

    ``reference_ms`` is the trusted time (the server's clock when it received the stamp). Stamps
    behind the reference are never suspect: devices work offline for days.

    Raises:
        StampFormatError: when ``stamp`` is text that does not parse.
    """
    if isinstance(stamp, str):
        stamp = Stamp.parse(stamp)
    return stamp.ms - reference_ms > max_drift_ms


class HybridClock:
    """A hybrid logical clock owned by one node (a device, or the server).

    ``now_ms`` returns the wall clock in milliseconds (default: the system clock); tests pass a
    fake. The clock never issues the same or a smaller stamp twice, whatever ``now_ms`` returns.
    When 65,536 events fall within one millisecond the counter would overflow; the clock then moves
    on to the next millisecond (borrowing a millisecond from the future is harmless: the wall clock
    catches up and the order stays strict).
    """

    def __init__(
        self,
        node: str,
        now_ms: Callable[[], int] = wall_clock_ms,
        *,
        last: Stamp | None = None,
    ) -> None:
        """Create a clock for ``node``; ``last`` restores the last stamp issued (persisted state).

        Raises:
            StampFormatError: when ``node`` is not a valid node id.
        """
        self.node = _check_node(node)
        self._now_ms = now_ms
        self._ms = last.ms if last is not None else 0
        self._counter = last.counter if last is not None else -1

    @property
    def last(self) -> Stamp | None:
        """The last stamp issued, or ``None`` before the first event (persist it across restarts)."""
        if self._counter < 0:
            return None
        return Stamp(self._ms, self._counter, self.node)

    def _wall(self) -> int:
        wall = self._now_ms()
        if not 0 <= wall <= MAX_MS:
            raise ClockRangeError(f"wall clock {wall!r} ms is outside 0..{MAX_MS}")
        return wall

    def _issue(self, ms: int, counter: int) -> Stamp:
        if counter > MAX_COUNTER:
            ms, counter = ms + 1, 0
        if ms > MAX_MS:
            raise ClockRangeError(f"clock would pass {MAX_MS} ms")
        self._ms, self._counter = ms, counter
        return Stamp(ms, counter, self.node)

    def now(self) -> Stamp:
        """Issue a stamp for a local event (an edit); strictly greater than every earlier one.

        Raises:
            ClockRangeError: when the wall clock is outside the 48-bit range.
        """
        wall = self._wall()
        if wall > self._ms:
            return self._issue(wall, 0)
        return self._issue(self._ms, self._counter + 1)

    def observe(self, remote: Stamp | int) -> Stamp:
        """Fold in a received stamp, or a server time in ms, and issue a stamp for the receipt.

        The result is strictly greater than both the clock's previous stamp and ``remote``
        (for an ``int``, its ms is at least ``remote``). Callers should not observe stamps they
        already know to be suspect against the server time: doing so would drag this clock into
        the future too.

        Raises:
            ClockRangeError: when the wall clock or ``remote`` is outside the 48-bit range.
            StampFormatError: when ``remote`` is neither a :class:`Stamp` nor an ``int``.
        """
        if isinstance(remote, Stamp):
            remote_ms, remote_counter = remote.ms, remote.counter
        elif isinstance(remote, int) and not isinstance(remote, bool):
            if not 0 <= remote <= MAX_MS:
                raise ClockRangeError(f"remote time {remote!r} ms is outside 0..{MAX_MS}")
            # A bare time carries no event, so an event at that very millisecond may use counter 0.
            remote_ms, remote_counter = remote, -1
        else:
            raise StampFormatError(f"cannot observe {remote!r}: want a Stamp or int milliseconds")
        wall = self._wall()
        ms = max(wall, self._ms, remote_ms)
        if ms == self._ms and ms == remote_ms:
            counter = max(self._counter, remote_counter) + 1
        elif ms == self._ms:
            counter = self._counter + 1
        elif ms == remote_ms:
            counter = remote_counter + 1
        else:
            counter = 0
        return self._issue(ms, counter)
