// The expression language of forms (contracts §2): a port of forms/expressions.py.
// Tokenizer → parser to a small AST → tree-walking evaluator. Nothing here calls eval or
// new Function: a form is data written by county staff, not trusted code.
//
// Values while evaluating: null (empty), boolean, number, string, PlainDate, Array (a
// select_multiple answer or the rows of a repeat). The empty string reads as null.
import * as decimal from "./decimal.js";
import { PlainDate, isIsoDateText } from "./dates.js";
import * as identity from "./identity.js";

export const MAX_LENGTH = 4000;
export const MAX_DEPTH = 40;
export const MAX_HEIGHT = 120;
export const MAX_PATTERN_LENGTH = 200;
const MAX_NUMBER_LENGTH = 30;
const MAX_REGEX_INPUT = 1000;
const MAX_ROUND_DIGITS = 10;

const EXPRESSION_ZH = {
  empty: "表达式为空",
  too_long: "表达式太长",
  too_deep: "表达式嵌套太深或运算符连写太多",
  unexpected_character: "表达式中有无法识别的字符",
  unterminated_string: "字符串缺少结束引号",
  bad_field_reference: "字段引用应写成 ${字段名}",
  bad_number: "数字太长",
  unexpected_token: "表达式格式错误",
  unexpected_end: "表达式不完整",
  unknown_function: "不支持的函数",
  arity: "函数参数个数不对",
  bad_argument: "函数参数有误",
  bad_regex: "正则表达式有误或可能运行过慢",
};

// A parse failure: `code` and the 0-based character `position`, as ExpressionError in Python.
export class ExpressionError extends Error {
  constructor(code, message, position) {
    super(`${message} (at character ${position})`);
    this.code = code;
    this.position = position;
    this.messageZh = `${EXPRESSION_ZH[code] || "表达式格式错误"}（第 ${position + 1} 个字符处）`;
  }
}

// An evaluation failure (type mismatch, bad date, division by zero, ...).
export class EvaluationError extends Error {
  constructor(code, message, messageZh) {
    super(message);
    this.code = code;
    this.messageZh = messageZh || "表达式无法计算";
  }
}

// --- tokens ---------------------------------------------------------------------------------

const OPERATORS = ["!=", "<=", ">=", "=", "<", ">", "+", "-", "*", "/"];
const WORD_OPERATORS = new Set(["and", "or", "div", "mod"]);
const FIELD_NAME = /[A-Za-z_][A-Za-z0-9_]*/y;
const NAME_BODY = /[A-Za-z0-9_-]*/y;
const NUMBER = /[0-9]+(?:\.[0-9]*)?|\.[0-9]+/y;

function matchAt(pattern, text, at) {
  pattern.lastIndex = at;
  const m = pattern.exec(text);
  return m && m.index === at ? m[0] : null;
}

const isDigit = (ch) => ch >= "0" && ch <= "9";

function tokenize(text) {
  const tokens = [];
  const n = text.length;
  let i = 0;
  const push = (kind, tokenText, position, value) =>
    tokens.push({ kind, text: tokenText, position, value });
  while (i < n) {
    const ch = text[i];
    if (" \t\r\n".includes(ch)) {
      i += 1;
    } else if (ch === "$") {
      if (!text.startsWith("${", i)) {
        throw new ExpressionError("bad_field_reference", "'$' must start a field reference ${name}", i);
      }
      const name = matchAt(FIELD_NAME, text, i + 2);
      const end = name ? i + 2 + name.length : i + 2;
      if (!name || end >= n || text[end] !== "}") {
        throw new ExpressionError(
          "bad_field_reference",
          "a field reference is ${name} with a name of letters, digits and _",
          i,
        );
      }
      push("field", text.slice(i, end + 1), i, name);
      i = end + 1;
    } else if (ch === "'" || ch === '"') {
      const end = text.indexOf(ch, i + 1);
      if (end < 0) throw new ExpressionError("unterminated_string", "string literal is not closed", i);
      push("string", text.slice(i, end + 1), i, text.slice(i + 1, end));
      i = end + 1;
    } else if (isDigit(ch) || (ch === "." && i + 1 < n && isDigit(text[i + 1]))) {
      const literal = matchAt(NUMBER, text, i);
      if (literal.length > MAX_NUMBER_LENGTH) {
        throw new ExpressionError("bad_number", `number literal longer than ${MAX_NUMBER_LENGTH} characters`, i);
      }
      push("number", literal, i, Number(literal));
      i += literal.length;
    } else if (ch === ".") {
      push("dot", ".", i);
      i += 1;
    } else if (ch === "(" || ch === ")" || ch === ",") {
      push({ "(": "lparen", ")": "rparen", ",": "comma" }[ch], ch, i);
      i += 1;
    } else {
      const op = OPERATORS.find((o) => text.startsWith(o, i));
      if (op !== undefined) {
        push("op", op, i);
        i += op.length;
      } else if (/[A-Za-z_]/.test(ch)) {
        // "a-b" inside a name is a function name like count-selected; a trailing '-' is not.
        let word = ch + matchAt(NAME_BODY, text, i + 1);
        word = word.replace(/-+$/, "");
        if (word === "jr" && text[i + word.length] === ":") {
          // ODK's namespaced names (jr:choice-name) are one function name.
          word = text.slice(i, i + word.length + 1 + matchAt(NAME_BODY, text, i + word.length + 1).length);
          word = word.replace(/-+$/, "");
        }
        push(WORD_OPERATORS.has(word) ? "op" : "name", word, i);
        i += word.length;
      } else {
        const shown = pyRepr(String.fromCodePoint(text.codePointAt(i)));
        throw new ExpressionError("unexpected_character", `unexpected character ${shown}`, i);
      }
    }
  }
  push("end", "", n);
  return tokens;
}

