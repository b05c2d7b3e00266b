// One sync exchange over fetch (the browser twin of village_client_stub/sync_client.py,
// docs/protocol.md §6), on the sans-I/O engine of device.js.
//
// The transport never re-issues a POST body: fetch is called once per exchange with
// `redirect: "error"`, and a failure of any kind is a failed exchange. The next attempt builds a
// new request (new envelope sequences) from the outbox, where every op stays — state "sent" —
// until a verified, signed ack removes it; the server answers an op it already holds with the
// ack it stored, so a reply lost on the way costs a resend, never an op or a duplicate.
import { Backoff, FORMS_STREAM, LinkEstimate, MANIFEST_SCOPE, MAX_BATCHES_PER_REQUEST } from "./device.js";
import { b64encode, compress, encodeFrames, hex, keyId, openMessage, sealMessage } from "./envelope.js";
import { ProtocolError } from "./errors.js";
import { encodeMessage } from "./messages.js";
import { ServerError, serverKeysFrom } from "./enrol.js";

export const SYNC_PATH = "/api/v1/sync";
export const CONTENT_TYPE = "application/vnd.village-sync.exchange";
/** What the browser announces: suite 1 only, raw and deflate-raw, no zstd dictionaries. */
export const BROWSER_CAPABILITIES = Object.freeze({ suites: [1], compression: [0, 1], dictionary_ids: [], lean_downloads: true });
const OPS_PER_EXCHANGE = 2000;
/** The configuration entry of the manifest that announces the server's current keys. */
export const SERVER_KEYS_ENTRY = "server_keys";
const FRAME_AND_ENVELOPE = 4 + 81 + 16 + 64;

/** A failed exchange that is worth retrying (network, busy server, unverifiable reply). */
export class RetryableFailure extends ProtocolError {
  constructor(code, message, zh, waitS = 0) {
    super(code, message, { zh });
    this.waitS = waitS;
  }
}

/** The server refused this device (revoked, unknown, clock far off …): retrying will not help. */
export class SyncRefused extends ProtocolError {}

/** Cut ops into batches whose frames fit `maxWireBytes` (exchange.split_into_batches). */
export async function splitIntoBatches(ops, maxWireBytes, { senderId, firstBatchSeq = 1, allowed = [0, 1] }) {
  const overhead = FRAME_AND_ENVELOPE + new TextEncoder().encode(senderId).length;
  const wireSize = async (start, stop, batchSeq) => {
    const payload = encodeMessage({ type: "batch", batch_seq: batchSeq, ops: ops.slice(start, stop) });
    if (payload.length + overhead <= maxWireBytes) return payload.length + overhead;
    return (await compress(payload, allowed)).data.length + overhead;
  };
  const batches = [];
  let start = 0;
  let batchSeq = firstBatchSeq;
  while (start < ops.length) {
    let fits = start + 1;
    let step = 1;
    while (fits + step <= ops.length && (await wireSize(start, fits + step, batchSeq)) <= maxWireBytes) {
      fits += step;
      step *= 2;
    }
    let low = fits;
    let high = Math.min(fits + step, ops.length + 1);
    while (high - low > 1) {
      const middle = Math.floor((low + high) / 2);
      if ((await wireSize(start, middle, batchSeq)) <= maxWireBytes) low = middle;
      else high = middle;
    }
    batches.push({ type: "batch", batch_seq: batchSeq, ops: ops.slice(start, low) });
    start = low;
    batchSeq += 1;
  }
  return batches;
}

/**
 * Cuts the next request's batches from the outbox, learning how big ops are on the wire
 * (pacing.BatchPlanner): only as many ops are measured as the batches can hold.
 */
export class BatchPlanner {
  constructor(wireBytesPerOp = 80) {
    this.wireBytesPerOp = wireBytesPerOp;
  }

