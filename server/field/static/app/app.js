// The field app's shell: service worker and updates, drafts saved sealed as the worker types,
// photos downscaled on the device, sync triggers and status, enrolment, the outbox export.
// The engines (form renderer, protocol client) are reached only through ./engines.js.

import { openSealedStore } from "./sealed-store.js";
import * as engines from "./engines.js";
import { downscalePhoto, roomForPhoto, sha256Hex } from "./photos.js";
import { outboxFile } from "./outbox-file.js";

const $ = (id) => document.getElementById(id);
const settings = JSON.parse(document.body.dataset.settings || "{}");
const SAVE_DELAY_MS = 400; // debounce: save shortly after typing pauses, not on each key
// System forms (the verification outcome) are reached through a task, never as a new record.
const SYSTEM_FORMS = new Set(settings.systemForms || []);
const PROBE_TIMEOUT_MS = 5000;
const MAX_EXCHANGES_PER_RUN = 50; // bounded: a run always ends, the next trigger goes on

const state = {
  store: null,
  definitions: [],
  draft: null,
  form: null,
  changes: 0, // changes made to the open draft
  saved: 0, // changes already sealed in IndexedDB
  saveTimer: null,
  saving: Promise.resolve(),
  syncing: null,
  failures: 0,
  retryTimer: null,
  registration: null,
};

function unsaved() {
  return state.draft !== null && state.changes !== state.saved;
}

function say(id, text) {
  $(id).textContent = text;
}

// An error as a person reads it: the protocol client's Chinese message first, then the English.
function errorText(error) {
  if (error && error.messageZh && error.messageZh !== error.message) return `${error.messageZh}（${error.message}）`;
  return error && error.message ? error.message : String(error);
}

function timeText(ms) {
  return new Date(ms).toLocaleString("zh-CN", { hour12: false });
}

function megabytes(bytes) {
  return `${(bytes / 1024 / 1024).toFixed(bytes < 10 * 1024 * 1024 ? 1 : 0)} MB`;
}

// --- service worker: install, update prompt, kill flag -------------------------------------

async function registerWorker() {
  if (!("serviceWorker" in navigator)) return;
  // updateViaCache "none": the browser asks the server for sw.js itself on every check.
  const registration = await navigator.serviceWorker.register("/field/sw.js", {
    scope: "/field/",
    updateViaCache: "none",
  });
  state.registration = registration;
  if (registration.waiting && navigator.serviceWorker.controller) offerUpdate();
  registration.addEventListener("updatefound", () => {
    const worker = registration.installing;
    if (!worker) return;
    worker.addEventListener("statechange", () => {
      // "installed" with a controller present = a new version waits beside the running one.
      if (worker.state === "installed" && navigator.serviceWorker.controller) offerUpdate();
      if (worker.state === "activated") document.body.dataset.worker = "active";
    });
  });
  if (registration.active) document.body.dataset.worker = "active";
  let reloading = false;
  navigator.serviceWorker.addEventListener("controllerchange", () => {
    // Only after the worker asked for the switch (offerUpdate → update-now), with the draft saved.
    if (reloading || document.body.dataset.updateRequested !== "yes") return;
    reloading = true;
    location.reload();
  });
}

function offerUpdate() {
  $("update").hidden = false;
  document.body.dataset.update = "offered";
}

async function applyUpdate() {
  // Never reload over unsaved input: seal what is being typed first.
  await flushDraft();
  if (unsaved()) {
    say("draft-state", "草稿未能保存，暂不更新。");
    return;
  }
  const waiting = state.registration && state.registration.waiting;
  if (!waiting) return;
  document.body.dataset.updateRequested = "yes";
  waiting.postMessage({ type: "skip-waiting" });
}

async function checkForUpdate() {
  if (!state.registration) return;
  try {
    await state.registration.update();
  } catch {
    // Offline or the server is down: the next trigger asks again.
  }
  try {
    const response = await fetch("/field/asset-manifest.json", { cache: "no-store" });
    if (response.ok && (await response.json()).kill) {
      await state.registration.unregister();
      for (const name of await caches.keys()) {
        if (name.startsWith("field-shell-")) await caches.delete(name);
      }
    }
  } catch {
    // Not reachable: nothing to learn now.
  }
}

// --- drafts --------------------------------------------------------------------------------

function definitionOf(draft) {
  return (
    state.definitions.find((d) => d.id === draft.formId && d.version === draft.formVersion) ||
    state.definitions.find((d) => d.id === draft.formId)
  );
}

function titleOf(definition) {
  const title = definition && definition.title;
  return typeof title === "string" ? title : (title && (title.zh || Object.values(title)[0])) || "";
}

function onFormChange() {
  state.changes += 1;
  say("draft-state", "正在输入…");
  clearTimeout(state.saveTimer);
  state.saveTimer = setTimeout(() => saveDraft(), SAVE_DELAY_MS);
}

