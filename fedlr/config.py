"""Run configuration: one flat table of kebab-case keys, resolved defaults < file < overrides.

The same keys are used by ``fedlr simulate`` (a scenario TOML file plus ``--set key=value``) and
by ``flwr run .`` (``[tool.flwr.app.config]`` in pyproject.toml plus ``--run-config``). Flower
accepts only scalar values there, so list-valued keys (``strategies``, ``hard-classes``) are
comma-separated strings; a scenario file may also write them as TOML arrays.

Every value is checked once, here: an unknown key, a wrong type or a value out of range raises
:class:`ConfigError` with one line naming the key and what is allowed.
"""

from __future__ import annotations

import re
import tomllib
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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
# Users' own tables, one file (or one site-column value) per client: read by fedlr.data.files.
FILE_DATASETS = ("csv", "parquet")
TABULAR_DATASETS = ("digits", "synthetic", *FILE_DATASETS)
GRAPH_DATASETS = ("cora", "karate", "ba")
DATASETS = TABULAR_DATASETS + GRAPH_DATASETS
STANDARDIZE = ("federated", "site", "none")
BUILTIN_MODELS = ("mlp", "linear")
# Per-client evaluation metrics (fedlr.metrics.classification, computed with scikit-learn).
METRICS = ("accuracy", "balanced-accuracy", "auroc", "f1", "loss")
PARTITIONERS = ("iid", "dirichlet", "size-skew")
LABEL_NOISE = ("symmetric", "pair-flip")
ESTIMATORS = ("loss", "loss-margin", "crossfit", "gradient", "oracle")
AGGREGATIONS = ("mean", "median", "trimmed-mean", "krum", "multi-krum")
OPTIMIZERS = ("sgd", "adam", "adagrad")
# A strategy in `strategies` is RULE or RULE+MODIFIER[+MODIFIER]: an optimizer modifier sets the
# strategy's local optimizer (and base rate: lr, adam-lr or adagrad-lr); `degree` turns on the
# degree-aware rates of graph tasks (degree-gamma). See strategy_config().
# `coupled` gives each client the rate for its own batch size (coupling-rule); `grow-batch` turns
# each step of the rate decay (lr-decay-rounds) into batch growth at the same lr / B.
# A schedule modifier (`+cosine`, `+phases`, ...) multiplies the strategy's rate by a round-indexed
# schedule (fedlr.rates.schedules, `schedule-*` keys); `replay` mixes `replay-size` examples of
# earlier tasks into a continual client's training (`stream`).
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
MODIFIERS = (*OPTIMIZER_MODIFIERS, "degree", "coupled", "grow-batch", *SCHEDULE_MODIFIERS, "replay")
GNN_KINDS = ("gcn", "sage", "gin")
GRAPH_SPLITS = ("louvain", "random")
GRAPH_LABELS = ("random", "public")
DEGREE_MODES = ("embedding", "loss", "both")
DEGREE_SOURCES = ("local", "global")
DEVICES = ("auto", "cpu", "cuda")
COUPLING_RULES = ("auto", "linear", "sqrt", "optimal")
NOISE_SCALE_GROWTH = ("none", "batch", "clients")
WEIGHT_DECAY_COUPLINGS = ("lr-proportional", "fixed-shrink")
BATCH_SPREADS = ("log-uniform", "powers-of-two")
# continual task streams (fedlr.tasks.streams); "none": one task, all of a client's data
STREAMS = ("class-incremental", "task-incremental", "permuted", "rotated")


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type, or out of range."""


@dataclass(frozen=True)
class Key:
    """One configuration key: its type, default, a check and what the check allows."""

    kind: type
    default: Any
    allowed: str
    check: Callable[[Any], bool]
    help: str


def _range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False):
    def check(v: Any) -> bool:
        if lo is not None and (v <= lo if lo_open else v < lo):
            return False
        return v <= hi if hi is not None else v < float("inf")  # rejects nan and inf

    return check


def _choice(options: tuple[str, ...]):
    return lambda v: v in options


def _subset(options: tuple[str, ...]):
    def check(v: str) -> bool:
        items = split_list(v)
        return bool(items) and len(set(items)) == len(items) and all(i in options for i in items)

    return check


MAX_ROUNDS = 100_000  # far beyond any run; keeps per-round work and logs bounded
MAX_CONFIG_BYTES = 1 << 20  # a scenario file is a few hundred lines of TOML


def _is_run_name(v: str) -> bool:
    """A run name is one path component of printable, portable characters."""
    return bool(re.fullmatch(r"[A-Za-z0-9_\-][A-Za-z0-9._\-]{0,99}", v))


def _int_list(v: str) -> bool:
    try:
        items = split_list(v)
        return bool(items) and all(0 <= int(item) for item in items)
    except ValueError:
        return False


def parse_strategy(name: str) -> tuple[str, tuple[str, ...]]:
    """Split a strategy entry ``RULE[+MODIFIER...]`` into its rule and modifiers.

    >>> parse_strategy("noise-adaptive+adam+degree")
    ('noise-adaptive', ('adam', 'degree'))

    Raises
    ------
    ConfigError
        Unknown rule or modifier, a repeated modifier, or two optimizers.
    """
    rule, *mods = (part.strip() for part in str(name).split("+"))
    if rule not in STRATEGIES:
        raise ConfigError(
            f"strategies: unknown strategy {rule!r} in {name!r}; allowed: {', '.join(STRATEGIES)}"
        )
    bad = [m for m in mods if m not in MODIFIERS]
    if bad:
        raise ConfigError(
            f"strategies: unknown modifier {bad[0]!r} in {name!r}; allowed: +"
            + ", +".join(MODIFIERS)
        )
    if len(set(mods)) != len(mods) or sum(m in OPTIMIZER_MODIFIERS for m in mods) > 1:
        raise ConfigError(
            f"strategies: {name!r} repeats a modifier or names two optimizers; expected at most "
            "one of +sgd, +adam, +adagrad and each other modifier at most once"
        )
    if sum(m in SCHEDULE_MODIFIERS for m in mods) > 1:
        raise ConfigError(
            f"strategies: {name!r} names two schedules; expected at most one of +"
            + ", +".join(SCHEDULE_MODIFIERS)
        )
    return rule, tuple(mods)


def _strategy_list(value: str) -> bool:
    items = split_list(value)
    if not items or len(set(items)) != len(items):
        return False
    for item in items:
        parse_strategy(item)  # raises with the reason
    return True


def strategy_config(name: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The run config as strategy ``name`` sends it to clients.

    The optimizer is the modifier's (``+adam``), else the config's ``optimizer``; ``lr`` becomes
    that optimizer's base rate (``lr`` for SGD, ``adam-lr``, ``adagrad-lr``). Whether the degree
    rule applies is :func:`uses_degree` (the strategy tells its clients in each message).

    >>> cfg = resolve(overrides={"dataset": "karate", "num-clients": 2, "noisy-clients": 0,
    ...     "hard-clean-clients": 0, "strategies": "fedavg,fedavg+adam+degree"})
    >>> out = strategy_config("fedavg+adam+degree", cfg)
    >>> out["optimizer"], out["lr"]
    ('adam', 0.01)
    >>> strategy_config("fedavg", cfg)["lr"]
    0.1
    """
    _, mods = parse_strategy(name)
    out = dict(cfg)
    optimizer = next((m for m in mods if m in OPTIMIZER_MODIFIERS), cfg["optimizer"])
    out["optimizer"] = optimizer
    out["lr"] = {"sgd": cfg["lr"], "adam": cfg["adam-lr"], "adagrad": cfg["adagrad-lr"]}[optimizer]
    return out


