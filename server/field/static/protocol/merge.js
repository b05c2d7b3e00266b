// sync_protocol/merge.py for the device: read a server record state strictly, its derived
// views (fields, conflicts, deleted), device_view, the bases of the next op, the ops of a
// resolution, and the field merge itself (a device that asks for lean acks merges its own
// applied op locally; protocol-merge.md states the rules).
import { Stamp, isSuspect, DEFAULT_MAX_DRIFT_MS } from "./clock.js";
import { canonicalJson, compareText, isTombstone, tombstone } from "./codec.js";
import { ProtocolError } from "./errors.js";

export const STATE_FORMAT = 1;
const NODE_OFFSET = 18;
const FORM_ID_RE = /^[a-z][a-z0-9_]*$/;
const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const isInt = (v) => typeof v === "number" && Number.isInteger(v);
const bad = (message) => new ProtocolError("record_state_invalid", message, { zh: "记录状态数据格式错误" });
const short = (v) => String(JSON.stringify(v)).slice(0, 60);
const byText = (a, b) => compareText(a, b);
const inScope = (scope, path) => (scope === "" ? path !== "" : path.startsWith(`${scope}/`));
const sameValueText = (v) => canonicalJson(v);
const plain = (v) => (isTombstone(v) ? tombstone() : v);

// SHA-256, synchronous, for conflict ids (crypto.subtle.digest is async; the views are not).
const K = Uint32Array.from("428a2f98 71374491 b5c0fbcf e9b5dba5 3956c25b 59f111f1 923f82a4 ab1c5ed5 d807aa98 12835b01 243185be 550c7dc3 72be5d74 80deb1fe 9bdc06a7 c19bf174 e49b69c1 efbe4786 0fc19dc6 240ca1cc 2de92c6f 4a7484aa 5cb0a9dc 76f988da 983e5152 a831c66d b00327c8 bf597fc7 c6e00bf3 d5a79147 06ca6351 14292967 27b70a85 2e1b2138 4d2c6dfc 53380d13 650a7354 766a0abb 81c2c92e 92722c85 a2bfe8a1 a81a664b c24b8b70 c76c51a3 d192e819 d6990624 f40e3585 106aa070 19a4c116 1e376c08 2748774c 34b0bcb5 391c0cb3 4ed8aa4a 5b9cca4f 682e6ff3 748f82ee 78a5636f 84c87814 8cc70208 90befffa a4506ceb bef9a3f7 c67178f2".split(" "), (h) => parseInt(h, 16));
export function sha256Hex(bytes) {
  const length = bytes.length;
  const padded = new Uint8Array(((length + 9 + 63) >> 6) << 6);
  padded.set(bytes);
  padded[length] = 0x80;
  const view = new DataView(padded.buffer);
  view.setUint32(padded.length - 4, length * 8);
  view.setUint32(padded.length - 8, Math.floor(length / 2 ** 29));
  const h = Uint32Array.from([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
  const w = new Uint32Array(64);
  const rotr = (x, n) => (x >>> n) | (x << (32 - n));
  for (let offset = 0; offset < padded.length; offset += 64) {
    for (let i = 0; i < 16; i++) w[i] = view.getUint32(offset + 4 * i);
    for (let i = 16; i < 64; i++) {
      const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3);
      const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10);
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) >>> 0;
    }
    let [a, b, c, d, e, f, g, k] = h;
    for (let i = 0; i < 64; i++) {
      const t1 = (k + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i]) >>> 0;
      const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) >>> 0;
      [k, g, f, e, d, c, b, a] = [g, f, e, (d + t1) >>> 0, c, b, a, (t1 + t2) >>> 0];
    }
    [a, b, c, d, e, f, g, k].forEach((x, i) => { h[i] = (h[i] + x) >>> 0; });
  }
  return Array.from(h, (x) => x.toString(16).padStart(8, "0")).join("");
}

export function conflictIdFor(recordId, kind, path, stamps) {
  const material = JSON.stringify([recordId, kind, path, [...new Set(stamps)].sort(byText)]);
  return `c-${sha256Hex(new TextEncoder().encode(material)).slice(0, 32)}`;
}

function heads(writes) {
  const all = [...writes.values()];
  if (all.length === 1) return all;
  const replaced = new Set(all.flatMap((w) => w.replaces));
  let found = all.filter((w) => !replaced.has(w.stamp));
  if (!found.length) found = [writes.get([...writes.keys()].sort(byText).pop())];
  return found.sort((x, y) => byText(x.stamp, y.stamp));
}

