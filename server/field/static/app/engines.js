// The one place the shell meets the two engines (wired at merge, see docs/field-app.md §engines):
//   ../forms/     the form engine and renderer (branch fieldforms): renderForm, validateRecord
//   ../protocol/  the protocol client (branch fieldproto): enrol, the device engine, syncOnce
// Each is imported lazily; while a module is absent (or fails to load offline) the shell keeps
// working: forms render through plain-form.js, and sync/enrolment report that the protocol client
// is missing instead of pretending to have synced. Nothing else in app/ imports those folders.

import { renderPlainForm } from "./plain-form.js";
import { uploadPendingPhotos } from "./uploads.js";

export class EngineMissing extends Error {
  constructor(what) {
    super(`${what} 未安装 / ${what} is not installed`);
    this.code = "engine_missing";
  }
}

// Literal import() calls (not a helper taking a path), so the field_app bench can see what
// the first form loads.
const absent = () => null;
let formsModule;
let protocolModules;

async function forms() {
  if (formsModule === undefined) formsModule = await import("../forms/render.js").catch(absent);
  return formsModule;
}

async function protocol() {
  if (protocolModules === undefined) {
    const [enrol, client, device, codec, envelope] = await Promise.all([
      import("../protocol/enrol.js").catch(absent),
      import("../protocol/client.js").catch(absent),
      import("../protocol/device.js").catch(absent),
      import("../protocol/codec.js").catch(absent),
      import("../protocol/envelope.js").catch(absent),
    ]);
    protocolModules = enrol && client && device && codec && envelope ? { enrol, client, device, codec, envelope } : null;
  }
  return protocolModules;
}

/** Draw `definition` into `root`; returns {values(), issues(), setLanguage(), focusFirstIssue()}. */
export async function renderForm(root, definition, options) {
  const module = await forms();
  if (module && typeof module.renderForm === "function") {
    return module.renderForm(root, definition, options);
  }
  return renderPlainForm(root, definition, options);
}

/** The forms a device can fill: those its syncs brought (stored sealed by the engine under the
 * setting "forms"), else the built-in instruments the county server ships with the app. */
export async function formDefinitions(storage) {
  const synced = await storage.setting("forms");
  if (Array.isArray(synced) && synced.length > 0) return synced;
  const response = await fetch("/field/instruments.json");
  if (!response.ok) throw new Error(`instruments.json: HTTP ${response.status}`);
  return (await response.json()).forms;
}

/** Enrol with a one-time code: the protocol client makes the device keys (private halves
 * non-extractable, kept as CryptoKeys) and makes the enrolment call; returns {deviceId, scope}. */
export async function enrol({ storage, baseUrl, code, label }) {
  const modules = await protocol();
  if (!modules) throw new EngineMissing("协议模块 protocol/");
  const keys = await modules.enrol.generateDeviceKeys();
  const result = await modules.enrol.enrol({ baseUrl, code, keys, label: label || "", fetch: self.fetch.bind(self) });
  // Keys first: an enrolment setting without keys would be a device that cannot sign.
  await storage.putDeviceKeys(keys);
  await storage.putSetting("enrolment", { deviceId: result.deviceId, scope: result.scope, server: serverKeysText(result.server) });
  return { deviceId: result.deviceId, scope: result.scope };
}

// The server's public keys as the setting keeps them (sealed JSON cannot hold a CryptoKey; the
// verifying key is imported again from its 32 bytes at each sync).
function serverKeysText(server) {
  const b64 = (bytes) => btoa(String.fromCharCode(...bytes));
  return {
    encryption_public: b64(server.encryptionPublic),
    signing_public: b64(server.signingPublic),
    encryption_key_id: server.encryptionKeyId,
  };
}

async function enrolledDevice(modules, storage) {
  const enrolment = await storage.setting("enrolment");
  const keys = await storage.deviceKeys();
  if (!enrolment || !keys || !enrolment.server) {
    const error = new Error("本设备尚未登记 / this device is not enrolled");
    error.code = "not_enrolled";
    throw error;
  }
  return {
    engine: new modules.device.DeviceEngine(storage, enrolment.deviceId),
    device: { deviceId: enrolment.deviceId, scope: enrolment.scope, keys, server: await modules.enrol.serverKeysFrom(enrolment.server) },
  };
}

