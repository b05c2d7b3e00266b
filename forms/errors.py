"""Typed exceptions of the form engine.

Every error ``forms`` raises is a subclass of :class:`FormsError` and carries a stable machine
``code`` (snake_case, never changed once published, so the server can map it to its JSON error body
and a device can show a translated text), an English ``message`` and a Chinese ``message_zh``.
``messages()`` returns both as the ``{"zh": ..., "en": ...}`` map used everywhere users see text.

Other modules of ``forms`` (identity, xlsform, ...) may define their own subclasses of
:class:`FormsError` next to their code; the classes here are the ones the core engine raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class FormsError(Exception):
    """Base of every form-engine error.

    Attributes:
        code: stable machine-readable error code (snake_case).
        message: English human-readable explanation.
        message_zh: Chinese human-readable explanation.
    """

    code: str = "forms_error"
    default_message: str = "form engine error"
    default_message_zh: str = "表单引擎错误"

    def __init__(
        self, code: str | None = None, message: str | None = None, *, message_zh: str | None = None
    ) -> None:
        self.code = code or type(self).code
        self.message = message or type(self).default_message
        self.message_zh = message_zh or type(self).default_message_zh
        super().__init__(f"[{self.code}] {self.message}")

    def messages(self) -> dict[str, str]:
        """Return the human message as a ``{"zh": ..., "en": ...}`` map."""
        return {"zh": self.message_zh, "en": self.message}


class ExpressionError(FormsError):
    """An expression could not be parsed (syntax, unknown function, wrong arity, limits).

    Attributes:
        position: 0-based character offset in the expression text where the problem was found.
    """

    code = "expression_syntax"
    default_message = "malformed expression"
    default_message_zh = "表达式格式错误"

    def __init__(
        self, code: str, message: str, position: int, *, message_zh: str | None = None
    ) -> None:
        self.position = position
        zh = message_zh or _EXPRESSION_ZH.get(code, type(self).default_message_zh)
        super().__init__(
            code,
            f"{message} (at character {position})",
            message_zh=f"{zh}（第 {position + 1} 个字符处）",
        )
        self.detail = message


# Chinese texts of the expression error codes (county staff read these when a form is refused).
_EXPRESSION_ZH = {
    "empty": "表达式为空",
    "too_long": "表达式太长",
    "too_deep": "表达式嵌套太深或运算符连写太多",
    "unexpected_character": "表达式中有无法识别的字符",
    "unterminated_string": "字符串缺少结束引号",
    "bad_field_reference": "字段引用应写成 ${字段名}",
    "bad_number": "数字太长",
    "unexpected_token": "表达式格式错误",
    "unexpected_end": "表达式不完整",
    "unknown_function": "不支持的函数",
    "arity": "函数参数个数不对",
    "bad_argument": "函数参数有误",
    "bad_regex": "正则表达式有误或可能运行过慢",
}


class EvaluationError(FormsError):
    """A well-formed expression failed while being evaluated (type mismatch, bad date, ...).

    The evaluator never lets a Python exception escape: every failure is one of these.
    """

    code = "evaluation"
    default_message = "the expression could not be evaluated"
    default_message_zh = "表达式无法计算"


@dataclass(frozen=True)
class DefinitionIssue:
    """One located problem of a form definition document.

    Attributes:
        path: where in the document, e.g. ``fields/members/fields/id_number/constraint`` or
            ``fields[3].type`` when the field has no usable name.
        message: English explanation.
        code: stable code (``schema``, ``duplicate_name``, ``expression_syntax``,
            ``unknown_reference``, ...).
        position: for expression problems, the 0-based character offset in the expression.
    """

    path: str
    message: str
    code: str = "schema"
    position: int | None = None

    @property
    def message_zh(self) -> str:
        """A Chinese lead-in for the code followed by the (English) detail and the place."""
        lead = _DEFINITION_ZH.get(self.code) or _EXPRESSION_ZH.get(self.code, "表单定义有误")
        where = f"，第 {self.position + 1} 个字符处" if self.position is not None else ""
        return f"{lead}（{self.path}{where}）：{self.message}"

    def to_dict(self) -> dict[str, object]:
        """Return the issue as a JSON-able dict (``position`` only when known)."""
        out: dict[str, object] = {
            "path": self.path,
            "code": self.code,
            "message": self.message,
            "message_zh": self.message_zh,
        }
        if self.position is not None:
            out["position"] = self.position
        return out


_DEFINITION_ZH = {
    "schema": "格式不符合要求",
    "duplicate_name": "名称重复",
    "duplicate_choice": "选项值重复",
    "missing_choices": "选择题缺少选项列表",
    "unknown_choice_list": "选项列表不存在",
    "unexpected_attribute": "此类题目不能设置该项",
    "missing_label": "缺少题目文字",
    "missing_calculate": "计算字段缺少计算公式",
    "empty_repeat": "重复组里没有题目",
    "bad_rows": "行数限制有误",
    "repeat_too_deep": "重复组嵌套太深",
    "unknown_reference": "表达式引用了不存在或不在范围内的字段",
    "not_a_repeat": "该函数只能用于重复组",
    "bad_upgrade": "版本升级规则有误",
}


class FormDefinitionError(FormsError):
    """A form definition document was refused; ``issues`` lists every problem found."""

    code = "form_definition_invalid"
    default_message = "the form definition is invalid"
    default_message_zh = "表单定义无效"

    def __init__(self, issues: Sequence[DefinitionIssue]) -> None:
        self.issues = list(issues)
        shown = "; ".join(f"{i.path}: {i.message}" for i in self.issues[:5])
        more = f" (+{len(self.issues) - 5} more)" if len(self.issues) > 5 else ""
        super().__init__(
            message=f"the form definition is invalid: {shown}{more}",
            message_zh=f"表单定义无效，共 {len(self.issues)} 处问题：{shown}{more}",
        )


class UnknownFieldError(FormsError, KeyError):
    """A field path does not name a field of the form definition."""

    code = "unknown_field"
    default_message = "no such field"
    default_message_zh = "表单中没有该字段"

    def __str__(self) -> str:
        # KeyError would repr() the message; keep the readable form.
        return f"[{self.code}] {self.message}"


class PathError(FormsError, ValueError):
    """A record or flat path map does not have the shape field paths require (contracts §4)."""

    code = "bad_path"
    default_message = "malformed field path or record shape"
    default_message_zh = "字段路径或记录结构错误"


class UpgradeError(FormsError):
    """A record cannot be upgraded between two form versions (no declared upgrade chain)."""

    code = "upgrade_impossible"
    default_message = "the record cannot be upgraded between these form versions"
    default_message_zh = "无法在这两个表单版本之间升级记录"
