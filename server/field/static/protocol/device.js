// The device engine: every sync rule a field device applies, with no I/O of its own (a port of
// sync_protocol/device.py; the rules, state machine and units of work are documented there).
// Every storage call is async (IndexedDB in the app, memory in tests): the storage interface
// is docs/field-app-protocol.md §storage. Times come in as `nowMs` arguments.
import { HybridClock, Stamp } from "./clock.js";
import { compareText, isTombstone, opFromDict, tombstone } from "./codec.js";
import { ProtocolError } from "./errors.js";
import { RecordState, deviceView } from "./merge.js";

export const OP_STATES = ["pending", "sent", "rejected", "corrected"];
export const ACK_STATUSES = ["applied", "merged", "duplicate", "conflict", "rejected"];
export const MANIFEST_SCOPE = "manifest";
export const TASKS_SCOPE = "tasks";
export const ENVELOPE_SCOPE = "exchange";
export const ENVELOPE_STREAM = "envelope";
export const RECORDS_STREAM = "records";
export const FORMS_STREAM = "forms";
export const TASKS_STREAM = "tasks";
export const SEQUENCE_JUMP = 1 << 20;
const OUTSTANDING = ["pending", "sent"];
const UNAPPLIED = ["pending", "sent", "rejected"];

export class DeviceEngineError extends ProtocolError {}
const ackMismatch = (message, zh) => new DeviceEngineError("ack_mismatch", message, { zh });
const stateInvalid = (message) => new DeviceEngineError("state_invalid", message, { zh: "服务器返回的记录格式错误" });
const unexpectedBatch = (message, zh) => new DeviceEngineError("unexpected_batch", message, { zh });

export const newCounters = () => ({ lastSeq: 0, ackedThrough: 0, hlcLast: null, serverTimeMs: null });

/** True when `path` is `rowPath` itself or lies below it. */
export const pathUnder = (path, rowPath) => path === rowPath || path.startsWith(`${rowPath}/`);

function household(value) {
  if (value == null) return null;
  return { village_code: String(value.village_code), household_no: String(value.household_no) };
}
const isInt = (v) => typeof v === "number" && Number.isInteger(v);

export class DeviceEngine {
  /** `storage` implements DeviceStorage (async); `deviceId` is the device's HLC node id. */
  constructor(storage, deviceId) {
    this.storage = storage;
    this.deviceId = deviceId;
  }

  async clock(nowMs) {
    const last = (await this.storage.counters()).hlcLast;
    return new HybridClock(this.deviceId, () => nowMs, { last: last ? Stamp.parse(last) : null });
  }

  async observeServerTime(serverMs, { nowMs }) {
    const stamp = (await this.clock(nowMs)).observe(Math.trunc(serverMs));
    const counters = await this.storage.counters();
    await this.storage.setCounters({ ...counters, hlcLast: stamp.toText(), serverTimeMs: Math.trunc(serverMs) });
    return stamp;
  }

  async helloClock({ nowMs }) {
    return (await this.clock(nowMs)).now().toText();
  }

  // --- the outbox -----------------------------------------------------------------------------

  /** Append one op: `build(seq, stamp)` returns the op's dict; it enters the outbox pending. */
  async queueOp(build, { nowMs, corrects = [] }) {
    const counters = await this.storage.counters();
    const seq = counters.lastSeq + 1;
    const stamp = (await this.clock(nowMs)).now();
    const op = opFromDict(await build(seq, stamp));
    await this.storage.putOutboxItem({ seq, op, state: "pending", attempts: 0, reasons: null, correctedBy: null, createdAtMs: nowMs, sentAtMs: null });
    await this.storage.setCounters({ ...counters, lastSeq: seq, hlcLast: stamp.toText() });
    for (const old of corrects) {
      const item = await this.storage.outboxItem(old);
      if (item && item.state === "rejected") await this.storage.putOutboxItem({ ...item, state: "corrected", correctedBy: seq });
    }
    return op;
  }

  /** Ops still to deliver (pending, and sent without an ack), lowest seq first. */
  async pendingOps(limit = null) {
    return (await this.storage.outboxItems(OUTSTANDING, { limit })).map((item) => item.op);
  }

