"""The field app's server side: the page, the web manifest, the asset manifest the service worker
precaches from (hashes of exactly the bytes served), the kill switch and the CSP."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
from pathlib import Path

from flask import Flask

from forms.instruments import SYSTEM_IDS
from server.field import CONTENT_SECURITY_POLICY, STATIC_DIR
from server.services.task_reasons import DEPARTMENTS
from tests.server.conftest import make_app


def _app(tmp_path: Path, **settings: object) -> Flask:
    return make_app(f"sqlite:///{tmp_path / 'county.db'}", tmp_path, **settings)


def test_every_precached_asset_is_served_with_the_hash_the_worker_checks(tmp_path: Path) -> None:
    client = _app(tmp_path).test_client()
    manifest = client.get("/field/asset-manifest.json").get_json()
    urls = {asset["url"] for asset in manifest["assets"]}
    assert {"/field/", "/field/manifest.webmanifest", "/field/instruments.json"} <= urls
    on_disk = {
        f"/field/static/{p.relative_to(STATIC_DIR).as_posix()}"
        for p in STATIC_DIR.rglob("*")
        if p.is_file()
    }
    assert on_disk <= urls
    for asset in manifest["assets"]:
        body = client.get(asset["url"]).data
        digest = hashlib.sha256(body).digest()
        assert asset["sha256"] == digest.hex(), asset["url"]
        assert asset["integrity"] == "sha256-" + base64.b64encode(digest).decode()
        assert asset["size"] == len(body)
    worker = client.get("/field/sw.js")
    assert worker.mimetype == "text/javascript"
    assert worker.headers["Cache-Control"] == "no-store"
    assert manifest["version"] in worker.get_data(as_text=True)
    assert manifest["kill"] is False


def test_the_page_is_chinese_first_installable_and_runs_only_own_scripts(tmp_path: Path) -> None:
    client = _app(tmp_path).test_client()
    page = client.get("/field/")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert '<html lang="zh-CN">' in html and '<meta charset="utf-8">' in html
    assert "同步" in html and 'rel="manifest"' in html
    assert page.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert (
        "script-src 'self';" in CONTENT_SECURITY_POLICY and "unsafe" not in CONTENT_SECURITY_POLICY
    )
    assert "<script>" not in html  # no inline script: the CSP would refuse it
    manifest = json.loads(client.get("/field/manifest.webmanifest").data)
    assert manifest["start_url"] == "/field/" and manifest["display"] == "standalone"
    assert manifest["name"].startswith("乡村数据同步")
    for icon in manifest["icons"]:
        served = client.get(icon["src"])
        assert served.status_code == 200, icon["src"]
        assert served.mimetype == icon["type"]
    assert client.get("/field/icon-192.png").data.startswith(b"\x89PNG\r\n\x1a\n")
    forms = client.get("/field/instruments.json").get_json()["forms"]
    assert [f["id"] for f in forms][:2] == ["household_roster", "housing_safety"]


def test_the_page_names_the_system_forms_and_the_departments(tmp_path: Path) -> None:
    # The app hides the system forms from the new-record list and names a task reason's source
    # by the department's Chinese name: both from the server's own lists, in the page settings.
    html = _app(tmp_path).test_client().get("/field/").get_data(as_text=True)
    found = re.search(r"data-settings='([^']*)'", html)
    assert found is not None
    settings = json.loads(found.group(1))
    assert settings["systemForms"] == list(SYSTEM_IDS) == ["verification_outcome"]
    assert settings["departments"]["medical_insurance"] == "医保"
    assert set(settings["departments"]) == set(DEPARTMENTS)


def test_the_release_label_changes_the_version_and_the_worker(tmp_path: Path) -> None:
    first = _app(tmp_path / "a").test_client()
    second = _app(tmp_path / "b", FIELD_APP_RELEASE="2026-12-03").test_client()
    one = first.get("/field/asset-manifest.json").get_json()["version"]
    two = second.get("/field/asset-manifest.json").get_json()["version"]
    assert one != two
    assert first.get("/field/sw.js").data != second.get("/field/sw.js").data


def test_the_kill_switch_serves_a_worker_that_removes_itself(tmp_path: Path) -> None:
    client = _app(tmp_path, FIELD_APP_KILL_SWITCH=True).test_client()
    worker = client.get("/field/sw.js").get_data(as_text=True)
    assert "registration.unregister()" in worker
    assert 'addEventListener("fetch"' not in worker
    assert client.get("/field/asset-manifest.json").get_json()["kill"] is True
    kill_page = client.get("/field/sw-kill")
    assert kill_page.status_code == 200 and "停用离线缓存" in kill_page.get_data(as_text=True)


def test_only_files_of_the_app_are_served(tmp_path: Path) -> None:
    client = _app(tmp_path).test_client()
    assert client.get("/field/static/../__init__.py").status_code == 404
    assert client.get("/field/static/app/missing.js").status_code == 404
    assert client.get("/field/icon-64.png").status_code == 404
    ping = client.get("/field/ping")
    assert ping.get_json()["ok"] is True and ping.headers["Cache-Control"] == "no-store"


def test_assets_go_gzipped_to_a_browser_that_accepts_it(tmp_path: Path) -> None:
    client = _app(tmp_path).test_client()
    plain = client.get("/field/static/app/app.js")
    packed = client.get("/field/static/app/app.js", headers={"Accept-Encoding": "gzip, br"})
    assert "Content-Encoding" not in plain.headers
    assert packed.headers["Content-Encoding"] == "gzip"
    assert packed.headers["Vary"] == "Accept-Encoding"
    assert len(packed.data) < len(plain.data) / 2
    assert gzip.decompress(packed.data) == plain.data


def test_every_relative_import_of_every_module_is_a_precached_url(tmp_path: Path) -> None:
    # The engines' modules import each other by relative URL, so the worker must hold each file
    # under its own path: an import that resolved elsewhere would fail offline.
    from bench.field_app import _DYNAMIC_IMPORT, _STATIC_IMPORT, _resolve

    manifest = _app(tmp_path).test_client().get("/field/asset-manifest.json").get_json()
    urls = {asset["url"] for asset in manifest["assets"]}
    imports = 0
    for url in sorted(u for u in urls if u.endswith(".js")):
        text = (STATIC_DIR / url.removeprefix("/field/static/")).read_text(encoding="utf-8")
        for relative in _STATIC_IMPORT.findall(text) + _DYNAMIC_IMPORT.findall(text):
            imports += 1
            assert _resolve(url, relative) in urls, f"{url} imports {relative}"
    assert imports > 30  # the engines import each other a lot; the scan found them
