// The sealed envelope, suite 1 only (X25519 + HKDF-SHA256 + AES-256-GCM + Ed25519), with
// WebCrypto; request framing; deflate-raw compression. Port of sync_protocol/envelope.py,
// exchange.py and the browser part of compression.py (docs/protocol-envelope.md).
import { encodeMessage, decodeMessage } from "./messages.js";
import { ProtocolError } from "./errors.js";

const subtle = globalThis.crypto.subtle;
const LABEL = new TextEncoder().encode("village-sync envelope v1");
const MAGIC = [0x56, 0x53, 0x45, 0x00];
export const BROWSER_SUITE = 1;
export const MAX_ENVELOPE_BYTES = 8 * 1024 * 1024;
export const MAX_PAYLOAD_BYTES = 8 * 1024 * 1024;
export const COMPRESSION = { RAW: 0, DEFLATE_RAW: 1 };
const PKCS8_X25519 = [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20];
const PKCS8_ED25519 = [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
const fail = (code, message) => {
  throw new ProtocolError(code, message || code);
};

export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}
export const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
export const fromHex = (text) => new Uint8Array((text.match(/../g) || []).map((h) => parseInt(h, 16)));
export const b64encode = (bytes) => btoa(String.fromCharCode(...bytes));
export const b64decode = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));

/** First 8 bytes of SHA-256 of a raw public key. */
export async function keyId(rawPublic) {
  return new Uint8Array(await subtle.digest("SHA-256", rawPublic)).slice(0, 8);
}

// Raw 32-byte private keys (test vectors only: a browser device makes its own with generateKey).
export const importX25519Private = (raw32, extractable = false) =>
  subtle.importKey("pkcs8", concat(PKCS8_X25519, raw32), { name: "X25519" }, extractable, ["deriveBits"]);
export const importEd25519Private = (seed32) =>
  subtle.importKey("pkcs8", concat(PKCS8_ED25519, seed32), { name: "Ed25519" }, false, ["sign"]);
export const importEd25519Public = (raw32) => subtle.importKey("raw", raw32, { name: "Ed25519" }, true, ["verify"]);