function saveDraft() {
  clearTimeout(state.saveTimer);
  state.saving = state.saving.then(async () => {
    if (!state.draft || !state.form) return;
    const upTo = state.changes;
    if (upTo === state.saved) return;
    state.draft = { ...state.draft, values: state.form.values(), household: householdTyped(), round: roundTyped(), updatedAt: Date.now() };
    try {
      await state.store.putDraft(state.draft);
    } catch (error) {
      say("draft-state", `保存失败：${error}（内容仍在页面上，请勿关闭）`);
      return;
    }
    state.saved = upTo;
    say("draft-state", `已加密保存 ${timeText(state.draft.updatedAt)}`);
    document.body.dataset.draftSaved = String(state.saved);
    await firstSaveDone();
    await refreshDrafts();
  });
  return state.saving;
}

async function flushDraft() {
  await saveDraft();
}

async function firstSaveDone() {
  if (await state.store.setting("persistenceAsked")) return;
  // Asked after the first save, not at start: browsers grant it to apps the person used.
  const granted = await state.store.askPersistence();
  await state.store.putSetting("persistenceAsked", { at: Date.now(), granted });
  await refreshSpace();
}

async function startForm(definition, { household = null, values = {}, lastRound = null } = {}) {
  await flushDraft();
  // A new round of a household's form: not the round its last answers belong to.
  const proposed = defaultRound();
  const draft = {
    id: crypto.randomUUID(),
    recordId: crypto.randomUUID(),
    formId: definition.id,
    formVersion: definition.version,
    household,
    round: lastRound === proposed ? "" : proposed,
    lastRound,
    values,
    photos: [],
    createdAt: Date.now(),
    updatedAt: Date.now(),
  };
  await state.store.putDraft(draft);
  await openDraft(draft);
  await refreshDrafts();
  $("editor").scrollIntoView({ block: "start" });
}

async function openDraft(draft) {
  const definition = definitionOf(draft);
  if (!definition) {
    say("submit-message", "找不到这份草稿的表单，请先同步。");
    return;
  }
  state.draft = draft;
  state.changes = 0;
  state.saved = 0;
  // A form with a photo question takes photos in its rows; the shell's own button is only for
  // a draft that already holds photos taken with it (an app updated over an open draft). Set
  // before the editor shows, so the button never flashes up while the form renders.
  $("photo-add").hidden = hasPhotoQuestion(definition) && !(draft.photos || []).length;
  $("editor").hidden = false;
  say("editor-title", titleOf(definition));
  say("draft-state", draft.updatedAt ? `已加密保存 ${timeText(draft.updatedAt)}` : "");
  say("submit-message", "");
  await showHousehold(definition, draft);
  await showRound(draft);
  await showTask(draft);
  const task = draft.taskId ? await state.store.task(draft.taskId) : null;
  state.form = await engines.renderForm($("form-root"), draft.taskId ? taskQuestions(definition, task?.level) : definition, {
    values: draft.values || {},
    // A draft nobody has typed in yet starts from the form's defaults.
    prefill: Object.keys(draft.values || {}).length === 0,
    language: "zh",
    onChange: onFormChange,
    // A photo question takes its photo in its own row (beside the row's description).
    takePhoto: (file) => addPhoto(file, { inForm: true }),
    photoPreview: photoUrl,
  });
  await state.store.putSetting("openDraft", draft.id);
  await showPhotos();
  document.body.dataset.draft = draft.id;
}

// The outcomes that fit a village-level task (a listed person no household of the roster has);
// a household's task takes the others (forms.verification.outcomes_for, as the CLI offers them).
const VILLAGE_OUTCOMES = new Set(["not_village_resident", "add_to_roster", "data_error"]);
const HOUSEHOLD_ONLY_NOT = new Set(["not_village_resident", "add_to_roster"]);

// A task's outcome form without its task id (the app sets that from the task, nobody types it),
// offering only the outcomes that fit the task's level.
function taskQuestions(definition, level) {
  const fits = level === "village" ? (c) => VILLAGE_OUTCOMES.has(c.value) : (c) => !HOUSEHOLD_ONLY_NOT.has(c.value);
  const lists = { ...(definition.choice_lists || {}) };
  if (Array.isArray(lists.outcome)) lists.outcome = lists.outcome.filter(fits);
  return { ...definition, choice_lists: lists, fields: (definition.fields || []).filter((f) => f.name !== "task_id") };
}

function hasPhotoQuestion(definition) {
  const any = (fields) => (fields || []).some((f) => f.type === "image" || (f.type === "repeat" && any(f.fields)));
  return any(definition.fields);
}

// A household form that does not ask which household itself: the editor asks, above the
// questions (village code preset from the device's scope when that is one village).
function asksHousehold(definition) {
  const names = new Set((definition.fields || []).map((f) => f.name));
  return definition.subject === "household" && !(names.has("village_code") && names.has("household_no"));
}

async function showHousehold(definition, draft) {
  const box = $("household-box");
  // A task's household is the task's: shown in the task box, not asked.
  box.hidden = Boolean(draft.taskId) || !asksHousehold(definition);
  const enrolment = await state.store.setting("enrolment");
  const scope = enrolment && /^\d{12}$/.test(enrolment.scope) ? enrolment.scope : "";
  $("draft-village").value = draft.household?.village_code ?? scope;
  $("draft-household").value = draft.household?.household_no ?? "";
  // A record that the device already holds keeps its household (the server's, not retyped).
  const fixed = Boolean(draft.household && (await state.store.recordHead(draft.recordId)));
  $("draft-village").disabled = fixed;
  $("draft-household").disabled = fixed;
}

