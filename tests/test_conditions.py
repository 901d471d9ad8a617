"""The condition language: grammar, errors with positions, null semantics, and one answer
per row whether evaluated on a dict or vectorised over a DataFrame."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from riskmodel.policy.conditions import ConditionError, Kind, parse_condition

FIELDS = {"a": Kind.NUMBER, "b": Kind.NUMBER, "c": Kind.NUMBER, "s": Kind.STRING, "t": Kind.STRING}


def holds(text: str, **row: Any) -> bool:
    return parse_condition(text, FIELDS).evaluate(row)


@pytest.mark.parametrize(
    ("text", "row", "expected"),
    [
        ("a > 1", {"a": 2.0}, True),
        ("a > 1", {"a": 1.0}, False),
        ("a + b * 2 == 7", {"a": 1.0, "b": 3.0}, True),  # * binds tighter than +
        ("(a + b) * 2 == 8", {"a": 1.0, "b": 3.0}, True),
        ("a - b - c == 0", {"a": 6.0, "b": 3.0, "c": 3.0}, True),  # left associative
        ("a / b / c == 1", {"a": 8.0, "b": 4.0, "c": 2.0}, True),
        ("-a < 0", {"a": 2.0}, True),
        ("a > 1 or b > 1 and c > 1", {"a": 2.0, "b": 0.0, "c": 0.0}, True),  # and first
        ("not a > 1 and b > 1", {"a": 0.0, "b": 2.0}, True),  # not binds to one test
        ("not not a > 1", {"a": 2.0}, True),
        ("s == 'x'", {"s": "x"}, True),
        ('s != "x"', {"s": "y"}, True),
        ("s == 'it\\'s'", {"s": "it's"}, True),
        ("s in ['x', 'y']", {"s": "y"}, True),
        ("s not in ['x', 'y']", {"s": "z"}, True),
        ("a in [1, 2.5, -3]", {"a": -3.0}, True),
        ("a in [1, 2,]", {"a": 2.0}, True),  # trailing comma
        ("a >= 1e3", {"a": 1000.0}, True),
        ("a == .5", {"a": 0.5}, True),
        ("s == t", {"s": "x", "t": "x"}, True),
        ("a == 1", {"a": True}, True),  # booleans are numbers 0 / 1
        ("a == 3", {"a": np.int64(3)}, True),
    ],
)
def test_grammar(text: str, row: dict[str, Any], expected: bool) -> None:
    assert holds(text, **row) is expected


@pytest.mark.parametrize(
    ("text", "row", "expected"),
    [
        # A comparison with a null is unknown, and unknown is not true...
        ("a > 1", {"a": None}, False),
        ("a > 1", {"a": math.nan}, False),
        ("a > 1", {}, False),  # an absent key is null
        ("a <= 1", {"a": None}, False),
        # ... nor is its negation: SQL's three-valued logic.
        ("not a > 1", {"a": None}, False),
        ("not (a > 1 and b > 1)", {"a": None, "b": 2.0}, False),
        ("a != 1", {"a": None}, False),
        ("s != 'x'", {"s": None}, False),
        ("s in ['x']", {"s": None}, False),
        ("s not in ['x']", {"s": None}, False),
        # false and unknown is false; true or unknown is true.
        ("not (a > 1 and b > 1)", {"a": None, "b": 0.0}, True),
        ("a > 1 or b > 1", {"a": None, "b": 2.0}, True),
        # Arithmetic with null, and division by zero, are null.
        ("a + 1 > 0", {"a": None}, False),
        ("a / b > 0", {"a": 1.0, "b": 0.0}, False),
        ("a / b is null", {"a": 1.0, "b": 0.0}, True),
        ("a is null", {"a": math.nan}, True),
        ("a is not null", {"a": 0.0}, True),
        ("s is null", {"s": None}, True),
        # Kinds that do not match at run time are unknown, never an exception.
        ("a > 1", {"a": "text"}, False),
        ("a + 1 > 1", {"a": "text"}, False),
    ],
)
def test_null_semantics(text: str, row: dict[str, Any], expected: bool) -> None:
    condition = parse_condition(text)  # no kinds: the run-time checks are what is tested
    assert condition.evaluate(row) is expected


@pytest.mark.parametrize(
    ("text", "problem", "offset"),
    [
        ("", "the condition is empty", 0),
        ("a = 1", "use '==' to compare", 2),
        ("a >", "expected a value, found the end", 3),
        ("a > 1 b", "unexpected 'b'", 6),
        ("(a > 1", "expected ')'", 6),
        ("a", "needs a test", 0),
        ("a and b > 1", "'and' needs a test", 0),
        ("a > 1 and (b)", "'and' needs a test", 11),
        ("a == null", "null is not a value", 5),
        ("a == None", "'None' is not part of the language", 5),
        ("a == true", "'true' is not part of the language", 5),
        ("a is 1", "expected 'null' after 'is'", 5),
        ("a in []", "a list needs at least one value", 6),
        ("a in [1, 'x']", "numbers or strings, not both", 12),
        ("a in [b]", "expected a number or a string in the list", 6),
        ("s == 'x", "string is not closed", 5),
        ("a > 1 $", "unexpected character '$'", 6),
        ("zz > 1", "unknown field 'zz'", 0),
        ("a > 1 and bb > 2", "unknown field 'bb'", 10),
        ("s > 'x'", "text is compared with '==' or '!=' only", 2),
        ("s == 1", "compares a string with a number", 2),
        ("a in ['x']", "a number field is never in a list of strings", 2),
        ("s + 1 > 2", "arithmetic needs numbers", 0),
        ("a == (b > 1)", "a test cannot be used as a value", 6),
    ],
)
def test_errors_say_what_and_where(text: str, problem: str, offset: int) -> None:
    with pytest.raises(ConditionError) as caught:
        parse_condition(text, FIELDS)

    assert problem in caught.value.problem
    assert caught.value.offset == offset


def test_fields_are_listed_and_unchecked_names_need_no_catalogue() -> None:
    condition = parse_condition("x > 1 and (y is null or z in ['a'])")

    assert condition.fields == {"x", "y", "z"}
    assert parse_condition("x > 1", ["x"]).fields == {"x"}
    with pytest.raises(ConditionError, match="unknown field 'x'"):
        parse_condition("x > 1", ["y"])


def test_the_frame_needs_every_field_it_reads() -> None:
    with pytest.raises(KeyError, match="needs column"):
        parse_condition("a > 1").evaluate_frame(pd.DataFrame({"b": [1.0]}))


def test_frame_columns_of_every_dtype() -> None:
    frame = pd.DataFrame(
        {
            "a": pd.array([1, None, 3], dtype="Int64"),
            "s": pd.Categorical(["x", None, "y"]),
            "t": pd.Series(["x", "y", None], dtype="str"),
            "b": [True, False, True],
            "c": pd.Series([1.5, None, 2.5], dtype=object),
        }
    )
    condition = parse_condition("a >= 1 and s == t or b == 1 and c > 2", FIELDS)

    assert condition.evaluate_frame(frame).tolist() == [True, False, True]
    assert [condition.evaluate(row) for row in frame.to_dict("records")] == [True, False, True]


# --- the same answer on a dict and vectorised ---------------------------------------------

NUMBERS = st.one_of(
    st.none(),
    st.just(math.nan),
    st.integers(-3, 3).map(float),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
    st.just(0.0),
    st.just(-0.0),
)
STRINGS = st.one_of(st.none(), st.sampled_from(["x", "y", "z", ""]))


def _value() -> st.SearchStrategy[str]:
    leaves = st.one_of(
        st.sampled_from(["a", "b", "c"]),
        st.integers(-3, 3).map(str),
        st.sampled_from(["0.5", "1e2", ".25"]),
    )
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.tuples(inner, st.sampled_from(["+", "-", "*", "/"]), inner).map(
                lambda t: f"({t[0]} {t[1]} {t[2]})"
            ),
            inner.map(lambda v: f"-{v}"),
        ),
        max_leaves=4,
    )


def _test() -> st.SearchStrategy[str]:
    value = _value()
    text = st.one_of(st.sampled_from(["s", "t"]), st.sampled_from(["'x'", "'y'", "''"]))
    atoms = st.one_of(
        st.tuples(value, st.sampled_from(["==", "!=", "<", "<=", ">", ">="]), value).map(" ".join),
        st.tuples(text, st.sampled_from(["==", "!="]), text).map(" ".join),
        st.tuples(value, st.sampled_from(["is null", "is not null"])).map(" ".join),
        st.tuples(st.sampled_from(["s", "t"]), st.sampled_from(["is null", "is not null"])).map(
            " ".join
        ),
        st.tuples(
            st.sampled_from(["s", "t"]),
            st.sampled_from(["in", "not in"]),
            st.lists(st.sampled_from(["'x'", "'y'", "''"]), min_size=1, max_size=3),
        ).map(lambda t: f"{t[0]} {t[1]} [{', '.join(t[2])}]"),
        st.tuples(
            value,
            st.sampled_from(["in", "not in"]),
            st.lists(st.integers(-3, 3).map(str), min_size=1, max_size=3),
        ).map(lambda t: f"{t[0]} {t[1]} [{', '.join(t[2])}]"),
    )
    return st.recursive(
        atoms,
        lambda inner: st.one_of(
            st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(
                lambda t: f"({t[0]} {t[1]} {t[2]})"
            ),
            inner.map(lambda c: f"not ({c})"),
        ),
        max_leaves=6,
    )


@settings(max_examples=300, deadline=None)
@given(
    text=_test(),
    rows=st.lists(
        st.fixed_dictionaries(
            {"a": NUMBERS, "b": NUMBERS, "c": NUMBERS, "s": STRINGS, "t": STRINGS}
        ),
        min_size=1,
        max_size=12,
    ),
)
def test_one_row_and_vectorised_agree(text: str, rows: list[dict[str, Any]]) -> None:
    condition = parse_condition(text, FIELDS)
    frame = pd.DataFrame(
        {
            **{n: pd.Series([r[n] for r in rows], dtype=float) for n in "abc"},
            **{n: pd.Series([r[n] for r in rows], dtype="str") for n in "st"},
        }
    )

    vectorised = condition.evaluate_frame(frame)

    assert vectorised.dtype == bool
    assert vectorised.tolist() == [condition.evaluate(row) for row in rows]
