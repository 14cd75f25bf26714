"""The modifier registry: each ``+MODIFIER`` of a strategy, its group, the keys it owns, its check.

A strategy is a rule plus modifiers (:mod:`fedlr.config.strategies`). Each modifier owns the
run-config keys it reads: a strategy table (``[strategy.NAME]``) may set them for that strategy
alone, either by their own names (``schedule-floor = 0.1``) or as the parameters of the
modifier's own table (``schedule = { name = "cosine", floor = 0.1 }``). Its check sees the
strategy's config (:func:`fedlr.config.strategies.strategy_config`), overrides applied.

An entry holds at most one modifier of a group: one optimizer, one schedule, and each other
modifier (its own group) at most once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from fedlr.config.choices import OPTIMIZERS
from fedlr.config.values import ConfigError

OPTIMIZER_MODIFIERS = OPTIMIZERS
SCHEDULE_MODIFIERS = (
    "step",
    "exponential",
    "cosine",
    "warm-restarts",
    "cyclical",
    "one-cycle",
    "phases",
)
OPTIMIZER, SCHEDULE = "optimizer", "schedule"

# A check of one strategy's config; ``where(key)`` names the key as the user set it (the
# table's ``strategy.NAME.schedule.floor``, or the run-wide ``schedule-floor``).
Check = Callable[[Mapping[str, Any], Callable[[str], str]], None]


@dataclass(frozen=True)
class Modifier:
    """One modifier: its group, its parameters (the keys it owns) and a check of them."""

    name: str
    group: str
    # The parameters of its table in a strategy table (``floor``) -> the keys they set.
    params: Mapping[str, str] = field(default_factory=dict)
    check: Check | None = None

    def __post_init__(self) -> None:  # read-only: the registry is shared
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    @property
    def keys(self) -> tuple[str, ...]:
        """The run-config keys this modifier reads, which a strategy table may set."""
        return tuple(self.params.values())


def _check_phases(cfg: Mapping[str, Any], where: Callable[[str], str]) -> None:
    lowest_peak = cfg["schedule-peak-decay"] ** (cfg["num-tasks"] - 1)
    if cfg["schedule-floor"] > lowest_peak:
        raise ConfigError(
            f"{where('schedule-floor')}: +phases decays each phase to the floor, so it must be "
            f"at most the last phase's peak, schedule-peak-decay ** (num-tasks - 1) = "
            f"{lowest_peak:.4g}; got {cfg['schedule-floor']}"
        )


def _check_coupled(cfg: Mapping[str, Any], where: Callable[[str], str]) -> None:
    if cfg["coupling-rule"] == "optimal" and not cfg["measure-noise-scale"]:
        raise ConfigError(
            f"{where('coupling-rule')}: 'optimal' reads the noise scale the server measures; "
            "expected measure-noise-scale = true, or coupling-rule auto, linear or sqrt"
        )


def _check_degree(cfg: Mapping[str, Any], where: Callable[[str], str]) -> None:
    if cfg["degree-mode"] == "embedding" and cfg["embedding-dim"] == 0:
        raise ConfigError(
            f"{where('degree-mode')}: 'embedding' scales node-embedding rows, but embedding-dim "
            "is 0; expected embedding-dim > 0, or degree-mode loss or both"
        )


def _params(prefix: str, *names: str) -> dict[str, str]:
    return {name: f"{prefix}{name}" for name in names}


_RATE_KEYS = {"sgd": "lr", "adam": "adam-lr", "adagrad": "adagrad-lr"}
_SCHEDULE_PARAMS: dict[str, tuple[str, ...]] = {  # what fedlr.fl.rate_plan.schedule_params reads
    "step": ("period", "gamma"),
    "exponential": ("gamma",),
    "cosine": ("floor",),
    "warm-restarts": ("period", "floor"),
    "cyclical": ("period", "floor"),
    "one-cycle": (),
    "phases": ("warmup", "floor", "peak-decay"),
}

MODIFIER_REGISTRY: dict[str, Modifier] = {
    **{
        name: Modifier(
            name,
            OPTIMIZER,
            {  # its base rate; momentum is SGD's only
                "lr": _RATE_KEYS[name],
                **({"momentum": "momentum"} if name == "sgd" else {}),
                "weight-decay": "weight-decay",
            },
        )
        for name in OPTIMIZER_MODIFIERS
    },
    "degree": Modifier(
        "degree",
        "degree",
        _params("degree-", "gamma", "mode", "source", "low", "high"),
        _check_degree,
    ),
    "coupled": Modifier(
        "coupled",
        "coupled",
        _params("coupling-", "rule", "reference", "low", "high", "warmup-rounds"),
        _check_coupled,
    ),
    "grow-batch": Modifier("grow-batch", "grow-batch"),
    **{
        name: Modifier(
            name,
            SCHEDULE,
            _params("schedule-", *_SCHEDULE_PARAMS[name]),
            _check_phases if name == "phases" else None,
        )
        for name in SCHEDULE_MODIFIERS
    },
    "replay": Modifier("replay", "replay", {"size": "replay-size"}),
}
MODIFIER_GROUPS: dict[str, str] = {name: m.group for name, m in MODIFIER_REGISTRY.items()}
MODIFIERS = tuple(MODIFIER_REGISTRY)
# Every strategy has an optimizer (its modifier's, else the config's ``optimizer``): a table may
# set any optimizer's keys.
OPTIMIZER_KEYS = tuple(
    dict.fromkeys(k for name in OPTIMIZER_MODIFIERS for k in MODIFIER_REGISTRY[name].keys)
)