// --- the survey round ----------------------------------------------------------------------

// Rounds are the county's names (docs/contracts.md): letters, digits, - and _, up to 40.
const ROUND = /^[0-9A-Za-z][0-9A-Za-z_-]{0,39}$/;

function defaultRound() {
  return `${new Date().getFullYear()}-annual`;
}

// A record the device already holds keeps its round; a new one shows the proposed round, the
// rounds the device knows as suggestions, and (for a new round) which one the answers came from.
async function showRound(draft) {
  const held = await state.store.recordHead(draft.recordId);
  const input = $("draft-round");
  input.value = held ? held.round : draft.round ?? defaultRound();
  // A task's outcome record has the round the task names (one record per task).
  input.disabled = Boolean(held) || Boolean(draft.taskId);
  $("round-box").hidden = Boolean(draft.taskId);
  const known = new Set([defaultRound()]);
  for (const { records } of await heldHouseholds()) {
    for (const head of records) if (head.round) known.add(head.round);
  }
  $("round-choices").replaceChildren(
    ...[...known].sort().map((round) => Object.assign(document.createElement("option"), { value: round })),
  );
  say(
    "round-hint",
    held
      ? "已同步过的记录，轮次不变。"
      : draft.lastRound
        ? `上一轮（${draft.lastRound}）的回答已先填好，请确认这次的轮次。`
        : "",
  );
}

// The households the device holds; none before enrolment (no protocol engine yet).
async function heldHouseholds() {
  try {
    return await engines.households({ storage: state.store });
  } catch {
    return [];
  }
}

function roundTyped() {
  if (!state.draft) return null;
  return $("draft-round").disabled ? state.draft.round ?? null : $("draft-round").value.trim();
}

// The household's record of this form in `round` that the device already holds (another
// record than the draft's), or null: a second record of one round would double the household.
async function heldInRound(draft, round) {
  const household = draft.household;
  if (!household) return null;
  for (const entry of await heldHouseholds()) {
    if (entry.household.village_code !== household.village_code || entry.household.household_no !== household.household_no) continue;
    const found = entry.records.find((head) => head.formId === draft.formId && head.round === round && head.recordId !== draft.recordId);
    if (found) return found;
  }
  return null;
}

function householdTyped() {
  if (!state.draft || $("household-box").hidden) return state.draft?.household ?? null;
  const code = $("draft-village").value.trim();
  const number = $("draft-household").value.trim();
  return code || number ? { village_code: code, household_no: number } : null;
}

async function closeDraft() {
  await flushDraft();
  state.draft = null;
  state.form = null;
  $("editor").hidden = true;
  $("form-root").replaceChildren();
  await state.store.putSetting("openDraft", null);
  delete document.body.dataset.draft;
  $("task-box").hidden = true;
  $("round-box").hidden = false;
}

async function submitDraft() {
  await flushDraft();
  const issues = state.form.issues().filter((issue) => issue.severity !== "warning");
  const household = state.draft.household;
  if (!$("household-box").hidden && !(household && /^\d{12}$/.test(household.village_code) && household.household_no)) {
    say("submit-message", "请填写这一户的行政村代码（12 位）和户编号。");
    $(household && /^\d{12}$/.test(household.village_code) ? "draft-household" : "draft-village").focus();
    return;
  }
  const held = await state.store.recordHead(state.draft.recordId);
  if (!held) {
    state.draft = { ...state.draft, round: roundTyped() };
    const round = state.draft.round || "";
    if (!ROUND.test(round)) {
      say("submit-message", "请填写调查轮次：字母、数字、- 或 _，最多 40 个（如 2026-annual）。");
      $("draft-round").focus();
      return;
    }
    const twin = await heldInRound(state.draft, round);
    if (twin) {
      say("submit-message", `这一户的这张表在 ${round} 已有记录：请在“本村农户”里点“修改”，或填写另一个轮次。`);
      $("draft-round").focus();
      return;
    }
  }
  if (issues.length > 0) {
    say("submit-message", `还有 ${issues.length} 处需要填写或更正。`);
    state.form.focusFirstIssue();
    return;
  }
  try {
    const values = withPhotos(definitionOf(state.draft), state.form.values(), state.draft.photos);
    if (state.draft.taskId) values.task_id = state.draft.taskId;
    await engines.submitRecord({ storage: state.store, draft: { ...state.draft, values } });
  } catch (error) {
    say("submit-message", `未放入待同步：${errorText(error)}。草稿已加密保存，不会丢失。`);
    return;
  }
  await state.store.removeDraft(state.draft.id);
  await closeDraft();
  await refreshDrafts();
  await refreshStatus();
  say("sync-message", "已放入待同步。");
}

