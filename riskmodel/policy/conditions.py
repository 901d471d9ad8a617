"""Rule conditions: a small, safe expression language over features and request fields.

A condition is parsed once, when the policy is loaded, into an immutable tree; names are
checked against the fields the caller knows (and their kinds, when given) at that time, so
an unknown name or a comparison of a category with a number never reaches a request. The
tree is then run two ways that give the same answer on the same row:

- ``Condition.evaluate(row)``: one request, a mapping name -> value (the online path);
- ``Condition.evaluate_frame(frame)``: every row of a DataFrame at once, with numpy (the
  backtest path).

Grammar (keywords are lower case; ``#`` starts nothing, there are no comments)::

    condition  := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | test
    test       := sum [ compare sum | "is" ["not"] "null" | ["not"] "in" list ]
    compare    := "==" | "!=" | "<" | "<=" | ">" | ">="
    sum        := product (("+" | "-") product)*
    product    := unary (("*" | "/") unary)*
    unary      := "-" unary | atom
    atom       := NUMBER | STRING | NAME | "(" or ")"
    list       := "[" literal ("," literal)* [","] "]"     (all numbers or all strings)

Values are numbers (floats) or strings; booleans only come out of tests and ``and`` /
``or`` / ``not``. The whole condition must be a test.

Null semantics (SQL's three-valued logic). A null is a missing value: ``None``, NaN, a
key absent from the row. Arithmetic with a null is null, and so is division by zero. A
comparison or ``in`` with a null operand is *unknown*, and so is ``<`` between strings or a
comparison of a string with a number. ``not unknown`` is unknown; ``false and unknown`` is
false; ``true or unknown`` is true; otherwise ``and`` / ``or`` with an unknown is unknown.
A condition holds only when it is true: unknown counts as false. So ``x < 5`` and
``not (x >= 5)`` are both false when ``x`` is null; ask ``x is null`` to catch missing data.

    >>> c = parse_condition("user_refunds_30d >= 3 and reason in ['invalid_code']")
    >>> c.evaluate({"user_refunds_30d": 4.0, "reason": "invalid_code"})
    True
    >>> c.evaluate({"user_refunds_30d": None, "reason": "invalid_code"})
    False
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd

from riskmodel.errors import DataError

__all__ = [
    "Condition",
    "ConditionError",
    "Kind",
    "parse_condition",
]


class Kind(StrEnum):
    """What a field holds, as far as the language cares."""

    NUMBER = "number"
    STRING = "string"
    ANY = "any"  # kind not declared: checked at run time (a mismatch is unknown)


class ConditionError(DataError):
    """A condition that does not parse or names what does not exist; ``offset`` is the
    0-based character position in the condition text."""

    def __init__(self, problem: str, offset: int, text: str) -> None:
        self.problem = problem
        self.offset = offset
        self.text = text
        super().__init__(f"{problem} (at character {offset + 1} of {text!r})")


# --- tokens -----------------------------------------------------------------------------

_KEYWORDS = {"and", "or", "not", "in", "is", "null"}
_RESERVED = {"true", "false", "none", "True", "False", "None"}
_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
  | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|<|>|\+|-|\*|/|\(|\)|\[|\]|,)
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Token:
    kind: str  # number, string, name, keyword, op, end
    text: str
    offset: int


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    at = 0
    while at < len(text):
        match = _TOKEN.match(text, at)
        if match is None:
            snippet = text[at : at + 10]
            if text[at] in "'\"":
                raise ConditionError("string is not closed", at, text)
            if text[at] == "=":
                raise ConditionError("use '==' to compare", at, text)
            raise ConditionError(f"unexpected character {snippet[0]!r}", at, text)
        kind = match.lastgroup or ""
        if kind != "space":
            word = match.group()
            if kind == "name" and word in _KEYWORDS:
                kind = "keyword"
            out.append(_Token(kind, word, at))
        at = match.end()
    out.append(_Token("end", "", len(text)))
    return out


def _unquote(token: _Token) -> str:
    body = token.text[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


# --- tree ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Name:
    name: str
    offset: int


@dataclass(frozen=True)
class _Literal:
    value: float | str
    offset: int


@dataclass(frozen=True)
class _Negate:
    operand: _Value
    offset: int


@dataclass(frozen=True)
class _Arith:
    op: str
    left: _Value
    right: _Value
    offset: int


@dataclass(frozen=True)
class _Compare:
    op: str
    left: _Value
    right: _Value
    offset: int


@dataclass(frozen=True)
class _In:
    operand: _Value
    values: tuple[float | str, ...]
    negated: bool
    offset: int


@dataclass(frozen=True)
class _IsNull:
    operand: _Value
    negated: bool
    offset: int


@dataclass(frozen=True)
class _Logic:
    op: str  # and | or
    items: tuple[_Test, ...]
    offset: int


@dataclass(frozen=True)
class _Not:
    operand: _Test
    offset: int


_Value = _Name | _Literal | _Negate | _Arith
_Test = _Compare | _In | _IsNull | _Logic | _Not
_Node = _Value | _Test


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.at = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.at]

    def fail(self, problem: str, token: _Token | None = None) -> ConditionError:
        return ConditionError(problem, (token or self.token).offset, self.text)

    def take(self, kind: str, text: str | None = None) -> _Token | None:
        token = self.token
        if token.kind == kind and (text is None or token.text == text):
            self.at += 1
            return token
        return None

    def expect(self, kind: str, text: str, what: str) -> _Token:
        token = self.take(kind, text)
        if token is None:
            raise self.fail(f"expected {what}, found {_describe(self.token)}")
        return token

    def parse(self) -> _Node:
        if self.token.kind == "end":
            raise self.fail("the condition is empty")
        node = self.logic("or")
        if self.token.kind != "end":
            raise self.fail(f"unexpected {self.token.text!r}")
        return node

    def logic(self, op: str) -> _Node:
        lower: Callable[[], _Node] = (lambda: self.logic("and")) if op == "or" else self.negation
        first = lower()
        items = [first]
        while self.take("keyword", op) is not None:
            items.append(lower())
        if len(items) == 1:
            return first
        return _Logic(op, tuple(_as_test(i, self.text, f"'{op}'") for i in items), _offset(first))

    def negation(self) -> _Node:
        token = self.take("keyword", "not")
        if token is not None:
            return _Not(_as_test(self.negation(), self.text, "'not'"), token.offset)
        return self.test()

    def test(self) -> _Node:
        left = self.sum()
        token = self.token
        if token.kind == "op" and token.text in ("==", "!=", "<", "<=", ">", ">="):
            self.at += 1
            right = _as_value(self.sum(), self.text)
            return _Compare(token.text, _as_value(left, self.text), right, token.offset)
        if self.take("keyword", "is") is not None:
            negated = self.take("keyword", "not") is not None
            if self.take("keyword", "null") is None:
                raise self.fail("expected 'null' after 'is'")
            return _IsNull(_as_value(left, self.text), negated, token.offset)
        if token.kind == "keyword" and token.text in ("in", "not"):
            if token.text == "not":
                if self.tokens[self.at + 1].text != "in":
                    raise self.fail("expected 'in' after 'not' here")
                self.at += 1
            self.at += 1
            return _In(
                _as_value(left, self.text), self.literals(), token.text == "not", token.offset
            )
        return left

    def literals(self) -> tuple[float | str, ...]:
        self.expect("op", "[", "'[' to start a list")
        values: list[float | str] = []
        while self.take("op", "]") is None:
            if values:
                self.expect("op", ",", "',' or ']'")
                if self.take("op", "]") is not None:
                    break
            values.append(self.literal())
        if not values:
            raise self.fail("a list needs at least one value", self.tokens[self.at - 1])
        if len({type(v) for v in values}) > 1:
            raise self.fail("a list holds numbers or strings, not both", self.tokens[self.at - 1])
        return tuple(values)

    def literal(self) -> float | str:
        sign = -1.0 if self.take("op", "-") is not None else 1.0
        token = self.token
        if token.kind == "number":
            self.at += 1
            return sign * float(token.text)
        if token.kind == "string" and sign > 0:
            self.at += 1
            return _unquote(token)
        raise self.fail(f"expected a number or a string in the list, found {token.text!r}")

    def sum(self) -> _Node:
        left = self.product()
        while (token := self.token).kind == "op" and token.text in ("+", "-"):
            self.at += 1
            left = _Arith(
                token.text,
                _as_value(left, self.text),
                _as_value(self.product(), self.text),
                token.offset,
            )
        return left

    def product(self) -> _Node:
        left = self.unary()
        while (token := self.token).kind == "op" and token.text in ("*", "/"):
            self.at += 1
            left = _Arith(
                token.text,
                _as_value(left, self.text),
                _as_value(self.unary(), self.text),
                token.offset,
            )
        return left

    def unary(self) -> _Node:
        token = self.take("op", "-")
        if token is not None:
            return _Negate(_as_value(self.unary(), self.text), token.offset)
        return self.atom()

    def atom(self) -> _Node:
        token = self.token
        if token.kind == "number":
            self.at += 1
            return _Literal(float(token.text), token.offset)
        if token.kind == "string":
            self.at += 1
            return _Literal(_unquote(token), token.offset)
        if token.kind == "name":
            if token.text in _RESERVED:
                hint = "use 'is null'" if token.text.lower() == "none" else "compare with 1 or 0"
                raise self.fail(f"{token.text!r} is not part of the language ({hint})")
            self.at += 1
            return _Name(token.text, token.offset)
        if self.take("op", "(") is not None:
            inner = self.logic("or")
            self.expect("op", ")", "')'")
            return inner
        if token.kind == "keyword" and token.text == "null":
            raise self.fail("null is not a value: write 'x is null' or 'x is not null'")
        raise self.fail(f"expected a value, found {_describe(token)}")


def _describe(token: _Token) -> str:
    return "the end" if token.kind == "end" else repr(token.text)


def _offset(node: _Node) -> int:
    if isinstance(node, _Arith | _Compare | _In | _IsNull):
        return _offset(node.left if isinstance(node, _Arith | _Compare) else node.operand)
    return node.offset


def _as_test(node: _Node, text: str, where: str) -> _Test:
    if isinstance(node, _Compare | _In | _IsNull | _Logic | _Not):
        return node
    raise ConditionError(
        f"{where} needs a test (a comparison, 'in' or 'is null'), not a value",
        _offset(node),
        text,
    )


def _as_value(node: _Node, text: str) -> _Value:
    if isinstance(node, _Name | _Literal | _Negate | _Arith):
        return node
    raise ConditionError(
        "a test cannot be used as a value here; add parentheses or 'and' / 'or'",
        _offset(node),
        text,
    )


# --- checking -----------------------------------------------------------------------------


def _kind(node: _Value, fields: Mapping[str, Kind], text: str) -> Kind:
    """The kind of a value node; raises on unknown names and impossible arithmetic."""
    if isinstance(node, _Name):
        if node.name not in fields:
            close = _suggest(node.name, fields)
            hint = f"; did you mean {close!r}?" if close else ""
            raise ConditionError(f"unknown field {node.name!r}{hint}", node.offset, text)
        return fields[node.name]
    if isinstance(node, _Literal):
        return Kind.STRING if isinstance(node.value, str) else Kind.NUMBER
    operands = [node.operand] if isinstance(node, _Negate) else [node.left, node.right]
    for operand in operands:
        if _kind(operand, fields, text) is Kind.STRING:
            raise ConditionError("arithmetic needs numbers, not text", _offset(operand), text)
    return Kind.NUMBER


def _suggest(name: str, fields: Collection[str]) -> str | None:
    import difflib

    found = difflib.get_close_matches(name, list(fields), n=1, cutoff=0.75)
    return found[0] if found else None


def _check(node: _Test, fields: Mapping[str, Kind], text: str) -> None:
    if isinstance(node, _Logic):
        for item in node.items:
            _check(item, fields, text)
    elif isinstance(node, _Not):
        _check(node.operand, fields, text)
    elif isinstance(node, _IsNull):
        _kind(node.operand, fields, text)
    elif isinstance(node, _In):
        kind = _kind(node.operand, fields, text)
        listed = Kind.STRING if isinstance(node.values[0], str) else Kind.NUMBER
        if Kind.ANY not in (kind, listed) and kind != listed:
            raise ConditionError(
                f"a {kind.value} field is never in a list of {listed.value}s", node.offset, text
            )
    else:
        left, right = _kind(node.left, fields, text), _kind(node.right, fields, text)
        if Kind.ANY not in (left, right) and left != right:
            raise ConditionError(
                f"compares a {left.value} with a {right.value}: never true", node.offset, text
            )
        if Kind.STRING in (left, right) and node.op not in ("==", "!="):
            raise ConditionError(
                f"text is compared with '==' or '!=' only, not {node.op!r}", node.offset, text
            )


def _names(node: _Node) -> set[str]:
    if isinstance(node, _Name):
        return {node.name}
    if isinstance(node, _Literal):
        return set()
    if isinstance(node, _Logic):
        return set().union(*(_names(i) for i in node.items))
    if isinstance(node, _Arith | _Compare):
        return _names(node.left) | _names(node.right)
    return _names(node.operand)


# --- one row ------------------------------------------------------------------------------

_Scalar = float | str | None
_RowValue = Callable[[Mapping[str, Any]], _Scalar]
_RowTest = Callable[[Mapping[str, Any]], bool | None]


def _scalar(value: Any) -> _Scalar:
    """A row value as the language sees it: a float, a string, or None for null."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, str):
        return str(value)  # plain str, also for StrEnum members
    if isinstance(value, bool | np.bool_):
        return 1.0 if value else 0.0
    if isinstance(value, int | float | np.integer | np.floating | Decimal):
        number = float(value)
        return None if math.isnan(number) else number
    return str(value)