/** Keep the definitions a manifest page brings (the newest published version of each form; a
 * retired or withdrawn form leaves the list) in the setting "forms". Runs inside the reply's
 * unit of work, so the page's cursor only advances with the definitions stored. */
async function storeManifest(storage, page) {
  if (!page.forms.length) return;
  const held = new Map(((await storage.setting("forms")) || []).map((d) => [d.id, d]));
  for (const entry of page.forms) {
    const current = held.get(entry.form_id);
    if (entry.status === "published" && entry.definition) {
      if (!current || Number(current.version) <= Number(entry.version)) held.set(entry.form_id, entry.definition);
    } else if (current && Number(current.version) === Number(entry.version)) {
      held.delete(entry.form_id);
    }
  }
  await storage.putSetting("forms", [...held.values()]);
}

/** One sync exchange (the protocol client's syncOnce over the sealed store). Resolves to the
 * client's summary; throws EngineMissing when the protocol client is absent. */
// Every sync names the app and its version (the footer's), so the county's devices page can
// tell which tablets still run an old app. Recorded by the server only once the exchange
// authenticates.
function namedFetch(url, init = {}) {
  const version = document.body?.dataset.version || "unknown";
  const headers = { ...(init.headers || {}), "Village-Sync-App": `field-app/${version}` };
  return self.fetch(url, { ...init, headers });
}

// The app keeps verification tasks, so it asks for the tasks stream; a county server from
// before the stream refuses a hello naming it (scope_denied, nothing applied), and the app then
// syncs on without it until the page is loaded again (as village-device does for one run).
let asksTasks = true;

export async function syncOnce({ storage, baseUrl }) {
  const modules = await protocol();
  if (!modules) throw new EngineMissing("协议模块 protocol/");
  const { engine, device } = await enrolledDevice(modules, storage);
  const exchange = () =>
    modules.client.syncOnce({
      engine,
      device,
      baseUrl,
      fetch: namedFetch,
      tasks: asksTasks,
      onManifest: (page) => storeManifest(storage, page),
      onServerKeys: async (server) => {
        const enrolment = await storage.setting("enrolment");
        await storage.putSetting("enrolment", { ...enrolment, server: serverKeysText(server) });
      },
    });
  let result;
  try {
    result = await exchange();
  } catch (error) {
    if (!(asksTasks && error.code === "scope_denied" && /tasks/.test(error.message))) throw error;
    asksTasks = false;
    result = await exchange();
  }
  // Uploads are signed with the server's clock (counters.serverTimeMs was just observed).
  const counters = await storage.counters();
  if (counters.serverTimeMs != null) await storage.putSetting("clockOffsetMs", counters.serverTimeMs - Date.now());
  return result;
}

/** Which household a record is about: the draft's own (the editor asks it, or it came with
 * the household picked from the list), else the answers village_code / household_no of a form
 * that asks them itself; null for a form without one. */
function householdOf(draft, flat) {
  const code = draft.household?.village_code || flat.village_code;
  const number = draft.household?.household_no || flat.household_no;
  return code && number ? { village_code: String(code), household_no: String(number) } : null;
}

/** Turn a finished draft into an op in the outbox (the engine stamps and numbers it): a put of
 * the changed paths over what the device holds of the record, in one unit of work. */
export async function submitRecord({ storage, draft }) {
  const modules = await protocol();
  const forms = await import("../forms/engine.js").catch(absent);
  if (!modules || !forms) throw new EngineMissing("协议模块 protocol/");
  const { engine, device } = await enrolledDevice(modules, storage);
  const flat = forms.flatten(draft.values || {});
  return storage.transaction(async (unit) => {
    const held = await unit.recordHead(draft.recordId);
    const before = await unit.recordValues(draft.recordId);
    const changes = {};
    for (const [path, value] of Object.entries(flat)) {
      if (value === null || value === undefined || value === "") continue;
      if (JSON.stringify(before[path]) !== JSON.stringify(value)) changes[path] = value;
    }
    for (const path of Object.keys(before)) {
      if (!(path in flat) && !modules.codec.isTombstone(before[path])) changes[path] = modules.codec.tombstone();
    }
    // A correction of a rejected op carries that op's paths again and marks it corrected.
    const resent = await engine.resendRejected(draft.recordId, changes, flat);
    Object.assign(changes, resent.changes);
    if (Object.keys(changes).length === 0) return null;
    const household = held ? held.household : householdOf(draft, flat);
    const round = held ? held.round : draft.round || `${new Date().getFullYear()}-annual`;
    const base = await engine.putBase(draft.recordId, changes, Object.keys(before));
    const op = await engine.queueOp(
      (seq, stamp) => ({
        device_id: device.deviceId, seq, record_id: draft.recordId, form_id: draft.formId,
        form_version: draft.formVersion, household, round, kind: "put", changes, base,
        base_revision: held ? held.serverRevision : 0, hlc: stamp.toText(),
      }),
      { nowMs: Date.now(), corrects: resent.corrects },
    );
    const head = held || {
      recordId: draft.recordId, formId: draft.formId, formVersion: draft.formVersion,
      household, round, stamps: {}, serverRevision: 0, deleted: false,
    };
    await unit.writeRecord(head, { ...before, ...changes });
    return op;
  });
}

