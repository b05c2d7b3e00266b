"""The field app's modules in Debian's Chromium against a real county server: the sealed store,
photos (downscaled, sealed, refused when space is short, uploaded resumably with the device's
signature), the outbox file and the enrolment QR code.

One server for the file (``python -m server serve`` through bench/harness/county_server.py);
each test gets a fresh browser context, hence a fresh IndexedDB.
"""

from __future__ import annotations

import base64
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import segno

from bench.harness.county_server import CountyServer, start_county_server
from server.web.devices import enrolment_payload
from sync_protocol import outbox_file

ARTIFACTS = Path(__file__).resolve().parents[2] / "tests" / "artifacts" / "field"

VILLAGE = "530102001201"


@pytest.fixture(scope="module")
def county(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CountyServer]:
    tmp = tmp_path_factory.mktemp("field-store")
    server = start_county_server(f"sqlite:///{tmp / 'county.db'}", tmp / "county")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def page(county: CountyServer, chromium: Any) -> Iterator[Any]:
    # No service worker here: these tests are about the modules, and a worker would only
    # add its install to each test's time (tests/e2e/test_field_app.py covers it).
    context = chromium.new_context(viewport={"width": 360, "height": 780}, service_workers="block")
    tab = context.new_page()
    tab.goto(f"{county.url}/field/")
    tab.wait_for_selector("body[data-ready='yes']", timeout=30_000)
    try:
        yield tab
    finally:
        context.close()