def _row_value(node: _Value) -> _RowValue:
    if isinstance(node, _Name):
        name = node.name
        return lambda row: _scalar(row.get(name))
    if isinstance(node, _Literal):
        constant = node.value
        return lambda row: constant
    if isinstance(node, _Negate):
        inner = _row_value(node.operand)

        def negate(row: Mapping[str, Any]) -> _Scalar:
            v = inner(row)
            return -v if isinstance(v, float) else None

        return negate
    left, right, op = _row_value(node.left), _row_value(node.right), node.op

    def arith(row: Mapping[str, Any]) -> _Scalar:
        a, b = left(row), right(row)
        if not isinstance(a, float) or not isinstance(b, float):
            return None
        if op == "+":
            out = a + b
        elif op == "-":
            out = a - b
        elif op == "*":
            out = a * b
        elif b == 0.0:
            return None
        else:
            out = a / b
        return None if math.isnan(out) else out

    return arith


_ORDER = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _row_test(node: _Test) -> _RowTest:
    if isinstance(node, _Logic):
        items = [_row_test(i) for i in node.items]
        stop = node.op == "or"  # the value that decides alone: True for or, False for and

        def logic(row: Mapping[str, Any]) -> bool | None:
            unknown = False
            for item in items:
                v = item(row)
                if v is None:
                    unknown = True
                elif v is stop:
                    return stop
            return None if unknown else not stop

        return logic
    if isinstance(node, _Not):
        inner = _row_test(node.operand)

        def negation(row: Mapping[str, Any]) -> bool | None:
            v = inner(row)
            return None if v is None else not v

        return negation
    if isinstance(node, _IsNull):
        operand, negated = _row_value(node.operand), node.negated
        return lambda row: (operand(row) is None) != negated
    if isinstance(node, _In):
        operand, values, negated = _row_value(node.operand), frozenset(node.values), node.negated
        listed = type(node.values[0])

        def member(row: Mapping[str, Any]) -> bool | None:
            v = operand(row)
            if v is None or not isinstance(v, listed):
                return None
            return (v in values) != negated

        return member
    left, right, op = _row_value(node.left), _row_value(node.right), node.op

    def compare(row: Mapping[str, Any]) -> bool | None:
        a, b = left(row), right(row)
        if a is None or b is None or type(a) is not type(b):
            return None
        if op == "==":
            return a == b
        if op == "!=":
            return a != b
        if isinstance(a, str):
            return None
        return bool(_ORDER[op](a, b))

    return compare


