"""keras_tricks._validation: the one argument-checking rule.

TypeError for a wrong type, ValueError for a wrong value, the argument named
in backticks, NumPy scalars accepted wherever a Python number is, bool never
taken for a number, NaN always and infinities by default refused.
"""

import fractions
import math

import numpy as np
import pytest

from keras_tricks._validation import (
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_type,
)

NUMPY_INTS = [np.int8(3), np.int16(3), np.int32(3), np.int64(3), np.uint8(3), np.uint64(3)]
NUMPY_FLOATS = [np.float16(0.5), np.float32(0.5), np.float64(0.5), np.longdouble(0.5)]


# ------------------------------------------------------------------ check_type


def test_check_type_returns_the_value_and_names_the_argument():
    value = [1, 2]
    assert check_type("items", value, (list, tuple), "a list") is value
    with pytest.raises(TypeError, match=r"`items` must be a list, got 'ab' of type str"):
        check_type("items", "ab", (list, tuple), "a list")


# ------------------------------------------------------------------ check_bool


@pytest.mark.parametrize(
    "value, expected", [(True, True), (False, False), (np.bool_(True), True), (np.bool_(False), False)]
)
def test_check_bool_accepts_python_and_numpy_booleans(value, expected):
    result = check_bool("flag", value)
    assert result is expected  # a Python bool, not np.bool_


@pytest.mark.parametrize("value", [0, 1, 1.0, "True", None, np.int64(1), [True]])
def test_check_bool_refuses_everything_else_with_a_type_error(value):
    with pytest.raises(TypeError, match=r"`flag` must be True or False"):
        check_bool("flag", value)


# ------------------------------------------------------------------- check_int


@pytest.mark.parametrize("value", [3] + NUMPY_INTS)
def test_check_int_accepts_python_and_numpy_integers_as_int(value):
    result = check_int("units", value, minimum=1)
    assert result == 3 and type(result) is int


@pytest.mark.parametrize("value", [True, False, np.bool_(True)])
def test_check_int_refuses_bool(value):
    with pytest.raises(TypeError, match=r"`units` must be an integer, got .* of type (bool|bool_)"):
        check_int("units", value)


@pytest.mark.parametrize(
    "value", [3.0, np.float32(3.0), "3", None, [3], complex(3, 0), float("nan"), float("inf")]
)
def test_check_int_refuses_non_integers_with_a_type_error(value):
    with pytest.raises(TypeError, match=r"`units` must be an integer"):
        check_int("units", value)


def test_check_int_bounds_are_inclusive_and_value_errors():
    assert check_int("units", 1, minimum=1, maximum=4) == 1
    assert check_int("units", np.int64(4), minimum=1, maximum=4) == 4
    with pytest.raises(ValueError, match=r"`units` must be >= 1, got 0"):
        check_int("units", 0, minimum=1)
    with pytest.raises(ValueError, match=r"`units` must be <= 4, got 5"):
        check_int("units", np.int32(5), maximum=4)


def test_check_int_none_only_when_allowed():
    assert check_int("units", None, allow_none=True) is None
    with pytest.raises(TypeError, match=r"`units` must be an integer, got None"):
        check_int("units", None)
    with pytest.raises(TypeError, match=r"an integer or None"):
        check_int("units", 2.5, allow_none=True)


def test_check_int_message_for_an_integer_too_large_to_print():
    # Python refuses str() of an int with more than 4300 digits; the check
    # must still raise its own ValueError naming the argument.
    with pytest.raises(ValueError, match=r"`units` must be <= 10, got <int too large to print>"):
        check_int("units", 10**5000, maximum=10)


# ----------------------------------------------------------------- check_float


@pytest.mark.parametrize("value", [0.5] + NUMPY_FLOATS)
def test_check_float_accepts_python_and_numpy_floats(value):
    result = check_float("epsilon", value, minimum=0.0)
    assert result == 0.5 and type(result) is float


@pytest.mark.parametrize("value", [2] + NUMPY_INTS)
def test_check_float_accepts_integers_as_float(value):
    result = check_float("epsilon", value)
    assert result == float(int(value)) and type(result) is float


