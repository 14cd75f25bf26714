"""Keys of the run, its data, users' files, graphs and injected noise (part of the schema).

Each key is named once, here or in :mod:`fedlr.config.keys_training`; :mod:`fedlr.config.schema`
joins the two tables, in this order, into :data:`~fedlr.config.schema.SCHEMA`.
"""

from __future__ import annotations

from fedlr.config.choices import (
    DATASETS,
    DEGREE_MODES,
    DEGREE_SOURCES,
    GNN_KINDS,
    GRAPH_LABELS,
    GRAPH_SPLITS,
    LABEL_NOISE,
    MAX_ROUNDS,
    PARTITIONERS,
    STANDARDIZE,
)
from fedlr.config.strategies import (
    DEFAULT_STRATEGIES,
    SCHEDULE_MODIFIERS,
    STRATEGIES,
    is_strategy_list,
)
from fedlr.config.values import (
    POSITIVE,
    UNIT,
    Key,
    in_range,
    is_int_list,
    is_run_name,
    one_of,
)

DATA_KEYS: dict[str, Key] = {
    # -- run ---------------------------------------------------------------------------------
    "name": Key(
        str,
        "noisy_hospitals",
        "a name of letters, digits, '.', '_' and '-' (at most 100, not starting with '.')",
        is_run_name,
        "run name (the run directory is <out-dir>/<time>-<name>)",
    ),
    "seed": Key(
        int,
        0,
        "an integer in [0, 2**32 - 1]",
        in_range(0, 2**32 - 1),
        "seed of every random choice",
    ),
    "strategies": Key(
        str,
        ",".join(DEFAULT_STRATEGIES),
        "a comma list, without repeats, of " + ", ".join(STRATEGIES) + ", each optionally "
        "followed by modifiers: +sgd, +adam or +adagrad (local optimizer), +degree "
        "(degree-aware rates), +coupled, +grow-batch, one schedule (+"
        + ", +".join(SCHEDULE_MODIFIERS)
        + ") and +replay; or the name of a strategy table [strategy.NAME] (see above)",
        is_strategy_list,
        "strategies run side by side",
    ),
    "num-server-rounds": Key(
        int, 30, "an integer in [1, 100000]", in_range(1, MAX_ROUNDS), "federated rounds"
    ),
    "min-clients": Key(
        int,
        0,
        "an integer >= 0 and <= num-clients (0: all)",
        in_range(0),
        "fewest connected clients a round goes ahead with; 0 means all",
    ),
    "round-timeout": Key(
        float,
        600.0,
        "a number > 0",
        POSITIVE,
        "seconds a round waits for replies before going on with those it has",
    ),
    "fraction-train": Key(
        float,
        1.0,
        "a number in (0, 1]",
        in_range(0, 1, lo_open=True),
        "fraction of clients sampled per round",
    ),
    # -- data --------------------------------------------------------------------------------
    "dataset": Key(str, "digits", " or ".join(DATASETS), one_of(DATASETS), "data source"),
    "num-clients": Key(int, 10, "an integer >= 2", in_range(2), "number of clients"),
    "partitioner": Key(
        str,
        "dirichlet",
        " or ".join(PARTITIONERS),
        one_of(PARTITIONERS),
        "how digits are split across clients",
    ),
    "dirichlet-alpha": Key(float, 1.0, "a number > 0", POSITIVE, "Dirichlet label-skew alpha"),
    "size-skew-sigma": Key(
        float,
        1.0,
        "a number > 0",
        POSITIVE,
        "log-normal sigma of client sizes (partitioner = size-skew)",
    ),
    "test-fraction": Key(
        float,
        0.25,
        "a number in (0, 1)",
        lambda v: 0 < v < 1,
        "fraction of each client's data held out as its clean test split",
    ),
    "synthetic-alpha": Key(float, 1.0, "a number >= 0", in_range(0), "LEAF Synthetic alpha"),
    "synthetic-beta": Key(float, 1.0, "a number >= 0", in_range(0), "LEAF Synthetic beta"),
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
        one_of(STANDARDIZE),
        "numeric features: z-scores from the sites' pooled train statistics (counts, sums, "
        "sums of squares; never rows), from each site's own, or none",
    ),
    # -- graphs (dataset = cora, karate or ba) ----------------------------------------------
    "graph-split": Key(
        str,
        "louvain",
        " or ".join(GRAPH_SPLITS),
        one_of(GRAPH_SPLITS),
        "how a graph's nodes are dealt out to clients (edges between clients are dropped)",
    ),
    "graph-labels": Key(
        str,
        "random",
        " or ".join(GRAPH_LABELS),
        one_of(GRAPH_LABELS),
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
    "ba-nodes": Key(int, 2000, "an integer >= 10", in_range(10), "nodes of the BA graph"),
    "ba-m": Key(int, 3, "an integer >= 1", in_range(1), "edges each new BA node attaches"),
    "gnn": Key(str, "gcn", " or ".join(GNN_KINDS), one_of(GNN_KINDS), "message-passing layer"),
    "embedding-dim": Key(
        int, 0, "an integer >= 0", in_range(0), "learnable node embedding width (0: none)"
    ),
    "degree-gamma": Key(
        float,
        0.5,
        "a number >= 0",
        in_range(0),
        "exponent of the degree rule s_v = ((d_v+1)/(mean_d+1))^-gamma, for +degree strategies",
    ),
    "degree-mode": Key(
        str,
        "both",
        " or ".join(DEGREE_MODES),
        one_of(DEGREE_MODES),
        "embedding: per-row rates of node embeddings; loss: per-node loss weights; both",
    ),
    "degree-source": Key(
        str,
        "local",
        " or ".join(DEGREE_SOURCES),
        one_of(DEGREE_SOURCES),
        "degree the rule reads: in the client's subgraph (local) or the whole graph (global)",
    ),
    "degree-low": Key(
        float, 0.1, "a number in (0, 1]", in_range(0, 1, lo_open=True), "lowest degree scale"
    ),
    "degree-high": Key(float, 10.0, "a number >= 1", in_range(1), "highest degree scale"),
    # -- noise -------------------------------------------------------------------------------
    "label-noise": Key(
        str,
        "symmetric",
        " or ".join(LABEL_NOISE),
        one_of(LABEL_NOISE),
        "label noise model on noisy clients' train splits",
    ),
    "noisy-clients": Key(
        int,
        8,
        "an integer >= 0 and <= num-clients",
        in_range(0),
        "clients with label noise (partition ids 0..n-1); unset, below 9 clients: 8n // 10",
    ),
    "noisy-client-ids": Key(
        str,
        "",
        "a comma list of noisy-clients distinct partition ids, or empty (ids 0..n-1)",
        lambda v: is_int_list(v) if str(v).strip() else True,
        "which partition ids get the label noise, in rate order (empty: 0..noisy-clients-1)",
    ),
    "noise-rate-min": Key(float, 0.6, "a number in [0, 1]", UNIT, "lowest label-noise rate"),
    "noise-rate-max": Key(float, 0.95, "a number in [0, 1]", UNIT, "highest label-noise rate"),
    "hard-clean-clients": Key(
        int,
        1,
        "an integer >= 0",
        in_range(0),
        "clean clients holding only the hardest classes; unset, with fewer than 9 clients: n // 10",
    ),
    "hard-classes": Key(
        str,
        "1,3,8,9",
        "a comma list of class indices",
        is_int_list,
        "classes a hard-but-clean client holds",
    ),
    "feature-noise-clients": Key(
        int,
        0,
        "an integer >= 0",
        in_range(0),
        "clients with Gaussian input noise (the last partition ids)",
    ),
    "feature-noise-sigma": Key(
        float,
        0.0,
        "a number >= 0",
        in_range(0),
        "std of the Gaussian input noise ('older equipment')",
    ),
}
