"""Strategies: entries ``RULE[+MODIFIER...]`` and named tables, parsed once into a spec.

A strategy in ``strategies`` is RULE or RULE+MODIFIER[+MODIFIER]: an optimizer modifier sets the
strategy's local optimizer (and base rate: lr, adam-lr or adagrad-lr); ``degree`` turns on the
degree-aware rates of graph tasks (degree-gamma). See :func:`strategy_config`.
``coupled`` gives each client the rate for its own batch size (coupling-rule); ``grow-batch``
turns each step of the rate decay (lr-decay-rounds) into batch growth at the same lr / B.
A schedule modifier (``+cosine``, ``+phases``, ...) multiplies the strategy's rate by a
round-indexed schedule (fedlr.rates.schedules, ``schedule-*`` keys); ``replay`` mixes
``replay-size`` examples of earlier tasks into a continual client's training (``stream``).

A named strategy is a table ``[strategy.NAME]`` of a config file (in Flower's run config, the
dotted keys ``strategy.NAME.KEY``) whose NAME is listed in ``strategies``: its ``rule``, its
modifiers (``optimizer``, ``schedule``, ``degree``, ``coupled``, ``grow-batch``, ``replay``) and
its own values of the keys they own (:mod:`fedlr.config.modifiers`), e.g.
``schedule = { name = "cosine", floor = 0.1 }`` or ``schedule-floor = 0.1``
(:func:`table_spec`).

An entry or table is parsed into a :class:`StrategySpec` (:func:`strategy_spec`; an entry is
cached); :func:`strategy_config` applies a table's values to the run config, and the functions
:func:`parse_strategy`, :func:`uses_degree`, :func:`uses_modifier` and :func:`schedule_of` read
the spec (given the run config, a table's name too).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedlr.config.modifiers import (
    MODIFIER_GROUPS,
    MODIFIER_REGISTRY,
    MODIFIERS,
    OPTIMIZER,
    OPTIMIZER_KEYS,
    OPTIMIZER_MODIFIERS,
    SCHEDULE,
    SCHEDULE_MODIFIERS,
)
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

# The rules' own keys: a strategy table may set them for a strategy of that rule.
RULE_KEYS: dict[str, tuple[str, ...]] = {
    "noise-adaptive": ("noise-weighted-aggregation",),
    "qfedavg": ("qfedavg-q",),
    "fedprox": ("fedprox-mu",),
    "fedcorr-prox": ("fedprox-mu", "fedcorr-beta"),
}

# Named strategies: the tables [strategy.NAME] of a config file, which Flower's run config
# flattens into dotted keys strategy.NAME.KEY (the form a resolved config keeps).
TABLES = "strategy"
# The modifiers a table sets, each by its group: optimizer, schedule, and the others by name.
SLOTS = (OPTIMIZER, "degree", "coupled", "grow-batch", SCHEDULE, "replay")
_TABLE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")


@dataclass(frozen=True)
class StrategySpec:
    """One strategy, parsed: its rule, its modifiers, and a table's own values of their keys.

    >>> spec = strategy_spec("noise-adaptive+adam+phases+replay")
    >>> spec.rule, spec.optimizer, spec.schedule, spec.has("replay"), spec.degree
    ('noise-adaptive', 'adam', 'phases', True, False)
    >>> strategy_spec("fedavg").optimizer, strategy_spec("fedavg").schedule
    (None, 'constant')
    """

    rule: str
    modifiers: tuple[str, ...]
    # A table's values of the keys its rule and modifiers own, and where each was set
    # (``strategy.NAME.schedule.floor``); empty for a one-line entry.
    overrides: tuple[tuple[str, Any], ...] = ()
    paths: tuple[tuple[str, str], ...] = ()

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

    def where(self, key: str) -> str:
        """Where ``key`` was set for this strategy: its table's key, else the run-wide key."""
        return dict(self.paths).get(key, key)


def owned_keys(rule: str, modifiers: tuple[str, ...]) -> tuple[str, ...]:
    """The run-config keys a strategy of ``rule`` with ``modifiers`` reads, which its table may set.

    Every strategy has an optimizer, so any optimizer's keys (``lr``, ``adam-lr``, ...), then
    the rule's (:data:`RULE_KEYS`) and each modifier's (:data:`MODIFIER_REGISTRY`).

    >>> owned_keys("fedprox", ("cosine",))
    ('lr', 'momentum', 'weight-decay', 'adam-lr', 'adagrad-lr', 'fedprox-mu', 'schedule-floor')
    """
    keys = [*OPTIMIZER_KEYS, *RULE_KEYS.get(rule, ())]
    for modifier in modifiers:
        keys.extend(MODIFIER_REGISTRY[modifier].keys)
    return tuple(dict.fromkeys(keys))


