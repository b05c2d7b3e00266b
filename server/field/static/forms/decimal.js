// Decimal arithmetic on the shortest decimal spelling of each number, as forms/expressions.py
// does with Python's Decimal (28 significant digits, half-even): binary floats would make
// 0.1 + 0.2 = 0.30000000000000004 and round a per-capita income to the wrong cent.

const PRECISION = 28;

export class ArithmeticFailure extends Error {}

// A decimal is {m: BigInt, e: Number}: the value m × 10^e.
export function toDecimal(number) {
  if (Number.isInteger(number) && Math.abs(number) <= Number.MAX_SAFE_INTEGER) {
    return { m: BigInt(number), e: 0 };
  }
  if (!Number.isFinite(number)) throw new ArithmeticFailure("not finite");
  // String(number) is the shortest spelling that reads back as the same double, like repr().
  const match = /^(-?)(\d+)(?:\.(\d+))?(?:e([+-]\d+))?$/.exec(String(number));
  const [, sign, whole, fraction = "", exponent = "0"] = match;
  const m = BigInt(sign + whole + fraction);
  return { m, e: Number(exponent) - fraction.length };
}

function digits(big) {
  return (big < 0n ? -big : big).toString().length;
}

function pow10(n) {
  return 10n ** BigInt(n);
}

// Drop the last `drop` digits of m, half-even; `sticky` says digits beyond m were non-zero.
function dropDigits(m, drop, sticky = false) {
  if (drop <= 0) return m;
  const negative = m < 0n;
  const a = negative ? -m : m;
  const unit = pow10(drop);
  let q = a / unit;
  const twice = (a % unit) * 2n;
  if (twice > unit || (twice === unit && (sticky || q % 2n === 1n))) q += 1n;
  return negative ? -q : q;
}

function fitPrecision(d, sticky = false) {
  const extra = digits(d.m) - PRECISION;
  if (extra <= 0) return d;
  const m = dropDigits(d.m, extra, sticky);
  return fitPrecision({ m, e: d.e + extra });
}

function align(x, y) {
  const e = Math.min(x.e, y.e);
  return [x.m * pow10(x.e - e), y.m * pow10(y.e - e), e];
}

export function add(x, y) {
  const [a, b, e] = align(x, y);
  return fitPrecision({ m: a + b, e });
}

export function subtract(x, y) {
  return add(x, { m: -y.m, e: y.e });
}

export function multiply(x, y) {
  return fitPrecision({ m: x.m * y.m, e: x.e + y.e });
}

export function divide(x, y) {
  if (y.m === 0n) throw new ArithmeticFailure("division by zero");
  if (x.m === 0n) return { m: 0n, e: 0 };
  const negative = x.m < 0n !== y.m < 0n;
  const a = x.m < 0n ? -x.m : x.m;
  const b = y.m < 0n ? -y.m : y.m;
  // Enough digits for PRECISION significant ones plus a rounding digit.
  const k = Math.max(0, PRECISION + 2 + digits(b) - digits(a));
  const scaled = a * pow10(k);
  const q = scaled / b;
  const sticky = scaled % b !== 0n;
  let result = { m: q, e: x.e - y.e - k };
  const extra = digits(q) - PRECISION;
  if (extra > 0) {
    result = { m: dropDigits(q, extra, sticky), e: result.e + extra };
    result = fitPrecision(result);
  }
  return { m: negative ? -result.m : result.m, e: result.e };
}

// Remainder with the sign of the dividend (XPath's mod, Decimal.remainder).
export function remainder(x, y) {
  if (y.m === 0n) throw new ArithmeticFailure("division by zero");
  const [a, b, e] = align(x, y);
  return { m: a % b, e };
}

export function toNumber(d) {
  const value = Number(`${d.m}e${d.e}`);
  if (!Number.isFinite(value)) throw new ArithmeticFailure("out of range");
  return value;
}

// Quantize to `places` decimals, half away from zero (how people round money by hand).
export function roundHalfUp(number, places) {
  const d = toDecimal(number);
  const drop = -places - d.e;
  if (drop <= 0) return toNumber(d);
  const negative = d.m < 0n;
  const a = negative ? -d.m : d.m;
  const unit = pow10(drop);
  let q = a / unit;
  if ((a % unit) * 2n >= unit) q += 1n;
  return toNumber({ m: negative ? -q : q, e: -places });
}

// A decimal quantized to `places` decimals, half away from zero (Decimal.quantize ROUND_HALF_UP).
export function quantizeHalfUp(d, places) {
  const drop = -places - d.e;
  if (drop <= 0) return d;
  const negative = d.m < 0n;
  const a = negative ? -d.m : d.m;
  const unit = pow10(drop);
  let q = a / unit;
  if ((a % unit) * 2n >= unit) q += 1n;
  return { m: negative ? -q : q, e: -places };
}

export function compare(x, y) {
  const [a, b] = align(x, y);
  return a < b ? -1 : a > b ? 1 : 0;
}