  async markSent(seqs, { nowMs }) {
    for (const seq of seqs) {
      const item = await this.storage.outboxItem(seq);
      if (item && OUTSTANDING.includes(item.state)) {
        await this.storage.putOutboxItem({ ...item, state: "sent", attempts: item.attempts + 1, sentAtMs: nowMs });
      }
    }
  }

  /** Fold the acks of one committed batch into the outbox, all or nothing (contracts §7). */
  async foldAcks(seqs, acks, { nowMs, settle = true }) {
    const wanted = [...seqs];
    const bySeq = new Map();
    for (const ack of acks) {
      const seq = ack && typeof ack === "object" ? ack.seq : undefined;
      const status = ack && typeof ack === "object" ? ack.status : undefined;
      if (!isInt(seq) || !ACK_STATUSES.includes(status)) throw ackMismatch(`malformed ack ${JSON.stringify(ack)}`, "服务器确认格式错误");
      if (bySeq.has(seq) || !wanted.includes(seq)) throw ackMismatch(`ack for seq ${seq} was not expected`, `收到意外的确认：${seq}`);
      bySeq.set(seq, ack);
    }
    const missing = wanted.filter((s) => !bySeq.has(s));
    if (missing.length) throw ackMismatch(`no ack for seq [${missing.join(", ")}]`, `缺少对操作 [${missing.join(", ")}] 的确认`);
    const removed = [];
    const rejected = [];
    const conflicts = [];
    for (const seq of wanted) {
      const ack = bySeq.get(seq);
      const item = await this.storage.outboxItem(seq);
      if (!item || !OUTSTANDING.includes(item.state)) continue; // a replayed ack
      if (ack.status === "rejected") {
        await this.storage.putOutboxItem({ ...item, state: "rejected", reasons: (ack.reasons || []).map((r) => ({ ...r })) });
        rejected.push(seq);
        continue;
      }
      await this.foldOwnStamps(item.op);
      for (const raw of ack.conflict_ids || []) {
        const conflictId = String(raw);
        if (!(await this.storage.conflict(conflictId))) {
          await this.storage.putConflict({
            conflictId, recordId: item.op.record_id, seq, detail: { paths: Object.keys(item.op.changes).sort(compareText) },
            status: "open", listed: false, receivedAtMs: nowMs,
          });
        }
        conflicts.push(conflictId);
      }
      await this.storage.removeOutboxItem(seq);
      removed.push(seq);
    }
    const ackedThrough = await this.updateAckedThrough();
    if (settle) await this.settleDuplicates();
    return { removed, rejected, conflicts, ackedThrough };
  }

  async markRejected(seq, reasons) {
    const item = await this.storage.outboxItem(seq);
    if (!item || !OUTSTANDING.includes(item.state)) throw ackMismatch(`no outstanding op ${seq} to reject`, `没有待确认的操作 ${seq}`);
    await this.storage.putOutboxItem({ ...item, state: "rejected", reasons: reasons.map((r) => ({ ...r })) });
    await this.updateAckedThrough();
  }

  async foldOwnStamps(op) {
    const head = await this.storage.recordHead(op.record_id);
    if (!head) return;
    const stamps = { ...head.stamps };
    for (const path of Object.keys(op.changes)) {
      // Stamp texts order like the stamps they name (fixed-width fields).
      if ((stamps[path] ?? "") < op.hlc) stamps[path] = op.hlc;
    }
    await this.storage.writeRecord({ ...head, stamps }, null);
  }

  /**
   * Record id → revision of the ops an ack names in lean_seqs (lean_downloads) that are still
   * outstanding here; read before foldAcks removes them from the outbox.
   */
  async leanRevisions(ack) {
    const revisions = new Map(ack.acks.map((a) => [a.seq, a.revision]));
    const own = new Map();
    for (const seq of ack.lean_seqs ?? []) {
      const item = await this.storage.outboxItem(seq);
      if (!item || !OUTSTANDING.includes(item.state) || !revisions.has(seq)) continue; // a replayed ack
      const recordId = item.op.record_id;
      own.set(recordId, Math.max(own.get(recordId) ?? 0, revisions.get(seq)));
    }
    return own;
  }

