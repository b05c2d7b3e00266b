"""Record validation: one function, ``validate_record``, used identically on tablet and server.

It checks a record's data (contracts §3) against the definition it was made with and returns every
problem at once as :class:`Issue` objects (contracts §3: code, path with row ids, field name,
1-based row number, zh/en message, severity), plus the *cleaned* record:

* ID numbers (a text field whose constraint tests ``id-valid(.)``) that pass their constraint
  stored in standard form: ASCII digits and an upper-case ``X`` (``forms.identity``);
* values coerced to their field type where nothing is lost (``"12"`` → ``12`` for an integer,
  ``1`` → ``"1"`` for a select whose choice is ``"1"``, ``"a b"`` → ``["a", "b"]`` for a
  select_multiple, an upper-case image hash → lower case);
* values of fields that are not relevant removed — a hidden answer is stale and must not be kept
  (a tablet that hid a question must not upload what was typed there before);
* calculated fields computed;
* unknown keys kept as they came (reported as ``unknown_field`` warnings), so nothing a person
  typed is lost, e.g. a record made on a newer version of the form.

Relevance, calculations, ``required`` and constraints of a field are evaluated after those of
the fields it reads (``FormDefinition.evaluation_order``), in document order otherwise, so a
calculation placed at the end of a form is done before a question above it that depends on it.
A failure inside an expression (an authoring mistake, not the record's) is reported as an
``evaluation`` warning and never raises.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

from forms import identity
from forms.definition import Check, Field, FieldType, FormDefinition
from forms.errors import EvaluationError
from forms.expressions import Call, Environment, EvaluationContext, parse_expression, truthy
from forms.paths import ROW_ID_KEY
from forms.text import LocalizedText

__all__ = [
    "EvaluationContext",
    "Issue",
    "ValidationResult",
    "is_id_field",
    "prefill",
    "standard_changes",
    "validate_record",
]

Severity = Literal["error", "warning"]

_IMAGE = re.compile(r"^sha256:[0-9a-fA-F]{64}$")
_INTEGER_TEXT = re.compile(r"^[+-]?[0-9]+$")
_DECIMAL_TEXT = re.compile(r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$")
_ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_GEOPOINT_KEYS = {"lat", "lon", "alt", "accuracy"}
_TIME = re.compile(
    r"^(?P<h>[0-9]{2}):(?P<m>[0-9]{2})(?::(?P<s>[0-9]{2})(?:\.[0-9]{1,6})?)?"
    r"(?:Z|[+-][0-9]{2}:?[0-9]{2})?$"
)
_DATETIME = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}")
#: Recorded as content-addressed attachments, like a photo (contracts §3): (zh, en) names.
_ATTACHMENT_TYPES = {
    FieldType.IMAGE: ("图片", "image"),
    FieldType.AUDIO: ("录音", "audio"),
    FieldType.VIDEO: ("视频", "video"),
    FieldType.FILE: ("文件", "file"),
}
MAX_POINTS = 5_000  # points of one geotrace/geoshape


@dataclass(frozen=True)
class Issue:
    """One problem of a record (contracts §3).

    Attributes:
        code: stable code: ``required``, ``type``, ``choice``, ``range``, ``constraint``,
            ``unknown_field``, ``rows``, ``row_id``, ``check``, ``evaluation``.
        path: field path with row ids (``members/<row_id>/id_number``); a row without a usable
            id is written ``members/#<row number>``.
        field: the field's name (the last name in the path).
        row: 1-based number of the innermost repeat row, ``None`` at the top level.
        message: zh/en text for people.
        severity: ``error`` (the record is refused) or ``warning`` (accepted, shown).
        check_id: for ``check`` issues, the id of the check.
    """

    code: str
    path: str
    field: str
    row: int | None
    message: LocalizedText
    severity: Severity = "error"
    check_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of contracts §3 (``check`` added for check issues)."""
        out: dict[str, Any] = {
            "code": self.code,
            "path": self.path,
            "row": self.row,
            "field": self.field,
            "message": self.message.to_dict(),
            "severity": self.severity,
        }
        if self.check_id is not None:
            out["check"] = self.check_id
        return out


@dataclass
class ValidationResult:
    """What :func:`validate_record` found: errors, warnings and the cleaned record."""

    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    cleaned: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings do not block a record)."""
        return not self.errors

    @property
    def issues(self) -> list[Issue]:
        """Errors then warnings."""
        return [*self.errors, *self.warnings]

    def add(self, issue: Issue) -> None:
        """Record an issue under its severity."""
        (self.errors if issue.severity == "error" else self.warnings).append(issue)


def _text(zh: str, en: str) -> LocalizedText:
    return LocalizedText({"zh": zh, "en": en})


class _Problem(Exception):
    """A value that cannot be read as its field's type (internal to this module)."""

    def __init__(self, code: str, zh: str, en: str) -> None:
        super().__init__(en)
        self.code = code
        self.message = _text(zh, en)


def _type_problem(zh_type: str, en_type: str, value: Any) -> _Problem:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return _Problem("type", f"应填写{zh_type}，实际为 {shown}", f"expected {en_type}, got {shown}")


def _label_zh(fld: Field) -> str:
    return fld.label.zh if fld.label is not None else fld.name