async function aeadKey(privateKey, peerRaw, ephemeralRaw, recipientRaw, header) {
  const peer = await subtle.importKey("raw", peerRaw, { name: "X25519" }, true, []);
  let shared;
  try {
    shared = new Uint8Array(await subtle.deriveBits({ name: "X25519", public: peer }, privateKey, 256));
  } catch {
    fail("envelope_malformed_header", "low-order X25519 key"); // WebCrypto refuses an all-zero secret
  }
  if (shared.every((b) => b === 0)) fail("envelope_malformed_header", "low-order X25519 key");
  const ikm = await subtle.importKey("raw", shared, "HKDF", false, ["deriveKey"]);
  return subtle.deriveKey(
    { name: "HKDF", hash: "SHA-256", salt: concat(ephemeralRaw, recipientRaw), info: concat(LABEL, header) },
    ikm, { name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
}

function encodeHeader(h) {
  const sender = new TextEncoder().encode(h.senderId);
  if (sender.length < 1 || sender.length > 255) fail("envelope_malformed_header", "sender id of 1..255 bytes");
  const header = new Uint8Array(81 + sender.length);
  const view = new DataView(header.buffer);
  header.set(MAGIC, 0);
  header[4] = 1;
  header[5] = BROWSER_SUITE;
  header[6] = h.compression;
  view.setUint32(7, h.dictionaryId);
  header.set(h.recipientKeyId, 12);
  header[20] = sender.length;
  header.set(sender, 21);
  const o = 21 + sender.length;
  view.setBigUint64(o, BigInt(h.sequence));
  header.set(h.ephemeralRaw, o + 8);
  header.set(h.nonce, o + 40);
  view.setUint32(o + 52, h.plaintextLength);
  view.setUint32(o + 56, h.plaintextLength + 16);
  return header;
}

/**
 * Seal `payload` (already compressed as `compression` says) to the recipient's raw X25519
 * public key, signed with the sender's Ed25519 CryptoKey. `ephemeral` ({privateKey, publicRaw})
 * and `nonce` are given only to reproduce test vectors.
 */
export async function seal(payload, { recipientPublicRaw, senderId, signingKey, sequence, compression = 0, ephemeral, nonce }) {
  if (compression !== 0 && compression !== 1) fail("envelope_malformed_header", "the browser suite compresses with raw or deflate-raw only");
  if (!ephemeral) {
    const pair = await subtle.generateKey({ name: "X25519" }, false, ["deriveBits"]);
    ephemeral = { privateKey: pair.privateKey, publicRaw: new Uint8Array(await subtle.exportKey("raw", pair.publicKey)) };
  }
  nonce ??= globalThis.crypto.getRandomValues(new Uint8Array(12));
  const header = encodeHeader({
    compression, dictionaryId: 0, senderId, sequence, ephemeralRaw: ephemeral.publicRaw, nonce,
    recipientKeyId: await keyId(recipientPublicRaw), plaintextLength: payload.length,
  });
  const key = await aeadKey(ephemeral.privateKey, recipientPublicRaw, ephemeral.publicRaw, recipientPublicRaw, header);
  const ciphertext = new Uint8Array(await subtle.encrypt({ name: "AES-GCM", iv: nonce, additionalData: header, tagLength: 128 }, key, payload));
  const signed = concat(header, ciphertext);
  return concat(signed, new Uint8Array(await subtle.sign({ name: "Ed25519" }, signingKey, signed)));
}

/** Header fields, checked in the order of docs/protocol-envelope.md ("Opening"), steps 1-2. */
export function peekHeader(envelope) {
  const view = new DataView(envelope.buffer, envelope.byteOffset, envelope.byteLength);
  if (envelope.length > MAX_ENVELOPE_BYTES) fail("envelope_too_large");
  if (envelope.length < 21) fail("envelope_truncated");
  if (MAGIC.some((b, i) => envelope[i] !== b)) fail("envelope_malformed_header", "bad magic");
  if (envelope[4] !== 1) fail("envelope_unsupported_version");
  if (envelope[5] !== 1 && envelope[5] !== 2) fail("envelope_unsupported_suite");
  const compression = envelope[6];
  const dictionaryId = view.getUint32(7);
  const n = envelope[20];
  if (compression > 3 || (compression === 3) !== (dictionaryId !== 0) || envelope[11] !== 0 || n === 0) {
    fail("envelope_malformed_header");
  }
  const headerLength = 81 + n;
  if (envelope.length < headerLength) fail("envelope_truncated");
  let senderId;
  try {
    senderId = new TextDecoder("utf-8", { fatal: true }).decode(envelope.subarray(21, 21 + n));
  } catch {
    fail("envelope_malformed_header", "sender id is not UTF-8");
  }
  const p = view.getUint32(73 + n);
  const c = view.getUint32(77 + n);
  if (c !== p + 16) fail("envelope_malformed_header");
  const total = headerLength + c + 64;
  if (total > MAX_ENVELOPE_BYTES) fail("envelope_too_large");
  if (envelope.length < total) fail("envelope_truncated");
  if (envelope.length > total) fail("envelope_malformed_header", "trailing bytes");
  return {
    suite: envelope[5], compression, dictionaryId, senderId, headerLength, ciphertextLength: c,
    recipientKeyId: envelope.slice(12, 20), sequence: Number(view.getBigUint64(21 + n)),
    ephemeralRaw: envelope.slice(29 + n, 61 + n), nonce: envelope.slice(61 + n, 73 + n),
  };
}

/**
 * Open an envelope sealed to us. `senderVerifyKey(senderId)` returns the sender's Ed25519
 * CryptoKey or null; `isReplay(senderId, sequence)` is the caller's replay check.
 * Returns {header, payload}; throws ProtocolError with the envelope's codes.
 */
export async function open(envelope, { recipientPrivateKey, recipientPublicRaw, senderVerifyKey, isReplay = null }) {
  const h = peekHeader(envelope);
  const ownId = await keyId(recipientPublicRaw);
  if (ownId.some((b, i) => h.recipientKeyId[i] !== b)) fail("envelope_unknown_key_id");
  const verifyKey = await senderVerifyKey(h.senderId);
  if (!verifyKey) fail("envelope_unknown_sender");
  const end = h.headerLength + h.ciphertextLength;
  if (!(await subtle.verify({ name: "Ed25519" }, verifyKey, envelope.slice(end), envelope.slice(0, end)))) {
    fail("envelope_bad_signature"); // verified before anything is decrypted
  }
  if (isReplay && (await isReplay(h.senderId, h.sequence))) fail("envelope_replayed");
  // Suite 2 (ChaCha20-Poly1305) is not in WebCrypto; the browser announces suite 1 only.
  if (h.suite !== BROWSER_SUITE) fail("envelope_unsupported_suite", "this browser opens suite 1 only");
  const header = envelope.slice(0, h.headerLength);
  const key = await aeadKey(recipientPrivateKey, h.ephemeralRaw, h.ephemeralRaw, recipientPublicRaw, header);
  let payload;
  try {
    payload = new Uint8Array(await subtle.decrypt({ name: "AES-GCM", iv: h.nonce, additionalData: header, tagLength: 128 }, key, envelope.slice(h.headerLength, end)));
  } catch {
    fail("envelope_wrong_recipient_key");
  }
  return { header: h, payload };
}

// --- compression: raw and deflate-raw (no dictionary) ----------------------------------------

async function pipe(bytes, transform, limit) {
  const stream = new Blob([bytes]).stream().pipeThrough(transform);
  const chunks = [];
  let size = 0;
  for (const reader = stream.getReader(); ;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > limit) {
      await reader.cancel();
      fail("decompressed_too_large", "the payload decompresses beyond the limit");
    }
    chunks.push(value);
  }
  return concat(...chunks);
}

export const deflateRaw = (bytes) => pipe(bytes, new CompressionStream("deflate-raw"), Infinity);

/** The payload as `compression` says (0 raw, 1 deflate-raw); 2 and 3 (zstd) are not offered. */
export async function decompress(compression, data, maxSize = MAX_PAYLOAD_BYTES) {
  if (compression === 0) {
    if (data.length > maxSize) fail("decompressed_too_large");
    return data;
  }
  if (compression === 1) {
    try {
      return await pipe(data, new DecompressionStream("deflate-raw"), maxSize);
    } catch (error) {
      if (error instanceof ProtocolError) throw error;
      fail("corrupt_compressed_data", String(error));
    }
  }
  fail("unknown_compression", `compression ${compression} is not available in the browser`);
}

/** The smaller of raw and deflate-raw (raw when equal), as the Python sender chooses. */
export async function compress(payload, allowed = [0, 1]) {
  if (!allowed.includes(1)) return { compression: 0, data: payload };
  const deflated = await deflateRaw(payload);
  return deflated.length < payload.length ? { compression: 1, data: deflated } : { compression: 0, data: payload };
}

// --- messages in envelopes, and framing ------------------------------------------------------

export async function sealMessage(message, { allowed = [0, 1], ...options }) {
  const { compression, data } = await compress(encodeMessage(message), allowed);
  return seal(data, { ...options, compression });
}

export async function openMessage(envelope, { expected = null, maxSize = MAX_PAYLOAD_BYTES, ...options }) {
  const { header, payload } = await open(envelope, options);
  return { header, message: decodeMessage(await decompress(header.compression, payload, maxSize), expected) };
}

/** One request body: each envelope behind its uint32 big-endian length. */
export function encodeFrames(envelopes) {
  return concat(...envelopes.flatMap((e) => {
    const prefix = new Uint8Array(4);
    new DataView(prefix.buffer).setUint32(0, e.length);
    return [prefix, e];
  }));
}

/** The frames of a body: [{index, data, truncated}]; frame_malformed for a length 0 or > 8 MiB. */
export function decodeFrames(body) {
  const frames = [];
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  let offset = 0;
  for (let index = 0; offset < body.length; index++) {
    if (body.length - offset < 4) {
      frames.push({ index, data: new Uint8Array(0), truncated: true });
      break;
    }
    const length = view.getUint32(offset);
    if (length === 0 || length > MAX_ENVELOPE_BYTES) {
      const error = new ProtocolError("frame_malformed", `frame ${index} announces ${length} bytes`);
      error.frames = frames;
      throw error;
    }
    const data = body.slice(offset + 4, offset + 4 + length);
    offset += 4 + length;
    frames.push({ index, data, truncated: data.length < length });
  }
  return frames;
}
