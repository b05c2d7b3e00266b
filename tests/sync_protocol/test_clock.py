"""Hybrid logical clock: stamp encodings, ordering, monotonicity, overflow, suspect stamps."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync_protocol.clock import (
    MAX_COUNTER,
    MAX_MS,
    ClockRangeError,
    HybridClock,
    Stamp,
    StampFormatError,
    is_suspect,
)
from sync_protocol.errors import ProtocolError

nodes = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=64
)
stamps = st.builds(
    Stamp,
    ms=st.integers(0, MAX_MS),
    counter=st.integers(0, MAX_COUNTER),
    node=nodes,
)


class FakeWall:
    """A wall clock the test moves by hand."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def test_text_form_is_fixed_width_and_round_trips() -> None:
    stamp = Stamp(1_764_000_000_000, 3, "dev-7f3a")
    assert stamp.to_text() == "019ab697e800-0003-dev-7f3a"
    assert str(stamp) == stamp.to_text()
    assert Stamp.parse(stamp.to_text()) == stamp


def test_binary_form_round_trips_and_reads_at_offset() -> None:
    stamp = Stamp(42, 65535, "server")
    data = stamp.to_bytes()
    assert len(data) == 8 + 1 + len("server")
    assert Stamp.from_bytes(data) == stamp
    prefixed = b"xy" + data + b"tail"
    assert Stamp.read_from(prefixed, 2) == (stamp, 2 + len(data))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "019ABA8A8C00-0003-dev",  # upper-case hex is not canonical
        "19aba8a8c00-0003-dev",  # 11 digits
        "019aba8a8c00-003-dev",
        "019aba8a8c00-0003-",
        "019aba8a8c00-0003-has space",
        "019aba8a8c00-0003-" + "n" * 65,
        "019aba8a8c00_0003_dev",
    ],
)
def test_parse_refuses_non_canonical_text(text: str) -> None:
    with pytest.raises(StampFormatError) as info:
        Stamp.parse(text)
    assert info.value.code == "stamp_invalid"
    assert isinstance(info.value, ProtocolError)
    assert info.value.message_zh


@pytest.mark.parametrize(
    ("ms", "counter", "node"),
    [
        (-1, 0, "a"),
        (MAX_MS + 1, 0, "a"),
        (0, MAX_COUNTER + 1, "a"),
        (0, 0, ""),
        (0, 0, "é"),
        (True, 0, "a"),
    ],
)
def test_constructor_refuses_out_of_range_parts(ms: int, counter: int, node: str) -> None:
    with pytest.raises(StampFormatError):
        Stamp(ms, counter, node)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00" * 8,
        b"\x00" * 8 + b"\x05abc",
        b"\x00" * 8 + b"\x01\xff",
        b"\x00" * 8 + b"\x01ab",
    ],
)
def test_from_bytes_refuses_truncated_or_trailing_or_non_ascii(data: bytes) -> None:
    with pytest.raises(StampFormatError):
        Stamp.from_bytes(data)


@settings(max_examples=200)
@given(stamps, stamps)
def test_text_order_equals_stamp_order(a: Stamp, b: Stamp) -> None:
    assert (a < b) == (a.to_text() < b.to_text())
    assert (a == b) == (a.to_text() == b.to_text())
    assert (a < b) == (a.to_bytes()[:8] + a.node.encode() < b.to_bytes()[:8] + b.node.encode())


@settings(max_examples=200)
@given(stamps)
def test_encodings_round_trip(stamp: Stamp) -> None:
    assert Stamp.parse(stamp.to_text()) == stamp
    assert Stamp.from_bytes(stamp.to_bytes()) == stamp
    assert hash(Stamp.parse(stamp.to_text())) == hash(stamp)


def test_now_follows_wall_clock_and_counts_within_a_millisecond() -> None:
    wall = FakeWall(1000)
    clock = HybridClock("dev-a", wall)
    assert clock.last is None
    assert clock.now() == Stamp(1000, 0, "dev-a")
    assert clock.now() == Stamp(1000, 1, "dev-a")
    wall.ms = 2000
    assert clock.now() == Stamp(2000, 0, "dev-a")
    assert clock.last == Stamp(2000, 0, "dev-a")


def test_wall_clock_going_back_never_makes_the_clock_go_back() -> None:
    wall = FakeWall(5000)
    clock = HybridClock("dev-a", wall)
    first = clock.now()
    wall.ms = 10  # someone set the tablet's date back
    second = clock.now()
    assert second > first
    assert second == Stamp(5000, 1, "dev-a")