function view(path, hs, policy) {
  const top = hs[hs.length - 1];
  let status;
  if (hs.length === 1) status = "ok";
  else if (new Set(hs.map((w) => sameValueText(w.value))).size === 1) status = "same";
  else if (hs.some((w) => isTombstone(w.value)) || policy === "review" || top.suspect) status = "conflict";
  else status = "lww";
  return { path, value: top.value, stamp: top.stamp, device: top.device, heads: hs.map((w) => w.stamp), status };
}

const candidate = (w) => ({ path: w.path, stamp: w.stamp, device: w.device, value: plain(w.value), suspect: w.suspect });

/** A record state as the server sends it (RecordState.to_dict()), read strictly. */
export class RecordState {
  constructor(fields) {
    Object.assign(this, fields);
    this.headsCache = new Map();
    this.views = new Map();
    this.conflictMap = null;
  }

  heads(path) {
    if (!this.headsCache.has(path)) {
      const writes = this.writes.get(path);
      this.headsCache.set(path, writes ? heads(writes) : []);
    }
    return this.headsCache.get(path);
  }

  field(path) {
    if (!this.views.has(path)) {
      const hs = this.heads(path);
      if (!hs.length) return null;
      this.views.set(path, view(path, hs, this.policies[path] || "lww"));
    }
    return this.views.get(path);
  }

  get paths() {
    return [...this.writes.keys()].sort(byText);
  }

  get fields() {
    return Object.fromEntries(this.paths.map((p) => [p, this.field(p)]));
  }

  get conflicts() {
    return [...this.conflictsById().values()].sort((a, b) => byText(a.conflict_id, b.conflict_id));
  }

  conflict(id) {
    return this.conflictsById().get(id) || null;
  }

  get deleted() {
    return this.scopeDeleted("");
  }

  scopeDeleted(scope) {
    const v = this.field(scope);
    if (!v || v.status === "conflict" || !isTombstone(v.value)) return false;
    return ![...this.conflictsById().values()].some((c) => c.path === scope && (c.kind === "delete_edit" || c.kind === "row_delete_edit"));
  }

  conflictsById() {
    if (this.conflictMap) return this.conflictMap;
    const found = new Map();
    for (const path of this.writes.keys()) {
      const hs = this.heads(path);
      const c = hs.some((w) => isTombstone(w.value)) ? this.deleteConflict(path, hs) : this.fieldConflict(path, hs);
      if (c) found.set(c.conflict_id, c);
    }
    this.conflictMap = this.withoutSettledByEnclosingDelete(found);
    return this.conflictMap;
  }

  seenOf(tombstones) {
    const seen = new Map();
    for (const t of tombstones) {
      for (const [path, stamps] of Object.entries(t.seen || {})) {
        if (!seen.has(path)) seen.set(path, new Set());
        stamps.forEach((s) => seen.get(path).add(s));
      }
    }
    return seen;
  }

  withoutSettledByEnclosingDelete(found) {
    if (!found.size) return found;
    const seenByScope = new Map();
    for (const scope of this.writes.keys()) {
      const tombs = this.heads(scope).filter((w) => isTombstone(w.value));
      if (tombs.length) seenByScope.set(scope, this.seenOf(tombs));
    }
    if (!seenByScope.size) return found;
    const kept = new Map();
    for (const [id, c] of found) {
      const settled = c.kind !== "duplicate_household" && [...seenByScope].some(([scope, seen]) =>
        scope !== c.path && inScope(scope, c.path) &&
        c.candidates.every((cand) => (seen.get(cand.path) || new Set()).has(cand.stamp)));
      if (!settled) kept.set(id, c);
    }
    return kept;
  }

  fieldConflict(path, hs) {
    const v = this.field(path);
    if (!v || v.status !== "conflict") return null;
    const writes = this.writes.get(path);
    const known = hs.flatMap((w) => w.replaces).filter((s) => writes.has(s)).sort(byText);
    const base = known.length ? writes.get(known[known.length - 1]).value : null;
    const stamps = hs.map((w) => w.stamp);
    return {
      conflict_id: conflictIdFor(this.record_id, "field", path, stamps), record_id: this.record_id,
      kind: "field", path, reason: this.policies[path] === "review" ? "review" : "suspect_clock",
      base: plain(base), mine: plain(hs[hs.length - 1].value), theirs: plain(hs[hs.length - 2].value),
      candidates: hs.map(candidate), stamps,
    };
  }