// --- parser ---------------------------------------------------------------------------------

const BINDING = {
  or: 1, and: 2, "=": 3, "!=": 3, "<": 3, "<=": 3, ">": 3, ">=": 3,
  "+": 4, "-": 4, "*": 5, div: 5, "/": 5, mod: 5,
};

class Parser {
  constructor(text) {
    this.tokens = tokenize(text);
    this.index = 0;
    this.depth = 0;
  }

  // Refuse trees taller than the evaluator should recurse (a long flat chain 1+1+1+…).
  built(node, children, position) {
    const height = 1 + Math.max(0, ...children.map((c) => c.height || 1));
    if (height > MAX_HEIGHT) {
      throw new ExpressionError(
        "too_deep",
        `expression tree taller than ${MAX_HEIGHT} levels (split a long chain of operators)`,
        position,
      );
    }
    node.height = height;
    return node;
  }

  peek() {
    return this.tokens[this.index];
  }

  advance() {
    const token = this.tokens[this.index];
    if (token.kind !== "end") this.index += 1;
    return token;
  }

  expect(kind, what) {
    const token = this.peek();
    if (token.kind !== kind) this.failAt(token, `expected ${what}`);
    return this.advance();
  }

  failAt(token, message) {
    if (token.kind === "end") {
      throw new ExpressionError("unexpected_end", `${message}, but the expression ended`, token.position);
    }
    throw new ExpressionError("unexpected_token", `${message}, found ${pyRepr(token.text)}`, token.position);
  }

  parse() {
    if (this.peek().kind === "end") throw new ExpressionError("empty", "the expression is empty", 0);
    const node = this.expression(0);
    const token = this.peek();
    if (token.kind !== "end") this.failAt(token, "expected an operator or the end of the expression");
    return node;
  }

  enter(position) {
    this.depth += 1;
    if (this.depth > MAX_DEPTH) {
      throw new ExpressionError("too_deep", `nesting deeper than ${MAX_DEPTH} levels`, position);
    }
  }

  expression(minBinding) {
    let left = this.unary();
    for (;;) {
      const token = this.peek();
      if (token.kind !== "op") return left;
      const binding = BINDING[token.text]; // op tokens only: always a key
      if (binding <= minBinding) return left;
      this.advance();
      this.enter(token.position);
      const right = this.expression(binding); // left-associative
      this.depth -= 1;
      const op = token.text === "/" ? "div" : token.text;
      left = this.built(
        { type: "binary", op, left, right, position: token.position },
        [left, right],
        token.position,
      );
    }
  }

  unary() {
    const token = this.peek();
    if (token.kind === "op" && token.text === "-") {
      this.advance();
      this.enter(token.position);
      const operand = this.unary();
      this.depth -= 1;
      return this.built({ type: "unary", operand, position: token.position }, [operand], token.position);
    }
    return this.primary();
  }

  primary() {
    const token = this.advance();
    if (token.kind === "number" || token.kind === "string") {
      return { type: "literal", value: token.value, position: token.position };
    }
    if (token.kind === "field") return { type: "field", name: token.value, position: token.position };
    if (token.kind === "dot") return { type: "current", position: token.position };
    if (token.kind === "lparen") {
      this.enter(token.position);
      const node = this.expression(0);
      this.expect("rparen", "')'");
      this.depth -= 1;
      return node;
    }
    if (token.kind === "name") return this.call(token);
    return this.failAt(token, "expected a value, a field reference ${name} or a function call");
  }

  call(name) {
    const spec = FUNCTIONS[name.text];
    if (this.peek().kind !== "lparen") {
      if (spec !== undefined) this.failAt(this.peek(), `expected '(' after function ${name.text}`);
      throw new ExpressionError(
        "unexpected_token",
        `unknown word ${pyRepr(name.text)} (fields are written \${${name.text}})`,
        name.position,
      );
    }
    if (spec === undefined) {
      throw new ExpressionError("unknown_function", `unknown function ${pyRepr(name.text)}`, name.position);
    }
    const open = this.advance();
    this.enter(open.position);
    const args = [];
    if (this.peek().kind !== "rparen") {
      for (;;) {
        args.push(this.expression(0));
        if (this.peek().kind !== "comma") break;
        this.advance();
      }
    }
    this.expect("rparen", "',' or ')'");
    this.depth -= 1;
    if (args.length < spec.min || (spec.max !== null && args.length > spec.max)) {
      throw new ExpressionError("arity", `${name.text}() takes ${arityText(spec)}, got ${args.length}`, name.position);
    }
    const node = this.built({ type: "call", name: name.text, args, position: name.position }, args, name.position);
    if (spec.check) spec.check(node);
    return node;
  }
}

function arityText(spec) {
  const plural = (n) => `${n} argument${n !== 1 ? "s" : ""}`;
  if (spec.max === spec.min) return plural(spec.min);
  if (spec.max === null) return `at least ${plural(spec.min)}`;
  return `${spec.min} to ${spec.max} arguments`;
}

// --- values -----------------------------------------------------------------------------------

