// The field app's kill switch (FIELD_APP_KILL_SWITCH is on): this worker replaces a broken one at
// the browser's next update check, deletes the app's caches and unregisters itself. The page is
// not reloaded (a field worker may be typing); from then on it loads from the network only.
// Drafts and the outbox live in IndexedDB and are not touched.
"use strict";

self.addEventListener("install", () => self.skipWaiting());

self.addEventListener("activate", (event) => {
  event.waitUntil(
    (async () => {
      for (const name of await caches.keys()) {
        if (name.startsWith("field-shell-")) await caches.delete(name);
      }
      await self.registration.unregister();
    })(),
  );
});
