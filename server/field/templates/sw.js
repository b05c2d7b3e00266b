// The field app's service worker, rendered by the county server with its asset manifest.
// Version {{ manifest.version }}: a change to any file of the app is a new version, so the browser
// sees new bytes here, installs this worker beside the old one and the page offers the update.
"use strict";

const MANIFEST = {{ manifest|tojson }};
const PREFIX = {{ prefix|tojson }};
const CACHE_PREFIX = "field-shell-";
const CACHE = CACHE_PREFIX + MANIFEST.version;
const PRECACHED = new Set(MANIFEST.assets.map((asset) => asset.url));

self.addEventListener("install", (event) => {
  // Every file is fetched past the HTTP cache and checked against its SHA-256 (subresource
  // integrity), so the cache can only ever hold exactly the bytes this manifest names.
  // No skipWaiting here: the page decides when to switch, after saving what is being typed.
  event.waitUntil(
    (async () => {
      const cache = await caches.open(CACHE);
      await Promise.all(
        MANIFEST.assets.map(async (asset) => {
          const response = await fetch(asset.url, {
            cache: "no-store",
            credentials: "same-origin",
            integrity: asset.integrity,
          });
          if (!response.ok) throw new Error(`precache ${asset.url}: HTTP ${response.status}`);
          await cache.put(asset.url, response);
        }),
      );
    })(),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    (async () => {
      for (const name of await caches.keys()) {
        if (name.startsWith(CACHE_PREFIX) && name !== CACHE) await caches.delete(name);
      }
      // The very first install controls the open page at once (offline works before a reload);
      // an update only gets here after the page asked for it.
      await self.clients.claim();
    })(),
  );
});

self.addEventListener("message", (event) => {
  if (event.data && event.data.type === "skip-waiting") self.skipWaiting();
});

function precachedPath(request) {
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return null;
  if (request.mode === "navigate" && (url.pathname === PREFIX || url.pathname === PREFIX + "/")) {
    return PREFIX + "/";
  }
  return url.search === "" && PRECACHED.has(url.pathname) ? url.pathname : null;
}

self.addEventListener("fetch", (event) => {
  const request = event.request;
  // Only GETs of the precached files are answered here. A POST (sync, enrolment, uploads), a
  // PATCH or HEAD, and every other GET are not touched at all: the browser sends them itself,
  // body and all, exactly once (enketo/enketo#1584: a worker re-issuing POSTs lost bodies).
  if (request.method !== "GET") return;
  const path = precachedPath(request);
  if (path === null) return;
  event.respondWith(
    (async () => {
      const cache = await caches.open(CACHE);
      const hit = await cache.match(path);
      return hit || fetch(request);
    })(),
  );
});
