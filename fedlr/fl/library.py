"""fedlr's strategies without a run config: keyword arguments and their checks (docs/library.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The keyword arguments of a per-client strategy used as a library (no run config): each is the
# run-config key of the same name with dashes, and None means that key's default in the schema.
KNOBS = (
    "lr",
    "fraction_train",
    "seed",
    "warmup_rounds",
    "rate_power",
    "rate_low",
    "rate_high",
    "noise_floor",
    "ema_decay",
    "rate_guard",
    "rate_guard_ratio",
    "rate_compensation",
    "max_examples",
    "aggregation",
    "trim_fraction",
    "krum_malicious",
    "clip_update_norm",
)


def library_config(knobs: Mapping[str, Any]) -> dict[str, Any]:
    """The run config of a strategy built from keyword arguments (``lr=0.1`` -> ``"lr": 0.1``).

    Every other key keeps its schema default; values are checked as a config file's are.

    Raises
    ------
    ValueError
        One line naming the keyword and what is allowed.
    """
    from fedlr.config import ConfigError, resolve

    unknown = sorted(set(knobs) - set(KNOBS))
    if unknown:
        raise TypeError(f"unexpected keyword {unknown[0]!r}; fedlr's are: {', '.join(KNOBS)}")
    overrides = {name.replace("_", "-"): value for name, value in knobs.items()}
    overrides["strategies"] = "noise-adaptive"  # checks across strategies: this one alone
    try:
        return resolve(None, overrides)
    except ConfigError as error:
        message = str(error)
        for name in knobs:
            message = message.replace(name.replace("_", "-"), name)
        raise ValueError(message) from None