def test_check_float_keeps_the_value_of_a_numpy_float32():
    # np.float32(1e-3) is not 1e-3: the float32 value itself is returned.
    assert check_float("epsilon", np.float32(1e-3)) == float(np.float32(1e-3))
    assert check_float("ratio", fractions.Fraction(1, 4)) == 0.25


@pytest.mark.parametrize("value", [True, False, np.bool_(False)])
def test_check_float_refuses_bool(value):
    with pytest.raises(TypeError, match=r"`epsilon` must be a real number"):
        check_float("epsilon", value)


@pytest.mark.parametrize(
    "value", ["1e-3", None, [1.0], complex(1, 0), np.complex64(1), np.array([1.0]), object()]
)
def test_check_float_refuses_non_numbers_with_a_type_error(value):
    with pytest.raises(TypeError, match=r"`epsilon` must be a real number"):
        check_float("epsilon", value)


@pytest.mark.parametrize("value", [float("nan"), np.float32("nan"), np.float16("nan")])
@pytest.mark.parametrize("finite", [True, False])
def test_check_float_always_refuses_nan(value, finite):
    with pytest.raises(ValueError, match=r"`epsilon` must be a number, got nan"):
        check_float("epsilon", value, finite=finite)


@pytest.mark.parametrize("value", [float("inf"), -float("inf"), np.float32("inf"), np.float64("-inf")])
def test_check_float_refuses_infinities_unless_allowed(value):
    with pytest.raises(ValueError, match=r"`timeout` must be finite"):
        check_float("timeout", value)
    assert check_float("timeout", value, finite=False) == float(value)


def test_check_float_integer_beyond_the_float_range():
    # float(10**400) raises OverflowError; the rule says ValueError.
    with pytest.raises(ValueError, match=r"`level` must be finite"):
        check_float("level", 10**400)
    with pytest.raises(ValueError, match=r"`level` must be finite"):
        check_float("level", -(10**5000))
    assert check_float("level", 10**400, finite=False) == math.inf
    assert check_float("level", -(10**400), finite=False) == -math.inf
    with pytest.raises(ValueError, match=r"`level` must be <= 1"):
        check_float("level", 10**400, finite=False, maximum=1.0)


def test_check_float_inclusive_and_exclusive_bounds():
    assert check_float("rate", 0.0, minimum=0.0) == 0.0
    assert check_float("rate", 1.0, maximum=1.0) == 1.0
    with pytest.raises(ValueError, match=r"`rate` must be > 0.0, got 0.0"):
        check_float("rate", 0.0, minimum=0.0, min_inclusive=False)
    with pytest.raises(ValueError, match=r"`rate` must be < 1.0, got 1.0"):
        check_float("rate", np.float32(1.0), maximum=1.0, max_inclusive=False)
    with pytest.raises(ValueError, match=r"`rate` must be >= 0.0, got -0.5"):
        check_float("rate", -0.5, minimum=0.0)
    with pytest.raises(ValueError, match=r"`rate` must be <= 1.0, got 2.0"):
        check_float("rate", 2, maximum=1.0)
    # Infinite values meet the bounds too when allowed.
    with pytest.raises(ValueError, match=r"`rate` must be >= 0.0"):
        check_float("rate", -float("inf"), minimum=0.0, finite=False)


def test_check_float_none_only_when_allowed():
    assert check_float("rate", None, allow_none=True) is None
    with pytest.raises(TypeError, match=r"`rate` must be a real number, got None"):
        check_float("rate", None)
    with pytest.raises(TypeError, match=r"a real number or None"):
        check_float("rate", "x", allow_none=True)


# ---------------------------------------------------------------- check_choice


def test_check_choice():
    assert check_choice("mode", "sum", ("sum", "mean")) == "sum"
    assert check_choice("mode", np.str_("mean"), ["sum", "mean"]) == "mean"
    # Any iterable of choices, consumed once.
    assert check_choice("mode", "b", iter(["a", "b"])) == "b"
    with pytest.raises(ValueError, match=r"`mode` must be one of \('sum', 'mean'\), got 'max'"):
        check_choice("mode", "max", ("sum", "mean"))
    with pytest.raises(TypeError, match=r"`mode` must be one of .* got 1 of type int"):
        check_choice("mode", 1, ("sum", "mean"))
    with pytest.raises(TypeError, match=r"`mode`"):
        check_choice("mode", None, ("sum", "mean"))
