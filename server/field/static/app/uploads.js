// Photo uploads: the county server's resumable upload (docs/attachments.md), signed with the
// device's Ed25519 key through WebCrypto. Announce (POST), then PATCH chunks from the offset the
// server confirmed; after any drop ask where to go on (GET) and send from there. A chunk is only
// ever re-sent from the server's own offset, so a retried upload cannot duplicate bytes.

const UPLOADS = "/api/v1/uploads";
const te = new TextEncoder();

async function hex(data) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

function base64(bytes) {
  let text = "";
  for (const byte of new Uint8Array(bytes)) text += String.fromCharCode(byte);
  return btoa(text);
}

/** The Authorization header of one upload request (attachments.md, "Device signature"). */
export async function uploadAuthorization({ deviceId, signingKey, method, path, sha256, offset, body, nowMs }) {
  const ts = String(Math.floor(nowMs / 1000));
  const bodyHash = body && body.byteLength ? await hex(body) : "";
  const message = ["village-sync-upload-v1", method, path, sha256, offset, bodyHash, ts].join("\n");
  const signature = await crypto.subtle.sign("Ed25519", signingKey, te.encode(message));
  return `VillageSync-Device device="${deviceId}", ts="${ts}", sig="${base64(signature)}"`;
}

export class UploadFailed extends Error {
  constructor(status, body) {
    const error = body && body.error;
    const message = error ? (typeof error.message === "object" ? `${error.message.zh} / ${error.message.en}` : error.message) : `HTTP ${status}`;
    super(message);
    this.status = status;
    this.code = error ? error.code : "upload_failed";
    this.details = error ? error.details : null;
  }
}

/** Upload `bytes` (content address `sha256`, 64 hex); resolves to the server's final status.
 * `now` gives the clock to sign with (ms; pass one corrected by the server's time). */
export async function uploadPhoto({
  baseUrl = self.location.origin,
  deviceId,
  signingKey,
  sha256,
  bytes,
  contentType = "image/jpeg",
  chunkBytes = 32 * 1024,
  now = () => Date.now(),
  fetch = self.fetch.bind(self),
}) {
  const send = async (method, path, offset, body, headers = {}) => {
    const authorization = await uploadAuthorization({
      deviceId, signingKey, method, path, sha256, offset, body, nowMs: now(),
    });
    const response = await fetch(baseUrl + path, {
      method,
      body,
      cache: "no-store",
      headers: { ...headers, Authorization: authorization },
    });
    const json = await response.json().catch(() => null);
    return { response, json };
  };

  const announce = te.encode(JSON.stringify({ sha256, size: bytes.byteLength, content_type: contentType }));
  let { response, json } = await send("POST", UPLOADS, "0", announce, { "Content-Type": "application/json" });
  if (!response.ok) throw new UploadFailed(response.status, json);
  let status = json;
  const path = `${UPLOADS}/${sha256}`;
  while (!status.complete) {
    const offset = status.offset;
    const chunk = bytes.slice(offset, offset + chunkBytes);
    const checksum = base64(await crypto.subtle.digest("SHA-256", chunk));
    ({ response, json } = await send("PATCH", path, String(offset), chunk, {
      "Content-Type": "application/offset+octet-stream",
      "Upload-Offset": String(offset),
      "Upload-Checksum": `sha256 ${checksum}`,
    }));
    if (response.ok) {
      status = json;
    } else if (response.status === 409 && json && json.error && json.error.code === "upload_offset_mismatch") {
      // Another attempt got further (or a chunk was lost): ask where the server stands.
      ({ response, json } = await send("GET", path, "", null));
      if (!response.ok) throw new UploadFailed(response.status, json);
      status = json;
    } else {
      throw new UploadFailed(response.status, json);
    }
  }
  return status;
}

/** Upload every stored photo not yet uploaded; marks each done in the store. Returns counts. */
export async function uploadPendingPhotos({ storage, deviceId, signingKey, now, fetch }) {
  let uploaded = 0;
  const failed = [];
  for (const meta of await storage.photos()) {
    if (meta.uploaded) continue;
    const bytes = await storage.photo(meta.sha256);
    if (!bytes) continue;
    try {
      await uploadPhoto({ deviceId, signingKey, sha256: meta.sha256, bytes, contentType: meta.type, now, fetch });
      await storage.markPhoto(meta.sha256, { uploaded: true });
      uploaded += 1;
    } catch (error) {
      failed.push({ sha256: meta.sha256, code: error.code || "upload_failed" });
    }
  }
  return { uploaded, failed };
}
