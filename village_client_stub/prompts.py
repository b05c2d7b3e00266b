"""Interactive data entry: ask a form's questions one by one, in Chinese, as a tablet would.

The :class:`FormPrompter` walks the definition in document order and

* skips questions whose ``relevant`` expression is false for what has been answered so far
  (skip logic); calculated fields are never asked but computed in their place, since later
  skip logic may depend on them;
* checks every answer as it is typed — its type (:func:`records.coerce_value`), ``required`` and
  the field's ``constraint`` — and asks again with the reason until it fits;
* asks for repeat rows (household members, persuade-back visits) one at a time, within the
  repeat's ``min_rows``/``max_rows``, or exactly as many as its ``repeat_count`` computes;
* offers only the choices a question's ``choice_filter`` lets through (a cascade: the villages
  of the county just chosen), numbered as shown;
* proposes a question's ``default`` (Enter takes it), as a tablet prefills a new record.

Cross-field checks run when the record is saved (``RecordEditor.fill``). Input comes from any
line source (a terminal, a pipe, a test), so the same code serves people and scripts. End of
input stops the interview; what was typed so far is returned so the caller keeps it as a draft.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, TextIO

from forms.definition import Choice, Field, FieldType, FormDefinition
from forms.errors import FormsError
from forms.expressions import Environment, EvaluationContext, parse_expression
from forms.paths import ROW_ID_KEY
from village_client_stub.errors import DeviceError
from village_client_stub.records import coerce_value, parse_household
from village_client_stub.store import DeviceStore

__all__ = ["FormPrompter", "InputEnded", "LineReader", "ask_household", "describe_choices"]


class InputEnded(Exception):
    """The input ended (EOF) before the interview finished.

    Attributes:
        data: what was answered so far (kept by the caller as a draft).
    """

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        super().__init__("input ended")


@dataclass
class LineReader:
    """Reads answers line by line from a text stream; ``None`` at end of input."""

    stream: TextIO

    def __call__(self) -> str | None:
        line = self.stream.readline()
        if line == "":
            return None
        return line.rstrip("\r\n")


def _label(fld: Field) -> str:
    return fld.label.zh if fld.label is not None else fld.name


def ask_household(
    read: Callable[[], str | None], out: TextIO, check: Callable[[dict[str, str]], None]
) -> dict[str, str]:
    """Ask which household the record belongs to, until the answer parses and ``check`` passes.

    ``check`` raises a :class:`DeviceError` for a household the device may not use (out of
    scope); its Chinese message is shown and the question asked again.

    Raises:
        InputEnded: the input ended first (nothing was typed yet, so ``data`` is empty).
    """
    while True:
        out.write("户（12位行政村代码/户编号，如 530102001201/0001）\n")
        out.flush()
        try:
            line = read()
        except KeyboardInterrupt:
            line = None
        if line is None:
            raise InputEnded({})
        try:
            household = parse_household(line)
            check(household)
        except DeviceError as exc:
            out.write(f"  ✗ {exc.message_zh}\n")
            continue
        return household


def describe_choices(
    defn: FormDefinition, fld: Field, offered: tuple[Choice, ...] | None = None
) -> str:
    """The numbered choice list shown under a select question (``offered``: the choices its
    ``choice_filter`` lets through, when it has one)."""
    choices = defn.choices_of(fld) if offered is None else offered
    return "  ".join(f"{i}.{c.label.zh}" for i, c in enumerate(choices, start=1))


class FormPrompter:
    """Asks the questions of ``defn``; ``read`` returns one answer line or None at EOF.

    ``store``, when given, registers image answers (file paths) as attachments.
    """

    def __init__(
        self,
        defn: FormDefinition,
        context: EvaluationContext,
        read: Callable[[], str | None],
        out: TextIO,
        *,
        store: DeviceStore | None = None,
    ) -> None:
        self.defn = defn
        self.context = context
        self.read = read
        self.out = out
        self.store = store
        self.data: dict[str, Any] = {}
        # What expressions see besides the answers: each level's names (``${x}`` inside a row),
        # choice labels (``jr:choice-name``) and attached tables (``pulldata``), as the validator.
        level_names: dict[str, frozenset[str]] = {"": frozenset(f.name for f in defn.fields)}
        for path, fld in defn.iter_fields():
            if fld.is_repeat:
                level_names[path] = frozenset(sub.name for sub in fld.fields)
        self._level_names = level_names
        self._labels = defn.choice_labels()

    # --- the interview ---------------------------------------------------------------------

    def run(self, initial: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Ask every relevant question; return the answers (contracts §3 data).

        ``initial`` values are kept and their questions not asked again.

        Raises:
            InputEnded: the input ended first; ``data`` holds the answers so far.
        """
        self.data = dict(initial or {})
        self._say(f"== {self.defn.title.zh}（{self.defn.id} 第{self.defn.version}版）==")
        self._say("直接回车表示不填；选择题可输入序号或选项文字。")
        self._ask_level(self.defn.fields, self.data, rows=())
        self._recalculate(self.defn.fields, self.data, rows=())
        return self.data

    def _ask_level(
        self,
        fields: tuple[Field, ...],
        values: dict[str, Any],
        rows: tuple[tuple[str, dict[str, Any]], ...],
    ) -> None:
        for fld in fields:
            if fld.type is FieldType.CALCULATE or fld.calculate:
                continue
            # Calculations are refreshed before every question, because skip logic may read
            # them (an age from the ID number decides the schooling questions).
            self._recalculate(fields, values, rows)
            if fld.name in values and values[fld.name] not in (None, ""):
                continue
            if not self._relevant(fld, rows):
                continue
            if fld.type is FieldType.NOTE:
                self._say(f"【说明】{_label(fld)}")
                continue
            if fld.is_repeat:
                self._ask_rows(fld, values, rows)
                continue
            value = self._ask_field(fld, rows)
            if value is not None:
                values[fld.name] = value

    def _ask_rows(
        self, fld: Field, values: dict[str, Any], rows: tuple[tuple[str, dict[str, Any]], ...]
    ) -> None:
        # Schema path of this repeat: the enclosing repeat's path (already complete) + name.
        repeat_path = f"{rows[-1][0]}/{fld.name}" if rows else fld.name
        existing = values.setdefault(fld.name, [])
        minimum = fld.min_rows or 0
        maximum = fld.max_rows
        counted = self._row_count(fld, rows)
        if counted is not None:
            # repeat_count decides how many rows there are: ask each, never "add another?".
            self._say(f"「{_label(fld)}」共 {counted} 行")
            minimum = maximum = counted
        while maximum is None or len(existing) < maximum:
            number = len(existing) + 1
            if len(existing) >= minimum:
                answer = self._ask_yes_no(f"添加「{_label(fld)}」第 {number} 行？(是/否)")
                if not answer:
                    break
            self._say(f"-- {_label(fld)} 第 {number} 行 --")
            row: dict[str, Any] = {ROW_ID_KEY: str(uuid.uuid4())}
            existing.append(row)
            self._ask_level(fld.fields, row, (*rows, (repeat_path, row)))
        if not existing:
            del values[fld.name]

    def _ask_yes_no(self, question: str) -> bool:
        while True:
            self._say(question)
            line = self._line()
            text = line.strip().lower()
            if text in {"是", "y", "yes", "1", "有", "好"}:
                return True
            if text in {"否", "n", "no", "0", "", "无", "不"}:
                return False
            self._say("请回答 是 或 否")

    def _ask_field(self, fld: Field, rows: tuple[tuple[str, dict[str, Any]], ...]) -> Any:
        required = self._required(fld, rows)
        question = f"{_label(fld)}{'（必填）' if required else ''}"
        if fld.unit:
            question += f"［{fld.unit}］"
        select = fld.type in (FieldType.SELECT_ONE, FieldType.SELECT_MULTIPLE)
        while True:
            offered = self._offered(fld, rows) if select else ()
            proposed = self._default_text(fld, rows, offered if select else None)
            self._say(question)
            if fld.hint is not None:
                self._say(f"  提示：{fld.hint.zh}")
            if select:
                if offered:
                    self._say(f"  {describe_choices(self.defn, fld, offered)}")
                else:
                    self._say("  （按前面的回答，此题没有可选的选项）")
                if fld.type is FieldType.SELECT_MULTIPLE:
                    self._say("  （可多选，用逗号分隔）")
            if proposed is not None:
                self._say(f"  默认：{self._shown(fld, proposed)}（直接回车采用）")
            text = self._line()
            if proposed is not None and text.strip() == "":
                text = proposed
            if select:
                text = self._numbers_to_choices(fld, text, offered)
                unoffered = self._unoffered(fld, text, offered)
                if unoffered:
                    self._say(f"  ✗ 按前面的回答，不能选「{unoffered}」")
                    continue
            try:
                # An image answer is a file path; the store registers it as an attachment.
                value = coerce_value(self.defn, fld, text, store=self.store)
            except DeviceError as exc:
                self._say(f"  ✗ {exc.message_zh}")
                continue
            if value is None:
                if required:
                    self._say("  ✗ 此项为必填项")
                    continue
                return None
            problem = self._constraint_problem(fld, value, rows)
            if problem:
                self._say(f"  ✗ {problem}")
                continue
            return value

    # --- checks while typing ---------------------------------------------------------------

    def _row_count(self, fld: Field, rows: tuple[tuple[str, dict[str, Any]], ...]) -> int | None:
        """The rows ``repeat_count`` asks for (None: no count, or it cannot be computed yet)."""
        if not fld.repeat_count:
            return None
        try:
            value = parse_expression(fld.repeat_count).evaluate(self._env(rows))
        except FormsError:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            return None
        try:
            count = int(float(value))
        except ValueError:
            return None
        return max(0, count) if fld.max_rows is None else max(0, min(count, fld.max_rows))

    def _offered(
        self, fld: Field, rows: tuple[tuple[str, dict[str, Any]], ...]
    ) -> tuple[Choice, ...]:
        """The choices of a select its ``choice_filter`` lets through given the answers so far
        (all of them when there is no filter or it cannot be evaluated: the server re-checks)."""
        choices = self.defn.choices_of(fld)
        if not fld.choice_filter:
            return choices
        try:
            expression = parse_expression(fld.choice_filter)
            env = self._env(rows)
            return tuple(
                c
                for c in choices
                if expression.is_true(env.with_choice({**c.filters, "name": c.value}))
            )
        except FormsError:
            return choices

    def _unoffered(self, fld: Field, text: str, offered: tuple[Choice, ...]) -> str | None:
        """The first typed choice value that the filter does not offer (None: all offered)."""
        if not fld.choice_filter or not text:
            return None
        known = {c.value: c for c in self.defn.choices_of(fld)}
        allowed = {c.value for c in offered}
        for part in text.split(","):
            if part in known and part not in allowed:
                return known[part].label.zh
        return None

    def _default_text(
        self,
        fld: Field,
        rows: tuple[tuple[str, dict[str, Any]], ...],
        offered: tuple[Choice, ...] | None,
    ) -> str | None:
        """The field's ``default`` as the text a person would type, or None (no default, it
        cannot be computed, or it names a choice the filter does not offer)."""
        if fld.default is None:
            return None
        try:
            value = parse_expression(fld.default).evaluate(self._env(rows))
        except FormsError:
            return None
        if value is None or value == "" or value == []:
            return None
        if isinstance(value, bool):
            text = "是" if value else "否"
        elif isinstance(value, date):
            text = value.isoformat()
        elif isinstance(value, list):
            text = ",".join(str(v) for v in value)
        elif isinstance(value, float) and value.is_integer():
            text = str(int(value))
        else:
            text = str(value)
        if offered is not None and self._unoffered(fld, text, offered):
            return None
        return text

    def _shown(self, fld: Field, text: str) -> str:
        """A proposed answer as the question shows it (a choice by its label)."""
        if fld.type in (FieldType.SELECT_ONE, FieldType.SELECT_MULTIPLE):
            labels = {c.value: c.label.zh for c in self.defn.choices_of(fld)}
            return "、".join(labels.get(part, part) for part in text.split(","))
        return text

    def _env(
        self, rows: tuple[tuple[str, dict[str, Any]], ...], current: Any = None
    ) -> Environment:
        env = Environment(
            values=self.data,
            context=self.context,
            level_names=self._level_names,
            labels=self._labels,
            tables=self.defn.tables,
        )
        for repeat_path, row in rows:
            env = env.in_row(repeat_path, row)
        return env.with_current(current)

    def _relevant(self, fld: Field, rows: tuple[tuple[str, dict[str, Any]], ...]) -> bool:
        if not fld.relevant:
            return True
        try:
            return parse_expression(fld.relevant).is_true(self._env(rows))
        except FormsError:
            return True  # an authoring mistake must not hide a question; the server re-checks

    def _recalculate(
        self,
        fields: tuple[Field, ...],
        values: dict[str, Any],
        rows: tuple[tuple[str, dict[str, Any]], ...],
    ) -> None:
        """Compute the level's calculated fields from the answers so far.

        Two passes, so a calculation that reads another one placed after it is also right.
        """
        calculated = [f for f in fields if f.calculate]
        for _ in range(2 if len(calculated) > 1 else 1):
            for fld in calculated:
                value = self._calculate(fld, rows)
                if value is None:
                    values.pop(fld.name, None)
                else:
                    values[fld.name] = value

    def _calculate(self, fld: Field, rows: tuple[tuple[str, dict[str, Any]], ...]) -> Any:
        if not fld.calculate:
            return None
        try:
            value = parse_expression(fld.calculate).evaluate(self._env(rows))
        except FormsError:
            return None  # the record's validation reports it; the interview goes on
        return value.isoformat() if isinstance(value, date) else value

    def _required(self, fld: Field, rows: tuple[tuple[str, dict[str, Any]], ...]) -> bool:
        if isinstance(fld.required, bool):
            return fld.required
        try:
            return parse_expression(fld.required).is_true(self._env(rows))
        except FormsError:
            return False

    def _constraint_problem(
        self, fld: Field, value: Any, rows: tuple[tuple[str, dict[str, Any]], ...]
    ) -> str | None:
        if not fld.constraint:
            return None
        try:
            ok = parse_expression(fld.constraint).is_true(self._env(rows, value))
        except FormsError:
            return None
        if ok:
            return None
        if fld.constraint_message is not None:
            return fld.constraint_message.zh
        return f"「{_label(fld)}」的值不符合要求"

    def _numbers_to_choices(
        self, fld: Field, text: str, offered: tuple[Choice, ...] | None = None
    ) -> str:
        """Let people type choice numbers: ``2`` → the second choice shown (of ``offered``)."""
        choices = self.defn.choices_of(fld) if offered is None else offered
        values = {c.value for c in choices}
        parts = [p.strip() for p in text.replace("，", ",").replace("、", ",").split(",")]
        out = []
        for part in parts:
            if part.isdigit() and part not in values and 1 <= int(part) <= len(choices):
                out.append(choices[int(part) - 1].value)
            else:
                out.append(part)
        return ",".join(p for p in out if p)

    # --- I/O -------------------------------------------------------------------------------

    def _line(self) -> str:
        try:
            line = self.read()
        except KeyboardInterrupt:
            # Ctrl-C ends the interview like EOF does: the caller keeps the answers as a draft.
            line = None
        if line is None:
            raise InputEnded(self._prune(self.data))
        return line

    def _say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    @staticmethod
    def _prune(data: dict[str, Any]) -> dict[str, Any]:
        """Drop rows that hold nothing but their id (started, never answered)."""
        out: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
                rows = [FormPrompter._prune(r) for r in value]
                rows = [r for r in rows if set(r) - {ROW_ID_KEY}]
                if rows:
                    out[key] = rows
            else:
                out[key] = value
        return out
