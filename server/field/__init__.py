"""The field app: a Progressive Web App served by the county server at ``/field/``.

No CDN and no build step: the page loads native ES modules from ``server/field/static/`` (the
shell in ``app/``, the form engine in ``forms/``, the protocol client in ``protocol/``). At start-up
the blueprint hashes every file it serves into an :class:`AssetManifest`; the service worker
(``/field/sw.js``, rendered with that manifest) precaches exactly those files, each fetched with
its SHA-256 as subresource integrity, under a cache named after the manifest's version. Any change
to any file, or to ``FIELD_APP_RELEASE``, changes the version, hence the worker's bytes, hence the
browser installs the new worker and the app offers the update (it never reloads by itself).

The worker answers only GETs of the precached files; every POST (``/api/v1/sync``, enrolment,
uploads) and every other request goes to the network untouched (enketo/enketo#1584). Two kill
switches: the page ``/field/sw-kill`` (never precached, so a broken worker cannot hide it)
unregisters every worker of the scope and deletes its caches, and ``FIELD_APP_KILL_SWITCH`` makes
``/field/sw.js`` itself a worker that does the same to every installed app at its next update check.
See docs/field-app.md.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import json
import mimetypes
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, abort, current_app, render_template, request

from forms.instruments import BUILTIN_IDS, SYSTEM_IDS, builtin_json
from server.services.task_reasons import DEPARTMENTS

STATIC_DIR = Path(__file__).resolve().parent / "static"
PREFIX = "/field"

#: The field app's pages run only this origin's scripts, styles, images and connections; photos
#: are shown from ``blob:`` URLs made on the device and the camera preview is a ``blob:``/media
#: stream. Nothing else (no inline script, no eval, no framing, no other origin).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; worker-src 'self'; manifest-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)

blueprint = Blueprint("field", __name__, url_prefix=PREFIX, template_folder="templates")


@dataclass(frozen=True)
class Asset:
    """One file the service worker precaches: its URL, SHA-256 (hex) and size in bytes."""

    url: str
    sha256: str
    size: int

    @property
    def integrity(self) -> str:
        """The Subresource Integrity value the worker fetches it with (``sha256-<base64>``)."""
        return "sha256-" + base64.b64encode(bytes.fromhex(self.sha256)).decode("ascii")


@dataclass(frozen=True)
class AssetManifest:
    """Every file of the app shell, and the version (a hash over all of them and the release)."""

    version: str
    assets: tuple[Asset, ...]
    kill: bool

    def as_json(self) -> dict[str, Any]:
        """The JSON the worker and the page read (``/field/asset-manifest.json``)."""
        return {
            "version": self.version,
            "kill": self.kill,
            "assets": [
                {"url": a.url, "sha256": a.sha256, "integrity": a.integrity, "size": a.size}
                for a in self.assets
            ],
        }


def instruments_document() -> bytes:
    """The built-in instrument definitions, the forms a device can fill before its first sync
    brings the county's published versions (served as ``/field/instruments.json``)."""
    forms = [builtin_json(form_id) for form_id in BUILTIN_IDS]
    return json.dumps({"forms": forms}, ensure_ascii=False, separators=(",", ":")).encode()


def _page_bytes(app: Flask, name: str, version: str) -> bytes:
    with app.test_request_context(f"{PREFIX}/"):
        return render_template(name, version=version, settings=_client_settings(app)).encode()


def _client_settings(app: Flask) -> dict[str, Any]:
    return {
        "photoMaxPixels": int(app.config["FIELD_PHOTO_MAX_PIXELS"]),
        "syncIntervalSeconds": int(app.config["FIELD_SYNC_INTERVAL_SECONDS"]),
        # Forms reached only through a verification task, never offered as a new record.
        "systemForms": list(SYSTEM_IDS),
        # A task reason's source `dept:<id>` is shown by the department's Chinese name.
        "departments": {key: zh for key, (zh, _en) in DEPARTMENTS.items()},
    }


