// Record validation: a port of forms/validation.py, so a tablet finds exactly the issues the
// server will (same codes, paths with row ids, row numbers, zh/en messages, severities) and
// produces the same cleaned record: values coerced to their field type, answers of fields that
// are not relevant removed, calculations computed, unknown keys kept as they came.
import { PlainDate, isIsoDateText } from "./dates.js";
import {
  Environment,
  EvaluationError,
  evaluationContext,
  numberText,
  parseExpression,
  pyRepr,
  truthy,
} from "./expressions.js";
import * as identity from "./identity.js";
import { readDefinition, localized } from "./definition.js";
import { ROW_ID_KEY } from "./paths.js";

const IMAGE = /^sha256:[0-9a-fA-F]{64}$/;
const INTEGER_TEXT = /^[+-]?[0-9]+$/;
const DECIMAL_TEXT = /^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$/;
const GEOPOINT_KEYS = ["lat", "lon", "alt", "accuracy"];
const TIME = /^([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.[0-9]{1,6})?)?(?:Z|[+-][0-9]{2}:?[0-9]{2})?$/;
// What Python's datetime.fromisoformat reads after the YYYY-MM-DD[T ]HH:MM start it requires.
const DATETIME =
  /^([0-9]{4})-([0-9]{2})-([0-9]{2})[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.,][0-9]+)?)?(?:Z|[+-]([0-9]{2})(?:(?::([0-9]{2})(?::([0-9]{2})(?:[.,][0-9]+)?)?)|(?:([0-9]{2})(?:([0-9]{2})(?:[.,][0-9]+)?)?))?)?$/;
// Recorded as content-addressed attachments, like a photo (contracts §3): [zh, en] names.
const ATTACHMENT_TYPES = { image: ["图片", "image"], audio: ["录音", "audio"], video: ["视频", "video"], file: ["文件", "file"] };
const MAX_POINTS = 5000; // points of one geotrace/geoshape

const text = (zh, en) => ({ zh, en });
const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v) && !(v instanceof PlainDate);
const isEmpty = (v) => v === null || v === undefined || v === "" || (Array.isArray(v) && v.length === 0);

class Problem extends Error {
  constructor(code, zh, en) {
    super(en);
    this.code = code;
    this.text = text(zh, en);
  }
}

function typeProblem(zhType, enType, value) {
  let shown = pyRepr(value);
  if ([...shown].length > 60) shown = `${[...shown].slice(0, 57).join("")}...`;
  return new Problem("type", `应填写${zhType}，实际为 ${shown}`, `expected ${enType}, got ${shown}`);
}

const labelZh = (fld) => (fld.label ? fld.label.zh : fld.name);
const labelEn = (fld) => (fld.label ? fld.label.en ?? fld.name : fld.name);

// A typed number as ASCII: full-width digits, sign and point folded (what Chinese input
// methods type, １２．５), spaces trimmed.
const numberTextOf = (value) => value.normalize("NFKC").trim();

function integer(value) {
  if (typeof value === "number" && Number.isInteger(value)) return value;
  if (typeof value === "string") {
    const t = numberTextOf(value);
    if (INTEGER_TEXT.test(t) && t.length <= 30) return Number(t);
  }
  throw typeProblem("整数", "a whole number", value);
}

function decimalNumber(value) {
  if (typeof value === "number" && Number.isFinite(value)) return value;
  if (typeof value === "string") {
    const t = numberTextOf(value);
    if (DECIMAL_TEXT.test(t) && t.length <= 30) return Number(t);
  }
  throw typeProblem("数字", "a number", value);
}

// A whole number typed beyond 2^53 has no exact JavaScript number: the record keeps the digits
// as typed (the server's validation reads them exactly) rather than store other digits.
function exactJson(value, n) {
  return typeof value === "string" && !Number.isSafeInteger(n) && Number.isInteger(n) ? numberTextOf(value) : n;
}

function choiceValue(value) {
  if (typeof value === "string") return value;
  if (typeof value === "number" && Number.isInteger(value)) return String(value);
  throw typeProblem("选项值", "a choice value", value);
}

function knownChoice(defn, fld, value) {
  if (!defn.choicesOf(fld).some((c) => c.value === value)) {
    throw new Problem("choice", `“${value}”不是本题的选项`, `${pyRepr(value)} is not one of the choices of ${fld.name}`);
  }
}

// Any Unicode decimal digit as its ASCII digit (what Python's float() reads: １２ is 12).
// Decimal digits come in runs of ten from zero, so the digit is the distance to its run's zero.
function asciiDigits(text) {
  return text.replace(/\p{Nd}/gu, (ch) => {
    let code = ch.codePointAt(0);
    let start = code;
    while (/\p{Nd}/u.test(String.fromCodePoint(start - 1))) start -= 1;
    return String((code - start) % 10);
  });
}

