// DeviceStorage in memory (port of sync_protocol/device_memory.py): the engine's tests and the
// device-engine vectors run on it. Every method is async, like the IndexedDB storage's.
import { compareText, isTombstone } from "./codec.js";
import { newCounters } from "./device.js";

const clone = (v) => structuredClone(v);
const byText = (a, b) => compareText(a, b);

export class MemoryStorage {
  constructor() {
    this.data = { counters: newCounters(), outbox: new Map(), heads: new Map(), values: new Map(), conflicts: new Map(), cursors: {}, tasks: new Map() };
  }

  /** One unit of work: on a throw everything is put back as it was. */
  async transaction(work) {
    const saved = clone(this.data);
    try {
      return await work(this);
    } catch (error) {
      this.data = saved;
      throw error;
    }
  }

  async counters() { return clone(this.data.counters); }
  async setCounters(counters) { this.data.counters = clone(counters); }
  async outboxItem(seq) { return clone(this.data.outbox.get(seq) ?? null); }

  async outboxItems(states, { recordId = null, limit = null } = {}) {
    const found = [...this.data.outbox.values()]
      .sort((a, b) => a.seq - b.seq)
      .filter((item) => states.includes(item.state) && (recordId === null || item.op.record_id === recordId));
    return clone(limit === null ? found : found.slice(0, limit));
  }

  async putOutboxItem(item) { this.data.outbox.set(item.seq, clone(item)); }
  async removeOutboxItem(seq) { this.data.outbox.delete(seq); }
  async recordHead(recordId) { return clone(this.data.heads.get(recordId) ?? null); }

  async writeRecord(head, values) {
    this.data.heads.set(head.recordId, clone(head));
    if (values !== null || !this.data.values.has(head.recordId)) this.data.values.set(head.recordId, clone(values || {}));
  }

  async liveTwins(recordId, formId, household, round) {
    const key = (h) => (h ? `${h.village_code}\u0000${h.household_no}` : null);
    return [...this.data.heads.values()]
      .filter((h) => h.recordId !== recordId && h.formId === formId && key(h.household) === key(household) && h.round === round && !h.deleted)
      .map((h) => h.recordId);
  }

  async conflict(conflictId) { return clone(this.data.conflicts.get(conflictId) ?? null); }

  async conflictNotes({ recordId = null, status = null, listed = null } = {}) {
    return clone([...this.data.conflicts.values()].filter((n) =>
      (recordId === null || n.recordId === recordId) && (status === null || n.status === status) && (listed === null || n.listed === listed)));
  }

  async putConflict(note) { this.data.conflicts.set(note.conflictId, clone(note)); }
  async cursors() { return clone(this.data.cursors); }

  async setCursor(scope, stream, cursor) {
    (this.data.cursors[scope] ??= {})[stream] = cursor;
  }

  async task(taskId) { return clone(this.data.tasks.get(taskId) ?? null); }
  async putTask(entry) { this.data.tasks.set(String(entry.task_id), clone(entry)); }

  /** The record's local view as flat paths (what the engine last wrote). */
  async values(recordId) { return clone(this.data.values.get(recordId) ?? {}); }

  /** Everything held, in the shape of MemoryStorage.snapshot() (the device vectors' `state`). */
  snapshot() {
    const d = this.data;
    const sortedObject = (o) => Object.fromEntries(Object.keys(o).sort(byText).map((k) => [k, o[k]]));
    return clone({
      counters: { last_seq: d.counters.lastSeq, acked_through: d.counters.ackedThrough, hlc_last: d.counters.hlcLast, server_time_ms: d.counters.serverTimeMs },
      outbox: [...d.outbox.values()].sort((a, b) => a.seq - b.seq).map((item) => ({
        seq: item.seq, record_id: item.op.record_id, kind: item.op.kind, hlc: item.op.hlc, state: item.state,
        attempts: item.attempts, reasons: item.reasons, corrected_by: item.correctedBy,
      })),
      records: Object.fromEntries([...d.heads.keys()].sort(byText).map((id) => {
        const h = d.heads.get(id);
        const values = d.values.get(id) || {};
        return [id, {
          form_id: h.formId, form_version: h.formVersion, household: h.household, round: h.round,
          server_revision: h.serverRevision, deleted: h.deleted, stamps: sortedObject(h.stamps),
          values: Object.fromEntries(Object.keys(values).sort(byText).map((p) => [p, isTombstone(values[p]) ? { $tombstone: true } : values[p]])),
        }];
      })),
      conflicts: Object.fromEntries([...d.conflicts.keys()].sort(byText).map((id) => {
        const n = d.conflicts.get(id);
        return [id, { record_id: n.recordId, seq: n.seq, status: n.status, listed: n.listed, detail: n.detail, received_at_ms: n.receivedAtMs }];
      })),
      cursors: Object.fromEntries(Object.keys(d.cursors).sort(byText).map((s) => [s, sortedObject(d.cursors[s])])),
      // Only when held, as the Python snapshot writes it.
      ...(d.tasks.size ? { tasks: Object.fromEntries([...d.tasks.keys()].sort(byText).map((id) => [id, d.tasks.get(id)])) } : {}),
    });
  }
}
