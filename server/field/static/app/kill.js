// The page /field/sw-kill: unregister every service worker of the field app and delete its
// caches. Drafts and the outbox (IndexedDB) stay. This page is never precached, so a broken
// worker cannot answer for it.
const state = document.getElementById("kill-state");

async function kill() {
  let removed = 0;
  if ("serviceWorker" in navigator) {
    for (const registration of await navigator.serviceWorker.getRegistrations()) {
      if (new URL(registration.scope).pathname.startsWith("/field/")) {
        if (await registration.unregister()) removed += 1;
      }
    }
  }
  for (const name of await caches.keys()) {
    if (name.startsWith("field-shell-")) await caches.delete(name);
  }
  return removed;
}

kill().then(
  (removed) => {
    state.textContent = `已停用离线缓存（移除 ${removed} 个）。下次打开会重新安装。`;
    document.body.dataset.killed = "done";
  },
  (error) => {
    state.textContent = `停用失败：${error}`;
    document.body.dataset.killed = "failed";
  },
);
