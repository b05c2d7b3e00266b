"""Kill points: the real server process is killed (SIGKILL) again and again during a stream from
several devices, restarted on the same database each time, and afterwards every device agrees
with the server field by field — 0 records lost, 0 duplicated, 0 wrong (the "kill points" proof
of issue 16).

Three enrolled devices (one village each) keep filling households, editing and deleting records
and syncing with the real ``SyncClient`` over loopback HTTP, while the test kills
``python -m server serve`` at moments drawn from a seeded random generator (so the kills land
in every phase of the exchanges: hello, batch upload, commit, acknowledgement, download) and
starts it again on the same port, database and key folder. When the last kill is done the
devices sync to the end and the test compares. The counts are printed (``pytest -s``).

CI runs ``VILLAGE_SYNC_TEST_KILLS`` kills per database (default 20); set it higher for a long run.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness.county_server import REPO, START_TIMEOUT_S, CountyServer
from forms.instruments.samples import sample_household
from tests.e2e.conftest import VILLAGE, new_device, server_record
from village_client_stub.errors import DeviceError
from village_client_stub.records import RecordEditor
from village_client_stub.simulator import AdminSession, next_village
from village_client_stub.store import DeviceStore
from village_client_stub.sync_client import Backoff, SyncClient

KILLS = int(os.environ.get("VILLAGE_SYNC_TEST_KILLS", "20"))
DEVICES = 3
SEED = 16
#: Rounds a device works before it stops on its own (bounds the stream if kills are slow).
MAX_ROUNDS = 60
#: Sync attempts per round before the test gives up (each waits ≤ 0.5 s after a failure).
MAX_ATTEMPTS = 400


def restart(county: CountyServer, attempts: int = 20) -> None:
    """Start ``python -m server serve`` again on the same port, database and folders.

    The killed process's port can stay taken for a moment: a start that fails with "in use" is
    tried again, ``attempts`` times at most.
    """
    port = county.url.rsplit(":", 1)[1]
    for _ in range(attempts):
        log = county.log_path.with_name(f"server-{time.monotonic_ns()}.log")
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "server", "serve", "--host", "127.0.0.1", "--port", port],
                cwd=REPO,
                env=county.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and process.poll() is None:
            if re.search(r"listening on http://", log.read_text(errors="replace")):
                county.process, county.log_path = process, log
                return
            time.sleep(0.05)
        if process.poll() is None:
            process.kill()
        process.wait(30)
        if "in use" not in log.read_text(errors="replace"):
            break
        time.sleep(0.5)
    raise AssertionError(f"the server did not come back:\n{log.read_text()}")


@dataclass
class Device:
    """One tablet's work: what it did, so the comparison can count writes."""

    path: Path
    village: str
    ops: Counter[str] = field(default_factory=Counter)
    syncs: int = 0
    failed_attempts: int = 0
    error: BaseException | None = None


def _sync_until_done(store: DeviceStore, device: Device, in_flight: list[int]) -> None:
    """Sync until the outbox is empty; every failure (server killed, restarting) is retried."""
    for _ in range(MAX_ATTEMPTS):
        client = SyncClient(
            store, max_failures=1, refused_limit=None, backoff=Backoff(base_s=0.05, cap_s=0.5)
        )
        in_flight[0] += 1
        try:
            client.sync()
        except (DeviceError, OSError):
            device.failed_attempts += 1
            time.sleep(0.1)
            continue
        finally:
            in_flight[0] -= 1
        if not store.pending_ops():
            device.syncs += 1
            return
    raise AssertionError(f"{device.village}: the outbox never emptied")


