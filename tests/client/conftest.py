"""Fixtures for the device tests: a real store file in a temp dir, with a controllable clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from village_client_stub.store import DeviceStore

START_MS = 1_764_000_000_000  # 2025-11-24, a fixed "now" for repeatable stamps


class FakeClock:
    """A wall clock the test moves by hand (it may even go backwards, like a tablet's)."""

    def __init__(self, ms: int = START_MS) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms

    def advance(self, ms: int) -> None:
        self.ms += ms


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "device.db"


@pytest.fixture
def store(db_path: Path, clock: FakeClock) -> Iterator[DeviceStore]:
    created = DeviceStore.create(db_path, now_ms=clock)
    yield created
    created.close()