# --- many rows ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Vec:
    """A column of values: numbers (float64, NaN null) or strings (object, null mask)."""

    kind: Kind  # NUMBER or STRING
    values: np.ndarray
    null: np.ndarray


@dataclass(frozen=True)
class _Truth:
    true: np.ndarray
    false: np.ndarray  # neither: unknown


def _frame_column(frame: pd.DataFrame, name: str) -> _Vec:
    series = frame[name]
    if pd.api.types.is_bool_dtype(series.dtype) or (
        pd.api.types.is_numeric_dtype(series.dtype)
        and not isinstance(series.dtype, pd.CategoricalDtype)
    ):
        numbers = series.to_numpy(dtype=float, na_value=np.nan)
        return _Vec(Kind.NUMBER, numbers, np.isnan(numbers))
    null = np.asarray(series.isna().to_numpy(), dtype=bool)
    values = np.asarray(series.to_numpy(dtype=object), dtype=object)
    present = values[~null]
    if len(present) and all(isinstance(_scalar(v), float) for v in present[:1]):
        # An object column of numbers: one kind per column, as the frame contract says.
        numbers = np.array([np.nan if n else float(v) for v, n in zip(values, null, strict=True)])
        return _Vec(Kind.NUMBER, numbers, np.isnan(numbers))
    strings = np.array(
        [None if n else str(v) for v, n in zip(values, null, strict=True)], dtype=object
    )
    return _Vec(Kind.STRING, strings, null)


