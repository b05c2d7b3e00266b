// Sealed at rest: the field app's IndexedDB, where every value is AES-256-GCM ciphertext.
//
// The key is a non-extractable CryptoKey made on this device and kept in IndexedDB itself
// (CryptoKey objects are structured-cloneable; a non-extractable one can be used but never read
// out, not even by this script). Every write draws a fresh 96-bit IV; the associated data names
// the slot, so a ciphertext copied into another slot does not open. Slot names never carry a
// field value: record ids, draft ids, photo hashes and cursor scopes become HMAC-SHA-256 tags
// under a second non-extractable key; outbox slots are the op sequence numbers.
//
// The DeviceStorage interface of the device engine (sync_protocol/device.py's Protocol in
// camelCase, every method async) is implemented here, plus drafts, photos and settings; see
// docs/field-app.md §storage for the shapes. `transaction(fn)` is the all-or-nothing unit of
// work: writes inside it are buffered, sealed, then committed in one IndexedDB transaction.

const DB_NAME = "village-field";
const DB_VERSION = 1;
const SEALED = "sealed"; // key [kind, slot] → {iv, ct}
const KEYS = "keys"; // name → CryptoKey or key pair (opaque, non-extractable private keys)
const AAD_PREFIX = "village-field/v1";

const te = new TextEncoder();
const td = new TextDecoder();

function done(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

function finished(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error || new Error("IndexedDB transaction aborted"));
  });
}

function openDatabase(name) {
  const request = indexedDB.open(name, DB_VERSION);
  request.onupgradeneeded = () => {
    const db = request.result;
    if (!db.objectStoreNames.contains(SEALED)) db.createObjectStore(SEALED);
    if (!db.objectStoreNames.contains(KEYS)) db.createObjectStore(KEYS);
  };
  return done(request);
}

async function deviceSealKeys(db) {
  const read = db.transaction(KEYS, "readonly").objectStore(KEYS).get("seal");
  const found = await done(read);
  if (found) return found;
  const fresh = {
    aes: await crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, false, [
      "encrypt",
      "decrypt",
    ]),
    mac: await crypto.subtle.generateKey({ name: "HMAC", hash: "SHA-256", length: 256 }, false, [
      "sign",
    ]),
  };
  // Two tabs may both get here on a first start: `add` lets only one key pair win, and the
  // other tab reads the winner, so nothing is ever sealed under a key that is then lost.
  const tx = db.transaction(KEYS, "readwrite");
  tx.objectStore(KEYS).add(fresh, "seal");
  try {
    await finished(tx);
    return fresh;
  } catch (error) {
    if (error && error.name !== "ConstraintError") throw error;
    return done(db.transaction(KEYS, "readonly").objectStore(KEYS).get("seal"));
  }
}

// JSON with bytes: a Uint8Array/ArrayBuffer travels as {"$bytes": base64}.
function toJson(value) {
  return JSON.stringify(value, (_key, v) => {
    if (v instanceof ArrayBuffer) v = new Uint8Array(v);
    if (v instanceof Uint8Array) {
      let text = "";
      for (const byte of v) text += String.fromCharCode(byte);
      return { $bytes: btoa(text) };
    }
    return v;
  });
}

function fromJson(text) {
  return JSON.parse(text, (_key, v) => {
    if (v && typeof v === "object" && typeof v.$bytes === "string" && Object.keys(v).length === 1) {
      return Uint8Array.from(atob(v.$bytes), (c) => c.charCodeAt(0));
    }
    return v;
  });
}

function field(object, camel, snake) {
  if (object == null) return undefined;
  return object[camel] !== undefined ? object[camel] : object[snake];
}

function sameHousehold(a, b) {
  const norm = (h) =>
    h == null ? null : JSON.stringify(Object.keys(h).sort().map((k) => [k, h[k]]));
  return norm(a) === norm(b);
}

