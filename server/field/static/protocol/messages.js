// The messages of one exchange (port of sync_protocol/messages.py): plain objects in their
// dict form, validated field by field; errors are message_invalid with `where` naming the field.
import { Stamp } from "./clock.js";
import { batchFromJson, batchToJson, canonicalBytes, codePoints, compareText, opFromDict, parseJson } from "./codec.js";
import { ProtocolError } from "./errors.js";

export const ACK_STATUSES = ["applied", "merged", "duplicate", "conflict", "rejected"];
export const FRAME_STATUSES = ["committed", "truncated", "rejected", "skipped"];
export const MAX_ITEMS = 10_000;
const SCOPE_RE = /^[0-9A-Za-z_.:-]{1,64}$/;
const DEVICE_ID_RE = /^[!-~]{1,64}$/;
const CODE_RE = /^[a-z][a-z0-9_]{0,63}$/;
const UINT32 = 2 ** 32 - 1;
const UINT64 = Number.MAX_SAFE_INTEGER; // JavaScript numbers are exact only this far

const invalid = (where, message) => new ProtocolError("message_invalid", `${where}: ${message}`, { where, zh: `消息字段 ${where} 无效` });
const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

function mapping(value, where) {
  if (!isObject(value)) throw invalid(where, "must be an object");
  return value;
}
function keys(data, where, required, optional = []) {
  for (const name of required) if (!(name in data)) throw invalid(`${where}.${name}`, "missing");
  const unknown = Object.keys(data).filter((k) => !required.includes(k) && !optional.includes(k) && k !== "type").sort(compareText);
  if (unknown.length) throw invalid(`${where}.${unknown[0]}`, "unknown field");
}
function int(value, where, minimum = 0, maximum = UINT64) {
  if (typeof value !== "number" || !Number.isInteger(value)) throw invalid(where, "must be an integer");
  if (value < minimum || value > maximum) throw invalid(where, `must be between ${minimum} and ${maximum}`);
  return value;
}
function bool(value, where) {
  if (typeof value !== "boolean") throw invalid(where, "must be true or false");
  return value;
}
function text(value, where, { maxLength = 128, pattern = null } = {}) {
  if (typeof value !== "string" || !value || codePoints(value) > maxLength) {
    throw invalid(where, `must be a non-empty string of at most ${maxLength} characters`);
  }
  if (pattern && !pattern.test(value)) throw invalid(where, `must match ${pattern.source}`);
  return value;
}
function list(value, where) {
  if (!Array.isArray(value)) throw invalid(where, "must be a list");
  if (value.length > MAX_ITEMS) throw invalid(where, `more than ${MAX_ITEMS} items`);
  return value;
}
function stamp(value, where) {
  try {
    return Stamp.parse(value).toText();
  } catch (error) {
    throw invalid(where, error.message);
  }
}
function objects(value, where, key = null) {
  return list(value, where).map((item, i) => {
    const entry = { ...mapping(item, `${where}[${i}]`) };
    if (key !== null) text(entry[key], `${where}[${i}].${key}`);
    return entry;
  });
}
const byNumber = (a, b) => a - b;

export function capabilitiesFromDict(data, where = "capabilities") {
  mapping(data, where);
  keys(data, where, ["suites", "compression"], ["dictionary_ids", "lean_acks", "lean_downloads"]);
  const suites = list(data.suites, `${where}.suites`).map((s, i) => int(s, `${where}.suites[${i}]`, 1, 255));
  if (!suites.length) throw invalid(`${where}.suites`, "must name at least one suite");
  const compression = list(data.compression, `${where}.compression`).map((c, i) => int(c, `${where}.compression[${i}]`, 0, 255));
  const dictionaryIds = list(data.dictionary_ids ?? [], `${where}.dictionary_ids`).map((d, i) => int(d, `${where}.dictionary_ids[${i}]`, 1, UINT32));
  const out = { suites: [...suites].sort(byNumber), compression: [...compression].sort(byNumber), dictionary_ids: [...dictionaryIds].sort(byNumber) };
  if (bool(data.lean_acks ?? false, `${where}.lean_acks`)) out.lean_acks = true;
  if (bool(data.lean_downloads ?? false, `${where}.lean_downloads`)) out.lean_downloads = true;
  return out;
}