  /** A lean op: the server's state is this device's own view (stamps just folded); only the revision is new. */
  async takeOwnRevision(recordId, revision) {
    const head = await this.storage.recordHead(recordId);
    if (head && head.serverRevision < revision) await this.storage.writeRecord({ ...head, serverRevision: revision }, null);
  }

  async updateAckedThrough() {
    const counters = await this.storage.counters();
    const oldest = await this.storage.outboxItems(OUTSTANDING, { limit: 1 });
    const through = oldest.length ? oldest[0].seq - 1 : counters.lastSeq;
    await this.storage.setCounters({ ...counters, ackedThrough: through });
    return through;
  }

  // --- what the next edit is based on ---------------------------------------------------------

  async seenStamps(recordId) {
    const head = await this.storage.recordHead(recordId);
    const seen = head ? { ...head.stamps } : {};
    for (const item of await this.storage.outboxItems(OUTSTANDING, { recordId })) {
      for (const path of Object.keys(item.op.changes)) seen[path] = item.op.hlc;
    }
    return seen;
  }

  /** The base of a put: per changed path the stamp seen there (null: never seen). */
  async putBase(recordId, changes, oldPaths) {
    const seen = await this.seenStamps(recordId);
    const candidates = [...new Set([...oldPaths, ...Object.keys(seen)])];
    const base = {};
    for (const [path, value] of Object.entries(changes)) {
      base[path] = seen[path] ?? null;
      if (isTombstone(value)) {
        for (const other of candidates) if (other !== path && pathUnder(other, path)) base[other] = seen[other] ?? null;
      }
    }
    return base;
  }

  /** The base of a record delete: every local path and every stamped path. */
  async deleteBase(recordId, paths) {
    const seen = await this.seenStamps(recordId);
    const base = Object.fromEntries(paths.map((p) => [p, seen[p] ?? null]));
    return Object.assign(base, seen);
  }

  /** Add the paths of the record's rejected ops to an edit's changes; returns {changes, corrects}. */
  async resendRejected(recordId, changes, newValues, deletedRows = []) {
    const out = { ...changes };
    const rejected = await this.storage.outboxItems(["rejected"], { recordId });
    for (const item of rejected) {
      for (const [path, value] of Object.entries(item.op.changes)) {
        if (path in out) continue;
        if (isTombstone(value)) {
          if (!Object.keys(newValues).some((p) => pathUnder(p, path))) out[path] = tombstone();
        } else if (!deletedRows.some((row) => pathUnder(path, row))) {
          out[path] = path in newValues ? newValues[path] : null;
        }
      }
    }
    return { changes: out, corrects: rejected.map((item) => item.seq) };
  }

  // --- applying server record states ----------------------------------------------------------

  /** Replace a record with the server's merged state, keeping outstanding local edits. */
  async applyServerState(stateIn, { nowMs, settle = true }) {
    let described = new Map();
    let head;
    let values;
    let openIds;
    let closedIds;
    try {
      let state = stateIn;
      closedIds = (state.closed_conflicts || []).map(String);
      if ("paths" in state && "format" in state) {
        const full = RecordState.fromDict(state);
        described = new Map(full.conflicts.map((c) => [c.conflict_id, this.describe(c)]));
        state = deviceView(full);
      }
      for (const key of ["record_id", "form_id", "form_version", "revision", "values"]) {
        if (!(key in state)) throw new Error(`missing ${key}`);
      }
      if (!isInt(state.form_version) && Number.isNaN(Number.parseInt(state.form_version, 10))) throw new Error("form_version");
      if (state.values === null || typeof state.values !== "object") throw new Error("values");
      head = {
        recordId: String(state.record_id), formId: String(state.form_id), formVersion: Number.parseInt(state.form_version, 10),
        household: household(state.household), round: state.round == null ? null : String(state.round),
        stamps: Object.fromEntries(Object.entries(state.stamps || {}).map(([k, v]) => [String(k), String(v)])),
        serverRevision: Number.parseInt(state.revision, 10), deleted: Boolean(state.deleted ?? false),
      };
      if (Number.isNaN(head.serverRevision)) throw new Error("revision");
      values = { ...state.values };
      openIds = (state.conflicts || []).map(String);
    } catch (error) {
      throw stateInvalid(`server record state is malformed: ${error.message}`);
    }
    for (const conflictId of closedIds) {
      const note = await this.storage.conflict(conflictId);
      if (note && note.status === "open") await this.storage.putConflict({ ...note, status: "resolved" });
    }
    const held = await this.storage.recordHead(head.recordId);
    if (held && held.serverRevision > head.serverRevision) return false;
    const view = { ...values };
    for (const item of await this.storage.outboxItems(UNAPPLIED, { recordId: head.recordId })) Object.assign(view, item.op.changes);
    if (held && head.round === null) head.round = held.round;
    if (held && head.household === null) head.household = held.household;
    await this.storage.writeRecord(head, view);
    await this.syncListed(head.recordId, openIds, nowMs);
    for (const [conflictId, description] of described) {
      const note = await this.storage.conflict(conflictId);
      if (note) await this.storage.putConflict({ ...note, detail: { ...note.detail, ...description } });
    }
    if (settle) await this.settleDuplicates();
    return true;
  }

