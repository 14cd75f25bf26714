"""Strategy entries ``RULE[+MODIFIER...]``: the rules, the modifier registry, and their parse.

A strategy in ``strategies`` is RULE or RULE+MODIFIER[+MODIFIER]: an optimizer modifier sets the
strategy's local optimizer (and base rate: lr, adam-lr or adagrad-lr); ``degree`` turns on the
degree-aware rates of graph tasks (degree-gamma). See :func:`strategy_config`.
``coupled`` gives each client the rate for its own batch size (coupling-rule); ``grow-batch``
turns each step of the rate decay (lr-decay-rounds) into batch growth at the same lr / B.
A schedule modifier (``+cosine``, ``+phases``, ...) multiplies the strategy's rate by a
round-indexed schedule (fedlr.rates.schedules, ``schedule-*`` keys); ``replay`` mixes
``replay-size`` examples of earlier tasks into a continual client's training (``stream``).

An entry is parsed once into a :class:`StrategySpec` (:func:`strategy_spec`, cached); the
functions :func:`parse_strategy`, :func:`uses_degree`, :func:`uses_modifier` and
:func:`schedule_of` read that spec.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedlr.config.choices import OPTIMIZERS
from fedlr.config.values import ConfigError, split_list

STRATEGIES = (
    "fedavg",
    "inverse-noise-weights",
    "noise-adaptive",
    "oracle-noise-rates",
    "qfedavg",
    "fedprox",
    "fedcorr-prox",
)
# What a run compares when `strategies` is not given (fedcorr-prox is a peer to ask for).
DEFAULT_STRATEGIES = tuple(s for s in STRATEGIES if s != "fedcorr-prox")

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
# The modifier registry: each modifier and its group. An entry holds at most one modifier of a
# group: one optimizer, one schedule, and each other modifier (its own group) at most once.
OPTIMIZER, SCHEDULE = "optimizer", "schedule"
MODIFIER_GROUPS: dict[str, str] = {
    **dict.fromkeys(OPTIMIZER_MODIFIERS, OPTIMIZER),
    "degree": "degree",
    "coupled": "coupled",
    "grow-batch": "grow-batch",
    **dict.fromkeys(SCHEDULE_MODIFIERS, SCHEDULE),
    "replay": "replay",
}
MODIFIERS = tuple(MODIFIER_GROUPS)


@dataclass(frozen=True)
class StrategySpec:
    """One strategy entry, parsed: its rule and its modifiers in the order written.

    >>> spec = strategy_spec("noise-adaptive+adam+phases+replay")
    >>> spec.rule, spec.optimizer, spec.schedule, spec.has("replay"), spec.degree
    ('noise-adaptive', 'adam', 'phases', True, False)
    >>> strategy_spec("fedavg").optimizer, strategy_spec("fedavg").schedule
    (None, 'constant')
    """

    rule: str
    modifiers: tuple[str, ...]

    def has(self, modifier: str) -> bool:
        """Whether the entry carries ``+modifier``."""
        return modifier in self.modifiers

    def _of(self, group: str) -> str | None:
        return next((m for m in self.modifiers if MODIFIER_GROUPS[m] == group), None)

    @property
    def optimizer(self) -> str | None:
        """The optimizer modifier (``sgd``, ``adam``, ``adagrad``), or None: the config's."""
        return self._of(OPTIMIZER)

    @property
    def schedule(self) -> str:
        """The round-indexed schedule: the schedule modifier, else ``constant``."""
        return self._of(SCHEDULE) or "constant"

    @property
    def degree(self) -> bool:
        """Whether the entry applies the degree rule (``+degree``)."""
        return self.has("degree")


def strategy_spec(name: str) -> StrategySpec:
    """Parse a strategy entry ``RULE[+MODIFIER...]`` once (parts are stripped; cached).

    Raises
    ------
    ConfigError
        Unknown rule or modifier, a repeated modifier, two optimizers or two schedules.
    """
    return _parse(str(name))


