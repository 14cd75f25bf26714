"""Relations between keys, checked once a config is resolved: :func:`validate`.

A single key's type and range is its :class:`~fedlr.config.values.Key` check; what is checked
here is a key against the others (``noisy-clients`` at most ``num-clients``, ``+degree`` only on
graphs, ...). Each problem raises :class:`~fedlr.config.values.ConfigError` with one line naming
the key and what is allowed; a legal but pointless setting is a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from fedlr.config.choices import (
    BATCH_SPREADS,
    GRAPH_DATASETS,
    STREAMS,
    TABULAR_DATASETS,
    is_files,
    is_graph,
)
from fedlr.config.strategies import (
    check_modifiers,
    check_tables,
    parse_strategy,
    schedule_of,
    strategy_config,
    strategy_spec,
    uses_degree,
    uses_modifier,
)
from fedlr.config.values import ConfigError, split_list


def stagger_limit(num_rounds: int, num_tasks: int) -> int:
    """The largest delay a client's tasks get: the shortest task's length minus one.

    Task ``t`` of ``num_tasks`` arrives in round ``1 + floor(t * num_rounds / num_tasks)``
    (:func:`fedlr.tasks.streams.arrival_rounds`, which caps each client's delay here).

    >>> stagger_limit(25, 5)
    4
    """
    base = [1 + (t * num_rounds) // num_tasks for t in range(num_tasks)]
    return int(min(b - a for a, b in zip(base, [*base[1:], num_rounds + 1], strict=True))) - 1


def validate(values: dict[str, Any]) -> dict[str, Any]:
    """Check the relations between keys; return ``values`` unchanged.

    Strategy tables first (:func:`~fedlr.config.strategies.check_tables`): every other check
    reads each strategy's rule and modifiers, a table's from the table.
    """
    check_tables(values)
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
    qfedavg = [
        s for s in split_list(values["strategies"]) if parse_strategy(s, values)[0] == "qfedavg"
    ]
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
        with_degree = [
            name for name in split_list(values["strategies"]) if uses_degree(name, values)
        ]
        if with_degree:
            raise ConfigError(
                f"strategies: {with_degree[0]!r} uses +degree, which needs a graph dataset "
                f"({', '.join(GRAPH_DATASETS)}), got dataset {values['dataset']!r}"
            )
    if values["hard-clean-clients"] > 0:  # digits and Synthetic both have classes 0..9
        bad = [c for c in split_list(values["hard-classes"]) if int(c) > 9]
        if bad:
            raise ConfigError(f"hard-classes: expected classes in 0..9, got {','.join(bad)}")
    for name in split_list(values["strategies"]):  # each modifier's own check, per strategy
        check_modifiers(name, values)
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
            oracle = [n for n in names if parse_strategy(n, values)[0] == "oracle-noise-rates"]
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
    oracle = [n for n in names if parse_strategy(n, values)[0] == "oracle-noise-rates"]
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
    growing = [name for name in names if uses_modifier(name, "grow-batch", values)]
    if growing and not milestones:
        raise ConfigError(
            f"strategies: {growing[0]!r} turns rate decay into batch growth, but lr-decay-rounds "
            "is empty; expected decay rounds, e.g. lr-decay-rounds = '10,20'"
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
        if parse_strategy(name, values)[0] == "qfedavg"
        and (
            uses_modifier(name, "coupled", values)
            or uses_modifier(name, "grow-batch", values)
            or milestones
            or schedule_of(name, values) != "constant"
        )
    ]
    if qfedavg:
        raise ConfigError(
            f"strategies: {qfedavg[0]!r}: q-FedAvg's update assumes the one rate lr "
            "(L = 1 / lr); expected no +coupled, +grow-batch, schedule or lr-decay-rounds "
            "with qfedavg"
        )
    scheduled = [name for name in names if schedule_of(name, values) != "constant"]
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
    replaying = [name for name in names if uses_modifier(name, "replay", values)]
    phased = any(schedule_of(name, values) == "phases" for name in names)
    if (stream != "none" or phased) and tasks > values["num-server-rounds"]:
        raise ConfigError(
            f"num-tasks: expected at most num-server-rounds ({values['num-server-rounds']}) "
            f"tasks or phases (each needs a round), got {tasks}"
        )
    empty = [n for n in replaying if strategy_config(n, values)["replay-size"] == 0]
    if empty:
        where = strategy_spec(empty[0], values).where("replay-size")
        warnings.warn(
            f"{where} is 0: {empty[0]!r} replays nothing; set replay-size > 0",
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
        if uses_modifier(name, "coupled", values) or uses_modifier(name, "grow-batch", values)
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