// Python's float() of a text: digits (any script, '_' between them), point, exponent, or
// nan/inf/infinity; null where float() refuses.
function pyFloat(text) {
  const t = asciiDigits(text.trim());
  if (/^[+-]?(nan|inf|infinity)$/i.test(t)) {
    if (/nan/i.test(t)) return NaN;
    return t.startsWith("-") ? -Infinity : Infinity;
  }
  const digits = "\\d(?:_?\\d)*";
  const pattern = new RegExp(`^[+-]?(?:${digits}(?:\\.(?:${digits})?)?|\\.${digits})(?:[eE][+-]?${digits})?$`);
  return pattern.test(t) ? Number(t.replaceAll("_", "")) : null;
}

function geopoint(value) {
  if (typeof value === "string") {
    const parts = value.split(/\s+/u).filter(Boolean);
    if (parts.length >= 2 && parts.length <= 4) {
      const numbers = parts.map(pyFloat);
      if (numbers.some((n) => n === null)) throw typeProblem("坐标", "a geopoint", value);
      value = Object.fromEntries(numbers.map((n, i) => [GEOPOINT_KEYS[i], n]));
    }
  }
  if (!isObject(value) || !("lat" in value && "lon" in value) || Object.keys(value).some((k) => !GEOPOINT_KEYS.includes(k))) {
    throw typeProblem("坐标 {lat, lon, alt?, accuracy?}", "a geopoint {lat, lon, alt?, accuracy?}", value);
  }
  const point = {};
  for (const key of GEOPOINT_KEYS) {
    if (!(key in value)) continue;
    const number = value[key];
    if (typeof number !== "number" || !Number.isFinite(number)) throw typeProblem("坐标数值", `a number for ${key}`, number);
    point[key] = number;
  }
  if (!(point.lat >= -90 && point.lat <= 90) || !(point.lon >= -180 && point.lon <= 180)) {
    throw new Problem("range", "坐标超出范围（纬度±90，经度±180）", "lat must be within ±90 and lon within ±180");
  }
  if ((point.accuracy ?? 0) < 0) throw new Problem("range", "定位精度不能为负数", "accuracy cannot be negative");
  return point;
}

// A geotrace/geoshape: ODK's "lat lon alt acc;lat lon alt acc" text, or a list of points (each
// a geopoint text or object) → a list of geopoint objects.
function points(value) {
  let parts;
  if (typeof value === "string") parts = value.split(";").filter((p) => p.trim());
  else if (Array.isArray(value)) parts = [...value];
  else throw typeProblem("坐标点列表", "a list of points", value);
  if (parts.length > MAX_POINTS) throw new Problem("type", `最多 ${MAX_POINTS} 个点`, `at most ${MAX_POINTS} points`);
  return parts.map(geopoint);
}