/** The sealed /sync request body the device would send now (hello first, then the upload
 * batches), its envelopes as Uint8Arrays and the op seqs it carries, for the "export outbox to a file" fallback. Built as a request is:
 * the envelope sequences are reserved and the ops marked sent, so the file and a later sync
 * never share a sequence (the server would take one of them for a replay). */
export async function outboxEnvelopes({ storage }) {
  const modules = await protocol();
  if (!modules) throw new EngineMissing("协议模块 protocol/");
  const { engine, device } = await enrolledDevice(modules, storage);
  const pending = await engine.pendingOps(2000);
  const first = await engine.nextEnvelopeSequence();
  const batches = await modules.client.splitIntoBatches(pending, modules.device.DEFAULT_BATCH_WIRE_BYTES, {
    senderId: device.deviceId,
    firstBatchSeq: first + 1,
  });
  const { body } = await modules.client.buildRequest({ engine, device, batches });
  const seqs = batches.flatMap((batch) => batch.ops.map((op) => op.seq));
  return { body, seqs, envelopes: modules.envelope.decodeFrames(body).map((frame) => frame.data) };
}

/** Upload the photos not yet uploaded, signed with the device's Ed25519 key (the protocol
 * client keeps the key pairs through storage.putDeviceKeys; the signing key is read from
 * `signing.privateKey`, the WebCrypto CryptoKeyPair shape). */
export async function uploadPhotos({ storage }) {
  const keys = await storage.deviceKeys();
  const enrolment = await storage.setting("enrolment");
  const signingKey = keys && keys.signing && keys.signing.privateKey;
  if (!signingKey || !enrolment) return { uploaded: 0, failed: [] };
  // Sign with the server's clock where the protocol client recorded how far ours is off (the
  // setting "clockOffsetMs"): a tablet's own clock is often wrong by more than the upload
  // signature's allowed age.
  const offset = Number(await storage.setting("clockOffsetMs")) || 0;
  return uploadPendingPhotos({
    storage,
    deviceId: enrolment.deviceId,
    signingKey,
    now: () => Date.now() + offset,
  });
}

/** Whether the protocol client is present (the UI hides what it cannot do). */
export async function hasProtocol() {
  return (await protocol()) !== null;
}

const householdKey = (h) => `${h.village_code}/${h.household_no}`;

/** The households the device holds records of (the village's records come down with sync, in
 * the records stream of its scope), each with its records' heads, newest round last. */
export async function households({ storage }) {
  const found = new Map();
  for (const head of await storage.recordHeads()) {
    if (!head.household || head.deleted) continue;
    const key = householdKey(head.household);
    if (!found.has(key)) found.set(key, { household: head.household, records: [] });
    found.get(key).records.push(head);
  }
  for (const entry of found.values()) entry.records.sort((a, b) => String(a.round).localeCompare(String(b.round)));
  return [...found.values()].sort((a, b) => householdKey(a.household).localeCompare(householdKey(b.household)));
}

/** The household's answers to `formId` in its latest round the device holds (record data, not
 * flat), to pre-fill a new round; null when it has none. */
export async function lastAnswers({ storage, formId, household }) {
  const forms = await import("../forms/engine.js").catch(absent);
  const entry = (await households({ storage })).find((h) => householdKey(h.household) === householdKey(household));
  const heads = entry ? entry.records.filter((r) => r.formId === formId) : [];
  if (!forms || heads.length === 0) return null;
  const codec = await import("../protocol/codec.js");
  const flat = await storage.recordValues(heads[heads.length - 1].recordId);
  return forms.unflatten(flat, { isTombstone: codec.isTombstone });
}