  deleteConflict(scope, hs) {
    const tombs = hs.filter((w) => isTombstone(w.value));
    const rivals = hs.filter((w) => !isTombstone(w.value));
    const seen = this.seenOf(tombs);
    const unseen = [];
    for (const path of this.writes.keys()) {
      if (!inScope(scope, path)) continue;
      const here = seen.get(path) || new Set();
      unseen.push(...this.heads(path).filter((w) => !isTombstone(w.value) && !here.has(w.stamp)));
    }
    if (!rivals.length && !unseen.length) return null;
    const order = (x, y) => byText(x.stamp, y.stamp) || byText(x.path, y.path);
    const involved = [...tombs, ...rivals, ...unseen].sort(order);
    const kind = scope === "" ? "delete_edit" : "row_delete_edit";
    const base = {};
    for (const w of unseen) {
      const writes = this.writes.get(w.path);
      const known = [...(seen.get(w.path) || [])].filter((s) => writes.has(s)).sort(byText);
      base[w.path] = known.length ? plain(writes.get(known[known.length - 1]).value) : null;
    }
    const theirs = {};
    for (const w of [...rivals, ...unseen].sort((x, y) => byText(x.stamp, y.stamp))) theirs[w.path] = plain(w.value);
    const stamps = [...new Set(involved.map((w) => w.stamp))].sort(byText);
    return {
      conflict_id: conflictIdFor(this.record_id, kind, scope, stamps), record_id: this.record_id,
      kind, path: scope, reason: "delete", base, mine: tombstone(), theirs,
      candidates: involved.map(candidate), stamps,
    };
  }

  tombstonedScopes() {
    return [...this.writes.keys()].filter((p) => p && this.scopeDeleted(p));
  }

  /** The base a put of `paths` carries: each path's displayed stamp (null: never written). */
  baseFor(paths) {
    return Object.fromEntries(paths.map((p) => [p, this.field(p)?.stamp ?? null]));
  }

  /** Every head stamp of each path (a list when several): the base that supersedes them all. */
  headsFor(paths) {
    return Object.fromEntries(paths.map((p) => {
      const stamps = this.heads(p).map((w) => w.stamp);
      return [p, !stamps.length ? null : stamps.length === 1 ? stamps[0] : stamps];
    }));
  }

  /** The base that deletes the record ("") or a row, having seen everything in it. */
  deleteBase(scope = "") {
    return this.headsFor([...this.writes.keys()].filter((p) => p === scope || inScope(scope, p)).sort(byText));
  }

  /** Canonical dict form (RecordState.to_dict()). */
  toDict() {
    const all = [...this.writes.values()].flatMap((m) => [...m.values()]);
    const stamps = [...new Set(all.map((w) => w.stamp))].sort(byText);
    const index = new Map(stamps.map((s, i) => [s, i]));
    const first = new Map();
    for (const w of all.sort((x, y) => byText(x.stamp, y.stamp) || byText(x.path, y.path))) if (!first.has(w.stamp)) first.set(w.stamp, w);
    const ops = stamps.map((s) => {
      const w = first.get(s);
      const row = { s, q: w.seq };
      if (w.device !== s.slice(NODE_OFFSET)) row.d = w.device;
      if (w.suspect) row.x = true;
      if (w.conflict_id != null) row.c = w.conflict_id;
      return row;
    });
    const paths = {};
    for (const path of this.paths) {
      paths[path] = [...this.writes.get(path).values()].sort((x, y) => byText(x.stamp, y.stamp)).map((w) => {
        const row = [index.get(w.stamp), plain(w.value)];
        if (w.replaces.length || w.seen) row.push([...w.replaces]);
        if (w.seen) row.push(Object.fromEntries(Object.keys(w.seen).sort(byText).map((p) => [p, [...w.seen[p]]])));
        return row;
      });
    }
    return {
      format: STATE_FORMAT, record_id: this.record_id, form_id: this.form_id, form_version: this.form_version,
      household: this.household, round: this.round, revision: this.revision, envelope_stamp: this.envelope_stamp,
      ops, paths, policies: Object.fromEntries(Object.keys(this.policies).sort(byText).map((p) => [p, this.policies[p]])),
    };
  }

