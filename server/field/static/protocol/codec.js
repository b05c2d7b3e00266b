// Canonical JSON, sync ops and the batch codec (port of sync_protocol/codec.py and ops.py).
import { Stamp } from "./clock.js";
import { ProtocolError } from "./errors.js";

export const CODEC_VERSION = 1;
export const MAX_VALUE_DEPTH = 16;
export const TOMBSTONE_KEY = "$tombstone";
export const KINDS = ["put", "delete", "resolve"];
const FORM_ID_RE = /^[a-z][a-z0-9_]*$/;

/** The tombstone marker as it travels in JSON; a fresh object each time (callers may keep it). */
export const tombstone = () => ({ [TOMBSTONE_KEY]: true });
export const isTombstone = (value) =>
  value !== null && typeof value === "object" && !Array.isArray(value) &&
  Object.keys(value).length === 1 && value[TOMBSTONE_KEY] === true;

/** Code-point order (Python's str order); UTF-16 order differs above U+D7FF. */
export function compareText(a, b) {
  if (a === b) return 0;
  let i = 0;
  while (i < a.length && i < b.length) {
    const x = a.codePointAt(i);
    const y = b.codePointAt(i);
    if (x !== y) return x < y ? -1 : 1;
    i += x > 0xffff ? 2 : 1;
  }
  return a.length < b.length ? -1 : 1;
}

export const sortedKeys = (object) => Object.keys(object).sort(compareText);
export const codePoints = (text) => Array.from(text).length;

const malformed = (where, message) => new ProtocolError("batch_malformed", message, { where });