  describe(conflict) {
    let { mine, theirs } = conflict;
    const candidates = conflict.candidates || [];
    const own = candidates.filter((c) => c.device === this.deviceId);
    const other = candidates.filter((c) => c.device !== this.deviceId);
    if (own.length && other.length) [mine, theirs] = [own[own.length - 1].value, other[other.length - 1].value];
    return { kind: conflict.kind ?? null, path: conflict.path ?? null, mine: mine ?? null, theirs: theirs ?? null };
  }

  async syncListed(recordId, openIds, nowMs) {
    for (const conflictId of openIds) {
      const note = (await this.storage.conflict(conflictId)) ||
        { conflictId, recordId, seq: null, detail: {}, status: "open", listed: true, receivedAtMs: nowMs };
      await this.storage.putConflict({ ...note, status: "open", listed: true });
    }
    for (const note of await this.storage.conflictNotes({ recordId, status: "open", listed: true })) {
      if (!openIds.includes(note.conflictId)) await this.storage.putConflict({ ...note, status: "resolved" });
    }
  }

  /** Close the open duplicate (unlisted) conflicts the server's records show settled. */
  async settleDuplicates() {
    const closed = [];
    for (let note of await this.storage.conflictNotes({ status: "open", listed: false })) {
      const own = await this.storage.recordHead(note.recordId);
      if (!own) continue;
      let twinId = note.detail.twin ?? null;
      if (twinId === null && !own.deleted) {
        const twins = await this.storage.liveTwins(own.recordId, own.formId, own.household, own.round);
        if (twins.length) {
          twinId = twins[0];
          note = { ...note, detail: { ...note.detail, twin: twinId } };
          await this.storage.putConflict(note);
        }
      }
      const twin = twinId === null ? null : await this.storage.recordHead(String(twinId));
      if (own.deleted || (twin && twin.deleted)) {
        await this.storage.putConflict({ ...note, status: "resolved" });
        closed.push(note.conflictId);
      }
    }
    return closed;
  }

  // --- a whole reply --------------------------------------------------------------------------