def is_table_name(name: str) -> bool:
    """Whether ``name`` can name a strategy table: letters, digits, ``_`` and ``-``, not a rule."""
    return bool(_TABLE_NAME.fullmatch(name)) and name not in STRATEGIES


def strategy_tables(cfg: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The strategy tables of a config: name -> its keys (``schedule.floor`` for sub-tables).

    A resolved config keeps them as Flower's dotted keys (``strategy.cos-lo.rule``); a
    ``config.toml`` read as it is holds them nested (``cfg["strategy"]["cos-lo"]["rule"]``).

    >>> strategy_tables({"seed": 0, "strategy.cos-lo.rule": "fedavg",
    ...                  "strategy.cos-lo.schedule.name": "cosine"})
    {'cos-lo': {'rule': 'fedavg', 'schedule.name': 'cosine'}}
    """
    flat: dict[str, Any] = {}
    nested = cfg.get(TABLES)
    if isinstance(nested, Mapping):
        flat.update(_flatten(nested, TABLES))
    flat.update((k, v) for k, v in cfg.items() if k.startswith(TABLES + "."))
    tables: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        name, _, rest = key[len(TABLES) + 1 :].partition(".")
        tables.setdefault(name, {})[rest] = value
    return tables


def _flatten(table: Mapping[str, Any], parent: str) -> dict[str, Any]:
    """Nested tables as Flower's run config has them: dotted keys (``a.b.c``)."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{parent}.{key}" if parent else str(key)
        if isinstance(value, Mapping):
            out.update(_flatten(value, dotted))
        else:
            out[dotted] = value
    return out


def table_spec(name: str, table: Mapping[str, Any]) -> StrategySpec:
    """Parse the strategy table ``[strategy.NAME]`` (its keys relative to the table).

    ``rule`` is required; ``optimizer`` and ``schedule`` name a modifier (or are a table with
    ``name`` and the modifier's parameters); ``degree``, ``coupled``, ``grow-batch`` and
    ``replay`` are true or false (or a table of the modifier's parameters); any other key is one
    that the rule or a modifier owns (:func:`owned_keys`). Values are checked by the schema
    when the config is resolved (:func:`fedlr.config.resolve`).

    >>> spec = table_spec("cos-lo", {"rule": "fedavg", "schedule.name": "cosine",
    ...                              "schedule.floor": 0.1, "lr": 0.05})
    >>> spec.rule, spec.modifiers, spec.overrides
    ('fedavg', ('cosine',), (('schedule-floor', 0.1), ('lr', 0.05)))
    >>> spec.where("schedule-floor")
    'strategy.cos-lo.schedule.floor'

    Raises
    ------
    ConfigError
        One line naming the table's key and what is allowed.
    """
    label = f"{TABLES}.{name}"
    if name in STRATEGIES:
        raise ConfigError(
            f"{label}: {name!r} already names the rule {name}; expected another name for the "
            f"table (e.g. {name}-1)"
        )
    if not is_table_name(name):
        raise ConfigError(
            f"{label}: expected a table name of letters, digits, '_' and '-' (at most 64), got "
            f"{name!r}"
        )
    top: dict[str, Any] = {}
    sub: dict[str, dict[str, Any]] = {}
    for key, value in table.items():
        head, dot, param = key.partition(".")
        if not dot:
            top[key] = value
        elif head in SLOTS and param and "." not in param:
            sub.setdefault(head, {})[param] = value
        else:
            raise ConfigError(f"{label}.{key}: unknown key; allowed: {_allowed(top.get('rule'))}")
    rule = top.pop("rule", None)
    if rule is None:
        raise ConfigError(f"{label}: expected rule = one of {', '.join(STRATEGIES)}; got no rule")
    if not isinstance(rule, str) or rule not in STRATEGIES:
        raise ConfigError(
            f"{label}.rule: unknown strategy {rule!r}; expected one of {', '.join(STRATEGIES)} "
            f"(modifiers are keys of the table: {', '.join(SLOTS)})"
        )
    modifiers: list[str] = []
    overrides: dict[str, tuple[Any, str]] = {}
    for slot in SLOTS:
        if slot in top and slot in sub:
            raise ConfigError(
                f"{label}.{slot}: set twice, as a value and as a table; expected one of them"
            )
        modifier = _slot_modifier(label, slot, top.pop(slot, None), sub.get(slot))
        if modifier is None:
            continue
        modifiers.append(modifier)
        params = MODIFIER_REGISTRY[modifier].params
        for param, value in (sub.get(slot) or {}).items():
            if param == "name" and slot in (OPTIMIZER, SCHEDULE):
                continue
            if param not in params:
                allowed = [*(["name"] if slot in (OPTIMIZER, SCHEDULE) else []), *params]
                raise ConfigError(
                    f"{label}.{slot}.{param}: not a parameter of {modifier}; allowed: "
                    + (", ".join(allowed) or "none")
                )
            overrides[params[param]] = (value, f"{label}.{slot}.{param}")
    owned = owned_keys(rule, tuple(modifiers))
    for key, value in top.items():
        if key not in owned:
            raise ConfigError(
                f"{label}.{key}: not a key of this strategy's rule or modifiers (a run-wide key "
                f"goes at the top of the file); allowed: {_allowed(rule, tuple(modifiers))}"
            )
        if key in overrides:
            raise ConfigError(
                f"{label}.{key}: set twice, also as {overrides[key][1]}; expected one of them"
            )
        overrides[key] = (value, f"{label}.{key}")
    return StrategySpec(
        rule,
        tuple(modifiers),
        tuple((key, value) for key, (value, _) in overrides.items()),
        tuple((key, path) for key, (_, path) in overrides.items()),
    )


def _allowed(rule: Any, modifiers: tuple[str, ...] = ()) -> str:
    keys = owned_keys(rule, modifiers) if rule in STRATEGIES else OPTIMIZER_KEYS
    return f"rule, {', '.join(SLOTS)} and the keys of its rule and modifiers ({', '.join(keys)})"


def _slot_modifier(
    label: str, slot: str, value: Any, table: Mapping[str, Any] | None
) -> str | None:
    """The modifier a table's slot turns on (None: off), from its value or its own table."""
    if slot in (OPTIMIZER, SCHEDULE):
        options = OPTIMIZER_MODIFIERS if slot == OPTIMIZER else SCHEDULE_MODIFIERS
        where = f"{label}.{slot}"
        if table is not None:
            value, where = table.get("name"), f"{label}.{slot}.name"
            if value is None:
                raise ConfigError(f"{where}: expected one of {', '.join(options)}; got no name")
        if value is None:
            return None
        if not isinstance(value, str) or value not in options:
            raise ConfigError(f"{where}: expected one of {', '.join(options)}, got {value!r}")
        return value
    if table is not None:
        return slot
    if value is None or value is False:
        return None
    if value is not True:
        params = ", ".join(MODIFIER_REGISTRY[slot].params) or "none"
        raise ConfigError(
            f"{label}.{slot}: expected true or false (or a table of its parameters: {params}), "
            f"got {value!r}"
        )
    return slot


def strategy_spec(name: str, cfg: Mapping[str, Any] | None = None) -> StrategySpec:
    """Parse a strategy entry ``RULE[+MODIFIER...]`` once (parts are stripped; cached).

    With the run config ``cfg``, a name its tables define (``[strategy.NAME]``) is that table
    (:func:`table_spec`).

    Raises
    ------
    ConfigError
        Unknown rule or modifier, a repeated modifier, two optimizers or two schedules; a bad
        table.
    """
    name = str(name)
    if cfg is not None and is_table_name(name.strip()):
        table = strategy_tables(cfg).get(name.strip())
        if table is not None:
            return table_spec(name.strip(), table)
    return _parse(name)


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


def parse_strategy(name: str, cfg: Mapping[str, Any] | None = None) -> tuple[str, tuple[str, ...]]:
    """Split a strategy entry ``RULE[+MODIFIER...]`` (or ``cfg``'s table) into rule and modifiers.

    >>> parse_strategy("noise-adaptive+adam+degree")
    ('noise-adaptive', ('adam', 'degree'))

    Raises
    ------
    ConfigError
        Unknown rule or modifier, a repeated modifier, or two optimizers.
    """
    spec = strategy_spec(name, cfg)
    return spec.rule, spec.modifiers


def is_strategy_list(value: str) -> bool:
    """Whether ``value`` is a non-empty comma list of distinct, valid strategy entries.

    An entry that could name a strategy table (``cos-lo``) passes here; that the table exists
    is checked with the whole config (:func:`check_tables`).

    Raises
    ------
    ConfigError
        An entry that does not parse, with the reason (:func:`strategy_spec`).
    """
    items = split_list(value)
    if not items or len(set(items)) != len(items):
        return False
    for item in items:
        if not is_table_name(item):
            strategy_spec(item)  # raises with the reason
    return True


def check_tables(cfg: Mapping[str, Any]) -> list[str]:
    """Check the strategy tables against ``strategies``; return the entries, in order.

    Each table parses (:func:`table_spec`), each entry is a rule with modifiers or names a
    table, and each table is listed.

    Raises
    ------
    ConfigError
        One line naming the entry or the table's key and what is allowed.
    """
    names = split_list(cfg["strategies"])
    tables = strategy_tables(cfg)
    for table, keys in tables.items():
        table_spec(table, keys)
    for name in names:
        if is_table_name(name) and name not in tables:
            raise ConfigError(
                f"strategies: unknown strategy {name!r}; expected one of {', '.join(STRATEGIES)} "
                f"(optionally +MODIFIERs), or the name of a table [{TABLES}.{name}] that defines it"
            )
    unlisted = [table for table in tables if table not in names]
    if unlisted:
        raise ConfigError(
            f"{TABLES}.{unlisted[0]}: the table is not listed in strategies "
            f"({cfg['strategies']!r}); expected its name there, or no table"
        )
    return names


def strategy_config(name: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The run config as strategy ``name`` sends it to clients.

    A strategy table's own values of its keys replace the run's (``schedule-floor``, ``lr``,
    ...); the tables themselves are left out. The optimizer is the modifier's (``+adam``), else
    the config's ``optimizer``; ``lr`` becomes that optimizer's base rate (``lr`` for SGD,
    ``adam-lr``, ``adagrad-lr``). Whether the degree rule applies is :func:`uses_degree` (the
    strategy tells its clients in each message).

    >>> from fedlr.config import resolve
    >>> cfg = resolve(overrides={"dataset": "karate", "num-clients": 2, "noisy-clients": 0,
    ...     "hard-clean-clients": 0, "strategies": "fedavg,fedavg+adam+degree,slow",
    ...     "strategy.slow.rule": "fedavg", "strategy.slow.lr": 0.02})
    >>> out = strategy_config("fedavg+adam+degree", cfg)
    >>> out["optimizer"], out["lr"]
    ('adam', 0.01)
    >>> strategy_config("fedavg", cfg)["lr"], strategy_config("slow", cfg)["lr"]
    (0.1, 0.02)
    """
    spec = strategy_spec(name, cfg)
    out = {k: v for k, v in cfg.items() if k != TABLES and not k.startswith(TABLES + ".")}
    out.update(spec.overrides)
    optimizer = spec.optimizer or out["optimizer"]
    out["optimizer"] = optimizer
    out["lr"] = {"sgd": out["lr"], "adam": out["adam-lr"], "adagrad": out["adagrad-lr"]}[optimizer]
    return out


def check_modifiers(name: str, cfg: Mapping[str, Any]) -> None:
    """Run each modifier's own check (:data:`MODIFIER_REGISTRY`) on strategy ``name``'s config.

    Raises
    ------
    ConfigError
        One line naming the key where it was set (the table's, or the run-wide key).
    """
    spec = strategy_spec(name, cfg)
    own: dict[str, Any] | None = None
    for modifier in spec.modifiers:
        check = MODIFIER_REGISTRY[modifier].check
        if check is not None:
            own = own if own is not None else strategy_config(name, cfg)
            check(own, spec.where)


def uses_degree(name: str, cfg: Mapping[str, Any] | None = None) -> bool:
    """Whether strategy ``name`` applies the degree rule (``+degree``).

    >>> uses_degree("noise-adaptive+degree"), uses_degree("fedavg+adam")
    (True, False)
    """
    return strategy_spec(name, cfg).degree


def uses_modifier(name: str, modifier: str, cfg: Mapping[str, Any] | None = None) -> bool:
    """Whether strategy ``name`` (``cfg``'s table, if it is one) carries ``+modifier``.

    >>> uses_modifier("fedavg+coupled", "coupled"), uses_modifier("fedavg", "grow-batch")
    (True, False)
    """
    return strategy_spec(name, cfg).has(modifier)


def schedule_of(name: str, cfg: Mapping[str, Any] | None = None) -> str:
    """The round-indexed schedule of strategy ``name``: its schedule modifier, else constant.

    >>> schedule_of("noise-adaptive+phases+replay"), schedule_of("fedavg")
    ('phases', 'constant')
    """
    return strategy_spec(name, cfg).schedule