  /** Read a state strictly; record_state_invalid names the culprit. */
  static fromDict(data) {
    if (!isObject(data)) throw bad("a record state must be an object");
    if (data.format !== STATE_FORMAT) throw bad(`unknown record state format ${short(data.format)}`);
    const need = (key) => {
      if (!(key in data)) throw bad(`${key}: missing`);
      return data[key];
    };
    const recordId = need("record_id");
    if (typeof recordId !== "string" || !recordId || Array.from(recordId).length > 128) throw bad("record_id: want a non-empty string");
    const formId = need("form_id");
    if (typeof formId !== "string" || !FORM_ID_RE.test(formId)) throw bad("form_id: want [a-z][a-z0-9_]*");
    const int = (v, where, min) => {
      if (!isInt(v) || v < min) throw bad(`${where}: want an integer >= ${min}, got ${short(v)}`);
      return v;
    };
    const stamp = (v, where) => {
      if (typeof v !== "string") throw bad(`${where}: want a stamp text`);
      try {
        Stamp.parse(v);
      } catch (error) {
        throw bad(`${where}: ${error.message}`);
      }
      return v;
    };
    const stampList = (v, where) => {
      if (!Array.isArray(v)) throw bad(`${where}: want a list of stamp texts`);
      return v.map((s, k) => stamp(s, `${where}[${k}]`));
    };
    const path = (p, where) => {
      if (typeof p !== "string" || (p && (p.startsWith("/") || p.endsWith("/") || p.includes("//")))) throw bad(`${where}: want a field path`);
      return p;
    };
    const formVersion = int(data.form_version, "form_version", 1);
    let household = data.household ?? null;
    if (household !== null) {
      if (!isObject(household)) throw bad("household: want an object or null");
      for (const key of ["village_code", "household_no"]) {
        if (typeof household[key] !== "string" || !household[key]) throw bad(`household.${key}: want a non-empty string`);
      }
      household = { ...household };
    }
    const round = data.round ?? null;
    if (round !== null && (typeof round !== "string" || !round)) throw bad("round: want a non-empty string or null");
    const revision = int(data.revision ?? 0, "revision", 0);
    const envelopeStamp = data.envelope_stamp ?? null;
    if (envelopeStamp !== null) stamp(envelopeStamp, "envelope_stamp");
    const opsIn = need("ops");
    if (!Array.isArray(opsIn)) throw bad("ops: want a list");
    const ops = [];
    opsIn.forEach((row, i) => {
      const where = `ops[${i}]`;
      if (!isObject(row)) throw bad(`${where}: want an object`);
      if (Object.keys(row).some((k) => !["s", "q", "d", "x", "c"].includes(k))) throw bad(`${where}: unknown keys`);
      const s = stamp(row.s, `${where}.s`);
      if (ops.length && byText(s, ops[ops.length - 1].stamp) <= 0) throw bad(`${where}.s: ops must be sorted by stamp, each stamp once`);
      const seq = int(row.q, `${where}.q`, 1);
      const device = row.d ?? s.slice(NODE_OFFSET);
      if (typeof device !== "string" || !device || device.length > 128) throw bad(`${where}.d: want a non-empty device id`);
      const suspect = row.x ?? false;
      if (typeof suspect !== "boolean") throw bad(`${where}.x: want a boolean`);
      const conflictId = row.c ?? null;
      if (conflictId !== null && (typeof conflictId !== "string" || !conflictId)) throw bad(`${where}.c: want a conflict id`);
      ops.push({ stamp: s, device, seq, suspect, conflictId });
    });
    const pathsIn = need("paths");
    if (!isObject(pathsIn)) throw bad("paths: want an object");
    const writes = new Map();
    for (const [p, rows] of Object.entries(pathsIn)) {
      path(p, `paths key ${short(p)}`);
      const where = `paths[${short(p)}]`;
      if (!Array.isArray(rows) || !rows.length) throw bad(`${where}: want a non-empty list of writes`);
      const pathWrites = new Map();
      let previous = -1;
      rows.forEach((row, k) => {
        const at = `${where}[${k}]`;
        if (!Array.isArray(row) || row.length < 2 || row.length > 4) throw bad(`${at}: want [op index, value, replaced stamps?, seen?]`);
        const index = row[0];
        if (!isInt(index) || index < 0 || index >= ops.length) throw bad(`${at}[0]: want an op index`);
        if (index <= previous) throw bad(`${at}[0]: writes must be oldest first, each op once`);
        previous = index;
        const op = ops[index];
        const raw = row[1];
        const isTomb = isTombstone(raw);
        const replaces = row.length > 2 ? stampList(row[2], `${at}[2]`) : [];
        let seen = null;
        if (row.length > 3) {
          if (!isTomb) throw bad(`${at}[3]: only a tombstone keeps seen stamps`);
          if (!isObject(row[3])) throw bad(`${at}[3]: want an object {path: [stamps]}`);
          seen = {};
          for (const [sp, sv] of Object.entries(row[3])) seen[path(sp, `${at}[3] key`)] = stampList(sv, `${at}[3]`);
          if (!Object.keys(seen).length) seen = null;
        }
        pathWrites.set(op.stamp, {
          path: p, stamp: op.stamp, value: isTomb ? tombstone() : raw, device: op.device, seq: op.seq,
          replaces, suspect: op.suspect, seen, conflict_id: op.conflictId,
        });
      });
      writes.set(p, pathWrites);
    }
    const policiesIn = data.policies ?? {};
    if (!isObject(policiesIn)) throw bad("policies: want an object");
    for (const [p, chosen] of Object.entries(policiesIn)) {
      if (chosen !== "lww" && chosen !== "review") throw bad(`policies: unknown merge policy ${short(chosen)} at ${short(p)}`);
    }
    return new RecordState({
      record_id: recordId, form_id: formId, form_version: formVersion, household, round, revision,
      envelope_stamp: envelopeStamp, writes, policies: { ...policiesIn },
    });
  }
}