def _work(device: Device, stop: threading.Event, in_flight: list[int], index: int) -> None:
    """Fill, edit, delete and sync until ``stop``; then sync the rest."""
    try:
        with DeviceStore.open(device.path) as store:
            editor = RecordEditor(store)
            rng = random.Random(SEED + index)
            houses: list[str] = []
            for round_no in range(MAX_ROUNDS):
                if stop.is_set():
                    break
                seed = index * 1000 + round_no
                household = sample_household(seed, village_code=device.village)
                where = {"village_code": device.village, "household_no": f"{seed % 10000:04d}"}
                for form_id in ("housing_safety", "drinking_water"):
                    before = len(store.pending_ops())
                    rid = editor.fill(form_id, household[form_id], household=where).record_id
                    device.ops[rid] += len(store.pending_ops()) - before
                    if form_id == "housing_safety":
                        houses.append(rid)
                edited = rng.choice(houses)
                # An edit to the value a record already has queues no op: count what was queued.
                before = len(store.pending_ops())
                editor.edit(edited, [f"floor_area={40 + round_no}.5"])
                device.ops[edited] += len(store.pending_ops()) - before
                if len(houses) > 3 and rng.random() < 0.3:
                    gone = houses.pop(rng.randrange(len(houses)))
                    before = len(store.pending_ops())
                    editor.delete(gone)
                    device.ops[gone] += len(store.pending_ops()) - before
                _sync_until_done(store, device, in_flight)
            _sync_until_done(store, device, in_flight)
    except BaseException as exc:  # reported by the test thread
        device.error = exc


def test_server_killed_at_many_points_loses_doubles_and_changes_nothing(
    county: CountyServer, admin: AdminSession, tmp_path: Path
) -> None:
    devices = []
    for index in range(DEVICES):
        village = next_village(VILLAGE, index)
        path = tmp_path / f"tablet-{index}.db"
        new_device(county, admin, path, scope=village).close()
        devices.append(Device(path, village))

    stop = threading.Event()
    in_flight = [0]
    threads = [
        threading.Thread(target=_work, args=(d, stop, in_flight, i), daemon=True)
        for i, d in enumerate(devices)
    ]
    for thread in threads:
        thread.start()
    rng = random.Random(SEED)
    kills = kills_mid_exchange = 0
    started = time.monotonic()
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.05, 1.5))
            kills_mid_exchange += in_flight[0] > 0
            os.kill(county.process.pid, signal.SIGKILL)
            county.process.wait(30)
            kills += 1
            restart(county)
    finally:
        stop.set()
        for thread in threads:
            thread.join(600)
    for device in devices:
        assert device.error is None, repr(device.error)

    admin = county.admin()
    lost = duplicated = wrong = compared = 0
    problems: list[str] = []
    for device in devices:
        with DeviceStore.open(device.path) as store:
            assert store.outbox() == []
            local = {r.record_id: r for r in store.records(include_deleted=True)}
            assert set(local) == set(device.ops)
            listed = admin.get(
                f"/api/v1/records?village={device.village}&include_deleted=true&limit=1000"
            )["items"]
            ids = Counter(r["record_id"] for r in listed)
            lost += len(set(local) - set(ids))
            duplicated += sum(n - 1 for n in ids.values())
            for record_id, record in local.items():
                detail = server_record(admin, record_id)
                writes = [h for h in detail["history"] if h["device_id"] == store.device_id]
                duplicated += max(0, len(writes) - device.ops[record_id])
                lost += max(0, device.ops[record_id] - len(writes))
                bad = detail["deleted"] != record.deleted or detail["data"] != record.data
                wrong += bad
                compared += 1
                if bad or len(writes) != device.ops[record_id]:
                    problems.append(
                        f"{record_id}: {device.ops[record_id]} ops, history {writes}, "
                        f"deleted {record.deleted}/{detail['deleted']}"
                    )

    summary = (
        f"kill points ({county.database_url.split(':')[0]}): {kills} SIGKILLs "
        f"({kills_mid_exchange} during an exchange), {DEVICES} devices, "
        f"{sum(d.syncs for d in devices)} syncs finished, "
        f"{sum(d.failed_attempts for d in devices)} attempts failed and retried, "
        f"{compared} records compared, {lost} lost, {duplicated} duplicated, {wrong} wrong "
        f"in {time.monotonic() - started:.0f} s"
    )
    print(summary, *problems, sep="\n")
    assert kills >= KILLS >= 1
    assert (lost, duplicated, wrong) == (0, 0, 0), (summary, problems)