def uses_degree(name: str) -> bool:
    """Whether strategy ``name`` applies the degree rule (``+degree``).

    >>> uses_degree("noise-adaptive+degree"), uses_degree("fedavg+adam")
    (True, False)
    """
    return "degree" in parse_strategy(name)[1]


def uses_modifier(name: str, modifier: str) -> bool:
    """Whether strategy ``name`` carries ``+modifier``.

    >>> uses_modifier("fedavg+coupled", "coupled"), uses_modifier("fedavg", "grow-batch")
    (True, False)
    """
    return modifier in parse_strategy(name)[1]


def schedule_of(name: str) -> str:
    """The round-indexed schedule of strategy ``name``: its schedule modifier, else constant.

    >>> schedule_of("noise-adaptive+phases+replay"), schedule_of("fedavg")
    ('phases', 'constant')
    """
    return next((m for m in parse_strategy(name)[1] if m in SCHEDULE_MODIFIERS), "constant")


def _batch_spec(value: str) -> bool:
    """Whether ``value`` is ``""``, ``B1,B2,...`` (>= 1) or ``SPREAD:MIN:MAX``."""
    if not value.strip():
        return True
    kind, _, rest = value.partition(":")
    try:
        if kind.strip() in BATCH_SPREADS:
            low, high = (int(v) for v in rest.split(":"))
            if kind.strip() == "powers-of-two":  # at least one power of two in [low, high]
                return 1 <= low <= high and 2 ** (high.bit_length() - 1) >= low
            return 1 <= low <= high
        return all(int(item) >= 1 for item in split_list(value)) and bool(split_list(value))
    except ValueError:
        return False


def client_batch_sizes(cfg: Mapping[str, Any]) -> list[int]:
    """Each client's local batch size, by partition id, from ``client-batch-sizes``.

    ``""``: every client uses ``batch-size``. ``B1,B2,...``: one per client.
    ``log-uniform:MIN:MAX``: each client draws ``round(exp(U(log MIN, log MAX)))``.
    ``powers-of-two:MIN:MAX``: the powers of two in ``[MIN, MAX]`` dealt round-robin over the
    clients in a seeded random order, so every size occurs. Draws are seeded by ``seed``.

    >>> client_batch_sizes({"client-batch-sizes": "powers-of-two:8:32", "num-clients": 4,
    ...                     "batch-size": 16, "seed": 0})
    [16, 32, 8, 8]
    """
    spec, n = str(cfg["client-batch-sizes"]).strip(), int(cfg["num-clients"])
    if not spec:
        return [int(cfg["batch-size"])] * n
    kind, _, rest = spec.partition(":")
    rng = np.random.default_rng([int(cfg["seed"]), 0xBA7C])
    if kind.strip() == "log-uniform":
        low, high = (int(v) for v in rest.split(":"))
        draws = np.exp(rng.uniform(np.log(low), np.log(high), size=n))
        return [int(min(high, max(low, round(float(d))))) for d in draws]
    if kind.strip() == "powers-of-two":
        low, high = (int(v) for v in rest.split(":"))
        powers = [2**e for e in range(0, 31) if low <= 2**e <= high]
        order = rng.permutation(n)
        sizes = [0] * n
        for i, pid in enumerate(order):
            sizes[int(pid)] = powers[i % len(powers)]
        return sizes
    return [int(item) for item in split_list(spec)]


def is_graph(cfg: Mapping[str, Any]) -> bool:
    """Whether the run's dataset is a graph (the graph task) rather than tabular."""
    return cfg["dataset"] in GRAPH_DATASETS


def _import_string(value: str) -> bool:
    """Whether ``value`` has the shape ``package.module:attribute`` (imported later, when used)."""
    module, sep, attribute = value.partition(":")
    return bool(sep) and all(
        part.isidentifier() for part in (*module.split("."), *attribute.split("."))
    )


def is_files(cfg: Mapping[str, Any]) -> bool:
    """Whether the run's data are users' files (``dataset`` csv or parquet)."""
    return cfg["dataset"] in FILE_DATASETS


def split_list(value: str) -> list[str]:
    """Split a comma-separated config value into its stripped, non-empty items."""
    return [item.strip() for item in str(value).split(",") if item.strip()]


_ANY = _range()
_POS = _range(0, lo_open=True)
_UNIT = _range(0.0, 1.0)

