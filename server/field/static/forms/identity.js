// GB 11643-1999 resident ID numbers and disability card numbers: a port of forms/identity.py
// (the part expressions and validation use), with the same codes and zh/en messages.
import { PlainDate } from "./dates.js";

const WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const CHECK_CHARS = "10X98765432";
const SEPARATORS = /[\s\-‐‑‒–—―−_·]+/gu;
const EARLIEST_BIRTH = new PlainDate(1900, 1, 1);

export class IdNumberError extends Error {
  constructor(code, messageZh, messageEn) {
    super(messageEn);
    this.code = code;
    this.messageZh = messageZh;
    this.messageEn = messageEn;
  }
}

const charactersError = () =>
  new IdNumberError(
    "characters",
    "身份证号只能包含数字和X",
    "an ID number may only contain digits and X",
  );

const lossyNumberError = () =>
  new IdNumberError(
    "lossy_number",
    "身份证号被表格软件存成了数字（科学计数法或末几位变成0），末几位已丢失，" +
      "请按证件重新录入并把该列设为文本",
    "the ID number was stored as a number (e.g. 5.30102199001011e+17, or with its last digits " +
      "zeroed) and its last digits are lost; re-type it from the card and format the column " +
      "as text",
  );

export function idCheckChar(first17) {
  let total = 0;
  for (let i = 0; i < 17; i += 1) total += Number(first17[i]) * WEIGHTS[i];
  return CHECK_CHARS[total % 11];
}

export function normalizeIdNumber(raw) {
  if (typeof raw === "boolean") {
    throw new IdNumberError("characters", "身份证号不能是是/否值", "an ID number cannot be a boolean");
  }
  if (typeof raw === "number") {
    // JSON gives no int/float distinction: a whole number is read as Python reads an int.
    if (!Number.isInteger(raw)) throw lossyNumberError();
    if (raw < 0) throw charactersError();
    const text = BigInt(raw).toString();
    if (text.length >= 16 && /^0+$/.test(text.slice(15))) throw lossyNumberError();
    return text;
  }
  if (typeof raw !== "string") {
    throw new IdNumberError("characters", "身份证号必须是文本", "an ID number must be text");
  }
  let text = raw.normalize("NFKC").trim().replace(/^['‘’`]+/u, "").trim();
  if (/^\d(\.\d+)?[eE]\+?\d+$/.test(text)) throw lossyNumberError();
  text = text.replace(SEPARATORS, "").toUpperCase();
  if (!text) throw new IdNumberError("empty", "身份证号为空", "the ID number is empty");
  return text;
}

function birthDate(digits, today) {
  const birth = PlainDate.fromParts(
    Number(digits.slice(0, 4)),
    Number(digits.slice(4, 6)),
    Number(digits.slice(6, 8)),
  );
  if (birth === null) {
    throw new IdNumberError(
      "birth_date",
      `身份证号第7-14位不是有效的出生日期（${digits}）`,
      `digits 7-14 are not a real birth date (${digits})`,
    );
  }
  if (birth.compare(EARLIEST_BIRTH) < 0 || birth.compare(today) > 0) {
    throw new IdNumberError(
      "birth_date",
      `身份证号中的出生日期${birth.iso}不合理（应在1900年至今天之间）`,
      `the birth date ${birth.iso} is outside 1900-01-01..${today.iso}`,
    );
  }
  return birth;
}

// → {number, kind, birthDate, sex}; throws IdNumberError.
export function parseIdNumber(raw, today) {
  const number = normalizeIdNumber(raw);
  const length = [...number].length;
  if (length !== 18 && length !== 20) {
    throw new IdNumberError(
      "length",
      `身份证号应为18位（残疾人证号20位），实际为${length}位`,
      `an ID number has 18 characters (20 for a disability card), got ${length}`,
    );
  }
  const base = number.slice(0, 18);
  const suffix = number.slice(18);
  if (!/^[0-9]{17}[0-9X]$/.test(base)) throw charactersError();
  if (suffix && !/^[0-9]+$/.test(suffix)) {
    throw new IdNumberError(
      "disability_suffix",
      "残疾人证号第19、20位应为残疾类别和等级数字",
      "characters 19 and 20 of a disability card number must be the category and grade digits",
    );
  }
  const birth = birthDate(base.slice(6, 14), today);
  const expected = idCheckChar(base.slice(0, 17));
  if (base[17] !== expected) {
    throw new IdNumberError(
      "check_digit",
      `身份证号校验位错误（应为${expected}），请核对是否录错`,
      `the check character is wrong (expected ${expected}); the number was probably mistyped`,
    );
  }
  if (suffix) {
    const category = Number(suffix[0]);
    const grade = Number(suffix[1]);
    if (category < 1 || category > 7 || grade < 1 || grade > 4) {
      throw new IdNumberError(
        "disability_suffix",
        "残疾人证号末两位应为残疾类别（1-7）和等级（1-4）",
        "a disability card number ends with the category (1-7) and grade (1-4)",
      );
    }
  }
  return {
    number,
    kind: suffix ? "disability_card" : "resident",
    birthDate: birth,
    sex: Number(base[16]) % 2 === 1 ? "male" : "female",
  };
}

// Age in whole years on `on` (born 29 February: a year older on 1 March).
export function ageOn(birth, on) {
  const hadBirthday = on.month > birth.month || (on.month === birth.month && on.day >= birth.day);
  return on.year - birth.year - (hadBirthday ? 0 : 1);
}

// 1 September of the school year containing d.
export function schoolYearReference(d) {
  return new PlainDate(d.month >= 9 ? d.year : d.year - 1, 9, 1);
}