  /**
   * Apply one verified reply (messages.replyFromDict shape): acks, record states, download
   * pages with their cursors. `sentBatches` maps batch_seq → the op seqs it carried.
   */
  async foldReply(reply, sentBatches, { nowMs }) {
    const sent = sentBatches instanceof Map ? sentBatches : new Map(Object.entries(sentBatches).map(([k, v]) => [Number(k), v]));
    const fold = { opsAcked: 0, opsRejected: [], conflicts: [], statusCounts: {}, recordsApplied: 0, more: false, manifestPages: [], tasksApplied: 0 };
    for (const ack of reply.acks) {
      if (!sent.has(ack.batch_seq)) {
        throw unexpectedBatch(`the server acknowledged batch ${ack.batch_seq}, which this request did not carry`, `服务器确认了本次未发送的批次 ${ack.batch_seq}`);
      }
    }
    const newest = new Map();
    for (const state of [...reply.acks.flatMap((a) => a.records), ...reply.downloads.flatMap((p) => p.records)]) {
      const recordId = String(state.record_id);
      if (isInt(state.revision) && state.revision >= (newest.get(recordId) ?? -1)) newest.set(recordId, state.revision);
    }
    const applied = new Set();
    const apply = async (state) => {
      const recordId = String(state.record_id);
      const key = `${recordId}\u0000${state.revision}`;
      if (applied.has(key) || (isInt(state.revision) && state.revision < (newest.get(recordId) ?? -1))) return;
      if (await this.applyServerState(state, { nowMs, settle: false })) fold.recordsApplied += 1;
      applied.add(key);
    };
    for (const ack of reply.acks) {
      const own = await this.leanRevisions(ack);
      const summary = await this.foldAcks(sent.get(ack.batch_seq), ack.acks, { nowMs, settle: false });
      for (const [recordId, revision] of own) await this.takeOwnRevision(recordId, revision);
      fold.opsAcked += summary.removed.length;
      fold.opsRejected.push(...summary.rejected);
      for (const c of summary.conflicts) if (!fold.conflicts.includes(c)) fold.conflicts.push(c);
      for (const opAck of ack.acks) fold.statusCounts[opAck.status] = (fold.statusCounts[opAck.status] || 0) + 1;
      for (const state of ack.records) await apply(state);
    }
    for (const page of reply.downloads) {
      fold.more = fold.more || page.more;
      if (page.scope === MANIFEST_SCOPE) {
        fold.manifestPages.push(page);
        continue;
      }
      // The verification-task stream (protocol.md §5): tasks and their own cursor.
      if (page.scope === TASKS_SCOPE) {
        for (const entry of page.tasks ?? []) if (await this.applyTask(entry)) fold.tasksApplied += 1;
        await this.advanceCursor(TASKS_SCOPE, TASKS_STREAM, page.next_cursor);
        continue;
      }
      for (const state of page.records) await apply(state);
      await this.advanceCursor(page.scope, RECORDS_STREAM, page.next_cursor);
    }
    // Once per reply, not after every state (device.py fold_reply: it was quadratic).
    await this.settleDuplicates();
    return fold;
  }

  // --- verification tasks ---------------------------------------------------------------------

  /** Store a task of the tasks stream unless a newer revision of it is held; true when stored. */
  async applyTask(entry) {
    if (typeof entry.task_id !== "string" || !entry.task_id || !isInt(entry.revision)) {
      throw new DeviceEngineError("state_invalid", "a task entry needs a task_id and an integer revision", { zh: "服务器返回的核查任务格式错误" });
    }
    const held = await this.storage.task(entry.task_id);
    if (held !== null && Number(held.revision ?? 0) > entry.revision) return false;
    await this.storage.putTask({ ...entry });
    return true;
  }

  // --- cursors --------------------------------------------------------------------------------

  async advanceCursor(scope, stream, cursor) {
    await this.storage.setCursor(scope, stream, String(Math.trunc(cursor)));
  }

  /** The cursors of the next hello: own scope and manifest always, then every stored one;
   * with `tasks`, the tasks stream too (without it, the hello of a device before the stream). */
  async helloCursors(ownScope, { tasks = false } = {}) {
    const cursors = { [ownScope]: 0, [MANIFEST_SCOPE]: 0 };
    if (tasks) {
      const stored = (await this.storage.cursors())[TASKS_SCOPE]?.[TASKS_STREAM] ?? "0";
      cursors[TASKS_SCOPE] = /^[0-9]+$/.test(stored) ? Number(stored) : 0;
    }
    for (const [scope, streams] of Object.entries(await this.storage.cursors())) {
      if (scope === ENVELOPE_SCOPE) continue;
      for (const [stream, value] of Object.entries(streams)) {
        if ((stream === RECORDS_STREAM || stream === FORMS_STREAM) && /^[0-9]+$/.test(value)) cursors[scope] = Number(value);
      }
    }
    return cursors;
  }

  async nextEnvelopeSequence() {
    const stored = (await this.storage.cursors())[ENVELOPE_SCOPE]?.[ENVELOPE_STREAM];
    return stored && /^[0-9]+$/.test(stored) ? Number(stored) : 1;
  }

