"""Argument checks shared by the rate rules: one ``ValueError`` naming the argument and range.

Each returns the checked value (a ``float`` or ``int``), or raises
``ValueError("<name>: expected <allowed>, got <value!r>")``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from numbers import Integral, Real


def _number(name: str, value: object, allowed: str, ok: Callable[[float], bool]) -> float:
    """``value`` as a float if it is a finite real number (not a bool) with ``ok(value)``.

    Otherwise ``ValueError("<name>: expected <allowed>, got <value!r>")``.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, Real)
        or not math.isfinite(value)
        or not ok(float(value))
    ):
        raise ValueError(f"{name}: expected {allowed}, got {value!r}")
    return float(value)


def _positive(name: str, value: object) -> float:
    return _number(name, value, "a finite number > 0", lambda v: v > 0)


def _finite(name: str, value: object) -> float:
    return _number(name, value, "a finite number", lambda v: True)


def _non_negative(name: str, value: object) -> float:
    return _number(name, value, "a finite number >= 0", lambda v: v >= 0)


def _integer(name: str, value: object, minimum: int) -> int:
    """``value`` as an int if it is an integer (not a bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _choice(name: str, value: object, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        words = ", ".join(allowed[:-1]) + " or " + allowed[-1]
        raise ValueError(f"{name}: expected {words}, got {value!r}")
    return value