// [typed (as expressions see it), cleaned (JSON)] for a non-empty value, or throw Problem.
function coerce(defn, fld, value) {
  switch (fld.type) {
    case "text":
      if (typeof value === "string") return [value, value];
      if (typeof value === "number" && Number.isFinite(value)) return [numberText(value), numberText(value)];
      throw typeProblem("文本", "text", value);
    case "integer": {
      const n = integer(value);
      return [n, exactJson(value, n)];
    }
    case "decimal": {
      const n = decimalNumber(value);
      return [n, exactJson(value, n)];
    }
    case "date": {
      if (value instanceof PlainDate) return [value, value.iso];
      if (typeof value === "string" && isIsoDateText(value.trim())) {
        const parsed = PlainDate.parse(value.trim());
        if (parsed === null) throw new Problem("type", `${value} 不是有效日期`, `${pyRepr(value)} is not a real date`);
        return [parsed, parsed.iso];
      }
      throw typeProblem("日期（YYYY-MM-DD）", "a date YYYY-MM-DD", value);
    }
    case "select_one": {
      const choice = choiceValue(value);
      knownChoice(defn, fld, choice);
      return [choice, choice];
    }
    case "select_multiple": {
      let items;
      if (typeof value === "string") items = value.split(/\s+/u).filter(Boolean);
      else if (Array.isArray(value)) items = value.map(choiceValue);
      else throw typeProblem("选项列表", "a list of choice values", value);
      const chosen = [];
      for (const item of items) {
        knownChoice(defn, fld, item);
        if (!chosen.includes(item)) chosen.push(item); // a repeated answer carries nothing
      }
      return [chosen, [...chosen]];
    }
    case "boolean": {
      if (typeof value === "boolean") return [value, value];
      if (typeof value === "string" && ["true", "false"].includes(value.trim().toLowerCase())) {
        const flag = value.trim().toLowerCase() === "true";
        return [flag, flag];
      }
      if (value === 0 || value === 1) return [value === 1, value === 1];
      throw typeProblem("是/否", "true or false", value);
    }
    case "geopoint": {
      const point = geopoint(value);
      return [point, point];
    }
    case "image":
    case "audio":
    case "video":
    case "file": {
      if (typeof value === "string" && IMAGE.test(value)) {
        const address = `sha256:${value.slice(7).toLowerCase()}`;
        return [address, address];
      }
      const [zh, en] = ATTACHMENT_TYPES[fld.type];
      throw typeProblem(`${zh}内容地址 sha256:<64位十六进制>`, `an ${en} address sha256:<64 hex>`, value);
    }
    case "time": {
      const t = typeof value === "string" ? value.trim() : null;
      const m = t ? TIME.exec(t) : null;
      if (m === null || Number(m[1]) > 23 || Number(m[2]) > 59 || Number(m[3] || 0) > 59) {
        throw typeProblem("时间（HH:MM 或 HH:MM:SS）", "a time HH:MM[:SS]", value);
      }
      return [t, t];
    }
    case "datetime": {
      const t = typeof value === "string" ? value.trim() : null;
      const m = t === null ? null : DATETIME.exec(t);
      const valid =
        m !== null &&
        PlainDate.fromParts(Number(m[1]), Number(m[2]), Number(m[3])) !== null &&
        Number(m[4]) <= 23 &&
        Number(m[5]) <= 59 &&
        Number(m[6] || 0) <= 59 &&
        // Python takes any zone offset under a day (+08:60 is +09:00).
        Number(m[7] || 0) * 3600 + Number(m[8] || m[10] || 0) * 60 + Number(m[9] || m[11] || 0) < 86400;
      if (!valid) throw typeProblem("日期时间（YYYY-MM-DDTHH:MM[:SS][时区]）", "an ISO date-time", value);
      return [t, t];
    }
    case "geotrace":
    case "geoshape": {
      const pts = points(value);
      const shape = fld.type === "geoshape";
      if (pts.length < (shape ? 4 : 2)) {
        throw new Problem(
          "type",
          shape ? "区域至少需要 4 个点（首尾相同）" : "轨迹至少需要 2 个点",
          `a ${fld.type} needs at least ${shape ? 4 : 2} points`,
        );
      }
      if (shape && (pts[0].lat !== pts[pts.length - 1].lat || pts[0].lon !== pts[pts.length - 1].lon)) {
        throw new Problem("type", "区域的最后一个点必须与第一个点相同", "a geoshape must end where it starts");
      }
      return [pts, pts];
    }
    case "rank": {
      let items;
      if (typeof value === "string") items = value.split(/\s+/u).filter(Boolean);
      else if (Array.isArray(value)) items = value.map(choiceValue);
      else throw typeProblem("排序后的选项列表", "a ranked list of choice values", value);
      for (const item of items) knownChoice(defn, fld, item);
      if (new Set(items).size !== items.length) throw new Problem("type", "排序中同一选项出现了两次", "a choice is ranked twice");
      return [items, [...items]];
    }
    default:
      throw typeProblem("值", "no value", value);
  }
}

function jsonValue(value) {
  if (value instanceof PlainDate) return value.iso;
  if (Array.isArray(value)) return value.map(jsonValue);
  return value;
}

// A count written as text (a select value '3'): the number, else the text unchanged (Python's
// int(), which also reads full-width digits and surrounding spaces).
function parseCount(value) {
  const t = value.normalize("NFKC").trim().replace(/_/g, "");
  return /^[+-]?[0-9]+$/.test(t) ? Number(t) : value;
}

// A text field whose constraint tests id-valid(.): it holds an ID number.
export function isIdField(fld) {
  return fld.type === "text" && fld.constraint !== null && parseExpression(fld.constraint).appliesToCurrent("id-valid");
}

function standardId(fld, value, today) {
  if (!isIdField(fld) || !(typeof value === "string" || typeof value === "number")) return null;
  try {
    return identity.parseIdNumber(value, today).number;
  } catch (error) {
    if (error instanceof identity.IdNumberError) return null;
    throw error;
  }
}

function computedOnce(fld) {
  if (!fld.calculate) return false;
  const root = parseExpression(fld.calculate).root;
  return root.type === "call" && root.name === "once";
}

const isScalar = (v) => (typeof v === "string" && v !== "") || typeof v === "number";

function issueOf(code, path, field, row, message, severity = "error", check = null) {
  const out = { code, path, row, field, message: localized(message), severity };
  if (check !== null) out.check = check;
  return out;
}