// Which kinds name their slots by an HMAC tag (an id or hash that could say something) and
// which by a plain number or fixed word.
const TAGGED = new Set(["record", "values", "conflict", "cursor", "task", "draft", "photo", "photo-meta", "setting"]);
// The kinds the protocol's DeviceStorage holds: what a unit of work buffers.
const UNIT_KINDS = new Set(["counters", "outbox", "record", "values", "conflict", "cursor", "task"]);

/** The DeviceStorage methods and the app's own records, over four primitive operations. */
class StorageApi {
  // --- DeviceStorage: counters -----------------------------------------------------------
  async counters() {
    const found = await this._get("counters", "counters");
    return found === undefined ? this._newCounters() : found;
  }

  async setCounters(counters) {
    await this._put("counters", "counters", counters);
  }

  // --- DeviceStorage: outbox -------------------------------------------------------------
  async outboxItem(seq) {
    const found = await this._get("outbox", Number(seq));
    return found === undefined ? null : found;
  }

  async outboxItems(states, { recordId = null, limit = null } = {}) {
    const wanted = new Set(states);
    const found = (await this._list("outbox")).filter((item) => {
      if (!wanted.has(item.state)) return false;
      return recordId == null || field(item.op, "recordId", "record_id") === recordId;
    });
    found.sort((a, b) => a.seq - b.seq);
    return limit == null ? found : found.slice(0, limit);
  }

  async putOutboxItem(item) {
    await this._put("outbox", Number(item.seq), item);
  }

  async removeOutboxItem(seq) {
    await this._delete("outbox", Number(seq));
  }

  // --- DeviceStorage: records ------------------------------------------------------------
  async recordHead(recordId) {
    const found = await this._get("record", recordId);
    return found === undefined ? null : found;
  }

  async writeRecord(head, values) {
    const recordId = field(head, "recordId", "record_id");
    await this._put("record", recordId, head);
    if (values != null || (await this._get("values", recordId)) === undefined) {
      await this._put("values", recordId, { ...(values || {}) });
    }
  }

  /** The record's local view as the engine last wrote it (flat paths), {} when unknown. */
  async recordValues(recordId) {
    const found = await this._get("values", recordId);
    return found === undefined ? {} : found;
  }

  async liveTwins(recordId, formId, household, round) {
    const heads = await this._listOrdered("record");
    return heads
      .filter(
        (h) =>
          field(h, "recordId", "record_id") !== recordId &&
          field(h, "formId", "form_id") === formId &&
          sameHousehold(h.household ?? null, household ?? null) &&
          (h.round ?? null) === (round ?? null) &&
          !h.deleted,
      )
      .map((h) => field(h, "recordId", "record_id"));
  }

  /** Every record head, the one stored first first. */
  async recordHeads() {
    return this._listOrdered("record");
  }

  // --- DeviceStorage: conflicts ----------------------------------------------------------
  async conflict(conflictId) {
    const found = await this._get("conflict", conflictId);
    return found === undefined ? null : found;
  }

  async conflictNotes({ recordId = null, status = null, listed = null } = {}) {
    return (await this._listOrdered("conflict")).filter(
      (note) =>
        (recordId == null || field(note, "recordId", "record_id") === recordId) &&
        (status == null || note.status === status) &&
        (listed == null || note.listed === listed),
    );
  }

  async putConflict(note) {
    await this._put("conflict", field(note, "conflictId", "conflict_id"), note);
  }

  // --- DeviceStorage: cursors ------------------------------------------------------------
  async cursors() {
    const result = {};
    for (const { scope, stream, cursor } of await this._listOrdered("cursor")) {
      (result[scope] ||= {})[stream] = cursor;
    }
    return result;
  }

  async setCursor(scope, stream, cursor) {
    await this._put("cursor", `${scope}\u0000${stream}`, { scope, stream, cursor });
  }

  // --- DeviceStorage: verification tasks (the tasks stream's entries, as received) -----------
  async task(taskId) {
    const found = await this._get("task", taskId);
    return found === undefined ? null : found;
  }

  async putTask(entry) {
    await this._put("task", String(field(entry, "taskId", "task_id")), entry);
  }

  /** Every task held, the one received first first. */
  async tasks() {
    return this._listOrdered("task");
  }