  /** Store the first unused envelope sequence; call before the request leaves. */
  async reserveEnvelopeSequences(nextSequence) {
    await this.storage.setCursor(ENVELOPE_SCOPE, ENVELOPE_STREAM, String(Math.trunc(nextSequence)));
  }

  async skipEnvelopeSequences() {
    const jumped = (await this.nextEnvelopeSequence()) + SEQUENCE_JUMP;
    await this.reserveEnvelopeSequences(jumped);
    return jumped;
  }
}

// --- pacing (sync_protocol/pacing.py) -----------------------------------------------------------

export const DEFAULT_BATCH_WIRE_BYTES = 32 * 1024;
export const MAX_BATCHES_PER_REQUEST = 8;
export const MIN_REQUEST_BYTES = 2048;
export const PRIOR_DROP_EVERY_S = 20;
export const DROP_INTERVAL_SHARE = 1 / 3;
export const MIN_TARGET_S = 1;

/** Exponential backoff with equal jitter: attempt n waits between half and all of base·2ⁿ⁻¹ s. */
export class Backoff {
  constructor({ baseS = 1, capS = 300, random = Math.random } = {}) {
    Object.assign(this, { baseS, capS, random, failures: 0 });
  }

  nextDelay() {
    this.failures += 1;
    const step = Math.min(this.capS, this.baseS * 2 ** (this.failures - 1));
    return step / 2 + this.random() * (step / 2);
  }

  reset() {
    this.failures = 0;
  }
}

/** The request budget: measured link speed × a target exchange time (pacing.LinkEstimate). */
export class LinkEstimate {
  constructor({ targetS = 8, initialBytes = DEFAULT_BATCH_WIRE_BYTES, maxBytes = MAX_BATCHES_PER_REQUEST * DEFAULT_BATCH_WIRE_BYTES, minBytes = MIN_REQUEST_BYTES } = {}) {
    Object.assign(this, { targetS, maxBytes, minBytes, bytesPerS: null, replyRatio: 1, budget: initialBytes, linkS: 0, drops: 0 });
  }

  // On a link that drops every few seconds an exchange aims at a third of that interval.
  // Prior: two drops seen, one per PRIOR_DROP_EVERY_S (pacing.LinkEstimate.drop_every_s).
  get dropEveryS() {
    return this.drops ? (this.linkS + 2 * PRIOR_DROP_EVERY_S) / (this.drops + 2) : null;
  }

  get exchangeTargetS() {
    const every = this.dropEveryS;
    return every === null ? this.targetS : Math.min(this.targetS, Math.max(MIN_TARGET_S, every * DROP_INTERVAL_SHARE));
  }

  // serverS: the server's own time (its Server-Timing header), not link time: a busy server
  // must not look like a slow link and shrink the batches (pacing.LinkEstimate.observe).
  observe(sent, received, elapsedS, { uploaded = true, serverS = null } = {}) {
    const linkS = elapsedS - Math.min(Math.max(serverS ?? 0, 0), elapsedS);
    if (linkS <= 0 || sent <= 0) return;
    this.linkS += elapsedS;
    const speed = (sent + received) / linkS;
    this.bytesPerS = this.bytesPerS === null ? speed : 0.6 * this.bytesPerS + 0.4 * speed;
    if (uploaded) this.replyRatio = 0.6 * this.replyRatio + 0.4 * (received / sent);
    const budget = Math.min((this.bytesPerS * this.exchangeTargetS) / (1 + this.replyRatio), 2 * this.budget);
    this.budget = Math.trunc(Math.max(this.minBytes, Math.min(this.maxBytes, budget)));
  }

  // droppedAfterS: the link dropped this far into the exchange (null: not a link drop).
  failed(droppedAfterS = null) {
    if (droppedAfterS !== null && droppedAfterS >= 0) {
      this.linkS += droppedAfterS;
      this.drops += 1;
    }
    this.budget = Math.max(this.minBytes, Math.floor(this.budget / 2));
  }

  get requestBytes() {
    return this.budget;
  }

  get batchBytes() {
    return Math.max(this.minBytes, Math.min(DEFAULT_BATCH_WIRE_BYTES, this.budget));
  }
}