class Validator {
  constructor(defn, context) {
    this.defn = defn;
    this.context = context;
    this.errors = [];
    this.warnings = [];
    this.levelNames = { "": new Set(defn.fields.map((f) => f.name)) };
    for (const [path, fld] of defn.index) {
      if (fld.type === "repeat") this.levelNames[path] = new Set(fld.fields.map((f) => f.name));
    }
    this.topTyped = {};
    this.hidden = new Set(); // fields found not relevant: their answers are dropped
    this.notShown = new Set(); // those and the ones whose relevance reads an unknown value
    // Values that could not be determined (unreadable, failed constraint, required but missing,
    // or computed from such): typed dict → names. A relevance reading one that comes out false
    // is unknown, and the answers it governs are kept.
    this.unknown = new Map();
    this.rowMeta = new Map(); // typed row → [1-based position, path prefix, cleaned row]
    this.numbers = new Map(); // typed dict → Map(name → number sent for a text field)
    this.pending = new Map(); // data path → type issues waiting for relevance
    // inspectRecord only (a form on screen): data path → choice values a choice_filter offers
    // now, and repeat path → the row count its repeat_count asks for.
    this.offers = null;
    this.counts = null;
  }

  add(issue) {
    (issue.severity === "error" ? this.errors : this.warnings).push(issue);
  }

  issue(code, level, name, message, severity = "error", { path = null, check = null } = {}) {
    this.add(issueOf(code, path ?? level.prefix + name, name, level.row, message, severity, check));
  }

  env(level, current = null) {
    if (!level.env) {
      let env = new Environment(this.topTyped, null, this.context, this.levelNames, [], null, this.defn.choiceLabels(), this.defn.tables);
      for (const [repeatPath, row] of level.rows) env = env.inRow(repeatPath, row);
      level.env = env;
    }
    return current !== null && current !== undefined ? level.env.withCurrent(current) : level.env;
  }

  evaluate(source, level, name, attribute, current) {
    try {
      return parseExpression(source).evaluate(this.env(level, current));
    } catch (error) {
      if (error instanceof EvaluationError) {
        this.issue(
          "evaluation",
          level,
          name,
          text(
            `表单的${attribute}表达式无法计算：${error.messageZh}`,
            `the ${attribute} expression of ${name} could not be evaluated: ${error.message}`,
          ),
          "warning",
        );
      }
      throw error;
    }
  }

  markUnknown(level, name) {
    if (!this.unknown.has(level.typed)) this.unknown.set(level.typed, new Set());
    this.unknown.get(level.typed).add(name);
  }

  isUnknown(values, name) {
    return this.unknown.get(values)?.has(name) ?? false;
  }

  resolve(name, scopes) {
    return scopes.find(([schema]) => Object.hasOwn(this.levelNames, schema) && this.levelNames[schema].has(name)) || null;
  }

  dependsOnUnknown(source, level) {
    if (this.unknown.size === 0) return false;
    const base = [...[...level.rows].reverse(), ["", this.topTyped]];
    for (const ref of parseExpression(source).references()) {
      let chains = [base];
      for (const repeat of ref.via) {
        const deeper = [];
        for (const chain of chains) {
          const found = this.resolve(repeat, chain);
          if (found === null) continue;
          const [schema, values] = found;
          if (this.isUnknown(values, repeat)) return true;
          const rows = values[repeat];
          const inner = schema ? `${schema}/${repeat}` : repeat;
          if (Array.isArray(rows)) for (const row of rows) deeper.push([[inner, row], ...chain]);
        }
        chains = deeper;
      }
      for (const chain of chains) {
        const found = this.resolve(ref.name, chain);
        if (found !== null && this.isUnknown(found[1], ref.name)) return true;
      }
    }
    return false;
  }

  // Phase 1: types, row ids, unknown keys.
  readLevel(fields, data, level) {
    const known = new Map(fields.map((f) => [f.name, f]));
    for (const [key, value] of Object.entries(data)) {
      if (level.row !== null && key === ROW_ID_KEY) continue;
      const fld = known.get(key);
      if (fld === undefined) {
        level.cleaned[key] = value;
        this.issue(
          "unknown_field",
          level,
          key,
          text(`表单中没有字段“${key}”，已原样保留`, `the form has no field ${pyRepr(key)}; the value is kept as it came`),
          "warning",
        );
        continue;
      }
      if (fld.type === "calculate" && computedOnce(fld) && isScalar(value)) {
        level.typed[key] = value; // once(): the value the tablet computed stands
        continue;
      }
      if (fld.type === "note" || fld.type === "calculate" || isEmpty(value)) continue;
      if (fld.type === "repeat") {
        this.readRows(fld, value, level);
        continue;
      }
      let typed;
      let cleaned;
      try {
        [typed, cleaned] = coerce(this.defn, fld, value);
      } catch (problem) {
        if (!(problem instanceof Problem)) throw problem;
        level.cleaned[key] = value; // keep what was typed; the error says what is wrong
        this.defer(level.prefix + key, issueOf(problem.code, level.prefix + key, key, level.row, problem.text));
        continue;
      }
      if (isEmpty(cleaned)) continue;
      level.typed[key] = typed;
      level.cleaned[key] = cleaned;
      if (fld.type === "text" && typeof value !== "string") {
        if (!this.numbers.has(level.typed)) this.numbers.set(level.typed, new Map());
        this.numbers.get(level.typed).set(key, value);
      }
    }
  }

