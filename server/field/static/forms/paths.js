// Field paths (contracts §4): a port of forms/paths.py. A record's data becomes a flat map
// path → value: `name`, `repeat/<row_id>/name`, `repeat/<row_id>/_order` (the row's position);
// `repeat/<row_id>` itself is a row marker unflatten() reads (null deletes the row).
export const ROW_ID_KEY = "_id";
export const ORDER_KEY = "_order";
export const SEPARATOR = "/";

export class PathError extends Error {
  constructor(code, message, messageZh) {
    super(message);
    this.code = code;
    this.messageZh = messageZh;
  }
}

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

export function splitPath(path) {
  const segments = path.split(SEPARATOR);
  if (!path || segments.some((s) => !s)) {
    throw new PathError("bad_path", `malformed field path '${path}'`, `字段路径格式错误：'${path}'`);
  }
  return segments;
}

export function joinPath(...segments) {
  return segments.join(SEPARATOR);
}

// members/<row_id>/name → members/name (data paths alternate name / row id).
export function schemaPath(path) {
  return splitPath(path)
    .filter((_, i) => i % 2 === 0)
    .join(SEPARATOR);
}

export function isRowPath(path) {
  return splitPath(path).length % 2 === 0;
}

function isRepeatValue(value) {
  return Array.isArray(value) && value.length > 0 && value.every(isObject);
}

export function flatten(data) {
  const flat = {};
  flattenInto(flat, data, "");
  return flat;
}

function flattenInto(flat, obj, prefix) {
  for (const [key, value] of Object.entries(obj)) {
    if (!key || key.includes(SEPARATOR)) {
      throw new PathError(
        "bad_key",
        `field key '${key}' under ${prefix || "the record"} must be a non-empty string without '/'`,
        `字段名 '${key}' 不合法`,
      );
    }
    if (prefix && key === ROW_ID_KEY) continue;
    if (prefix && key === ORDER_KEY) {
      throw new PathError("reserved_key", `row ${prefix} uses the reserved key '_order'`, `行 ${prefix} 使用了保留字段 _order`);
    }
    const path = prefix + key;
    if (isRepeatValue(value)) {
      const seen = new Set();
      value.forEach((row, index) => {
        const rowId = row[ROW_ID_KEY];
        if (typeof rowId !== "string" || !rowId || rowId.includes(SEPARATOR)) {
          throw new PathError(
            "bad_row_id",
            `repeat row at ${path}[${index}] needs a string '_id' without '/'`,
            `${path}[${index}] 处的重复组行缺少有效的 _id`,
          );
        }
        if (seen.has(rowId)) {
          throw new PathError("duplicate_row_id", `two rows of ${path} share the id '${rowId}'`, `${path} 中有两行使用相同的 _id：${rowId}`);
        }
        seen.add(rowId);
        const rowPath = `${path}${SEPARATOR}${rowId}`;
        flat[`${rowPath}${SEPARATOR}${ORDER_KEY}`] = index;
        flattenInto(flat, row, rowPath + SEPARATOR);
      });
    } else {
      flat[path] = value;
    }
  }
}

const newNode = () => ({ values: new Map(), repeats: new Map(), order: null });

// Rebuild record data from a flat map: rows ordered by `_order` (rows without one last), then id.
export function unflatten(flat, { isTombstone = (v) => v === null } = {}) {
  const root = newNode();
  const deleted = new Set();
  for (const [path, value] of Object.entries(flat)) {
    if (splitPath(path).length % 2 === 0 && isTombstone(value)) deleted.add(path);
  }
  for (const [path, value] of Object.entries(flat)) {
    const segments = splitPath(path);
    let gone = false;
    for (let end = 2; end <= segments.length; end += 2) {
      if (deleted.has(segments.slice(0, end).join(SEPARATOR))) gone = true;
    }
    if (gone) continue;
    let node = root;
    for (let i = 0; i < segments.length - 1; i += 2) {
      if (!node.repeats.has(segments[i])) node.repeats.set(segments[i], new Map());
      const rows = node.repeats.get(segments[i]);
      if (!rows.has(segments[i + 1])) rows.set(segments[i + 1], newNode());
      node = rows.get(segments[i + 1]);
    }
    if (segments.length % 2 === 0) continue; // a live row marker
    const last = segments[segments.length - 1];
    if (last === ORDER_KEY && segments.length > 1) node.order = value;
    else node.values.set(last, value);
  }
  return build(root, "");
}

function orderKey([rowId, node]) {
  const order = node.order;
  return typeof order === "number" ? [0, order, rowId] : [1, 0, rowId];
}

function compareKeys(a, b) {
  const x = orderKey(a);
  const y = orderKey(b);
  for (let i = 0; i < 3; i += 1) {
    if (x[i] < y[i]) return -1;
    if (x[i] > y[i]) return 1;
  }
  return 0;
}

function build(node, where) {
  const out = {};
  for (const [key, value] of node.values) out[key] = value;
  for (const [name, rows] of node.repeats) {
    const existing = out[name];
    if (name in out && existing !== null && !(Array.isArray(existing) && existing.length === 0)) {
      throw new PathError("value_and_rows", `${where}${name} holds both a value and repeat rows`, `${where}${name} 同时有值和重复组行`);
    }
    const built = [...rows.entries()]
      .sort(compareKeys)
      .map(([rowId, rowNode]) => ({ [ROW_ID_KEY]: rowId, ...build(rowNode, `${where}${name}/${rowId}/`) }));
    if (built.length) out[name] = built;
  }
  return out;
}
