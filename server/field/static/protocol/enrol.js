// Device keys (WebCrypto, private halves non-extractable) and enrolment with a one-time code
// (POST /api/v1/devices/enroll, the same call village_client_stub/enrollment.py makes).
import { b64decode, b64encode, importEd25519Public, keyId, hex } from "./envelope.js";
import { ProtocolError } from "./errors.js";

const subtle = globalThis.crypto.subtle;
export const ENROLL_PATH = "/api/v1/devices/enroll";

/**
 * The device's key bundle: {encryption: {privateKey, publicRaw}, signing: {privateKey,
 * publicRaw}}. Both private CryptoKeys are non-extractable (they can be stored in IndexedDB
 * as CryptoKey objects, never read back as bytes); only the 32-byte public halves are exported.
 */
export async function generateDeviceKeys() {
  const encryption = await subtle.generateKey({ name: "X25519" }, false, ["deriveBits"]);
  const signing = await subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
  return {
    encryption: { privateKey: encryption.privateKey, publicRaw: new Uint8Array(await subtle.exportKey("raw", encryption.publicKey)) },
    signing: { privateKey: signing.privateKey, publicRaw: new Uint8Array(await subtle.exportKey("raw", signing.publicKey)) },
  };
}

/** The server's public keys from their base64 forms: {encryptionPublic, signingKey, signingPublic}. */
export async function serverKeysFrom(answer) {
  const encryptionPublic = b64decode(answer.encryption_public);
  const signingPublic = b64decode(answer.signing_public);
  if (encryptionPublic.length !== 32 || signingPublic.length !== 32) {
    throw new ProtocolError("invalid_key", "the server's public keys are not 32 bytes", { zh: "服务器公钥格式错误" });
  }
  return {
    encryptionPublic,
    signingPublic,
    encryptionKeyId: answer.encryption_key_id || hex(await keyId(encryptionPublic)),
    signingKey: await importEd25519Public(signingPublic),
  };
}

/** A refusal of the server, with its stable code and both messages (Chinese first). */
export class ServerError extends ProtocolError {
  constructor(status, body) {
    const error = (body && body.error) || {};
    const message = error.message || {};
    super(error.code || `http_${status}`, message.en || `HTTP ${status}`, { zh: message.zh || `服务器返回 HTTP ${status}` });
    this.status = status;
    this.details = error.details ?? null;
  }
}

/**
 * Enrol with a one-time code: returns {deviceId, scope, server, forms}. Throws ServerError
 * (enrollment_code_used, enrollment_code_expired …) or a TypeError when the network fails.
 */
export async function enrol({ baseUrl, code, keys, label = "", fetch = globalThis.fetch }) {
  const response = await fetch(`${baseUrl}${ENROLL_PATH}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ code, x25519_public: b64encode(keys.encryption.publicRaw), ed25519_public: b64encode(keys.signing.publicRaw), label }),
    credentials: "omit",
    cache: "no-store",
  });
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) throw new ServerError(response.status, body);
  if (!body || typeof body.device_id !== "string" || typeof body.scope !== "string" || !body.server_keys) {
    throw new ProtocolError("enrollment_answer_invalid", "the server's enrollment answer is not understood", { zh: "服务器的注册应答格式不对" });
  }
  return { deviceId: body.device_id, scope: body.scope, server: await serverKeysFrom(body.server_keys), forms: body.forms || [] };
}