  readRows(fld, value, level) {
    const path = level.prefix + fld.name;
    const schema = level.schemaPath ? `${level.schemaPath}/${fld.name}` : fld.name;
    if (!Array.isArray(value)) {
      level.cleaned[fld.name] = value;
      const problem = typeProblem("行列表", "a list of rows", value);
      this.defer(path, issueOf("type", path, fld.name, level.row, problem.text));
      return;
    }
    const typedRows = [];
    const cleanedRows = [];
    const seen = new Set();
    value.forEach((row, i) => {
      const index = i + 1;
      if (!isObject(row)) {
        cleanedRows.push(row);
        this.defer(path, issueOf("type", `${path}/#${index}`, fld.name, index, text(`第 ${index} 行不是对象`, `row ${index} is not an object`)));
        return;
      }
      const rowId = Object.hasOwn(row, ROW_ID_KEY) ? row[ROW_ID_KEY] : null;
      const usable = typeof rowId === "string" && rowId !== "" && !rowId.includes("/") && !seen.has(rowId);
      if (!usable) {
        this.defer(
          path,
          issueOf(
            "row_id",
            `${path}/#${index}`,
            fld.name,
            index,
            text(`第 ${index} 行缺少唯一的行标识 _id`, `row ${index} needs a unique string _id without '/'`),
          ),
        );
      }
      const prefix = usable ? `${path}/${rowId}/` : `${path}/#${index}/`;
      if (usable) seen.add(rowId);
      const typedRow = { [ROW_ID_KEY]: rowId };
      const cleanedRow = Object.hasOwn(row, ROW_ID_KEY) ? { [ROW_ID_KEY]: rowId } : {};
      this.rowMeta.set(typedRow, [index, prefix, cleanedRow]);
      this.readLevel(fld.fields, row, { schemaPath: schema, prefix, row: index, typed: typedRow, cleaned: cleanedRow, rows: [] });
      typedRows.push(typedRow);
      cleanedRows.push(cleanedRow);
    });
    level.typed[fld.name] = typedRows;
    level.cleaned[fld.name] = cleanedRows;
  }

  defer(path, issue) {
    if (!this.pending.has(path)) this.pending.set(path, []);
    this.pending.get(path).push(issue);
  }

  // Phase 2: relevance, calculations, required, constraints, rows.
  walkLevel(level) {
    for (const fld of this.defn.evaluationOrder(level.schemaPath)) {
      const path = level.prefix + fld.name;
      const deferred = this.pending.get(path) || [];
      this.pending.delete(path);
      let unsure = false;
      if (fld.relevant !== null) {
        let shown;
        try {
          shown = truthy(this.evaluate(fld.relevant, level, fld.name, "relevant", level.typed[fld.name] ?? null));
        } catch (error) {
          if (!(error instanceof EvaluationError)) throw error;
          shown = true; // cannot tell: keep the answer rather than lose it
        }
        if (!shown) {
          this.notShown.add(path);
          if (!this.dependsOnUnknown(fld.relevant, level)) {
            this.hidden.add(path);
            delete level.typed[fld.name];
            delete level.cleaned[fld.name];
            continue;
          }
          unsure = true;
        }
      }
      for (const issue of deferred) this.add(issue);
      if (deferred.length && !Object.hasOwn(level.typed, fld.name)) {
        this.markUnknown(level, fld.name);
        continue; // a value of the wrong type: its other rules would only repeat that
      }
      if (fld.calculate !== null) this.calculate(fld, level);
      if (fld.type === "repeat") {
        this.walkRows(fld, level, unsure);
        continue;
      }
      const value = level.typed[fld.name] ?? null;
      if (this.offers !== null && fld.choiceFilter !== null) this.offers[path] = this.offeredChoices(fld, level, value);
      if (isEmpty(value)) {
        if (Object.hasOwn(level.cleaned, fld.name)) continue;
        const required = unsure ? null : this.requirement(fld, level);
        if (required === null) this.markUnknown(level, fld.name);
        else if (required) {
          this.markUnknown(level, fld.name);
          this.issue(
            "required",
            level,
            fld.name,
            fld.requiredMessage || text(`“${labelZh(fld)}”为必填项`, `${labelEn(fld)} is required`),
          );
        }
        continue;
      }
      if (fld.choiceFilter !== null && !this.choicesOffered(fld, level, value)) continue;
      if (fld.constraint !== null) {
        let passed;
        try {
          passed = truthy(this.evaluate(fld.constraint, level, fld.name, "constraint", value));
        } catch (error) {
          if (!(error instanceof EvaluationError)) throw error;
          continue;
        }
        if (passed) this.standardiseId(fld, level);
        else {
          this.markUnknown(level, fld.name);
          const message =
            this.idProblem(fld, level) ||
            fld.constraintMessage ||
            text(`“${labelZh(fld)}”填写的值不符合要求`, `the value of ${labelEn(fld)} does not meet its constraint`);
          this.issue("constraint", level, fld.name, message);
        }
      }
    }
  }

