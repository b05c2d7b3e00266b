// A form definition document (contracts §1) as the engine reads it: the defaults of
// forms/definition.py filled in, an index of schema paths, and the evaluation order of each
// level. The server has already refused invalid definitions; this module trusts the shape.
import { ExpressionError, parseExpression } from "./expressions.js";

// The fields' expressions, by their property names here (forms/definition.py EXPRESSION_ATTRIBUTES).
const EXPRESSION_ATTRIBUTES = ["required", "relevant", "constraint", "calculate", "choiceFilter", "repeatCount", "default"];

// Localized text as a plain map with `zh` first (a plain string means zh).
export function localized(value) {
  if (value === null || value === undefined) return null;
  const texts = typeof value === "string" ? { zh: value } : value;
  const out = { zh: texts.zh };
  for (const key of Object.keys(texts).sort()) if (key !== "zh") out[key] = texts[key];
  return out;
}

function readField(raw) {
  return {
    name: raw.name,
    type: raw.type,
    label: localized(raw.label),
    hint: localized(raw.hint),
    guidanceHint: localized(raw.guidance_hint),
    required: raw.required ?? false,
    relevant: raw.relevant ?? null,
    constraint: raw.constraint ?? null,
    constraintMessage: localized(raw.constraint_message),
    requiredMessage: localized(raw.required_message),
    calculate: raw.calculate ?? null,
    choices: raw.choices ?? null,
    unit: raw.unit ?? null,
    fields: (raw.fields || []).map(readField),
    minRows: raw.min_rows ?? null,
    maxRows: raw.max_rows ?? null,
    choiceFilter: raw.choice_filter ?? null,
    repeatCount: raw.repeat_count ?? null,
    default: raw.default ?? null,
  };
}

export class Definition {
  constructor(doc) {
    this.doc = doc;
    this.id = doc.id;
    this.version = doc.version;
    this.title = localized(doc.title);
    this.fields = doc.fields.map(readField);
    this.choiceLists = {};
    for (const [key, entries] of Object.entries(doc.choice_lists || {})) {
      this.choiceLists[key] = entries.map((c) => ({ value: c.value, label: localized(c.label), filters: c.filters || {} }));
    }
    this.tables = doc.tables || {};
    this.checks = (doc.checks || []).map((c) => ({
      id: c.id,
      rule: c.rule,
      message: localized(c.message),
      severity: c.severity || "error",
      field: c.field ?? null,
    }));
    this.index = new Map();
    const walk = (fields, prefix) => {
      for (const fld of fields) {
        const path = prefix + fld.name;
        this.index.set(path, fld);
        if (fld.fields.length) walk(fld.fields, `${path}/`);
      }
    };
    walk(this.fields, "");
    this.orders = new Map();
    this.labels = {};
    for (const fld of this.index.values()) {
      if (fld.choices !== null) {
        this.labels[fld.name] = Object.fromEntries(this.choicesOf(fld).map((c) => [c.value, c.label.zh]));
      }
    }
  }

  // Field name → choice value → its Chinese label, for every select/rank field (what
  // jr:choice-name(${x}, '${x}') reads).
  choiceLabels() {
    return this.labels;
  }

  // Every language any text of the form is written in, zh first.
  languages() {
    const found = new Set(["zh"]);
    const add = (text) => text && Object.keys(text).forEach((k) => found.add(k));
    add(this.title);
    for (const fld of this.index.values()) [fld.label, fld.hint, fld.constraintMessage].forEach(add);
    for (const list of Object.values(this.choiceLists)) list.forEach((c) => add(c.label));
    return [...found];
  }

  fieldAt(schemaPath) {
    return this.index.get(schemaPath) || null;
  }

  choicesOf(fld) {
    return fld.choices === null ? [] : this.choiceLists[fld.choices] || [];
  }

  // The fields of one level ("" or a repeat's schema path) in evaluation order: after the
  // fields of that level their expressions (and those inside them) read; else document order.
  evaluationOrder(level = "") {
    if (!this.orders.has(level)) this.orders.set(level, this.computeOrder(level));
    return this.orders.get(level);
  }

  computeOrder(level) {
    const fields = level ? this.fieldAt(level).fields : this.fields;
    const prefix = level ? level.split("/") : [];
    const depth = prefix.length;
    const names = fields.map((f) => f.name);
    const needs = new Map(names.map((n) => [n, new Set()]));
    for (const name of names) {
      const own = level ? `${level}/${name}` : name;
      for (const [path, fld] of this.index) {
        if (path !== own && !path.startsWith(`${own}/`)) continue;
        for (const target of this.readPaths(path, fld)) {
          const parts = target.split("/");
          if (parts.length > depth && prefix.every((p, i) => parts[i] === p)) {
            const sibling = parts[depth];
            if (sibling !== name && needs.has(sibling)) needs.get(name).add(sibling);
          }
        }
      }
    }
    const order = [];
    const placed = new Set();
    while (order.length < names.length) {
      const ready = names.filter((n) => !placed.has(n) && [...needs.get(n)].every((d) => placed.has(d)));
      const first = ready.length ? ready[0] : names.find((n) => !placed.has(n)); // a cycle: document order
      order.push(first);
      placed.add(first);
    }
    return order.map((n) => fields.find((f) => f.name === n));
  }

  readPaths(path, fld) {
    const scope = path.split("/").slice(0, -1);
    const found = [];
    for (const attr of EXPRESSION_ATTRIBUTES) {
      const text = fld[attr];
      if (typeof text !== "string") continue;
      let expression;
      try {
        expression = parseExpression(text);
      } catch (error) {
        if (error instanceof ExpressionError) continue;
        throw error;
      }
      for (const ref of expression.references()) {
        let chain = scope;
        let lost = false;
        for (const repeat of ref.via) {
          const target = this.resolveInScope(chain, repeat);
          if (target === null) {
            lost = true;
            break;
          }
          chain = target.split("/");
        }
        if (lost) continue;
        const target = this.resolveInScope(chain, ref.name);
        if (target !== null) found.push(target);
      }
    }
    return found;
  }

  resolveInScope(scope, name) {
    for (let depth = scope.length; depth >= 0; depth -= 1) {
      const candidate = [...scope.slice(0, depth), name].join("/");
      if (this.fieldAt(candidate)) return candidate;
    }
    return null;
  }
}

const loaded = new WeakMap();

// A Definition from a definition document (memoised per document object).
export function readDefinition(doc) {
  if (doc instanceof Definition) return doc;
  if (!loaded.has(doc)) loaded.set(doc, new Definition(doc));
  return loaded.get(doc);
}
