"""Numbers and settings read from a run's files, safe against nulls, NaN and wrong types."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from fedlr.config import OPTIMIZER_MODIFIERS, strategy_config, strategy_spec


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


def settings_from_name(strategy: str, config: dict[str, Any]) -> tuple[Any, float | None]:
    """Optimizer and degree gamma (None: no degree rule) of a strategy entry.

    The entry is ``RULE[+MODIFIER...]`` or a ``[strategy.NAME]`` table of ``config``
    (:func:`fedlr.config.strategy_spec`); a name the config cannot parse (a run of an older
    fedlr) is read as ``RULE+MODIFIER...``.
    """
    try:
        spec = strategy_spec(strategy, config)
        own = strategy_config(strategy, config)
    except (ValueError, KeyError, TypeError):
        _, *modifiers = (part.strip() for part in strategy.split("+"))
        optimizer = next(
            (m for m in modifiers if m in OPTIMIZER_MODIFIERS), config.get("optimizer")
        )
        return optimizer, num(config.get("degree-gamma")) if "degree" in modifiers else None
    optimizer = spec.optimizer or config.get("optimizer")
    return optimizer, num(own.get("degree-gamma")) if spec.degree else None


def modifiers_of(strategy: str, config: dict[str, Any]) -> tuple[bool, bool]:
    """Whether a strategy entry (a name or a ``[strategy.NAME]`` table): coupled, grows batches."""
    try:
        spec = strategy_spec(strategy, config)
    except (ValueError, KeyError, TypeError):  # a run of an older fedlr: read the name
        _, *modifiers = (part.strip() for part in strategy.split("+"))
        return "coupled" in modifiers, "grow-batch" in modifiers
    return spec.has("coupled"), spec.has("grow-batch")