  async plan(pending, link, { senderId, firstBatchSeq = 1, allowed = [0, 1] }) {
    if (!pending.length) return [];
    const batchBytes = link.batchBytes;
    const count = Math.max(1, Math.min(MAX_BATCHES_PER_REQUEST, Math.floor(link.requestBytes / batchBytes)));
    const room = Math.trunc(((count * batchBytes) / this.wireBytesPerOp) * 1.25) + 8;
    const window = pending.slice(0, Math.max(16, room));
    const batches = (await splitIntoBatches(window, batchBytes, { senderId, firstBatchSeq, allowed })).slice(0, count);
    const used = batches.reduce((n, b) => n + b.ops.length, 0);
    if (used === window.length && pending.length > window.length) {
      // The window ran dry before the batches were full: ops are smaller than thought.
      this.wireBytesPerOp = Math.max(20, this.wireBytesPerOp * 0.7);
    } else if (used < window.length) {
      // Every chosen batch was cut by size: about batchBytes each.
      this.wireBytesPerOp = Math.max(20, (batches.length * batchBytes) / used);
    }
    return batches;
  }
}

/** POST once; never retried here. Returns {status, contentType, body: Uint8Array, headers}. */
/** Seconds of the `app` metric of a Server-Timing header ("app;dur=12.5" → 0.0125), or null. */
export function serverTimingS(value) {
  for (const metric of (value || "").split(",")) {
    const [name, ...params] = metric.split(";").map((part) => part.trim());
    if (name !== "app") continue;
    for (const param of params) {
      const [key, number] = param.split("=").map((part) => part.trim());
      if (key === "dur") {
        const ms = Number(String(number ?? "").replace(/"/g, ""));
        return Number.isFinite(ms) && ms >= 0 && number !== "" ? ms / 1000 : null;
      }
    }
  }
  return null;
}

export async function postOnce(fetch, url, body) {
  let response;
  const started = performance.now();
  try {
    response = await fetch(url, {
      method: "POST",
      body,
      headers: { "Content-Type": CONTENT_TYPE, Accept: CONTENT_TYPE },
      credentials: "omit",
      cache: "no-store",
      redirect: "error",
    });
    return {
      status: response.status,
      contentType: (response.headers.get("Content-Type") || "").split(";")[0].trim(),
      retryAfter: Number(response.headers.get("Retry-After")) || 0,
      serverS: serverTimingS(response.headers.get("Server-Timing")),
      body: new Uint8Array(await response.arrayBuffer()),
    };
  } catch (error) {
    const failure = new RetryableFailure("network_failed", `the exchange did not complete: ${error}`, "同步连接中断，未发送的修改都已保留");
    failure.droppedAfterS = (performance.now() - started) / 1000;
    throw failure;
  }
}

/**
 * Seal the hello and `batches` (messages.batch dicts) into one request body; the hello takes
 * the device's next envelope sequence, batch k the k-th after it. Stores the next sequence and
 * marks the ops sent before returning, so the request may leave. Returns {body, helloSequence,
 * sent: Map(batch_seq → op seqs)}.
 */
export async function buildRequest({ engine, device, batches, nowMs = () => Date.now(), tasks = false }) {
  const storage = engine.storage;
  const firstSequence = await engine.nextEnvelopeSequence();
  const counters = await storage.counters();
  const hello = {
    // `tasks`: the device keeps verification tasks, so its hello names the tasks stream too.
    type: "hello", device_id: device.deviceId, cursors: await engine.helloCursors(device.scope, { tasks }),
    high_water_mark: counters.ackedThrough, clock: await engine.helloClock({ nowMs: nowMs() }),
    capabilities: { ...BROWSER_CAPABILITIES },
  };
  const seal = (message, sequence) => sealMessage(message, {
    recipientPublicRaw: device.server.encryptionPublic, senderId: device.deviceId,
    signingKey: device.keys.signing.privateKey, sequence,
  });
  const envelopes = [await seal(hello, firstSequence)];
  for (const [i, batch] of batches.entries()) envelopes.push(await seal(batch, firstSequence + 1 + i));
  const sent = new Map(batches.map((b) => [b.batch_seq, b.ops.map((op) => op.seq)]));
  // The sequences are stored before the request leaves: a reload right after sending can never
  // reuse one (the server would refuse the request as a replay).
  await storage.transaction(async () => {
    await engine.reserveEnvelopeSequences(firstSequence + envelopes.length);
    await engine.markSent([...sent.values()].flat(), { nowMs: nowMs() });
  });
  return { body: encodeFrames(envelopes), helloSequence: firstSequence, sent };
}

/**
 * The verified reply to the request whose hello had `helloSequence`, from a postOnce response;
 * a refusal is returned as part of the reply. Throws ServerError for an HTTP error the retry
 * cannot fix, RetryableFailure otherwise (a replayed sequence skips the counter ahead).
 */
export async function openReply({ engine, device, response, helloSequence, link = null }) {
  if (response.contentType !== CONTENT_TYPE) {
    let error = null;
    try {
      error = JSON.parse(new TextDecoder().decode(response.body));
    } catch {
      error = null;
    }
    const failure = new ServerError(response.status, error);
    if (failure.code === "envelope_replayed") {
      await engine.storage.transaction(() => engine.skipEnvelopeSequences());
      const retry = new RetryableFailure("envelope_replayed", "the server had already seen this envelope sequence", "信封序号已被使用，已跳过");
      retry.status = response.status;
      throw retry;
    }
    if (response.status === 429 || response.status >= 500) {
      throw new RetryableFailure("server_busy", `the server is busy (HTTP ${response.status})`, `服务器繁忙（HTTP ${response.status}）`, response.retryAfter);
    }
    if (response.status === 413) {
      link?.failed();
      throw new RetryableFailure("request_too_large", "the request was too large", "请求过大，已减小批次");
    }
    throw failure;
  }
  try {
    const { message } = await openMessage(response.body, {
      expected: "reply",
      recipientPrivateKey: device.keys.encryption.privateKey,
      recipientPublicRaw: device.keys.encryption.publicRaw,
      senderVerifyKey: () => device.server.signingKey,
      // The reply carries the hello's sequence: an old reply played back is refused.
      isReplay: (_sender, sequence) => sequence !== helloSequence,
    });
    return message;
  } catch (error) {
    // A reply that does not verify is no reply: nothing in it may be trusted.
    throw new RetryableFailure("reply_unverified", `the reply did not verify (${error.code || error})`, `服务器应答校验失败（${error.code || error}）`);
  }
}

/** The `server_keys` entry of a reply's manifest page, or null. */
export function announcedServerKeys(reply) {
  for (const page of reply.downloads) {
    if (page.scope !== MANIFEST_SCOPE) continue;
    const entry = page.config.find((c) => c.key === SERVER_KEYS_ENTRY);
    if (entry) return entry;
  }
  return null;
}

/**
 * Apply a verified reply: fold the server time, stop on a refusal (SyncRefused, or
 * RetryableFailure for `busy`), then in one storage transaction fold acks, states and record
 * pages, hand each manifest page to `onManifest(page)` (the edge stores forms and
 * configuration) and advance its cursor. Returns the engine's fold.
 */
export async function applyReply({ engine, reply, sent, nowMs = () => Date.now(), onManifest = async () => {} }) {
  const storage = engine.storage;
  await storage.transaction(() => engine.observeServerTime(reply.server_time_ms, { nowMs: nowMs() }));
  if (reply.refusal) {
    const { code, message, message_zh: zh } = reply.refusal;
    if (code === "busy") throw new RetryableFailure("busy", message, zh, reply.backoff_ms / 1000);
    const refused = new SyncRefused(code, message, { zh });
    refused.backoffMs = reply.backoff_ms;
    throw refused;
  }
  return storage.transaction(async () => {
    const fold = await engine.foldReply(reply, sent, { nowMs: nowMs() });
    for (const page of fold.manifestPages) {
      await onManifest(page);
      await engine.advanceCursor(MANIFEST_SCOPE, FORMS_STREAM, page.next_cursor);
    }
    return fold;
  });
}

/**
 * Take the server keys a verified reply announces (after a rotation); returns the new key id,
 * or null when they are the keys held or the entry is malformed (the old keys keep working).
 * `device.server` is replaced; `onServerKeys(server)` lets the edge store them.
 */
export async function adoptServerKeys(device, entry, onServerKeys = async () => {}) {
  if (!entry || entry.encryption_public === b64encode(device.server.encryptionPublic)) return null;
  let server;
  try {
    server = await serverKeysFrom(entry);
  } catch {
    return null;
  }
  if (entry.encryption_key_id && entry.encryption_key_id !== hex(await keyId(server.encryptionPublic))) return null;
  device.server = server;
  await onServerKeys(server);
  return server.encryptionKeyId;
}

/**
 * One exchange: hello + the outbox's next batches up, acks + download pages down.
 *
 * `device` = {deviceId, scope, keys (generateDeviceKeys), server (serverKeysFrom)} — or give
 * `keys`, `server` and `scope` alone, the id being `engine.deviceId`; `engine` a
 * DeviceEngine whose storage offers `transaction(work)`; `link` and `planner` carry what was
 * learnt about the link from one exchange to the next; `onManifest(page)` stores forms and
 * configuration, `onServerKeys(server)` the keys of a rotation; `tasks` asks for the
 * verification-task stream (a server from before it refuses with `scope_denied`). Returns {fold, reply, more,
 * opsSent, serverKeysAdopted, bytesUp, bytesDown, backoffMs}. Throws RetryableFailure,
 * SyncRefused or ServerError.
 */
export async function syncOnce({ engine, device, keys, server, scope, baseUrl, fetch = globalThis.fetch, nowMs = () => Date.now(), link = new LinkEstimate(), planner = new BatchPlanner(), onManifest, onServerKeys, tasks = false }) {
  // The shared plan's call shape, syncOnce({engine, keys, server, scope, baseUrl, fetch}), is the
  // same device spelt out: its id is the engine's.
  device ??= { deviceId: engine.deviceId, scope, keys, server };
  const pending = await engine.pendingOps(OPS_PER_EXCHANGE);
  const first = await engine.nextEnvelopeSequence();
  // Batch seq = the batch's own envelope sequence: unique, increasing, names its request.
  const batches = await planner.plan(pending, link, { senderId: device.deviceId, firstBatchSeq: first + 1 });
  const { body, helloSequence, sent } = await buildRequest({ engine, device, batches, nowMs, tasks });
  const started = performance.now();
  const response = await postOnce(fetch, `${baseUrl}${SYNC_PATH}`, body);
  // The link's time ends with the reply's last byte; opening and applying it is the device's.
  const elapsedS = (performance.now() - started) / 1000;
  const reply = await openReply({ engine, device, response, helloSequence, link });
  const fold = await applyReply({ engine, reply, sent, nowMs, onManifest });
  const serverKeysAdopted = await adoptServerKeys(device, announcedServerKeys(reply), onServerKeys);
  link.observe(body.length, response.body.length, elapsedS, { uploaded: sent.size > 0, serverS: response.serverS });
  if (sent.size && !reply.acks.length) {
    throw new RetryableFailure("nothing_committed", "the server committed none of the batches", "服务器未接收任何批次");
  }
  return {
    fold, reply, more: fold.more, opsSent: [...sent.values()].flat(), serverKeysAdopted,
    bytesUp: body.length, bytesDown: response.body.length, backoffMs: reply.backoff_ms,
  };
}

/**
 * Exchange until the outbox is delivered and every page applied, backing off with jitter after
 * a failed exchange. Nothing is discarded when it gives up (after `maxFailures` in a row): the
 * outbox keeps every op for the next call. Returns {exchanges, failures, opsAcked, lastError}.
 */
export async function syncUntilDone({ engine, device, keys, server, scope, baseUrl, fetch = globalThis.fetch, nowMs = () => Date.now(), maxFailures = 5, backoff = new Backoff(), sleep = (s) => new Promise((r) => setTimeout(r, s * 1000)), link = new LinkEstimate(), planner = new BatchPlanner(), onManifest, onServerKeys, tasks = false }) {
  device ??= { deviceId: engine.deviceId, scope, keys, server };
  const report = { exchanges: 0, failures: 0, opsAcked: 0, lastError: null, done: false };
  let more = true;
  while (more || (await engine.pendingOps(1)).length) {
    report.exchanges += 1;
    try {
      const result = await syncOnce({ engine, device, baseUrl, fetch, nowMs, link, planner, onManifest, onServerKeys, tasks });
      report.opsAcked += result.fold.opsAcked;
      more = result.more;
      backoff.reset();
      if (result.backoffMs && (more || (await engine.pendingOps(1)).length)) await sleep(result.backoffMs / 1000);
    } catch (error) {
      if (!(error instanceof RetryableFailure)) throw error;
      report.failures += 1;
      report.lastError = error;
      link.failed(error.droppedAfterS ?? null);
      if (backoff.failures + 1 >= maxFailures) return report;
      await sleep(Math.max(backoff.nextDelay(), error.waitS));
    }
  }
  report.done = true;
  return report;
}