// The photos taken for a draft enter the record as rows of the form's photo repeat (a repeat
// with an image question), by content address: the bytes follow through the upload API.
function withPhotos(definition, values, photos) {
  const repeat = (definition?.fields || []).find(
    (f) => f.type === "repeat" && (f.fields || []).some((inner) => inner.type === "image"),
  );
  if (!repeat || !photos || photos.length === 0) return values;
  const image = repeat.fields.find((inner) => inner.type === "image").name;
  const rows = Array.isArray(values[repeat.name]) ? [...values[repeat.name]] : [];
  const held = new Set(rows.map((row) => row[image]));
  for (const sha256 of photos) {
    if (!held.has(`sha256:${sha256}`)) rows.push({ _id: crypto.randomUUID(), [image]: `sha256:${sha256}` });
  }
  return { ...values, [repeat.name]: rows };
}

async function refreshDrafts() {
  const drafts = await state.store.drafts();
  say("draft-count", drafts.length ? `（${drafts.length}）` : "");
  const list = $("draft-list");
  list.replaceChildren();
  for (const draft of drafts) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    // A task's draft says whose household it is (several tasks may be half done at once).
    const whose = draft.taskId && draft.household ? `（户 ${draft.household.household_no}）` : "";
    button.textContent = `${titleOf(definitionOf(draft)) || draft.formId}${whose} · ${timeText(draft.updatedAt)}`;
    button.addEventListener("click", async () => {
      await flushDraft();
      await openDraft(await state.store.draft(draft.id));
    });
    item.append(button);
    list.append(item);
  }
}

function showForms() {
  const list = $("form-list");
  list.replaceChildren();
  for (const definition of state.definitions) {
    if (SYSTEM_FORMS.has(definition.id)) continue;
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = titleOf(definition);
    button.dataset.form = definition.id;
    button.addEventListener("click", () => startForm(definition));
    list.append(button);
  }
}

// --- photos --------------------------------------------------------------------------------

async function refreshSpace() {
  const space = await state.store.space();
  if (!space) {
    say("space", "浏览器未提供");
    return null;
  }
  say("space", `已用 ${megabytes(space.usage)}，可用 ${megabytes(space.free)}`);
  return space;
}

// A photo taken with the shell's own button joins the draft's list (and, at the end, a new row
// of the form's photo repeat); one taken by a photo question (`inForm`) is already in its row, so
// it stays out of that list — a row removed later must not bring its photo back. Resolves to the
// photo's content address, or null when it was not kept.
async function addPhoto(file, { inForm = false } = {}) {
  if (!state.draft) return null;
  const space = await refreshSpace();
  if (!roomForPhoto(space, file.size)) {
    const message = `存储空间不足（剩余 ${megabytes(space.free)}），不能再添加照片。请先同步或导出待同步数据。`;
    say("photo-message", message);
    document.body.dataset.photoBlocked = "yes";
    if (inForm) throw new Error(message);
    return null;
  }
  delete document.body.dataset.photoBlocked;
  say("photo-message", "正在压缩照片…");
  const photo = await downscalePhoto(file, settings.photoMaxPixels || 1200000);
  const sha256 = await sha256Hex(photo.bytes);
  await state.store.putPhoto(sha256, photo.bytes, {
    draftId: state.draft.id,
    type: photo.type,
    width: photo.width,
    height: photo.height,
    uploaded: false,
    takenAt: Date.now(),
  });
  if (!inForm) {
    state.draft.photos = [...(state.draft.photos || []), sha256];
    state.changes += 1;
    await saveDraft();
  }
  say("photo-message", `照片已加密保存（${photo.width}×${photo.height}）。`);
  if (!inForm) await showPhotos();
  await refreshSpace();
  return `sha256:${sha256}`;
}

// The thumbnail of a stored photo (decrypted into an object URL), for a photo question's row.
async function photoUrl(address) {
  const bytes = await state.store.photo(address.replace(/^sha256:/, ""));
  if (!bytes) return null;
  return URL.createObjectURL(new Blob([bytes], { type: "image/jpeg" }));
}

async function showPhotos() {
  const list = $("photo-list");
  for (const img of list.querySelectorAll("img")) URL.revokeObjectURL(img.src);
  list.replaceChildren();
  for (const sha256 of state.draft?.photos || []) {
    const bytes = await state.store.photo(sha256);
    if (!bytes) continue;
    const item = document.createElement("li");
    const img = document.createElement("img");
    img.alt = "照片";
    img.src = URL.createObjectURL(new Blob([bytes], { type: "image/jpeg" }));
    item.append(img);
    list.append(item);
  }
}

// --- sync: triggers, probe, backoff, status --------------------------------------------------

async function reachable() {
  // navigator.onLine only says some network is up; ask the county server itself.
  try {
    const response = await fetch("/field/ping", {
      cache: "no-store",
      signal: AbortSignal.timeout(PROBE_TIMEOUT_MS),
    });
    return response.ok;
  } catch {
    return false;
  }
}

function retryLater() {
  // Exponential backoff with jitter, never longer than the regular timer.
  state.failures += 1;
  const base = Math.min((settings.syncIntervalSeconds || 300) * 1000, 5000 * 2 ** state.failures);
  clearTimeout(state.retryTimer);
  state.retryTimer = setTimeout(() => sync("retry"), base * (0.5 + Math.random()));
}

