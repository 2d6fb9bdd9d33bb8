"""The one argument-checking rule of the package.

- A value of the wrong *type* raises `TypeError`; a value of the right type but
  outside what is allowed raises `ValueError`.
- The message names the argument (in backticks), says what was expected and
  repeats what was given.
- NumPy scalars are accepted wherever a Python number is (`np.int64(2)`,
  `np.float32(1e-3)`), and `bool` is never taken for a number.

Every public constructor and function checks its arguments through these
helpers, so that a user meets the same kind of error everywhere, before any
backend code runs.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = [
    "check_bool",
    "check_choice",
    "check_int",
    "check_float",
    "check_type",
]


def _short(value: Any, limit: int = 80) -> str:
    """repr(value), cut to `limit` characters (Python refuses to print an
    integer of more than 4300 digits at all)."""
    try:
        text = repr(value)
    except ValueError:
        text = f"<{type(value).__name__} too large to print>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(value: Any) -> str:
    return f"{_short(value)} of type {type(value).__name__}"


def check_type(name: str, value: Any, types: type | tuple[type, ...], expected: str) -> Any:
    """`TypeError` unless `value` is an instance of `types`."""
    if not isinstance(value, types):
        raise TypeError(f"`{name}` must be {expected}, got {_describe(value)}.")
    return value


def check_bool(name: str, value: Any) -> bool:
    """A Python or NumPy boolean, returned as `bool`."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be True or False, got {_describe(value)}.")
    return bool(value)


def check_int(
    name: str,
    value: Any,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    allow_none: bool = False,
) -> int | None:
    """An integer (Python or NumPy, never `bool`) in [minimum, maximum]."""
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        what = "an integer" + (" or None" if allow_none else "")
        raise TypeError(f"`{name}` must be {what}, got {_describe(value)}.")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {_short(value)}.")
    if maximum is not None and value > maximum:
        raise ValueError(f"`{name}` must be <= {maximum}, got {_short(value)}.")
    return value


def check_float(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    min_inclusive: bool = True,
    max_inclusive: bool = True,
    finite: bool = True,
    allow_none: bool = False,
) -> float | None:
    """A real number (Python or NumPy, never `bool`), returned as `float`.

    NaN is always refused; infinities are refused unless `finite=False`.
    Bounds are inclusive unless `min_inclusive` / `max_inclusive` say not.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        what = "a real number" + (" or None" if allow_none else "")
        raise TypeError(f"`{name}` must be {what}, got {_describe(value)}.")
    try:
        value = float(value)
    except OverflowError:
        # A Python integer (or Fraction) beyond the float range: as infinite
        # as a float can say, and `float()` would raise a bare OverflowError.
        if finite:
            raise ValueError(f"`{name}` must be finite, got {_describe(value)}.") from None
        value = math.inf if value > 0 else -math.inf
    if math.isnan(value):
        raise ValueError(f"`{name}` must be a number, got nan.")
    if finite and math.isinf(value):
        raise ValueError(f"`{name}` must be finite, got {value}.")
    if minimum is not None:
        if value < minimum or (not min_inclusive and value == minimum):
            op = ">=" if min_inclusive else ">"
            raise ValueError(f"`{name}` must be {op} {minimum}, got {value!r}.")
    if maximum is not None:
        if value > maximum or (not max_inclusive and value == maximum):
            op = "<=" if max_inclusive else "<"
            raise ValueError(f"`{name}` must be {op} {maximum}, got {value!r}.")
    return value


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """One of the strings in `choices`."""
    choices = tuple(choices)
    if not isinstance(value, str):
        raise TypeError(f"`{name}` must be one of {choices}, got {_describe(value)}.")
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {value!r}.")
    return value
