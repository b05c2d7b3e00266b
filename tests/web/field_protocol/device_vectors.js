// Replays sync_protocol/vectors/device_engine.json on the JS engine over MemoryStorage
// (the JS twin of sync_protocol/device_vectors.py); returns the mismatches, step by step.
import { canonicalJson, compareText } from "/field/static/protocol/codec.js";
import { DeviceEngine } from "/field/static/protocol/device.js";
import { replyFromDict } from "/field/static/protocol/messages.js";
import { MemoryStorage } from "/field/static/protocol/memory-storage.js";

const head = (r) => ({
  recordId: r.record_id, formId: r.form_id, formVersion: r.form_version, household: r.household ?? null,
  round: r.round ?? null, stamps: r.stamps ?? {}, serverRevision: r.server_revision ?? 0, deleted: r.deleted ?? false,
});
const sorted = (o) => Object.fromEntries(Object.keys(o).sort(compareText).map((k) => [k, o[k]]));

async function run(engine, storage, step) {
  switch (step.do) {
    case "queue": {
      const op = await engine.queueOp((seq, stamp) => ({ ...step.op, seq, hlc: stamp.toText() }), { nowMs: step.now_ms, corrects: step.corrects ?? [] });
      await storage.writeRecord(head(step.record), step.record.values ?? {});
      return op;
    }
    case "mark_sent":
      await engine.markSent(step.seqs, { nowMs: step.now_ms });
      return null;
    case "fold_acks": {
      const s = await engine.foldAcks(step.seqs, step.acks, { nowMs: step.now_ms });
      return { removed: s.removed, rejected: s.rejected, conflicts: s.conflicts, acked_through: s.ackedThrough };
    }
    case "mark_rejected":
      await engine.markRejected(step.seq, step.reasons);
      return null;
    case "apply_state":
      return engine.applyServerState(step.state, { nowMs: step.now_ms });
    case "fold_reply": {
      const reply = replyFromDict(step.reply);
      const f = await engine.foldReply(reply, step.sent_batches, { nowMs: step.now_ms });
      const result = {
        ops_acked: f.opsAcked, ops_rejected: f.opsRejected, conflicts: f.conflicts, status_counts: sorted(f.statusCounts),
        records_applied: f.recordsApplied, more: f.more, manifest_pages: f.manifestPages.map((p) => ({ scope: p.scope, next_cursor: p.next_cursor })),
      };
      if (f.tasksApplied) result.tasks_applied = f.tasksApplied;
      return result;
    }
    case "observe_server_time":
      return (await engine.observeServerTime(step.server_ms, { nowMs: step.now_ms })).toText();
    case "hello":
      return {
        cursors: await engine.helloCursors(step.own_scope, { tasks: step.tasks ?? false }), clock: await engine.helloClock({ nowMs: step.now_ms }),
        high_water_mark: (await storage.counters()).ackedThrough,
      };
    case "pending_ops":
      return (await engine.pendingOps(step.limit ?? null)).map((op) => op.seq);
    case "put_base":
      return engine.putBase(step.record_id, step.changes, step.old_paths);
    case "delete_base":
      return engine.deleteBase(step.record_id, step.paths);
    case "resend_rejected": {
      const { changes, corrects } = await engine.resendRejected(step.record_id, step.changes, step.new_values, step.deleted_rows ?? []);
      return { changes: sorted(changes), corrects };
    }
    case "envelope":
      if (step.action === "reserve") await engine.reserveEnvelopeSequences(step.value);
      else if (step.action === "skip") await engine.skipEnvelopeSequences();
      return engine.nextEnvelopeSequence();
    default:
      throw new Error(`unknown step kind ${step.do}`);
  }
}

/** Every mismatch of one scenario, naming the step (index and kind) and the part that differs. */
export async function runScenario(scenario) {
  const storage = new MemoryStorage();
  const engine = new DeviceEngine(storage, scenario.device_id);
  const problems = [];
  for (const [index, step] of scenario.steps.entries()) {
    const inputs = Object.fromEntries(Object.entries(step).filter(([k]) => k !== "expect"));
    const got = {};
    try {
      got.result = await storage.transaction(() => run(engine, storage, inputs));
    } catch (error) {
      if (!error.code) throw error;
      got.error = error.code;
    }
    const state = storage.snapshot();
    const where = `${scenario.name} step ${index} (${step.do})`;
    for (const key of ["result", "error"]) {
      const a = canonicalJson(got[key] ?? null);
      const b = canonicalJson(step.expect[key] ?? null);
      if (a !== b) problems.push(`${where}: ${key} ${a.slice(0, 400)} != ${b.slice(0, 400)}`);
    }
    for (const part of new Set([...Object.keys(state), ...Object.keys(step.expect.state)])) {
      const a = canonicalJson(state[part] ?? null);
      const b = canonicalJson(step.expect.state[part] ?? null);
      if (a !== b) problems.push(`${where}: state.${part} differs: ${a.slice(0, 300)} != ${b.slice(0, 300)}`);
    }
  }
  return problems;
}