export function helloFromDict(data) {
  const where = "hello";
  mapping(data, where);
  keys(data, where, ["device_id", "cursors", "high_water_mark", "clock", "capabilities"]);
  const cursorsIn = mapping(data.cursors, `${where}.cursors`);
  if (Object.keys(cursorsIn).length > 64) throw invalid(`${where}.cursors`, "more than 64 scopes");
  const cursors = {};
  for (const [scope, cursor] of Object.entries(cursorsIn)) {
    text(scope, `${where}.cursors`, { pattern: SCOPE_RE });
    cursors[scope] = int(cursor, `${where}.cursors['${scope}']`);
  }
  return {
    type: "hello",
    device_id: text(data.device_id, `${where}.device_id`, { pattern: DEVICE_ID_RE }),
    cursors,
    high_water_mark: int(data.high_water_mark, `${where}.high_water_mark`),
    clock: stamp(data.clock, `${where}.clock`),
    capabilities: capabilitiesFromDict(data.capabilities, `${where}.capabilities`),
  };
}

export function batchFromDict(data) {
  const where = "batch";
  mapping(data, where);
  keys(data, where, ["batch_seq", "ops"]);
  const batchSeq = int(data.batch_seq, `${where}.batch_seq`, 1);
  let ops;
  try {
    ops = batchFromJson(data.ops).map(opFromDict);
  } catch (error) {
    if (error.code === "batch_malformed") throw invalid(`${where}.ops.${error.where}`, error.message);
    if (error instanceof ProtocolError) throw invalid(`${where}.ops`, error.message);
    throw error;
  }
  if (ops.length > MAX_ITEMS) throw invalid(`${where}.ops`, `more than ${MAX_ITEMS} ops`);
  return { type: "batch", batch_seq: batchSeq, ops };
}

export function opAckFromDict(data, where = "ack") {
  mapping(data, where);
  keys(data, where, ["seq", "status"], ["revision", "conflict_ids", "reasons"]);
  const status = data.status;
  if (!ACK_STATUSES.includes(status)) throw invalid(`${where}.status`, `must be one of ${ACK_STATUSES.join(", ")}`);
  const conflictIds = list(data.conflict_ids ?? [], `${where}.conflict_ids`).map((c, i) => text(c, `${where}.conflict_ids[${i}]`));
  const reasons = objects(data.reasons ?? [], `${where}.reasons`, "code");
  if ((status === "conflict") !== conflictIds.length > 0) throw invalid(`${where}.conflict_ids`, "given exactly when the status is conflict");
  if ((status === "rejected") !== reasons.length > 0) throw invalid(`${where}.reasons`, "given exactly when the status is rejected");
  const out = { seq: int(data.seq, `${where}.seq`, 1), status, revision: int(data.revision ?? 0, `${where}.revision`) };
  if (conflictIds.length) out.conflict_ids = conflictIds;
  if (reasons.length) out.reasons = reasons;
  return out;
}

export function ackFromDict(data, where = "ack") {
  mapping(data, where);
  keys(data, where, ["batch_seq", "acks", "high_water_mark"], ["records", "lean_seqs"]);
  const acks = list(data.acks, `${where}.acks`).map((a, i) => opAckFromDict(a, `${where}.acks[${i}]`));
  const records = objects(data.records ?? [], `${where}.records`, "record_id");
  const leanSeqs = list(data.lean_seqs ?? [], `${where}.lean_seqs`).map((s, i) => int(s, `${where}.lean_seqs[${i}]`, 1));
  const statuses = new Map(acks.map((a) => [a.seq, a.status]));
  leanSeqs.forEach((s, i) => {
    if (statuses.get(s) !== "applied") throw invalid(`${where}.lean_seqs[${i}]`, "must name an applied op of the batch");
  });
  const out = {
    batch_seq: int(data.batch_seq, `${where}.batch_seq`, 1),
    acks,
    high_water_mark: int(data.high_water_mark, `${where}.high_water_mark`),
    records,
  };
  if (leanSeqs.length) out.lean_seqs = leanSeqs;
  return out;
}

