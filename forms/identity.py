"""Identity numbers of the household core: resident ID numbers, village codes, phones.

Everything here is pure and deterministic (the only clock read is ``date.today()`` when a caller
does not pass ``today``), so the tablet and the county server reach the same verdict.

Resident ID numbers follow GB 11643-1999: 17 digits (6 region, 8 birth date, 3 sequence, the last
of which is odd for men) and a check character. A disability card number (残疾人证号) is the same
18 characters followed by the disability category (1-7) and grade (1-4).

What people and spreadsheets really type is normalised first: full-width digits and letters
(``５３０１…``), a lower-case ``x``, spaces and dashes, Excel's text-marker apostrophe, and whole
numbers that Excel stored as numbers. A float cannot carry 18 significant digits, so an ID that
Excel turned into ``5.30102199001011e+17`` is refused with an error that says so, instead of being
"repaired" into somebody else's number.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field, replace
from datetime import date
from functools import lru_cache
from typing import Literal

from forms.errors import FormsError

__all__ = [
    "HOUSEHOLD_NO_PATTERN",
    "ID_CHECK_CHARS",
    "ID_WEIGHTS",
    "PHONE_PATTERN",
    "ROUND_PATTERN",
    "IdInfo",
    "IdNumberError",
    "VillageCode",
    "VillageCodeError",
    "VillageCodeWarning",
    "age_on",
    "id_check_char",
    "is_valid_household_no",
    "is_valid_id_number",
    "is_valid_phone",
    "is_valid_round",
    "normalize_id_number",
    "parse_id_number",
    "parse_village_code",
    "school_year_reference",
    "scope_contains",
]

#: GB 11643-1999 weights for the first 17 characters (2^(18-i) mod 11).
ID_WEIGHTS: tuple[int, ...] = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
#: Check character indexed by (weighted sum mod 11).
ID_CHECK_CHARS = "10X98765432"

#: Disability categories on the 残疾人证 (视力, 听力, 言语, 肢体, 智力, 精神, 多重).
DISABILITY_CATEGORIES = range(1, 8)
#: Disability grades 一级 (most severe) to 四级.
DISABILITY_GRADES = range(1, 5)

# Separators people put inside numbers when reading them aloud or copying from a card.
_SEPARATORS = re.compile(r"[\s\-‐‑‒–—―−_·]+")
_EARLIEST_BIRTH = date(1900, 1, 1)


class IdNumberError(FormsError, ValueError):
    """An ID number that cannot be accepted.

    ``code`` is stable and machine-readable: ``empty``, ``lossy_number``, ``length``,
    ``characters``, ``birth_date``, ``check_digit`` or ``disability_suffix``. ``message_zh`` is
    shown to field staff, ``message`` (also ``message_en``) to operators; ``messages()`` gives
    both as the ``{"zh", "en"}`` map validation issues carry.
    """

    code = "id_number_invalid"
    default_message = "invalid ID number"
    default_message_zh = "身份证号无效"

    def __init__(self, code: str, message_zh: str, message_en: str) -> None:
        super().__init__(code, message_en, message_zh=message_zh)
        self.message_en = message_en


class VillageCodeError(FormsError, ValueError):
    """A village code or scope prefix that is not made of the right number of digits.

    ``code`` is ``village_code_format`` or ``scope_prefix_format``.
    """

    code = "village_code_invalid"
    default_message = "invalid village code"
    default_message_zh = "行政村代码无效"

    def __init__(self, code: str, message_zh: str, message_en: str) -> None:
        super().__init__(code, message_en, message_zh=message_zh)
        self.message_en = message_en


@dataclass(frozen=True)
class IdInfo:
    """What a valid ID number says about its holder."""

    number: str  # normalised: 18 or 20 characters, upper-case X
    kind: Literal["resident", "disability_card"]
    birth_date: date
    sex: Literal["male", "female"]
    region_code: str  # the six-digit administrative code of the place of first registration
    disability_category: int | None = None
    disability_grade: int | None = None

    @property
    def resident_number(self) -> str:
        """The 18-character resident ID inside the number (the number itself for a resident ID)."""
        return self.number[:18]


def id_check_char(first17: str) -> str:
    """Return the GB 11643-1999 check character for 17 digits.

    Raises ``IdNumberError("characters", …)`` when ``first17`` is not exactly 17 ASCII digits.
    """
    if len(first17) != 17 or not first17.isascii() or not first17.isdigit():
        raise IdNumberError(
            "characters",
            "身份证号前17位必须是数字",
            "the first 17 characters of an ID number must be digits",
        )
    total = sum(int(ch) * weight for ch, weight in zip(first17, ID_WEIGHTS, strict=True))
    return ID_CHECK_CHARS[total % 11]


def normalize_id_number(raw: str | int | float) -> str:
    """Return the ID number as canonical text: ASCII digits and an upper-case ``X``.

    Accepts full-width characters, lower-case ``x``, spaces and dashes anywhere, a leading
    apostrophe (Excel's "store as text" marker) and an ``int`` (a number cell read by a
    spreadsheet library or a JSON number). Only the spelling is normalised; length, date and check
    digit are ``parse_id_number``'s business.

    Raises ``IdNumberError`` with code ``lossy_number`` when the digits are already lost and must
    be re-typed from the card: a ``float``, scientific notation such as
    ``"5.30102199001011E+17"``, or an ``int`` of 16 or more digits whose digits after the 15th are
    all zero — Excel keeps 15 significant digits, so that is what it makes of an ID typed into a
    number cell (a genuine ID ending in 000 is accepted as text). Code ``empty`` for an empty
    value, ``characters`` for a negative number or a non-text value.
    """
    if isinstance(raw, bool):
        raise IdNumberError(
            "characters", "身份证号不能是是/否值", "an ID number cannot be a boolean"
        )
    if isinstance(raw, int):
        if raw < 0:
            raise _characters_error()
        digits = str(raw)
        if len(digits) >= 16 and set(digits[15:]) == {"0"}:
            raise _lossy_number_error()
        return digits
    if isinstance(raw, float):
        raise _lossy_number_error()
    if not isinstance(raw, str):
        raise IdNumberError("characters", "身份证号必须是文本", "an ID number must be text")
    # NFKC folds full-width digits/letters (５３０１…ｘ) and the ideographic space to ASCII.
    text = unicodedata.normalize("NFKC", raw).strip().lstrip("'‘’`").strip()
    if re.fullmatch(r"\d(\.\d+)?[eE]\+?\d+", text):
        raise _lossy_number_error()
    text = _SEPARATORS.sub("", text).upper()
    if not text:
        raise IdNumberError("empty", "身份证号为空", "the ID number is empty")
    return text


def _characters_error() -> IdNumberError:
    return IdNumberError(
        "characters", "身份证号只能包含数字和X", "an ID number may only contain digits and X"
    )


def _lossy_number_error() -> IdNumberError:
    return IdNumberError(
        "lossy_number",
        "身份证号被表格软件存成了数字（科学计数法或末几位变成0），末几位已丢失，"
        "请按证件重新录入并把该列设为文本",
        "the ID number was stored as a number (e.g. 5.30102199001011e+17, or with its last digits "
        "zeroed) and its last digits are lost; re-type it from the card and format the column "
        "as text",
    )


def parse_id_number(raw: str | int | float, *, today: date | None = None) -> IdInfo:
    """Normalise and check an ID number; return what it says about its holder.

    Checks, in order: spelling (see ``normalize_id_number``), length 18 or 20, characters
    (17 digits + digit-or-X, then two digits for a disability card), the birth date in digits
    7-14 (a real calendar date, not before 1900, not after ``today``), the GB 11643-1999 check
    character, and for 20 characters the disability category 1-7 and grade 1-4.

    Raises ``IdNumberError`` with code ``empty``, ``lossy_number``, ``length``, ``characters``,
    ``birth_date``, ``check_digit`` or ``disability_suffix``.
    """
    if isinstance(raw, str | int | float):
        # A roster validation asks about each ID several times (id-valid, id-sex, age-at);
        # valid answers are immutable, so they are memoised (errors are recomputed).
        return _parse_valid(raw, today or date.today())
    return _parse(raw, today or date.today())


@lru_cache(maxsize=8192, typed=True)
def _parse_valid(raw: str | int | float, today: date) -> IdInfo:
    return _parse(raw, today)


def _parse(raw: str | int | float, today: date) -> IdInfo:
    number = normalize_id_number(raw)
    if len(number) not in (18, 20):
        raise IdNumberError(
            "length",
            f"身份证号应为18位（残疾人证号20位），实际为{len(number)}位",
            f"an ID number has 18 characters (20 for a disability card), got {len(number)}",
        )
    base, suffix = number[:18], number[18:]
    if not (
        base[:17].isdigit() and base[:17].isascii() and (base[17].isdigit() or base[17] == "X")
    ):
        raise _characters_error()
    if suffix and not (suffix.isascii() and suffix.isdigit()):
        raise IdNumberError(
            "disability_suffix",
            "残疾人证号第19、20位应为残疾类别和等级数字",
            "characters 19 and 20 of a disability card number must be the category and grade digits",
        )
    birth = _birth_date(base[6:14], today)
    expected = id_check_char(base[:17])
    if base[17] != expected:
        raise IdNumberError(
            "check_digit",
            f"身份证号校验位错误（应为{expected}），请核对是否录错",
            f"the check character is wrong (expected {expected}); the number was probably mistyped",
        )
    category = grade = None
    if suffix:
        category, grade = int(suffix[0]), int(suffix[1])
        if category not in DISABILITY_CATEGORIES or grade not in DISABILITY_GRADES:
            raise IdNumberError(
                "disability_suffix",
                "残疾人证号末两位应为残疾类别（1-7）和等级（1-4）",
                "a disability card number ends with the category (1-7) and grade (1-4)",
            )
    return IdInfo(
        number=number,
        kind="disability_card" if suffix else "resident",
        birth_date=birth,
        sex="male" if int(base[16]) % 2 == 1 else "female",
        region_code=base[:6],
        disability_category=category,
        disability_grade=grade,
    )


def _birth_date(digits: str, today: date) -> date:
    try:
        birth = date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        raise IdNumberError(
            "birth_date",
            f"身份证号第7-14位不是有效的出生日期（{digits}）",
            f"digits 7-14 are not a real birth date ({digits})",
        ) from None
    if birth < _EARLIEST_BIRTH or birth > today:
        raise IdNumberError(
            "birth_date",
            f"身份证号中的出生日期{birth.isoformat()}不合理（应在1900年至今天之间）",
            f"the birth date {birth.isoformat()} is outside 1900-01-01..{today.isoformat()}",
        )
    return birth


def is_valid_id_number(raw: object, *, today: date | None = None) -> bool:
    """True when ``raw`` parses as an ID number (see ``parse_id_number``); never raises."""
    if not isinstance(raw, str | int | float):
        return False
    try:
        parse_id_number(raw, today=today)
    except IdNumberError:
        return False
    return True


def age_on(birth_date: date, on: date) -> int:
    """Age in whole years on ``on`` (a person born 29 February turns a year older on 1 March).

    Returns a negative number when ``on`` is before the birth date; callers decide what that means.
    """
    had_birthday = (on.month, on.day) >= (birth_date.month, birth_date.day)
    return on.year - birth_date.year - (0 if had_birthday else 1)


def school_year_reference(d: date) -> date:
    """1 September of the school year that contains ``d`` (the school year starts in September).

    School age (6-16) is counted on this date: a child surveyed in March 2027 is judged by their age
    on 2026-09-01.
    """
    return date(d.year if d.month >= 9 else d.year - 1, 9, 1)


@dataclass(frozen=True)
class VillageCodeWarning:
    """An unusual but acceptable part of a village code (codes outside the ranges do exist)."""

    code: str  # "township_range" | "village_range" | "province_range"
    message_zh: str
    message_en: str


@dataclass(frozen=True)
class VillageCode:
    """A 12-digit administrative village code split into its levels."""

    province: str  # 2 digits
    prefecture: str  # 2 digits
    county: str  # 2 digits
    township: str  # 3 digits
    village: str  # 3 digits
    warnings: tuple[VillageCodeWarning, ...] = field(default=())

    @property
    def code(self) -> str:
        """The full 12-digit code."""
        return self.province + self.prefecture + self.county + self.township + self.village

    @property
    def county_code(self) -> str:
        """The 6-digit county prefix (a county team's scope)."""
        return self.code[:6]

    @property
    def township_code(self) -> str:
        """The 9-digit township prefix (a township team's scope)."""
        return self.code[:9]

    @property
    def township_kind(self) -> Literal["sub_district", "town", "township"] | None:
        """街道 (001-099), 镇 (100-199), 乡 (200-399); None outside these ranges."""
        number = int(self.township)
        if 1 <= number <= 99:
            return "sub_district"
        if 100 <= number <= 199:
            return "town"
        if 200 <= number <= 399:
            return "township"
        return None

    @property
    def village_kind(self) -> Literal["residents_committee", "village_committee"] | None:
        """居委会 (001-199), 村委会 (200-399); None outside these ranges."""
        number = int(self.village)
        if 1 <= number <= 199:
            return "residents_committee"
        if 200 <= number <= 399:
            return "village_committee"
        return None


def _code_text(raw: str | int) -> str:
    if isinstance(raw, bool):
        return ""
    if isinstance(raw, int):
        return str(raw)
    return _SEPARATORS.sub("", unicodedata.normalize("NFKC", str(raw)))


def parse_village_code(raw: str | int) -> VillageCode:
    """Split a 12-digit village code (行政村代码) into its levels.

    Full-width digits and spaces are normalised. Township numbers outside 001-399, village numbers
    outside 001-399 and province numbers below 11 produce ``warnings`` — such codes exist and are
    never rejected.

    Raises ``VillageCodeError("village_code_format", …)`` unless the code is exactly 12 digits.
    """
    text = _code_text(raw)
    if len(text) != 12 or not text.isascii() or not text.isdigit():
        raise VillageCodeError(
            "village_code_format",
            "行政村代码应为12位数字",
            f"a village code is exactly 12 digits, got {raw!r}",
        )
    parsed = VillageCode(text[:2], text[2:4], text[4:6], text[6:9], text[9:12])
    warnings: list[VillageCodeWarning] = []
    if int(parsed.province) < 11:
        warnings.append(
            VillageCodeWarning(
                "province_range",
                f"省级代码{parsed.province}不在常见范围（11-82）内，请核对",
                f"province code {parsed.province} is outside the usual 11-82; please check",
            )
        )
    if parsed.township_kind is None:
        warnings.append(
            VillageCodeWarning(
                "township_range",
                f"乡级代码{parsed.township}不在001-399范围内，请核对",
                f"township number {parsed.township} is outside 001-399; please check",
            )
        )
    if parsed.village_kind is None:
        warnings.append(
            VillageCodeWarning(
                "village_range",
                f"村级代码{parsed.village}不在001-399范围内，请核对",
                f"village number {parsed.village} is outside 001-399; please check",
            )
        )
    return replace(parsed, warnings=tuple(warnings))


def scope_contains(prefix: str, village_code: str) -> bool:
    """True when ``village_code`` lies inside the data scope ``prefix``.

    A scope is a code prefix of 1-12 digits: province 2, prefecture 4, county 6, township 9,
    village 12. A malformed ``village_code`` is inside no scope (False).

    Raises ``VillageCodeError("scope_prefix_format", …)`` when ``prefix`` is not 1-12 digits — an
    empty prefix would silently mean "the whole country", which no team is ever given.
    """
    if not (1 <= len(prefix) <= 12 and prefix.isascii() and prefix.isdigit()):
        raise VillageCodeError(
            "scope_prefix_format",
            "数据范围应为1至12位行政区划代码前缀",
            f"a scope is a code prefix of 1-12 digits, got {prefix!r}",
        )
    code = _code_text(village_code)
    if len(code) != 12 or not code.isascii() or not code.isdigit():
        return False
    return code.startswith(prefix)


#: The one phone rule: the roster's ``phone`` constraint is ``regex(., PHONE_PATTERN)`` (a test
#: checks it), so the form and :func:`is_valid_phone` never disagree.
PHONE_PATTERN = "^1[0-9]{10}$"
_PHONE = re.compile(PHONE_PATTERN)


def is_valid_phone(raw: object) -> bool:
    """True for a mainland mobile number as the form stores it: 11 ASCII digits starting with 1.

    No separators or full-width digits: the roster form refuses them, and one rule serves both
    (matched the way the form's ``regex()`` matches, with ``re.search``).
    """
    return isinstance(raw, str) and _PHONE.search(raw) is not None


#: A household number as the national platform gives it (digits, e.g. ``53010200120100017``)
#: or as a device generates one (a UUID): ASCII letters, digits and dashes, starting with a
#: letter or digit, at most 64 characters. Anything else (``=HYPERLINK(…)``) is refused by the
#: device and the server alike, so no identifier can become a spreadsheet formula.
HOUSEHOLD_NO_PATTERN = "^[0-9A-Za-z][0-9A-Za-z-]{0,63}$"
#: A survey round label such as ``2026-annual`` or ``monitoring-2026-11``: ASCII letters,
#: digits, ``-`` and ``_``, starting with a letter or digit, at most 40 characters.
ROUND_PATTERN = "^[0-9A-Za-z][0-9A-Za-z_-]{0,39}$"
_HOUSEHOLD_NO = re.compile(HOUSEHOLD_NO_PATTERN[1:-1])
_ROUND = re.compile(ROUND_PATTERN[1:-1])


def is_valid_household_no(raw: object) -> bool:
    """True for a household number of :data:`HOUSEHOLD_NO_PATTERN`'s shape."""
    return isinstance(raw, str) and _HOUSEHOLD_NO.fullmatch(raw) is not None


def is_valid_round(raw: object) -> bool:
    """True for a survey round label of :data:`ROUND_PATTERN`'s shape."""
    return isinstance(raw, str) and _ROUND.fullmatch(raw) is not None