def _vec_value(node: _Value, frame: pd.DataFrame, cache: dict[str, _Vec]) -> _Vec:
    n = len(frame)
    if isinstance(node, _Name):
        if node.name not in cache:
            cache[node.name] = _frame_column(frame, node.name)
        return cache[node.name]
    if isinstance(node, _Literal):
        if isinstance(node.value, str):
            return _Vec(Kind.STRING, np.full(n, node.value, dtype=object), np.zeros(n, dtype=bool))
        return _Vec(Kind.NUMBER, np.full(n, node.value), np.zeros(n, dtype=bool))
    if isinstance(node, _Negate):
        inner = _vec_value(node.operand, frame, cache)
        if inner.kind is not Kind.NUMBER:
            return _null_numbers(n)
        return _numbers(-inner.values)
    a = _vec_value(node.left, frame, cache)
    b = _vec_value(node.right, frame, cache)
    if a.kind is not Kind.NUMBER or b.kind is not Kind.NUMBER:
        return _null_numbers(n)
    with np.errstate(all="ignore"):
        if node.op == "+":
            out = a.values + b.values
        elif node.op == "-":
            out = a.values - b.values
        elif node.op == "*":
            out = a.values * b.values
        else:
            out = np.full(n, np.nan)
            np.divide(a.values, b.values, out=out, where=b.values != 0)
    return _numbers(out)