  // Whether every answer of a select with a choice_filter is a choice the filter offers given
  // the other answers (reported as `choice` when not). A filter that reads an undetermined
  // value, or cannot be evaluated, decides nothing: the answer is kept.
  choicesOffered(fld, level, value) {
    const source = fld.choiceFilter;
    if (this.dependsOnUnknown(source, level)) return true;
    const byValue = new Map(this.defn.choicesOf(fld).map((c) => [c.value, c]));
    const refused = [];
    for (const answer of Array.isArray(value) ? value : [value]) {
      const choice = byValue.get(answer);
      if (choice === undefined) continue; // reported by the type pass
      const env = this.env(level, value).withChoice({ ...choice.filters, name: choice.value });
      let offered;
      try {
        offered = parseExpression(source).isTrue(env);
      } catch (error) {
        if (!(error instanceof EvaluationError)) throw error;
        this.issue(
          "evaluation",
          level,
          fld.name,
          text(
            `表单的choice_filter表达式无法计算：${error.messageZh}`,
            `the choice_filter expression of ${fld.name} could not be evaluated: ${error.message}`,
          ),
          "warning",
        );
        return true;
      }
      if (!offered) refused.push(answer);
    }
    if (refused.length === 0) return true;
    this.markUnknown(level, fld.name);
    this.issue(
      "choice",
      level,
      fld.name,
      text(
        `按已填的答案，“${labelZh(fld)}”不能选 ${refused.join("、")}`,
        `${refused.map(pyRepr).join(", ")} is not offered for ${labelEn(fld)} given the other answers`,
      ),
    );
    return false;
  }

  // The choice values a choice_filter offers given the other answers (for the screen; no
  // issue is raised here). A filter reading an undetermined value, or failing, offers all.
  offeredChoices(fld, level, value) {
    const choices = this.defn.choicesOf(fld).map((c) => c.value);
    if (this.dependsOnUnknown(fld.choiceFilter, level)) return choices;
    const expression = parseExpression(fld.choiceFilter);
    const env = this.env(level, value);
    try {
      return this.defn
        .choicesOf(fld)
        .filter((c) => expression.isTrue(env.withChoice({ ...c.filters, name: c.value })))
        .map((c) => c.value);
    } catch (error) {
      if (!(error instanceof EvaluationError)) throw error;
      return choices;
    }
  }

  // An accepted ID number is stored in standard form (ASCII digits, upper-case X), so one
  // person has one spelling; calculations later in the order read it too (forms/validation.py).
  standardiseId(fld, level) {
    const standard = standardId(fld, level.typed[fld.name], this.context.today);
    if (standard !== null) {
      level.typed[fld.name] = standard;
      level.cleaned[fld.name] = standard;
    }
  }

  // What exactly is wrong with an ID number whose id-valid(.) constraint failed.
  idProblem(fld, level) {
    if (fld.constraint === null || !parseExpression(fld.constraint).appliesToCurrent("id-valid")) return null;
    const sent = this.numbers.get(level.typed);
    const value = sent?.has(fld.name) ? sent.get(fld.name) : level.typed[fld.name];
    if (!(typeof value === "string" || typeof value === "number")) return null;
    try {
      identity.parseIdNumber(value, this.context.today);
    } catch (error) {
      if (!(error instanceof identity.IdNumberError)) throw error;
      let reason = error.messageZh;
      if (reason.startsWith("身份证号") && !reason.startsWith("身份证号中")) reason = reason.slice(4);
      return text(`身份证号无效：${reason}`, `invalid ID number: ${error.messageEn}`);
    }
    return null;
  }

  requirement(fld, level) {
    if (typeof fld.required === "boolean") return fld.required;
    let required;
    try {
      required = truthy(this.evaluate(fld.required, level, fld.name, "required", null));
    } catch (error) {
      if (!(error instanceof EvaluationError)) throw error;
      return false;
    }
    if (!required && this.dependsOnUnknown(fld.required, level)) return null;
    return required;
  }