/** Canonical JSON text: sorted keys, no spaces, finite numbers (json.dumps(sort_keys=True)). */
export function canonicalJson(value) {
  if (value === null || value === undefined) return "null";
  switch (typeof value) {
    case "boolean":
      return value ? "true" : "false";
    case "number":
      if (!Number.isFinite(value)) throw malformed("value", "number is not finite");
      return JSON.stringify(value);
    case "string":
      return JSON.stringify(value);
    default:
      if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
      return `{${sortedKeys(value)
        .filter((k) => value[k] !== undefined)
        .map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`)
        .join(",")}}`;
  }
}

export const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });
export const canonicalBytes = (value) => utf8.encode(canonicalJson(value));

// JSON.parse keeps the last of two equal keys; the Python decoder refuses the object. This scan
// runs over text JSON.parse has accepted, so only strings, braces, brackets and ':' matter.
const TOKEN = /"(?:[^"\\]|\\.)*"|[{}[\]:]/g;
function duplicateKey(text) {
  const stack = [];
  let previous = null;
  for (const match of text.matchAll(TOKEN)) {
    const token = match[0];
    if (token === "{") stack.push(new Set());
    else if (token === "[") stack.push(null);
    else if (token === "}" || token === "]") stack.pop();
    else if (token === ":" && previous && previous[0] === '"') {
      const keys = stack[stack.length - 1];
      const key = JSON.parse(previous);
      if (keys.has(key)) return key;
      keys.add(key);
    }
    previous = token;
  }
  return null;
}

/** Parse UTF-8 JSON bytes strictly (no duplicate keys); throws batch_malformed naming `where`. */
export function parseJson(data, where = "batch") {
  let text;
  let value;
  try {
    text = strictUtf8.decode(data);
    value = JSON.parse(text);
  } catch (error) {
    throw malformed(where, `not valid JSON: ${error.message}`);
  }
  const repeated = text.includes(":") ? duplicateKey(text) : null;
  if (repeated !== null) throw malformed(where, `not valid JSON: duplicate key ${JSON.stringify(repeated)} in object`);
  return value;
}

function checkValue(value, where, depth = 0) {
  if (depth > MAX_VALUE_DEPTH) throw malformed(where, `value nested deeper than ${MAX_VALUE_DEPTH}`);
  if (value === null || typeof value === "boolean" || typeof value === "string") return;
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw malformed(where, "number is not finite");
    if (Number.isInteger(value) && Math.abs(value) > Number.MAX_SAFE_INTEGER) {
      throw malformed(where, "integer beyond 2**53 - 1 (not exact in JavaScript)");
    }
    return;
  }
  if (Array.isArray(value)) {
    for (const item of value) checkValue(item, where, depth + 1);
    return;
  }
  if (typeof value === "object") {
    for (const item of Object.values(value)) checkValue(item, where, depth + 1);
    return;
  }
  throw malformed(where, `${typeof value} is not a JSON value`);
}

// --- ops (sync_protocol/ops.py) ---------------------------------------------------------------

const opInvalid = (field, problem) =>
  new ProtocolError("op_invalid", `op field '${field}': ${problem}`, {
    where: field,
    zh: `同步操作字段 '${field}' 无效`,
  });
const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const isInt = (v) => typeof v === "number" && Number.isInteger(v);

function checkId(name, value) {
  if (typeof value !== "string" || !value || codePoints(value) > 128) {
    throw opInvalid(name, "want a non-empty string of at most 128 characters");
  }
}
function checkStampText(name, value) {
  try {
    Stamp.parse(value);
  } catch (error) {
    throw opInvalid(name, error.message);
  }
}
function checkPath(name, path) {
  if (typeof path !== "string") throw opInvalid(name, "paths must be strings");
  if (path && (path.startsWith("/") || path.endsWith("/") || path.includes("//"))) {
    throw opInvalid(name, `malformed field path ${path}`);
  }
}

/** Validate an op's dict form (Op.from_dict + Op.__post_init__); returns a normalised copy. */
export function opFromDict(data) {
  if (!isObject(data)) throw opInvalid("op", "want an object");
  const required = ["device_id", "seq", "record_id", "form_id", "form_version", "kind", "changes",
    "base", "base_revision", "hlc"];
  const optional = ["household", "round", "conflict_id"];
  for (const name of required) if (!(name in data)) throw opInvalid(name, "missing");
  const unknown = Object.keys(data).filter((k) => !required.includes(k) && !optional.includes(k));
  if (unknown.length) throw opInvalid(unknown.sort(compareText)[0], "unknown field");
  const op = {
    device_id: data.device_id, seq: data.seq, record_id: data.record_id, form_id: data.form_id,
    form_version: data.form_version, household: data.household ?? null, round: data.round ?? null,
    kind: data.kind, changes: data.changes, base: data.base, base_revision: data.base_revision,
    hlc: data.hlc, conflict_id: data.conflict_id ?? null,
  };
  checkId("device_id", op.device_id);
  if (!isInt(op.seq) || op.seq < 1) throw opInvalid("seq", "want an integer >= 1");
  checkId("record_id", op.record_id);
  if (typeof op.form_id !== "string" || !FORM_ID_RE.test(op.form_id)) throw opInvalid("form_id", "want [a-z][a-z0-9_]*");
  if (!isInt(op.form_version) || op.form_version < 1) throw opInvalid("form_version", "want an integer >= 1");
  if (op.household !== null) {
    if (!isObject(op.household)) throw opInvalid("household", "want an object or null");
    for (const key of ["village_code", "household_no"]) {
      if (typeof op.household[key] !== "string" || !op.household[key]) throw opInvalid(`household.${key}`, "want a non-empty string");
    }
    op.household = { ...op.household };
  }
  if (op.round !== null && (typeof op.round !== "string" || !op.round)) throw opInvalid("round", "want a non-empty string or null");
  if (!KINDS.includes(op.kind)) throw opInvalid("kind", `want one of ${KINDS.join(", ")}`);
  if (!isObject(op.changes)) throw opInvalid("changes", "want an object");
  for (const [path, value] of Object.entries(op.changes)) {
    checkPath("changes", path);
    if (path === "" && !(value === null || isTombstone(value))) {
      throw opInvalid("changes.", "the record path '' takes only null (restore) or a tombstone");
    }
  }
  const paths = Object.keys(op.changes).sort(compareText);
  for (const scope of paths.filter((p) => isTombstone(op.changes[p]))) {
    const inside = paths.filter((p) => (scope === "" ? p !== "" : p.startsWith(`${scope}/`)));
    if (inside.length) throw opInvalid(`changes.${inside[0]}`, "an op deletes a row or record or edits inside it, never both");
  }
  if (op.kind === "delete" ? paths.length : !paths.length) {
    throw opInvalid("changes", op.kind === "delete" ? "a delete op carries no changes" : `a ${op.kind} op must change at least one path`);
  }
  if (!isObject(op.base)) throw opInvalid("base", "want an object");
  for (const [path, entry] of Object.entries(op.base)) {
    checkPath("base", path);
    if (entry === null) continue;
    if (typeof entry === "string") checkStampText(`base.${path}`, entry);
    else if (Array.isArray(entry) && entry.length) {
      for (const item of entry) {
        if (typeof item !== "string") throw opInvalid(`base.${path}`, "want stamp texts in the list");
        checkStampText(`base.${path}`, item);
      }
    } else throw opInvalid(`base.${path}`, "want a stamp text, a non-empty list of stamp texts or null");
  }
  if (!isInt(op.base_revision) || op.base_revision < 0) throw opInvalid("base_revision", "want an integer >= 0");
  checkStampText("hlc", op.hlc);
  if (op.kind === "resolve") checkId("conflict_id", op.conflict_id);
  else if (op.conflict_id !== null) throw opInvalid("conflict_id", "only a resolve op carries a conflict id");
  return op;
}

// --- the batch codec -------------------------------------------------------------------------

const FIRST_OPTIONAL = 8;
const OP_LENGTH = 13;
const trailingDefaults = () => [[], 0, 0, 0, null];
function isDefault(position, value) {
  const d = trailingDefaults()[position - FIRST_OPTIONAL];
  if (Array.isArray(d)) return Array.isArray(value) && value.length === 0;
  return value === d;
}

function sharedPrefix(a, b) {
  // Counted in code points, as the Python codec counts characters.
  const x = Array.from(a);
  const y = Array.from(b);
  let n = 0;
  while (n < x.length && n < y.length && x[n] === y[n]) n++;
  return [n, y.slice(n).join("")];
}

/** The batch as the JSON value [1, TABLE, OPS] (codec.py module docs). */
export function batchToJson(ops) {
  const table = [];
  const tableIndex = new Map();
  const ref = (value, where) => {
    checkValue(value, where);
    const key = canonicalJson(value);
    if (!tableIndex.has(key)) {
      tableIndex.set(key, table.length);
      table.push(value);
    }
    return tableIndex.get(key);
  };
  const encoded = [];
  let previousSeq = 0;
  ops.forEach((raw, i) => {
    const where = `ops[${i}]`;
    let op;
    try {
      op = opFromDict(raw);
    } catch (error) {
      throw malformed(where, error.message);
    }
    const paths = Object.keys(op.changes).sort(compareText);
    const coded = [];
    let previous = "";
    for (const path of paths) {
      const [shared, suffix] = sharedPrefix(previous, path);
      checkValue(op.changes[path], `${where}.changes['${path}']`);
      coded.push(shared, suffix, op.changes[path]);
      previous = path;
    }
    const baseKeys = Object.keys(op.base);
    let codedBase;
    if (!baseKeys.length) codedBase = 0;
    else if (baseKeys.length === paths.length && paths.every((p) => p in op.base)) codedBase = paths.map((p) => op.base[p]);
    else codedBase = { ...op.base };
    const row = [op.seq - previousSeq, op.record_id, op.hlc, ref(op.device_id, `${where}.device_id`),
      ref(op.form_id, `${where}.form_id`), op.form_version, ref(op.household, `${where}.household`),
      ref(op.round, `${where}.round`), coded, codedBase, op.base_revision, KINDS.indexOf(op.kind),
      op.conflict_id];
    checkValue(row, where);
    while (row.length > FIRST_OPTIONAL && isDefault(row.length - 1, row[row.length - 1])) row.pop();
    encoded.push(row);
    previousSeq = op.seq;
  });
  return [CODEC_VERSION, table, encoded];
}

/** Batch bytes (uncompressed). */
export const encodeBatch = (ops) => canonicalBytes(batchToJson(ops));

function int(value, where, minimum) {
  if (!isInt(value)) throw malformed(where, "must be an integer");
  if (minimum !== undefined && value < minimum) throw malformed(where, `must be >= ${minimum}`);
  return value;
}
function str(value, where, optional = false) {
  if (value === null && optional) return null;
  if (typeof value !== "string") throw malformed(where, `must be a string${optional ? " or null" : ""}`);
  return value;
}
function entry(table, index, where) {
  const position = int(index, where, 0);
  if (position >= table.length) throw malformed(where, `table index ${position} out of range`);
  return table[position];
}

/** Op dicts back from the JSON value of a batch; throws batch_malformed naming the element. */
export function batchFromJson(value) {
  if (!Array.isArray(value) || value.length !== 3) throw malformed("batch", "must be [version, table, ops]");
  const [version, table, codedOps] = value;
  if (version !== CODEC_VERSION) throw malformed("batch[0]", `unsupported codec version ${version}`);
  if (!Array.isArray(table) || !Array.isArray(codedOps)) throw malformed("batch", "table and ops must be lists");
  checkValue(table, "table");
  const ops = [];
  let previousSeq = 0;
  codedOps.forEach((codedIn, i) => {
    const where = `ops[${i}]`;
    if (!Array.isArray(codedIn) || codedIn.length < FIRST_OPTIONAL || codedIn.length > OP_LENGTH) {
      throw malformed(where, `must be a list of ${FIRST_OPTIONAL}..${OP_LENGTH} items`);
    }
    checkValue(codedIn, where);
    const coded = [...codedIn, ...trailingDefaults().slice(codedIn.length - FIRST_OPTIONAL)];
    const seq = previousSeq + int(coded[0], `${where}.seq`);
    if (seq < 1) throw malformed(`${where}.seq`, "must be >= 1");
    const codedChanges = coded[8];
    if (!Array.isArray(codedChanges) || codedChanges.length % 3) {
      throw malformed(`${where}.changes`, "must be a list of prefix, suffix, value triples");
    }
    const changes = {};
    let previous = [];
    for (let k = 0; k < codedChanges.length; k += 3) {
      const shared = int(codedChanges[k], `${where}.changes[${k}]`, 0);
      if (shared > previous.length) throw malformed(`${where}.changes[${k}]`, "prefix longer than the previous path");
      const path = previous.slice(0, shared).join("") + str(codedChanges[k + 1], `${where}.changes[${k + 1}]`);
      if (path in changes) throw malformed(`${where}.changes[${k + 1}]`, `path '${path}' repeated`);
      changes[path] = codedChanges[k + 2];
      previous = Array.from(path);
    }
    const kindIndex = int(coded[11], `${where}.kind`, 0);
    if (kindIndex >= KINDS.length) throw malformed(`${where}.kind`, `unknown kind ${kindIndex}`);
    const household = entry(table, coded[6], `${where}.household`);
    if (household !== null && !isObject(household)) throw malformed(`${where}.household`, "must be an object or null");
    const paths = Object.keys(changes);
    let base;
    const codedBase = coded[9];
    if (codedBase === 0) base = {};
    else if (Array.isArray(codedBase)) {
      if (codedBase.length !== paths.length || !paths.length) throw malformed(`${where}.base`, "stamp list does not match the changes");
      base = Object.fromEntries(paths.map((p, j) => [p, codedBase[j]]));
    } else if (isObject(codedBase)) base = { ...codedBase };
    else throw malformed(`${where}.base`, "must be 0, a list aligned with the changes or an object");
    ops.push({
      device_id: str(entry(table, coded[3], `${where}.device_id`), `${where}.device_id`),
      seq,
      record_id: str(coded[1], `${where}.record_id`),
      form_id: str(entry(table, coded[4], `${where}.form_id`), `${where}.form_id`),
      form_version: int(coded[5], `${where}.form_version`, 1),
      household,
      round: str(entry(table, coded[7], `${where}.round`), `${where}.round`, true),
      kind: KINDS[kindIndex],
      changes,
      base,
      base_revision: int(coded[10], `${where}.base_revision`, 0),
      hlc: str(coded[2], `${where}.hlc`),
      conflict_id: str(coded[12], `${where}.conflict_id`, true),
    });
    previousSeq = seq;
  });
  return ops;
}

/** Decode batch bytes to validated op dicts (batch_malformed for anything else). */
export function decodeBatch(data) {
  return batchFromJson(parseJson(data)).map((fields, i) => {
    try {
      return opFromDict(fields);
    } catch (error) {
      throw malformed(`ops[${i}]`, error.message);
    }
  });
}