def _numbers(values: np.ndarray) -> _Vec:
    values = np.asarray(values, dtype=float)
    return _Vec(Kind.NUMBER, values, np.isnan(values))


def _null_numbers(n: int) -> _Vec:
    return _numbers(np.full(n, np.nan))


def _unknown(n: int) -> _Truth:
    return _Truth(np.zeros(n, dtype=bool), np.zeros(n, dtype=bool))


def _vec_test(node: _Test, frame: pd.DataFrame, cache: dict[str, _Vec]) -> _Truth:
    n = len(frame)
    if isinstance(node, _Logic):
        parts = [_vec_test(i, frame, cache) for i in node.items]
        trues = [p.true for p in parts]
        falses = [p.false for p in parts]
        if node.op == "and":
            return _Truth(np.logical_and.reduce(trues), np.logical_or.reduce(falses))
        return _Truth(np.logical_or.reduce(trues), np.logical_and.reduce(falses))
    if isinstance(node, _Not):
        inner = _vec_test(node.operand, frame, cache)
        return _Truth(inner.false, inner.true)
    if isinstance(node, _IsNull):
        null = _vec_value(node.operand, frame, cache).null
        result = ~null if node.negated else null
        return _Truth(result, ~result)
    if isinstance(node, _In):
        v = _vec_value(node.operand, frame, cache)
        listed = Kind.STRING if isinstance(node.values[0], str) else Kind.NUMBER
        if v.kind is not listed:
            return _unknown(n)
        found = pd.Series(v.values, dtype=object if listed is Kind.STRING else float).isin(
            list(node.values)
        )
        hit = np.asarray(found.to_numpy(), dtype=bool) != node.negated
        known = ~v.null
        return _Truth(hit & known, ~hit & known)
    a = _vec_value(node.left, frame, cache)
    b = _vec_value(node.right, frame, cache)
    if a.kind is not b.kind or (a.kind is Kind.STRING and node.op not in ("==", "!=")):
        return _unknown(n)
    known = ~(a.null | b.null)
    if node.op == "==":
        result = a.values == b.values
    elif node.op == "!=":
        result = a.values != b.values
    else:
        with np.errstate(invalid="ignore"):
            result = _ORDER[node.op](a.values, b.values)
    result = np.asarray(result, dtype=bool)
    return _Truth(result & known, ~result & known)