  calculate(fld, level) {
    let value;
    try {
      value = this.evaluate(fld.calculate, level, fld.name, "calculate", level.typed[fld.name] ?? null);
    } catch (error) {
      if (!(error instanceof EvaluationError)) throw error;
      delete level.typed[fld.name];
      delete level.cleaned[fld.name];
      this.markUnknown(level, fld.name);
      return;
    }
    if (this.dependsOnUnknown(fld.calculate, level)) this.markUnknown(level, fld.name);
    if (isEmpty(value)) {
      delete level.typed[fld.name];
      delete level.cleaned[fld.name];
      return;
    }
    let typed;
    let cleaned;
    if (fld.type === "calculate") [typed, cleaned] = [value, jsonValue(value)];
    else {
      try {
        [typed, cleaned] = coerce(this.defn, fld, jsonValue(value));
      } catch (problem) {
        if (!(problem instanceof Problem)) throw problem;
        this.issue(
          "evaluation",
          level,
          fld.name,
          text(`计算结果不符合字段类型：${problem.text.zh}`, `the calculated value does not fit the field: ${problem.text.en}`),
          "warning",
        );
        return;
      }
    }
    level.typed[fld.name] = typed;
    level.cleaned[fld.name] = cleaned;
  }

  walkRows(fld, level, unsure = false) {
    const rows = Array.isArray(level.typed[fld.name]) ? level.typed[fld.name] : [];
    const count = rows.length;
    let required = false;
    if (count === 0) {
      required = unsure ? null : this.requirement(fld, level);
      if (required !== false) this.markUnknown(level, fld.name);
    }
    if (required) {
      this.issue("required", level, fld.name, text(`“${labelZh(fld)}”至少需要填写一行`, `${labelEn(fld)} needs at least one row`));
    } else if (!unsure && fld.minRows !== null && count < fld.minRows) {
      this.issue("rows", level, fld.name, text(`至少需要 ${fld.minRows} 行，实际 ${count} 行`, `${fld.name} needs at least ${fld.minRows} rows, has ${count}`));
    }
    const expected = unsure ? null : this.repeatCount(fld, level);
    if (this.counts !== null && expected !== null) this.counts[level.prefix + fld.name] = expected;
    if (expected !== null && count !== expected) {
      this.issue(
        "rows",
        level,
        fld.name,
        text(`按 repeat_count 应为 ${expected} 行，实际 ${count} 行`, `${fld.name} needs exactly ${expected} rows (its repeat_count), has ${count}`),
      );
    }
    if (fld.maxRows !== null && count > fld.maxRows) {
      this.issue("rows", level, fld.name, text(`最多 ${fld.maxRows} 行，实际 ${count} 行`, `${fld.name} allows at most ${fld.maxRows} rows, has ${count}`));
    }
    const schema = level.schemaPath ? `${level.schemaPath}/${fld.name}` : fld.name;
    for (const child of this.rowLevels(level, rows, schema)) this.walkLevel(child);
  }

  // The number of rows a computed repeat_count asks for; null when there is none, it reads an
  // undetermined value, is empty or is not a whole number >= 0 (an evaluation warning).
  repeatCount(fld, level) {
    if (fld.repeatCount === null) return null;
    let value;
    try {
      value = this.evaluate(fld.repeatCount, level, fld.name, "repeat_count", null);
    } catch (error) {
      if (!(error instanceof EvaluationError)) throw error;
      return null;
    }
    if (this.dependsOnUnknown(fld.repeatCount, level) || value === null) return null;
    if (typeof value === "string") value = parseCount(value);
    if (typeof value !== "number" || !Number.isInteger(value) || value < 0) {
      this.issue(
        "evaluation",
        level,
        fld.name,
        text(`repeat_count 的结果不是不小于 0 的整数：${pyRepr(value)}`, `the repeat_count of ${fld.name} is not a whole number >= 0: ${pyRepr(value)}`),
        "warning",
      );
      return null;
    }
    return value;
  }

  rowLevels(level, rows, schema) {
    return rows.map((typedRow) => {
      const [index, prefix, cleanedRow] = this.rowMeta.get(typedRow);
      return { schemaPath: schema, prefix, row: index, typed: typedRow, cleaned: cleanedRow, rows: [...level.rows, [schema, typedRow]] };
    });
  }

  // Phase 3: checks.
  runCheck(check, top) {
    const levels = check.field === null || !check.field.includes("/") ? [top] : this.levelsFor(check.field.split("/").slice(0, -1), top);
    const name = check.field ? check.field.split("/").pop() : "";
    for (const level of levels) {
      if (check.field !== null && this.hidden.has(level.prefix + name)) continue;
      let passed;
      try {
        passed = parseExpression(check.rule).isTrue(this.env(level));
      } catch (error) {
        if (!(error instanceof EvaluationError)) throw error;
        this.issue(
          "evaluation",
          level,
          name,
          text(`检查规则 ${check.id} 无法计算：${error.messageZh}`, `check ${check.id} could not be evaluated: ${error.message}`),
          "warning",
          { check: check.id },
        );
        continue;
      }
      if (!passed) this.issue("check", level, name, check.message, check.severity, { check: check.id });
    }
  }