SCHEMA: dict[str, Key] = {
    # -- run ---------------------------------------------------------------------------------
    "name": Key(
        str,
        "noisy_hospitals",
        "a name of letters, digits, '.', '_' and '-' (at most 100, not starting with '.')",
        _is_run_name,
        "run name (the run directory is <out-dir>/<time>-<name>)",
    ),
    "seed": Key(
        int, 0, "an integer in [0, 2**32 - 1]", _range(0, 2**32 - 1), "seed of every random choice"
    ),
    "strategies": Key(
        str,
        ",".join(DEFAULT_STRATEGIES),
        "a comma list, without repeats, of " + ", ".join(STRATEGIES) + ", each optionally "
        "followed by modifiers: +sgd, +adam or +adagrad (local optimizer), +degree "
        "(degree-aware rates), +coupled, +grow-batch, one schedule (+"
        + ", +".join(SCHEDULE_MODIFIERS)
        + ") and +replay",
        _strategy_list,
        "strategies run side by side",
    ),
    "num-server-rounds": Key(
        int, 30, "an integer in [1, 100000]", _range(1, MAX_ROUNDS), "federated rounds"
    ),
    "min-clients": Key(
        int,
        0,
        "an integer >= 0 and <= num-clients (0: all)",
        _range(0),
        "fewest connected clients a round goes ahead with; 0 means all",
    ),
    "round-timeout": Key(
        float,
        600.0,
        "a number > 0",
        _POS,
        "seconds a round waits for replies before going on with those it has",
    ),
    "fraction-train": Key(
        float,
        1.0,
        "a number in (0, 1]",
        _range(0, 1, lo_open=True),
        "fraction of clients sampled per round",
    ),
    # -- data --------------------------------------------------------------------------------
    "dataset": Key(str, "digits", " or ".join(DATASETS), _choice(DATASETS), "data source"),
    "num-clients": Key(int, 10, "an integer >= 2", _range(2), "number of clients"),
    "partitioner": Key(
        str,
        "dirichlet",
        " or ".join(PARTITIONERS),
        _choice(PARTITIONERS),
        "how digits are split across clients",
    ),
    "dirichlet-alpha": Key(float, 1.0, "a number > 0", _POS, "Dirichlet label-skew alpha"),
    "size-skew-sigma": Key(
        float,
        1.0,
        "a number > 0",
        _POS,
        "log-normal sigma of client sizes (partitioner = size-skew)",
    ),
    "test-fraction": Key(
        float,
        0.25,
        "a number in (0, 1)",
        lambda v: 0 < v < 1,
        "fraction of each client's data held out as its clean test split",
    ),
    "synthetic-alpha": Key(float, 1.0, "a number >= 0", _range(0), "LEAF Synthetic alpha"),
    "synthetic-beta": Key(float, 1.0, "a number >= 0", _range(0), "LEAF Synthetic beta"),
    "data-dir": Key(
        str,
        "",
        "a directory path, or empty (~/.cache/fedlr)",
        lambda v: True,
        "where datasets are cached (Cora's Planetoid files: raw copied from "
        "$FEDLR_PLANETOID_DIR or ../shared/data/planetoid)",
    ),
    # -- users' files (dataset = csv or parquet) ---------------------------------------------
    "data-files": Key(
        str,
        "",
        "a comma list of files or globs (.csv, .parquet), one per client, or one file with "
        "site-column; empty on a deployment whose SuperNodes read node-config data-path",
        lambda v: True,
        "the sites' tables; clients are the files in sorted order",
    ),
    "site-column": Key(
        str,
        "",
        "a column name, or empty",
        lambda v: True,
        "one file holding every site: one client per distinct value of this column, sorted",
    ),
    "label-column": Key(
        str, "label", "a column name", lambda v: bool(v.strip()), "the column to predict"
    ),
    "feature-columns": Key(
        str,
        "",
        "a comma list of column names, or empty (every column but the label and site columns)",
        lambda v: True,
        "the model's inputs",
    ),
    "categorical-columns": Key(
        str,
        "",
        "a comma list of feature column names, or empty",
        lambda v: True,
        "features one-hot encoded over the categories of all sites",
    ),
    "standardize": Key(
        str,
        "federated",
        " or ".join(STANDARDIZE),
        _choice(STANDARDIZE),
        "numeric features: z-scores from the sites' pooled train statistics (counts, sums, "
        "sums of squares; never rows), from each site's own, or none",
    ),
    # -- graphs (dataset = cora, karate or ba) ----------------------------------------------
    "graph-split": Key(
        str,
        "louvain",
        " or ".join(GRAPH_SPLITS),
        _choice(GRAPH_SPLITS),
        "how a graph's nodes are dealt out to clients (edges between clients are dropped)",
    ),
    "graph-labels": Key(
        str,
        "random",
        " or ".join(GRAPH_LABELS),
        _choice(GRAPH_LABELS),
        "random: test-fraction of all nodes are test, the rest train; public: the dataset's "
        "own masks (Cora: Planetoid's 140 train / 1000 test)",
    ),
    "normalize-features": Key(
        bool,
        False,
        "true or false",
        lambda v: True,
        "graphs: PyG's NormalizeFeatures (shift to >= 0, each node's features sum to 1)",
    ),
    "ba-nodes": Key(int, 2000, "an integer >= 10", _range(10), "nodes of the BA graph"),
    "ba-m": Key(int, 3, "an integer >= 1", _range(1), "edges each new BA node attaches"),
    "gnn": Key(str, "gcn", " or ".join(GNN_KINDS), _choice(GNN_KINDS), "message-passing layer"),
    "embedding-dim": Key(
        int, 0, "an integer >= 0", _range(0), "learnable node embedding width (0: none)"
    ),
    "degree-gamma": Key(
        float,
        0.5,
        "a number >= 0",
        _range(0),
        "exponent of the degree rule s_v = ((d_v+1)/(mean_d+1))^-gamma, for +degree strategies",
    ),
    "degree-mode": Key(
        str,
        "both",
        " or ".join(DEGREE_MODES),
        _choice(DEGREE_MODES),
        "embedding: per-row rates of node embeddings; loss: per-node loss weights; both",
    ),
    "degree-source": Key(
        str,
        "local",
        " or ".join(DEGREE_SOURCES),
        _choice(DEGREE_SOURCES),
        "degree the rule reads: in the client's subgraph (local) or the whole graph (global)",
    ),
    "degree-low": Key(
        float, 0.1, "a number in (0, 1]", _range(0, 1, lo_open=True), "lowest degree scale"
    ),
    "degree-high": Key(float, 10.0, "a number >= 1", _range(1), "highest degree scale"),
    # -- noise -------------------------------------------------------------------------------
    "label-noise": Key(
        str,
        "symmetric",
        " or ".join(LABEL_NOISE),
        _choice(LABEL_NOISE),
        "label noise model on noisy clients' train splits",
    ),
    "noisy-clients": Key(
        int,
        8,
        "an integer >= 0 and <= num-clients",
        _range(0),
        "clients with label noise (partition ids 0..n-1); unset, below 9 clients: 8n // 10",
    ),
    "noisy-client-ids": Key(
        str,
        "",
        "a comma list of noisy-clients distinct partition ids, or empty (ids 0..n-1)",
        lambda v: _int_list(v) if str(v).strip() else True,
        "which partition ids get the label noise, in rate order (empty: 0..noisy-clients-1)",
    ),
    "noise-rate-min": Key(float, 0.6, "a number in [0, 1]", _UNIT, "lowest label-noise rate"),
    "noise-rate-max": Key(float, 0.95, "a number in [0, 1]", _UNIT, "highest label-noise rate"),
    "hard-clean-clients": Key(
        int,
        1,
        "an integer >= 0",
        _range(0),
        "clean clients holding only the hardest classes; unset, with fewer than 9 clients: n // 10",
    ),
    "hard-classes": Key(
        str,
        "1,3,8,9",
        "a comma list of class indices",
        _int_list,
        "classes a hard-but-clean client holds",
    ),
    "feature-noise-clients": Key(
        int,
        0,
        "an integer >= 0",
        _range(0),
        "clients with Gaussian input noise (the last partition ids)",
    ),
    "feature-noise-sigma": Key(
        float,
        0.0,
        "a number >= 0",
        _range(0),
        "std of the Gaussian input noise ('older equipment')",
    ),
    # -- local training ----------------------------------------------------------------------
    "model": Key(
        str,
        "mlp",
        "mlp, linear or package.module:function (called with the number of features and "
        "classes, returning a torch.nn.Module)",
        lambda v: v in BUILTIN_MODELS or _import_string(v),
        "tabular model: a 2-layer MLP (hidden), a linear layer (logistic regression), or yours",
    ),
    "task": Key(
        str,
        "",
        "'' (the built-in task of dataset) or package.module:factory (called with the run "
        "config, returning a fedlr Task, e.g. a fedlr.tasks.base.ArrayTask)",
        lambda v: not v or _import_string(v),
        "your own task: data, model and loops (dataset and model are then not used)",
    ),
    "hidden": Key(int, 64, "an integer >= 1", _range(1), "hidden width (MLP or GNN)"),
    "local-epochs": Key(
        int,
        2,
        "an integer >= 1",
        _range(1),
        "local epochs per round (graphs: full-batch steps)",
    ),
    "batch-size": Key(int, 16, "an integer >= 1", _range(1), "local batch size"),
    "optimizer": Key(str, "sgd", " or ".join(OPTIMIZERS), _choice(OPTIMIZERS), "local optimizer"),
    "lr": Key(float, 0.1, "a number > 0", _POS, "base learning rate lr_0 of SGD"),
    "adam-lr": Key(float, 0.01, "a number > 0", _POS, "base learning rate of Adam"),
    "adagrad-lr": Key(float, 0.05, "a number > 0", _POS, "base learning rate of Adagrad"),
    "momentum": Key(float, 0.0, "a number in [0, 1)", lambda v: 0 <= v < 1, "SGD momentum"),
    "weight-decay": Key(
        float,
        0.0,
        "a number >= 0",
        _range(0),
        "weight decay at the base rate (SGD: L2; Adam: AdamW's decoupled decay)",
    ),
    "weight-decay-coupling": Key(
        str,
        "lr-proportional",
        " or ".join(WEIGHT_DECAY_COUPLINGS),
        _choice(WEIGHT_DECAY_COUPLINGS),
        "a client at another rate: keep weight-decay (shrink per step ~ lr) or lr * weight-decay",
    ),
    # -- batch size and gradient noise scale --------------------------------------------------
    "client-batch-sizes": Key(
        str,
        "",
        "'' (all batch-size), B1,B2,... (one per client), log-uniform:MIN:MAX or "
        "powers-of-two:MIN:MAX",
        _batch_spec,
        "each client's local batch size (a SuperNode's node-config batch-size wins)",
    ),
    "coupling-rule": Key(
        str,
        "auto",
        " or ".join(COUPLING_RULES),
        _choice(COUPLING_RULES),
        "+coupled: rate vs batch (auto: linear for SGD, sqrt for Adam/Adagrad; optimal: "
        "lr_max / (1 + B_noise / B) with the measured noise scale)",
    ),
    "coupling-reference": Key(
        int,
        0,
        "an integer >= 0",
        _range(0),
        "+coupled: the batch the base rate is tuned for (0: the clients' median batch)",
    ),
    "coupling-low": Key(
        float, 0.05, "a number in (0, 1]", _range(0, 1, lo_open=True), "lowest coupling factor"
    ),
    "coupling-high": Key(float, 20.0, "a number >= 1", _range(1), "highest coupling factor"),
    "coupling-warmup-rounds": Key(
        int,
        0,
        "an integer >= 0",
        _range(0),
        "+coupled: rounds over which factors ramp linearly from 1 (Goyal et al.'s warm-up)",
    ),
    "measure-noise-scale": Key(
        bool,
        False,
        "true or false",
        lambda v: True,
        "clients send a gradient at the received weights; the server estimates B_simple",
    ),
    "noise-scale-ema": Key(
        float,
        0.8,
        "a number in [0, 1)",
        lambda v: 0 <= v < 1,
        "EMA decay of the |G|^2 and tr(Sigma) estimates (B_simple is their ratio)",
    ),
    "noise-scale-growth": Key(
        str,
        "none",
        " or ".join(NOISE_SCALE_GROWTH),
        _choice(NOISE_SCALE_GROWTH),
        "grow local batches or clients per round as B_simple grows past its first estimate",
    ),
    "noise-scale-growth-max": Key(
        float, 8.0, "a number >= 1", _range(1), "largest growth factor of noise-scale-growth"
    ),
    "lr-decay-rounds": Key(
        str,
        "",
        "'' or increasing round numbers R1,R2,... in 1..num-server-rounds",
        lambda v: not split_list(v) or _int_list(v),
        "rounds from which the rate is multiplied by lr-decay-factor (+grow-batch: batch / it)",
    ),
    "lr-decay-factor": Key(
        float,
        0.2,
        "a number in (0, 1)",
        lambda v: 0 < v < 1,
        "rate factor per decay step (Smith et al.: 1/5)",
    ),
    # -- schedules and continual learning -----------------------------------------------------
    "schedule-period": Key(
        int,
        0,
        "an integer >= 0",
        _range(0),
        "+step: rounds per step; +warm-restarts: rounds of the first cycle; +cyclical: rounds "
        "per cycle (half up, half down); 0: num-server-rounds / num-tasks",
    ),
    "schedule-gamma": Key(
        float,
        0.5,
        "a number in (0, 1]",
        _range(0, 1, lo_open=True),
        "+step: factor per step; +exponential: factor per round",
    ),
    "schedule-floor": Key(
        float,
        0.0,
        "a number in [0, 1]",
        _UNIT,
        "+cosine, +warm-restarts, +cyclical, +phases: lowest multiplier of the base rate",
    ),
    "schedule-warmup": Key(
        int,
        1,
        "an integer >= 0",
        _range(0),
        "+phases: linear warm-up of each phase (task), reaching the peak in this round of the "
        "phase (1: it starts at the peak)",
    ),
    "schedule-peak-decay": Key(
        float,
        1.0,
        "a number in (0, 1]",
        _range(0, 1, lo_open=True),
        "+phases: each phase's peak relative to the previous phase's",
    ),
    "stream": Key(
        str,
        "none",
        "none or " + " or ".join(STREAMS),
        _choice(("none", *STREAMS)),
        "continual learning: each client learns num-tasks tasks in turn (none: one task)",
    ),
    "num-tasks": Key(
        int,
        5,
        "an integer >= 1",
        _range(1),
        "tasks of the stream (split streams: a divisor of the 10 classes); without a stream, "
        "the phases of +phases",
    ),
    "task-stagger": Key(
        int,
        0,
        "an integer >= 0",
        _range(0),
        "rounds by which each client's tasks after the first arrive after the previous "
        "client's (0: together; capped at the shortest task's length minus one)",
    ),
    "rotation-max": Key(
        float,
        90.0,
        "a number in [0, 360]",
        _range(0.0, 360.0),
        "stream rotated: angle in degrees of the last task (task t: t / (T - 1) of it)",
    ),
    "replay-size": Key(
        int,
        20,
        "an integer >= 0",
        _range(0),
        "+replay: examples of earlier tasks a client mixes into each round's training",
    ),
    # -- evaluation ----------------------------------------------------------------------------
    "metrics": Key(
        str,
        "accuracy",
        "a comma list, without repeats, of " + ", ".join(METRICS),
        _subset(METRICS),
        "what each client reports on its test split (accuracy is always reported)",
    ),
    "fairness-metric": Key(
        str,
        "accuracy",
        " or ".join(METRICS) + "; accuracy, loss or one of metrics",
        _choice(METRICS),
        "the metric of the fairness summary (mean, worst/best 10%, variance, Jain, Gini) and plots",
    ),
    # -- the rate rule -----------------------------------------------------------------------
    "estimator": Key(
        str, "loss-margin", " or ".join(ESTIMATORS), _choice(ESTIMATORS), "client noise estimator"
    ),
    "rate-power": Key(float, 1.0, "a number > 0", _POS, "exponent of ref / noise"),
    "rate-low": Key(
        float, 0.25, "a number in (0, 1]", _range(0, 1, lo_open=True), "lowest rate factor"
    ),
    "rate-high": Key(float, 4.0, "a number >= 1", _range(1), "highest rate factor"),
    "noise-floor": Key(
        float, 0.05, "a number > 0", _POS, "noise estimates are floored here before the rule"
    ),
    "warmup-rounds": Key(
        int, 2, "an integer >= 0", _range(0), "rounds of uniform rates before estimates are used"
    ),
    "ema-decay": Key(
        float,
        0.5,
        "a number in [0, 1)",
        lambda v: 0 <= v < 1,
        "weight of the previous smoothed estimate",
    ),
    "noise-weighted-aggregation": Key(
        bool,
        False,
        "true or false",
        lambda v: True,
        "noise-adaptive also weights aggregation by 1/noise",
    ),
    "rate-guard": Key(
        str,
        "gap",
        "none or gap",
        _choice(("none", "gap")),
        "gap: uniform rates unless the estimates split into a clearly noisy group",
    ),
    "rate-guard-ratio": Key(
        float, 2.0, "a number >= 1", _range(1), "the smallest gap (a ratio) the guard accepts"
    ),
    "rate-compensation": Key(
        float,
        0.5,
        "a number in [0, 1]",
        _UNIT,
        "aggregate update / factor^c: 0 keeps the rate's re-weighting, 1 is FedNova's share",
    ),
    "noise-response": Key(
        str,
        "none",
        "none or small-loss",
        _choice(("none", "small-loss")),
        "small-loss: sites in the noisy group train on their low-loss examples",
    ),
    # -- baselines ---------------------------------------------------------------------------
    "fedprox-mu": Key(float, 0.01, "a number >= 0", _range(0), "FedProx proximal mu"),
    "fedcorr-beta": Key(
        float,
        0.5,
        "a number >= 0",
        _range(0),
        "fedcorr-prox: the noisiest client's proximal mu (others' in proportion)",
    ),
    "qfedavg-q": Key(float, 1.0, "a number >= 0", _range(0), "q-FedAvg fairness q"),
    # -- faulty or hostile clients -----------------------------------------------------------
    "max-examples": Key(
        int,
        0,
        "an integer >= 0",
        _range(0),
        "the most examples one client counts for in aggregation (0: 10x the median reported)",
    ),
    "aggregation": Key(
        str,
        "mean",
        "mean, median, trimmed-mean, krum or multi-krum",
        _choice(AGGREGATIONS),
        "how replies combine: weighted mean, or Flower's FedMedian, FedTrimmedAvg, (Multi-)Krum",
    ),
    "trim-fraction": Key(
        float,
        0.2,
        "a number in [0, 0.5)",
        lambda v: 0 <= v < 0.5,
        "trimmed-mean: the fraction cut at each end, per coordinate",
    ),
    "krum-malicious": Key(
        int, 1, "an integer >= 0", _range(0), "krum, multi-krum: faulty clients tolerated"
    ),
    "clip-update-norm": Key(
        float,
        0.0,
        "a number >= 0",
        _range(0),
        "clip each update's norm to this multiple of the round's median norm (0: off)",
    ),
    # -- engine ------------------------------------------------------------------------------
    "client-cpus": Key(int, 1, "an integer >= 1", _range(1), "CPUs per simulated client"),
    "client-gpus": Key(
        float,
        0.0,
        "a number >= 0",
        _range(0),
        "GPUs per simulated client; a fraction shares one GPU (0.25: four clients per GPU)",
    ),
    "device": Key(
        str,
        "auto",
        " or ".join(DEVICES),
        _choice(DEVICES),
        "where a client trains; auto: cuda when a GPU is visible, else cpu",
    ),
    "ddp-procs": Key(
        int,
        1,
        "an integer >= 1",
        _range(1),
        "processes one client's local training spans (torch DDP started by torchrun)",
    ),
    "checkpoint-every": Key(
        int,
        5,
        "an integer >= 0",
        _range(0),
        "save model and strategy state every K rounds (and at each strategy's end); 0: end only",
    ),
    "resume": Key(
        str,
        "",
        "a run directory path, or empty",
        lambda v: True,
        "continue the run in this directory from its checkpoint, with its config.toml "
        "(`flwr run`; `fedlr simulate` has --resume)",
    ),
    "out-dir": Key(
        str,
        "runs",
        "a directory path",
        lambda v: bool(v.strip()),
        "where run directories are created (relative to the working directory; "
        "under `flwr run`, give an absolute path)",
    ),
}

