"""The allowed values of the choice keys (``dataset``, ``optimizer``, ``stream``, ...), and bounds.

Each tuple is the one list of its names: the schema checks values against it, and the modules
that build the thing import it from here (e.g. :mod:`fedlr.tasks.streams` builds each of
:data:`STREAMS`, :mod:`fedlr.rates.schedules` each schedule modifier).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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

MAX_ROUNDS = 100_000  # far beyond any run; keeps per-round work and logs bounded
MAX_CONFIG_BYTES = 1 << 20  # a scenario file is a few hundred lines of TOML


def is_graph(cfg: Mapping[str, Any]) -> bool:
    """Whether the run's dataset is a graph (the graph task) rather than tabular."""
    return cfg["dataset"] in GRAPH_DATASETS


def is_files(cfg: Mapping[str, Any]) -> bool:
    """Whether the run's data are users' files (``dataset`` csv or parquet)."""
    return cfg["dataset"] in FILE_DATASETS
