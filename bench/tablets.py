"""Simulated tablets for the server benches: enrolled, forms picked up, households filled offline.

``bench ingest``, ``bench peak`` and ``bench device_memory`` all start from the same tablets; they
live here so those benches import this module, not each other.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from bench._county import ServerProcess
from forms.instruments.samples import DEFAULT_MONITORING_LINE
from village_client_stub.simulator import DeviceRun, Simulator, fill_households, next_village
from village_client_stub.store import DeviceStore
from village_client_stub.sync_client import SyncClient
from village_client_stub.transport import HttpTransport

FIRST_VILLAGE = "530102001201"


def prepare_devices(
    server: ServerProcess, folder: Path, devices: int, households: int, *, first_index: int = 0
) -> list[DeviceRun]:
    """Enrol ``devices`` tablets, pick up forms and lines, fill ``households`` each (offline).

    Tablet ``first_index + i`` gets its own village and its own sample seeds, so several calls
    on one server never share a household.
    """
    simulator = Simulator(
        server.url, folder, admin_user="admin", admin_password=server.admin_password
    )
    folder.mkdir(parents=True, exist_ok=True)
    year = date.today().year
    runs = []
    for i in range(first_index, first_index + devices):
        village = next_village(FIRST_VILLAGE, i)
        simulator.admin.set_monitoring_line(village, year, DEFAULT_MONITORING_LINE)
        run = simulator.new_device(i, village)
        with DeviceStore.open(run.db_path) as store:
            SyncClient(store, HttpTransport(server.url)).sync()
            seeds = range(i * households, (i + 1) * households)
            run.records = len(fill_households(store, village, list(seeds)))
        runs.append(run)
    return runs