DEFAULTS: dict[str, Any] = {key: spec.default for key, spec in SCHEMA.items()}


def _coerce(key: str, value: Any) -> Any:
    spec = SCHEMA[key]
    if spec.kind is str and isinstance(value, list | tuple):
        value = ",".join(str(item) for item in value)
    if spec.kind is str and isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)  # --set hard-classes=3 or name=2024 read as TOML numbers
    if spec.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, spec.kind) or (spec.kind is not bool and isinstance(value, bool)):
        raise ConfigError(f"{key}: expected {spec.allowed}, got {value!r}")
    if not spec.check(value):
        raise ConfigError(f"{key}: expected {spec.allowed}, got {value!r}")
    return value


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one ``key=value`` override; the value is read as TOML, else kept as a string."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value")
    key, raw = (part.strip() for part in text.split("=", 1))
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def resolve(file: Path | None = None, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Resolve defaults < TOML file < overrides and validate the result.

    Raises
    ------
    ConfigError
        One line naming the key and what is allowed.
    """
    values: dict[str, Any] = dict(DEFAULTS)
    layers: list[Mapping[str, Any]] = []
    if file is not None:
        try:
            path = Path(file)
            if path.is_file() and path.stat().st_size > MAX_CONFIG_BYTES:
                raise ConfigError(
                    f"config file {file}: expected at most {MAX_CONFIG_BYTES} bytes of TOML, "
                    f"got {path.stat().st_size}"
                )
            if not path.is_file() and path.exists():  # /dev/zero, a FIFO, a directory
                raise ConfigError(f"config file {file}: expected a regular file")
            layers.append(tomllib.loads(path.read_text()))
        except FileNotFoundError:
            raise ConfigError(f"config file {file}: not found") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"config file {file}: cannot be read as TOML text ({err})") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"config file {file}: not valid TOML ({err})") from None
    layers.append(dict(overrides or {}))
    explicit: set[str] = set()
    for layer in layers:
        for key, value in layer.items():
            if key not in SCHEMA:
                raise ConfigError(f"unknown config key {key!r}; allowed: {', '.join(SCHEMA)}")
            values[key] = _coerce(key, value)
            explicit.add(key)
    return validate(_cluster_defaults(_file_defaults(values, explicit), explicit))


# Users' files inject nothing unless asked: these keys' digits defaults become 0 there.
# The oracle reads injected truth, which real files lack: it is left out of their default list.
FILE_DEFAULTS = {
    "noisy-clients": 0,
    "hard-clean-clients": 0,
    "strategies": ",".join(s for s in DEFAULT_STRATEGIES if s != "oracle-noise-rates"),
}


def _file_defaults(values: dict[str, Any], explicit: set[str]) -> dict[str, Any]:
    """With users' files or task, the keys not set explicitly get the files' defaults.

    Nothing is injected and the oracle is not run by default (:data:`FILE_DEFAULTS`), and
    ``num-clients`` is the number of sites found in ``data-files`` (with no ``data-files``, a
    deployment whose SuperNodes read their own ``data-path``, it stays as set).
    """
    if not is_files(values) and not values["task"]:
        return values
    for key, default in FILE_DEFAULTS.items():
        if key not in explicit:
            values[key] = default
    if str(values["data-files"]).strip():
        from fedlr.data.files import count_sites  # here: fedlr.data imports this module

        found = count_sites(values)
        if "num-clients" in explicit and values["num-clients"] != found:
            raise ConfigError(
                f"num-clients: data-files holds {found} sites; expected {found} (or leave "
                f"num-clients unset), got {values['num-clients']}"
            )
        values["num-clients"] = found
    return values


def _cluster_defaults(values: dict[str, Any], explicit: set[str]) -> dict[str, Any]:
    """Fewer clients than the default noise needs: the injected counts scale with num-clients.

    The digits defaults make 8 of 10 clients noisy and 1 hard-but-clean. When neither count is
    set and they do not fit ``num-clients`` (a 2-node cluster), they become ``8n // 10`` and
    ``n // 10``; a count that is set is kept (and checked).
    """
    if {"noisy-clients", "hard-clean-clients"} & explicit:
        return values
    n = int(values["num-clients"])
    if values["noisy-clients"] + values["hard-clean-clients"] <= n:
        return values
    values["noisy-clients"], values["hard-clean-clients"] = (8 * n) // 10, n // 10
    return values


def validate(values: dict[str, Any]) -> dict[str, Any]:
    """Check the relations between keys; return ``values`` unchanged."""
    n = values["num-clients"]
    special = values["noisy-clients"] + values["hard-clean-clients"]
    if values["noisy-clients"] > n:
        raise ConfigError(
            f"noisy-clients: expected at most num-clients ({n}), got {values['noisy-clients']}"
        )
    chosen = [int(v) for v in split_list(values["noisy-client-ids"])]
    if chosen and (
        len(chosen) != values["noisy-clients"]
        or len(set(chosen)) != len(chosen)
        or not all(0 <= v < n for v in chosen)
    ):
        raise ConfigError(
            f"noisy-client-ids: expected {values['noisy-clients']} (noisy-clients) distinct "
            f"partition ids in 0..{n - 1}, got {values['noisy-client-ids']!r}"
        )
    if special > n:
        raise ConfigError(
            f"hard-clean-clients: noisy-clients + hard-clean-clients must be at "
            f"most num-clients ({n}), got {special}"
        )
    qfedavg = [s for s in split_list(values["strategies"]) if parse_strategy(s)[0] == "qfedavg"]
    if values["aggregation"] != "mean" and qfedavg:
        raise ConfigError(
            f"aggregation: expected mean with {qfedavg[0]} (q-FedAvg has its own aggregation; "
            f"leave it out of strategies), got {values['aggregation']!r}"
        )
    if values["min-clients"] > n:
        raise ConfigError(
            f"min-clients: expected at most num-clients ({n}), got {values['min-clients']}"
        )
    if values["feature-noise-clients"] > n:
        raise ConfigError(
            f"feature-noise-clients: expected at most num-clients ({n}), "
            f"got {values['feature-noise-clients']}"
        )
    if values["noise-rate-min"] > values["noise-rate-max"]:
        raise ConfigError(
            "noise-rate-min: expected at most noise-rate-max, got "
            f"{values['noise-rate-min']} > {values['noise-rate-max']}"
        )
    if values["client-gpus"] > 0 and values["device"] == "cpu":
        warnings.warn(
            f"client-gpus={values['client-gpus']} reserves GPUs for clients that train on the "
            "CPU (device=cpu): set device=auto to use them, or client-gpus=0",
            stacklevel=2,
        )
    _validate_batches(values)
    _validate_stream(values)
    _validate_data(values)
    if is_graph(values):
        _validate_graph(values)
    else:
        with_degree = [name for name in split_list(values["strategies"]) if uses_degree(name)]
        if with_degree:
            raise ConfigError(
                f"strategies: {with_degree[0]!r} uses +degree, which needs a graph dataset "
                f"({', '.join(GRAPH_DATASETS)}), got dataset {values['dataset']!r}"
            )
    if values["hard-clean-clients"] > 0:  # digits and Synthetic both have classes 0..9
        bad = [c for c in split_list(values["hard-classes"]) if int(c) > 9]
        if bad:
            raise ConfigError(f"hard-classes: expected classes in 0..9, got {','.join(bad)}")
    return values


def _validate_data(values: Mapping[str, Any]) -> None:
    """Relations of the users'-files, model and metric keys."""
    names = split_list(values["strategies"])
    metrics = split_list(values["metrics"])
    if values["fairness-metric"] not in (*metrics, "accuracy", "loss"):
        raise ConfigError(
            f"fairness-metric: expected accuracy, loss or one of metrics ({values['metrics']}), "
            f"got {values['fairness-metric']!r}"
        )
    extra = [m for m in metrics if m not in ("accuracy", "loss")]
    if extra and (is_graph(values) or values["stream"] != "none"):
        raise ConfigError(
            f"metrics: {extra[0]!r} is computed for tabular data without a stream; expected "
            "accuracy or loss with a graph dataset or a continual stream"
        )
    if values["model"] != "mlp" and is_graph(values):
        raise ConfigError(
            f"model: graphs use the gnn key; expected 'mlp' (the default) with dataset "
            f"{values['dataset']!r}, got {values['model']!r}"
        )
    if values["model"] != "mlp" and values["ddp-procs"] != 1:
        raise ConfigError(
            f"ddp-procs: expected 1 with model {values['model']!r} (DDP workers rebuild the "
            f"built-in MLP only), got {values['ddp-procs']}"
        )
    if values["task"]:
        clash = [
            key
            for key, bad in (
                ("hard-clean-clients", values["hard-clean-clients"] > 0),
                ("stream", values["stream"] != "none"),
                ("dataset", is_graph(values) or is_files(values)),
                ("model", values["model"] != "mlp"),
                ("ddp-procs", values["ddp-procs"] != 1),
            )
            if bad
        ]
        if clash:
            raise ConfigError(
                f"{clash[0]}: task {values['task']!r} brings its own data, model and loops; "
                f"expected {clash[0]} at its default with a task, got {values[clash[0]]!r}"
            )
        if not (values["noisy-clients"] or values["feature-noise-clients"]):
            oracle = [n for n in names if parse_strategy(n)[0] == "oracle-noise-rates"]
            if oracle or values["estimator"] == "oracle":
                what = f"strategies: {oracle[0]!r}" if oracle else "estimator: 'oracle'"
                raise ConfigError(
                    f"{what} reads each client's true noise, which a task's own data does not "
                    "have; inject noise (noisy-clients > 0) or choose another strategy"
                )
        return
    if not is_files(values):
        for key in ("data-files", "site-column"):
            if str(values[key]).strip():
                raise ConfigError(
                    f"{key}: read with dataset csv or parquet; got dataset "
                    f"{values['dataset']!r} (set dataset = 'csv' to train on files)"
                )
        return
    if values["hard-clean-clients"] > 0:
        raise ConfigError(
            "hard-clean-clients: a hard-but-clean client is dealt chosen classes of digits or "
            f"synthetic data; expected 0 with dataset {values['dataset']!r}, "
            f"got {values['hard-clean-clients']}"
        )
    if values["stream"] != "none":
        raise ConfigError(
            f"stream: continual streams split digits or synthetic examples; expected 'none' "
            f"with dataset {values['dataset']!r}, got {values['stream']!r}"
        )
    truth = values["noisy-clients"] > 0 or values["feature-noise-clients"] > 0
    oracle = [n for n in names if parse_strategy(n)[0] == "oracle-noise-rates"]
    if not truth and (oracle or values["estimator"] == "oracle"):
        what = f"strategies: {oracle[0]!r}" if oracle else "estimator: 'oracle'"
        raise ConfigError(
            f"{what} reads each client's true noise, which real files do not have; inject noise "
            "(noisy-clients > 0) or choose another strategy and estimator"
        )


def _validate_batches(values: Mapping[str, Any]) -> None:
    """Relations of the batch-size, coupling and noise-scale keys."""
    n, rounds = values["num-clients"], values["num-server-rounds"]
    spec = str(values["client-batch-sizes"]).strip()
    if spec and spec.partition(":")[0].strip() not in BATCH_SPREADS:
        count = len(split_list(spec))
        if count != n:
            raise ConfigError(
                f"client-batch-sizes: expected one batch size per client ({n}), got {count}"
            )
    milestones = [int(v) for v in split_list(values["lr-decay-rounds"])]
    if milestones and (
        milestones != sorted(set(milestones)) or not 1 <= milestones[0] <= milestones[-1] <= rounds
    ):
        raise ConfigError(
            "lr-decay-rounds: expected strictly increasing round numbers in "
            f"1..num-server-rounds ({rounds}), got {values['lr-decay-rounds']!r}"
        )
    names = split_list(values["strategies"])
    growing = [name for name in names if uses_modifier(name, "grow-batch")]
    if growing and not milestones:
        raise ConfigError(
            f"strategies: {growing[0]!r} turns rate decay into batch growth, but lr-decay-rounds "
            "is empty; expected decay rounds, e.g. lr-decay-rounds = '10,20'"
        )
    coupled = any(uses_modifier(name, "coupled") for name in names)
    if coupled and values["coupling-rule"] == "optimal" and not values["measure-noise-scale"]:
        raise ConfigError(
            "coupling-rule: 'optimal' reads the noise scale the server measures; expected "
            "measure-noise-scale = true, or coupling-rule auto, linear or sqrt"
        )
    per_round = max(1, int(n * values["fraction-train"]))
    if values["measure-noise-scale"] and per_round < 2:
        raise ConfigError(
            "measure-noise-scale: the estimate needs the gradients of at least 2 clients per "
            f"round; expected num-clients * fraction-train >= 2, got {n} * "
            f"{values['fraction-train']} -> {per_round}"
        )
    qfedavg = [
        name
        for name in names
        if parse_strategy(name)[0] == "qfedavg"
        and (
            uses_modifier(name, "coupled")
            or uses_modifier(name, "grow-batch")
            or milestones
            or schedule_of(name) != "constant"
        )
    ]
    if qfedavg:
        raise ConfigError(
            f"strategies: {qfedavg[0]!r}: q-FedAvg's update assumes the one rate lr "
            "(L = 1 / lr); expected no +coupled, +grow-batch, schedule or lr-decay-rounds "
            "with qfedavg"
        )
    scheduled = [name for name in names if schedule_of(name) != "constant"]
    if scheduled and milestones:
        raise ConfigError(
            f"strategies: {scheduled[0]!r} has its own schedule, and lr-decay-rounds sets a "
            "step decay for every strategy; expected one of them (lr-decay-rounds = '' or no "
            "schedule modifier)"
        )
    if values["noise-scale-growth"] != "none" and not values["measure-noise-scale"]:
        raise ConfigError(
            f"noise-scale-growth: {values['noise-scale-growth']!r} follows the measured noise "
            "scale; expected measure-noise-scale = true, or noise-scale-growth = 'none'"
        )


def _validate_stream(values: Mapping[str, Any]) -> None:
    """Relations of the continual-learning keys (``stream``, ``num-tasks``, ``+replay``)."""
    stream, tasks = values["stream"], values["num-tasks"]
    names = split_list(values["strategies"])
    replaying = [name for name in names if uses_modifier(name, "replay")]
    phased = any(schedule_of(name) == "phases" for name in names)
    if (stream != "none" or phased) and tasks > values["num-server-rounds"]:
        raise ConfigError(
            f"num-tasks: expected at most num-server-rounds ({values['num-server-rounds']}) "
            f"tasks or phases (each needs a round), got {tasks}"
        )
    lowest_peak = values["schedule-peak-decay"] ** (tasks - 1)
    if phased and values["schedule-floor"] > lowest_peak:
        raise ConfigError(
            f"schedule-floor: +phases decays each phase to the floor, so it must be at most the "
            f"last phase's peak, schedule-peak-decay ** (num-tasks - 1) = {lowest_peak:.4g}; "
            f"got {values['schedule-floor']}"
        )
    if replaying and values["replay-size"] == 0:
        warnings.warn(
            f"replay-size is 0: {replaying[0]!r} replays nothing; set replay-size > 0",
            stacklevel=3,
        )
    if stream == "none":
        if values["task-stagger"] > 0:
            warnings.warn(
                "task-stagger is ignored without a stream (stream = 'none')", stacklevel=3
            )
        if replaying:
            raise ConfigError(
                f"strategies: {replaying[0]!r} replays earlier tasks, but stream is 'none'; "
                f"expected a stream ({', '.join(STREAMS)})"
            )
        return
    if is_graph(values):
        raise ConfigError(
            f"stream: continual streams split digits or synthetic examples; expected 'none' "
            f"with a graph dataset ({values['dataset']}), got {stream!r}"
        )
    if stream == "rotated" and values["dataset"] != "digits":
        raise ConfigError(
            f"stream: 'rotated' turns 8x8 images; expected dataset digits, got "
            f"{values['dataset']!r} (use permuted)"
        )
    if stream in ("class-incremental", "task-incremental") and 10 % tasks:
        raise ConfigError(
            f"num-tasks: a split stream deals the 10 classes evenly; expected 1, 2, 5 or 10, "
            f"got {tasks}"
        )
    from fedlr.tasks.streams import stagger_limit  # here: fedlr.tasks imports this module

    limit = stagger_limit(values["num-server-rounds"], tasks)
    if values["task-stagger"] * (values["num-clients"] - 1) > limit:
        warnings.warn(
            f"task-stagger: client delays are capped at {limit} rounds (the shortest task's "
            f"length minus one), so the last clients' tasks arrive together",
            stacklevel=3,
        )
    if stream == "task-incremental" and values["ddp-procs"] != 1:
        raise ConfigError(
            "ddp-procs: expected 1 with stream task-incremental (its per-task output heads "
            f"train in one process), got {values['ddp-procs']}"
        )


def _validate_graph(values: Mapping[str, Any]) -> None:
    """Relations that only graph datasets have."""
    dataset = values["dataset"]
    if values["hard-clean-clients"] > 0:
        raise ConfigError(
            f"hard-clean-clients: expected 0 with a graph dataset ({dataset}: a client holds "
            f"a subgraph, not chosen classes), got {values['hard-clean-clients']}"
        )
    if values["estimator"] in ("gradient", "crossfit"):
        raise ConfigError(
            f"estimator: expected loss, loss-margin or oracle with a graph dataset ({dataset}), "
            f"got {values['estimator']!r} ("
            + (
                "per-sample gradients are"
                if values["estimator"] == "gradient"
                else "halves of a train split are"
            )
            + " not defined for message passing)"
        )
    if values["ddp-procs"] != 1:
        raise ConfigError(
            f"ddp-procs: expected 1 with a graph dataset ({dataset}: full-batch training in "
            f"one process), got {values['ddp-procs']}"
        )
    if values["graph-labels"] == "public" and dataset == "ba":
        raise ConfigError(
            "graph-labels: the ba graph has no public split; expected random, got 'public'"
        )
    batch_keyed = [
        name
        for name in split_list(values["strategies"])
        if uses_modifier(name, "coupled") or uses_modifier(name, "grow-batch")
    ]
    if batch_keyed or values["measure-noise-scale"] or str(values["client-batch-sizes"]).strip():
        what = (
            f"strategies: {batch_keyed[0]!r}"
            if batch_keyed
            else "measure-noise-scale"
            if values["measure-noise-scale"]
            else "client-batch-sizes"
        )
        raise ConfigError(
            f"{what}: batch sizes and the gradient noise scale need mini-batches; a graph "
            f"dataset ({dataset}) trains full-batch; expected a tabular dataset "
            f"({', '.join(TABULAR_DATASETS)})"
        )
    degree_rule = any(uses_degree(name) for name in split_list(values["strategies"]))
    if degree_rule and values["degree-mode"] == "embedding" and values["embedding-dim"] == 0:
        raise ConfigError(
            "degree-mode: 'embedding' scales node-embedding rows, but embedding-dim is 0; "
            "expected embedding-dim > 0, or degree-mode loss or both"
        )


def from_run_config(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """Resolve a Flower ``context.run_config`` (the app config plus ``--run-config``).

    Flower passes every key of ``[tool.flwr.app.config]``, so a key counts as set (for the
    files' defaults, :data:`FILE_DEFAULTS`) when its value differs from fedlr's default: under
    ``flwr run``, ``noisy-clients=8`` on files (fedlr's default value) reads as unset, i.e. 0.
    """
    values: dict[str, Any] = dict(DEFAULTS)
    explicit: set[str] = set()
    for key, value in run_config.items():
        if key not in SCHEMA:
            raise ConfigError(f"unknown config key {key!r}; allowed: {', '.join(SCHEMA)}")
        values[key] = _coerce(key, value)
        if values[key] != DEFAULTS[key]:
            explicit.add(key)
    return validate(_cluster_defaults(_file_defaults(values, explicit), explicit))


def to_toml(values: Mapping[str, Any]) -> str:
    """Render a resolved config as TOML (flat keys, as ``resolve`` reads them)."""
    import tomli_w

    return tomli_w.dumps(dict(values))


def keys_markdown() -> str:
    """Every key of :data:`SCHEMA` as the Markdown table of the README (``fedlr config --keys``)."""
    import json

    rows = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    for key, spec in SCHEMA.items():
        default = json.dumps(spec.default)
        cells = [f"`{key}`", f"`{default}`", spec.allowed, spec.help]
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows) + "\n"
