"""The field app in Debian's Chromium, against a real county server (issue 15, the shell's story).

A fault proxy (no faults) sits between the browser and the server so the server can be restarted
with a new release behind the same origin. The story at 360 px: the service worker installs and
precaches exactly the asset manifest; with the network off the shell still loads and a draft typed
before the reload is still there; IndexedDB read raw holds no field value, name or ID number in
clear; POSTs never pass through the worker; a new release shows the update prompt without
reloading over the draft, and the update keeps it; the kill page unregisters the worker, and so
does ``FIELD_APP_KILL_SWITCH`` on the server, in the running app, without a reload.
The second test is issue 15's whole story with the engines wired (see its docstring).
Screenshots at 360 and 1280 px go to ``tests/artifacts/field/``.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bench.harness.county_server import REPO, CountyServer, start_county_server
from bench.harness.faultproxy import FaultProxy, LinkProfile, kbit_per_s
from tests.e2e.conftest import (
    VILLAGE,
    cli_json,
    device_cli,
    new_device,
    server_record,
    server_records,
)
from tests.web.test_field_store import _photo_png

ARTIFACTS = REPO / "tests" / "artifacts" / "field"

NAME = "张秀兰"
ID_NUMBER = "53010219800101123X"
PHONE = "13987654321"
HAMLET = "王家坪三组"

#: Every object store of every IndexedDB database of the origin, as text: strings as they are,
#: bytes both as UTF-8 and as Latin-1 (so ASCII and Chinese values are both found if in clear).
RAW_INDEXEDDB = """async () => {
  const out = [];
  const walk = (value) => {
    if (value === null || value === undefined) return;
    if (typeof value === 'string' || typeof value === 'number') { out.push(String(value)); return; }
    if (value instanceof CryptoKey) { out.push('[CryptoKey ' + value.type + ' extractable=' + value.extractable + ']'); return; }
    if (value instanceof ArrayBuffer || ArrayBuffer.isView(value)) {
      const bytes = value instanceof ArrayBuffer ? new Uint8Array(value)
        : new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
      out.push(new TextDecoder('utf-8', { fatal: false }).decode(bytes));
      let latin = ''; for (const b of bytes) latin += String.fromCharCode(b); out.push(latin);
      return;
    }
    if (Array.isArray(value)) { value.forEach(walk); return; }
    if (typeof value === 'object') { for (const [k, v] of Object.entries(value)) { out.push(k); walk(v); } }
  };
  let records = 0;
  for (const info of await indexedDB.databases()) {
    const db = await new Promise((ok, err) => { const r = indexedDB.open(info.name); r.onsuccess = () => ok(r.result); r.onerror = () => err(r.error); });
    for (const name of db.objectStoreNames) {
      const store = db.transaction(name).objectStore(name);
      const [keys, values] = await Promise.all([
        new Promise((ok) => { const r = store.getAllKeys(); r.onsuccess = () => ok(r.result); }),
        new Promise((ok) => { const r = store.getAll(); r.onsuccess = () => ok(r.result); }),
      ]);
      records += values.length;
      walk(keys); walk(values);
    }
    db.close();
  }
  return { records, text: out.join('\\n') };
}"""

#: Engine-shaped data written through the sealed store's DeviceStorage methods, the way the
#: protocol client will: an outbox op, a record, a conflict, a cursor, with a member's name and ID.
WRITE_ENGINE_DATA = """async ([name, idNumber, phone]) => {
  const { openSealedStore } = await import('/field/static/app/sealed-store.js');
  const store = await openSealedStore();
  const values = { 'members[m1].name': name, 'members[m1].id_number': idNumber, phone };
  await store.transaction(async (unit) => {
    await unit.putOutboxItem({ seq: 1, state: 'pending', attempts: 0,
      op: { recordId: 'r-' + idNumber, kind: 'upsert', fields: values } });
    await unit.writeRecord({ recordId: 'r-' + idNumber, formId: 'household_roster', formVersion: 1,
      household: { village: '530102001201', number: idNumber }, round: '2026', stamps: {},
      serverRevision: 0, deleted: false }, values);
    await unit.putConflict({ conflictId: 'c-' + name, recordId: 'r-' + idNumber, status: 'open',
      listed: true, detail: { path: 'phone', mine: phone, theirs: '13000000000' } });
    await unit.setCursor('530102001201', 'records', 'cursor-' + idNumber);
  });
  const back = await store.outboxItems(['pending']);
  return { outbox: back.map((i) => i.op.fields), twins: await store.liveTwins('other', 'household_roster',
    { number: idNumber, village: '530102001201' }, '2026') };
}"""

READ_ENGINE_DATA = """async () => {
  const { openSealedStore } = await import('/field/static/app/sealed-store.js');
  const store = await openSealedStore();
  const [item] = await store.outboxItems(['pending']);
  const [note] = await store.conflictNotes({ status: 'open' });
  return { op: item && item.op.fields, conflict: note && note.detail, cursors: await store.cursors() };
}"""

CACHED_URLS = """async () => {
  const names = (await caches.keys()).filter((n) => n.startsWith('field-shell-'));
  const urls = [];
  for (const name of names) for (const request of await (await caches.open(name)).keys()) urls.push(new URL(request.url).pathname);
  return { names, urls };
}"""


class Shots:
    """Screenshots of the page at phone and desktop width; no sideways overflow at 360 px."""

    def __init__(self, page: Any) -> None:
        self.page = page
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def take(self, name: str) -> None:
        # From the top: the sticky header would otherwise be drawn mid-page in a full-page shot.
        self.page.evaluate("window.scrollTo(0, 0)")
        for width, height in ((1280, 900), (360, 780)):
            self.page.set_viewport_size({"width": width, "height": height})
            self.page.screenshot(path=str(ARTIFACTS / f"{name}-{width}.png"), full_page=True)
        wide = self.page.evaluate("document.documentElement.scrollWidth")
        assert wide <= 360, f"{name} is {wide} px wide at 360 px"


@pytest.fixture
def county(tmp_path: Path) -> Iterator[CountyServer]:
    server = start_county_server(f"sqlite:///{tmp_path / 'county.db'}", tmp_path / "county")
    try:
        yield server
    finally:
        server.stop()


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].rstrip("/"))


def _ready(page: Any) -> None:
    page.wait_for_selector("body[data-ready='yes']", timeout=30_000)


def test_field_app_offline_sealed_and_updated_in_place(
    county: CountyServer, chromium: Any, tmp_path: Path
) -> None:
    proxy = FaultProxy(("127.0.0.1", _port(county.url))).start()
    # The two later releases start now, in the background, while the browser works (each a fresh
    # database: the shell's files do not depend on it, and the harness reads the admin password
    # a first start prints).
    starting = ThreadPoolExecutor(2)
    second_start = starting.submit(
        start_county_server,
        f"sqlite:///{tmp_path / 'second.db'}",
        tmp_path / "second",
        FIELD_APP_RELEASE="second",
    )
    killer_start = starting.submit(
        start_county_server,
        f"sqlite:///{tmp_path / 'killer.db'}",
        tmp_path / "killer",
        FIELD_APP_KILL_SWITCH="true",
    )
    try:
        origin = f"http://127.0.0.1:{proxy.port}"
        context = chromium.new_context(viewport={"width": 360, "height": 780}, locale="zh-CN")
        page = context.new_page()
        shots = Shots(page)
        page.goto(f"{origin}/field/")
        _ready(page)

        # Installed and controlling the page; the cache holds exactly the asset manifest.
        page.wait_for_function("() => navigator.serviceWorker.controller !== null", timeout=30_000)
        manifest = json.loads(
            page.evaluate("fetch('/field/asset-manifest.json').then(r => r.text())")
        )
        cached = page.evaluate(CACHED_URLS)
        assert cached["names"] == [f"field-shell-{manifest['version']}"]
        assert sorted(cached["urls"]) == sorted(a["url"] for a in manifest["assets"])
        page.wait_for_selector("#link-state:has-text('已连接')")
        shots.take("start")

        # A draft, typed with the network up; sealed as it is typed (debounced).
        page.click("#form-list button[data-form='household_roster']")
        page.fill("[data-path='natural_village'] input", HAMLET)
        page.fill("[data-path='phone'] input", PHONE)
        page.wait_for_selector("#draft-state:has-text('已加密保存')")
        written = page.evaluate(WRITE_ENGINE_DATA, [NAME, ID_NUMBER, PHONE])
        assert written["outbox"][0]["members[m1].name"] == NAME
        assert len(written["twins"]) == 1  # same form, household (keys in any order) and round
        shots.take("draft")

        # A POST goes to the network itself; a precached GET comes from the worker.
        with page.expect_response("**/api/v1/devices/enroll") as posted:
            page.evaluate(
                "fetch('/api/v1/devices/enroll', {method: 'POST', headers: {'Content-Type':"
                " 'application/json'}, body: JSON.stringify({code: 'nope'})})"
            )
        assert posted.value.request.method == "POST"
        assert not posted.value.from_service_worker
        assert posted.value.json()["error"]["code"] in {
            "validation_failed",
            "invalid_enrollment_code",
        }
        # Even a POST to a precached URL is the network's: the server refuses it (405); a worker
        # answering by URL alone would have served the cached file.
        with page.expect_response("**/field/static/app/engines.js") as posted_shell:
            page.evaluate("fetch('/field/static/app/engines.js', {method: 'POST', body: 'x'})")
        assert posted_shell.value.status == 405
        assert not posted_shell.value.from_service_worker
        with page.expect_response("**/field/static/app/app.js") as shell_get:
            page.evaluate("fetch('/field/static/app/app.js')")
        assert shell_get.value.from_service_worker

        # Offline: the shell, the draft and the outbox are still there after a reload.
        context.set_offline(True)
        page.reload()
        _ready(page)
        assert page.input_value("[data-path='natural_village'] input") == HAMLET
        assert page.input_value("[data-path='phone'] input") == PHONE
        page.wait_for_selector("#link-state:has-text('连不上')")
        back = page.evaluate(READ_ENGINE_DATA)
        assert back["op"]["members[m1].id_number"] == ID_NUMBER
        assert back["conflict"]["mine"] == PHONE
        assert back["cursors"] == {"530102001201": {"records": f"cursor-{ID_NUMBER}"}}
        offline_post = page.evaluate(
            "fetch('/api/v1/sync', {method: 'POST', body: 'x'}).then(() => 'answered', () => 'failed')"
        )
        assert offline_post == "failed"  # nobody (no worker, no cache) answered a POST offline
        shots.take("offline")

        # Raw IndexedDB: sealed values only, keys included.
        raw = page.evaluate(RAW_INDEXEDDB)
        assert raw["records"] >= 6
        for secret in (NAME, ID_NUMBER, PHONE, HAMLET, "530102001201", "cursor-", "members[m1]"):
            assert secret not in raw["text"], secret
        assert "extractable=false" in raw["text"] and "extractable=true" not in raw["text"]
        context.set_offline(False)

        # A new release behind the same origin: the prompt appears, the page is not reloaded.
        page.evaluate("window.__sameDocument = 'yes'")
        second = second_start.result()
        county.stop()  # (also ends the browser's keep-alive connections to the old release)
        proxy.target = ("127.0.0.1", _port(second.url))
        page.fill("[data-path='natural_village'] input", HAMLET + "东")
        page.click("#sync-now")
        page.wait_for_selector("#update:not([hidden])", timeout=30_000)
        assert page.evaluate("window.__sameDocument") == "yes"
        assert page.input_value("[data-path='natural_village'] input") == HAMLET + "东"
        shots.take("update")
        with page.expect_navigation(timeout=30_000):
            page.click("#update-now")
        _ready(page)
        assert page.evaluate("window.__sameDocument") is None
        assert page.input_value("[data-path='natural_village'] input") == HAMLET + "东"
        new_version = page.evaluate("fetch('/field/asset-manifest.json').then(r => r.json())")
        assert new_version["version"] != manifest["version"]
        assert page.get_attribute("body", "data-version") == new_version["version"]

        # The kill page unregisters the worker and deletes its caches; the draft stays.
        page.goto(f"{origin}/field/sw-kill")
        page.wait_for_selector("body[data-killed='done']")
        assert page.evaluate("navigator.serviceWorker.getRegistrations().then(r => r.length)") == 0
        assert page.evaluate(CACHED_URLS)["names"] == []
        assert page.evaluate(READ_ENGINE_DATA)["op"]["members[m1].name"] == NAME

        # Installed again; then FIELD_APP_KILL_SWITCH on the server removes it from the running
        # app at its next check, without a reload and without touching the open draft.
        page.goto(f"{origin}/field/")
        _ready(page)
        page.wait_for_function("() => navigator.serviceWorker.controller !== null", timeout=30_000)
        assert page.evaluate(CACHED_URLS)["names"] != []
        page.evaluate("window.__sameDocument = 'still'")
        killer = killer_start.result()
        second.stop()
        proxy.target = ("127.0.0.1", _port(killer.url))
        page.click("#sync-now")
        registrations = -1
        for _ in range(120):
            registrations = page.evaluate(
                "navigator.serviceWorker.getRegistrations().then(r => r.length)"
            )
            if registrations == 0:
                break
            page.wait_for_timeout(250)
        assert registrations == 0
        assert page.evaluate(CACHED_URLS)["names"] == []
        assert page.evaluate("window.__sameDocument") == "still"
        assert page.input_value("[data-path='natural_village'] input") == HAMLET + "东"
        context.close()
    finally:
        proxy.close()
        starting.shutdown(wait=True)
        for start in (second_start, killer_start):
            if start.exception() is None:
                start.result().stop()


STORE_CALL = """async ([method, args]) => {
  const { openSealedStore } = await import('/field/static/app/sealed-store.js');
  const store = await openSealedStore();
  try { return await store[method](...args); } finally { store.close(); }
}"""


def _store(page: Any, method: str, *args: Any) -> Any:
    return page.evaluate(STORE_CALL, [method, list(args)])


def _sync_until(page: Any, done: str, attempts: int = 6) -> None:
    """Press 同步 until a run ends with `done` in the status (a retry after a cut is the app's
    own backoff, pressed here rather than waited for)."""
    for _ in range(attempts):
        # A run under way may have started before what this sync must bring: let it end first.
        page.wait_for_selector("body:not([data-syncing])", state="attached", timeout=60_000)
        runs = int(page.get_attribute("body", "data-sync-runs") or 0)
        page.click("#sync-now")
        page.wait_for_function(
            f"() => Number(document.body.dataset.syncRuns || 0) > {runs}", timeout=60_000
        )
        if done in page.text_content("#sync-message"):
            return
    raise AssertionError(page.text_content("#sync-message"))


def _synced(page: Any) -> None:
    _sync_until(page, "同步完成")


def test_field_story_enrol_offline_photo_sync_merge_conflict_resolved(
    county: CountyServer, chromium: Any, tmp_path: Path
) -> None:
    """Issue 15's story: enrol with the admin's code; fill the housing instrument with a photo
    offline; reload offline (draft and outbox kept); come online over a slow link that is cut
    mid-transfer and sync; a CLI tablet's edit merges into the browser; a conflict shows both
    values, the county resolves it on the admin page and the browser receives the outcome."""
    admin = county.admin()
    proxy = FaultProxy(
        ("127.0.0.1", _port(county.url)),
        LinkProfile(delay_ms=75.0, bandwidth_bytes_per_s=kbit_per_s(2000)),
    ).start()
    try:
        origin = f"http://127.0.0.1:{proxy.port}"
        context = chromium.new_context(viewport={"width": 360, "height": 780}, locale="zh-CN")
        page = context.new_page()
        shots = Shots(page)
        page.goto(f"{origin}/field/")
        _ready(page)
        page.wait_for_function("() => navigator.serviceWorker.controller !== null", timeout=30_000)

        # Enrol with a code the county issued; the first sync brings the county's forms.
        page.fill("#enrol-code", admin.issue_code(VILLAGE))
        page.click("#enrol-form button[type='submit']")
        page.wait_for_selector(
            f"#enrol-message:has-text('登记成功，范围 {VILLAGE}')", state="attached"
        )
        page.wait_for_selector("#sync-message:has-text('同步完成')", timeout=30_000)
        keys = page.evaluate(
            """async () => { const { openSealedStore } = await import('/field/static/app/sealed-store.js');
            const k = await (await openSealedStore()).deviceKeys();
            return [k.encryption.privateKey.extractable, k.signing.privateKey.extractable]; }"""
        )
        assert keys == [False, False]
        shots.take("story-enrolled")

        # Offline: the housing instrument with a photo.
        context.set_offline(True)
        page.click("#form-list button[data-form='housing_safety']")
        page.wait_for_selector("[data-path='appraisal_grade']")
        assert page.input_value("#draft-village") == VILLAGE  # the device's village
        page.fill("#draft-household", "0031")
        page.check("[data-path='appraisal_grade'] input[value='C']")
        page.select_option("[data-path='structure'] select", index=1)  # > 8 choices: a drop-down
        page.check("[data-path='renovation_method'] input[value='拆除重建']")
        page.fill("[data-path='floor_area'] input", "86.5")
        picture = tmp_path / "house.png"
        picture.write_bytes(_photo_png(1600, 1200))
        page.click("[data-path='photos'] .vf-add")
        page.set_input_files("[data-path$='/photo'] input[type=file]", str(picture))
        page.wait_for_selector("#photo-message:has-text('照片已加密保存')", timeout=30_000)
        page.fill("[data-path$='/caption'] input", "东侧墙体裂缝")
        page.wait_for_selector("#draft-state:has-text('已加密保存')")
        shots.take("story-offline-form")

        page.reload()
        _ready(page)
        assert page.input_value("#draft-household") == "0031"
        assert page.input_value("[data-path='floor_area'] input") == "86.5"
        page.wait_for_selector("[data-path$='/photo'] img.vf-thumb")  # the photo back in its row
        assert page.input_value("[data-path$='/caption'] input") == "东侧墙体裂缝"
        page.click("#draft-submit")
        page.wait_for_selector("#sync-message:has-text('已放入待同步')")
        page.reload()
        _ready(page)
        assert page.text_content("#pending-count") == "1"
        (head,) = _store(page, "recordHeads")
        record_id = head["recordId"]
        assert head["household"] == {"village_code": VILLAGE, "household_no": "0031"}
        shots.take("story-offline-outbox")

        # Online over a slow link (2 Mbit/s, 150 ms RTT) that cuts the sync mid-transfer.
        context.set_offline(False)
        proxy.cut_all()
        proxy.profile = replace(proxy.profile, cut_after_bytes=(1500, 1500))
        page.click("#sync-now")
        page.wait_for_selector("#sync-message:has-text('同步未完成')", timeout=30_000)
        assert proxy.counters().cuts >= 1
        assert page.text_content("#pending-count") == "1"  # kept, marked sent
        proxy.profile = replace(proxy.profile, cut_after_bytes=None)
        proxy.cut_all()
        _synced(page)
        assert page.text_content("#pending-count") == "0"
        on_server = server_record(admin, record_id)
        assert on_server["data"]["floor_area"] == 86.5
        assert on_server["data"]["renovation_method"] == "拆除重建"
        assert (on_server["village_code"], on_server["household_no"]) == (VILLAGE, "0031")
        (photo_row,) = on_server["data"]["photos"]
        assert photo_row["photo"].startswith("sha256:")
        assert photo_row["caption"] == "东侧墙体裂缝"  # the description stays with its photo

        # A CLI tablet edits the same household; the browser receives the merge.
        db = tmp_path / "tablet.db"
        new_device(county, admin, db).close()
        assert cli_json(device_cli(db, "edit", record_id, "--set", "storeys=2"))["ok"]
        assert cli_json(device_cli(db, "sync"))["ops_acked"] == 1
        _synced(page)
        # Each names its app and version on every sync; the county's devices list shows them.
        apps = sorted(d["app"] for d in admin.get("/api/v1/devices"))
        version = page.get_attribute("body", "data-version")
        assert apps == [
            f"field-app/{version}",
            f"village-device/{importlib.metadata.version('village-sync')}",
        ]
        held = _store(page, "recordValues", record_id)
        assert held["storeys"] == 2 and held["floor_area"] == 86.5
        page.wait_for_selector(f"#household-list button[data-edit='{record_id}']")

        # Both change the renovation method without syncing: a conflict, shown with both values.
        page.click(f"#household-list button[data-edit='{record_id}']")
        assert page.input_value("[data-path='storeys'] input") == "2"
        page.check("[data-path='renovation_method'] input[value='原址翻建']")
        page.wait_for_selector("#draft-state:has-text('已加密保存')")
        page.click("#draft-submit")
        page.wait_for_selector("#sync-message:has-text('已放入待同步')")
        edited = device_cli(db, "edit", record_id, "--set", "renovation_method=选址新建")
        assert cli_json(edited)["ok"]
        assert cli_json(device_cli(db, "sync"))["ops_acked"] == 1
        _synced(page)
        page.wait_for_selector("#conflicts:not([hidden])")
        shown = page.text_content("#conflict-list")
        assert "改造方式" in shown and "原址翻建" in shown and "选址新建" in shown, shown
        (conflict_id,) = server_record(admin, record_id)["open_conflicts"]
        shots.take("story-conflict")

        # The county resolves it on the admin page; the outcome reaches the browser.
        desk = context.new_page()
        desk.goto(f"{county.url}/login")
        desk.fill("input[name=username]", "admin")
        desk.fill("input[name=password]", county.admin_password)
        desk.click("form button[type=submit]")
        desk.goto(f"{county.url}/conflicts/{conflict_id}")
        desk.check("label:has-text('采用 原址翻建') input[name=choice]")
        desk.click("main form button[type=submit]")
        desk.wait_for_url("**done=1")
        desk.close()
        assert server_record(admin, record_id)["data"]["renovation_method"] == "原址翻建"
        _synced(page)
        page.wait_for_selector("#conflicts[hidden]", state="attached")
        assert _store(page, "recordValues", record_id)["renovation_method"] == "原址翻建"
        shots.take("story-resolved")

        # The village's households came down with sync: a new round starts from the last answers.
        page.click("#household-list button[data-new-round='housing_safety']")
        page.wait_for_selector("[data-path='floor_area'] input")
        assert page.input_value("#draft-household") == "0031"
        assert page.input_value("[data-path='floor_area'] input") == "86.5"
        assert page.input_value("[data-path='storeys'] input") == "2"
        # Its round is asked for, not taken from the answers: the last one is already held.
        assert page.input_value("#draft-round") == ""
        annual = f"{datetime.date.today().year}-annual"  # the round the browser gave it
        assert f"上一轮（{annual}）" in page.text_content("#round-hint")
        page.fill("#draft-round", annual)
        page.click("#draft-submit")
        page.wait_for_selector(f"#submit-message:has-text('在 {annual} 已有记录')")
        page.fill("#draft-round", "2026 12")
        page.click("#draft-submit")
        page.wait_for_selector("#submit-message:has-text('请填写调查轮次')")
        page.fill("#draft-round", "2026-12")
        page.click("#draft-submit")
        page.wait_for_selector("#sync-message:has-text('已放入待同步')")
        _synced(page)
        rounds = sorted(
            r["round"]
            for r in server_records(admin)
            if r["household_no"] == "0031" and r["form_id"] == "housing_safety"
        )
        assert rounds == sorted(["2026-12", annual])

        # A record the server rejects stays visible, and 更正 reopens it with what was sent.
        page.evaluate(
            """async ([village]) => {
          const engines = await import('/field/static/app/engines.js');
          const { openSealedStore } = await import('/field/static/app/sealed-store.js');
          await engines.submitRecord({ storage: await openSealedStore(), draft: {
            recordId: crypto.randomUUID(), formId: 'housing_safety', formVersion: 1,
            household: { village_code: village, household_no: '0032' },
            values: { appraisal_grade: 'Z', floor_area: 51 } } });
        }""",
            [VILLAGE],
        )
        _synced(page)
        page.wait_for_selector("#rejected:not([hidden])")
        shots.take("story-rejected")
        page.click("#rejected-list button.correct")
        page.wait_for_selector("[data-path='floor_area'] input")
        assert page.input_value("#draft-household") == "0032"
        assert page.input_value("[data-path='floor_area'] input") == "51"

        # Read raw: no value, name, household or ID in clear anywhere in IndexedDB.
        raw = page.evaluate(RAW_INDEXEDDB)
        for secret in ("原址翻建", "拆除重建", "选址新建", "86.5", VILLAGE, record_id):
            assert secret not in raw["text"], secret
        assert "extractable=false" in raw["text"] and "extractable=true" not in raw["text"]
        context.close()
    finally:
        proxy.close()