/** A record the device holds, as a draft to correct: its id (so the correction is an edit of the
 * same record), form, household, round and the values it holds now. */
export async function reopenRecord({ storage, recordId }) {
  const forms = await import("../forms/engine.js").catch(absent);
  const codec = await import("../protocol/codec.js").catch(absent);
  const head = await storage.recordHead(recordId);
  if (!forms || !codec || !head) return null;
  const flat = await storage.recordValues(recordId);
  return {
    id: crypto.randomUUID(),
    recordId,
    formId: head.formId,
    formVersion: head.formVersion,
    household: head.household,
    round: head.round,
    values: forms.unflatten(flat, { isTombstone: codec.isTombstone }),
    photos: [],
    createdAt: Date.now(),
    updatedAt: Date.now(),
  };
}

// --- verification tasks (issue 17) --------------------------------------------------------------

/** The verification tasks the device holds (the tasks stream's entries), each with
 * `localStatus`: `open`; `submitted` (its outcome is in the outbox, not yet acknowledged);
 * `rejected` (the server refused the outcome: 更正 reopens it);
 * `worked` (the server has it, or this device's outcome record is acknowledged and the task's
 * own update is still to come); `closed`. Earliest deadline first, then by household. */
export async function tasks({ storage }) {
  const recordOf = (item) => item.op.record_id ?? item.op.recordId;
  const outstanding = new Set((await storage.outboxItems(["pending", "sent"])).map(recordOf));
  const rejected = new Set((await storage.outboxItems(["rejected"])).map(recordOf));
  const found = [];
  for (const entry of await storage.tasks()) {
    let localStatus = entry.status || "open";
    if (localStatus === "open") {
      const head = await storage.recordHead(entry.record_id);
      const values = head && !head.deleted ? await storage.recordValues(entry.record_id) : {};
      if (rejected.has(entry.record_id)) localStatus = "rejected";
      else if (outstanding.has(entry.record_id)) localStatus = "submitted";
      else if (values.outcome) localStatus = "worked";
    }
    found.push({ ...entry, localStatus });
  }
  const number = (t) => `${t.household?.village_code ?? ""}/${t.household?.household_no ?? ""}`;
  return found.sort((a, b) => String(a.deadline).localeCompare(String(b.deadline)) || number(a).localeCompare(number(b)));
}

/** A draft of the task's `verification_outcome` record: the record id and round the task
 * names (every device works the same record), its household, `task_id` set; the values the
 * device holds of that record when it was worked before. Null for an unknown task. */
export async function taskDraft({ storage, taskId, formId, formVersion }) {
  const entry = await storage.task(taskId);
  if (!entry) return null;
  const head = await storage.recordHead(entry.record_id);
  let values = {};
  if (head) {
    const forms = await import("../forms/engine.js").catch(absent);
    const codec = await import("../protocol/codec.js").catch(absent);
    if (forms && codec) values = forms.unflatten(await storage.recordValues(entry.record_id), { isTombstone: codec.isTombstone });
  }
  return {
    id: crypto.randomUUID(),
    taskId: entry.task_id,
    recordId: entry.record_id,
    formId: head ? head.formId : formId,
    formVersion: head ? head.formVersion : formVersion,
    household: head?.household ?? entry.household,
    round: head?.round ?? entry.round,
    values: { ...values, task_id: entry.task_id },
    photos: [],
    createdAt: Date.now(),
    updatedAt: Date.now(),
  };
}

/** What the device holds of a household, to show beside its task: each record's head and its
 * data (not flat; the roster's members among them). `held`: what `households()` returned, so a
 * list of tasks reads the record heads once, not once per task. */
export async function householdRecords({ storage, household, held = null }) {
  const forms = await import("../forms/engine.js").catch(absent);
  const codec = await import("../protocol/codec.js").catch(absent);
  const entry = (held || (await households({ storage }))).find((h) => householdKey(h.household) === householdKey(household));
  if (!entry || !forms || !codec) return [];
  const out = [];
  for (const head of entry.records) {
    const flat = await storage.recordValues(head.recordId);
    out.push({ head, data: forms.unflatten(flat, { isTombstone: codec.isTombstone }) });
  }
  return out;
}
