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
    const [enrol, client, device] = await Promise.all([
      import("../protocol/enrol.js").catch(absent),
      import("../protocol/client.js").catch(absent),
      import("../protocol/device.js").catch(absent),
    ]);
    protocolModules = enrol && client && device ? { enrol, client, device } : null;
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

/** Enrol with a one-time code: device keys made and kept (non-extractable) by the protocol
 * client; returns {deviceId, scope}. */
export async function enrol({ storage, baseUrl, code, label }) {
  const modules = await protocol();
  if (!modules) throw new EngineMissing("协议模块 protocol/");
  const result = await modules.enrol.enrol({ storage, baseUrl, code, label, fetch: self.fetch.bind(self) });
  await storage.putSetting("enrolment", {
    deviceId: result.deviceId ?? result.device_id,
    scope: result.scope,
  });
  return result;
}

/** One sync exchange (the protocol client's syncOnce over the sealed store). Resolves to the
 * client's summary; throws EngineMissing when the protocol client is absent. */
export async function syncOnce({ storage, baseUrl }) {
  const modules = await protocol();
  if (!modules) throw new EngineMissing("协议模块 protocol/");
  const engine = await modules.device.openEngine(storage);
  const keys = await storage.deviceKeys();
  return modules.client.syncOnce({ engine, keys, baseUrl, fetch: self.fetch.bind(self) });
}

/** Turn a finished draft into an op in the outbox (the engine stamps and numbers it). */
export async function submitRecord({ storage, draft }) {
  const modules = await protocol();
  if (!modules) throw new EngineMissing("协议模块 protocol/");
  const engine = await modules.device.openEngine(storage);
  return engine.saveRecord({
    recordId: draft.recordId,
    formId: draft.formId,
    formVersion: draft.formVersion,
    values: draft.values,
  });
}

/** The sealed envelopes a /sync request would carry now (hello first, then the upload
 * batches), as Uint8Arrays, for the "export outbox to a file" fallback. */
export async function outboxEnvelopes({ storage }) {
  const modules = await protocol();
  if (!modules) throw new EngineMissing("协议模块 protocol/");
  const engine = await modules.device.openEngine(storage);
  const keys = await storage.deviceKeys();
  return modules.client.exportEnvelopes({ engine, keys });
}

/** Upload the photos not yet uploaded, signed with the device's Ed25519 key (the protocol
 * client keeps the key pairs through storage.putDeviceKeys; the signing key is read from
 * `signing.privateKey`, the WebCrypto CryptoKeyPair shape). */
export async function uploadPhotos({ storage }) {
  const keys = await storage.deviceKeys();
  const enrolment = await storage.setting("enrolment");
  const signingKey = keys && (keys.signing ? keys.signing.privateKey : keys.signingKey);
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