def _photo_png(width: int, height: int) -> bytes:
    # A smooth picture (gradients and a disc), as a camera would give, not noise.
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], -1)
    image = np.ascontiguousarray(image.astype(np.uint8))
    cv2.circle(image, (width // 2, height // 2), min(width, height) // 4, (30, 200, 90), -1)
    ok, data = cv2.imencode(".png", image)
    assert ok
    return data.tobytes()


SEALED_RAW = """async () => {
  const db = await new Promise((ok) => { const r = indexedDB.open('village-field'); r.onsuccess = () => ok(r.result); });
  const store = db.transaction('sealed').objectStore('sealed');
  const [keys, values] = await Promise.all([
    new Promise((ok) => { const r = store.getAllKeys(); r.onsuccess = () => ok(r.result); }),
    new Promise((ok) => { const r = store.getAll(); r.onsuccess = () => ok(r.result); })]);
  db.close();
  const latin = (b) => { let t = ''; for (const x of b) t += String.fromCharCode(x); return t; };
  return keys.map((k, i) => ({ kind: k[0], slot: String(k[1]), iv: btoa(latin(values[i].iv)),
    ct: latin(values[i].ct) }));
}"""


PUT_DRAFT = """async ([id, phone]) => {
  const { openSealedStore } = await import('/field/static/app/sealed-store.js');
  await (await openSealedStore()).putDraft({ id, values: { phone } });
}"""


def test_sealed_store_outbox_file_and_enrolment_qr(page: Any, county: CountyServer) -> None:
    # Each write sealed afresh and bound to its slot; units all or nothing.
    page.evaluate(PUT_DRAFT, ["draft-one", "13912345678"])
    first = page.evaluate(SEALED_RAW)
    page.evaluate(PUT_DRAFT, ["draft-one", "13912345678"])
    second = page.evaluate(SEALED_RAW)
    draft_rows = [row for row in second if row["kind"] == "draft"]
    assert len(draft_rows) == 1
    (before,) = [row for row in first if row["kind"] == "draft"]
    (after,) = draft_rows
    # The same value written twice: a fresh IV, other ciphertext, the same (opaque) slot.
    assert before["slot"] == after["slot"] and "draft-one" not in after["slot"]
    assert before["iv"] != after["iv"] and before["ct"] != after["ct"]
    result = page.evaluate(
        """async ([slotOne]) => {
      const { openSealedStore } = await import('/field/static/app/sealed-store.js');
      const store = await openSealedStore();
      const out = { fresh: await store.counters() };
      await store.putDraft({ id: 'draft-two', values: { phone: '13800000000' } });
      // Copy draft-two's ciphertext over draft-one's slot: it must not open there.
      const db = await new Promise((ok) => { const r = indexedDB.open('village-field'); r.onsuccess = () => ok(r.result); });
      const raw = db.transaction('sealed').objectStore('sealed');
      const all = await new Promise((ok) => { const r = raw.getAll(); r.onsuccess = () => ok(r.result); });
      const keys = await new Promise((ok) => { const r = raw.getAllKeys(); r.onsuccess = () => ok(r.result); });
      const one = keys.findIndex((k) => k[1] === slotOne);
      const tx = db.transaction('sealed', 'readwrite');
      tx.objectStore('sealed').put(all[1 - one], keys[one]);
      await new Promise((ok) => (tx.oncomplete = ok));
      db.close();
      out.swapped = await store.draft('draft-one').then(() => 'opened', (e) => e.name);
      out.two = (await store.draft('draft-two')).values.phone;
      // A unit that throws leaves nothing behind; one that finishes lands whole. The protocol
      // engine holds the store itself, so its calls on the store inside the unit count too.
      await store.transaction(async (unit) => {
        await unit.putOutboxItem({ seq: 7, state: 'pending', op: { recordId: 'r' } });
        await store.putOutboxItem({ seq: 6, state: 'pending', op: { recordId: 'r' } });
        throw new Error('crash between two writes');
      }).catch(() => {});
      out.afterCrash = await store.outboxItems(['pending']);
      await store.putConflict({ conflictId: 'c-zero', recordId: 'r', status: 'open' });
      await store.transaction(async (unit) => {
        await unit.putConflict({ conflictId: 'c-two', recordId: 'r', status: 'open' });
        await unit.putConflict({ conflictId: 'c-one', recordId: 'r', status: 'open' });
        out.unitOrder = (await unit.conflictNotes()).map((n) => n.conflictId);
        await unit.putOutboxItem({ seq: 9, state: 'pending', op: { recordId: 'r' } });
        await unit.putOutboxItem({ seq: 8, state: 'sent', op: { recordId: 'r' } });
        out.insideSees = (await unit.outboxItems(['pending', 'sent'])).map((i) => i.seq);
        out.storeSees = (await store.outboxItems(['pending', 'sent'])).map((i) => i.seq);
        const rawDb = await new Promise((ok) => { const r = indexedDB.open('village-field'); r.onsuccess = () => ok(r.result); });
        const rawKeys = await new Promise((ok) => { const r = rawDb.transaction('sealed').objectStore('sealed').getAllKeys(); r.onsuccess = () => ok(r.result); });
        out.outboxInDbDuring = rawKeys.filter((k) => k[0] === 'outbox').length;
        rawDb.close();
      });
      out.afterCommit = (await store.outboxItems(['pending', 'sent'], { limit: 5 })).map((i) => i.seq);
      out.ofRecord = (await store.outboxItems(['sent'], { recordId: 'r' })).map((i) => i.seq);
      out.storedOrder = (await store.conflictNotes({ status: 'open' })).map((n) => n.conflictId);
      return out;
    }""",
        [after["slot"]],
    )
    assert result["fresh"] == {
        "lastSeq": 0,
        "ackedThrough": 0,
        "hlcLast": None,
        "serverTimeMs": None,
    }
    assert result["swapped"] == "OperationError" and result["two"] == "13800000000"
    assert result["afterCrash"] == []
    assert result["insideSees"] == result["storeSees"] == [8, 9]
    assert result["outboxInDbDuring"] == 0
    assert result["afterCommit"] == [8, 9] and result["ofRecord"] == [8]
    # Lists keep first-stored order (slots are random tags), inside a unit as after it.
    assert result["unitOrder"] == result["storedOrder"] == ["c-zero", "c-two", "c-one"]
    _outbox_file_and_enrolment_qr(page, county)


def test_photo_downscaled_sealed_refused_when_space_is_short_and_uploaded(
    page: Any, county: CountyServer, tmp_path: Path
) -> None:
    picture = tmp_path / "house.png"
    picture.write_bytes(_photo_png(2400, 1800))  # 4.3 megapixels
    page.click("#form-list button[data-form='housing_safety']")
    # The photo question takes its photo in its own row; the shell's separate button is gone.
    assert page.locator("#photo-add").is_hidden()
    page.click("[data-path='photos'] .vf-add")
    page.set_input_files("[data-path$='/photo'] input[type=file]", str(picture))
    page.wait_for_selector("#photo-message:has-text('照片已加密保存')", timeout=90_000)
    page.wait_for_selector("[data-path$='/photo'] img.vf-thumb")
    assert "已拍照" in page.text_content("[data-path$='/photo'] output")
    page.wait_for_selector("#draft-state:has-text('已加密保存')")
    stored = page.evaluate(
        """async () => {
      const { openSealedStore } = await import('/field/static/app/sealed-store.js');
      const store = await openSealedStore();
      const [meta] = await store.photos();
      const bytes = await store.photo(meta.sha256);
      const draft = await store.draft(document.body.dataset.draft);
      return { meta, head: Array.from(bytes.slice(0, 3)), draftPhotos: draft.photos,
               rows: draft.values.photos.map((row) => row.photo) };
    }"""
    )
    meta = stored["meta"]
    assert meta["width"] * meta["height"] <= 1_200_000  # FIELD_PHOTO_MAX_PIXELS' default
    assert meta["width"] / meta["height"] == pytest.approx(2400 / 1800, rel=0.01)
    assert stored["head"] == [0xFF, 0xD8, 0xFF]  # a JPEG once opened
    # In its row, by content address (and not in the shell's list, so removing the row drops it).
    assert stored["rows"] == [f"sha256:{meta['sha256']}"]
    assert stored["draftPhotos"] in (None, [])
    raw = page.evaluate(SEALED_RAW)
    assert all("\xff\xd8\xff" not in row["ct"] for row in raw)  # not as JPEG at rest
    assert all(meta["sha256"] not in row["slot"] for row in raw)

    # Space nearly used up: no new photo (the rule the photo button applies to the estimate).
    room = page.evaluate(
        """async () => {
      const { roomForPhoto, MIN_FREE_BYTES } = await import('/field/static/app/photos.js');
      const mb = 1024 * 1024;
      return [roomForPhoto({ usage: 0, quota: 0, free: MIN_FREE_BYTES - 1 }, 100),
              roomForPhoto({ free: MIN_FREE_BYTES }, 100), roomForPhoto({ free: 60 * mb }, 20 * mb),
              roomForPhoto(null, mb)];
    }"""
    )
    assert room == [False, True, False, True]

    # The same rule on the page: a browser that reports almost no room left refuses the next
    # photo in the row that asked for it, says why there, and keeps what the row held.
    page.evaluate(
        """() => { navigator.storage.estimate = async () => ({ usage: 500 * 1024 * 1024,
                                                               quota: 500 * 1024 * 1024 + 1024 }); }"""
    )
    page.click("[data-path='photos'] .vf-add")
    page.set_input_files("[data-path$='/photo'] input[type=file] >> nth=1", str(picture))
    page.wait_for_selector("[data-path$='/photo'] output .vf-error:has-text('存储空间不足')")
    assert page.get_attribute("body", "data-photo-blocked") == "yes"
    assert page.locator("[data-path$='/photo'] img.vf-thumb").count() == 1
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "photo-space-short-360.png"), full_page=True)
    _photo_upload_resumes_signed_by_the_device_key(page, county)