@functools.lru_cache(maxsize=1024)
def _parse(name: str) -> StrategySpec:
    rule, *mods = (part.strip() for part in name.split("+"))
    if rule not in STRATEGIES:
        raise ConfigError(
            f"strategies: unknown strategy {rule!r} in {name!r}; allowed: {', '.join(STRATEGIES)}"
        )
    bad = [m for m in mods if m not in MODIFIER_GROUPS]
    if bad:
        raise ConfigError(
            f"strategies: unknown modifier {bad[0]!r} in {name!r}; allowed: +"
            + ", +".join(MODIFIERS)
        )
    groups = [MODIFIER_GROUPS[m] for m in mods]
    if len(set(mods)) != len(mods) or groups.count(OPTIMIZER) > 1:
        raise ConfigError(
            f"strategies: {name!r} repeats a modifier or names two optimizers; expected at most "
            "one of +sgd, +adam, +adagrad and each other modifier at most once"
        )
    if groups.count(SCHEDULE) > 1:
        raise ConfigError(
            f"strategies: {name!r} names two schedules; expected at most one of +"
            + ", +".join(SCHEDULE_MODIFIERS)
        )
    return StrategySpec(rule, tuple(mods))


def parse_strategy(name: str) -> tuple[str, tuple[str, ...]]:
    """Split a strategy entry ``RULE[+MODIFIER...]`` into its rule and modifiers.

    >>> parse_strategy("noise-adaptive+adam+degree")
    ('noise-adaptive', ('adam', 'degree'))

    Raises
    ------
    ConfigError
        Unknown rule or modifier, a repeated modifier, or two optimizers.
    """
    spec = strategy_spec(name)
    return spec.rule, spec.modifiers


def is_strategy_list(value: str) -> bool:
    """Whether ``value`` is a non-empty comma list of distinct, valid strategy entries.

    Raises
    ------
    ConfigError
        An entry that does not parse, with the reason (:func:`strategy_spec`).
    """
    items = split_list(value)
    if not items or len(set(items)) != len(items):
        return False
    for item in items:
        strategy_spec(item)  # raises with the reason
    return True


def strategy_config(name: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The run config as strategy ``name`` sends it to clients.

    The optimizer is the modifier's (``+adam``), else the config's ``optimizer``; ``lr`` becomes
    that optimizer's base rate (``lr`` for SGD, ``adam-lr``, ``adagrad-lr``). Whether the degree
    rule applies is :func:`uses_degree` (the strategy tells its clients in each message).

    >>> from fedlr.config import resolve
    >>> cfg = resolve(overrides={"dataset": "karate", "num-clients": 2, "noisy-clients": 0,
    ...     "hard-clean-clients": 0, "strategies": "fedavg,fedavg+adam+degree"})
    >>> out = strategy_config("fedavg+adam+degree", cfg)
    >>> out["optimizer"], out["lr"]
    ('adam', 0.01)
    >>> strategy_config("fedavg", cfg)["lr"]
    0.1
    """
    spec = strategy_spec(name)
    out = dict(cfg)
    optimizer = spec.optimizer or cfg["optimizer"]
    out["optimizer"] = optimizer
    out["lr"] = {"sgd": cfg["lr"], "adam": cfg["adam-lr"], "adagrad": cfg["adagrad-lr"]}[optimizer]
    return out


def uses_degree(name: str) -> bool:
    """Whether strategy ``name`` applies the degree rule (``+degree``).

    >>> uses_degree("noise-adaptive+degree"), uses_degree("fedavg+adam")
    (True, False)
    """
    return strategy_spec(name).degree


def uses_modifier(name: str, modifier: str) -> bool:
    """Whether strategy ``name`` carries ``+modifier``.

    >>> uses_modifier("fedavg+coupled", "coupled"), uses_modifier("fedavg", "grow-batch")
    (True, False)
    """
    return strategy_spec(name).has(modifier)


def schedule_of(name: str) -> str:
    """The round-indexed schedule of strategy ``name``: its schedule modifier, else constant.

    >>> schedule_of("noise-adaptive+phases+replay"), schedule_of("fedavg")
    ('phases', 'constant')
    """
    return strategy_spec(name).schedule
