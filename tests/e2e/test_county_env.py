"""The e2e server fixture ignores the developer's own ``VILLAGE_SYNC_*`` settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.harness.county_server import start_county_server


def test_exported_settings_do_not_reach_the_test_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = tmp_path / "developer.db"
    monkeypatch.setenv("VILLAGE_SYNC_DATABASE_URL", f"sqlite:///{own}")
    monkeypatch.setenv("VILLAGE_SYNC_KEY_DIR", str(tmp_path / "developer-keys"))
    database = tmp_path / "county.db"
    server = start_county_server(f"sqlite:///{database}", tmp_path / "county")
    try:
        server.admin()
    finally:
        server.stop()
    assert database.exists()
    assert not own.exists()
    assert not (tmp_path / "developer-keys").exists()
    assert (tmp_path / "county" / "keys").exists()