export function truthy(value) {
  if (value === null || value === undefined) return false;
  if (typeof value === "boolean") return value;
  if (typeof value === "number") return value !== 0 && !Number.isNaN(value);
  if (typeof value === "string" || Array.isArray(value)) return value.length > 0;
  return true;
}

const isNumber = (v) => typeof v === "number";
const isDate = (v) => v instanceof PlainDate;

function typeName(value) {
  if (value === null || value === undefined) return "empty";
  if (typeof value === "boolean") return "boolean";
  if (isNumber(value)) return "number";
  if (typeof value === "string") return "text";
  if (isDate(value)) return "date";
  if (Array.isArray(value)) return "list";
  return "dict";
}

function typeError(what, ...values) {
  const kinds = values.map(typeName).join(", ");
  return new EvaluationError("type", `${what} cannot be applied to ${kinds}`, `${what} 不能用于以下类型的值：${kinds}`);
}

// Python's repr() of the values messages quote, so both sides say the same thing.
export function pyRepr(value) {
  if (value === null || value === undefined) return "None";
  if (typeof value === "boolean") return value ? "True" : "False";
  if (typeof value === "number") return numberText(value);
  if (typeof value === "string") {
    const quote = value.includes("'") && !value.includes('"') ? '"' : "'";
    let out = "";
    for (const ch of value) {
      const code = ch.codePointAt(0);
      if (ch === "\\") out += "\\\\";
      else if (ch === quote) out += `\\${quote}`;
      else if (ch === "\n") out += "\\n";
      else if (ch === "\r") out += "\\r";
      else if (ch === "\t") out += "\\t";
      else if (code < 0x20 || code === 0x7f) out += `\\x${code.toString(16).padStart(2, "0")}`;
      else out += ch;
    }
    return quote + out + quote;
  }
  if (isDate(value)) return `datetime.date(${value.year}, ${value.month}, ${value.day})`;
  if (Array.isArray(value)) return `[${value.map(pyRepr).join(", ")}]`;
  const entries = Object.entries(value).map(([k, v]) => `${pyRepr(k)}: ${pyRepr(v)}`);
  return `{${entries.join(", ")}}`;
}

// A number as Python's str() spells it: whole numbers as integers, others as repr() does
// (exponent form below 1e-4 and from 1e16, with a two-digit exponent). JSON integers beyond
// 2^53 are already rounded when JavaScript reads them; a tablet only sends typed text.
export function numberText(value) {
  if (Number.isNaN(value)) return "nan";
  if (!Number.isFinite(value)) return value > 0 ? "inf" : "-inf";
  // A whole number is an int to Python (JSON has no 1.0 apart from 1 once read here).
  if (Number.isInteger(value)) return BigInt(value).toString();
  const [mantissa, exp] = value.toExponential().split("e");
  const exponent = Number(exp);
  if (exponent < -4 || exponent >= 16) {
    const size = String(Math.abs(exponent)).padStart(2, "0");
    return `${mantissa}e${exponent < 0 ? "-" : "+"}${size}`;
  }
  return String(value);
}

function asDate(value, what) {
  if (value === null) return null;
  if (isDate(value)) return value;
  if (isIsoDateText(value)) {
    const parsed = PlainDate.parse(value);
    if (parsed) return parsed;
    throw new EvaluationError("bad_date", `${pyRepr(value)} is not a real date`, `${pyRepr(value)} 不是有效日期`);
  }
  throw typeError(what, value);
}

function asNumber(value, what) {
  if (value === null) return null;
  if (isNumber(value)) return value;
  throw typeError(what, value);
}

function parseNumber(text) {
  const trimmed = text.trim();
  if (!trimmed) return null;
  if (/^[+-]?\d+$/.test(trimmed)) return Number(trimmed);
  // Python's float() grammar: digits with an optional point and exponent, or inf/nan words.
  if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(trimmed)) return null;
  const number = Number(trimmed);
  return Number.isFinite(number) ? number : null;
}

export function asText(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "boolean") return value ? "true" : "false";
  if (isNumber(value)) return numberText(value);
  if (isDate(value)) return value.iso;
  if (Array.isArray(value)) return value.map(asText).join(" ");
  if (typeof value === "string") return value;
  return pyRepr(value);
}

// Python's == between two values of the language (True == 1, lists element by element).
function equal(a, b) {
  if (typeof a === "boolean" && isNumber(b)) return Number(a) === b;
  if (isNumber(a) && typeof b === "boolean") return a === Number(b);
  if (isDate(a) && isDate(b)) return a.compare(b) === 0;
  if (Array.isArray(a) && Array.isArray(b)) {
    return a.length === b.length && a.every((x, i) => equal(x, b[i]));
  }
  if (a && b && typeof a === "object" && typeof b === "object" && !isDate(a) && !isDate(b)) {
    const keys = Object.keys(a);
    return keys.length === Object.keys(b).length && keys.every((k) => k in b && equal(a[k], b[k]));
  }
  return a === b;
}

function sameKind(a, b) {
  if (Array.isArray(a) || Array.isArray(b)) return Array.isArray(a) && Array.isArray(b);
  if (isDate(a) || isDate(b)) return isDate(a) && isDate(b);
  return typeof a === typeof b;
}