def _label_en(fld: Field) -> str:
    return fld.label.get("en", fld.name) if fld.label is not None else fld.name


def _is_empty(value: Any) -> bool:
    return value is None or value == "" or value == []


# --- type coercion: raw JSON value → (typed value for expressions, cleaned JSON value) ------------


def _coerce(defn: FormDefinition, fld: Field, value: Any) -> tuple[Any, Any]:
    """Return (typed, json) for a non-empty value of a non-repeat field, or raise _Problem."""
    kind = fld.type
    if kind is FieldType.TEXT:
        if isinstance(value, str):
            return value, value
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return str(value), str(value)
        raise _type_problem("文本", "text", value)
    if kind is FieldType.INTEGER:
        number = _integer(value)
        return number, number
    if kind is FieldType.DECIMAL:
        number = _decimal(value)
        return number, number
    if kind is FieldType.DATE:
        if type(value) is date:
            return value, value.isoformat()
        if isinstance(value, str) and _ISO_DATE.match(value.strip()):
            try:
                parsed = date.fromisoformat(value.strip())
            except ValueError:
                raise _Problem(
                    "type", f"{value} 不是有效日期", f"{value!r} is not a real date"
                ) from None
            return parsed, parsed.isoformat()
        raise _type_problem("日期（YYYY-MM-DD）", "a date YYYY-MM-DD", value)
    if kind is FieldType.SELECT_ONE:
        choice = _choice_value(value)
        _known_choice(defn, fld, choice)
        return choice, choice
    if kind is FieldType.SELECT_MULTIPLE:
        if isinstance(value, str):
            items = value.split()
        elif isinstance(value, list | tuple):
            items = [_choice_value(v) for v in value]
        else:
            raise _type_problem("选项列表", "a list of choice values", value)
        chosen: list[str] = []
        for item in items:
            _known_choice(defn, fld, item)
            if item not in chosen:  # a repeated answer carries no information
                chosen.append(item)
        return chosen, list(chosen)
    if kind is FieldType.BOOLEAN:
        if isinstance(value, bool):
            return value, value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            flag = value.strip().lower() == "true"
            return flag, flag
        if isinstance(value, int) and value in (0, 1):
            return bool(value), bool(value)
        raise _type_problem("是/否", "true or false", value)
    if kind is FieldType.GEOPOINT:
        point = _geopoint(value)
        return point, point
    if kind in _ATTACHMENT_TYPES:
        if isinstance(value, str) and _IMAGE.match(value):
            address = "sha256:" + value[7:].lower()
            return address, address
        zh, en = _ATTACHMENT_TYPES[kind]
        raise _type_problem(
            f"{zh}内容地址 sha256:<64位十六进制>", f"an {en} address sha256:<64 hex>", value
        )
    if kind is FieldType.TIME:
        text = value.strip() if isinstance(value, str) else None
        match = _TIME.match(text) if text else None
        if (
            match is None
            or int(match["h"]) > 23
            or int(match["m"]) > 59
            or int(match["s"] or 0) > 59
        ):
            raise _type_problem("时间（HH:MM 或 HH:MM:SS）", "a time HH:MM[:SS]", value)
        return text, text
    if kind is FieldType.DATETIME:
        text = value.strip() if isinstance(value, str) else None
        try:
            valid = text is not None and _DATETIME.match(text) and datetime.fromisoformat(text)
        except ValueError:
            valid = False
        if not valid:
            raise _type_problem(
                "日期时间（YYYY-MM-DDTHH:MM[:SS][时区]）", "an ISO date-time", value
            )
        return text, text
    if kind in (FieldType.GEOTRACE, FieldType.GEOSHAPE):
        points = _points(value)
        shape = kind is FieldType.GEOSHAPE
        if len(points) < (4 if shape else 2):
            raise _Problem(
                "type",
                f"{'区域至少需要 4 个点（首尾相同）' if shape else '轨迹至少需要 2 个点'}",
                f"a {kind.value} needs at least {4 if shape else 2} points",
            )
        if shape and (points[0]["lat"], points[0]["lon"]) != (points[-1]["lat"], points[-1]["lon"]):
            raise _Problem(
                "type", "区域的最后一个点必须与第一个点相同", "a geoshape must end where it starts"
            )
        return points, points
    if kind is FieldType.RANK:
        if isinstance(value, str):
            items = value.split()
        elif isinstance(value, list | tuple):
            items = [_choice_value(v) for v in value]
        else:
            raise _type_problem("排序后的选项列表", "a ranked list of choice values", value)
        for item in items:
            _known_choice(defn, fld, item)
        if len(set(items)) != len(items):
            raise _Problem("type", "排序中同一选项出现了两次", "a choice is ranked twice")
        return items, list(items)
    raise _type_problem("值", "no value", value)