/** Flat current values: no empties, tombstones or values inside deleted rows/records. */
export function currentValues(state) {
  if (state.deleted) return {};
  const hidden = state.tombstonedScopes();
  const out = {};
  for (const path of state.paths) {
    if (path === "" || hidden.some((s) => s === path || inScope(s, path))) continue;
    const v = state.field(path);
    if (!v || v.value === null || isTombstone(v.value)) continue;
    out[path] = v.value;
  }
  return out;
}

/** What a device shows and edits (merge.device_view). */
export function deviceView(state) {
  return {
    record_id: state.record_id, form_id: state.form_id, form_version: state.form_version,
    household: state.household, round: state.round, revision: state.revision, deleted: state.deleted,
    values: currentValues(state),
    stamps: Object.fromEntries(state.paths.map((p) => [p, state.field(p).stamp])),
    conflicts: state.conflicts.map((c) => c.conflict_id),
  };
}

/** The changes and base of a resolve op settling open conflict `conflictId`. */
export function resolution(state, conflictId, chosen) {
  const conflict = state.conflict(conflictId);
  if (!conflict) throw new ProtocolError("conflict_not_open", `conflict ${conflictId} is not open on record ${state.record_id}`);
  const names = Object.keys(chosen);
  if (names.length !== 1 || names[0] !== conflict.path) {
    throw new ProtocolError("resolution_paths_invalid", `a resolution of ${conflictId} sets exactly '${conflict.path}'`);
  }
  const value = chosen[conflict.path];
  const changes = { [conflict.path]: isTombstone(value) ? tombstone() : value };
  if (conflict.kind === "field" || !isTombstone(value)) return { changes, base: state.headsFor([conflict.path]) };
  return { changes, base: state.deleteBase(conflict.path) };
}

// --- the merge (merge.merge) -------------------------------------------------------------------

const baseStamps = (entry) => (entry == null ? [] : typeof entry === "string" ? [entry] : [...entry]);
const opPaths = (op) => (op.kind === "delete" ? [""] : Object.keys(op.changes));

function opWrites(op, suspect) {
  return opPaths(op).map((path) => {
    const value = op.kind === "delete" ? tombstone() : op.changes[path];
    let seen = null;
    if (isTombstone(value)) {
      seen = {};
      for (const [p, entry] of Object.entries(op.base)) if (inScope(path, p) && entry !== null) seen[p] = baseStamps(entry);
      if (!Object.keys(seen).length) seen = null;
    }
    return {
      path, stamp: op.hlc, value: isTombstone(value) ? tombstone() : value, device: op.device_id, seq: op.seq,
      replaces: baseStamps(op.base[path]), suspect, seen, conflict_id: op.conflict_id ?? null,
    };
  });
}

function copyWith(state, newWrites, op) {
  const writes = new Map(state.writes);
  for (const w of newWrites) {
    const pathWrites = new Map(writes.get(w.path) || []);
    pathWrites.set(w.stamp, w);
    writes.set(w.path, pathWrites);
  }
  let { household, round, envelope_stamp: envelopeStamp } = state;
  if (op.household !== null && (envelopeStamp === null || op.hlc < envelopeStamp)) {
    [household, round, envelopeStamp] = [{ ...op.household }, op.round, op.hlc];
  }
  return new RecordState({
    record_id: state.record_id, form_id: state.form_id, form_version: Math.max(state.form_version, op.form_version),
    household, round, revision: state.revision, envelope_stamp: envelopeStamp, writes, policies: { ...state.policies },
  });
}