function sync(reason) {
  if (state.syncing) return state.syncing;
  document.body.dataset.syncing = "yes";
  state.syncing = (async () => {
    document.body.dataset.lastTrigger = reason;
    const up = await reachable();
    say("link-state", up ? "已连接" : "连不上（离线工作，数据保存在本机）");
    document.body.dataset.link = up ? "up" : "down";
    if (!up) {
      retryLater();
      return;
    }
    await checkForUpdate();
    if (!(await state.store.setting("enrolment"))) {
      say("sync-message", "本设备尚未登记，登记后才能同步。");
      return;
    }
    try {
      say("sync-message", "正在同步…");
      // A page with `more` is asked for again at once (protocol.md §5): a village's first
      // download (records, tasks) is many pages, and the next trigger may be minutes away.
      for (let exchanges = 1; ; exchanges += 1) {
        const result = await engines.syncOnce({ storage: state.store, baseUrl: location.origin });
        if (!result.more || exchanges >= MAX_EXCHANGES_PER_RUN) break;
        say("sync-message", `正在同步…（第 ${exchanges + 1} 批）`);
      }
      await state.store.putSetting("lastSync", { at: Date.now() });
      state.failures = 0;
      // The sync may have brought the county's forms (the manifest stream).
      state.definitions = await engines.formDefinitions(state.store);
      showForms();
      const photos = await engines.uploadPhotos({ storage: state.store });
      const left = photos.failed.length ? `，${photos.failed.length} 张照片下次再传` : "";
      say("sync-message", `同步完成${photos.uploaded ? `，上传照片 ${photos.uploaded} 张` : ""}${left}。`);
    } catch (error) {
      say("sync-message", `同步未完成：${errorText(error)}。稍后自动重试，数据不会丢失。`);
      if (error.code !== "engine_missing") retryLater();
    }
  })().finally(async () => {
    state.syncing = null;
    await refreshStatus();
    // How many sync runs ended (tests and the status card's observers wait on it).
    document.body.dataset.syncRuns = String(Number(document.body.dataset.syncRuns || 0) + 1);
    delete document.body.dataset.syncing;
  });
  return state.syncing;
}

async function refreshStatus() {
  const store = state.store;
  const pending = await store.outboxItems(["pending", "sent"]);
  say("pending-count", String(pending.length));
  const last = await store.setting("lastSync");
  say("last-sync", last ? timeText(last.at) : "从未");

  const rejected = await store.outboxItems(["rejected"]);
  $("rejected").hidden = rejected.length === 0;
  const rejectedList = $("rejected-list");
  rejectedList.replaceChildren();
  for (const item of rejected) {
    const li = document.createElement("li");
    // The server's own words (Chinese) where the reason carries them, else path and code.
    const reasons = (item.reasons || []).map((r) => {
      const message = r.message && (typeof r.message === "string" ? r.message : r.message.zh);
      return message ? `${r.path ? `${r.path}：` : ""}${message}` : `${r.path ?? ""} ${r.code ?? ""}`.trim();
    });
    li.textContent = `第 ${item.seq} 条：${reasons.join("；") || "被服务器退回"}`;
    const correct = document.createElement("button");
    correct.type = "button";
    correct.className = "correct";
    correct.textContent = "更正";
    correct.dataset.record = item.op.record_id;
    correct.addEventListener("click", () => correctRecord(item.op.record_id));
    li.append(correct);
    rejectedList.append(li);
  }

  const conflicts = await store.conflictNotes({ status: "open" });
  $("conflicts").hidden = conflicts.length === 0;
  const conflictList = $("conflict-list");
  conflictList.replaceChildren();
  for (const note of conflicts) {
    const detail = note.detail || {};
    const li = document.createElement("li");
    const show = (v) => (v === undefined || v === null ? "—" : typeof v === "string" ? v : JSON.stringify(v));
    li.textContent = `${await questionLabel(note.recordId, detail.path) ?? detail.kind ?? "记录"}：本机 ${show(detail.mine)}，县里 ${show(detail.theirs)}`;
    conflictList.append(li);
  }
  await refreshHouseholds();
  await refreshTasks();
  await refreshSpace();
}

// The question's label (Chinese) for a top-level path of a record, else the path itself.
async function questionLabel(recordId, path) {
  if (!path) return null;
  const head = await state.store.recordHead(recordId);
  const definition = head && state.definitions.find((d) => d.id === head.formId);
  const question = definition && (definition.fields || []).find((f) => f.name === path);
  const label = question && question.label;
  return (label && (typeof label === "string" ? label : label.zh)) || path;
}

async function correctRecord(recordId) {
  // A task's outcome is corrected as it was made: through its task (household and round fixed).
  const head = await state.store.recordHead(recordId);
  if (head && SYSTEM_FORMS.has(head.formId)) {
    const taskId = (await state.store.recordValues(recordId)).task_id;
    if (taskId && (await state.store.task(taskId))) return workTask(taskId);
  }
  await flushDraft();
  const draft = await engines.reopenRecord({ storage: state.store, recordId });
  if (!draft) return;
  await state.store.putDraft(draft);
  await openDraft(draft);
  await refreshDrafts();
  $("editor").scrollIntoView({ block: "start" });
}

