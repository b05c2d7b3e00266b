// A calendar date without time or zone (Python's datetime.date): what the form language calls
// a date. Days are counted from 1970-01-01 so differences and comparisons are integer maths.

const MS_PER_DAY = 86400000;
const ISO_DATE = /^(\d{4})-(\d{2})-(\d{2})$/;

export class PlainDate {
  constructor(year, month, day) {
    this.year = year;
    this.month = month;
    this.day = day;
    Object.freeze(this);
  }

  // A real date from its parts, or null (2026-02-30, month 13, year 0).
  static fromParts(year, month, day) {
    if (!(year >= 1 && year <= 9999 && month >= 1 && month <= 12 && day >= 1)) return null;
    const probe = new Date(0);
    probe.setUTCFullYear(year, month - 1, day);
    if (probe.getUTCMonth() !== month - 1 || probe.getUTCDate() !== day) return null;
    return new PlainDate(year, month, day);
  }

  // 'YYYY-MM-DD' → PlainDate; null when the text is not that shape or not a real date.
  static parse(text) {
    const match = ISO_DATE.exec(text);
    return match ? PlainDate.fromParts(Number(match[1]), Number(match[2]), Number(match[3])) : null;
  }

  static fromDays(days) {
    const d = new Date(days * MS_PER_DAY);
    return PlainDate.fromParts(d.getUTCFullYear(), d.getUTCMonth() + 1, d.getUTCDate());
  }

  get days() {
    const d = new Date(0);
    d.setUTCFullYear(this.year, this.month - 1, this.day);
    return Math.round(d.getTime() / MS_PER_DAY);
  }

  get iso() {
    const pad = (n, w) => String(n).padStart(w, "0");
    return `${pad(this.year, 4)}-${pad(this.month, 2)}-${pad(this.day, 2)}`;
  }

  compare(other) {
    return this.days - other.days;
  }

  addDays(n) {
    return PlainDate.fromDays(this.days + n);
  }

  toString() {
    return this.iso;
  }
}

export function isIsoDateText(text) {
  return typeof text === "string" && ISO_DATE.test(text);
}