ENROL_RAW = """async ([code]) => {
  // What the protocol client's enrol does, enough to hold a device key the server knows.
  const x = await crypto.subtle.generateKey({ name: 'X25519' }, false, ['deriveBits']);
  const ed = await crypto.subtle.generateKey({ name: 'Ed25519' }, false, ['sign', 'verify']);
  const raw = async (k) => btoa(String.fromCharCode(...new Uint8Array(await crypto.subtle.exportKey('raw', k))));
  const response = await fetch('/api/v1/devices/enroll', { method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ code, x25519_public: await raw(x.publicKey), ed25519_public: await raw(ed.publicKey) }) });
  const answer = await response.json();
  const { openSealedStore } = await import('/field/static/app/sealed-store.js');
  const store = await openSealedStore();
  await store.putDeviceKeys({ encryption: x, signing: ed });
  await store.putSetting('enrolment', { deviceId: answer.device_id, scope: answer.scope });
  return answer.device_id;
}"""

UPLOAD = """async ([b64, dropAfter]) => {
  const { uploadPhoto } = await import('/field/static/app/uploads.js');
  const { sha256Hex } = await import('/field/static/app/photos.js');
  const { openSealedStore } = await import('/field/static/app/sealed-store.js');
  const store = await openSealedStore();
  const keys = await store.deviceKeys();
  const { deviceId } = await store.setting('enrolment');
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const sha256 = await sha256Hex(bytes);
  let patches = 0;
  const flaky = (url, init) => {
    if (init.method === 'PATCH' && dropAfter !== null && ++patches > dropAfter) {
      return Promise.reject(new TypeError('the link dropped'));
    }
    return fetch(url, init);
  };
  const args = { deviceId, signingKey: keys.signing.privateKey, sha256, bytes, chunkBytes: 4096 };
  const first = await uploadPhoto({ ...args, fetch: flaky }).then((s) => s, (e) => e.message);
  const status = await (await fetch('/api/v1/uploads/' + sha256)).status;
  const second = await uploadPhoto(args);
  return { sha256, first, unsignedStatus: status, second };
}"""