function compare(op, a, b) {
  if (Array.isArray(a) && a.length === 0) a = null;
  if (Array.isArray(b) && b.length === 0) b = null;
  if (a === null || b === null) {
    // Only "is it empty?" has an answer: ${x} = '' / ${x} != ''.
    const other = a === null ? b : a;
    if (other === "" && (op === "=" || op === "!=")) return op === "=";
    return false;
  }
  if (isNumber(a) !== isNumber(b)) {
    // A number against text: compare as numbers when the text is one (select values are text).
    const text = isNumber(a) ? b : a;
    const parsed = typeof text === "string" ? parseNumber(text) : null;
    if (parsed === null) {
      if (op === "=" || op === "!=") return op === "!=";
      throw typeError(`'${op}'`, a, b);
    }
    if (isNumber(a)) b = parsed;
    else a = parsed;
  } else if (isDate(a) !== isDate(b)) {
    try {
      a = asDate(a, `'${op}'`);
      b = asDate(b, `'${op}'`);
    } catch (error) {
      if (error instanceof EvaluationError && (op === "=" || op === "!=")) return op === "!=";
      throw error;
    }
  } else if (!sameKind(a, b)) {
    if (op === "=" || op === "!=") return (op === "!=") !== equal(a, b);
    throw typeError(`'${op}'`, a, b);
  }
  if (op === "=") return equal(a, b);
  if (op === "!=") return !equal(a, b);
  if (Array.isArray(a)) throw typeError(`'${op}'`, a, b);
  if (a !== null && typeof a === "object" && !isDate(a)) throw typeError(`'${op}'`, a, b);
  const order = isDate(a) ? a.compare(b) : a < b ? -1 : a > b ? 1 : 0;
  if (op === "<") return order < 0;
  if (op === "<=") return order <= 0;
  if (op === ">") return order > 0;
  return order >= 0;
}

const SAFE = Number.MAX_SAFE_INTEGER;
const isWhole = (n) => Number.isInteger(n) && Math.abs(n) <= SAFE;

function arithmetic(op, a, b) {
  if (a === null || b === null) return null;
  if (isDate(a) || isDate(b)) return dateArithmetic(op, a, b);
  if (!(isNumber(a) && isNumber(b))) throw typeError(`'${op}'`, a, b);
  if ((op === "div" || op === "mod") && b === 0) {
    throw new EvaluationError("division_by_zero", `'${op}' by zero`, "除数为零");
  }
  if (isWhole(a) && isWhole(b)) {
    const exact = { "+": a + b, "-": a - b, "*": a * b }[op];
    if (exact !== undefined && Math.abs(exact) <= SAFE) return exact;
    if (op === "div" && a % b === 0) return a / b;
    if (op === "mod") return a % b === 0 ? 0 : a % b;
  }
  try {
    const x = decimal.toDecimal(a);
    const y = decimal.toDecimal(b);
    const fn = { "+": decimal.add, "-": decimal.subtract, "*": decimal.multiply, div: decimal.divide, mod: decimal.remainder }[op];
    return decimal.toNumber(fn(x, y));
  } catch (error) {
    if (!(error instanceof decimal.ArithmeticFailure)) throw error;
    throw new EvaluationError("arithmetic", "the result is out of range", "计算结果超出范围");
  }
}

function dateArithmetic(op, a, b) {
  let result;
  if (op === "+" && isDate(a) && isWhole(b)) result = a.addDays(b);
  else if (op === "+" && isDate(b) && isWhole(a)) result = b.addDays(a);
  else if (op === "-" && isDate(a) && isDate(b)) return a.days - b.days;
  else if (op === "-" && isDate(a) && isWhole(b)) result = a.addDays(-b);
  else throw typeError(`'${op}'`, a, b);
  if (result === null) throw new EvaluationError("bad_date", "date out of range", "日期超出范围");
  return result;
}

// --- environment ------------------------------------------------------------------------------

// What expressions read from outside the record: today (a PlainDate or 'YYYY-MM-DD'), the
// county configuration, and the moment now() returns (ISO text; null is midnight of today).
export function evaluationContext({ today = null, config = {}, now = null } = {}) {
  let day = today;
  if (typeof day === "string") day = PlainDate.parse(day);
  if (day === null) {
    const d = new Date();
    day = new PlainDate(d.getFullYear(), d.getMonth() + 1, d.getDate());
  }
  return { today: day, config, now };
}

const normalize = (value) => (value === "" || value === undefined ? null : value);

// The values an expression sees: top-level values, enclosing repeat rows (innermost last),
// the value of `.`, the context, and optionally the field names defined at each level
// (schema path → Set), so a name defined in a row resolves there even when left empty.
// While a choice_filter is evaluated, `choice` is the choice being tested (its value as `name`
// and its filter columns, read by choice('county')); `labels` is field name → choice value →
// its Chinese label (jr:choice-name); `tables` the form's data tables by name (pulldata).
export class Environment {
  constructor(values, current = null, context = null, levelNames = null, rows = [], choice = null, labels = null, tables = null) {
    this.values = values;
    this.current = current;
    this.context = context || evaluationContext();
    this.levelNames = levelNames;
    this.rows = rows;
    this.choice = choice;
    this.labels = labels;
    this.tables = tables;
  }

  inRow(repeatPath, row, current = null) {
    const names = this.levelNames && Object.hasOwn(this.levelNames, repeatPath) ? this.levelNames[repeatPath] : null;
    const rows = [...this.rows, { path: repeatPath, values: row, names }];
    return new Environment(this.values, current, this.context, this.levelNames, rows, this.choice, this.labels, this.tables);
  }

