"""Keys of local training, batches, schedules, evaluation, the rate rule and the engine.

Part of the schema: each key is named once, here or in :mod:`fedlr.config.keys_data`;
:mod:`fedlr.config.schema` joins the two tables, in order, into
:data:`~fedlr.config.schema.SCHEMA`.
"""

from __future__ import annotations

from fedlr.config.batches import is_batch_spec
from fedlr.config.choices import (
    AGGREGATIONS,
    BUILTIN_MODELS,
    COUPLING_RULES,
    DEVICES,
    ESTIMATORS,
    METRICS,
    NOISE_SCALE_GROWTH,
    OPTIMIZERS,
    STREAMS,
    WEIGHT_DECAY_COUPLINGS,
)
from fedlr.config.values import (
    POSITIVE,
    UNIT,
    Key,
    in_range,
    is_import_string,
    is_int_list,
    one_of,
    split_list,
    subset_of,
)

TRAINING_KEYS: dict[str, Key] = {
    # -- local training ----------------------------------------------------------------------
    "model": Key(
        str,
        "mlp",
        "mlp, linear or package.module:function (called with the number of features and "
        "classes, returning a torch.nn.Module)",
        lambda v: v in BUILTIN_MODELS or is_import_string(v),
        "tabular model: a 2-layer MLP (hidden), a linear layer (logistic regression), or yours",
    ),
    "task": Key(
        str,
        "",
        "'' (the built-in task of dataset) or package.module:factory (called with the run "
        "config, returning a fedlr Task, e.g. a fedlr.tasks.base.ArrayTask)",
        lambda v: not v or is_import_string(v),
        "your own task: data, model and loops (dataset and model are then not used)",
    ),
    "observers": Key(
        str,
        "",
        "'' or a comma list of package.module:factory (each called with the run config, "
        "returning a round observer: docs/extending.md)",
        lambda v: all(is_import_string(item) for item in split_list(v)),
        "your own round observers: what each one's round_record() returns is logged under "
        "observers.NAME in rounds.jsonl and results.json",
    ),
    "hidden": Key(int, 64, "an integer >= 1", in_range(1), "hidden width (MLP or GNN)"),
    "local-epochs": Key(
        int,
        2,
        "an integer >= 1",
        in_range(1),
        "local epochs per round (graphs: full-batch steps)",
    ),
    "batch-size": Key(int, 16, "an integer >= 1", in_range(1), "local batch size"),
    "optimizer": Key(str, "sgd", " or ".join(OPTIMIZERS), one_of(OPTIMIZERS), "local optimizer"),
    "lr": Key(float, 0.1, "a number > 0", POSITIVE, "base learning rate lr_0 of SGD"),
    "adam-lr": Key(float, 0.01, "a number > 0", POSITIVE, "base learning rate of Adam"),
    "adagrad-lr": Key(float, 0.05, "a number > 0", POSITIVE, "base learning rate of Adagrad"),
    "momentum": Key(float, 0.0, "a number in [0, 1)", lambda v: 0 <= v < 1, "SGD momentum"),
    "weight-decay": Key(
        float,
        0.0,
        "a number >= 0",
        in_range(0),
        "weight decay at the base rate (SGD: L2; Adam: AdamW's decoupled decay)",
    ),
    "weight-decay-coupling": Key(
        str,
        "lr-proportional",
        " or ".join(WEIGHT_DECAY_COUPLINGS),
        one_of(WEIGHT_DECAY_COUPLINGS),
        "a client at another rate: keep weight-decay (shrink per step ~ lr) or lr * weight-decay",
    ),
    # -- batch size and gradient noise scale --------------------------------------------------
    "client-batch-sizes": Key(
        str,
        "",
        "'' (all batch-size), B1,B2,... (one per client), log-uniform:MIN:MAX or "
        "powers-of-two:MIN:MAX",
        is_batch_spec,
        "each client's local batch size (a SuperNode's node-config batch-size wins)",
    ),
    "coupling-rule": Key(
        str,
        "auto",
        " or ".join(COUPLING_RULES),
        one_of(COUPLING_RULES),
        "+coupled: rate vs batch (auto: linear for SGD, sqrt for Adam/Adagrad; optimal: "
        "lr_max / (1 + B_noise / B) with the measured noise scale)",
    ),
    "coupling-reference": Key(
        int,
        0,
        "an integer >= 0",
        in_range(0),
        "+coupled: the batch the base rate is tuned for (0: the clients' median batch)",
    ),
    "coupling-low": Key(
        float, 0.05, "a number in (0, 1]", in_range(0, 1, lo_open=True), "lowest coupling factor"
    ),
    "coupling-high": Key(float, 20.0, "a number >= 1", in_range(1), "highest coupling factor"),
    "coupling-warmup-rounds": Key(
        int,
        0,
        "an integer >= 0",
        in_range(0),
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
        one_of(NOISE_SCALE_GROWTH),
        "grow local batches or clients per round as B_simple grows past its first estimate",
    ),
    "noise-scale-growth-max": Key(
        float, 8.0, "a number >= 1", in_range(1), "largest growth factor of noise-scale-growth"
    ),
    "lr-decay-rounds": Key(
        str,
        "",
        "'' or increasing round numbers R1,R2,... in 1..num-server-rounds",
        lambda v: not split_list(v) or is_int_list(v),
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
        in_range(0),
        "+step: rounds per step; +warm-restarts: rounds of the first cycle; +cyclical: rounds "
        "per cycle (half up, half down); 0: num-server-rounds / num-tasks",
    ),
    "schedule-gamma": Key(
        float,
        0.5,
        "a number in (0, 1]",
        in_range(0, 1, lo_open=True),
        "+step: factor per step; +exponential: factor per round",
    ),
    "schedule-floor": Key(
        float,
        0.0,
        "a number in [0, 1]",
        UNIT,
        "+cosine, +warm-restarts, +cyclical, +phases: lowest multiplier of the base rate",
    ),
    "schedule-warmup": Key(
        int,
        1,
        "an integer >= 0",
        in_range(0),
        "+phases: linear warm-up of each phase (task), reaching the peak in this round of the "
        "phase (1: it starts at the peak)",
    ),
    "schedule-peak-decay": Key(
        float,
        1.0,
        "a number in (0, 1]",
        in_range(0, 1, lo_open=True),
        "+phases: each phase's peak relative to the previous phase's",
    ),
    "stream": Key(
        str,
        "none",
        "none or " + " or ".join(STREAMS),
        one_of(("none", *STREAMS)),
        "continual learning: each client learns num-tasks tasks in turn (none: one task)",
    ),
    "num-tasks": Key(
        int,
        5,
        "an integer >= 1",
        in_range(1),
        "tasks of the stream (split streams: a divisor of the 10 classes); without a stream, "
        "the phases of +phases",
    ),
    "task-stagger": Key(
        int,
        0,
        "an integer >= 0",
        in_range(0),
        "rounds by which each client's tasks after the first arrive after the previous "
        "client's (0: together; capped at the shortest task's length minus one)",
    ),
    "rotation-max": Key(
        float,
        90.0,
        "a number in [0, 360]",
        in_range(0.0, 360.0),
        "stream rotated: angle in degrees of the last task (task t: t / (T - 1) of it)",
    ),
    "replay-size": Key(
        int,
        20,
        "an integer >= 0",
        in_range(0),
        "+replay: examples of earlier tasks a client mixes into each round's training",
    ),
    # -- evaluation ----------------------------------------------------------------------------
    "metrics": Key(
        str,
        "accuracy",
        "a comma list, without repeats, of " + ", ".join(METRICS),
        subset_of(METRICS),
        "what each client reports on its test split (accuracy is always reported)",
    ),
    "fairness-metric": Key(
        str,
        "accuracy",
        " or ".join(METRICS) + "; accuracy, loss or one of metrics",
        one_of(METRICS),
        "the metric of the fairness summary (mean, worst/best 10%, variance, Jain, Gini) and plots",
    ),
    # -- the rate rule -----------------------------------------------------------------------
    "estimator": Key(
        str, "loss-margin", " or ".join(ESTIMATORS), one_of(ESTIMATORS), "client noise estimator"
    ),
    "rate-power": Key(float, 1.0, "a number > 0", POSITIVE, "exponent of ref / noise"),
    "rate-low": Key(
        float, 0.25, "a number in (0, 1]", in_range(0, 1, lo_open=True), "lowest rate factor"
    ),
    "rate-high": Key(float, 4.0, "a number >= 1", in_range(1), "highest rate factor"),
    "noise-floor": Key(
        float, 0.05, "a number > 0", POSITIVE, "noise estimates are floored here before the rule"
    ),
    "warmup-rounds": Key(
        int, 2, "an integer >= 0", in_range(0), "rounds of uniform rates before estimates are used"
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
        one_of(("none", "gap")),
        "gap: uniform rates unless the estimates split into a clearly noisy group",
    ),
    "rate-guard-ratio": Key(
        float, 2.0, "a number >= 1", in_range(1), "the smallest gap (a ratio) the guard accepts"
    ),
    "rate-compensation": Key(
        float,
        0.5,
        "a number in [0, 1]",
        UNIT,
        "aggregate update / factor^c: 0 keeps the rate's re-weighting, 1 is FedNova's share",
    ),
    "noise-response": Key(
        str,
        "none",
        "none or small-loss",
        one_of(("none", "small-loss")),
        "small-loss: sites in the noisy group train on their low-loss examples",
    ),
    # -- baselines ---------------------------------------------------------------------------
    "fedprox-mu": Key(float, 0.01, "a number >= 0", in_range(0), "FedProx proximal mu"),
    "fedcorr-beta": Key(
        float,
        0.5,
        "a number >= 0",
        in_range(0),
        "fedcorr-prox: the noisiest client's proximal mu (others' in proportion)",
    ),
    "qfedavg-q": Key(float, 1.0, "a number >= 0", in_range(0), "q-FedAvg fairness q"),
    # -- faulty or hostile clients -----------------------------------------------------------
    "max-examples": Key(
        int,
        0,
        "an integer >= 0",
        in_range(0),
        "the most examples one client counts for in aggregation (0: 10x the median reported)",
    ),
    "aggregation": Key(
        str,
        "mean",
        "mean, median, trimmed-mean, krum or multi-krum",
        one_of(AGGREGATIONS),
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
        int, 1, "an integer >= 0", in_range(0), "krum, multi-krum: faulty clients tolerated"
    ),
    "clip-update-norm": Key(
        float,
        0.0,
        "a number >= 0",
        in_range(0),
        "clip each update's norm to this multiple of the round's median norm (0: off)",
    ),
    # -- engine ------------------------------------------------------------------------------
    "client-cpus": Key(int, 1, "an integer >= 1", in_range(1), "CPUs per simulated client"),
    "client-gpus": Key(
        float,
        0.0,
        "a number >= 0",
        in_range(0),
        "GPUs per simulated client; a fraction shares one GPU (0.25: four clients per GPU)",
    ),
    "device": Key(
        str,
        "auto",
        " or ".join(DEVICES),
        one_of(DEVICES),
        "where a client trains; auto: cuda when a GPU is visible, else cpu",
    ),
    "ddp-procs": Key(
        int,
        1,
        "an integer >= 1",
        in_range(1),
        "processes one client's local training spans (torch DDP started by torchrun)",
    ),
    "checkpoint-every": Key(
        int,
        5,
        "an integer >= 0",
        in_range(0),
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
