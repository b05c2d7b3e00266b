// A JS field device for the exchange tests: keys, enrolment, memory storage, the engine, and
// helpers to edit a record and sync, kept on window.fieldDevice between page.evaluate calls.
import { generateDeviceKeys, enrol } from "/field/static/protocol/enrol.js";
import { DeviceEngine } from "/field/static/protocol/device.js";
import { MemoryStorage } from "/field/static/protocol/memory-storage.js";
import { syncOnce, syncUntilDone } from "/field/static/protocol/client.js";

export async function enrolDevice(code) {
  const keys = await generateDeviceKeys();
  const enrolled = await enrol({ baseUrl: location.origin, code, keys, label: "chromium" });
  const storage = new MemoryStorage();
  const device = { deviceId: enrolled.deviceId, scope: enrolled.scope, keys, server: enrolled.server };
  window.fieldDevice = { device, storage, engine: new DeviceEngine(storage, enrolled.deviceId) };
  return {
    deviceId: enrolled.deviceId, scope: enrolled.scope,
    privateKeysExtractable: [keys.encryption.privateKey.extractable, keys.signing.privateKey.extractable],
  };
}

/** Put `changes` (flat paths) on a record, as the app's form save does; returns the op. */
export async function edit({ recordId, formId, formVersion, household, round, changes }) {
  const { engine, storage, device } = window.fieldDevice;
  return storage.transaction(async () => {
    const held = await storage.recordHead(recordId);
    const values = await storage.values(recordId);
    const base = await engine.putBase(recordId, changes, Object.keys(values));
    const op = await engine.queueOp((seq, stamp) => ({
      device_id: device.deviceId, seq, record_id: recordId, form_id: formId, form_version: formVersion,
      household: held ? held.household : household, round: held ? held.round : round, kind: "put", changes, base,
      base_revision: held ? held.serverRevision : 0, hlc: stamp.toText(),
    }), { nowMs: Date.now() });
    const head = held || { recordId, formId, formVersion, household, round, stamps: {}, serverRevision: 0, deleted: false };
    await storage.writeRecord(head, { ...values, ...changes });
    return op;
  });
}

export async function sync(untilDone) {
  const { engine, device } = window.fieldDevice;
  const { keys, server, scope } = device;
  // Both call shapes are used: the single exchanges spell the device out, as the shared plan does.
  const options = untilDone === false
    ? { engine, keys, server, scope, baseUrl: location.origin }
    : { engine, device, baseUrl: location.origin, sleep: async () => {} };
  if (untilDone !== false) {
    const r = await syncUntilDone(options);
    return { done: r.done, exchanges: r.exchanges, failures: r.failures, opsAcked: r.opsAcked, lastError: r.lastError && r.lastError.code };
  }
  try {
    const r = await syncOnce(options);
    return { ok: true, statusCounts: r.fold.statusCounts, opsSent: r.opsSent, opsAcked: r.fold.opsAcked };
  } catch (error) {
    return { ok: false, code: error.code || String(error) };
  }
}

export async function snapshot() {
  return window.fieldDevice.storage.snapshot();
}