  withCurrent(current) {
    return new Environment(this.values, current, this.context, this.levelNames, this.rows, this.choice, this.labels, this.tables);
  }

  withChoice(choice) {
    return new Environment(this.values, this.current, this.context, this.levelNames, this.rows, choice, this.labels, this.tables);
  }

  withLookups(labels, tables) {
    return new Environment(this.values, this.current, this.context, this.levelNames, this.rows, this.choice, labels, tables);
  }

  lookup(name) {
    for (let i = this.rows.length - 1; i >= 0; i -= 1) {
      const scope = this.rows[i];
      if (scope.names ? scope.names.has(name) : Object.hasOwn(scope.values, name)) {
        return [normalize(scope.values[name]), `${scope.path}/${name}`];
      }
    }
    return [normalize(Object.hasOwn(this.values, name) ? this.values[name] : null), name];
  }

  value(name) {
    return this.lookup(name)[0];
  }
}

// --- functions ----------------------------------------------------------------------------------

function rowsOf(node, env, what) {
  const [value, path] = env.lookup(node.args[0].name);
  if (value === null) return [[], path];
  if (!Array.isArray(value) || !value.every((r) => r && typeof r === "object" && !Array.isArray(r) && !isDate(r))) {
    throw typeError(what, value);
  }
  return [value, path];
}

function rowValues(node, env, what) {
  const [rows, path] = rowsOf(node, env, what);
  return rows.map((row) => run(node.args[1], env.inRow(path, row)));
}

function selection(value, what) {
  if (value === null) return [];
  if (typeof value === "string") return value.split(/\s+/u).filter(Boolean);
  if (Array.isArray(value)) return value.map(asText);
  if (isNumber(value)) return [asText(value)];
  throw typeError(what, value);
}

function idInfo(env, value) {
  if (value === null || !(typeof value === "string" || isWhole(value) || isNumber(value))) return null;
  if (isNumber(value) && !Number.isInteger(value)) return null;
  try {
    return identity.parseIdNumber(value, env.context.today);
  } catch (error) {
    if (error instanceof identity.IdNumberError) return null;
    throw error;
  }
}

function numberOf(value) {
  if (value === null || isNumber(value)) return value;
  if (typeof value === "boolean") return Number(value);
  if (typeof value === "string") return parseNumber(value);
  throw typeError("number()", value);
}

const ISO_DATE_TIME =
  /^(\d{4})-(\d{2})-(\d{2})[T](\d{2})(?::(\d{2})(?::(\d{2})(?:[.,](\d{1,6}))?)?)?(Z|[+-]\d{2}(?::?\d{2})?)?$/;

function decimalDateTime(env, value) {
  if (value === null) return null;
  if (typeof value === "string" && value.includes("T")) {
    const m = ISO_DATE_TIME.exec(value);
    const day = m && PlainDate.fromParts(Number(m[1]), Number(m[2]), Number(m[3]));
    const [hh, mm, ss] = m ? [Number(m[4]), Number(m[5] || 0), Number(m[6] || 0)] : [];
    if (!day || hh > 23 || mm > 59 || ss > 59) {
      throw new EvaluationError(
        "bad_date",
        `decimal-date-time() needs an ISO date-time, got ${pyRepr(value)}`,
        `decimal-date-time() 需要 ISO 日期时间，实际为 ${pyRepr(value)}`,
      );
    }
    let seconds = day.days * 86400 + hh * 3600 + mm * 60 + ss + Number(`0.${m[7] || 0}`);
    const zone = m[8];
    if (zone && zone !== "Z") {
      const sign = zone[0] === "-" ? -1 : 1;
      const digits = zone.slice(1).replace(":", "");
      seconds -= sign * (Number(digits.slice(0, 2)) * 3600 + Number(digits.slice(2, 4) || 0) * 60);
    }
    return Math.round((seconds / 86400) * 1e9) / 1e9;
  }
  return asDate(value, "decimal-date-time()").days;
}

function roundTo(env, value, digits = 0) {
  const number = asNumber(value, "round()");
  const places = asNumber(digits, "round()");
  if (number === null) return null;
  if (places === null || !Number.isInteger(places) || Math.abs(places) > MAX_ROUND_DIGITS) {
    throw new EvaluationError(
      "bad_argument",
      `round() digits must be a whole number from -${MAX_ROUND_DIGITS} to ${MAX_ROUND_DIGITS}`,
      "round() 的位数必须是整数",
    );
  }
  try {
    return decimal.roundHalfUp(number, places);
  } catch {
    throw new EvaluationError("arithmetic", "round() result out of range", "计算结果超出范围");
  }
}

function extreme(name, pick) {
  return (env, ...values) => {
    const present = values.filter((v) => v !== null);
    if (present.length === 0) return null;
    if (present.every(isNumber)) return pick(present, (a, b) => a - b);
    let dates;
    try {
      dates = present.map((v) => asDate(v, `${name}()`));
    } catch (error) {
      if (error instanceof EvaluationError) throw typeError(`${name}()`, ...present);
      throw error;
    }
    return pick(dates, (a, b) => a.compare(b));
  };
}

// Python's min()/max(): the first of equal extremes.
const smallest = (items, cmp) => items.reduce((best, v) => (cmp(v, best) < 0 ? v : best));
const largest = (items, cmp) => items.reduce((best, v) => (cmp(v, best) > 0 ? v : best));

