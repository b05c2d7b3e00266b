// The device side of the whole-exchange scripts (sync_protocol/vectors/exchanges.json) for the
// JS client: tests/web/test_field_protocol_exchange.py reads each step and calls these, the
// JS twin of tests/server/sync_device.py. Devices live in window.scriptDevices by alias.
import { generateDeviceKeys, enrol } from "/field/static/protocol/enrol.js";
import { DeviceEngine } from "/field/static/protocol/device.js";
import { MemoryStorage } from "/field/static/protocol/memory-storage.js";
import { adoptServerKeys, announcedServerKeys, buildRequest, openReply, applyReply, postOnce, SYNC_PATH } from "/field/static/protocol/client.js";
import { b64encode } from "/field/static/protocol/envelope.js";

const devices = (window.scriptDevices ??= {});

export async function enrolAlias({ alias, code, offsetMs }) {
  const keys = await generateDeviceKeys();
  const enrolled = await enrol({ baseUrl: location.origin, code, keys });
  const storage = new MemoryStorage();
  devices[alias] = {
    device: { deviceId: enrolled.deviceId, scope: enrolled.scope, keys, server: enrolled.server },
    storage, engine: new DeviceEngine(storage, enrolled.deviceId), nowMs: () => Date.now() + offsetMs,
    records: [], last: null, lastOps: [], lastReply: null,
  };
  return { deviceId: enrolled.deviceId, scope: enrolled.scope };
}

export async function put({ alias, recordId, formId, changes, household = null }) {
  const d = devices[alias];
  await d.storage.transaction(async () => {
    const held = await d.storage.recordHead(recordId);
    const values = await d.storage.values(recordId);
    const base = await d.engine.putBase(recordId, changes, Object.keys(values));
    await d.engine.queueOp((seq, stamp) => ({
      device_id: d.device.deviceId, seq, record_id: recordId, form_id: formId, form_version: 1,
      household: held ? null : household, round: held ? null : "2026-annual", kind: "put", changes, base,
      base_revision: held ? held.serverRevision : 0, hlc: stamp.toText(),
    }), { nowMs: d.nowMs() });
    await d.storage.writeRecord(held || { recordId, formId, formVersion: 1, household, round: "2026-annual", stamps: {}, serverRevision: 0, deleted: false }, { ...values, ...changes });
  });
  if (!d.records.includes(recordId)) d.records.push(recordId);
}

export async function exchange({ alias, batchSize = 50, resendLast = false, resendOps = false, cutBytes = 0 }) {
  const d = devices[alias];
  let request;
  if (resendLast) request = d.last;
  else {
    const ops = resendOps ? d.lastOps : await d.engine.pendingOps();
    if (!resendOps) d.lastOps = ops;
    const first = await d.engine.nextEnvelopeSequence();
    const batches = [];
    for (let start = 0; start < ops.length; start += batchSize) {
      batches.push({ type: "batch", batch_seq: first + 1 + batches.length, ops: ops.slice(start, start + batchSize) });
    }
    request = await buildRequest({ engine: d.engine, device: d.device, batches, nowMs: d.nowMs });
  }
  d.last = request;
  const body = request.body.slice(0, request.body.length - cutBytes);
  const response = await postOnce(fetch, `${location.origin}${SYNC_PATH}`, body);
  const out = { status: response.status, sealed: response.contentType === "application/vnd.village-sync.exchange" };
  if (!out.sealed) {
    out.error = JSON.parse(new TextDecoder().decode(response.body)).error.code;
    return out;
  }
  const reply = await openReply({ engine: d.engine, device: d.device, response, helloSequence: request.helloSequence });
  d.lastReply = reply;
  out.frames = reply.frames.map((f) => f.status + (f.code ? `:${f.code}` : ""));
  out.acks = reply.acks.map((a) => a.acks.map((x) => x.status));
  out.conflictIds = reply.acks.flatMap((a) => a.acks.flatMap((x) => x.conflict_ids || []));
  out.refusal = reply.refusal ? reply.refusal.code : null;
  if (!reply.refusal) {
    const announced = announcedServerKeys(reply);
    out.keyChange = Boolean(announced) && announced.encryption_public !== b64encode(d.device.server.encryptionPublic);
    await applyReply({ engine: d.engine, reply, sent: request.sent, nowMs: d.nowMs });
  }
  out.values = {};
  for (const recordId of new Set([...d.records, ...Object.keys(d.storage.snapshot().records)])) {
    out.values[recordId] = await d.storage.values(recordId);
  }
  return out;
}

export async function adopt({ alias }) {
  const d = devices[alias];
  return adoptServerKeys(d.device, announcedServerKeys(d.lastReply));
}