  // --- drafts: half-filled forms, saved as the worker types --------------------------------
  async draft(draftId) {
    const found = await this._get("draft", draftId);
    return found === undefined ? null : found;
  }

  /** Every draft, the one started first first. */
  async drafts() {
    return this._listOrdered("draft");
  }

  async putDraft(draft) {
    await this._put("draft", draft.id, draft);
  }

  async removeDraft(draftId) {
    await this._delete("draft", draftId);
  }

  // --- photos: downscaled bytes, sealed, until uploaded ----------------------------------
  async putPhoto(sha256, bytes, meta = {}) {
    await this._put("photo", sha256, new Uint8Array(bytes));
    await this._put("photo-meta", sha256, { ...meta, sha256, size: bytes.byteLength });
  }

  /** Change a photo's description (e.g. `{uploaded: true}`) without rewriting its bytes. */
  async markPhoto(sha256, changes) {
    const meta = await this._get("photo-meta", sha256);
    if (meta !== undefined) await this._put("photo-meta", sha256, { ...meta, ...changes });
  }

  async photo(sha256) {
    const found = await this._get("photo", sha256);
    return found === undefined ? null : found;
  }

  async photos() {
    return this._listOrdered("photo-meta");
  }

  async removePhoto(sha256) {
    await this._delete("photo", sha256);
    await this._delete("photo-meta", sha256);
  }

  // --- small named values (last sync, the open draft, enrolment) ---------------------------
  async setting(name) {
    const found = await this._get("setting", name);
    return found === undefined ? null : found;
  }

  async putSetting(name, value) {
    await this._put("setting", name, value);
  }
}

/** The store itself: each primitive is its own IndexedDB transaction. */
export class SealedStore extends StorageApi {
  constructor(db, keys, options = {}) {
    super();
    this.db = db;
    this.keys = keys;
    this._newCounters =
      options.newCounters ||
      (() => ({ lastSeq: 0, ackedThrough: 0, hlcLast: null, serverTimeMs: null }));
    this._order = 0;
    this._queue = Promise.resolve();
    this._active = null;
  }

  async _slot(kind, id) {
    if (!TAGGED.has(kind)) return id;
    const tag = await crypto.subtle.sign("HMAC", this.keys.mac, te.encode(`${kind}\u0000${id}`));
    let text = "";
    for (const byte of new Uint8Array(tag).slice(0, 20)) text += byte.toString(16).padStart(2, "0");
    return text;
  }

  _aad(kind, slot) {
    return te.encode(`${AAD_PREFIX}\u0000${kind}\u0000${slot}`);
  }

  async _seal(kind, slot, plain) {
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const body =
      plain instanceof Uint8Array
        ? concat(new Uint8Array([1]), plain)
        : concat(new Uint8Array([0]), te.encode(toJson(plain)));
    const ct = await crypto.subtle.encrypt(
      { name: "AES-GCM", iv, additionalData: this._aad(kind, slot) },
      this.keys.aes,
      body,
    );
    return { iv, ct: new Uint8Array(ct) };
  }

  async _open(kind, slot, sealed) {
    const body = new Uint8Array(
      await crypto.subtle.decrypt(
        { name: "AES-GCM", iv: sealed.iv, additionalData: this._aad(kind, slot) },
        this.keys.aes,
        sealed.ct,
      ),
    );
    return body[0] === 1 ? body.slice(1) : fromJson(td.decode(body.subarray(1)));
  }

  // Each stored value is wrapped as {o, v}: `o` is when it was first stored (kept on replace), so
  // lists keep first-stored order although tagged slots sort randomly.
  _nextOrder() {
    this._order = Math.max(this._order + 1, Date.now() * 1000);
    return this._order;
  }

  async _readWrapped(kind, slot) {
    const tx = this.db.transaction(SEALED, "readonly");
    const sealed = await done(tx.objectStore(SEALED).get([kind, slot]));
    return sealed === undefined ? undefined : this._open(kind, slot, sealed);
  }