function checkRegex(node) {
  const pattern = node.args[1];
  if (pattern.type !== "literal" || typeof pattern.value !== "string") {
    throw new ExpressionError("bad_argument", "the pattern of regex() must be a string literal", node.position);
  }
  if (pattern.value.length > MAX_PATTERN_LENGTH) {
    throw new ExpressionError("bad_regex", `regex() pattern longer than ${MAX_PATTERN_LENGTH} characters`, pattern.position);
  }
  try {
    node.pattern = new RegExp(pattern.value, "u");
  } catch (error) {
    throw new ExpressionError("bad_regex", `invalid regex() pattern: ${error.message}`, pattern.position);
  }
}

function checkDateLiteral(node) {
  const arg = node.args[0];
  if (arg.type !== "literal") return;
  if (typeof arg.value !== "string" || !isIsoDateText(arg.value)) {
    throw new ExpressionError("bad_argument", "date() needs 'YYYY-MM-DD'", arg.position);
  }
  if (PlainDate.parse(arg.value) === null) {
    throw new ExpressionError("bad_argument", `${pyRepr(arg.value)} is not a real date`, arg.position);
  }
}

// Python's == between two JSON-like rows (a copy of a row finds its position too).
function sameJson(a, b) {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) return false;
  return keys.every((k) => Object.hasOwn(b, k) && sameJson(a[k], b[k]));
}

const own = (mapping, key) => (mapping && Object.hasOwn(mapping, key) ? mapping[key] : undefined);

// A column of the choice a choice_filter is testing: 'name' is its value, any other name one
// of its filter columns; empty when no choice is being tested.
function choiceColumn(env, column) {
  if (env.choice === null) return null;
  return normalize(own(env.choice, asText(column)) ?? null);
}

// 1-based number of the innermost repeat row (ODK's position(..)); empty outside a repeat.
function position(env) {
  if (env.rows.length === 0) return null;
  const scope = env.rows[env.rows.length - 1];
  const parent = env.rows.length > 1 ? env.rows[env.rows.length - 2].values : env.values;
  const rows = own(parent, scope.path.split("/").pop());
  if (!Array.isArray(rows)) return null;
  let index = rows.indexOf(scope.values);
  if (index < 0) index = rows.findIndex((row) => sameJson(row, scope.values));
  return index < 0 ? null : index + 1;
}

// indexed-repeat(${field}, ${repeat}, n): field in row n (1-based) of repeat; empty when none.
function indexedRepeat(node, env) {
  const number = asNumber(run(node.args[2], env), "indexed-repeat()");
  if (number === null) return null;
  if (!Number.isInteger(number)) {
    throw new EvaluationError("bad_argument", "indexed-repeat() needs a whole row number", "indexed-repeat() 的行号必须是整数");
  }
  const [value, path] = env.lookup(node.args[1].name);
  if (value === null) return null;
  if (!Array.isArray(value) || !value.every((r) => r && typeof r === "object" && !Array.isArray(r) && !isDate(r))) {
    throw typeError("indexed-repeat()", value);
  }
  if (!(number >= 1 && number <= value.length)) return null;
  return run(node.args[0], env.inRow(path, value[number - 1]));
}

// jr:choice-name(value, '${field}'): the Chinese label of value in field's choice list.
function choiceName(env, value, fieldName) {
  if (value === null) return null;
  let name = asText(fieldName).trim();
  if (name.startsWith("${") && name.endsWith("}")) name = name.slice(2, -1);
  return own(own(env.labels, name), asText(value)) ?? null;
}

// pulldata('table', 'column', 'key_column', key): column of the first row of the form's data
// table whose key column is key (as text); a cell that reads as a number is one.
function pulldata(env, table, column, keyColumn, key) {
  if (key === null) return null;
  const rows = own(env.tables, asText(table)) ?? [];
  const [wanted, columnName, keyName] = [asText(key), asText(column), asText(keyColumn)];
  for (const row of rows) {
    if (own(row, keyName) === wanted) {
      const cell = normalize(own(row, columnName) ?? null);
      if (cell === null) return null;
      const number = parseNumber(cell);
      return number === null ? cell : number;
    }
  }
  return null;
}

function checkPulldata(node) {
  const table = node.args[0];
  if (table.type !== "literal" || typeof table.value !== "string") {
    throw new ExpressionError("bad_argument", "the table of pulldata() must be a string literal", node.position);
  }
}

function checkIndexedRepeat(node) {
  for (const arg of node.args.slice(0, 2)) {
    if (arg.type !== "field") {
      throw new ExpressionError("bad_argument", "indexed-repeat() is written indexed-repeat(${field}, ${repeat}, n)", node.position);
    }
  }
}

function checkRowFunction(node) {
  if (node.args[0].type !== "field") {
    throw new ExpressionError(
      "bad_argument",
      `the first argument of ${node.name}() must be a repeat field \${name}`,
      node.position,
    );
  }
}

const datePart = (part) => (env, value) => {
  const d = asDate(value, `${part}()`);
  return d === null ? null : d[part];
};

