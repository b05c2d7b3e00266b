// "Export outbox to a file": the sealed /sync request the device would send now, in the outbox
// file format of docs/outbox-file.md — the same bytes `village-device export-outbox` writes and
// the county server imports (python -m server import-batch, or the devices page).
//
//   VILLAGE-SYNC-OUTBOX 1\n   magic and format version
//   {header JSON}\n           device_id, server_url, created_at_ms, ops, first_seq, last_seq,
//                             body_bytes, body_sha256 (keys sorted, as the Python writer does)
//   <body>                    the /sync request body: hello frame + batch frames

export const OUTBOX_MAGIC = "VILLAGE-SYNC-OUTBOX 1\n";

async function sha256Hex(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** Build the file for a sealed request ``body`` carrying the ops whose seqs are ``seqs``. */
export async function outboxFile({ deviceId, serverUrl = "", body, seqs = [], now = new Date() }) {
  const bytes = new Uint8Array(body);
  const header = {
    body_bytes: bytes.length,
    body_sha256: await sha256Hex(bytes),
    created_at_ms: now.getTime(),
    device_id: deviceId,
    first_seq: seqs.length ? Math.min(...seqs) : 0,
    last_seq: seqs.length ? Math.max(...seqs) : 0,
    ops: seqs.length,
    server_url: serverUrl,
  };
  const head = new TextEncoder().encode(OUTBOX_MAGIC + JSON.stringify(header) + "\n");
  const stamp = now.toISOString().replace(/[-:]/g, "").slice(0, 15);
  const who = (deviceId || "device").slice(0, 8);
  return {
    name: `village-outbox-${who}-${stamp}.outbox`,
    blob: new Blob([head, bytes], { type: "application/octet-stream" }),
    header,
  };
}