  async _wrap(kind, slot, value, previous) {
    const order = previous && typeof previous === "object" && "o" in previous ? previous.o : this._nextOrder();
    if (value instanceof Uint8Array) return [await this._seal(kind, slot, value), order];
    return [await this._seal(kind, slot, { o: order, v: value }), order];
  }

  // While a unit of work runs, the protocol's records are read and written through it: the
  // engine calls its storage (this store) directly inside transaction(work), and those writes
  // must land with the unit or not at all. The app's own kinds (drafts, photos, settings) stay
  // direct, so a draft saved while a sync runs is never held back or dropped with it.
  _route(kind) {
    return this._active && UNIT_KINDS.has(kind) ? this._active : null;
  }

  async _get(kind, id) {
    const unit = this._route(kind);
    return unit ? unit._get(kind, id) : this._storedGet(kind, id);
  }

  async _put(kind, id, value) {
    const unit = this._route(kind);
    return unit ? unit._put(kind, id, value) : this._storedPut(kind, id, value);
  }

  async _delete(kind, id) {
    const unit = this._route(kind);
    return unit ? unit._delete(kind, id) : this._storedDelete(kind, id);
  }

  async _storedGet(kind, id) {
    const slot = await this._slot(kind, id);
    const wrapped = await this._readWrapped(kind, slot);
    if (wrapped === undefined) return undefined;
    return wrapped instanceof Uint8Array ? wrapped : wrapped.v;
  }

  async _storedPut(kind, id, value) {
    const slot = await this._slot(kind, id);
    const previous = value instanceof Uint8Array ? undefined : await this._readWrapped(kind, slot);
    const [sealed] = await this._wrap(kind, slot, value, previous);
    const tx = this.db.transaction(SEALED, "readwrite");
    tx.objectStore(SEALED).put(sealed, [kind, slot]);
    await finished(tx);
  }

  async _storedDelete(kind, id) {
    const slot = await this._slot(kind, id);
    const tx = this.db.transaction(SEALED, "readwrite");
    tx.objectStore(SEALED).delete([kind, slot]);
    await finished(tx);
  }

  async _entries(kind) {
    const tx = this.db.transaction(SEALED, "readonly");
    const range = IDBKeyRange.bound([kind], [kind, []]);
    const store = tx.objectStore(SEALED);
    const [keys, values] = await Promise.all([done(store.getAllKeys(range)), done(store.getAll(range))]);
    const out = [];
    for (let i = 0; i < keys.length; i += 1) {
      const slot = keys[i][1];
      out.push({ slot, wrapped: await this._open(kind, slot, values[i]) });
    }
    return out;
  }

  async _list(kind) {
    const unit = this._route(kind);
    if (unit) return unit._list(kind);
    return (await this._entries(kind)).map(({ wrapped }) => wrapped.v);
  }

  async _listOrdered(kind) {
    const unit = this._route(kind);
    if (unit) return unit._listOrdered(kind);
    const entries = await this._entries(kind);
    entries.sort((a, b) => a.wrapped.o - b.wrapped.o);
    return entries.map(({ wrapped }) => wrapped.v);
  }

  /** Run `fn(unit)`; its writes of the protocol's records land all together, or none when it
   * throws. Units run one at a time; while one runs, the store's own DeviceStorage methods go
   * through it too (the protocol engine holds the store, not the unit). */
  transaction(fn) {
    const run = this._queue.then(async () => {
      const unit = new Unit(this);
      this._active = unit;
      try {
        const result = await fn(unit);
        await unit._commit();
        return result;
      } finally {
        this._active = null;
      }
    });
    this._queue = run.catch(() => undefined);
    return run;
  }

  /** What the browser says this origin uses and may use, in bytes (null when it cannot say). */
  async space() {
    if (!navigator.storage || !navigator.storage.estimate) return null;
    const { usage = 0, quota = 0 } = await navigator.storage.estimate();
    return { usage, quota, free: Math.max(0, quota - usage) };
  }