# --- the public object --------------------------------------------------------------------


class Condition:
    """A parsed condition: its text, the fields it reads, and its two evaluators."""

    __slots__ = ("_row", "_tree", "fields", "text")

    def __init__(self, text: str, tree: _Test) -> None:
        self.text = text
        self._tree = tree
        self.fields: frozenset[str] = frozenset(_names(tree))
        self._row = _row_test(tree)

    def evaluate(self, row: Mapping[str, Any]) -> bool:
        """True when the condition holds for one row; unknown (null) is False."""
        return self._row(row) is True

    def evaluate_frame(self, frame: pd.DataFrame) -> np.ndarray:
        """A boolean array, one per row of ``frame``: the same as ``evaluate`` row by row.

        Every field the condition reads must be a column of ``frame``.
        """
        missing = sorted(self.fields - set(frame.columns))
        if missing:
            raise KeyError(f"condition {self.text!r} needs column(s) {', '.join(missing)}")
        truth: np.ndarray = _vec_test(self._tree, frame, {}).true
        return truth

    def __repr__(self) -> str:
        return f"Condition({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Condition) and other._tree == self._tree

    def __hash__(self) -> int:
        return hash(self._tree)


def parse_condition(
    text: str, fields: Collection[str] | Mapping[str, Kind | str] | None = None
) -> Condition:
    """Parse ``text`` once. ``fields`` are the names it may read: a collection of names, or
    a mapping name -> kind (``number`` / ``string``) that also checks comparisons and
    arithmetic; None accepts any name (kinds then checked only at run time).

    Raises ``ConditionError`` with the position of the first problem.
    """
    tree = _as_test(_Parser(text).parse(), text, "a condition")
    if fields is not None:
        if isinstance(fields, Mapping):
            kinds = {name: Kind(kind) for name, kind in fields.items()}
        else:
            kinds = dict.fromkeys(fields, Kind.ANY)
        _check(tree, kinds, text)
    return Condition(text, tree)
