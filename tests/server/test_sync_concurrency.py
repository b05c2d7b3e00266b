"""Concurrent exchanges: two devices upload at the same time while a third downloads in a loop.

The revision counter is taken inside each writing transaction, so a reader's cursor can never
pass a revision whose row commits later. Writers here only create records, so a record the
reader's cursor skipped would never come back: the reader ending up with every record proves no
row was skipped. Run on PostgreSQL (concurrent writers for real) and on SQLite (serialised).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from tests.server.sync_device import (
    HOUSE_A,
    OTHER_VILLAGE,
    TOWNSHIP,
    VILLAGE,
    SyncDevice,
    county,
)

__all__ = ["county"]  # the fixture, imported for pytest

ROUNDS = 8
PER_ROUND = 4


def test_a_third_devices_cursor_never_skips_a_row_under_concurrent_writers(
    county: Flask, client: FlaskClient, admin_headers: dict[str, str]
) -> None:
    writers = [
        SyncDevice.enroll(client, admin_headers, VILLAGE),
        SyncDevice.enroll(client, admin_headers, OTHER_VILLAGE),
    ]
    reader = SyncDevice.enroll(client, admin_headers, TOWNSHIP)
    written: list[set[str]] = [set(), set()]
    seen_per_exchange: list[int] = []
    errors: list[BaseException] = []
    done = threading.Event()
    reader_started = threading.Event()

    def guarded(work: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            try:
                work()
            except BaseException as exc:  # re-raised in the main thread below
                errors.append(exc)

        return run

    def write(index: int) -> None:
        device = writers[index]
        device.client = county.test_client()
        assert reader_started.wait(timeout=60)
        for round_no in range(ROUNDS):
            for n in range(PER_ROUND):
                written[index].add(
                    device.create(
                        "housing_safety",
                        HOUSE_A,
                        village=device.scope,
                        household_no=f"W{index}-{round_no}-{n}",
                    )
                )
            reply = device.sync(batch_size=2)
            assert all(a.status == "applied" for ack in reply.acks for a in ack.acks)

    def read() -> None:
        reader.client = county.test_client()
        while not done.is_set():
            before = len(reader.states)
            reader.sync()
            seen_per_exchange.append(len(reader.states) - before)
            reader_started.set()

    threads = [threading.Thread(target=guarded(lambda i=i: write(i))) for i in range(2)]
    reading = threading.Thread(target=guarded(read))
    reading.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    done.set()
    reading.join(timeout=300)
    if errors:
        raise errors[0]

    reader.sync()  # whatever committed after the reader's last exchange
    everything = written[0] | written[1]
    assert len(everything) == 2 * ROUNDS * PER_ROUND
    assert set(reader.states) == everything
    # The reader really ran alongside the writers (it is not one final bulk download).
    assert len(seen_per_exchange) > 1
    # And its cursor is where the county's counter stands: nothing left behind it.
    final = reader.sync()
    assert all(not page.records for page in final.downloads)