def build_manifest(app: Flask) -> tuple[AssetManifest, dict[str, bytes]]:
    """Hash every static file, the instruments document and the app page.

    Returns the manifest and every asset's bytes by URL (files read and documents rendered once
    here, so what is hashed is byte for byte what is served).
    """
    assets: list[Asset] = []
    generated: dict[str, bytes] = {}
    files = sorted(p for p in STATIC_DIR.rglob("*") if p.is_file() and not p.name.startswith("."))
    for path in files:
        data = path.read_bytes()
        url = f"{PREFIX}/static/{path.relative_to(STATIC_DIR).as_posix()}"
        assets.append(Asset(url, hashlib.sha256(data).hexdigest(), len(data)))
        # Served from memory: what was hashed is what is served until the next start, even if
        # a file changes on disk meanwhile (the worker's integrity check would refuse it).
        generated[url] = data
    documents = {
        f"{PREFIX}/instruments.json": instruments_document(),
        f"{PREFIX}/manifest.webmanifest": _web_manifest(),
    }
    release = str(app.config["FIELD_APP_RELEASE"])
    # The page names the version it was built with; hash the rest first, then render it.
    pre = hashlib.sha256(release.encode())
    for asset in assets:
        pre.update(f"{asset.url} {asset.sha256}\n".encode())
    for url, data in sorted(documents.items()):
        pre.update(f"{url} {hashlib.sha256(data).hexdigest()}\n".encode())
    template_dir = Path(__file__).resolve().parent / "templates"
    for template in sorted(template_dir.glob("*")):
        pre.update(hashlib.sha256(template.read_bytes()).digest())
    version = pre.hexdigest()[:16]
    documents[f"{PREFIX}/"] = _page_bytes(app, "field.html", version)
    for url, data in sorted(documents.items()):
        assets.append(Asset(url, hashlib.sha256(data).hexdigest(), len(data)))
    generated.update(documents)
    kill = bool(app.config["FIELD_APP_KILL_SWITCH"])
    return AssetManifest(version, tuple(sorted(assets, key=lambda a: a.url)), kill), generated


def _web_manifest() -> bytes:
    manifest = {
        "name": "乡村数据同步 · 入户采集",
        "short_name": "入户采集",
        "description": "离线填报、加密保存、联网同步 / Offline household survey for village teams",
        "lang": "zh-CN",
        "start_url": f"{PREFIX}/",
        "scope": f"{PREFIX}/",
        "display": "standalone",
        "orientation": "portrait",
        "background_color": "#f3f5f7",
        "theme_color": "#1f5f8b",
        "icons": [
            {
                "src": f"{PREFIX}/static/app/icon.svg",
                "sizes": "any",
                "type": "image/svg+xml",
                "purpose": "any maskable",
            },
            {"src": f"{PREFIX}/icon-192.png", "sizes": "192x192", "type": "image/png"},
            {"src": f"{PREFIX}/icon-512.png", "sizes": "512x512", "type": "image/png"},
        ],
    }
    return json.dumps(manifest, ensure_ascii=False, indent=1).encode()


def _state() -> tuple[AssetManifest, dict[str, bytes]]:
    return current_app.extensions["field_app"]


#: Bodies smaller than this go as they are: gzip's header would eat the gain.
GZIP_MIN_BYTES = 512


@functools.lru_cache(maxsize=256)
def _gzipped(body: bytes) -> bytes:
    return gzip.compress(body, compresslevel=9, mtime=0)


def _shell_response(body: bytes, mimetype: str) -> Response:
    # Compressed here (waitress does not): the first install over a 64 kbit/s link costs the
    # compressed bytes, a few times fewer. Integrity and hashes are over the decoded body.
    if len(body) >= GZIP_MIN_BYTES and "gzip" in request.headers.get("Accept-Encoding", ""):
        response = Response(_gzipped(body), mimetype=mimetype)
        response.headers["Content-Encoding"] = "gzip"
    else:
        response = Response(body, mimetype=mimetype)
    response.headers["Vary"] = "Accept-Encoding"
    # Revalidate every time: the worker is the offline copy; the HTTP cache must never hand
    # the worker an old file under a new manifest (the integrity check would then fail).
    response.headers["Cache-Control"] = "no-cache"
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


