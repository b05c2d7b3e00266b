"""Form definitions: the model, the marshmallow schema that guards it, the loader and the dumper.

The document format is fixed by docs/contracts.md §1 and described for authors in docs/forms.md.
``load_definition`` is the only way in from JSON: it checks the document's shape with a marshmallow
schema, then its meaning (unique names, known choice lists, expressions that parse and refer only to
fields in scope, upgrade targets that exist) and reports *every* problem it finds at once, each with
its location, in a :class:`~forms.errors.FormDefinitionError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from marshmallow import RAISE, Schema, ValidationError, validate
from marshmallow import fields as mf

from forms.errors import (
    DefinitionIssue,
    ExpressionError,
    FormDefinitionError,
    UnknownFieldError,
)
from forms.expressions import (
    FUNCTIONS,
    Binary,
    Call,
    Expression,
    Reference,
    Unary,
    parse_expression,
)
from forms.paths import ORDER_KEY, split_path
from forms.text import LocalizedText, TextError

__all__ = [
    "Check",
    "Choice",
    "Field",
    "FieldType",
    "FormDefinition",
    "MergePolicy",
    "UpgradeSpec",
    "dump_definition",
    "load_definition",
]

NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
MAX_REPEAT_DEPTH = 4  # repeats inside repeats: deeper nesting is refused (nobody needs it)
MergePolicy = Literal["lww", "review"]
EXPRESSION_ATTRIBUTES = (
    "required",
    "relevant",
    "constraint",
    "calculate",
    "choice_filter",
    "repeat_count",
    "default",
)


class FieldType(StrEnum):
    """The type of a field; the value shape of each is fixed by contracts §3."""

    TEXT = "text"
    INTEGER = "integer"
    DECIMAL = "decimal"
    DATE = "date"
    SELECT_ONE = "select_one"
    SELECT_MULTIPLE = "select_multiple"
    BOOLEAN = "boolean"
    GEOPOINT = "geopoint"
    IMAGE = "image"
    TIME = "time"
    DATETIME = "datetime"
    AUDIO = "audio"
    VIDEO = "video"
    FILE = "file"
    GEOTRACE = "geotrace"
    GEOSHAPE = "geoshape"
    RANK = "rank"
    REPEAT = "repeat"
    NOTE = "note"
    CALCULATE = "calculate"


@dataclass(frozen=True)
class Choice:
    """One entry of a choice list: the stored ``value``, its localized ``label`` and the filter
    columns a ``choice_filter`` reads (``{"county": "c1"}``; XLSForm's extra choices columns)."""

    value: str
    label: LocalizedText
    filters: Mapping[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Field:
    """One question (or group, note, calculation) of a form. Immutable; see contracts §1."""

    name: str
    type: FieldType
    label: LocalizedText | None = None
    hint: LocalizedText | None = None
    required: bool | str = False
    relevant: str | None = None
    constraint: str | None = None
    constraint_message: LocalizedText | None = None
    calculate: str | None = None
    required_message: LocalizedText | None = None
    guidance_hint: LocalizedText | None = None
    choices: str | None = None
    unit: str | None = None
    merge: MergePolicy = "lww"
    sensitive: bool = False
    fields: tuple[Field, ...] = ()
    min_rows: int | None = None
    max_rows: int | None = None
    #: select fields: an expression per choice (``choice('county') = ${county}``); only the
    #: choices for which it is true are offered and accepted.
    choice_filter: str | None = None
    #: repeats: an expression giving the number of rows (``${household_size}``): exactly that many.
    repeat_count: str | None = None
    #: the value a new record is prefilled with (an expression; a literal for a static default).
    default: str | None = None

    @property
    def is_repeat(self) -> bool:
        """True for a repeat group (its value is a list of rows)."""
        return self.type is FieldType.REPEAT

    def child(self, name: str) -> Field | None:
        """Return the direct child field ``name`` of a repeat, or ``None``."""
        for sub in self.fields:
            if sub.name == name:
                return sub
        return None


@dataclass(frozen=True)
class Check:
    """A cross-field rule: passes when ``rule`` is true; per row when ``field`` is in a repeat."""

    id: str
    rule: str
    message: LocalizedText
    severity: Literal["error", "warning"] = "error"
    field: str | None = None


@dataclass(frozen=True)
class UpgradeSpec:
    """How records of version ``from_version`` map onto this version (paths without row ids)."""

    from_version: int
    renames: Mapping[str, str] = field(default_factory=dict)
    drops: tuple[str, ...] = ()


@dataclass(frozen=True)
class FormDefinition:
    """A versioned form. Build it with :func:`load_definition`; compare with ``==``.

    Mappings held here (``choice_lists``, ``upgrade.renames``) must not be mutated.
    """

    id: str
    version: int
    title: LocalizedText
    fields: tuple[Field, ...]
    subject: str = "household"
    choice_lists: Mapping[str, tuple[Choice, ...]] = field(default_factory=dict)
    checks: tuple[Check, ...] = ()
    upgrade: UpgradeSpec | None = None
    #: The XLSForm ``version`` as written (``2026-11-25 v3``), when it is not just ``version``'s
    #: digits: ODK orders versions by this string; ``version`` stays our internal sequence.
    odk_version: str | None = None
    #: The XLSForm ``form_id`` as written (``Household-Survey.v2``) when ``id`` had to differ.
    odk_form_id: str | None = None
    #: Data tables read by ``pulldata('name', …)``: rows of an attached CSV, column → text.
    tables: Mapping[str, tuple[Mapping[str, str], ...]] = field(default_factory=dict)
    _index: dict[str, Field] = field(init=False, repr=False, compare=False, hash=False)
    _orders: dict[str, tuple[Field, ...]] = field(init=False, repr=False, compare=False, hash=False)
    _labels: dict[str, dict[str, str]] = field(init=False, repr=False, compare=False, hash=False)
    #: Schema path of a level ("" or a group's path) → its fields by name, built once: path
    #: lookups run for every changed field of every op the server ingests.
    _levels: dict[str, dict[str, Field]] = field(init=False, repr=False, compare=False, hash=False)
    #: What other modules derive from a definition once (``derived``): the validator's plan.
    _derived: dict[str, Any] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        index: dict[str, Field] = {}
        levels: dict[str, dict[str, Field]] = {"": {}}
        for path, fld in _walk(self.fields, ""):
            index[path] = fld
            levels.setdefault(path.rpartition("/")[0], {})[fld.name] = fld
            levels.setdefault(path, {})
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_orders", {})
        labels: dict[str, dict[str, str]] = {}
        for fld in index.values():
            if fld.choices is not None:
                entries = self.choice_lists.get(fld.choices, ())
                labels[fld.name] = {c.value: c.label.zh for c in entries}
        object.__setattr__(self, "_labels", labels)
        object.__setattr__(self, "_levels", levels)
        object.__setattr__(self, "_derived", {})

    def derived(self, key: str, build: Callable[[FormDefinition], Any]) -> Any:
        """``build(self)``, computed once per definition and kept under ``key``.

        A definition never changes, so what is computed from it (the validator's compiled plan)
        holds for every record of the version; the server keeps one definition per published
        version for the life of the process.
        """
        found = self._derived.get(key)
        if found is None:
            found = build(self)
            self._derived[key] = found  # benign race: every thread builds an equal value
        return found

    def evaluation_order(self, level: str = "") -> tuple[Field, ...]:
        """The fields of one level (``""`` or a repeat's schema path) in evaluation order.

        A field comes after the fields of its level that its ``relevant``, ``calculate``,
        ``required`` and ``constraint`` expressions (and those of everything inside it, for a
        repeat) read, so a calculation is done before anything that uses it, wherever it sits in
        the document; otherwise document order is kept. Fields caught in a cycle keep document
        order.

        Raises:
            UnknownFieldError: when ``level`` is not the top or a repeat.
        """
        cached = self._orders.get(level)
        if cached is None:
            cached = _evaluation_order(self, level)
            self._orders[level] = cached  # benign race: every thread computes the same tuple
        return cached

    @property
    def key(self) -> str:
        """``"<id>@<version>"``, handy in logs and caches."""
        return f"{self.id}@{self.version}"

    def iter_fields(self) -> Iterator[tuple[str, Field]]:
        """Yield ``(schema_path, field)`` for every field, depth first in document order.

        Paths have no row ids: ``members``, then ``members/name``, ...
        """
        yield from self._index.items()

    def field_at(self, schema_path: str) -> Field | None:
        """The field at an exact schema path (``members/name``; no row ids), or ``None``."""
        return self._index.get(schema_path)

    def find_field(self, path: str) -> Field | None:
        """Like :meth:`field` but returns ``None`` for an unknown path."""
        # A schema path (every top-level field, most changed paths of an op) is its own answer:
        # walking the segments is what a data path with row ids needs.
        found_here = self._index.get(path)
        if found_here is not None:
            return found_here
        try:
            segments = split_path(path)
        except ValueError:
            return None
        found = self._resolve(segments)
        return found[0] if found else None

    def field(self, path: str) -> Field:
        """Return the field a path names.

        Accepts schema paths (``members/name``) and data paths with row ids
        (``members/<row_id>/name``); a row path ``members/<row_id>`` names the repeat itself.

        Raises:
            UnknownFieldError: when no field has that path.
        """
        found = self.find_field(path)
        if found is None:
            raise UnknownFieldError(
                message=f"form {self.key} has no field {path!r}",
                message_zh=f"表单 {self.key} 中没有字段 {path!r}",
            )
        return found

    def _resolve(self, segments: list[str]) -> tuple[Field, str] | None:
        """Walk segments; return the field reached and the schema path, or None."""
        level = self._levels[""]
        current: Field | None = None
        names: list[str] = []
        after_row = False  # a row id is always followed by a field name
        i = 0
        while i < len(segments):
            seg = segments[i]
            if current is not None and current.is_repeat and seg not in level and not after_row:
                # A row id (or the row's _order): it selects a row, not a field.
                if i + 1 == len(segments) or (i + 2 == len(segments) and segments[-1] == ORDER_KEY):
                    return current, "/".join(names)
                i += 1
                after_row = True
                continue
            after_row = False
            nxt = level.get(seg)
            if nxt is None:
                return None
            current = nxt
            names.append(seg)
            level = self._levels["/".join(names)]
            i += 1
        if current is None:
            return None
        return current, "/".join(names)

    def schema_path_of(self, path: str) -> str:
        """Return the schema path (no row ids) of a data or schema path.

        Raises:
            UnknownFieldError: when the path names no field.
        """
        found = self._resolve(split_path(path)) if path else None
        if found is None:
            raise UnknownFieldError(
                message=f"form {self.key} has no field {path!r}",
                message_zh=f"表单 {self.key} 中没有字段 {path!r}",
            )
        return found[1]

    def merge_policy(self, path: str) -> MergePolicy:
        """Return ``"lww"`` or ``"review"`` for a field path (row ids allowed).

        Row paths and ``_order`` paths take the repeat's policy; unknown paths are ``"lww"``.
        """
        found = self.find_field(path)
        return found.merge if found is not None else "lww"

    def sensitive_paths(self) -> frozenset[str]:
        """Schema paths of the sensitive fields (ID numbers, phones, health)."""
        return frozenset(p for p, f in self._index.items() if f.sensitive)

    def is_sensitive(self, path: str) -> bool:
        """True when a data or schema path names a sensitive field."""
        found = self.find_field(path)
        return bool(found and found.sensitive)

    def choices_of(self, fld: Field) -> tuple[Choice, ...]:
        """Return the choice list of a select field (empty for other fields)."""
        if fld.choices is None:
            return ()
        return tuple(self.choice_lists.get(fld.choices, ()))

    def choice_labels(self) -> Mapping[str, Mapping[str, str]]:
        """Field name → choice value → its Chinese label, for every select/rank field (what
        ``jr:choice-name(${x}, '${x}')`` reads; pass it as ``Environment(labels=...)``)."""
        return self._labels  # computed once: validation reads it for every record

    def parent_of(self, path: str) -> str | None:
        """Schema path of the repeat that contains a schema path, or ``None`` at the top level."""
        head, _, _ = path.rpartition("/")
        return head or None


def _walk(fields: tuple[Field, ...], prefix: str) -> Iterator[tuple[str, Field]]:
    for fld in fields:
        path = f"{prefix}{fld.name}"
        yield path, fld
        if fld.fields:
            yield from _walk(fld.fields, path + "/")


# --- marshmallow schema (the shape) -------------------------------------------------------------


class _TextField(mf.Field):
    """Localized text: a string (meaning zh) or a map language → text with zh."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        try:
            return LocalizedText.from_value(value)
        except TextError as exc:
            raise ValidationError(str(exc)) from exc

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return None if value is None else LocalizedText.from_value(value).to_dict()


class _RequiredField(mf.Field):
    """``required``: a boolean or a non-empty expression string."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip():
            return value
        raise ValidationError("must be true, false or an expression string")


_NAME = validate.Regexp(NAME_PATTERN, error="must match [a-z][a-z0-9_]* (lower-case ASCII)")
_EXPR = validate.Length(min=1, max=4000)


class ChoiceSchema(Schema):
    """One choice: value (no spaces: select_multiple answers are space-separated in XLSForm)."""

    class Meta:
        unknown = RAISE

    value = mf.String(
        required=True,
        validate=[
            validate.Length(min=1, max=100),
            validate.Regexp(r"^\S+$", error="must not contain spaces"),
        ],
    )
    label = _TextField(required=True)
    filters = mf.Dict(
        keys=mf.String(validate=_NAME),
        values=mf.String(validate=validate.Length(max=1000)),
        load_default=dict,
    )


class FieldSchema(Schema):
    """The shape of one FIELD (contracts §1)."""

    class Meta:
        unknown = RAISE

    name = mf.String(required=True, validate=_NAME)
    type = mf.String(required=True, validate=validate.OneOf([t.value for t in FieldType]))
    label = _TextField(load_default=None)
    hint = _TextField(load_default=None)
    required = _RequiredField(load_default=False)
    relevant = mf.String(load_default=None, validate=_EXPR)
    constraint = mf.String(load_default=None, validate=_EXPR)
    constraint_message = _TextField(load_default=None)
    required_message = _TextField(load_default=None)
    guidance_hint = _TextField(load_default=None)
    calculate = mf.String(load_default=None, validate=_EXPR)
    choices = mf.String(load_default=None, validate=_NAME)
    unit = mf.String(load_default=None, validate=validate.Length(min=1, max=40))
    merge = mf.String(load_default="lww", validate=validate.OneOf(["lww", "review"]))
    sensitive = mf.Boolean(load_default=False, truthy={True}, falsy={False})
    fields = mf.List(mf.Nested(lambda: FieldSchema()), load_default=None)
    min_rows = mf.Integer(load_default=None, strict=True, validate=validate.Range(min=0))
    max_rows = mf.Integer(load_default=None, strict=True, validate=validate.Range(min=1))
    choice_filter = mf.String(load_default=None, validate=_EXPR)
    repeat_count = mf.String(load_default=None, validate=_EXPR)
    default = mf.String(load_default=None, validate=_EXPR)


class CheckSchema(Schema):
    """The shape of one CHECK (contracts §1)."""

    class Meta:
        unknown = RAISE

    id = mf.String(required=True, validate=_NAME)
    severity = mf.String(load_default="error", validate=validate.OneOf(["error", "warning"]))
    field = mf.String(load_default=None, validate=validate.Length(min=1))
    rule = mf.String(required=True, validate=_EXPR)
    message = _TextField(required=True)


class UpgradeSchema(Schema):
    """The ``upgrade`` block: renames and drops from the previous version."""

    class Meta:
        unknown = RAISE

    from_version = mf.Integer(required=True, strict=True, validate=validate.Range(min=1))
    renames = mf.Dict(
        keys=mf.String(validate=validate.Length(min=1)),
        values=mf.String(validate=validate.Length(min=1)),
        load_default=dict,
    )
    drops = mf.List(mf.String(validate=validate.Length(min=1)), load_default=list)


class FormDefinitionSchema(Schema):
    """The shape of a whole form definition document (contracts §1)."""

    class Meta:
        unknown = RAISE

    id = mf.String(required=True, validate=_NAME)
    version = mf.Integer(required=True, strict=True, validate=validate.Range(min=1))
    title = _TextField(required=True)
    subject = mf.String(load_default="household", validate=_NAME)
    fields = mf.List(
        mf.Nested(FieldSchema), required=True, validate=validate.Length(min=1, max=2000)
    )
    choice_lists = mf.Dict(
        keys=mf.String(validate=_NAME),
        values=mf.List(mf.Nested(ChoiceSchema), validate=validate.Length(min=1)),
        load_default=dict,
    )
    checks = mf.List(mf.Nested(CheckSchema), load_default=list)
    upgrade = mf.Nested(UpgradeSchema, load_default=None)
    odk_version = mf.String(load_default=None, validate=validate.Length(min=1, max=200))
    odk_form_id = mf.String(load_default=None, validate=validate.Length(min=1, max=200))
    tables = mf.Dict(
        keys=mf.String(validate=validate.Length(min=1, max=100)),
        values=mf.List(mf.Dict(keys=mf.String(), values=mf.String())),
        load_default=dict,
    )


_SCHEMA = FormDefinitionSchema()
_USABLE_LABEL = re.compile(r"^[^\s/]{1,100}$")


# --- loader ------------------------------------------------------------------------------------


def _schema_issues(messages: Any, raw: Any, where: list[str]) -> list[DefinitionIssue]:
    """Flatten marshmallow's nested error messages into located issues.

    A list index becomes the item's name when it has a usable one (``fields/members``), else an
    index (``fields[3]``), so authors find the place in a document they wrote by hand.
    """
    issues: list[DefinitionIssue] = []
    path = "/".join(where) or "(document)"
    if isinstance(messages, str):
        return [DefinitionIssue(path, messages)]
    if isinstance(messages, list | tuple):
        for message in messages:
            issues.extend(_schema_issues(message, raw, where))
        return issues
    if not isinstance(messages, dict):
        return [DefinitionIssue(path, str(messages))]
    for key, sub in messages.items():
        if isinstance(key, int):
            item = raw[key] if isinstance(raw, list) and 0 <= key < len(raw) else None
            container = where[-1] if where else ""
            label_key = {"fields": "name", "checks": "id"}.get(container, "value")
            label = item.get(label_key) if isinstance(item, dict) else None
            if isinstance(label, str) and _USABLE_LABEL.match(label):
                issues.extend(_schema_issues(sub, item, [*where, label]))
            else:
                head = where[-1] if where else ""
                issues.extend(_schema_issues(sub, item, [*where[:-1], f"{head}[{key}]"]))
        elif key in ("key", "value") and not (isinstance(raw, dict) and key in raw):
            # marshmallow Dict errors: {dict_key: {"key": [...], "value": [...]}}
            issues.extend(_schema_issues(sub, raw, where if key == "value" else [*where, "(key)"]))
        else:
            child = raw.get(key) if isinstance(raw, dict) else None
            issues.extend(_schema_issues(sub, child, [*where, str(key)]))
    return issues


def _nesting_problem(data: Mapping[str, Any]) -> DefinitionIssue | None:
    """Refuse absurdly nested ``fields`` before the recursive schema walks them."""
    stack: list[tuple[Any, int, str]] = [(data.get("fields"), 1, "fields")]
    while stack:
        fields, depth, where = stack.pop()
        if not isinstance(fields, list):
            continue
        if depth > MAX_REPEAT_DEPTH:
            return DefinitionIssue(
                where, f"repeats nest at most {MAX_REPEAT_DEPTH - 1} deep", "repeat_too_deep"
            )
        for index, item in enumerate(fields):
            if isinstance(item, Mapping):
                stack.append((item.get("fields"), depth + 1, f"{where}[{index}]/fields"))
    return None


def load_definition(data: Mapping[str, Any]) -> FormDefinition:
    """Validate a definition document and build the immutable :class:`FormDefinition`.

    Checks the shape (marshmallow), then the meaning: field names unique at their level, choice
    lists present for select fields and only there, sub-fields only in repeats, repeat nesting and
    row limits, every expression parses and refers only to fields in scope, check ids unique and
    their fields known, upgrade rename targets present.

    Raises:
        FormDefinitionError: with every problem found, each located (``fields/members/fields/age/
            constraint``; ``fields[3]/type`` when the field has no usable name) and, for
            expressions, with the character position.
    """
    if not isinstance(data, Mapping):
        raise FormDefinitionError(
            [DefinitionIssue("(document)", "a form definition is a JSON object")]
        )
    too_deep = _nesting_problem(data)
    if too_deep is not None:
        raise FormDefinitionError([too_deep])
    try:
        loaded = _SCHEMA.load(dict(data))
    except ValidationError as exc:
        raise FormDefinitionError(_schema_issues(exc.messages, data, [])) from exc

    issues: list[DefinitionIssue] = []
    choice_lists = {
        key: tuple(
            Choice(value=c["value"], label=c["label"], filters=dict(c["filters"])) for c in entries
        )
        for key, entries in loaded["choice_lists"].items()
    }
    for key, entries in choice_lists.items():
        seen: set[str] = set()
        for choice in entries:
            if choice.value in seen:
                issues.append(
                    DefinitionIssue(
                        f"choice_lists/{key}/{choice.value}",
                        f"choice value {choice.value!r} appears twice in list {key!r}",
                        "duplicate_choice",
                    )
                )
            seen.add(choice.value)

    fields = _build_fields(loaded["fields"], "fields", 1, choice_lists, issues)
    checks = tuple(
        Check(
            id=c["id"],
            rule=c["rule"],
            message=c["message"],
            severity=c["severity"],
            field=c["field"],
        )
        for c in loaded["checks"]
    )
    upgrade = None
    if loaded["upgrade"] is not None:
        up = loaded["upgrade"]
        upgrade = UpgradeSpec(
            from_version=up["from_version"], renames=dict(up["renames"]), drops=tuple(up["drops"])
        )
    defn = FormDefinition(
        id=loaded["id"],
        version=loaded["version"],
        title=loaded["title"],
        subject=loaded["subject"],
        fields=fields,
        choice_lists=choice_lists,
        checks=checks,
        upgrade=upgrade,
        odk_version=loaded["odk_version"],
        odk_form_id=loaded["odk_form_id"],
        tables={name: tuple(dict(r) for r in rows) for name, rows in loaded["tables"].items()},
    )
    _check_meaning(defn, issues)
    if issues:
        raise FormDefinitionError(issues)
    return defn


def _build_fields(
    raw_fields: list[dict[str, Any]],
    where: str,
    depth: int,
    choice_lists: Mapping[str, tuple[Choice, ...]],
    issues: list[DefinitionIssue],
) -> tuple[Field, ...]:
    built: list[Field] = []
    seen: set[str] = set()
    for raw in raw_fields:
        name = raw["name"]
        path = f"{where}/{name}"
        ftype = FieldType(raw["type"])
        if name in seen:
            issues.append(
                DefinitionIssue(
                    path, f"field name {name!r} is used twice at this level", "duplicate_name"
                )
            )
        seen.add(name)
        is_select = ftype in (FieldType.SELECT_ONE, FieldType.SELECT_MULTIPLE, FieldType.RANK)
        if is_select and raw["choices"] is None:
            issues.append(
                DefinitionIssue(
                    f"{path}/choices",
                    "a select field needs 'choices' (a key of choice_lists)",
                    "missing_choices",
                )
            )
        elif is_select and raw["choices"] not in choice_lists:
            issues.append(
                DefinitionIssue(
                    f"{path}/choices",
                    f"no choice list named {raw['choices']!r}",
                    "unknown_choice_list",
                )
            )
        elif not is_select and raw["choices"] is not None:
            issues.append(
                DefinitionIssue(
                    f"{path}/choices",
                    "only select_one/select_multiple fields take 'choices'",
                    "unexpected_attribute",
                )
            )
        if raw["label"] is None and ftype is not FieldType.CALCULATE:
            issues.append(
                DefinitionIssue(
                    f"{path}/label",
                    "a label is required (only calculate fields may omit it)",
                    "missing_label",
                )
            )
        if ftype is FieldType.CALCULATE and raw["calculate"] is None:
            issues.append(
                DefinitionIssue(
                    f"{path}/calculate",
                    "a calculate field needs a 'calculate' expression",
                    "missing_calculate",
                )
            )
        if not is_select and raw["choice_filter"] is not None:
            issues.append(
                DefinitionIssue(
                    f"{path}/choice_filter",
                    "only select_one/select_multiple fields take 'choice_filter'",
                    "unexpected_attribute",
                )
            )
        if (
            ftype in (FieldType.NOTE, FieldType.CALCULATE, FieldType.REPEAT)
            and raw["default"] is not None
        ):
            issues.append(
                DefinitionIssue(
                    f"{path}/default",
                    f"a {ftype} field takes no default (nobody types its value)",
                    "unexpected_attribute",
                )
            )
        if ftype in (FieldType.NOTE, FieldType.CALCULATE) and raw["constraint"] is not None:
            issues.append(
                DefinitionIssue(
                    f"{path}/constraint",
                    f"a {ftype} field takes no constraint",
                    "unexpected_attribute",
                )
            )
        children: tuple[Field, ...] = ()
        if ftype is FieldType.REPEAT:
            if not raw["fields"]:
                issues.append(
                    DefinitionIssue(
                        f"{path}/fields", "a repeat needs at least one field", "empty_repeat"
                    )
                )
            elif depth >= MAX_REPEAT_DEPTH:
                issues.append(
                    DefinitionIssue(
                        path, f"repeats nest at most {MAX_REPEAT_DEPTH - 1} deep", "repeat_too_deep"
                    )
                )
            else:
                children = _build_fields(
                    raw["fields"], f"{path}/fields", depth + 1, choice_lists, issues
                )
            lo, hi = raw["min_rows"], raw["max_rows"]
            if lo is not None and hi is not None and lo > hi:
                issues.append(
                    DefinitionIssue(
                        f"{path}/min_rows", "min_rows is larger than max_rows", "bad_rows"
                    )
                )
            if raw["calculate"] is not None or raw["constraint"] is not None:
                issues.append(
                    DefinitionIssue(
                        path,
                        "a repeat takes no calculate or constraint (use checks)",
                        "unexpected_attribute",
                    )
                )
        else:
            for attr in ("fields", "min_rows", "max_rows", "repeat_count"):
                if raw[attr] is not None:
                    issues.append(
                        DefinitionIssue(
                            f"{path}/{attr}",
                            f"only repeat fields take {attr!r}",
                            "unexpected_attribute",
                        )
                    )
        built.append(
            Field(
                name=name,
                type=ftype,
                label=raw["label"],
                hint=raw["hint"],
                required=raw["required"],
                relevant=raw["relevant"],
                constraint=raw["constraint"],
                constraint_message=raw["constraint_message"],
                calculate=raw["calculate"],
                required_message=raw["required_message"],
                guidance_hint=raw["guidance_hint"],
                choices=raw["choices"],
                unit=raw["unit"],
                merge=raw["merge"],
                sensitive=raw["sensitive"],
                fields=children,
                min_rows=raw["min_rows"],
                max_rows=raw["max_rows"],
                choice_filter=raw["choice_filter"],
                repeat_count=raw["repeat_count"],
                default=raw["default"],
            )
        )
    return tuple(built)


def _doc_path(schema_path: str) -> str:
    """``members/age`` → ``fields/members/fields/age`` (the location in the document)."""
    return "/".join(f"fields/{seg}" for seg in schema_path.split("/"))


def _evaluation_order(defn: FormDefinition, level: str) -> tuple[Field, ...]:
    if level:
        container = defn.field_at(level)
        if container is None or not container.is_repeat:
            raise UnknownFieldError(
                message=f"form {defn.key} has no repeat {level!r}",
                message_zh=f"表单 {defn.key} 中没有重复组 {level!r}",
            )
        fields = container.fields
    else:
        fields = defn.fields
    depth = len(level.split("/")) if level else 0
    names = [f.name for f in fields]
    position = {name: i for i, name in enumerate(names)}
    needs: dict[str, set[str]] = {name: set() for name in names}
    for name in names:
        own = f"{level}/{name}" if level else name
        for path, fld in [(own, defn._index[own])] + [
            (p, f) for p, f in defn._index.items() if p.startswith(own + "/")
        ]:
            for target in _read_paths(defn, path, fld):
                parts = target.split("/")
                if len(parts) > depth and parts[:depth] == (level.split("/") if level else []):
                    sibling = parts[depth]
                    if sibling != name and sibling in needs:
                        needs[name].add(sibling)
    # Kahn's algorithm, always taking the earliest field in document order that is ready.
    order: list[str] = []
    placed: set[str] = set()
    while len(order) < len(names):
        ready = [n for n in names if n not in placed and needs[n] <= placed]
        if not ready:  # a cycle: keep the rest in document order
            ready = [n for n in names if n not in placed]
        first = min(ready, key=position.__getitem__)
        order.append(first)
        placed.add(first)
    by_name = {f.name: f for f in fields}
    return tuple(by_name[n] for n in order)


def _read_paths(defn: FormDefinition, path: str, fld: Field) -> list[str]:
    """Schema paths the expressions of one field read (unresolvable references skipped)."""
    scope = path.split("/")[:-1]
    found: list[str] = []
    for attr in EXPRESSION_ATTRIBUTES:
        text = getattr(fld, attr)
        if not isinstance(text, str):
            continue
        try:
            expression = parse_expression(text)
        except ExpressionError:
            continue
        for ref in expression.references():
            chain = list(scope)
            for repeat in ref.via:
                target = _resolve_in_scope(defn, chain, repeat)
                if target is None:
                    break
                chain = target.split("/")
            else:
                target = _resolve_in_scope(defn, chain, ref.name)
                if target is not None:
                    found.append(target)
    return found


def _resolve_in_scope(defn: FormDefinition, scope: list[str], name: str) -> str | None:
    """Schema path ``${name}`` resolves to from inside the repeats ``scope`` (innermost first)."""
    for depth in range(len(scope), -1, -1):
        candidate = "/".join([*scope[:depth], name])
        if defn.field_at(candidate) is not None:
            return candidate
    return None


def _expression_problems(
    defn: FormDefinition, text: str, scope: list[str]
) -> list[tuple[str, str, int | None]]:
    """Parse ``text`` and check its references from inside ``scope``: (code, message, position)."""
    try:
        expression = parse_expression(text)
    except ExpressionError as exc:
        return [(exc.code, exc.detail, exc.position)]
    problems: list[tuple[str, str, int | None]] = []
    for ref in expression.references():
        chain = list(scope)
        known = True
        for repeat in ref.via:
            target = _resolve_in_scope(defn, chain, repeat)
            if target is None or not defn._index[target].is_repeat:
                known = False  # the row function's own ${repeat} is reported by its reference
                break
            chain = target.split("/")
        if not known:
            continue
        target = _resolve_in_scope(defn, chain, ref.name)
        if target is None:
            where = f" inside rows of {'/'.join(chain)}" if chain else ""
            problems.append(
                (
                    "unknown_reference",
                    f"${{{ref.name}}} is not a field in scope{where}",
                    ref.position,
                )
            )
    for call, repeat_ref in _row_function_targets(expression):
        target = _resolve_in_scope(defn, list(scope), repeat_ref.name)
        if target is not None and not defn._index[target].is_repeat:
            problems.append(
                (
                    "not_a_repeat",
                    f"{call}() needs a repeat, but ${{{repeat_ref.name}}} is a {defn._index[target].type}",
                    repeat_ref.position,
                )
            )
    return problems


def _row_function_targets(expression: Expression) -> list[tuple[str, Reference]]:
    """(function name, its ${repeat} reference) for every top-level-scope row function call."""
    by_position = {r.position: r for r in expression.references()}
    found: list[tuple[str, Reference]] = []
    stack = [expression.root]
    while stack:
        node = stack.pop()
        if isinstance(node, Call):
            if FUNCTIONS[node.name].row_function and node.args[0].position in by_position:
                ref = by_position[node.args[0].position]
                if not ref.via:
                    found.append((node.name, ref))
            stack.extend(node.args)
        elif isinstance(node, Binary):
            stack.extend((node.left, node.right))
        elif isinstance(node, Unary):
            stack.append(node.operand)
    return found


def _check_meaning(defn: FormDefinition, issues: list[DefinitionIssue]) -> None:
    """Expressions, checks and upgrade targets: the checks that need the whole definition."""
    for path, fld in defn.iter_fields():
        scope = path.split("/")[:-1]
        for attr in EXPRESSION_ATTRIBUTES:
            text = getattr(fld, attr)
            if not isinstance(text, str):
                continue
            for code, message, position in _expression_problems(defn, text, scope):
                issues.append(
                    DefinitionIssue(
                        f"{_doc_path(path)}/{attr}",
                        f"{message} in {attr} of field {path!r}: {text!r}",
                        code,
                        position,
                    )
                )
    # XLSForm (and so ODK Collect) names a repeat's instances by the repeat's bare name, so two
    # repeats with one name anywhere in the form could not be exported or filled on ODK.
    repeat_paths: dict[str, str] = {}
    for path, fld in defn.iter_fields():
        if fld.type is not FieldType.REPEAT:
            continue
        first = repeat_paths.setdefault(fld.name, path)
        if first != path:
            issues.append(
                DefinitionIssue(
                    _doc_path(path),
                    f"repeat name {fld.name!r} is already used by {first!r}; "
                    "repeat names must be unique in the whole form",
                    "duplicate_name",
                )
            )
    seen_checks: set[str] = set()
    for check in defn.checks:
        where = f"checks/{check.id}"
        if check.id in seen_checks:
            issues.append(
                DefinitionIssue(where, f"check id {check.id!r} is used twice", "duplicate_name")
            )
        seen_checks.add(check.id)
        if check.field is not None:
            target = defn._resolve(check.field.split("/"))
            if target is None or target[1] != check.field:
                issues.append(
                    DefinitionIssue(
                        f"{where}/field",
                        f"check field {check.field!r} is not a field of the form",
                        "unknown_reference",
                    )
                )
                continue
        scope = check.field.split("/")[:-1] if check.field else []
        for code, message, position in _expression_problems(defn, check.rule, scope):
            issues.append(
                DefinitionIssue(
                    f"{where}/rule",
                    f"{message} in rule of check {check.id!r}: {check.rule!r}",
                    code,
                    position,
                )
            )
    if defn.upgrade is not None:
        if defn.upgrade.from_version >= defn.version:
            issues.append(
                DefinitionIssue(
                    "upgrade/from_version", "from_version must be lower than version", "bad_upgrade"
                )
            )
        for old, new in defn.upgrade.renames.items():
            if defn.field_at(new) is None:
                issues.append(
                    DefinitionIssue(
                        f"upgrade/renames/{old}",
                        f"rename target {new!r} is not a field of this version",
                        "bad_upgrade",
                    )
                )
            elif old.count("/") != new.count("/"):
                issues.append(
                    DefinitionIssue(
                        f"upgrade/renames/{old}",
                        "a rename cannot move a field into or out of a repeat",
                        "bad_upgrade",
                    )
                )


# --- dumper ------------------------------------------------------------------------------------


def _dump_field(fld: Field) -> dict[str, Any]:
    out: dict[str, Any] = {"name": fld.name, "type": fld.type.value}
    if fld.label is not None:
        out["label"] = fld.label.to_dict()
    if fld.hint is not None:
        out["hint"] = fld.hint.to_dict()
    if fld.required is not False:
        out["required"] = fld.required
    for attr in ("relevant", "constraint"):
        if getattr(fld, attr) is not None:
            out[attr] = getattr(fld, attr)
    if fld.constraint_message is not None:
        out["constraint_message"] = fld.constraint_message.to_dict()
    for attr in ("required_message", "guidance_hint"):
        if getattr(fld, attr) is not None:
            out[attr] = getattr(fld, attr).to_dict()
    for attr in ("calculate", "choices", "unit"):
        if getattr(fld, attr) is not None:
            out[attr] = getattr(fld, attr)
    if fld.merge != "lww":
        out["merge"] = fld.merge
    if fld.sensitive:
        out["sensitive"] = True
    if fld.fields:
        out["fields"] = [_dump_field(sub) for sub in fld.fields]
    if fld.min_rows is not None:
        out["min_rows"] = fld.min_rows
    if fld.max_rows is not None:
        out["max_rows"] = fld.max_rows
    for attr in ("choice_filter", "repeat_count", "default"):
        if getattr(fld, attr) is not None:
            out[attr] = getattr(fld, attr)
    return out


def _dump_choice(choice: Choice) -> dict[str, Any]:
    out: dict[str, Any] = {"value": choice.value, "label": choice.label.to_dict()}
    if choice.filters:
        out["filters"] = dict(choice.filters)
    return out


def dump_definition(defn: FormDefinition) -> dict[str, Any]:
    """Return the canonical JSON-able document of a definition.

    Defaults are omitted and keys come in a fixed order, so two definitions are equal exactly when
    their dumps are equal, and ``load_definition(dump_definition(d)) == d``.
    """
    out: dict[str, Any] = {
        "id": defn.id,
        "version": defn.version,
        "title": defn.title.to_dict(),
        "subject": defn.subject,
        "fields": [_dump_field(f) for f in defn.fields],
    }
    if defn.choice_lists:
        out["choice_lists"] = {
            key: [_dump_choice(c) for c in entries] for key, entries in defn.choice_lists.items()
        }
    if defn.checks:
        checks = []
        for c in defn.checks:
            item: dict[str, Any] = {"id": c.id, "severity": c.severity}
            if c.field is not None:
                item["field"] = c.field
            item["rule"] = c.rule
            item["message"] = c.message.to_dict()
            checks.append(item)
        out["checks"] = checks
    if defn.upgrade is not None:
        out["upgrade"] = {
            "from_version": defn.upgrade.from_version,
            "renames": dict(defn.upgrade.renames),
            "drops": list(defn.upgrade.drops),
        }
    for attr in ("odk_version", "odk_form_id"):
        if getattr(defn, attr) is not None:
            out[attr] = getattr(defn, attr)
    if defn.tables:
        out["tables"] = {name: [dict(r) for r in rows] for name, rows in defn.tables.items()}
    return out