// name → {min, max (null: any), lazy (called with the node and env), row (first argument is a
// repeat, the rest run in each row), check (at parse time), fn}.
// A null-prototype table: a name such as `constructor` must not find Object's own members.
const FUNCTIONS = Object.assign(Object.create(null), {
  true: { min: 0, max: 0, fn: () => true },
  false: { min: 0, max: 0, fn: () => false },
  not: { min: 1, max: 1, fn: (env, v) => !truthy(v) },
  boolean: { min: 1, max: 1, fn: (env, v) => truthy(v) },
  if: {
    min: 3, max: 3, lazy: true,
    fn: (node, env) => (truthy(run(node.args[0], env)) ? run(node.args[1], env) : run(node.args[2], env)),
  },
  coalesce: {
    min: 2, max: null, lazy: true,
    fn: (node, env) => {
      for (const arg of node.args) {
        const value = run(arg, env);
        if (value !== null && !(Array.isArray(value) && value.length === 0)) return value;
      }
      return null;
    },
  },
  selected: { min: 2, max: 2, fn: (env, v, choice) => selection(v, "selected()").includes(asText(choice)) },
  "count-selected": { min: 1, max: 1, fn: (env, v) => selection(v, "count-selected()").length },
  count: {
    min: 1, max: 1,
    fn: (env, v) => {
      if (v === null) return 0;
      if (Array.isArray(v)) return v.length;
      throw typeError("count()", v);
    },
  },
  "count-if": {
    min: 2, max: 2, lazy: true, row: true, check: checkRowFunction,
    fn: (node, env) => rowValues(node, env, "count-if()").filter(truthy).length,
  },
  sum: {
    min: 2, max: 2, lazy: true, row: true, check: checkRowFunction,
    fn: (node, env) => {
      let total = 0;
      for (const value of rowValues(node, env, "sum()")) {
        const number = asNumber(value, "sum()");
        if (number !== null) total = arithmetic("+", total, number);
      }
      return total;
    },
  },
  any: {
    min: 2, max: 2, lazy: true, row: true, check: checkRowFunction,
    fn: (node, env) => {
      const [rows, path] = rowsOf(node, env, "any()");
      return rows.some((row) => truthy(run(node.args[1], env.inRow(path, row))));
    },
  },
  all: {
    min: 2, max: 2, lazy: true, row: true, check: checkRowFunction,
    fn: (node, env) => {
      const [rows, path] = rowsOf(node, env, "all()");
      return rows.every((row) => truthy(run(node.args[1], env.inRow(path, row))));
    },
  },
  "string-length": { min: 1, max: 1, fn: (env, v) => [...asText(v)].length },
  regex: {
    min: 2, max: 2, check: checkRegex,
    fn: (env, v, pattern, node) => {
      if (v === null) return false;
      const text = asText(v);
      // The Python side also stops a match after 0.25 s; a browser cannot interrupt a RegExp,
      // so the input bound is what keeps a backtracking pattern short here.
      if ([...text].length > MAX_REGEX_INPUT) {
        throw new EvaluationError("too_long", `regex() input longer than ${MAX_REGEX_INPUT} characters`, "正则匹配的文本过长");
      }
      return node.pattern.test(text);
    },
  },
  today: { min: 0, max: 0, fn: (env) => env.context.today },
  now: { min: 0, max: 0, fn: (env) => env.context.now ?? `${env.context.today.iso}T00:00:00` },
  "decimal-date-time": { min: 1, max: 1, fn: decimalDateTime },
  once: {
    min: 1, max: 1, lazy: true,
    fn: (node, env) => (env.current !== null && env.current !== "" ? env.current : run(node.args[0], env)),
  },
  choice: { min: 1, max: 1, fn: choiceColumn },
  pulldata: { min: 4, max: 4, check: checkPulldata, fn: pulldata },
  position: { min: 0, max: 0, fn: position },
  "indexed-repeat": { min: 3, max: 3, lazy: true, check: checkIndexedRepeat, fn: indexedRepeat },
  "jr:choice-name": { min: 2, max: 2, fn: choiceName },
  date: {
    min: 1, max: 1, check: checkDateLiteral,
    fn: (env, v) => {
      if (typeof v === "string" && !isIsoDateText(v)) {
        throw new EvaluationError(
          "bad_date",
          `date() needs 'YYYY-MM-DD', got ${pyRepr(v)}`,
          `date() 需要 'YYYY-MM-DD' 格式的日期，实际为 ${pyRepr(v)}`,
        );
      }
      return asDate(v, "date()");
    },
  },
  year: { min: 1, max: 1, fn: datePart("year") },
  month: { min: 1, max: 1, fn: datePart("month") },
  day: { min: 1, max: 1, fn: datePart("day") },
  "days-between": {
    min: 2, max: 2,
    fn: (env, start, end) => {
      const a = asDate(start, "days-between()");
      const b = asDate(end, "days-between()");
      return a === null || b === null ? null : b.days - a.days;
    },
  },
  "age-at": {
    min: 2, max: 2,
    fn: (env, id, on) => {
      const info = idInfo(env, id);
      const when = asDate(on, "age-at()");
      return info === null || when === null ? null : identity.ageOn(info.birthDate, when);
    },
  },
  "id-valid": { min: 1, max: 1, fn: (env, v) => idInfo(env, v) !== null },
  "id-birth-date": { min: 1, max: 1, fn: (env, v) => idInfo(env, v)?.birthDate ?? null },
  "id-sex": { min: 1, max: 1, fn: (env, v) => idInfo(env, v)?.sex ?? null },
  "id-kind": { min: 1, max: 1, fn: (env, v) => idInfo(env, v)?.kind ?? null },
  "school-age-date": {
    min: 1, max: 1,
    fn: (env, v) => {
      const d = asDate(v, "school-age-date()");
      return d === null ? null : identity.schoolYearReference(d);
    },
  },
  number: { min: 1, max: 1, fn: (env, v) => numberOf(v) },
  int: {
    min: 1, max: 1,
    fn: (env, v) => {
      const n = numberOf(v);
      return n === null ? null : Math.trunc(n);
    },
  },
  string: { min: 1, max: 1, fn: (env, v) => asText(v) },
  round: { min: 1, max: 2, fn: roundTo },
  min: { min: 1, max: null, fn: extreme("min", smallest) },
  max: { min: 1, max: null, fn: extreme("max", largest) },
  config: {
    min: 1, max: 2,
    fn: (env, key, fallback = null) => {
      const name = asText(key);
      const value = Object.hasOwn(env.context.config, name) ? env.context.config[name] : null;
      return value === null ? fallback : value;
    },
  },
  concat: { min: 1, max: null, fn: (env, ...values) => values.map(asText).join("") },
  contains: { min: 2, max: 2, fn: (env, hay, needle) => hay !== null && asText(hay).includes(asText(needle)) },
  "starts-with": { min: 2, max: 2, fn: (env, text, prefix) => text !== null && asText(text).startsWith(asText(prefix)) },
});