  levelsFor(repeats, top) {
    let levels = [top];
    let fields = this.defn.fields;
    for (const name of repeats) {
      const fld = fields.find((f) => f.name === name);
      const next = [];
      for (const level of levels) {
        if (this.hidden.has(level.prefix + name)) continue;
        const schema = level.schemaPath ? `${level.schemaPath}/${name}` : name;
        const rows = level.typed[name];
        if (Array.isArray(rows)) next.push(...this.rowLevels(level, rows, schema));
      }
      levels = next;
      fields = fld.fields;
    }
    return levels;
  }
}

function run(definition, data, options, inspect = false) {
  const defn = readDefinition(definition);
  const context = options.today && options.today.iso ? options : evaluationContext(options);
  const validator = new Validator(defn, context);
  if (inspect) [validator.offers, validator.counts] = [{}, {}];
  if (!isObject(data)) {
    validator.add(issueOf("type", "", "", null, text("记录数据应为对象（字段名→值）", "record data must be an object (field → value)")));
    return { validator, cleaned: {} };
  }
  const top = { schemaPath: "", prefix: "", row: null, typed: validator.topTyped, cleaned: {}, rows: [] };
  validator.readLevel(defn.fields, data, top);
  validator.walkLevel(top);
  for (const check of defn.checks) validator.runCheck(check, top);
  return { validator, cleaned: top.cleaned };
}

// Validate a record's data against the definition (a document or a Definition) it was made
// with. Never throws for bad data. options: {today, config, now} (see evaluationContext).
// → {errors, warnings, cleaned}; each issue is the JSON shape of contracts §3.
export function validateRecord(definition, data, options = {}) {
  const { validator, cleaned } = run(definition, data, options);
  return { errors: validator.errors, warnings: validator.warnings, cleaned };
}

// validateRecord plus what a form on screen needs: `hidden`, the data paths of the questions
// whose relevance is false now. It includes those whose relevance reads a value still missing
// or wrong (an ungraded house hides its appraisal date), whose answers `cleaned` nevertheless
// keeps: they are not known to be stale. `offered`: data path of a select with a choice_filter
// → the choice values it offers now; `rowCounts`: data path of a repeat with a repeat_count →
// the number of rows it asks for (absent while undetermined).
export function inspectRecord(definition, data, options = {}) {
  const { validator, cleaned } = run(definition, data, options, true);
  const { errors, warnings, notShown, offers, counts } = validator;
  return { errors, warnings, cleaned, hidden: [...notShown], offered: offers, rowCounts: counts };
}

// The record `data` with each empty field that has a `default` filled with it: what a tablet
// does when a record (or a repeat row already in `data`) is made. Defaults are evaluated level
// by level in evaluation order, so `${people} - 1` sees the prefilled `people`; a value already
// there is never replaced; a default that cannot be evaluated, is empty or does not fit the
// field's type leaves the field empty. Returns a new object (forms/validation.py prefill).
export function prefill(definition, data, options = {}) {
  const defn = readDefinition(definition);
  const context = options.today && options.today.iso ? options : evaluationContext(options);
  const levelNames = { "": new Set(defn.fields.map((f) => f.name)) };
  for (const [path, fld] of defn.index) {
    if (fld.type === "repeat") levelNames[path] = new Set(fld.fields.map((f) => f.name));
  }
  const out = { ...data };
  const top = new Environment(out, null, context, levelNames, [], null, defn.choiceLabels(), defn.tables);
  prefillLevel(defn, "", out, top);
  return out;
}

function prefillLevel(defn, schema, values, env) {
  for (const fld of defn.evaluationOrder(schema)) {
    if (fld.type === "repeat") {
      const rows = values[fld.name];
      if (!Array.isArray(rows)) continue;
      const inner = schema ? `${schema}/${fld.name}` : fld.name;
      values[fld.name] = rows.map((row) => {
        if (!isObject(row)) return row;
        const copy = { ...row };
        prefillLevel(defn, inner, copy, env.inRow(inner, copy));
        return copy;
      });
      continue;
    }
    if (fld.default === null || !isEmpty(values[fld.name] ?? null)) continue;
    try {
      const value = parseExpression(fld.default).evaluate(env);
      if (isEmpty(value)) continue;
      values[fld.name] = coerce(defn, fld, jsonValue(value))[1];
    } catch (error) {
      if (error instanceof EvaluationError || error instanceof Problem) continue;
      throw error;
    }
  }
}
