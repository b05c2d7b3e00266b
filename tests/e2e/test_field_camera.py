"""Enrolment by pointing the tablet's camera at the admin page's QR code (issue 15).

Chromium's fake capture device plays a video file as the camera, so the field app's real path
runs: ``getUserMedia`` → the video element → the detector (BarcodeDetector where the browser has
it, else the vendored jsQR) → the enrolment. The video is the QR code the admin's devices page
encodes (``server.web.devices.enrolment_payload``), drawn as a phone would see it: smaller than
the frame, off-centre, on a grey desk, a little blurred.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import segno

from bench.harness.county_server import CountyServer, start_county_server
from server.web.devices import enrolment_payload
from tests.browser import launched_chromium
from tests.e2e.conftest import VILLAGE

ARTIFACTS = Path(__file__).resolve().parents[2] / "tests" / "artifacts" / "field"
WIDTH, HEIGHT = 640, 480


def _camera_video(payload: str, path: Path, frames: int = 20) -> Path:
    """A Y4M clip (what Chromium's fake camera plays) showing the QR code of ``payload``."""
    matrix = np.array(segno.make(payload, error="m").matrix, dtype=np.uint8)
    modules = matrix.shape[0] + 8  # with the quiet zone
    side = 300
    code = np.full((modules, modules), 255, np.uint8)
    code[4:-4, 4:-4] = np.where(matrix == 1, 0, 255)
    code = cv2.resize(code, (side, side), interpolation=cv2.INTER_NEAREST)
    frame = np.full((HEIGHT, WIDTH), 150, np.uint8)  # a grey desk
    frame[100 : 100 + side, 220 : 220 + side] = code
    frame = cv2.GaussianBlur(frame, (3, 3), 0)
    luma = (16 + frame.astype(np.uint16) * 219 // 255).astype(np.uint8)  # studio range
    chroma = np.full((HEIGHT // 2, WIDTH // 2), 128, np.uint8)
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{WIDTH} H{HEIGHT} F10:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            out.write(b"FRAME\n" + luma.tobytes() + chroma.tobytes() + chroma.tobytes())
    return path


@pytest.fixture(scope="module")
def county(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CountyServer]:
    tmp = tmp_path_factory.mktemp("field-camera")
    server = start_county_server(f"sqlite:///{tmp / 'county.db'}", tmp / "county")
    try:
        yield server
    finally:
        server.stop()


def _scan(county: CountyServer, video: Path) -> Any:
    camera = (
        "--use-fake-ui-for-media-stream",  # the camera permission, as a person taps 允许
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={video}",
    )
    return launched_chromium(camera)


def test_enrol_by_scanning_the_admin_qr_with_the_camera(
    county: CountyServer, tmp_path: Path
) -> None:
    code = county.admin().issue_code(VILLAGE)
    video = _camera_video(enrolment_payload(county.url, code), tmp_path / "camera.y4m")
    with _scan(county, video) as browser:
        context = browser.new_context(viewport={"width": 360, "height": 780}, locale="zh-CN")
        context.grant_permissions(["camera"], origin=county.url)
        page = context.new_page()
        page.goto(f"{county.url}/field/")
        page.wait_for_selector("body[data-ready='yes']", timeout=30_000)
        page.click("#scan-start")
        page.wait_for_selector(
            f"#enrol-message:has-text('登记成功，范围 {VILLAGE}')", state="attached", timeout=30_000
        )
        assert page.input_value("#enrol-code") == code
        assert page.locator("#scanner").is_hidden()  # the camera is closed again
        live = page.evaluate(
            "() => (document.getElementById('scan-video').srcObject?.getTracks() || [])"
            ".filter((t) => t.readyState === 'live').length"
        )
        assert live == 0
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "camera-enrolled-360.png"), full_page=True)
        context.close()


def test_a_qr_of_another_server_is_refused_and_nothing_is_enrolled(
    county: CountyServer, tmp_path: Path
) -> None:
    code = county.admin().issue_code(VILLAGE)
    video = _camera_video(
        enrolment_payload("http://other-county.example", code), tmp_path / "o.y4m"
    )
    with _scan(county, video) as browser:
        context = browser.new_context(viewport={"width": 360, "height": 780}, locale="zh-CN")
        context.grant_permissions(["camera"], origin=county.url)
        page = context.new_page()
        page.goto(f"{county.url}/field/")
        page.wait_for_selector("body[data-ready='yes']", timeout=30_000)
        page.click("#scan-start")
        page.wait_for_selector("#enrol-message:has-text('二维码指向另一台服务器')", timeout=30_000)
        enrolled = page.evaluate(
            """async () => { const { openSealedStore } = await import('/field/static/app/sealed-store.js');
            return (await (await openSealedStore()).setting('enrolment')) ?? null; }"""
        )
        assert enrolled is None
        context.close()
