"""Sneakernet: a tablet with no link writes its outbox to a file, the township office imports
it (``python -m server import-batch``), importing again changes nothing, and the tablet learns
the acks on its next normal sync — real ``village-device`` and a real server process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.harness.county_server import start_county_server
from forms.instruments.samples import sample_household
from tests.e2e.conftest import VILLAGE, CountyServer, cli_json, device_cli, server_records
from village_client_stub.simulator import AdminSession


@pytest.fixture
def county(tmp_path: Path) -> Iterator[CountyServer]:
    """One engine is enough here: the import runs the ordinary exchange, which the sync tests
    run on both (and every CLI call is a process start)."""
    server = start_county_server(f"sqlite:///{tmp_path / 'county.db'}", tmp_path / "county")
    try:
        yield server
    finally:
        server.stop()


def test_an_outbox_file_is_imported_once_and_the_tablet_learns_the_acks(
    county: CountyServer, admin: AdminSession, tmp_path: Path
) -> None:
    db = tmp_path / "tablet.db"
    device_cli(db, "init")
    enrolled = device_cli(db, "enroll", "--server", county.url, "--code", admin.issue_code(VILLAGE))
    assert enrolled.returncode == 0, enrolled.stderr
    for number, seed in (("0001", 1),):
        record = tmp_path / f"house-{number}.json"
        house = sample_household(seed, village_code=VILLAGE)["housing_safety"]
        record.write_text(json.dumps(house, ensure_ascii=False), encoding="utf-8")
        filled = device_cli(
            db,
            "fill",
            "housing_safety",
            "--household",
            f"{VILLAGE}/{number}",
            "--from",
            str(record),
        )
        assert filled.returncode == 0, filled.stdout + filled.stderr

    outbox = tmp_path / "outbox.vsync"
    exported = cli_json(device_cli(db, "export-outbox", str(outbox)))
    assert exported["ops"] == 1 and outbox.stat().st_size == exported["bytes"]
    again = device_cli(db, "export-outbox", str(outbox))
    assert again.returncode == 1 and json.loads(again.stdout)["error"]["code"] == "bad_input"

    # A file cut short or altered is refused with where it is wrong; nothing is applied.
    damaged = tmp_path / "damaged.vsync"
    data = bytearray(outbox.read_bytes())
    data[-10] ^= 0xFF
    damaged.write_bytes(bytes(data))
    refused = county.cli("import-batch", str(damaged))
    assert refused.returncode != 0 and "outbox_file_invalid" in refused.stderr
    assert "'where': 'body'" in refused.stderr
    assert server_records(admin) == []

    imported = county.cli("import-batch", str(outbox))
    assert imported.returncode == 0, imported.stderr
    assert "1 ops in the file, 1 newly acknowledged" in imported.stdout
    assert len(server_records(admin)) == 1
    twice = county.cli("import-batch", str(outbox))
    assert twice.returncode == 0 and "already imported" in twice.stdout
    assert len(server_records(admin)) == 1

    # The tablet still holds the op until it hears the ack, on its next sync.
    synced = cli_json(device_cli(db, "sync"))
    assert synced["ok"] and synced["ops_acked"] == 1 and synced["pending_ops"] == 0
    assert len(server_records(admin)) == 1
    audit = admin.get("/api/v1/audit?action=outbox.import")
    entries = audit["items"] if isinstance(audit, dict) else audit
    assert [e["details"]["already_imported"] for e in entries] == [True, False]