  /** Ask the browser not to evict this origin's data under storage pressure (asked once). */
  async askPersistence() {
    if (!navigator.storage || !navigator.storage.persist) return false;
    if (await navigator.storage.persisted()) return true;
    return navigator.storage.persist();
  }

  // --- device keys (the protocol client's WebCrypto key pairs) --------------------------------
  // Kept as CryptoKey objects, not sealed: a non-extractable private key cannot be read out by
  // anyone, and sealing would mean exporting it first.
  async deviceKeys() {
    const found = await done(this.db.transaction(KEYS, "readonly").objectStore(KEYS).get("device"));
    return found === undefined ? null : found;
  }

  async putDeviceKeys(keys) {
    const tx = this.db.transaction(KEYS, "readwrite");
    tx.objectStore(KEYS).put(keys, "device");
    await finished(tx);
  }

  close() {
    this.db.close();
  }
}

/** A unit of work: reads see its own writes; `_commit` seals everything, then writes it in one
 * IndexedDB transaction (sealing is async, and an IndexedDB transaction ends at the first await
 * that is not one of its own requests, so nothing async may run inside it). */
class Unit extends StorageApi {
  constructor(store) {
    super();
    this.store = store;
    this._newCounters = store._newCounters;
    this.writes = new Map(); // "kind\u0000id" → {kind, id, value} (value undefined = delete)
  }

  _key(kind, id) {
    return `${kind}\u0000${typeof id}\u0000${id}`;
  }

  async _get(kind, id) {
    const key = this._key(kind, id);
    if (this.writes.has(key)) return this.writes.get(key).value;
    return this.store._storedGet(kind, id);
  }

  async _put(kind, id, value) {
    this.writes.set(this._key(kind, id), { kind, id, value });
  }

  async _delete(kind, id) {
    this.writes.set(this._key(kind, id), { kind, id, value: undefined });
  }

  async _merged(kind, ordered) {
    const base = await this.store._entries(kind);
    // `n`: 0 for what is stored, then 1, 2 … for what this unit adds, in the order it added them
    // (so new entries list after the stored ones, as they will once committed).
    const bySlot = new Map(base.map((e) => [e.slot, { o: e.wrapped.o, n: 0, v: e.wrapped.v }]));
    let added = 0;
    for (const write of this.writes.values()) {
      if (write.kind !== kind) continue;
      const slot = await this.store._slot(kind, write.id);
      const known = bySlot.get(slot);
      if (write.value === undefined) bySlot.delete(slot);
      else if (known) bySlot.set(slot, { ...known, v: write.value });
      else bySlot.set(slot, { o: 0, n: ++added, v: write.value });
    }
    const entries = [...bySlot.values()];
    if (ordered) entries.sort((a, b) => a.n - b.n || a.o - b.o);
    return entries.map((e) => e.v);
  }

  _list(kind) {
    return this._merged(kind, false);
  }

  _listOrdered(kind) {
    return this._merged(kind, true);
  }

  async transaction(fn) {
    return fn(this);
  }

  async _commit() {
    const prepared = [];
    for (const { kind, id, value } of this.writes.values()) {
      const slot = await this.store._slot(kind, id);
      if (value === undefined) {
        prepared.push({ key: [kind, slot], sealed: undefined });
        continue;
      }
      const previous = value instanceof Uint8Array ? undefined : await this.store._readWrapped(kind, slot);
      const [sealed] = await this.store._wrap(kind, slot, value, previous);
      prepared.push({ key: [kind, slot], sealed });
    }
    if (prepared.length === 0) return;
    const tx = this.store.db.transaction(SEALED, "readwrite");
    const objects = tx.objectStore(SEALED);
    for (const { key, sealed } of prepared) {
      if (sealed === undefined) objects.delete(key);
      else objects.put(sealed, key);
    }
    await finished(tx);
  }
}

function concat(a, b) {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

/** Open (creating on first use) the sealed store of this origin. */
export async function openSealedStore({ name = DB_NAME, newCounters = null } = {}) {
  const db = await openDatabase(name);
  const keys = await deviceSealKeys(db);
  return new SealedStore(db, keys, newCounters ? { newCounters } : {});
}
