"""Run configuration: one flat table of kebab-case keys, resolved defaults < file < overrides.

The same keys are used by ``fedlr simulate`` (a scenario TOML file plus ``--set key=value``) and
by ``flwr run .`` (``[tool.flwr.app.config]`` in pyproject.toml plus ``--run-config``). Flower
accepts only scalar values there, so list-valued keys (``strategies``, ``hard-classes``) are
comma-separated strings; a scenario file may also write them as TOML arrays.

A strategy may also be a named table, ``[strategy.NAME]`` (``rule``, modifiers and its own
values of their keys), which Flower's run config holds as dotted keys ``strategy.NAME.KEY``.

Every value is checked once, here: an unknown key, a wrong type or a value out of range raises
:class:`ConfigError` with one line naming the key and what is allowed.

The package is the lowest layer of fedlr (it imports no other fedlr package, but for counting
the sites of users' files); its modules, bottom up:

``choices``      the allowed values of choice keys (datasets, optimizers, streams, ...)
``values``       :class:`Key`, :class:`ConfigError` and the checks keys are built from
``batches``      the ``client-batch-sizes`` format and each client's batch size
``modifiers``    the modifier registry: each modifier's group, the keys it owns, its check
``strategies``   strategy entries ``RULE+MODIFIER...`` and tables ``[strategy.NAME]``, parsed
                 into a :class:`StrategySpec`
``keys_data``, ``keys_training``   the keys, each named once
``schema``       :data:`SCHEMA` (both tables), :data:`DEFAULTS`, the Markdown table of keys
``checks``       :func:`validate`: relations between keys
``loading``      :func:`resolve`, :func:`from_run_config`, overrides and TOML
"""

from fedlr.config.batches import client_batch_sizes
from fedlr.config.checks import stagger_limit, validate
from fedlr.config.choices import (
    AGGREGATIONS,
    BATCH_SPREADS,
    BUILTIN_MODELS,
    COUPLING_RULES,
    DATASETS,
    DEGREE_MODES,
    DEGREE_SOURCES,
    DEVICES,
    ESTIMATORS,
    FILE_DATASETS,
    GNN_KINDS,
    GRAPH_DATASETS,
    GRAPH_LABELS,
    GRAPH_SPLITS,
    LABEL_NOISE,
    MAX_CONFIG_BYTES,
    MAX_ROUNDS,
    METRICS,
    NOISE_SCALE_GROWTH,
    OPTIMIZERS,
    PARTITIONERS,
    STANDARDIZE,
    STREAMS,
    TABULAR_DATASETS,
    WEIGHT_DECAY_COUPLINGS,
    is_files,
    is_graph,
)
from fedlr.config.loading import FILE_DEFAULTS, from_run_config, parse_override, resolve, to_toml
from fedlr.config.schema import DEFAULTS, SCHEMA, keys_markdown
from fedlr.config.modifiers import MODIFIER_REGISTRY, Modifier
from fedlr.config.strategies import (
    DEFAULT_STRATEGIES,
    MODIFIER_GROUPS,
    MODIFIERS,
    OPTIMIZER_MODIFIERS,
    RULE_KEYS,
    SCHEDULE_MODIFIERS,
    STRATEGIES,
    StrategySpec,
    owned_keys,
    parse_strategy,
    schedule_of,
    strategy_config,
    strategy_spec,
    strategy_tables,
    table_spec,
    uses_degree,
    uses_modifier,
)
from fedlr.config.values import ConfigError, Key, split_list

__all__ = [
    "AGGREGATIONS",
    "BATCH_SPREADS",
    "BUILTIN_MODELS",
    "COUPLING_RULES",
    "DATASETS",
    "DEFAULTS",
    "DEFAULT_STRATEGIES",
    "DEGREE_MODES",
    "DEGREE_SOURCES",
    "DEVICES",
    "ESTIMATORS",
    "FILE_DATASETS",
    "FILE_DEFAULTS",
    "GNN_KINDS",
    "GRAPH_DATASETS",
    "GRAPH_LABELS",
    "GRAPH_SPLITS",
    "LABEL_NOISE",
    "MAX_CONFIG_BYTES",
    "MAX_ROUNDS",
    "METRICS",
    "MODIFIERS",
    "MODIFIER_GROUPS",
    "MODIFIER_REGISTRY",
    "NOISE_SCALE_GROWTH",
    "OPTIMIZERS",
    "OPTIMIZER_MODIFIERS",
    "PARTITIONERS",
    "RULE_KEYS",
    "SCHEDULE_MODIFIERS",
    "SCHEMA",
    "STANDARDIZE",
    "STRATEGIES",
    "STREAMS",
    "TABULAR_DATASETS",
    "WEIGHT_DECAY_COUPLINGS",
    "ConfigError",
    "Key",
    "Modifier",
    "StrategySpec",
    "client_batch_sizes",
    "from_run_config",
    "is_files",
    "is_graph",
    "keys_markdown",
    "owned_keys",
    "parse_override",
    "parse_strategy",
    "resolve",
    "schedule_of",
    "split_list",
    "stagger_limit",
    "strategy_config",
    "strategy_spec",
    "strategy_tables",
    "table_spec",
    "to_toml",
    "uses_degree",
    "uses_modifier",
    "validate",
]
