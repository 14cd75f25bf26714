"""Numbers and settings read from a run's files, safe against nulls, NaN and wrong types."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


def num(value: Any) -> float | None:
    """Return ``value`` as a finite float, else ``None`` (null, NaN, strings, ...)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def mean(values: list[float | None]) -> float | None:
    """The mean of the values that are not ``None`` (None if there is none)."""
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def last_value(values: Iterable[Any]) -> float | None:
    """The last finite number among ``values`` (None if there is none)."""
    numbers = [value for value in map(num, values) if value is not None]
    return numbers[-1] if numbers else None