/**
 * Merge `op` (a validated op dict) into `state` (null for a new record); returns
 * {state, changed, status, field_outcomes, conflicts, suspect, closed_conflict_ids}.
 * `policy(path)` gives "lww" or "review". Throws op_record_mismatch, stamp_reused or
 * merge_policy_invalid.
 */
export function merge(state, op, policy, { referenceMs, maxDriftMs = DEFAULT_MAX_DRIFT_MS }) {
  const suspect = isSuspect(op.hlc, referenceMs, maxDriftMs);
  if (state === null) {
    state = new RecordState({ record_id: op.record_id, form_id: op.form_id, form_version: op.form_version, household: null, round: null, revision: 0, envelope_stamp: null, writes: new Map(), policies: {} });
  } else if (op.record_id !== state.record_id || op.form_id !== state.form_id) {
    throw new ProtocolError("op_record_mismatch", `op ${op.device_id}#${op.seq} is for ${op.form_id}/${op.record_id}, not ${state.form_id}/${state.record_id}`);
  }
  const ops = new Map();
  for (const m of state.writes.values()) for (const w of m.values()) ops.set(w.stamp, [w.device, w.seq]);
  if ([...ops.values()].some(([d, q]) => d === op.device_id && q === op.seq)) {
    return {
      state, changed: false, status: "duplicate", field_outcomes: Object.fromEntries(opPaths(op).map((p) => [p, "duplicate"])),
      conflicts: state.conflicts.filter((c) => c.stamps.includes(op.hlc)), suspect, closed_conflict_ids: [],
    };
  }
  if (ops.has(op.hlc)) {
    const [d, q] = ops.get(op.hlc);
    throw new ProtocolError("stamp_reused", `op ${op.device_id}#${op.seq} reuses stamp ${op.hlc} of op ${d}#${q}`);
  }
  const newWrites = opWrites(op, suspect);
  const before = state.conflictsById();
  const previous = new Map(newWrites.map((w) => [w.path, state.field(w.path)]));
  const merged = copyWith(state, newWrites, op);
  for (const w of newWrites) {
    const hs = merged.heads(w.path);
    const needsPolicy = hs.length >= 2 && !hs.some((h) => isTombstone(h.value)) && new Set(hs.map((h) => sameValueText(h.value))).size > 1;
    if (needsPolicy) {
      const chosen = policy(w.path);
      if (chosen !== "lww" && chosen !== "review") throw new ProtocolError("merge_policy_invalid", `policy for '${w.path}' is ${chosen}`);
      merged.policies[w.path] = chosen;
    } else delete merged.policies[w.path];
  }
  merged.views.clear();
  const after = merged.conflictsById();
  const inConflict = new Set([...after.values()].flatMap((c) => c.candidates.map((k) => `${k.path}\u0000${k.stamp}`)));
  const outcomes = {};
  for (const w of newWrites) {
    const v = merged.field(w.path);
    const prior = previous.get(w.path);
    let outcome;
    if (!v || !v.heads.includes(w.stamp)) outcome = "superseded";
    else if (inConflict.has(`${w.path}\u0000${w.stamp}`)) outcome = "conflict";
    else if (v.heads.length === 1) outcome = prior && sameValueText(prior.value) === sameValueText(w.value) ? "unchanged" : "applied";
    else if (v.status === "same") outcome = "unchanged";
    else if (v.status === "lww") outcome = v.stamp === w.stamp ? "won" : "lost";
    else outcome = "conflict";
    outcomes[w.path] = outcome;
  }
  const values = new Set(Object.values(outcomes));
  let status;
  if (values.has("conflict")) status = "conflict";
  else if ([...values].every((x) => x === "applied" || x === "unchanged")) status = "applied";
  else status = "merged";
  const conflicts = [...after.keys()].sort(byText).map((id) => after.get(id)).filter((c) => !before.has(c.conflict_id) || c.stamps.includes(op.hlc));
  return {
    state: merged, changed: true, status, field_outcomes: outcomes, conflicts, suspect,
    closed_conflict_ids: [...before.keys()].filter((id) => !after.has(id)).sort(byText),
  };
}
