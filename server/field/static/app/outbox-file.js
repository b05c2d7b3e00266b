// "Export outbox to a file": the sealed envelopes a /sync request would carry, as JSON lines, so a
// worker with no signal can carry them to the township office (format: docs/field-app.md
// §outbox file; the same file `village-device export-outbox` writes and the server imports).

export const OUTBOX_FORMAT = "village-sync-outbox";
export const OUTBOX_VERSION = 1;

function base64(bytes) {
  let text = "";
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text);
}

/** Build the file: a header line, then one line per envelope in frame order (0 = hello). */
export function outboxFile({ deviceId, envelopes, now = new Date() }) {
  const header = {
    format: OUTBOX_FORMAT,
    version: OUTBOX_VERSION,
    device_id: deviceId,
    exported_at: now.toISOString(),
    frames: envelopes.length,
  };
  const lines = [JSON.stringify(header)];
  envelopes.forEach((envelope, frame) => {
    lines.push(JSON.stringify({ frame, envelope: base64(new Uint8Array(envelope)) }));
  });
  const stamp = now.toISOString().replace(/[-:]/g, "").slice(0, 15);
  const who = (deviceId || "device").slice(0, 8);
  return {
    name: `village-outbox-${who}-${stamp}.jsonl`,
    blob: new Blob([lines.join("\n") + "\n"], { type: "application/jsonl" }),
    text: lines.join("\n") + "\n",
  };
}