@blueprint.get("/")
def app_page() -> Response:
    """The field app's one page (the shell); everything else is drawn by ``app/app.js``."""
    _, generated = _state()
    return _shell_response(generated[f"{PREFIX}/"], "text/html")


@blueprint.get("/manifest.webmanifest")
def web_manifest() -> Response:
    """The web app manifest (installable: name, icons, start URL, standalone display)."""
    _, generated = _state()
    return _shell_response(generated[f"{PREFIX}/manifest.webmanifest"], "application/manifest+json")


@blueprint.get("/instruments.json")
def instruments() -> Response:
    """The built-in instrument definitions (public documents, precached as form assets)."""
    _, generated = _state()
    return _shell_response(generated[f"{PREFIX}/instruments.json"], "application/json")


@blueprint.get("/asset-manifest.json")
def asset_manifest() -> Response:
    """The manifest the worker precaches from; the page reads it to see the kill flag."""
    manifest, _ = _state()
    response = _shell_response(json.dumps(manifest.as_json()).encode(), "application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.get("/sw.js")
def service_worker() -> Response:
    """The service worker, with the asset manifest written into it (so a new manifest is a new
    worker), or the self-removing worker when ``FIELD_APP_KILL_SWITCH`` is on."""
    manifest, _ = _state()
    template = "sw-kill.js" if manifest.kill else "sw.js"
    body = render_template(template, manifest=manifest.as_json(), prefix=PREFIX).encode()
    response = _shell_response(body, "text/javascript")
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.get("/sw-kill")
def kill_page() -> Response:
    """A page that unregisters every worker of ``/field/`` and deletes its caches."""
    manifest, _ = _state()
    with_page = render_template("kill.html", version=manifest.version).encode()
    response = _shell_response(with_page, "text/html")
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.get("/ping")
def ping() -> Response:
    """The connectivity probe: a tiny answer from the county server itself (``navigator.onLine``
    says only that some network is up, not that this server can be reached)."""
    manifest, _ = _state()
    response = Response(
        json.dumps({"ok": True, "version": manifest.version}), mimetype="application/json"
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.get("/icon-<int:size>.png")
def icon_png(size: int) -> Response:
    """The home-screen icon as PNG (some launchers want one), drawn by code at start-up."""
    if size not in (192, 512):
        abort(404)
    return _shell_response(icon_png_bytes(size), "image/png")


@blueprint.get("/static/<path:name>")
def static_file(name: str) -> Response:
    """A file of the app (shell, form engine, protocol client, vendored libraries), as hashed
    at start-up; a name outside the manifest is a 404."""
    _, bodies = _state()
    body = bodies.get(f"{PREFIX}/static/{name}")
    if body is None:
        abort(404)
    mimetype = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if name.endswith((".js", ".mjs")):
        mimetype = "text/javascript"
    return _shell_response(body, mimetype)


@functools.cache
def icon_png_bytes(size: int) -> bytes:
    """A square PNG icon: the app's blue with a white house, drawn without an image library."""
    blue, white = (0x1F, 0x5F, 0x8B), (0xFF, 0xFF, 0xFF)
    rows = []
    for y in range(size):
        row = bytearray(b"\x00")  # filter type: none
        for x in range(size):
            u, v = x / size, y / size
            roof = 0.2 <= v < 0.45 and abs(u - 0.5) <= (v - 0.2) * 1.2
            wall = 0.45 <= v < 0.8 and 0.28 <= u <= 0.72
            door = 0.6 <= v < 0.8 and 0.45 <= u <= 0.55
            row += bytes(white if (roof or wall) and not door else blue)
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows), 9))
        + chunk(b"IEND", b"")
    )


def init_app(app: Flask) -> None:
    """Register the field app at ``/field/`` and build its asset manifest from the files now."""
    app.register_blueprint(blueprint)
    app.extensions["field_app"] = build_manifest(app)