def _photo_upload_resumes_signed_by_the_device_key(page: Any, county: CountyServer) -> None:
    """Enrol a device key, upload a photo, drop the link after two chunks, resume."""
    admin = county.admin()
    device_id = page.evaluate(ENROL_RAW, [admin.issue_code(VILLAGE)])
    assert len(device_id) == 36
    photo = _photo_png(300, 200)
    result = page.evaluate(UPLOAD, [base64.b64encode(photo).decode(), 2])
    assert result["first"] == "the link dropped"  # two chunks went, then the link dropped
    assert result["unsignedStatus"] == 401  # an unsigned request learns nothing
    assert result["second"]["complete"] is True and result["second"]["size"] == len(photo)
    request = urllib.request.Request(
        f"{county.url}/api/v1/uploads/{result['sha256']}/content", headers=admin.headers
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.read() == photo


def _outbox_file_and_enrolment_qr(page: Any, county: CountyServer) -> None:
    """The outbox file is byte for byte what the Python writer (village-device export-outbox)
    makes of the same body, so the server's importer reads it; then the admin page's QR read
    back, and a typed code."""
    body = bytes([0, 0, 0, 3, 1, 2, 3, 0, 0, 0, 2, 250, 251])
    made = page.evaluate(
        """async ([bodyB64]) => {
      const { outboxFile } = await import('/field/static/app/outbox-file.js');
      const body = Uint8Array.from(atob(bodyB64), (c) => c.charCodeAt(0));
      const file = await outboxFile({ deviceId: 'd7c1e2f0-0000-4000-8000-000000000001',
        serverUrl: 'http://county.example', body, seqs: [7, 5, 6],
        now: new Date('2026-12-03T08:00:00Z') });
      const bytes = new Uint8Array(await file.blob.arrayBuffer());
      let text = '';
      for (const byte of bytes) text += String.fromCharCode(byte);
      return { name: file.name, b64: btoa(text) };
    }""",
        [base64.b64encode(body).decode()],
    )
    assert made["name"] == "village-outbox-d7c1e2f0-20261203T080000.outbox"
    data = base64.b64decode(made["b64"])
    parsed = outbox_file.decode(data)  # the server's importer's own check
    assert parsed.body == body
    header = {
        "device_id": "d7c1e2f0-0000-4000-8000-000000000001",
        "server_url": "http://county.example",
        "created_at_ms": 1796284800000,
        "ops": 3,
        "first_seq": 5,
        "last_seq": 7,
    }
    assert data == outbox_file.encode(header, body)

    payload = enrolment_payload(county.url, "K7QM-R2XD-9HWT-C4NP")
    qr = segno.make(payload, error="m").png_data_uri(scale=6, border=4).split(",", 1)[1]
    read = page.evaluate(
        """async ([b64]) => {
      const { decodeImage, enrolmentFromQr } = await import('/field/static/app/scanner.js');
      const png = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const text = await decodeImage(new Blob([png], { type: 'image/png' }));
      return { text, enrolment: enrolmentFromQr(text), bare: enrolmentFromQr(' k7qm-r2xd ') };
    }""",
        [qr],
    )
    assert read["text"] == payload
    assert read["enrolment"] == {"code": "K7QM-R2XD-9HWT-C4NP", "server": county.url}
    assert read["bare"] == {"code": "k7qm-r2xd", "server": None}

    # A typed code the county never issued: the server's refusal, Chinese first, nothing pretended.
    page.fill("#enrol-code", "K7QM-R2XD-9HWT-C4NP")
    page.click("#enrol-form button[type='submit']")
    page.wait_for_selector("#enrol-message:has-text('登记失败')")
    message = page.text_content("#enrol-message")
    assert "未安装" not in message and "undefined" not in message
    assert re.search(r"登记失败：[\u4e00-\u9fff]", message), message
    assert page.evaluate(
        "async () => (await (await import('/field/static/app/engines.js')).hasProtocol())"
    )