def test_counter_overflow_moves_to_next_millisecond() -> None:
    clock = HybridClock("dev-a", FakeWall(7), last=Stamp(7, MAX_COUNTER - 1, "dev-a"))
    assert clock.now() == Stamp(7, MAX_COUNTER, "dev-a")
    assert clock.now() == Stamp(8, 0, "dev-a")


def test_observe_a_stamp_ahead_moves_past_it() -> None:
    clock = HybridClock("dev-a", FakeWall(1000))
    clock.now()
    remote = Stamp(9000, 4, "dev-b")
    got = clock.observe(remote)
    assert got == Stamp(9000, 5, "dev-a")
    assert clock.now() == Stamp(9000, 6, "dev-a")


def test_observe_same_millisecond_takes_the_larger_counter() -> None:
    clock = HybridClock("dev-a", FakeWall(1000), last=Stamp(1000, 9, "dev-a"))
    assert clock.observe(Stamp(1000, 3, "dev-b")) == Stamp(1000, 10, "dev-a")
    assert clock.observe(Stamp(1000, 30, "dev-b")) == Stamp(1000, 31, "dev-a")


def test_observe_an_older_stamp_still_ticks() -> None:
    clock = HybridClock("dev-a", FakeWall(1000), last=Stamp(5000, 0, "dev-a"))
    assert clock.observe(Stamp(10, 0, "dev-b")) == Stamp(5000, 1, "dev-a")


def test_observe_server_time_pulls_a_slow_tablet_forward() -> None:
    # A tablet whose clock is a day behind folds in the server time from a sync response.
    wall = FakeWall(1_000_000)
    clock = HybridClock("dev-a", wall)
    clock.now()
    server_ms = 1_000_000 + 86_400_000
    assert clock.observe(server_ms) == Stamp(server_ms, 0, "dev-a")
    edit = clock.now()
    assert edit.ms == server_ms
    assert not is_suspect(edit, server_ms + 60_000)


def test_observe_refuses_bad_input() -> None:
    clock = HybridClock("dev-a", FakeWall(1))
    with pytest.raises(StampFormatError):
        clock.observe("019aba8a8c00-0003-dev")  # type: ignore[arg-type]
    with pytest.raises(ClockRangeError):
        clock.observe(MAX_MS + 1)


def test_wall_clock_out_of_range_is_a_named_error() -> None:
    clock = HybridClock("dev-a", FakeWall(-5))
    with pytest.raises(ClockRangeError) as info:
        clock.now()
    assert info.value.code == "clock_out_of_range"


def test_node_must_be_valid() -> None:
    with pytest.raises(StampFormatError):
        HybridClock("has space")


def test_system_clock_default_is_plausible() -> None:
    stamp = HybridClock("dev-a").now()
    assert stamp.ms > 1_700_000_000_000


def test_is_suspect_only_for_stamps_far_ahead() -> None:
    reference = 1_000_000_000
    assert not is_suspect(Stamp(reference + 300_000, 0, "d"), reference)
    assert is_suspect(Stamp(reference + 300_001, 0, "d"), reference)
    assert not is_suspect(Stamp(0, 0, "d"), reference)  # days offline is normal
    assert is_suspect(Stamp(reference + 2, 0, "d").to_text(), reference, max_drift_ms=1)


@settings(max_examples=150)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("now"), st.integers(0, 10_000)),
            st.tuples(st.just("observe_ms"), st.integers(0, 10_000)),
            st.tuples(
                st.just("observe"), stamps.map(lambda s: Stamp(s.ms % 20_000, s.counter, s.node))
            ),
        ),
        min_size=1,
        max_size=60,
    )
)
def test_clock_is_strictly_monotonic_whatever_the_wall_clock_does(events: list) -> None:
    wall = FakeWall(0)
    clock = HybridClock("dev-a", wall)
    issued: list[Stamp] = []
    for action, arg in events:
        if action == "now":
            wall.ms = arg
            issued.append(clock.now())
        elif action == "observe_ms":
            got = clock.observe(arg)
            assert got.ms >= arg
            issued.append(got)
        else:
            got = clock.observe(arg)
            assert (got.ms, got.counter) > (arg.ms, arg.counter)
            issued.append(got)
    assert issued == sorted(set(issued))
    assert all(s.ms >= 0 for s in issued)