export const FUNCTION_NAMES = Object.freeze(Object.keys(FUNCTIONS));

// --- evaluator ----------------------------------------------------------------------------------

function run(node, env) {
  switch (node.type) {
    case "literal":
      return node.value;
    case "field":
      return env.value(node.name);
    case "current":
      return normalize(env.current);
    case "unary": {
      const value = run(node.operand, env);
      if (value === null) return null;
      if (!isNumber(value)) throw typeError("'-'", value);
      return -value;
    }
    case "binary": {
      if (node.op === "or") return truthy(run(node.left, env)) || truthy(run(node.right, env));
      if (node.op === "and") return truthy(run(node.left, env)) && truthy(run(node.right, env));
      const a = run(node.left, env);
      const b = run(node.right, env);
      if (["=", "!=", "<", "<=", ">", ">="].includes(node.op)) return compare(node.op, a, b);
      return arithmetic(node.op, a, b);
    }
    default: {
      const spec = FUNCTIONS[node.name];
      if (spec.lazy) return spec.fn(node, env);
      const values = node.args.map((arg) => run(arg, env));
      return node.name === "regex" ? spec.fn(env, values[0], values[1], node) : spec.fn(env, ...values);
    }
  }
}

function collect(node, via, out) {
  if (node.type === "field") out.push({ name: node.name, position: node.position, via });
  else if (node.type === "unary") collect(node.operand, via, out);
  else if (node.type === "binary") {
    collect(node.left, via, out);
    collect(node.right, via, out);
  } else if (node.type === "call") {
    if (node.name === "indexed-repeat" && node.args[1].type === "field") {
      // the field is read inside rows of the repeat (the second argument)
      collect(node.args[1], via, out);
      collect(node.args[0], [...via, node.args[1].name], out);
      collect(node.args[2], via, out);
    } else if (FUNCTIONS[node.name].row && node.args[0].type === "field") {
      collect(node.args[0], via, out);
      for (const arg of node.args.slice(1)) collect(arg, [...via, node.args[0].name], out);
    } else {
      for (const arg of node.args) collect(arg, via, out);
    }
  }
}

function someNode(node, test) {
  if (test(node)) return true;
  if (node.type === "unary") return someNode(node.operand, test);
  if (node.type === "binary") return someNode(node.left, test) || someNode(node.right, test);
  if (node.type === "call") return node.args.some((a) => someNode(a, test));
  return false;
}

// A parsed expression: `root` is the AST; evaluate() never lets a JS exception other than
// EvaluationError escape.
export class Expression {
  constructor(text, root) {
    this.text = text;
    this.root = root;
    Object.freeze(this);
  }

  evaluate(env) {
    const environment = env instanceof Environment ? env : new Environment(env);
    try {
      return run(this.root, environment);
    } catch (error) {
      if (error instanceof EvaluationError) throw error;
      if (error instanceof RangeError || error instanceof TypeError) {
        throw new EvaluationError("evaluation", `the expression could not be evaluated: ${error.message}`, "表达式无法计算");
      }
      throw error;
    }
  }

  isTrue(env) {
    return truthy(this.evaluate(env));
  }

  // Every ${name} in source order, with the repeats (`via`, outermost first) of the enclosing
  // row functions in which it is looked up.
  references() {
    const out = [];
    collect(this.root, [], out);
    return out;
  }

  usesCurrent() {
    return someNode(this.root, (n) => n.type === "current");
  }

  appliesToCurrent(fn) {
    return someNode(this.root, (n) => n.type === "call" && n.name === fn && n.args[0]?.type === "current");
  }
}

const cache = new Map();

// Parse an expression (grammar in docs/forms.md); throws ExpressionError with code and position.
export function parseExpression(text) {
  if (typeof text !== "string") throw new ExpressionError("bad_argument", "an expression must be a string", 0);
  let parsed = cache.get(text);
  if (parsed === undefined) {
    if (text.length > MAX_LENGTH) {
      throw new ExpressionError("too_long", `expression longer than ${MAX_LENGTH} characters`, MAX_LENGTH);
    }
    parsed = new Expression(text, new Parser(text).parse());
    if (cache.size > 4096) cache.clear();
    cache.set(text, parsed);
  }
  return parsed;
}
