"""The expression language of forms (contracts §2): tokenizer, parser to an AST, tree-walking evaluator.

XLSForm/ODK style: ``${name}`` field references, ``.`` for the current value, ``or and`` ,
``= != < <= > >=``, ``+ - * div mod`` (``/`` means ``div``), string and number literals, and a
fixed registry of functions whose arity is checked when parsing. Nothing here calls ``eval``: the
parser builds a small tree of frozen nodes and :meth:`Expression.evaluate` walks it.

Safety limits (a form is data written by county staff, not trusted code): expression length,
nesting depth, number-literal length, regular expressions only as string literals of bounded
length without nested quantifiers. Any failure while parsing is an :class:`ExpressionError` with a
code and a 0-based character position; any failure while evaluating is an
:class:`EvaluationError` — never a bare Python exception.

Values while evaluating: ``None`` (empty), ``bool``, ``int``/``float``, ``str``, ``datetime.date``,
``list`` (a select_multiple answer, or the rows of a repeat). The empty string reads as ``None``.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import (
    ROUND_HALF_EVEN,
    ROUND_HALF_UP,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
)
from functools import lru_cache
from typing import Any

import regex

from forms import identity
from forms.errors import EvaluationError, ExpressionError

__all__ = [
    "FUNCTIONS",
    "MAX_DEPTH",
    "MAX_HEIGHT",
    "MAX_LENGTH",
    "MAX_PATTERN_LENGTH",
    "Environment",
    "EvaluationContext",
    "Expression",
    "Reference",
    "parse_expression",
    "truthy",
]

MAX_LENGTH = 4000  # characters in one expression
MAX_DEPTH = 40  # nesting of parentheses, calls and unary minus
MAX_HEIGHT = 120  # height of the syntax tree (the evaluator recurses this deep)
MAX_PATTERN_LENGTH = 200  # characters in a regex() pattern
MAX_NUMBER_LENGTH = 30  # characters in a number literal
MAX_REGEX_INPUT = 1_000  # characters a regex() is run against
#: Wall-clock bound of one regex() match. Backtracking patterns (``^(a|a)*$``) are not guessed
#: from their shape: a match that takes longer is stopped and reported (``regex_timeout``).
REGEX_TIMEOUT_SECONDS = 0.25
MAX_ROUND_DIGITS = 10


# --- tokens --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # number, string, field, dot, name, op, lparen, rparen, comma, end
    text: str
    position: int
    value: Any = None


_OPERATORS = ("!=", "<=", ">=", "=", "<", ">", "+", "-", "*", "/")
_WORD_OPERATORS = {"and", "or", "div", "mod"}
_NAME_START = re.compile(r"[A-Za-z_]")
_NAME_BODY = re.compile(r"[A-Za-z0-9_\-]*")
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in " \t\r\n":
            i += 1
            continue
        if ch == "$":
            if not text.startswith("${", i):
                raise ExpressionError(
                    "bad_field_reference", "'$' must start a field reference ${name}", i
                )
            m = _FIELD_NAME.match(text, i + 2)
            end = m.end() if m else i + 2
            if not m or end >= n or text[end] != "}":
                raise ExpressionError(
                    "bad_field_reference",
                    "a field reference is ${name} with a name of letters, digits and _",
                    i,
                )
            tokens.append(_Token("field", text[i : end + 1], i, m.group()))
            i = end + 1
            continue
        if ch in "'\"":
            end = text.find(ch, i + 1)
            if end < 0:
                raise ExpressionError("unterminated_string", "string literal is not closed", i)
            tokens.append(_Token("string", text[i : end + 1], i, text[i + 1 : end]))
            i = end + 1
            continue
        if ch.isascii() and (ch.isdigit() or (ch == "." and i + 1 < n and text[i + 1].isdigit())):
            m = _NUMBER.match(text, i)
            assert m is not None  # the first character is a digit or ".digit"
            literal = m.group()
            if len(literal) > MAX_NUMBER_LENGTH:
                raise ExpressionError(
                    "bad_number", f"number literal longer than {MAX_NUMBER_LENGTH} characters", i
                )
            value: int | float = float(literal) if "." in literal else int(literal)
            tokens.append(_Token("number", literal, i, value))
            i = m.end()
            continue
        if ch == ".":
            tokens.append(_Token("dot", ".", i))
            i += 1
            continue
        if ch == "(":
            tokens.append(_Token("lparen", ch, i))
            i += 1
            continue
        if ch == ")":
            tokens.append(_Token("rparen", ch, i))
            i += 1
            continue
        if ch == ",":
            tokens.append(_Token("comma", ch, i))
            i += 1
            continue
        op = next((o for o in _OPERATORS if text.startswith(o, i)), None)
        if op is not None:
            tokens.append(_Token("op", op, i))
            i += len(op)
            continue
        if ch.isascii() and _NAME_START.match(ch):
            m = _NAME_BODY.match(text, i + 1)
            end = m.end() if m else i + 1
            word = text[i:end]
            # "a-b" inside a name is a function name like count-selected; trailing '-' is not.
            while word.endswith("-"):
                word = word[:-1]
            end = i + len(word)
            if word == "jr" and text.startswith(":", end):
                # ODK's namespaced names (jr:choice-name) are one function name.
                m = _NAME_BODY.match(text, end + 1)
                word = text[i : m.end() if m else end + 1].rstrip("-")
                end = i + len(word)
            kind = "op" if word in _WORD_OPERATORS else "name"
            tokens.append(_Token(kind, word, i))
            i = end
            continue
        raise ExpressionError("unexpected_character", f"unexpected character {ch!r}", i)
    tokens.append(_Token("end", "", n))
    return tokens


# --- AST -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Literal:
    """A string or number literal."""

    value: Any
    position: int


@dataclass(frozen=True, slots=True)
class FieldRef:
    """``${name}``."""

    name: str
    position: int


@dataclass(frozen=True, slots=True)
class Current:
    """``.``: the value of the field the expression belongs to."""

    position: int


@dataclass(frozen=True, slots=True)
class Unary:
    """Unary minus."""

    operand: Node
    position: int


@dataclass(frozen=True, slots=True)
class Binary:
    """A binary operator: ``or and = != < <= > >= + - * div mod``."""

    op: str
    left: Node
    right: Node
    position: int


@dataclass(frozen=True, slots=True)
class Call:
    """A function call."""

    name: str
    args: tuple[Node, ...]
    position: int
    #: regex(): compiled once at parse time (``re`` for a fixed-width pattern, else ``regex``)
    pattern: regex.Pattern[str] | re.Pattern[str] | None = None


Node = Literal | FieldRef | Current | Unary | Binary | Call


@dataclass(frozen=True, slots=True)
class Reference:
    """A field reference found in an expression.

    Attributes:
        name: the field name inside ``${...}``.
        position: its 0-based character offset.
        via: the repeat references of the enclosing row functions (``count-if``, ``sum``, ``any``,
            ``all``), outermost first: the name is looked up inside rows of those repeats first.
    """

    name: str
    position: int
    via: tuple[str, ...] = ()


# --- parser --------------------------------------------------------------------------------------

_BINDING = {
    "or": 1,
    "and": 2,
    "=": 3,
    "!=": 3,
    "<": 3,
    "<=": 3,
    ">": 3,
    ">=": 3,
    "+": 4,
    "-": 4,
    "*": 5,
    "div": 5,
    "/": 5,
    "mod": 5,
}


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.index = 0
        self.depth = 0
        self.heights: dict[int, int] = {}  # id(node) -> height of its subtree (leaves: absent = 1)

    def built(self, node: Node, children: Sequence[Node], position: int) -> Node:
        """Record a new inner node's height; refuse trees the evaluator would recurse too deep in.

        Nesting (``enter``) does not catch a long flat chain like ``1+1+1+…``, which parses
        left-associatively into a tree as tall as the chain.
        """
        height = 1 + max((self.heights.get(id(c), 1) for c in children), default=0)
        if height > MAX_HEIGHT:
            raise ExpressionError(
                "too_deep",
                f"expression tree taller than {MAX_HEIGHT} levels (split a long chain of operators)",
                position,
            )
        self.heights[id(node)] = height
        return node

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        if token.kind != "end":
            self.index += 1
        return token

    def expect(self, kind: str, what: str) -> _Token:
        token = self.peek()
        if token.kind != kind:
            self.fail_at(token, f"expected {what}")
        return self.advance()

    def fail_at(self, token: _Token, message: str) -> None:
        if token.kind == "end":
            raise ExpressionError(
                "unexpected_end", f"{message}, but the expression ended", token.position
            )
        raise ExpressionError(
            "unexpected_token", f"{message}, found {token.text!r}", token.position
        )

    def parse(self) -> Node:
        if self.peek().kind == "end":
            raise ExpressionError("empty", "the expression is empty", 0)
        node = self.expression(0)
        token = self.peek()
        if token.kind != "end":
            self.fail_at(token, "expected an operator or the end of the expression")
        return node

    def enter(self, position: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionError("too_deep", f"nesting deeper than {MAX_DEPTH} levels", position)

    def expression(self, min_binding: int) -> Node:
        left = self.unary()
        while True:
            token = self.peek()
            if token.kind != "op":
                return left
            op = "div" if token.text == "/" else token.text
            binding = _BINDING[token.text]
            if binding <= min_binding:
                return left
            self.advance()
            self.enter(token.position)
            right = self.expression(binding)  # left-associative: same level stops the right side
            self.depth -= 1
            left = self.built(
                Binary(op, left, right, token.position), (left, right), token.position
            )

    def unary(self) -> Node:
        token = self.peek()
        if token.kind == "op" and token.text == "-":
            self.advance()
            self.enter(token.position)
            operand = self.unary()
            self.depth -= 1
            return self.built(Unary(operand, token.position), (operand,), token.position)
        return self.primary()

    def primary(self) -> Node:
        token = self.advance()
        if token.kind in ("number", "string"):
            return Literal(token.value, token.position)
        if token.kind == "field":
            return FieldRef(token.value, token.position)
        if token.kind == "dot":
            return Current(token.position)
        if token.kind == "lparen":
            self.enter(token.position)
            node = self.expression(0)
            self.expect("rparen", "')'")
            self.depth -= 1
            return node
        if token.kind == "name":
            return self.call(token)
        self.fail_at(token, "expected a value, a field reference ${name} or a function call")
        raise AssertionError("unreachable")  # fail_at always raises

    def call(self, name: _Token) -> Node:
        spec = FUNCTIONS.get(name.text)
        if self.peek().kind != "lparen":
            if spec is not None:
                self.fail_at(self.peek(), f"expected '(' after function {name.text}")
            raise ExpressionError(
                "unexpected_token",
                f"unknown word {name.text!r} (fields are written ${{{name.text}}})",
                name.position,
            )
        if spec is None:
            raise ExpressionError(
                "unknown_function", f"unknown function {name.text!r}", name.position
            )
        open_paren = self.advance()
        self.enter(open_paren.position)
        args: list[Node] = []
        if self.peek().kind != "rparen":
            while True:
                args.append(self.expression(0))
                if self.peek().kind == "comma":
                    self.advance()
                    continue
                break
        self.expect("rparen", "',' or ')'")
        self.depth -= 1
        if len(args) < spec.min_args or (spec.max_args is not None and len(args) > spec.max_args):
            raise ExpressionError(
                "arity", f"{spec.name}() takes {spec.arity_text()}, got {len(args)}", name.position
            )
        node = Call(spec.name, tuple(args), name.position)
        self.built(node, args, name.position)
        if spec.check is not None:
            checked = spec.check(node)
            self.heights[id(checked)] = self.heights[id(node)]
            node = checked
        return node


# --- values ----------------------------------------------------------------------------------------


def truthy(value: Any) -> bool:
    """The boolean meaning of a value: empty, false, 0, '' and [] are false."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0 and not math.isnan(value)
    if isinstance(value, str | list | tuple):
        return len(value) > 0
    return True


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _type_name(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "boolean"
    if _is_number(value):
        return "number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, date):
        return "date"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


def _type_error(what: str, *values: Any) -> EvaluationError:
    kinds = ", ".join(_type_name(v) for v in values)
    return EvaluationError(
        "type",
        f"{what} cannot be applied to {kinds}",
        message_zh=f"{what} 不能用于以下类型的值：{kinds}",
    )


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _as_date(value: Any, what: str) -> date | None:
    """A date from a date or an ISO 'YYYY-MM-DD' string; None stays None."""
    if value is None:
        return None
    if isinstance(value, date):
        return value
    if isinstance(value, str) and _ISO_DATE.match(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
        raise EvaluationError(
            "bad_date", f"{value!r} is not a real date", message_zh=f"{value!r} 不是有效日期"
        )
    raise _type_error(what, value)


def _as_number(value: Any, what: str) -> int | float | None:
    if value is None:
        return None
    if _is_number(value):
        return value
    raise _type_error(what, value)


def _parse_number(text: str) -> int | float | None:
    text = text.strip()
    if not text:
        return None
    try:
        if re.fullmatch(r"[+-]?\d+", text):
            return int(text)
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _check_finite(value: int | float) -> int | float:
    if isinstance(value, float) and not math.isfinite(value):
        raise EvaluationError(
            "arithmetic", "the result is too large", message_zh="计算结果超出范围"
        )
    return value


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return " ".join(_as_text(v) for v in value)
    return str(value)


def _compare(op: str, a: Any, b: Any) -> bool:
    if isinstance(a, list | tuple) and not a:
        a = None
    if isinstance(b, list | tuple) and not b:
        b = None
    if a is None or b is None:
        # Only "is it empty?" has an answer: ${x} = '' / ${x} != ''.
        other = b if a is None else a
        if other == "" and op in ("=", "!="):
            return op == "="
        return False
    if _is_number(a) != _is_number(b):
        # A number against text: compare as numbers when the text is one (select values are text).
        text = b if _is_number(a) else a
        parsed = _parse_number(text) if isinstance(text, str) else None
        if parsed is None:
            if op in ("=", "!="):
                return op == "!="
            raise _type_error(f"'{op}'", a, b)
        a, b = (a, parsed) if _is_number(a) else (parsed, b)
    elif isinstance(a, date) != isinstance(b, date):
        try:
            a, b = _as_date(a, f"'{op}'"), _as_date(b, f"'{op}'")
        except EvaluationError:
            if op in ("=", "!="):
                return op == "!="
            raise
    elif type(a) is not type(b) and not (_is_number(a) and _is_number(b)):
        if op in ("=", "!="):
            return (op == "!=") != (a == b)
        raise _type_error(f"'{op}'", a, b)
    if op == "=":
        return a == b
    if op == "!=":
        return a != b
    if isinstance(a, list | tuple):
        raise _type_error(f"'{op}'", a, b)
    if op == "<":
        return a < b
    if op == "<=":
        return a <= b
    if op == ">":
        return a > b
    return a >= b


def _arithmetic(op: str, a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    if isinstance(a, date) or isinstance(b, date):
        return _date_arithmetic(op, a, b)
    if not (_is_number(a) and _is_number(b)):
        raise _type_error(f"'{op}'", a, b)
    if op in ("div", "mod") and b == 0:
        raise EvaluationError("division_by_zero", f"'{op}' by zero", message_zh="除数为零")
    if isinstance(a, int) and isinstance(b, int):
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "div" and a % b == 0:
            return a // b
    return _decimal_arithmetic(op, a, b)


_DECIMAL_CONTEXT = Context(
    prec=28, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, DivisionByZero]
)


def _decimal_arithmetic(op: str, a: int | float, b: int | float) -> int | float:
    """Arithmetic on the decimals the numbers print as (money is yuan with 2 decimals).

    Binary floats would make 0.1 + 0.2 = 0.30000000000000004 and turn a per-capita income of
    10930.075 into 10930.074999…, which then rounds to the wrong cent; computing on the shortest
    decimal form of each float gives the result a person (and ``forms.indicators``) gets.
    """
    x, y = _to_decimal(a), _to_decimal(b)
    try:
        if op == "+":
            result = _DECIMAL_CONTEXT.add(x, y)
        elif op == "-":
            result = _DECIMAL_CONTEXT.subtract(x, y)
        elif op == "*":
            result = _DECIMAL_CONTEXT.multiply(x, y)
        elif op == "div":
            result = _DECIMAL_CONTEXT.divide(x, y)
        else:
            # mod takes the sign of the dividend, as in XPath (and as Decimal's remainder does).
            result = _DECIMAL_CONTEXT.remainder(x, y)
    except (InvalidOperation, DivisionByZero, OverflowError):
        raise EvaluationError(
            "arithmetic", "the result is out of range", message_zh="计算结果超出范围"
        ) from None
    if isinstance(a, int) and isinstance(b, int) and op == "mod":
        return int(result)
    return _check_finite(float(result))


def _to_decimal(number: int | float) -> Decimal:
    if isinstance(number, int):
        return Decimal(number)
    return Decimal(repr(number))


def _date_arithmetic(op: str, a: Any, b: Any) -> Any:
    try:
        if op == "+" and isinstance(a, date) and isinstance(b, int) and not isinstance(b, bool):
            return a + timedelta(days=b)
        if op == "+" and isinstance(b, date) and isinstance(a, int) and not isinstance(a, bool):
            return b + timedelta(days=a)
        if op == "-" and isinstance(a, date) and isinstance(b, date):
            return (a - b).days
        if op == "-" and isinstance(a, date) and isinstance(b, int) and not isinstance(b, bool):
            return a - timedelta(days=b)
    except OverflowError:
        raise EvaluationError("bad_date", "date out of range", message_zh="日期超出范围") from None
    raise _type_error(f"'{op}'", a, b)


# --- environment ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvaluationContext:
    """What expressions read from outside the record: today's date and county configuration.

    ``config('monitoring_line')`` reads ``config["monitoring_line"]``.
    """

    today: date = field(default_factory=date.today)
    config: Mapping[str, Any] = field(default_factory=dict)
    #: The moment ``now()`` returns (ISO 8601 text, as a tablet records a dateTime); None is
    #: midnight of ``today``.
    now: str | None = None

    def __post_init__(self) -> None:
        # A datetime is a date subclass that refuses to compare with dates: keep the day only.
        if isinstance(self.today, datetime):
            object.__setattr__(self, "today", self.today.date())


class _RowScope:
    __slots__ = ("names", "path", "values")

    def __init__(self, path: str, values: Mapping[str, Any], names: frozenset[str] | None) -> None:
        self.path = path  # schema path of the repeat, e.g. "members" or "members/visits"
        self.values = values
        self.names = names  # field names defined in this repeat's rows, when known


class Environment:
    """The values an expression sees.

    Attributes:
        values: the record's top-level values (dates as ``date`` or ISO strings).
        current: the value of ``.``.
        context: today's date and configuration.
        level_names: optional map schema path of a level (``""`` top, ``"members"``) → the field
            names defined there. When given, a name defined in a row resolves in that row even when
            the row leaves it empty; without it, presence of the key decides.
        rows: enclosing repeat rows, outermost first (set by :meth:`in_row`).
        choice: while a ``choice_filter`` is evaluated, the choice being tested: its value
            (``name``) and its filter columns, read by ``choice('county')``.
        labels: field name → choice value → its (Chinese) label, for ``jr:choice-name``.
        tables: the form's data tables (attached CSVs) by name, for ``pulldata``.
    """

    # A plain slotted class, not a dataclass: one is made per repeat row per row function call,
    # which is the evaluator's hottest allocation.
    __slots__ = (
        "choice",
        "context",
        "current",
        "labels",
        "level_names",
        "rows",
        "tables",
        "values",
    )

    def __init__(
        self,
        values: Mapping[str, Any],
        current: Any = None,
        context: EvaluationContext | None = None,
        level_names: Mapping[str, frozenset[str]] | None = None,
        rows: tuple[_RowScope, ...] = (),
        choice: Mapping[str, str] | None = None,
        labels: Mapping[str, Mapping[str, str]] | None = None,
        tables: Mapping[str, Sequence[Mapping[str, str]]] | None = None,
    ) -> None:
        self.values = values
        self.current = current
        self.context = context if context is not None else EvaluationContext()
        self.level_names = level_names
        self.rows = rows
        self.choice = choice
        self.labels = labels
        self.tables = tables

    def in_row(self, repeat_path: str, row: Mapping[str, Any], current: Any = None) -> Environment:
        """A child environment inside one row of the repeat at ``repeat_path``."""
        names = self.level_names.get(repeat_path) if self.level_names is not None else None
        scope = _RowScope(repeat_path, row, names)
        rows = (*self.rows, scope)
        return Environment(
            self.values,
            current,
            self.context,
            self.level_names,
            rows,
            self.choice,
            self.labels,
            self.tables,
        )

    def with_current(self, current: Any) -> Environment:
        """The same environment with ``.`` bound to ``current``."""
        return Environment(
            self.values,
            current,
            self.context,
            self.level_names,
            self.rows,
            self.choice,
            self.labels,
            self.tables,
        )

    def with_choice(self, choice: Mapping[str, str]) -> Environment:
        """The same environment testing one choice of a ``choice_filter`` (``choice('…')``)."""
        return Environment(
            self.values,
            self.current,
            self.context,
            self.level_names,
            self.rows,
            choice,
            self.labels,
            self.tables,
        )

    def value(self, name: str) -> Any:
        """The value of ``${name}``: rows innermost first, then the top level; missing is None."""
        for scope in reversed(self.rows):
            if (name in scope.names) if scope.names is not None else (name in scope.values):
                return _normalize(scope.values.get(name))
        return _normalize(self.values.get(name))

    def lookup(self, name: str) -> tuple[Any, str]:
        """Like :meth:`value`, also returning the schema path the name resolved to."""
        for scope in reversed(self.rows):
            if (name in scope.names) if scope.names is not None else (name in scope.values):
                return _normalize(scope.values.get(name)), f"{scope.path}/{name}"
        return _normalize(self.values.get(name)), name


def _normalize(value: Any) -> Any:
    return None if value == "" else value


# --- functions ----------------------------------------------------------------------------------------

Compiled = Callable[["Environment"], Any]


@dataclass(frozen=True)
class FunctionSpec:
    """A function of the language: arity checked at parse time, body run by the evaluator.

    ``lazy`` functions are called as ``body(call_node, compiled_args, env)`` and evaluate their
    arguments as needed (``if``, ``coalesce``, the row functions); the others are called as
    ``body(env, *values)`` with evaluated values.
    """

    name: str
    min_args: int
    max_args: int | None
    body: Callable[..., Any]
    lazy: bool = False
    row_function: bool = False  # first argument is ${repeat}, the rest evaluated in each row
    check: Callable[[Call], Call] | None = None
    summary: str = ""

    def arity_text(self) -> str:
        if self.max_args == self.min_args:
            return f"{self.min_args} argument{'s' if self.min_args != 1 else ''}"
        if self.max_args is None:
            return f"at least {self.min_args} argument{'s' if self.min_args != 1 else ''}"
        return f"{self.min_args} to {self.max_args} arguments"


def _rows_of(node: Call, env: Environment, what: str) -> tuple[list[Mapping[str, Any]], str]:
    ref = node.args[0]
    assert isinstance(ref, FieldRef)  # enforced by _check_row_function at parse time
    value, path = env.lookup(ref.name)
    if value is None:
        return [], path
    if not isinstance(value, list) or not all(isinstance(r, Mapping) for r in value):
        raise _type_error(what, value)
    return value, path


def _row_values(node: Call, args: tuple[Compiled, ...], env: Environment, what: str) -> list[Any]:
    rows, path = _rows_of(node, env, what)
    return [args[1](env.in_row(path, row)) for row in rows]


def _fn_count_if(node: Call, args: tuple[Compiled, ...], env: Environment) -> int:
    return sum(1 for v in _row_values(node, args, env, "count-if()") if truthy(v))


def _fn_sum(node: Call, args: tuple[Compiled, ...], env: Environment) -> int | float:
    total: int | float = 0
    for value in _row_values(node, args, env, "sum()"):
        number = _as_number(value, "sum()")
        if number is not None:
            total = _arithmetic("+", total, number)
    return total


def _fn_any(node: Call, args: tuple[Compiled, ...], env: Environment) -> bool:
    rows, path = _rows_of(node, env, "any()")
    return any(truthy(args[1](env.in_row(path, row))) for row in rows)


def _fn_all(node: Call, args: tuple[Compiled, ...], env: Environment) -> bool:
    rows, path = _rows_of(node, env, "all()")
    return all(truthy(args[1](env.in_row(path, row))) for row in rows)


def _fn_if(node: Call, args: tuple[Compiled, ...], env: Environment) -> Any:
    return args[1](env) if truthy(args[0](env)) else args[2](env)


def _fn_coalesce(node: Call, args: tuple[Compiled, ...], env: Environment) -> Any:
    for arg in args:
        value = arg(env)
        if value is not None and value != []:
            return value
    return None


def _selection(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return value.split()  # ODK stores select_multiple answers space-separated
    if isinstance(value, list | tuple):
        return [_as_text(v) for v in value]
    if _is_number(value):
        return [_as_text(value)]
    raise _type_error(what, value)


def _fn_selected(env: Environment, value: Any, choice: Any) -> bool:
    return _as_text(choice) in _selection(value, "selected()")


def _fn_count_selected(env: Environment, value: Any) -> int:
    return len(_selection(value, "count-selected()"))


def _fn_count(env: Environment, value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, list | tuple):
        return len(value)
    raise _type_error("count()", value)


def _fn_string_length(env: Environment, value: Any) -> int:
    return len(_as_text(value))


def _fn_regex(
    env: Environment,
    value: Any,
    pattern: Any,
    *,
    compiled: regex.Pattern[str] | re.Pattern[str],
) -> bool:
    if value is None:
        return False
    text = _as_text(value)
    if len(text) > MAX_REGEX_INPUT:
        raise EvaluationError(
            "too_long",
            f"regex() input longer than {MAX_REGEX_INPUT} characters",
            message_zh="正则匹配的文本过长",
        )
    if isinstance(compiled, re.Pattern):
        return compiled.search(text) is not None  # fixed width (_is_fixed_width): no timeout
    try:
        return compiled.search(text, timeout=REGEX_TIMEOUT_SECONDS) is not None
    except TimeoutError:
        raise EvaluationError(
            "regex_timeout",
            f"regex() took longer than {REGEX_TIMEOUT_SECONDS} s to match; simplify the pattern",
            message_zh=f"正则匹配超过 {REGEX_TIMEOUT_SECONDS} 秒，请简化该正则表达式",
        ) from None


def _fn_today(env: Environment) -> date:
    return env.context.today


def _fn_now(env: Environment) -> str:
    if env.context.now is not None:
        return env.context.now
    return datetime.combine(env.context.today, datetime.min.time()).isoformat()


_EPOCH = datetime(1970, 1, 1)


def _fn_decimal_date_time(env: Environment, value: Any) -> int | float | None:
    """Days since 1970-01-01 (as ODK's ``decimal-date-time``): a date or 'YYYY-MM-DD' gives
    whole days; an ISO date-time ('2026-11-25T08:30:00', optionally with a zone) a fraction."""
    if value is None:
        return None
    if isinstance(value, str) and "T" in value:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise EvaluationError(
                "bad_date",
                f"decimal-date-time() needs an ISO date-time, got {value!r}",
                message_zh=f"decimal-date-time() 需要 ISO 日期时间，实际为 {value!r}",
            ) from None
        if moment.tzinfo is not None:
            moment = moment.astimezone(UTC).replace(tzinfo=None)
        seconds = (moment - _EPOCH).total_seconds()
        return round(seconds / 86400, 9)
    day = _as_date(value, "decimal-date-time()")
    assert day is not None
    return (day - _EPOCH.date()).days


def _fn_once(node: Call, args: tuple[Compiled, ...], env: Environment) -> Any:
    """The question's own value once it has one (``.``), else the expression: ODK computes a
    ``once()`` calculation the first time only, so a recorded value stands."""
    if env.current is not None and env.current != "":
        return env.current
    return args[0](env)


def _fn_choice(env: Environment, column: Any) -> str | None:
    """A column of the choice a ``choice_filter`` is testing: ``choice('name')`` is its value,
    any other name one of its filter columns (XLSForm writes them as bare names, ``county``);
    empty when the column is empty or no choice is being tested."""
    if env.choice is None:
        return None
    return _normalize(env.choice.get(_as_text(column)))


def _fn_position(env: Environment) -> int | None:
    """1-based number of the innermost repeat row the expression runs in (ODK's
    ``position(..)``); empty outside a repeat."""
    if not env.rows:
        return None
    scope = env.rows[-1]
    parent = env.rows[-2].values if len(env.rows) > 1 else env.values
    rows = parent.get(scope.path.rsplit("/", 1)[-1])
    if not isinstance(rows, list):
        return None
    for index, row in enumerate(rows, start=1):
        if row is scope.values:
            return index
    for index, row in enumerate(rows, start=1):  # a copy of the row (vectors, other callers)
        if row == scope.values:
            return index
    return None


def _fn_indexed_repeat(node: Call, args: tuple[Compiled, ...], env: Environment) -> Any:
    """``indexed-repeat(${field}, ${repeat}, n)``: the value of ``field`` in row n (1-based)
    of ``repeat``; empty when there is no such row."""
    ref = node.args[1]
    assert isinstance(ref, FieldRef)  # enforced by _check_indexed_repeat at parse time
    number = _as_number(args[2](env), "indexed-repeat()")
    if number is None:
        return None
    if int(number) != number:
        raise EvaluationError(
            "bad_argument",
            "indexed-repeat() needs a whole row number",
            message_zh="indexed-repeat() 的行号必须是整数",
        )
    value, path = env.lookup(ref.name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(r, Mapping) for r in value):
        raise _type_error("indexed-repeat()", value)
    if not 1 <= number <= len(value):
        return None
    return args[0](env.in_row(path, value[int(number) - 1]))


def _fn_choice_name(env: Environment, value: Any, field_name: Any) -> str | None:
    """``jr:choice-name(value, '${field}')``: the (Chinese) label of ``value`` in the choice list
    of ``field``; empty when the value is empty or not one of its choices."""
    if value is None:
        return None
    name = _as_text(field_name).strip()
    if name.startswith("${") and name.endswith("}"):
        name = name[2:-1]
    labels = (env.labels or {}).get(name, {})
    return labels.get(_as_text(value))


def _fn_pulldata(env: Environment, table: Any, column: Any, key_column: Any, key: Any) -> Any:
    """``pulldata('table', 'column', 'key_column', key)``: ``column`` of the first row of the
    form's data table (an attached CSV) whose ``key_column`` is ``key`` (compared as text);
    empty when the key is empty, no row matches, or the table or column does not exist. A
    value that reads as a number is returned as one (CSV cells are text)."""
    if key is None:
        return None
    rows = (env.tables or {}).get(_as_text(table), ())
    wanted, column_name, key_name = _as_text(key), _as_text(column), _as_text(key_column)
    for row in rows:
        if row.get(key_name) == wanted:
            cell = _normalize(row.get(column_name))
            if cell is None:
                return None
            number = _parse_number(cell)
            return cell if number is None else number
    return None


def _check_pulldata(node: Call) -> Call:
    table = node.args[0]
    if not isinstance(table, Literal) or not isinstance(table.value, str):
        raise ExpressionError(
            "bad_argument", "the table of pulldata() must be a string literal", node.position
        )
    return node


def _fn_date(env: Environment, value: Any) -> date | None:
    if isinstance(value, str) and not _ISO_DATE.match(value):
        raise EvaluationError(
            "bad_date",
            f"date() needs 'YYYY-MM-DD', got {value!r}",
            message_zh=f"date() 需要 'YYYY-MM-DD' 格式的日期，实际为 {value!r}",
        )
    return _as_date(value, "date()")


def _date_part(part: str) -> Callable[[Environment, Any], int | None]:
    def body(env: Environment, value: Any) -> int | None:
        d = _as_date(value, f"{part}()")
        return None if d is None else getattr(d, part)

    return body


def _id_info(env: Environment, value: Any) -> identity.IdInfo | None:
    if value is None or not isinstance(value, str | int):
        return None
    try:
        return identity.parse_id_number(value, today=env.context.today)
    except identity.IdNumberError:
        return None


def _fn_age_at(env: Environment, id_number: Any, on: Any) -> int | None:
    info = _id_info(env, id_number)
    when = _as_date(on, "age-at()")
    if info is None or when is None:
        return None
    return identity.age_on(info.birth_date, when)


def _fn_id_valid(env: Environment, value: Any) -> bool:
    return _id_info(env, value) is not None


def _fn_id_birth_date(env: Environment, value: Any) -> date | None:
    info = _id_info(env, value)
    return None if info is None else info.birth_date


def _fn_id_kind(env: Environment, value: Any) -> str | None:
    info = _id_info(env, value)
    return None if info is None else info.kind


def _fn_id_sex(env: Environment, value: Any) -> str | None:
    info = _id_info(env, value)
    return None if info is None else info.sex


def _fn_school_age_date(env: Environment, value: Any) -> date | None:
    d = _as_date(value, "school-age-date()")
    return None if d is None else identity.school_year_reference(d)


def _fn_days_between(env: Environment, start: Any, end: Any) -> int | None:
    a, b = _as_date(start, "days-between()"), _as_date(end, "days-between()")
    return None if a is None or b is None else (b - a).days


def _fn_number(env: Environment, value: Any) -> int | float | None:
    if value is None or _is_number(value):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        return _parse_number(value)
    raise _type_error("number()", value)


def _fn_int(env: Environment, value: Any) -> int | None:
    number = _fn_number(env, value)
    return None if number is None else int(number)


def _fn_string(env: Environment, value: Any) -> str:
    return _as_text(value)


def _fn_boolean(env: Environment, value: Any) -> bool:
    return truthy(value)


def _fn_not(env: Environment, value: Any) -> bool:
    return not truthy(value)


def _fn_round(env: Environment, value: Any, digits: Any = 0) -> int | float | None:
    number = _as_number(value, "round()")
    places = _as_number(digits, "round()")
    if number is None:
        return None
    if places is None or int(places) != places or abs(places) > MAX_ROUND_DIGITS:
        raise EvaluationError(
            "bad_argument",
            f"round() digits must be a whole number from -{MAX_ROUND_DIGITS} to {MAX_ROUND_DIGITS}",
            message_zh="round() 的位数必须是整数",
        )
    # Half away from zero, as people round money by hand (Python's round() rounds half to even).
    quantum = Decimal(1).scaleb(-int(places))
    try:
        result = Decimal(str(number)).quantize(quantum, rounding=ROUND_HALF_UP)
    except InvalidOperation:
        raise EvaluationError(
            "arithmetic", "round() result out of range", message_zh="计算结果超出范围"
        ) from None
    return int(result) if places <= 0 else float(result)


def _extreme(name: str, pick: Callable[[list[Any]], Any]) -> Callable[..., Any]:
    def body(env: Environment, *values: Any) -> Any:
        present = [v for v in values if v is not None]
        if not present:
            return None
        if all(_is_number(v) for v in present):
            return pick(present)
        try:
            return pick([_as_date(v, f"{name}()") for v in present])
        except EvaluationError:
            raise _type_error(f"{name}()", *present) from None

    return body


def _fn_config(env: Environment, key: Any, default: Any = None) -> Any:
    value = env.context.config.get(_as_text(key))
    if isinstance(value, Decimal):
        # Configuration read from a database may hold Decimals; the language knows int/float.
        value = int(value) if value == value.to_integral_value() else float(value)
    return default if value is None else value


def _fn_concat(env: Environment, *values: Any) -> str:
    return "".join(_as_text(v) for v in values)


def _fn_contains(env: Environment, haystack: Any, needle: Any) -> bool:
    return haystack is not None and _as_text(needle) in _as_text(haystack)


def _fn_starts_with(env: Environment, text: Any, prefix: Any) -> bool:
    return text is not None and _as_text(text).startswith(_as_text(prefix))


# Parse-time checks of particular functions.


def _check_regex(node: Call) -> Call:
    pattern = node.args[1]
    if not isinstance(pattern, Literal) or not isinstance(pattern.value, str):
        raise ExpressionError(
            "bad_argument", "the pattern of regex() must be a string literal", node.position
        )
    if len(pattern.value) > MAX_PATTERN_LENGTH:
        raise ExpressionError(
            "bad_regex",
            f"regex() pattern longer than {MAX_PATTERN_LENGTH} characters",
            pattern.position,
        )
    try:
        # The `regex` engine (re-compatible syntax with V0) because it can stop a match after
        # a time limit: Python's re cannot, and guessing from a pattern's shape refused
        # ordinary patterns such as the common e-mail check.
        compiled: regex.Pattern[str] | re.Pattern[str] = regex.compile(pattern.value, regex.V0)
    except (regex.error, RecursionError, OverflowError, ValueError) as exc:
        raise ExpressionError(
            "bad_regex", f"invalid regex() pattern: {exc}", pattern.position
        ) from None
    if _is_fixed_width(pattern.value):
        # Nothing to time out: re matches it in at most (input × pattern) steps and costs a
        # fraction of a timed match, which was a tenth of the server's ingest time (the
        # phone and code checks of every roster).
        compiled = re.compile(pattern.value)
    return Call(node.name, node.args, node.position, compiled)


_PLAIN_ESCAPES = frozenset("dDwWsS.^$*+?{}[]()|\\/-")
_FIXED_COUNT = re.compile(r"\{([0-9]{1,3})\}")
_PLAIN_CLASS = re.compile(r"\[\^?[^\]\[\\&|~-](?:[^\]\[\\&|~-]|-(?!-))*\]")


def _is_fixed_width(pattern: str) -> bool:
    """True for a pattern of anchors, characters, plain classes and ``{n}`` counts only.

    Such a pattern (``^[0-9]{12}$``, ``^1[0-9]{10}$``) has no group, alternation or variable
    repeat to backtrack into, and reads the same in ``re`` as in ``regex`` V0: no escape but
    the class shorthands and escaped punctuation, no nested or POSIX classes, no set operators.
    Anything else is left to the timed ``regex`` engine.
    """
    i, end = 0, len(pattern)
    while i < end:
        ch = pattern[i]
        if ch in "^$":
            i += 1
            if i < end and pattern[i] in "*+?{":
                return False
            continue
        if ch == "\\":
            if i + 1 >= end or pattern[i + 1] not in _PLAIN_ESCAPES:
                return False
            i += 2
        elif ch == "[":
            found = _PLAIN_CLASS.match(pattern, i)
            if found is None:
                return False
            i = found.end()
        elif ch in "*+?{}()|]":
            return False
        else:
            i += 1  # a literal character, or '.'
        if i < end and pattern[i] == "{":
            count = _FIXED_COUNT.match(pattern, i)
            if count is None:
                return False
            i = count.end()
        if i < end and pattern[i] in "*+?{":
            return False
    return True


def _check_date_literal(node: Call) -> Call:
    arg = node.args[0]
    if isinstance(arg, Literal):
        if not isinstance(arg.value, str) or not _ISO_DATE.match(arg.value):
            raise ExpressionError("bad_argument", "date() needs 'YYYY-MM-DD'", arg.position)
        try:
            date.fromisoformat(arg.value)
        except ValueError:
            raise ExpressionError(
                "bad_argument", f"{arg.value!r} is not a real date", arg.position
            ) from None
    return node


def _check_indexed_repeat(node: Call) -> Call:
    for arg in node.args[:2]:
        if not isinstance(arg, FieldRef):
            raise ExpressionError(
                "bad_argument",
                "indexed-repeat() is written indexed-repeat(${field}, ${repeat}, n)",
                node.position,
            )
    return node


def _check_row_function(node: Call) -> Call:
    if not isinstance(node.args[0], FieldRef):
        raise ExpressionError(
            "bad_argument",
            f"the first argument of {node.name}() must be a repeat field ${{name}}",
            node.position,
        )
    return node


def _spec(
    name: str,
    min_args: int,
    max_args: int | None,
    body: Callable[..., Any],
    summary: str,
    **options: Any,
) -> FunctionSpec:
    return FunctionSpec(name, min_args, max_args, body, summary=summary, **options)


FUNCTIONS: dict[str, FunctionSpec] = {
    spec.name: spec
    for spec in (
        _spec("true", 0, 0, lambda env: True, "true"),
        _spec("false", 0, 0, lambda env: False, "false"),
        _spec("not", 1, 1, _fn_not, "logical negation"),
        _spec("boolean", 1, 1, _fn_boolean, "truth value of x"),
        _spec(
            "if",
            3,
            3,
            _fn_if,
            "a when c is true, else b (only the chosen side is evaluated)",
            lazy=True,
        ),
        _spec("coalesce", 2, None, _fn_coalesce, "first non-empty argument", lazy=True),
        _spec("selected", 2, 2, _fn_selected, "x (select_multiple) contains v"),
        _spec("count-selected", 1, 1, _fn_count_selected, "number of answers of x"),
        _spec("count", 1, 1, _fn_count, "number of rows of a repeat (or answers of a list)"),
        _spec(
            "count-if",
            2,
            2,
            _fn_count_if,
            "rows where expr is true",
            lazy=True,
            row_function=True,
            check=_check_row_function,
        ),
        _spec(
            "sum",
            2,
            2,
            _fn_sum,
            "sum of expr over the rows (empty values skipped)",
            lazy=True,
            row_function=True,
            check=_check_row_function,
        ),
        _spec(
            "any",
            2,
            2,
            _fn_any,
            "expr true in some row",
            lazy=True,
            row_function=True,
            check=_check_row_function,
        ),
        _spec(
            "all",
            2,
            2,
            _fn_all,
            "expr true in every row (true for no rows)",
            lazy=True,
            row_function=True,
            check=_check_row_function,
        ),
        _spec("string-length", 1, 1, _fn_string_length, "length of the text of x"),
        _spec(
            "regex",
            2,
            2,
            _fn_regex,
            "x matches the pattern (re.search; anchor with ^$)",
            check=_check_regex,
        ),
        _spec("today", 0, 0, _fn_today, "today's date from the evaluation context"),
        _spec("now", 0, 0, _fn_now, "the moment from the evaluation context (ISO date-time)"),
        _spec(
            "decimal-date-time",
            1,
            1,
            _fn_decimal_date_time,
            "days since 1970-01-01 of a date or ISO date-time (fractional for a time)",
        ),
        _spec(
            "once",
            1,
            1,
            _fn_once,
            "the recorded value (.) when there is one, else x (computed once, as in ODK)",
            lazy=True,
        ),
        _spec(
            "choice",
            1,
            1,
            _fn_choice,
            "a column of the choice a choice_filter tests ('name' is its value)",
        ),
        _spec(
            "pulldata",
            4,
            4,
            _fn_pulldata,
            "a column of the row of an attached table whose key column is key",
            check=_check_pulldata,
        ),
        _spec("position", 0, 0, _fn_position, "1-based number of the current repeat row"),
        _spec(
            "indexed-repeat",
            3,
            3,
            _fn_indexed_repeat,
            "value of ${field} in row n of ${repeat}",
            lazy=True,
            check=_check_indexed_repeat,
        ),
        _spec(
            "jr:choice-name",
            2,
            2,
            _fn_choice_name,
            "label of a choice value of the field named by the second argument",
        ),
        _spec("date", 1, 1, _fn_date, "date from 'YYYY-MM-DD'", check=_check_date_literal),
        _spec("year", 1, 1, _date_part("year"), "year of a date"),
        _spec("month", 1, 1, _date_part("month"), "month of a date"),
        _spec("day", 1, 1, _date_part("day"), "day of month of a date"),
        _spec("days-between", 2, 2, _fn_days_between, "days from a to b"),
        _spec(
            "age-at",
            2,
            2,
            _fn_age_at,
            "age in whole years at a date from a GB 11643 ID (empty if invalid)",
        ),
        _spec("id-valid", 1, 1, _fn_id_valid, "x is a valid GB 11643 ID / disability card number"),
        _spec("id-birth-date", 1, 1, _fn_id_birth_date, "birth date in an ID number"),
        _spec("id-sex", 1, 1, _fn_id_sex, "'male' or 'female' from an ID number"),
        _spec(
            "id-kind",
            1,
            1,
            _fn_id_kind,
            "'resident' (18 characters) or 'disability_card' (20) for a valid ID number",
        ),
        _spec(
            "school-age-date",
            1,
            1,
            _fn_school_age_date,
            "1 September of the school year containing d",
        ),
        _spec("number", 1, 1, _fn_number, "x as a number (empty when not a number)"),
        _spec("int", 1, 1, _fn_int, "x truncated to a whole number"),
        _spec("string", 1, 1, _fn_string, "x as text"),
        _spec("round", 1, 2, _fn_round, "x rounded half away from zero to n decimals"),
        _spec("min", 1, None, _extreme("min", min), "smallest non-empty argument"),
        _spec("max", 1, None, _extreme("max", max), "largest non-empty argument"),
        _spec("config", 1, 2, _fn_config, "configuration value (default when missing)"),
        _spec("concat", 1, None, _fn_concat, "texts joined"),
        _spec("contains", 2, 2, _fn_contains, "text a contains b"),
        _spec("starts-with", 2, 2, _fn_starts_with, "text a starts with b"),
    )
}


# --- evaluator ------------------------------------------------------------------------------------------


_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_NUMBER_TYPES = (int, float)


def _compile(node: Node) -> Compiled:
    """Turn a tree into nested closures, so evaluating does no dispatch on node types."""
    if isinstance(node, Literal):
        constant = node.value
        return lambda env: constant
    if isinstance(node, FieldRef):
        name = node.name
        return lambda env: env.value(name)
    if isinstance(node, Current):
        return lambda env: _normalize(env.current)
    if isinstance(node, Unary):
        operand = _compile(node.operand)

        def negate(env: Environment) -> Any:
            value = operand(env)
            if value is None:
                return None
            if not _is_number(value):
                raise _type_error("'-'", value)
            return -value

        return negate
    if isinstance(node, Binary):
        left, right, op = _compile(node.left), _compile(node.right), node.op
        if op == "or":
            return lambda env: truthy(left(env)) or truthy(right(env))
        if op == "and":
            return lambda env: truthy(left(env)) and truthy(right(env))
        if op in _COMPARISONS:
            plain = _COMPARISONS[op]

            def compare(env: Environment) -> bool:
                a, b = left(env), right(env)
                kind_a, kind_b = type(a), type(b)
                # Two texts, or two numbers (never a bool: its type is neither), compare as
                # Python does; that is where every rule of _compare ends for them. Most
                # relevances and checks are such a comparison, so they skip the rules.
                if (kind_a is str and kind_b is str) or (
                    kind_a in _NUMBER_TYPES and kind_b in _NUMBER_TYPES
                ):
                    return plain(a, b)
                return _compare(op, a, b)

            return compare
        return lambda env: _arithmetic(op, left(env), right(env))
    spec = FUNCTIONS[node.name]
    args = tuple(_compile(arg) for arg in node.args)
    body = spec.body
    if spec.lazy:
        call = node
        return lambda env: body(call, args, env)
    if node.pattern is not None:
        pattern = node.pattern
        return lambda env: body(env, *[a(env) for a in args], compiled=pattern)
    # One and two arguments (not(), selected(), id-sex() …: most calls) without a list per call.
    if len(args) == 1:
        (only,) = args
        return lambda env: body(env, only(env))
    if len(args) == 2:
        first, second = args
        return lambda env: body(env, first(env), second(env))
    return lambda env: body(env, *[a(env) for a in args])


def _collect(node: Node, via: tuple[str, ...], out: list[Reference]) -> None:
    if isinstance(node, FieldRef):
        out.append(Reference(node.name, node.position, via))
    elif isinstance(node, Unary):
        _collect(node.operand, via, out)
    elif isinstance(node, Binary):
        _collect(node.left, via, out)
        _collect(node.right, via, out)
    elif isinstance(node, Call):
        spec = FUNCTIONS[node.name]
        if node.name == "indexed-repeat" and isinstance(node.args[1], FieldRef):
            # the field is read inside rows of the repeat (the second argument)
            _collect(node.args[1], via, out)
            _collect(node.args[0], (*via, node.args[1].name), out)
            _collect(node.args[2], via, out)
        elif spec.row_function and isinstance(node.args[0], FieldRef):
            _collect(node.args[0], via, out)
            for arg in node.args[1:]:
                _collect(arg, (*via, node.args[0].name), out)
        else:
            for arg in node.args:
                _collect(arg, via, out)


@dataclass(frozen=True, eq=False)
class Expression:
    """A parsed expression. Equal when their source texts are equal."""

    text: str
    root: Node
    _run: Compiled = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_run", _compile(self.root))

    def evaluate(self, env: Environment | Mapping[str, Any]) -> Any:
        """Evaluate against an :class:`Environment` (or a plain mapping of top-level values).

        Returns ``None`` for empty, or a bool, number, str, date or list.

        Raises:
            EvaluationError: on a type mismatch, a bad date, division by zero, an out-of-range
                result; the message says which operator or function failed.
        """
        if not isinstance(env, Environment):
            env = Environment(values=env)
        try:
            return self._run(env)
        except EvaluationError:
            raise
        except (ArithmeticError, ValueError, TypeError, RecursionError) as exc:
            # A safety net: every known failure is raised above with a precise message.
            raise EvaluationError(
                "evaluation",
                f"the expression could not be evaluated: {exc}",
                message_zh="表达式无法计算",
            ) from None

    def is_true(self, env: Environment | Mapping[str, Any]) -> bool:
        """Evaluate and return the truth value (empty is false).

        Raises:
            EvaluationError: as :meth:`evaluate`.
        """
        return truthy(self.evaluate(env))

    def references(self) -> tuple[Reference, ...]:
        """Every ``${name}`` in source order, with the repeats it is evaluated within."""
        # Computed once: validation asks for every relevance it cannot decide, per record.
        found = self.__dict__.get("_references")
        if found is None:
            out: list[Reference] = []
            _collect(self.root, (), out)
            found = tuple(out)
            object.__setattr__(self, "_references", found)
        return found

    def uses_current(self) -> bool:
        """True when the expression reads ``.``."""

        def walk(node: Node) -> bool:
            if isinstance(node, Current):
                return True
            if isinstance(node, Unary):
                return walk(node.operand)
            if isinstance(node, Binary):
                return walk(node.left) or walk(node.right)
            if isinstance(node, Call):
                return any(walk(a) for a in node.args)
            return False

        return walk(self.root)

    def applies_to_current(self, function: str) -> bool:
        """True when the expression calls ``function`` with ``.`` as its first argument."""
        # Kept per function: "is this an ID field?" is asked for every changed path of an op.
        answers = self.__dict__.setdefault("_applies", {})
        found = answers.get(function)
        if found is None:
            found = answers[function] = self._applies_to_current(function)
        return found

    def _applies_to_current(self, function: str) -> bool:
        def walk(node: Node) -> bool:
            if isinstance(node, Unary):
                return walk(node.operand)
            if isinstance(node, Binary):
                return walk(node.left) or walk(node.right)
            if isinstance(node, Call):
                if node.name == function and node.args and isinstance(node.args[0], Current):
                    return True
                return any(walk(a) for a in node.args)
            return False

        return walk(self.root)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Expression) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


def parse_expression(text: str) -> Expression:
    """Parse an expression (contracts §2; grammar in docs/forms.md).

    Results are cached by text: a definition's expressions are parsed once per process.

    Raises:
        ExpressionError: with ``code`` (``empty``, ``too_long``, ``unexpected_character``,
            ``unterminated_string``, ``bad_field_reference``, ``bad_number``, ``unexpected_token``,
            ``unexpected_end``, ``unknown_function``, ``arity``, ``too_deep``, ``bad_regex``,
            ``bad_argument``) and the 0-based character ``position``.
    """
    if not isinstance(text, str):
        raise ExpressionError("bad_argument", "an expression must be a string", 0)
    return _parse_cached(text)


@lru_cache(maxsize=4096)
def _parse_cached(text: str) -> Expression:
    if len(text) > MAX_LENGTH:
        raise ExpressionError(
            "too_long", f"expression longer than {MAX_LENGTH} characters", MAX_LENGTH
        )
    root = _Parser(text).parse()
    return Expression(text, root)


def describe_functions() -> Sequence[tuple[str, str, str]]:
    """``(name, arity, summary)`` of every function, for documentation and editors."""
    return [(s.name, s.arity_text(), s.summary) for s in FUNCTIONS.values()]