// The village's households (from the records sync brought): a new round of a form starts
// from the household's last answers.
async function refreshHouseholds() {
  const found = await engines.households({ storage: state.store });
  $("households").hidden = found.length === 0;
  say("household-count", found.length ? `（${found.length} 户）` : "");
  const list = $("household-list");
  list.replaceChildren();
  for (const { household, records } of found) {
    const li = document.createElement("li");
    const label = document.createElement("span");
    label.textContent = `${household.household_no}（${household.village_code}）`;
    li.append(label);
    for (const head of records) {
      // A task's outcome is worked from its task (核查任务), not as a record of the household.
      if (SYSTEM_FORMS.has(head.formId)) continue;
      const definition = state.definitions.find((d) => d.id === head.formId);
      const edit = document.createElement("button");
      edit.type = "button";
      edit.textContent = `修改${titleOf(definition) || head.formId}（${head.round}）`;
      edit.dataset.edit = head.recordId;
      edit.addEventListener("click", () => correctRecord(head.recordId));
      li.append(edit);
    }
    const formIds = [...new Set(records.map((r) => r.formId))].filter((id) => !SYSTEM_FORMS.has(id));
    for (const formId of formIds) {
      const definition = state.definitions.find((d) => d.id === formId);
      if (!definition) continue;
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = `新一轮${titleOf(definition)}`;
      button.dataset.household = household.household_no;
      button.dataset.newRound = formId;
      button.addEventListener("click", async () => {
        const values = await engines.lastAnswers({ storage: state.store, formId, household });
        const last = records.filter((r) => r.formId === formId).at(-1);
        await startForm(definition, { household, values: values || {}, lastRound: last?.round ?? null });
      });
      li.append(button);
    }
    list.append(li);
  }
}

// --- verification tasks (issue 17) ---------------------------------------------------------

const TASK_STATUS = {
  open: ["待核查", ""],
  submitted: ["已填写，待同步", "waiting"],
  rejected: ["被退回，请更正", "overdue"],
  worked: ["已核查", "done"],
  closed: ["已关闭（县里已确认）", "done"],
};

function element(tag, attrs = {}, text = null) {
  const node = Object.assign(document.createElement(tag), attrs);
  if (text !== null) node.textContent = text;
  return node;
}

// Today in Beijing on the server's clock (a tablet's own clock is often wrong): deadlines are
// Beijing dates.
async function todayInBeijing() {
  const offset = Number(await state.store.setting("clockOffsetMs")) || 0;
  return new Intl.DateTimeFormat("en-CA", { timeZone: "Asia/Shanghai" }).format(new Date(Date.now() + offset));
}

function sourceText(source) {
  const text = String(source || "");
  if (text.startsWith("dept:")) return (settings.departments || {})[text.slice(5)] || text.slice(5);
  if (text === "round") return "上一轮对比";
  return text;
}

function choiceLabel(definition, listName, value) {
  const list = (definition?.choice_lists || {})[listName] || [];
  const choice = list.find((c) => c.value === value);
  const label = choice && choice.label;
  return (label && (typeof label === "string" ? label : label.zh)) || value;
}

// 数据错误：人员已死亡 — the form's own Chinese labels for a coded outcome.
function outcomeText(data) {
  if (!data || !data.outcome) return "";
  const definition = state.definitions.find((d) => d.id === "verification_outcome");
  const main = choiceLabel(definition, "outcome", data.outcome);
  return data.data_error ? `${main}：${choiceLabel(definition, "data_error", data.data_error)}` : main;
}

// The household as its records on the device say: head of household and member count.
async function householdText(household, held = null, level = "household") {
  const records = household && level !== "village" ? await engines.householdRecords({ storage: state.store, household, held }) : [];
  const roster = records.filter((r) => r.head.formId === "household_roster").at(-1);
  const members = Array.isArray(roster?.data?.members) ? roster.data.members : [];
  const head = members.find((m) => m.relation === "户主") || members[0];
  // A township's device holds several villages: then the village code says which.
  const enrolment = await state.store.setting("enrolment");
  // Pieces that each stay on one line, so a narrow screen breaks between them, not inside one.
  const line = [];
  if (!/^\d{12}$/.test(enrolment?.scope || "")) line.push(element("span", { className: "nowrap" }, `村 ${household?.village_code ?? "—"} · `));
  // A village-level task has no household: its 户编号 (task-…) only files the outcome record.
  if (level === "village") line.push(element("span", { className: "nowrap" }, "村级核实：名单上有、花名册中没有的人员"));
  else line.push(element("span", { className: "nowrap" }, `户编号 ${household?.household_no ?? "—"}`));
  if (head?.name) line.push(element("span", { className: "nowrap" }, ` 户主 ${head.name}，${members.length} 人`));
  return { line, records, members };
}