def _points(value: Any) -> list[dict[str, float]]:
    """A geotrace/geoshape: ODK's ``"lat lon alt acc;lat lon alt acc"`` text, or a list of
    points (each a geopoint text or object) → a list of geopoint objects."""
    if isinstance(value, str):
        parts: list[Any] = [p for p in value.split(";") if p.strip()]
    elif isinstance(value, list | tuple):
        parts = list(value)
    else:
        raise _type_problem("坐标点列表", "a list of points", value)
    if len(parts) > MAX_POINTS:
        raise _Problem("type", f"最多 {MAX_POINTS} 个点", f"at most {MAX_POINTS} points")
    return [_geopoint(p) for p in parts]


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise _type_problem("整数", "a whole number", value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = _number_text(value)
        if _INTEGER_TEXT.match(text) and len(text) <= 30:
            return int(text)
    raise _type_problem("整数", "a whole number", value)


def _number_text(value: str) -> str:
    """A typed number as ASCII: full-width digits, sign and point (what phone keyboards and
    Chinese input methods type, ``１２．５``) folded like ID numbers are, spaces trimmed."""
    return unicodedata.normalize("NFKC", value).strip()


def _decimal(value: Any) -> int | float:
    if isinstance(value, bool):
        raise _type_problem("数字", "a number", value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, str):
        text = _number_text(value)
        if _DECIMAL_TEXT.match(text) and len(text) <= 30:
            return int(text) if _INTEGER_TEXT.match(text) else float(text)
    raise _type_problem("数字", "a number", value)


def _choice_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # choice values are text; 3 and "3" name the same choice
    raise _type_problem("选项值", "a choice value", value)


def _known_choice(defn: FormDefinition, fld: Field, value: str) -> None:
    offered = _plan(defn).choice_values.get(fld.choices) if fld.choices is not None else None
    if offered is None or value not in offered:
        raise _Problem(
            "choice",
            f"“{value}”不是本题的选项",
            f"{value!r} is not one of the choices of {fld.name}",
        )


def _geopoint(value: Any) -> dict[str, float]:
    if isinstance(value, str):
        parts = value.split()
        if 2 <= len(parts) <= 4:
            try:
                numbers = [float(p) for p in parts]
            except ValueError:
                raise _type_problem("坐标", "a geopoint", value) from None
            value = dict(zip(("lat", "lon", "alt", "accuracy"), numbers, strict=False))
    if (
        not isinstance(value, Mapping)
        or not {"lat", "lon"} <= set(value)
        or set(value) - _GEOPOINT_KEYS
    ):
        raise _type_problem(
            "坐标 {lat, lon, alt?, accuracy?}", "a geopoint {lat, lon, alt?, accuracy?}", value
        )
    point: dict[str, float] = {}
    for key in ("lat", "lon", "alt", "accuracy"):
        if key not in value:
            continue
        number = value[key]
        if (
            isinstance(number, bool)
            or not isinstance(number, int | float)
            or not math.isfinite(number)
        ):
            raise _type_problem("坐标数值", f"a number for {key}", number)
        point[key] = number
    if not -90 <= point["lat"] <= 90 or not -180 <= point["lon"] <= 180:
        raise _Problem(
            "range",
            "坐标超出范围（纬度±90，经度±180）",
            "lat must be within ±90 and lon within ±180",
        )
    if point.get("accuracy", 0) < 0:
        raise _Problem("range", "定位精度不能为负数", "accuracy cannot be negative")
    return point


def _json_value(value: Any) -> Any:
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    return value


# --- the plan: what validation derives from a definition, once per form version -------------------


@dataclass(frozen=True)
class _Plan:
    """What every record of one form version is validated with, derived once per definition.

    The server validates every op of every device against the same few published versions; the
    field tables, choice sets and ID-field names were rebuilt for each record before.
    """

    #: schema path of a level ("" or a repeat's path) → the field names defined there.
    level_names: dict[str, frozenset[str]]
    #: schema path of a level → its fields by name.
    known: dict[str, dict[str, Field]]
    #: choice list name → the values it offers.
    choice_values: dict[str, frozenset[str]]
    #: ``id()`` of each calculate field written ``once(...)``.
    once: frozenset[int]
    #: names of the ID-number fields (``is_id_field``), wherever they sit.
    id_names: frozenset[str]


def _build_plan(defn: FormDefinition) -> _Plan:
    level_names: dict[str, frozenset[str]] = {"": frozenset(f.name for f in defn.fields)}
    known: dict[str, dict[str, Field]] = {"": {f.name: f for f in defn.fields}}
    once: set[int] = set()
    id_names: set[str] = set()
    for path, fld in defn.iter_fields():
        if fld.is_repeat:
            level_names[path] = frozenset(sub.name for sub in fld.fields)
            known[path] = {sub.name: sub for sub in fld.fields}
        if fld.type is FieldType.CALCULATE and _computed_once(fld):
            once.add(id(fld))
        if is_id_field(fld):
            id_names.add(fld.name)
    choice_values = {
        name: frozenset(c.value for c in entries) for name, entries in defn.choice_lists.items()
    }
    return _Plan(level_names, known, choice_values, frozenset(once), frozenset(id_names))


def _plan(defn: FormDefinition) -> _Plan:
    plan: _Plan = defn.derived("validation", _build_plan)
    return plan


# --- the validator ------------------------------------------------------------------------------


@dataclass
class _Level:
    """One level being validated: the top of the record or one repeat row."""

    schema_path: str  # "" for the top, "members" for a row of members
    prefix: str  # data path prefix: "" or "members/<row_id>/"
    row: int | None  # 1-based row number, None at the top
    typed: dict[str, Any]  # values as expressions see them
    cleaned: dict[str, Any]  # the JSON output
    rows: tuple[tuple[str, dict[str, Any]], ...]  # enclosing (repeat schema path, typed row)
    env: Environment | None = None  # built on first use; it reads the live typed dicts


class _Validator:
    def __init__(self, defn: FormDefinition, context: EvaluationContext) -> None:
        self.defn = defn
        self.context = context
        self.result = ValidationResult()
        self.plan = _plan(defn)
        self.level_names = self.plan.level_names
        self.labels = defn.choice_labels()
        self.top_typed: dict[str, Any] = {}
        self.hidden: set[str] = set()  # data paths of fields found not relevant
        # Values that are empty or wrong because they could not be read, failed their
        # constraint, were required but missing, or were computed from such a value:
        # (id of the typed dict of their level, field name). A relevance that reads one of
        # them and comes out false is *unknown*: the answers it governs are kept.
        self.unknown: set[tuple[int, str]] = set()
        # Each typed row (by id) → its 1-based position among the rows sent (non-object rows
        # count), its data path prefix (``members/<row_id>/`` or ``members/#<n>/`` when the id
        # is missing, unusable or a duplicate) and its cleaned dict.
        self.row_meta: dict[int, tuple[int, str, dict[str, Any]]] = {}
        # Numbers sent for a text field, as they came (an ID number Excel turned into a number
        # is told apart from one typed as text): (id of the typed dict, field name) → number.
        self.numbers: dict[tuple[int, str], int | float] = {}
        # Type problems wait until relevance is known: a hidden field's bad value is dropped,
        # not reported.
        self.pending: dict[str, list[Issue]] = {}

    # Issues

    def issue(
        self,
        code: str,
        level: _Level,
        name: str,
        message: LocalizedText,
        severity: Severity = "error",
        *,
        path: str | None = None,
        check_id: str | None = None,
    ) -> None:
        self.result.add(
            Issue(
                code=code,
                path=path if path is not None else level.prefix + name,
                field=name,
                row=level.row,
                message=message,
                severity=severity,
                check_id=check_id,
            )
        )

    def env(self, level: _Level, current: Any = None) -> Environment:
        if level.env is None:
            env = Environment(
                values=self.top_typed,
                context=self.context,
                level_names=self.level_names,
                labels=self.labels,
                tables=self.defn.tables,
            )
            for repeat_path, row in level.rows:
                env = env.in_row(repeat_path, row)
            level.env = env
        return level.env.with_current(current) if current is not None else level.env

    def evaluate(self, text: str, level: _Level, name: str, attribute: str, current: Any) -> Any:
        """Evaluate an expression of a field; a failure becomes an ``evaluation`` warning."""
        try:
            return parse_expression(text).evaluate(self.env(level, current))
        except EvaluationError as exc:
            self.issue(
                "evaluation",
                level,
                name,
                _text(
                    f"表单的{attribute}表达式无法计算：{exc.message_zh}",
                    f"the {attribute} expression of {name} could not be evaluated: {exc.message}",
                ),
                "warning",
            )
            raise

    # Values that could not be determined

    def mark_unknown(self, level: _Level, name: str) -> None:
        self.unknown.add((id(level.typed), name))

    def scopes(self, level: _Level) -> list[tuple[str, Mapping[str, Any]]]:
        """Where ``${name}`` is looked up from ``level``: its row, the enclosing rows, the top."""
        return [*reversed(level.rows), ("", self.top_typed)]

    def resolve(
        self, name: str, scopes: list[tuple[str, Mapping[str, Any]]]
    ) -> tuple[str, Mapping[str, Any]] | None:
        for schema, values in scopes:
            if name in self.level_names.get(schema, frozenset()):
                return schema, values
        return None

    def depends_on_unknown(self, text: str, level: _Level) -> bool:
        """True when the expression reads a value that could not be determined."""
        if not self.unknown:
            return False
        base = self.scopes(level)
        for ref in parse_expression(text).references():
            chains = [base]
            for repeat in ref.via:  # a row function: the name is read in each row
                deeper = []
                for chain in chains:
                    found = self.resolve(repeat, chain)
                    if found is None:
                        continue
                    schema, values = found
                    if (id(values), repeat) in self.unknown:
                        return True
                    rows = values.get(repeat)
                    inner = f"{schema}/{repeat}" if schema else repeat
                    if isinstance(rows, list):
                        deeper.extend([(inner, row), *chain] for row in rows)
                chains = deeper
            for chain in chains:
                found = self.resolve(ref.name, chain)
                if found is not None and (id(found[1]), ref.name) in self.unknown:
                    return True
        return False

    # Phase 1: types, row ids, unknown keys

    def read_level(self, data: Mapping[str, Any], level: _Level) -> None:
        known = self.plan.known[level.schema_path]
        for key, value in data.items():
            if level.row is not None and key == ROW_ID_KEY:
                continue
            fld = known.get(key) if isinstance(key, str) else None
            if fld is None:
                level.cleaned[key] = value
                self.issue(
                    "unknown_field",
                    level,
                    str(key),
                    _text(
                        f"表单中没有字段“{key}”，已原样保留",
                        f"the form has no field {key!r}; the value is kept as it came",
                    ),
                    "warning",
                )
                continue
            if id(fld) in self.plan.once and _is_scalar(value):
                level.typed[key] = value  # once(): the value the tablet computed stands
                continue
            if fld.type in (FieldType.NOTE, FieldType.CALCULATE) or _is_empty(value):
                continue  # notes hold no answer; calculations are recomputed below
            if fld.is_repeat:
                self.read_rows(fld, value, level)
                continue
            try:
                typed, cleaned = _coerce(self.defn, fld, value)
            except _Problem as problem:
                level.cleaned[key] = value  # keep what was typed; the error says what is wrong
                self.defer(
                    level.prefix + key,
                    Issue(problem.code, level.prefix + key, key, level.row, problem.message),
                )
                continue
            if _is_empty(cleaned):
                continue  # e.g. a select_multiple of only spaces: no answer, as if left blank
            level.typed[key] = typed
            level.cleaned[key] = cleaned
            if fld.type is FieldType.TEXT and not isinstance(value, str):
                self.numbers[(id(level.typed), key)] = value

    def read_rows(self, fld: Field, value: Any, level: _Level) -> None:
        path = level.prefix + fld.name
        schema = f"{level.schema_path}/{fld.name}" if level.schema_path else fld.name
        if not isinstance(value, list):
            level.cleaned[fld.name] = value
            problem = _type_problem("行列表", "a list of rows", value)
            self.defer(path, Issue("type", path, fld.name, level.row, problem.message))
            return
        typed_rows: list[dict[str, Any]] = []
        cleaned_rows: list[dict[str, Any]] = []
        seen: set[str] = set()
        for index, row in enumerate(value, start=1):
            if not isinstance(row, Mapping):
                cleaned_rows.append(row)
                message = _text(f"第 {index} 行不是对象", f"row {index} is not an object")
                self.defer(path, Issue("type", f"{path}/#{index}", fld.name, index, message))
                continue
            row_id = row.get(ROW_ID_KEY)
            usable = isinstance(row_id, str) and row_id and "/" not in row_id and row_id not in seen
            if not usable:
                message = _text(
                    f"第 {index} 行缺少唯一的行标识 _id",
                    f"row {index} needs a unique string _id without '/'",
                )
                self.defer(path, Issue("row_id", f"{path}/#{index}", fld.name, index, message))
            prefix = f"{path}/{row_id}/" if usable else f"{path}/#{index}/"
            if usable:
                seen.add(row_id)
            typed_row: dict[str, Any] = {ROW_ID_KEY: row_id}
            cleaned_row: dict[str, Any] = {ROW_ID_KEY: row_id} if ROW_ID_KEY in row else {}
            self.row_meta[id(typed_row)] = (index, prefix, cleaned_row)
            child = _Level(schema, prefix, index, typed_row, cleaned_row, ())
            self.read_level(row, child)
            typed_rows.append(typed_row)
            cleaned_rows.append(cleaned_row)
        level.typed[fld.name] = typed_rows
        level.cleaned[fld.name] = cleaned_rows

    def defer(self, path: str, issue: Issue) -> None:
        self.pending.setdefault(path, []).append(issue)

    # Phase 2: relevance, calculations, required, constraints, rows

    def walk_level(self, level: _Level) -> None:
        for fld in self.defn.evaluation_order(level.schema_path):
            path = level.prefix + fld.name
            deferred = self.pending.pop(path, [])
            # None: relevant; True: relevance unknown (it reads a value that could not be
            # determined, so the answers are kept and nothing is required).
            unsure = False
            if fld.relevant is not None:
                try:
                    shown = truthy(
                        self.evaluate(
                            fld.relevant, level, fld.name, "relevant", level.typed.get(fld.name)
                        )
                    )
                except EvaluationError:
                    shown = True  # cannot tell: keep the answer rather than lose it
                if not shown:
                    if not self.depends_on_unknown(fld.relevant, level):
                        self.hide(fld, level, path)
                        continue
                    unsure = True
            for issue in deferred:
                self.result.add(issue)
            if deferred and fld.name not in level.typed:
                self.mark_unknown(level, fld.name)
                continue  # a value of the wrong type: its other rules would only repeat that
            if fld.calculate is not None:
                self.calculate(fld, level)
            if fld.is_repeat:
                self.walk_rows(fld, level, unsure)
                continue
            value = level.typed.get(fld.name)
            if _is_empty(value):
                if fld.name in level.cleaned:
                    continue
                required = None if unsure else self.requirement(fld, level)
                if required is None:
                    self.mark_unknown(level, fld.name)
                elif required:
                    self.mark_unknown(level, fld.name)
                    self.issue(
                        "required",
                        level,
                        fld.name,
                        fld.required_message
                        or _text(f"“{_label_zh(fld)}”为必填项", f"{_label_en(fld)} is required"),
                    )
                continue
            if fld.choice_filter is not None and not self.choices_offered(fld, level, value):
                continue
            if fld.constraint is not None:
                try:
                    passed = truthy(
                        self.evaluate(fld.constraint, level, fld.name, "constraint", value)
                    )
                except EvaluationError:
                    continue
                if passed:
                    self.standardise_id(fld, level)
                else:
                    self.mark_unknown(level, fld.name)
                    message = (
                        self.id_problem(fld, level)
                        or fld.constraint_message
                        or _text(
                            f"“{_label_zh(fld)}”填写的值不符合要求",
                            f"the value of {_label_en(fld)} does not meet its constraint",
                        )
                    )
                    self.issue("constraint", level, fld.name, LocalizedText.from_value(message))

    def choices_offered(self, fld: Field, level: _Level, value: Any) -> bool:
        """Whether every answer of a select with a ``choice_filter`` is a choice the filter
        offers given the other answers (reported as ``choice`` when not). A filter that reads an
        undetermined value, or cannot be evaluated, decides nothing: the answer is kept."""
        text = fld.choice_filter or ""
        if self.depends_on_unknown(text, level):
            return True
        by_value = {c.value: c for c in self.defn.choices_of(fld)}
        chosen = value if isinstance(value, list) else [value]
        refused = []
        for answer in chosen:
            choice = by_value.get(answer)
            if choice is None:
                continue  # reported by the type pass
            env = self.env(level, value).with_choice({**choice.filters, "name": choice.value})
            try:
                offered = parse_expression(text).is_true(env)
            except EvaluationError as exc:
                self.issue(
                    "evaluation",
                    level,
                    fld.name,
                    _text(
                        f"表单的choice_filter表达式无法计算：{exc.message_zh}",
                        f"the choice_filter expression of {fld.name} could not be evaluated: "
                        f"{exc.message}",
                    ),
                    "warning",
                )
                return True
            if not offered:
                refused.append(answer)
        if not refused:
            return True
        self.mark_unknown(level, fld.name)
        shown = "、".join(refused)
        self.issue(
            "choice",
            level,
            fld.name,
            _text(
                f"按已填的答案，“{_label_zh(fld)}”不能选 {shown}",
                f"{', '.join(map(repr, refused))} is not offered for {_label_en(fld)} "
                "given the other answers",
            ),
        )
        return False

    def id_problem(self, fld: Field, level: _Level) -> LocalizedText | None:
        """What exactly is wrong with an ID number whose ``id-valid(.)`` constraint failed.

        The message of ``forms.identity`` (wrong check character and the expected one, a number
        a spreadsheet has already cut short, an impossible birth date, the length) says what to
        do far better than a generic constraint message; ``None`` when the constraint does not
        test ``id-valid(.)`` or the number itself is valid (another part of the rule failed).
        """
        if fld.constraint is None or not parse_expression(fld.constraint).applies_to_current(
            "id-valid"
        ):
            return None
        value = self.numbers.get((id(level.typed), fld.name), level.typed.get(fld.name))
        if not isinstance(value, str | int | float):
            return None
        try:
            identity.parse_id_number(value, today=self.context.today)
        except identity.IdNumberError as exc:
            # "身份证号无效：校验位错误（应为5）…": the usual lead, then what exactly is wrong.
            reason = exc.message_zh
            if reason.startswith("身份证号") and not reason.startswith("身份证号中"):
                reason = reason[len("身份证号") :]
            return _text(f"身份证号无效：{reason}", f"invalid ID number: {exc.message_en}")
        return None

    def standardise_id(self, fld: Field, level: _Level) -> None:
        """Store an accepted ID number in standard form (ASCII digits, upper-case ``X``).

        ``５３０１…ｘ`` and ``5301…x`` validate like ``5301…X``; if each were stored as typed, the
        same person would have several spellings, and a department list, a re-import or a second
        tablet would not find them. Calculations later in the evaluation order read the
        standard form too. Only a number that parses is touched: one the constraint let through
        for another reason (``${id_type} = 'other' or id-valid(.)``) stays as typed.
        """
        value = level.typed.get(fld.name)
        standard = _standard_id(fld, value, self.context.today)
        if standard is not None:
            level.typed[fld.name] = standard
            level.cleaned[fld.name] = standard

    def hide(self, fld: Field, level: _Level, path: str) -> None:
        self.hidden.add(path)
        level.typed.pop(fld.name, None)
        level.cleaned.pop(fld.name, None)

    def requirement(self, fld: Field, level: _Level) -> bool | None:
        """Whether the field is required here; ``None`` when that reads an undetermined value."""
        if isinstance(fld.required, bool):
            return fld.required
        try:
            required = truthy(self.evaluate(fld.required, level, fld.name, "required", None))
        except EvaluationError:
            return False
        if not required and self.depends_on_unknown(fld.required, level):
            return None
        return required

    def calculate(self, fld: Field, level: _Level) -> None:
        try:
            value = self.evaluate(
                fld.calculate or "", level, fld.name, "calculate", level.typed.get(fld.name)
            )
        except EvaluationError:
            level.typed.pop(fld.name, None)
            level.cleaned.pop(fld.name, None)
            self.mark_unknown(level, fld.name)
            return
        if self.depends_on_unknown(fld.calculate or "", level):
            self.mark_unknown(level, fld.name)  # e.g. an age from an invalid ID number
        if _is_empty(value):
            level.typed.pop(fld.name, None)
            level.cleaned.pop(fld.name, None)
            return
        if fld.type is FieldType.CALCULATE:
            typed, cleaned = value, _json_value(value)
        else:
            try:
                typed, cleaned = _coerce(self.defn, fld, _json_value(value))
            except _Problem as problem:
                self.issue(
                    "evaluation",
                    level,
                    fld.name,
                    _text(
                        f"计算结果不符合字段类型：{problem.message.zh}",
                        f"the calculated value does not fit the field: {problem.message['en']}",
                    ),
                    "warning",
                )
                return
        level.typed[fld.name] = typed
        level.cleaned[fld.name] = cleaned

    def walk_rows(self, fld: Field, level: _Level, unsure: bool = False) -> None:
        rows = level.typed.get(fld.name)
        if not isinstance(rows, list):
            rows = []
        count = len(rows)
        required: bool | None = False
        if count == 0:
            required = None if unsure else self.requirement(fld, level)
            if required is not False:
                self.mark_unknown(level, fld.name)
        if required:
            self.issue(
                "required",
                level,
                fld.name,
                _text(
                    f"“{_label_zh(fld)}”至少需要填写一行",
                    f"{_label_en(fld)} needs at least one row",
                ),
            )
        elif not unsure and fld.min_rows is not None and count < fld.min_rows:
            self.issue(
                "rows",
                level,
                fld.name,
                _text(
                    f"至少需要 {fld.min_rows} 行，实际 {count} 行",
                    f"{fld.name} needs at least {fld.min_rows} rows, has {count}",
                ),
            )
        expected = None if unsure else self.repeat_count(fld, level)
        if expected is not None and count != expected:
            self.issue(
                "rows",
                level,
                fld.name,
                _text(
                    f"按 repeat_count 应为 {expected} 行，实际 {count} 行",
                    f"{fld.name} needs exactly {expected} rows (its repeat_count), has {count}",
                ),
            )
        if fld.max_rows is not None and count > fld.max_rows:
            self.issue(
                "rows",
                level,
                fld.name,
                _text(
                    f"最多 {fld.max_rows} 行，实际 {count} 行",
                    f"{fld.name} allows at most {fld.max_rows} rows, has {count}",
                ),
            )
        schema = f"{level.schema_path}/{fld.name}" if level.schema_path else fld.name
        for row_child in self.row_levels(level, rows, schema):
            self.walk_level(row_child)

    def repeat_count(self, fld: Field, level: _Level) -> int | None:
        """The number of rows a computed ``repeat_count`` asks for; ``None`` when there is
        none, it reads an undetermined value, is empty or is not a whole number >= 0 (an
        authoring mistake, reported as an ``evaluation`` warning)."""
        if fld.repeat_count is None:
            return None
        try:
            value = self.evaluate(fld.repeat_count, level, fld.name, "repeat_count", None)
        except EvaluationError:
            return None
        if self.depends_on_unknown(fld.repeat_count, level) or value is None:
            return None
        if isinstance(value, str):
            value = _parse_count(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.issue(
                "evaluation",
                level,
                fld.name,
                _text(
                    f"repeat_count 的结果不是不小于 0 的整数：{value!r}",
                    f"the repeat_count of {fld.name} is not a whole number >= 0: {value!r}",
                ),
                "warning",
            )
            return None
        return value

    def row_levels(self, level: _Level, rows: list[dict[str, Any]], schema: str) -> list[_Level]:
        """The levels of the rows read by :meth:`read_rows`, numbered and named as read."""
        out = []
        for typed_row in rows:
            index, prefix, cleaned_row = self.row_meta[id(typed_row)]
            out.append(
                _Level(
                    schema,
                    prefix,
                    index,
                    typed_row,
                    cleaned_row,
                    (*level.rows, (schema, typed_row)),
                )
            )
        return out

    # Phase 3: checks

    def run_check(self, check: Check, top: _Level) -> None:
        if check.field is None or "/" not in check.field:
            levels = [top]
        else:
            levels = self.levels_for(check.field.split("/")[:-1], top)
        name = check.field.rsplit("/", 1)[-1] if check.field else ""
        for level in levels:
            path = level.prefix + name
            if check.field is not None and path in self.hidden:
                continue  # the check's field is not asked here: nothing to check
            try:
                passed = parse_expression(check.rule).is_true(self.env(level))
            except EvaluationError as exc:
                self.issue(
                    "evaluation",
                    level,
                    name,
                    _text(
                        f"检查规则 {check.id} 无法计算：{exc.message_zh}",
                        f"check {check.id} could not be evaluated: {exc.message}",
                    ),
                    "warning",
                    check_id=check.id,
                )
                continue
            if not passed:
                self.issue("check", level, name, check.message, check.severity, check_id=check.id)

    def levels_for(self, repeats: list[str], top: _Level) -> list[_Level]:
        """Every row level of the (nested) repeat named by ``repeats`` under ``top``."""
        levels = [top]
        fields = self.defn.fields
        for name in repeats:
            fld = next(f for f in fields if f.name == name)
            next_levels: list[_Level] = []
            for level in levels:
                if level.prefix + name in self.hidden:
                    continue
                schema = f"{level.schema_path}/{name}" if level.schema_path else name
                rows = level.typed.get(name)
                if isinstance(rows, list):
                    next_levels.extend(self.row_levels(level, rows, schema))
            levels, fields = next_levels, fld.fields
        return levels


def _parse_count(text: str) -> int | float | str:
    """A count written as text (a select value '3'): the number, else the text unchanged."""
    try:
        return int(text.strip())
    except ValueError:
        return text


def _computed_once(fld: Field) -> bool:
    """A calculation written ``once(...)``: ODK computes it the first time only."""
    if not fld.calculate:
        return False
    root = parse_expression(fld.calculate).root
    return isinstance(root, Call) and root.name == "once"


def is_id_field(fld: Field) -> bool:
    """True for a text field whose constraint tests ``id-valid(.)``: it holds an ID number."""
    return (
        fld.type is FieldType.TEXT
        and fld.constraint is not None
        and parse_expression(fld.constraint).applies_to_current("id-valid")
    )


def _standard_id(fld: Field, value: Any, today: date) -> str | None:
    if not is_id_field(fld) or not isinstance(value, str | int) or isinstance(value, bool):
        return None
    try:
        return identity.parse_id_number(value, today=today).number
    except identity.IdNumberError:
        return None


def standard_changes(
    defn: FormDefinition, changes: Mapping[str, Any], today: date
) -> dict[str, Any]:
    """An op's ``changes`` with every valid ID number in standard form (see ``validate_record``).

    The server merges these instead of the op's own values, so the stored state, what devices
    download and the conflict rule "same value" (docs/protocol-merge.md §5) all see one
    spelling of a number, while the op itself — the field history — keeps what was typed.
    Paths that are not ID fields, tombstones and numbers that do not parse pass unchanged.
    """
    id_names = _plan(defn).id_names
    out = dict(changes)
    if not id_names:
        return out
    for path, value in changes.items():
        # Only a path ending in an ID field's name can name one: the others skip the lookup.
        if not path or path.rpartition("/")[2] not in id_names:
            continue
        fld = defn.find_field(path)
        standard = _standard_id(fld, value, today) if fld is not None else None
        if standard is not None:
            out[path] = standard
    return out


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool) and value != ""


def validate_record(
    defn: FormDefinition, data: Mapping[str, Any], context: EvaluationContext | None = None
) -> ValidationResult:
    """Validate a record's data against the definition it was made with.

    Never raises for bad data: every problem is an :class:`Issue` in ``errors`` or ``warnings``,
    and ``cleaned`` holds the record as it should be stored (see the module docstring).
    ``context`` supplies ``today()`` and ``config(...)``; by default today is the local date and
    the configuration is empty.
    """
    context = context or EvaluationContext()
    validator = _Validator(defn, context)
    if not isinstance(data, Mapping):
        validator.result.add(
            Issue(
                "type",
                "",
                "",
                None,
                _text(
                    "记录数据应为对象（字段名→值）", "record data must be an object (field → value)"
                ),
            )
        )
        return validator.result
    top = _Level("", "", None, validator.top_typed, {}, ())
    validator.read_level(data, top)
    validator.walk_level(top)
    for check in defn.checks:
        validator.run_check(check, top)
    validator.result.cleaned = top.cleaned
    return validator.result


def prefill(
    defn: FormDefinition, data: Mapping[str, Any], context: EvaluationContext | None = None
) -> dict[str, Any]:
    """The record ``data`` with each empty field that has a ``default`` filled with it.

    What a tablet does when a record (or a repeat row: pass the row already in ``data``) is
    made: defaults are evaluated level by level in evaluation order, so ``${people} - 1`` sees
    the prefilled ``people``; a value already there is never replaced. A default that cannot be
    evaluated, is empty or does not fit the field's type leaves the field empty (validation
    then says what is missing). Returns a new dict; ``data`` is not changed.
    """
    context = context or EvaluationContext()
    level_names: dict[str, frozenset[str]] = {"": frozenset(f.name for f in defn.fields)}
    for path, fld in defn.iter_fields():
        if fld.is_repeat:
            level_names[path] = frozenset(sub.name for sub in fld.fields)
    out = dict(data)
    top = Environment(
        values=out,
        context=context,
        level_names=level_names,
        labels=defn.choice_labels(),
        tables=defn.tables,
    )
    _prefill_level(defn, "", out, top)
    return out


def _prefill_level(
    defn: FormDefinition, schema: str, values: dict[str, Any], env: Environment
) -> None:
    for fld in defn.evaluation_order(schema):
        if fld.is_repeat:
            rows = values.get(fld.name)
            if not isinstance(rows, list):
                continue
            inner = f"{schema}/{fld.name}" if schema else fld.name
            filled = []
            for row in rows:
                if isinstance(row, Mapping):
                    row = dict(row)
                    _prefill_level(defn, inner, row, env.in_row(inner, row))
                filled.append(row)
            values[fld.name] = filled
            continue
        if fld.default is None or not _is_empty(values.get(fld.name)):
            continue
        try:
            value = parse_expression(fld.default).evaluate(env)
            if _is_empty(value):
                continue
            _, cleaned = _coerce(defn, fld, _json_value(value))
        except (EvaluationError, _Problem):
            continue
        values[fld.name] = cleaned