export function downloadPageFromDict(data, where = "download") {
  mapping(data, where);
  keys(data, where, ["scope", "after", "next_cursor", "more"], ["records", "forms", "config", "tasks"]);
  const after = int(data.after, `${where}.after`);
  const nextCursor = int(data.next_cursor, `${where}.next_cursor`);
  if (nextCursor < after) throw invalid(`${where}.next_cursor`, "must not be before the cursor asked");
  const records = objects(data.records ?? [], `${where}.records`, "record_id");
  const forms = objects(data.forms ?? [], `${where}.forms`, "form_id");
  const config = objects(data.config ?? [], `${where}.config`, "key");
  const tasks = objects(data.tasks ?? [], `${where}.tasks`, "task_id");
  const page = {
    scope: text(data.scope, `${where}.scope`, { pattern: SCOPE_RE }),
    after,
    next_cursor: nextCursor,
    more: bool(data.more, `${where}.more`),
    records,
    forms,
    config,
  };
  // Written only when there are some, as the Python encoder does (docs/protocol.md §4).
  if (tasks.length) page.tasks = tasks;
  return page;
}

export function frameStatusFromDict(data, where = "frame") {
  mapping(data, where);
  keys(data, where, ["index", "status"], ["code"]);
  if (!FRAME_STATUSES.includes(data.status)) throw invalid(`${where}.status`, `must be one of ${FRAME_STATUSES.join(", ")}`);
  const code = data.code ?? null;
  if (code !== null) text(code, `${where}.code`, { pattern: CODE_RE });
  if (data.status === "rejected" && code === null) throw invalid(`${where}.code`, "a rejected frame names its error code");
  const out = { index: int(data.index, `${where}.index`), status: data.status };
  if (code !== null) out.code = code;
  return out;
}

export function refusalFromDict(data, where = "refusal") {
  mapping(data, where);
  keys(data, where, ["code", "message", "message_zh"]);
  return {
    code: text(data.code, `${where}.code`, { pattern: CODE_RE }),
    message: text(data.message, `${where}.message`, { maxLength: 2000 }),
    message_zh: text(data.message_zh, `${where}.message_zh`, { maxLength: 2000 }),
  };
}

export function replyFromDict(data) {
  const where = "reply";
  mapping(data, where);
  keys(data, where, ["server_time_ms"], ["backoff_ms", "frames", "acks", "downloads", "refusal"]);
  const refusal = data.refusal != null ? refusalFromDict(data.refusal, `${where}.refusal`) : null;
  const acks = list(data.acks ?? [], `${where}.acks`).map((a, i) => ackFromDict(a, `${where}.acks[${i}]`));
  const downloads = list(data.downloads ?? [], `${where}.downloads`).map((d, i) => downloadPageFromDict(d, `${where}.downloads[${i}]`));
  const frames = list(data.frames ?? [], `${where}.frames`).map((f, i) => frameStatusFromDict(f, `${where}.frames[${i}]`));
  if (refusal && (acks.length || downloads.length)) throw invalid(`${where}.refusal`, "a refusal carries no acks and no downloads");
  const out = {
    type: "reply",
    server_time_ms: int(data.server_time_ms, `${where}.server_time_ms`),
    acks,
    downloads,
    frames,
    backoff_ms: int(data.backoff_ms ?? 0, `${where}.backoff_ms`, 0, 86_400_000),
  };
  if (refusal) out.refusal = refusal;
  return out;
}

const DECODERS = { hello: helloFromDict, batch: batchFromDict, reply: replyFromDict };

/** The message's wire dict (what canonical JSON encodes): a batch's ops in codec form. */
export function messageToDict(message) {
  if (message.type === "batch") return { type: "batch", batch_seq: message.batch_seq, ops: batchToJson(message.ops) };
  return message;
}

/** Payload bytes of a message (canonical JSON of its dict plus "type"). */
export function encodeMessage(message) {
  try {
    return canonicalBytes(messageToDict(message));
  } catch (error) {
    if (error.code === "batch_malformed") throw invalid(message.type, error.message);
    throw error;
  }
}

/** Parse payload bytes into a validated message; `expected` restricts the type. */
export function decodeMessage(data, expected = null) {
  let value;
  try {
    value = parseJson(data, "message");
  } catch (error) {
    throw invalid("message", error.message);
  }
  const body = mapping(value, "message");
  const kind = body.type;
  if (typeof kind !== "string" || !(kind in DECODERS) || (expected !== null && kind !== expected)) {
    throw invalid("type", `must be ${expected || Object.keys(DECODERS).join(", ")}`);
  }
  return DECODERS[kind](body);
}
