"""Drive many simulated tablets against a real county server: enrol, fill, sync.

Each simulated device is a real device store (its own SQLite file in a folder) enrolled with a
fresh one-time code that the simulator issues through the admin API. It fills realistic
households (``forms.instruments.samples.sample_household``: the six built-in instruments, with
Chinese names, valid ID numbers, incomes that fit the monitoring line) with the same
``RecordEditor`` the ``fill`` verb uses, then syncs with the same :class:`SyncClient` as
``village-device sync``. Used by ``village-device simulate``, the end-to-end tests and the
benchmarks.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from forms.instruments.samples import DEFAULT_MONITORING_LINE, sample_household
from village_client_stub.enrollment import enroll
from village_client_stub.records import RecordEditor
from village_client_stub.store import DeviceStore
from village_client_stub.sync_client import SyncClient, SyncReport
from village_client_stub.transport import HttpTransport

__all__ = [
    "AdminSession",
    "DeviceRun",
    "SimulationResult",
    "Simulator",
    "fill_households",
    "next_village",
]

#: The instruments filled per household, in the order a work team visits them.
INSTRUMENTS: tuple[str, ...] = (
    "household_roster",
    "housing_safety",
    "drinking_water",
    "compulsory_education",
    "medical_insurance",
    "monitoring_household",
)


class AdminSession:
    """A county admin logged in over the HTTP API (token auth)."""

    def __init__(self, transport: HttpTransport, username: str, password: str) -> None:
        """Log in.

        Raises:
            ServerError: wrong credentials (``invalid_credentials``) or rate limited.
            TransportError: the server could not be reached.
        """
        self.transport = transport
        answer = transport.post_json(
            "/api/v1/auth/login", {"username": username, "password": password}
        )
        self.headers = {"Authorization": f"Bearer {answer['token']}"}

    def issue_code(self, scope: str, label: str = "") -> str:
        """A fresh one-time enrollment code for ``scope`` (a village or township code)."""
        answer = self.transport.post_json(
            "/api/v1/enrollment-codes", {"scope": scope, "label": label}, self.headers
        )
        return str(answer["code"])

    def set_monitoring_line(self, region: str, year: int, income_line: float) -> None:
        """Set the income line of ``region`` for ``year`` (idempotent)."""
        body = json.dumps({"income_line": float(income_line)}).encode()
        response = self.transport.request(
            "PUT",
            f"/api/v1/monitoring-lines/{region}/{year}",
            body,
            {"Content-Type": "application/json", **self.headers},
        )
        if response.status >= 400:
            raise response.error()

    def get(self, path: str) -> Any:
        """GET an admin resource as JSON."""
        return self.transport.get_json(path, self.headers)

    def post(self, path: str, payload: Any) -> Any:
        """POST JSON to an admin resource and return the JSON answer."""
        return self.transport.post_json(path, payload, self.headers)


def next_village(code: str, step: int) -> str:
    """The village code ``step`` villages after ``code`` in the same township (12 digits)."""
    return f"{int(code) + step:012d}"


def fill_households(
    store: DeviceStore,
    village: str,
    seeds: Sequence[int],
    *,
    form_ids: Sequence[str] = INSTRUMENTS,
    today: date | None = None,
    monitoring_line: float = DEFAULT_MONITORING_LINE,
) -> list[str]:
    """Fill the sample household of each seed in ``village``; returns the new record ids.

    Raises the editor's errors (``RecordInvalid`` for a sample that does not validate here,
    ``UnknownForm`` when the device lacks an instrument).
    """
    editor = RecordEditor(store, today=today)
    record_ids: list[str] = []
    for seed in seeds:
        household = sample_household(
            seed, village_code=village, today=editor.today, monitoring_line=monitoring_line
        )
        roster = household["household_roster"]
        key = {"village_code": village, "household_no": str(roster["household_no"])}
        for form_id in form_ids:
            result = editor.fill(form_id, household[form_id], household=key)
            record_ids.append(result.record_id)
    return record_ids


@dataclass
class DeviceRun:
    """One simulated device: where its file is, what it filled, how its sync went."""

    index: int
    db_path: Path
    device_id: str
    village: str
    records: int = 0
    fill_s: float = 0.0
    report: SyncReport | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "index": self.index,
            "db": str(self.db_path),
            "device_id": self.device_id,
            "village": self.village,
            "records": self.records,
            "fill_s": round(self.fill_s, 3),
            "sync": self.report.to_dict() if self.report else None,
            "error": self.error,
        }


@dataclass
class SimulationResult:
    """All devices of one run and the wall time of the sync phase."""

    devices: list[DeviceRun] = field(default_factory=list)
    sync_wall_s: float = 0.0

    @property
    def records(self) -> int:
        """Records filled across all devices."""
        return sum(d.records for d in self.devices)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "devices": [d.to_dict() for d in self.devices],
            "records": self.records,
            "sync_wall_s": round(self.sync_wall_s, 3),
            "failed_devices": sum(1 for d in self.devices if d.error),
        }

    def lines(self) -> list[str]:
        """A short Chinese summary, one line per device."""
        out = []
        for d in self.devices:
            if d.error:
                out.append(f"设备 {d.index} {d.device_id}：失败 {d.error}")
                continue
            assert d.report is not None  # set whenever there is no error
            out.append(
                f"设备 {d.index} {d.device_id} 村 {d.village}：{d.records} 条记录，"
                f"确认 {d.report.ops_acked}，上传 {d.report.bytes_up} B，"
                f"{d.report.exchanges} 次交换，{d.report.elapsed_s:.1f} 秒"
            )
        out.append(f"共 {self.records} 条记录，同步用时 {self.sync_wall_s:.1f} 秒")
        return out


class Simulator:
    """Enrols devices in ``folder`` against ``server_url`` and drives them.

    ``transport_factory(url)`` builds each device's transport (tests route devices through a
    fault proxy by giving another URL here); the admin always talks to ``server_url``.
    """

    def __init__(
        self,
        server_url: str,
        folder: Path,
        *,
        admin_user: str,
        admin_password: str,
        form_ids: Sequence[str] | None = None,
        device_url: str | None = None,
        today: date | None = None,
        transport_factory: Callable[[str], HttpTransport] = HttpTransport,
    ) -> None:
        """Log in as the admin.

        Raises:
            ServerError, TransportError: as :class:`AdminSession`.
        """
        self.server_url = server_url
        self.device_url = device_url or server_url
        self.folder = Path(folder)
        self.form_ids = tuple(form_ids or INSTRUMENTS)
        self.today = today or date.today()
        self.transport_factory = transport_factory
        self.admin = AdminSession(HttpTransport(server_url), admin_user, admin_password)

    def new_device(self, index: int, village: str) -> DeviceRun:
        """Create and enrol device ``index`` for ``village`` (forms downloaded).

        Raises the enrollment errors (:func:`village_client_stub.enrollment.enroll`).
        """
        path = self.folder / f"device-{index:03d}.db"
        with DeviceStore.create(path) as store:
            code = self.admin.issue_code(village, label=f"simulated tablet {index}")
            enroll(store, self.device_url, code, transport=self.transport_factory(self.device_url))
            return DeviceRun(index=index, db_path=path, device_id=store.device_id, village=village)

    def run(
        self,
        *,
        devices: int,
        households: int,
        first_village: str,
        seed: int = 0,
        parallel: bool = False,
    ) -> SimulationResult:
        """Enrol ``devices`` devices (one village each), fill ``households`` each, sync all.

        A device whose sync fails is reported with its error; the others carry on.
        """
        year = self.today.year
        for i in range(devices):
            # The monitoring instrument is judged against the line; set it for every village.
            self.admin.set_monitoring_line(
                next_village(first_village, i), year, DEFAULT_MONITORING_LINE
            )
        result = SimulationResult()
        for i in range(devices):
            run = self.new_device(i, next_village(first_village, i))
            started = time.monotonic()
            with DeviceStore.open(run.db_path) as store:
                # Pick the line up from the server before filling (it is evaluation context).
                SyncClient(store, self.transport_factory(self.device_url)).sync()
                seeds = range(seed + i * households, seed + (i + 1) * households)
                run.records = len(
                    fill_households(
                        store, run.village, list(seeds), form_ids=self.form_ids, today=self.today
                    )
                )
            run.fill_s = time.monotonic() - started
            result.devices.append(run)
        started = time.monotonic()
        if parallel:
            threads = [
                threading.Thread(target=self._sync_one, args=(run,), name=f"sim-{run.index}")
                for run in result.devices
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        else:
            for run in result.devices:
                self._sync_one(run)
        result.sync_wall_s = time.monotonic() - started
        return result

    def _sync_one(self, run: DeviceRun) -> None:
        # Each thread opens its own store: a store object belongs to one thread.
        with DeviceStore.open(run.db_path) as store:
            try:
                run.report = SyncClient(store, self.transport_factory(self.device_url)).sync()
            except Exception as exc:  # one device failing must not stop the others
                run.error = f"{type(exc).__name__}: {exc}"