// Which member a reason is about: named in its details, or the row its path points at in the
// household's record of that form on the device (the department cross-checks give the path).
function reasonMember(reason, records) {
  const details = reason.details && typeof reason.details === "object" ? reason.details : {};
  if (typeof details.name === "string" && details.name) return details.name;
  const found = /^([^/]+)\/([^/#][^/]*)\//.exec(String(details.path || ""));
  if (!found) return null;
  const record = records.filter((r) => r.head.formId === details.form_id).at(-1);
  const rows = record && Array.isArray(record.data[found[1]]) ? record.data[found[1]] : [];
  const row = rows.find((r) => r._id === found[2]);
  return row && typeof row.name === "string" ? row.name : null;
}

function reasonList(reasons, records) {
  const list = element("ul", { className: "reasons" });
  for (const reason of reasons || []) {
    const message = (reason.message && (typeof reason.message === "string" ? reason.message : reason.message.zh)) || reason.code;
    const item = element("li");
    item.append(element("span", { className: "dept" }, `【${sourceText(reason.source)}】`), message);
    const who = reasonMember(reason, records);
    const details = reason.details || {};
    const notes = [];
    if (who && !message.includes(who)) notes.push(`成员：${who}`);
    if (typeof details.id_number === "string") notes.push(details.id_number); // masked at the source
    if (typeof details.period === "string") notes.push(`${details.period} 名单`);
    if (notes.length) item.append(element("span", { className: "hint" }, `（${notes.join("，")}）`));
    list.append(item);
  }
  return list;
}

async function refreshTasks() {
  if ($("tasks").hidden) return;
  let found = [];
  try {
    found = await engines.tasks({ storage: state.store });
  } catch {
    found = [];
  }
  const today = await todayInBeijing();
  const open = found.filter((t) => t.localStatus === "open" || t.localStatus === "rejected");
  const done = found.filter((t) => !open.includes(t));
  say("task-count", open.length ? `（${open.length} 个待核查）` : "");
  $("task-empty").hidden = open.length > 0;
  $("tasks-done").hidden = done.length === 0;
  say("task-done-count", done.length ? `（${done.length}）` : "");
  const drafts = new Map((await state.store.drafts()).filter((d) => d.taskId).map((d) => [d.taskId, d]));
  const held = await heldHouseholds(); // the record heads, read once for every task
  for (const [listId, tasks] of [["task-list", open], ["task-done-list", done]]) {
    const items = [];
    for (const task of tasks) items.push(await taskItem(task, today, drafts.has(task.task_id), held));
    $(listId).replaceChildren(...items);
  }
  document.body.dataset.tasks = String(found.length);
}

async function taskItem(task, today, drafted, held) {
  const overdue = task.localStatus === "open" && (task.escalated || String(task.deadline) < today);
  const item = element("li", { className: "task" });
  item.dataset.task = task.task_id;
  item.dataset.status = task.localStatus;
  item.dataset.overdue = overdue ? "yes" : "no";
  const { line, records } = await householdText(task.household, held, task.level);
  const head = element("div", { className: "task-head" });
  head.append(...line);
  const [statusText, statusClass] = TASK_STATUS[task.localStatus] || [task.localStatus, ""];
  head.append(element("span", { className: `badge ${statusClass}` }, statusText));
  if (overdue) head.append(element("span", { className: "badge overdue" }, task.escalated ? "已逾期，已上报乡镇" : "已逾期"));
  if (drafted && task.localStatus === "open") head.append(element("span", { className: "badge waiting" }, "草稿"));
  item.append(head, element("p", { className: "hint" }, `截止 ${task.deadline}（${task.reasons?.length || 0} 个问题）`));
  item.append(reasonList(task.reasons, records));
  if (task.localStatus !== "open") {
    const outcome = task.outcome || (await state.store.recordValues(task.record_id));
    const text = outcomeText(outcome);
    if (text) item.append(element("p", { className: "outcome" }, `核查结果：${text}${outcome.note ? `。${outcome.note}` : ""}`));
  }
  if (task.localStatus !== "closed") {
    const label = { open: "入户核查，填写结果", rejected: "更正核查结果" }[task.localStatus] || "修改核查结果";
    const button = element("button", { type: "button", className: task.localStatus === "worked" || task.localStatus === "submitted" ? "" : "primary" }, label);
    button.dataset.work = task.task_id;
    button.addEventListener("click", () => workTask(task.task_id));
    item.append(button);
  }
  return item;
}

// Working a task: its outcome record as a draft (the draft already begun, if any).
async function workTask(taskId) {
  await flushDraft();
  const begun = (await state.store.drafts()).find((d) => d.taskId === taskId);
  let draft = begun ? await state.store.draft(begun.id) : null;
  if (!draft) {
    const definition = state.definitions.find((d) => d.id === "verification_outcome");
    if (!definition) {
      say("sync-message", "设备上还没有核查结果表单，请先同步。");
      return;
    }
    draft = await engines.taskDraft({ storage: state.store, taskId, formId: definition.id, formVersion: definition.version });
    if (!draft) return;
    await state.store.putDraft(draft);
  }
  await openDraft(draft);
  await refreshDrafts();
  $("editor").scrollIntoView({ block: "start" });
}

// Beside the outcome form: the household (from its records on the device) and every reason.
async function showTask(draft) {
  const box = $("task-box");
  box.hidden = true;
  box.replaceChildren();
  if (!draft.taskId) return;
  const task = await state.store.task(draft.taskId);
  if (!task) return;
  const parts = [];
  const { line, records, members } = await householdText(task.household, null, task.level);
  const title = element("p");
  const strong = element("strong");
  strong.append(...line);
  title.append(strong);
  parts.push(title);
  if (members.length) {
    parts.push(element("p", { className: "hint" }, `家庭成员：${members.map((m) => `${m.name ?? "—"}（${m.relation ?? "—"}）`).join("、")}`));
  }
  // Each form once, in its latest round (records come newest round last).
  const latest = new Map(records.filter((r) => !SYSTEM_FORMS.has(r.head.formId)).map((r) => [r.head.formId, r]));
  const held = [...latest.values()];
  if (held.length) {
    const names = held.map((r) => `${titleOf(state.definitions.find((d) => d.id === r.head.formId)) || r.head.formId}（${r.head.round}）`);
    parts.push(element("p", { className: "hint" }, `本机已有：${names.join("、")}`));
  } else if (task.level === "village") {
    parts.push(element("p", { className: "hint" }, "请核实此人是否为本村人员：非本村人员、确为本村人员（补录花名册），或数据错误（如已迁出）。"));
  } else {
    parts.push(element("p", { className: "hint" }, "本机还没有这一户的调查记录。"));
  }
  parts.push(element("p", {}, `要核实的问题（截止 ${task.deadline}）：`), reasonList(task.reasons, records));
  // Shown only once whole (a reader of the box never sees it half built).
  box.replaceChildren(...parts);
  box.hidden = false;
}

// --- enrolment -----------------------------------------------------------------------------

async function enrolWith(code) {
  say("enrol-message", "正在登记…");
  try {
    const result = await engines.enrol({
      storage: state.store,
      baseUrl: location.origin,
      code,
      label: navigator.userAgent.slice(0, 120),
    });
    say("enrol-message", `登记成功，范围 ${result.scope}。`);
    $("enrol").hidden = true;
    $("tasks").hidden = false;
    await sync("enrolled");
  } catch (error) {
    say("enrol-message", `登记失败：${errorText(error)}`);
  }
}

let stopScan = null;

async function startScan() {
  const { scanQr, enrolmentFromQr } = await import("./scanner.js");
  $("scanner").hidden = false;
  try {
    const scan = scanQr($("scan-video"));
    stopScan = scan.stop;
    const text = await scan.result;
    const { code, server } = enrolmentFromQr(text);
    if (server && new URL(server).origin !== location.origin) {
      say("enrol-message", `二维码指向另一台服务器（${server}），请在那台服务器的 /field/ 打开。`);
      return;
    }
    $("enrol-code").value = code;
    await enrolWith(code);
  } catch (error) {
    say("enrol-message", `无法扫码：${error.message}。请手动输入登记码。`);
  } finally {
    $("scanner").hidden = true;
    stopScan = null;
  }
}

// --- export outbox -------------------------------------------------------------------------

async function exportOutbox() {
  try {
    const { body, seqs, envelopes } = await engines.outboxEnvelopes({ storage: state.store });
    const enrolment = await state.store.setting("enrolment");
    const file = await outboxFile({
      deviceId: enrolment?.deviceId ?? "",
      serverUrl: location.origin,
      body,
      seqs,
    });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(file.blob);
    link.download = file.name;
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    say("export-message", `已导出 ${envelopes.length} 个加密数据块：${file.name}`);
  } catch (error) {
    say("export-message", `导出失败：${error.message}`);
  }
}

// --- start ---------------------------------------------------------------------------------

async function start() {
  state.store = await openSealedStore();
  $("update-now").addEventListener("click", applyUpdate);
  $("update-later").addEventListener("click", () => ($("update").hidden = true));
  $("sync-now").addEventListener("click", () => sync("button"));
  $("draft-close").addEventListener("click", closeDraft);
  $("draft-submit").addEventListener("click", submitDraft);
  for (const id of ["draft-village", "draft-household", "draft-round"]) $(id).addEventListener("input", onFormChange);
  $("export-outbox").addEventListener("click", exportOutbox);
  $("photo-input").addEventListener("change", (event) => {
    const [file] = event.target.files;
    event.target.value = "";
    if (file) addPhoto(file).catch((error) => say("photo-message", `照片未保存：${error.message}`));
  });
  $("enrol-form").addEventListener("submit", (event) => {
    event.preventDefault();
    enrolWith($("enrol-code").value);
  });
  $("scan-start").addEventListener("click", startScan);
  $("scan-stop").addEventListener("click", () => stopScan && stopScan());
  window.addEventListener("online", () => sync("online"));
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") sync("visible");
    else flushDraft();
  });
  window.addEventListener("pagehide", () => flushDraft());
  setInterval(() => sync("timer"), (settings.syncIntervalSeconds || 300) * 1000);

  $("enrol").hidden = Boolean(await state.store.setting("enrolment"));
  $("tasks").hidden = !$("enrol").hidden;
  state.definitions = await engines.formDefinitions(state.store);
  showForms();
  await refreshDrafts();
  const open = await state.store.setting("openDraft");
  const draft = open ? await state.store.draft(open) : null;
  if (draft) await openDraft(draft);
  await refreshStatus();
  document.body.dataset.ready = "yes";
  await registerWorker().catch((error) => say("sync-message", `离线缓存不可用：${error.message}`));
  sync("start");
}

start().catch((error) => {
  say("sync-message", `启动失败：${error.message}`);
  document.body.dataset.ready = "failed";
});
