"""Flower strategies that give each client its own learning rate.

:class:`PerClientRates` is a mixin over any Flower ``FedAvg``-family strategy (``FedAvg``,
``FedProx``, ``QFedAvg``): it overrides the minimum, as Flower's own ``fedprox.py`` does:

* ``configure_train``: ``super()`` builds the round's content (FedProx adds ``proximal-mu``,
  QFedAvg keeps the current weights); we then sample clients by partition id with a seeded RNG and
  send each sampled node its own ConfigRecord holding its own ``lr``.
* ``aggregate_train``: reads each reply's noise estimate, rejects invalid ones (NaN, inf,
  negative, missing: logged, uniform rate), smooths valid ones (EMA), sets each reply's
  aggregation weight, then hands the replies to ``super()``. The round loop stays Flower's.
* ``aggregate_evaluate``: keeps every client's accuracy, loss and other metrics (the run's
  ``metrics``, a task's own; bounded and checked) for the run log.
* ``start(..., first_round=r)``: Flower's own loop, continued from a checkpoint; every hook adds
  the rounds already done, so a resumed run sends, seeds and logs the same round numbers.

Rates follow :func:`fedlr.rates.noise.inverse_noise_rule` once estimates exist (uniform during
the warm-up rounds). A client's factor is bounded by ``[rate-low, rate-high]``, and so is its
aggregation weight relative to its example count, whatever it reports.

A strategy entry ``RULE+MODIFIER...`` (:func:`fedlr.config.parse_strategy`) is built from RULE;
its modifiers change what clients do: the local optimizer and its base rate
(:func:`fedlr.config.strategy_config`), on graphs the degree rule (``degree-rule`` in each
train message), ``+coupled`` and ``+grow-batch`` (below).

A client's rate is made as DESIGN.md says, one factor at a time, each bounded and logged:
``lr[k, r] = base * schedule(r) * noise_factor[k] * coupling_factor[k]``. ``schedule`` is the
step decay of ``lr-decay-rounds`` (:func:`fedlr.rates.coupling.decay_or_grow`; with
``+grow-batch`` the batch grows instead, at the same ``lr / B``). ``coupling_factor`` (``+coupled``)
moves the base rate, tuned for batch ``coupling-reference``, to each client's own batch size
(:func:`fedlr.rates.coupling.coupling_factors`), so clients train at the same noise scale; with
Adam the square-root rule also moves Adam's betas and epsilon (Malladi et al. 2022). With
``measure-noise-scale`` every client sends the gradient of one batch at the received weights and
the server estimates the gradient noise scale ``B_simple`` each round
(:func:`fedlr.rates.coupling.federated_terms`, smoothed by
:class:`fedlr.rates.coupling.NoiseScaleEMA`); ``noise-scale-growth`` grows local batches or
clients per round with it, and ``coupling-rule = optimal`` reads it as ``B_noise``.

On graphs the strategy also pools what clients report per node: accuracy by
global-degree quartile (:func:`fedlr.metrics.degree.degree_bucket_fairness`) and the slope of
gradient norm vs degree before and after the degree scales
(:func:`fedlr.metrics.degree.loglog_slope`). Rows of a node-embedding table belong to the one
client holding the node, so ``embedding.weight`` is aggregated as the received table plus every
client's change (each client changes only its own rows), not averaged: an average would shrink
each row's step by its owner's weight.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    FedAdam,
    FedAvg,
    FedAvgM,
    FedProx,
    FedYogi,
    QFedAvg,
    Result,
)

from fedlr.config import (
    is_graph,
    parse_strategy,
    schedule_of,
    split_list,
    strategy_config,
    uses_degree,
    uses_modifier,
)
from fedlr.fl import checks, keys
from fedlr.fl.client_metrics import evaluate_metrics
from fedlr.metrics.degree import degree_bucket_fairness, loglog_slope
from fedlr.rates import coupling, robust, schedules
from fedlr.rates.noise import NoiseEMA, inverse_noise_rule, is_valid_estimate

log = logging.getLogger("fedlr")


# RoundLog fields keyed by partition id (a JSON copy of a state has them as strings)
_PER_CLIENT_LOGS = (
    "lr",
    "noise_estimate",
    "noise_smoothed",
    "train_loss",
    "accuracy",
    "aggregation_weight",
    "batch_size",
    "coupling_factor",
    "schedule_factor",
    "steps",
    "eval_loss",
    "task",
    "task_accuracy",
    "task_examples",
    "metrics",
    "train_metrics",
)


def schedule_params(name: str, cfg: Mapping[str, Any], starts: Iterable[int]) -> dict[str, Any]:
    """Schedule ``name``'s parameters, from the run config's ``schedule-*`` keys.

    They are :func:`fedlr.rates.schedules.round_multipliers`'s; ``starts`` are a client's task
    arrival rounds (the phases of ``+phases``).

    ``schedule-period`` 0 means ``num-server-rounds // num-tasks`` (at least 1): one period per
    task. A cyclical period is one whole cycle, half up and half down.

    >>> cfg = {"schedule-period": 0, "num-server-rounds": 20, "num-tasks": 4,
    ...        "schedule-gamma": 0.5, "schedule-floor": 0.0, "schedule-warmup": 1,
    ...        "schedule-peak-decay": 1.0}
    >>> schedule_params("step", cfg, [1, 6, 11, 16])
    {'step_size': 5, 'gamma': 0.5}
    """
    period = int(cfg["schedule-period"]) or max(1, cfg["num-server-rounds"] // cfg["num-tasks"])
    floor = float(cfg["schedule-floor"])
    if name == "step":
        return {"step_size": period, "gamma": float(cfg["schedule-gamma"])}
    if name == "exponential":
        return {"gamma": float(cfg["schedule-gamma"])}
    if name == "cosine":
        return {"floor": floor}
    if name == "warm-restarts":
        return {"t_0": period, "floor": floor}
    if name == "cyclical":
        up = max(1, period // 2)
        return {"step_size_up": up, "step_size_down": max(1, period - up), "floor": floor}
    if name == "phases":
        return {
            "starts": [int(v) for v in starts],
            "warmup": int(cfg["schedule-warmup"]),
            "floor": floor,
            "peak_decay": float(cfg["schedule-peak-decay"]),
        }
    return {}  # constant, one-cycle (torch's defaults)


@dataclass(frozen=True)
class ClientInfo:
    """What the server learned about one node in the query round."""

    node_id: int
    partition_id: int
    num_examples: int
    noise_true: float | None  # None: no truth (a real site; users' files with nothing injected)
    role: str | None
    batch_size: int = 0  # the client's own local batch size (0: graph tasks, full-batch)
    site_statistics: str = ""  # users' files: the site's shared statistics (JSON), else empty


@dataclass
class RoundLog:
    """What happened to each client in one round; filled by the strategy, read by the recorder."""

    lr: dict[int, float] = field(default_factory=dict)
    noise_estimate: dict[int, float | None] = field(default_factory=dict)
    noise_smoothed: dict[int, float | None] = field(default_factory=dict)
    train_loss: dict[int, float] = field(default_factory=dict)
    accuracy: dict[int, float] = field(default_factory=dict)
    aggregation_weight: dict[int, float] = field(default_factory=dict)
    sampled: list[int] = field(default_factory=list)
    invalid_estimates: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    # graph tasks: accuracy by global-degree quartile over all clients' test nodes, and the
    # gradient-norm vs degree slopes (before / after the degree scales) at the received weights
    degree_fairness: dict[str, Any] | None = None
    gradient_slope: dict[str, float | None] | None = None
    gradient_profile: dict[str, list[float]] | None = None  # mean norm per degree (round 1)
    # batch size and noise scale (tabular tasks)
    batch_size: dict[int, int] = field(default_factory=dict)
    coupling_factor: dict[int, float] = field(default_factory=dict)
    schedule_factor: dict[int, float] = field(default_factory=dict)  # lr-decay-rounds
    steps: dict[int, int] = field(default_factory=dict)
    eval_loss: dict[int, float] = field(default_factory=dict)
    noise_scale: dict[str, Any] | None = None
    # continual streams: the task each client trained on, its accuracy and test size per task
    task: dict[int, int] = field(default_factory=dict)
    task_accuracy: dict[int, list[float]] = field(default_factory=dict)
    task_examples: dict[int, list[int]] = field(default_factory=dict)
    # evaluate: each client's metrics beyond accuracy and loss (the run's ``metrics``, a task's
    # own), checked by fedlr.fl.client_metrics
    metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    # train: each client's own metrics beyond what fedlr reads (a user's app, a task's own)
    train_metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    # rate-guard / noise-response: the partition ids whose noise estimates stand apart
    noisy_group: list[int] = field(default_factory=list)
    # kept but bounded: a q-FedAvg loss above its cap, an update norm clipped
    capped: list[dict[str, Any]] = field(default_factory=list)


def _scalar(value: object) -> float:
    """A record value as float (NaN when it is not a single number)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        return float("nan")
    return float(value)


_OWN_MEANS = (keys.TRAIN_LOSS, keys.ACCURACY, keys.EVAL_LOSS)  # each client counts once


def _mean_metrics(records: list[RecordDict], weighted_by_key: str) -> MetricRecord:
    """The round's metrics over clients: fedlr's loss and accuracy, and every other metric.

    Loss and accuracy are unweighted means (each client once, as the fairness view reads them);
    any other scalar (a user's own, already checked) is weighted by ``num-examples``, as Flower's
    ``aggregate_metricrecords`` does.
    """
    del weighted_by_key
    out: dict[str, int | float | list[int] | list[float]] = {}
    metrics = [r.metric_records[keys.METRICS] for r in records]
    for key in _OWN_MEANS:
        values = [_scalar(m[key]) for m in metrics if key in m]
        if values:
            out[key] = float(np.mean(values))
    skip = {*_OWN_MEANS, *keys.TRAIN_KEYS, *keys.EVALUATE_KEYS}
    weights = np.array([_scalar(m.get(keys.NUM_EXAMPLES)) for m in metrics])
    if metrics and np.all(np.isfinite(weights)) and weights.sum() > 0:
        for key in sorted(set.intersection(*(set(m) for m in metrics)) - skip):
            column = np.array([_scalar(m[key]) for m in metrics])
            if np.all(np.isfinite(column)):
                out[key] = float(np.dot(weights, column) / weights.sum())
    return MetricRecord(out)


def _int_list(value: object) -> list[int] | None:
    if isinstance(value, list) and all(isinstance(v, int) for v in value):
        return [int(v) for v in value]
    return None


def _float_list(value: object) -> list[float] | None:
    if isinstance(value, list) and all(isinstance(v, int | float) for v in value):
        return [float(v) for v in value]
    return None


def _slope_or_none(values: np.ndarray, degree: np.ndarray) -> float | None:
    try:
        return float(loglog_slope(values, degree))
    except ValueError:  # fewer than two positive values, or one degree only
        return None


def gradient_diagnostic(
    reports: list[tuple[list[float], list[float], list[float]]], with_profile: bool
) -> tuple[dict[str, float | None], dict[str, list[float]] | None]:
    """Pool clients' ``(degree, norm, scaled norm)`` lists into slopes (and a profile).

    Returns the two log-log slopes (before and after the degree scales) and, with
    ``with_profile``, the mean norm per degree value for the report's plot.
    """
    degree = np.concatenate([np.asarray(r[0], dtype=float) for r in reports])
    norm = np.concatenate([np.asarray(r[1], dtype=float) for r in reports])
    scaled = np.concatenate([np.asarray(r[2], dtype=float) for r in reports])
    slopes = {"before": _slope_or_none(norm, degree), "after": _slope_or_none(scaled, degree)}
    if not with_profile:
        return slopes, None
    keep = np.isfinite(norm) & (norm > 0) & np.isfinite(scaled) & (scaled > 0)
    values = np.unique(degree[keep])
    profile = {
        "degree": values.tolist(),
        "before": [float(norm[keep][degree[keep] == d].mean()) for d in values],
        "after": [float(scaled[keep][degree[keep] == d].mean()) for d in values],
        "count": [int(np.count_nonzero(degree[keep] == d)) for d in values],
    }
    return slopes, profile


def _task_lists(
    metrics: MetricRecord, accuracy_key: str, num_tasks: int
) -> tuple[list[float], list[int]] | None:
    """A continual reply's accuracy per task (-1: no test example) and test examples per task.

    None when either list is missing, has another length than ``num_tasks``, or holds an
    accuracy outside ``[0, 1]`` that is not -1.
    """
    accuracy = _float_list(metrics.get(accuracy_key))
    examples = _int_list(metrics.get(keys.TASK_EXAMPLES))
    if accuracy is None or examples is None or not len(accuracy) == len(examples) == num_tasks:
        return None
    if not all(a == -1.0 or 0.0 <= a <= 1.0 for a in accuracy) or min(examples) < 0:
        return None
    return [float(a) for a in accuracy], [int(n) for n in examples]


def _gradient(record: ArrayRecord, batch: float) -> tuple[np.ndarray, int] | None:
    """A client's noise-scale gradient as float64, with its batch; None when malformed."""
    try:
        flat = np.concatenate([a.reshape(-1) for a in record.to_numpy_ndarrays()])
    except (ValueError, TypeError):
        return None
    if not (np.isfinite(batch) and batch >= 1 and flat.size and np.all(np.isfinite(flat))):
        return None
    return flat.astype(np.float64), int(batch)


def _batch_size(value: object) -> int:
    """A reported batch size; 0 (the run's ``batch-size``) when not an integer >= 1."""
    number = _scalar(value)
    if not (np.isfinite(number) and number >= 1 and float(number).is_integer()):
        if value is not None:
            log.warning(
                "fedlr: reported batch size %r ignored; the run's batch-size is used", value
            )
        return 0
    return int(number)


def _noise_true(value: object, node_id: int) -> float | None:
    """A query reply's true noise rate: None when absent (no truth) or not a rate in [0, 1]."""
    if value is None:
        return None
    rate = _scalar(value)
    if not 0.0 <= rate <= 1.0:  # NaN too
        log.warning("fedlr: node %s: true noise %r ignored (not a rate in [0, 1])", node_id, value)
        return None
    return rate


def _role(value: object, node_id: int) -> str | None:
    """A query reply's role: None when absent (no truth) or not a short string."""
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 64:
        log.warning("fedlr: node %s: role %r ignored (not a short string)", node_id, value)
        return None
    return value


def query_nodes(
    grid: Grid, node_ids: Iterable[int], cfg: Mapping[str, Any], timeout: float
) -> tuple[list[ClientInfo], list[tuple[int, str]]]:
    """Ask nodes who they are (partition id, size, role); return answers and failures.

    Failures are ``(node_id, reason)`` pairs: a node whose ClientApp raised, or whose reply
    lacks the keys. The truth (``noise-true``, the ``info`` record's ``role``) is optional: a
    real site sends none, and its :class:`ClientInfo` holds None for both.
    """
    content = RecordDict({keys.CONFIG: ConfigRecord(dict(cfg))})
    messages = [Message(content, dst_node_id=n, message_type=MessageType.QUERY) for n in node_ids]
    clients: list[ClientInfo] = []
    failed: list[tuple[int, str]] = []
    for reply in grid.send_and_receive(messages, timeout=timeout):
        node_id = reply.metadata.src_node_id
        if reply.has_error():
            failed.append((node_id, str(reply.error.reason)))
            continue
        try:
            metrics = reply.content.metric_records[keys.METRICS]
            info = reply.content.config_records.get("info")
            site = reply.content.config_records.get(keys.SITE)
            clients.append(
                ClientInfo(
                    node_id=node_id,
                    partition_id=int(_scalar(metrics[keys.PARTITION_ID])),
                    num_examples=int(_scalar(metrics[keys.NUM_EXAMPLES])),
                    # ground truth is optional metadata: simulations send it, real sites do not
                    noise_true=_noise_true(metrics.get("noise-true"), node_id),
                    role=_role(info.get("role") if info is not None else None, node_id),
                    batch_size=_batch_size(metrics.get(keys.BATCH_SIZE)),
                    site_statistics=str(site[keys.SITE_STATISTICS]) if site is not None else "",
                )
            )
        except (KeyError, ValueError, TypeError, OverflowError) as error:  # int(nan), int(inf)
            failed.append((node_id, f"malformed query reply ({error!r})"))
    return clients, failed


def _cap_message(capped: Mapping[int, int], cap: int) -> str:
    listed = ", ".join(f"partition {pid} ({count})" for pid, count in sorted(capped.items()))
    return f"fedlr: example counts above {cap} count as {cap} in aggregation: {listed}"


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
    try:
        return resolve(None, overrides)
    except ConfigError as error:
        message = str(error)
        for name in knobs:
            message = message.replace(name.replace("_", "-"), name)
        raise ValueError(message) from None


class PerClientRates(FedAvg):
    """Mixin: per-client learning rates and aggregation weights from noise estimates.

    Two ways in:

    * as a library, in your own Flower app: every knob is a keyword argument with a default
      (``NoiseAdaptiveFedAvg(lr=0.1, fraction_evaluate=0.0)``; :data:`KNOBS`, each the run-config
      key of the same name with dashes, see docs/configuration.md). Clients are learnt from their
      replies, keyed by node id, with uniform rates until an estimate arrives; no query round.
      The message contract is docs/library.md's.
    * from fedlr's own ServerApp: ``cfg`` (the resolved run config) and ``clients`` (the query
      round's answers, keyed by partition id).

    Parameters
    ----------
    lr, fraction_train, seed, warmup_rounds, rate_power, rate_low, rate_high, noise_floor, \
ema_decay, rate_guard, rate_guard_ratio, rate_compensation, max_examples, aggregation, \
trim_fraction, krum_malicious, clip_update_norm
        Library use only: the run-config keys of the same names (None: the schema's default).
    rate_source : {"estimate", "uniform", "oracle"}
        Where a client's rate factor comes from.
    weight_by_noise : bool, optional
        Weight aggregation by ``num-examples * factor`` instead of ``num-examples`` (default:
        ``noise-weighted-aggregation`` for estimated rates, else False).
    cfg : Mapping, optional
        fedlr's resolved run config: sent to clients and read for the rule.
    clients : list of ClientInfo, optional
        The query round's answers, one per node (None: learnt from replies, keyed by node id).
    **strategy_kwargs
        The Flower strategy's own arguments (``fraction_evaluate``, ``min_available_nodes``,
        ``proximal_mu``, ``eta``, ...).
    """

    needs_train_loss = False  # aggregation reads train_loss: drop replies without a finite one
    node_owned_keys = ("embedding.weight",)  # graph tasks: one row per node, owned by its client

    def __init__(
        self,
        *,
        lr: float | None = None,
        fraction_train: float | None = None,
        seed: int | None = None,
        warmup_rounds: int | None = None,
        rate_power: float | None = None,
        rate_low: float | None = None,
        rate_high: float | None = None,
        noise_floor: float | None = None,
        ema_decay: float | None = None,
        rate_guard: str | None = None,
        rate_guard_ratio: float | None = None,
        rate_compensation: float | None = None,
        max_examples: int | None = None,
        aggregation: str | None = None,
        trim_fraction: float | None = None,
        krum_malicious: int | None = None,
        clip_update_norm: float | None = None,
        rate_source: str = "estimate",
        weight_by_noise: bool | None = None,
        cfg: Mapping[str, Any] | None = None,
        clients: list[ClientInfo] | None = None,
        **strategy_kwargs: Any,
    ) -> None:
        if rate_source not in ("uniform", "estimate", "oracle"):
            raise ValueError(
                f"rate_source: expected uniform, estimate or oracle, got {rate_source}"
            )
        given = {
            name: value
            for name, value in {
                "lr": lr,
                "fraction_train": fraction_train,
                "seed": seed,
                "warmup_rounds": warmup_rounds,
                "rate_power": rate_power,
                "rate_low": rate_low,
                "rate_high": rate_high,
                "noise_floor": noise_floor,
                "ema_decay": ema_decay,
                "rate_guard": rate_guard,
                "rate_guard_ratio": rate_guard_ratio,
                "rate_compensation": rate_compensation,
                "max_examples": max_examples,
                "aggregation": aggregation,
                "trim_fraction": trim_fraction,
                "krum_malicious": krum_malicious,
                "clip_update_norm": clip_update_norm,
            }.items()
            if value is not None
        }
        if cfg is not None and given:
            listed = ", ".join(given)
            raise TypeError(f"give fedlr's run config (cfg) or keywords ({listed}), not both")
        if cfg is None:
            cfg = library_config(given)
        # Library use learns its clients from replies (`open`); fedlr's ServerApp asked them first.
        self.open = clients is None
        clients = clients or []
        if rate_source == "oracle" and self.open:
            raise ValueError(
                "rate_source: 'oracle' needs fedlr's query round (each client's truth)"
            )
        if weight_by_noise is None:
            weight_by_noise = bool(cfg["noise-weighted-aggregation"]) and rate_source == "estimate"
        if not self.open:
            # A round goes ahead once `min-clients` nodes are connected (0: all), with the replies
            # that arrive within `round-timeout`; those that do not are logged as missing.
            need = int(cfg.get("min-clients", 0)) or len(clients)
            strategy_kwargs = {
                "min_train_nodes": need,
                "min_evaluate_nodes": need,
                "min_available_nodes": need,
                **strategy_kwargs,
            }
        super().__init__(
            fraction_train=1.0,  # sampling is ours: seeded and keyed by partition id
            weighted_by_key=keys.AGGREGATION_WEIGHT,
            train_metrics_aggr_fn=_mean_metrics,
            evaluate_metrics_aggr_fn=_mean_metrics,
            **strategy_kwargs,
        )
        self.cfg = dict(cfg)
        self.clients = {c.node_id: c for c in clients}
        self.by_partition = {c.partition_id: c for c in clients}
        # one client's reported size is an aggregation weight: bounded (fedlr.fl.checks)
        self.example_cap = checks.example_cap(
            [c.num_examples for c in clients], int(cfg.get("max-examples", 0))
        )
        over = {
            c.partition_id: c.num_examples for c in clients if c.num_examples > self.example_cap
        }
        if over:
            log.warning(_cap_message(over, self.example_cap))
        self.aggregation = str(cfg.get("aggregation", "mean"))
        self.rate_source = rate_source
        self.weight_by_noise = weight_by_noise
        self.uses_estimates = rate_source == "estimate" or (
            weight_by_noise and rate_source != "oracle"
        )
        self.base_lr = float(cfg["lr"])
        self.rule = inverse_noise_rule(
            power=cfg["rate-power"],
            low=cfg["rate-low"],
            high=cfg["rate-high"],
            floor=cfg["noise-floor"],
        )
        self.ema = NoiseEMA(decay=cfg["ema-decay"])
        self.invalid_last: set[int] = set()
        self.rounds: dict[int, RoundLog] = {}
        self.round_offset = 0  # rounds done before this start() (a resumed run)
        self.strangers: set[int] = set()  # connected nodes that hold no partition of this run
        self.waiting: dict[int, ClientInfo] = {}  # new nodes whose partition's old node is alive
        self.degree_rule = False  # a +degree strategy (set by build_strategy)
        self.graph = is_graph(cfg)
        self._sent: ArrayRecord | None = None  # the arrays of this round's train messages
        self._noise_sent: dict[int, float] = {}  # this round's noise factor per partition id
        # the no-harm guard or the in-site response is on: the noisy group is found each round
        # (for strategies whose rates or weights follow the noise)
        self.guarded = (cfg["rate-guard"] != "none" or cfg["noise-response"] != "none") and (
            rate_source != "uniform" or weight_by_noise
        )
        # batch sizes, coupling and the noise scale (tabular tasks; graphs train full-batch)
        self.coupled = False  # a +coupled strategy (set by build_strategy)
        self.grow_batch = False  # a +grow-batch strategy (set by build_strategy)
        # the batch a client actually trains on: its own, at most its example count
        self.batch = {
            c.partition_id: min(c.batch_size or int(cfg["batch-size"]), max(1, c.num_examples))
            for c in clients
        }
        self.reference_batch = float(
            cfg["coupling-reference"] or np.median(list(self.batch.values()) or [1])
        )
        self.coupling_rule = str(cfg["coupling-rule"])
        if self.coupling_rule == "auto":
            self.coupling_rule = coupling.rule_for_optimizer(cfg["optimizer"])
        self.milestones = [int(v) for v in split_list(cfg["lr-decay-rounds"])]
        self.measure_noise_scale = bool(cfg["measure-noise-scale"]) and not self.graph
        self.noise_scale = coupling.NoiseScaleEMA(decay=cfg["noise-scale-ema"])
        self.first_b_simple: float | None = None  # the first usable smoothed estimate
        self.growth = 1.0  # noise-scale-growth factor for the next round
        self._kept_betas: set[int] = set()  # clients past Malladi's range (warned once)
        # round-indexed schedule (a schedule modifier) and continual streams
        self.schedule_name = "constant"  # set by build_strategy
        self.replay = False  # a +replay strategy (set by build_strategy)
        self.stream = str(cfg.get("stream", "none"))
        self._multipliers: dict[tuple[int, ...], schedules.RoundMultipliers] = {}
        self.task_baseline: dict[int, list[float]] = {}  # per task, of the initial model
        self.task_ensemble: dict[int, list[float]] = {}  # per task, of the snapshot ensemble
        self.ensemble_examples: dict[int, list[int]] = {}

    # -- tasks and schedules -------------------------------------------------------------------
    def task_starts(self) -> np.ndarray:
        """Arrival round of each task at each partition id, ``(num-clients, num-tasks)``.

        A stream's :func:`fedlr.tasks.streams.arrival_rounds`; without a stream, ``num-tasks``
        even phases, the same at every client (the phases of ``+phases``).
        """
        from fedlr.tasks import streams

        stagger = int(self.cfg["task-stagger"]) if self.stream != "none" else 0
        return streams.arrival_rounds(
            self.cfg["num-server-rounds"],
            self.cfg["num-tasks"],
            max(self.by_partition, default=0) + 1,
            stagger,
        )

    def snapshot_rounds(self) -> list[int]:
        """Rounds after which the global model is kept: each task's end at every client."""
        from fedlr.tasks import streams

        return streams.snapshot_rounds(self.task_starts(), self.cfg["num-server-rounds"])

    def multipliers(self, pid: int) -> schedules.RoundMultipliers:
        """The schedule's rate multiplier of every round for partition ``pid``, read lazily.

        One list for all clients, except ``+phases`` in a staggered stream, where each client's
        phases start when its own tasks arrive.
        """
        starts: tuple[int, ...] = ()
        if self.schedule_name == "phases":
            starts = tuple(int(v) for v in self.task_starts()[pid])
        if starts not in self._multipliers:
            self._multipliers[starts] = schedules.RoundMultipliers(
                self.schedule_name,
                self.cfg["num-server-rounds"],
                **schedule_params(self.schedule_name, self.cfg, starts),
            )
        return self._multipliers[starts]

    # -- state (checkpoint and resume) -------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything this strategy carries from round to round, as plain data."""
        return {
            "ema": self.ema.to_dict(),
            "invalid_last": sorted(self.invalid_last),
            "rounds": {r: asdict(log_) for r, log_ in self.rounds.items()},
            "noise_scale": self.noise_scale.to_dict(),
            "first_b_simple": self.first_b_simple,
            "growth": self.growth,
            "task_baseline": self.task_baseline,
            "task_ensemble": self.task_ensemble,
            "ensemble_examples": self.ensemble_examples,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (the rule's parameters come from the config, not here)."""
        self.ema = NoiseEMA.from_dict(state["ema"])
        self.invalid_last = {int(p) for p in state["invalid_last"]}
        self.rounds = {int(r): RoundLog(**log_) for r, log_ in state["rounds"].items()}
        for log_ in self.rounds.values():  # partition ids as int (a JSON copy has strings)
            for name in _PER_CLIENT_LOGS:
                setattr(log_, name, {int(k): v for k, v in getattr(log_, name).items()})
        if "noise_scale" in state:  # checkpoints written before noise scales have none
            self.noise_scale = coupling.NoiseScaleEMA.from_dict(state["noise_scale"])
            self.first_b_simple = state["first_b_simple"]
            self.growth = float(state["growth"])
        for name in ("task_baseline", "task_ensemble", "ensemble_examples"):
            setattr(self, name, {int(k): list(v) for k, v in state.get(name, {}).items()})

    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
        *,
        first_round: int = 1,
    ) -> Result:
        """Flower's round loop, rounds ``first_round..num_rounds``.

        ``first_round > 1`` continues a run from a checkpoint: ``initial_arrays`` is then the
        model after round ``first_round - 1``. Flower's loop counts from 1; each hook adds
        :attr:`round_offset`, so clients, seeds and logs see the run's own round numbers.
        """
        if not 1 <= first_round <= num_rounds:
            raise ValueError(f"first_round: expected 1..{num_rounds}, got {first_round}")
        self.round_offset = first_round - 1
        if self.open:  # a library strategy's schedules count the rounds of this start()
            self.cfg["num-server-rounds"] = num_rounds

        def shifted_fn(local_round: int, arrays: ArrayRecord) -> MetricRecord | None:
            assert evaluate_fn is not None
            # Round 0 is Flower's look at the initial arrays; after that, the run's round number.
            return evaluate_fn(local_round + self.round_offset if local_round else 0, arrays)

        return super().start(
            grid,
            initial_arrays,
            num_rounds=num_rounds - self.round_offset,
            timeout=timeout,
            train_config=train_config,
            evaluate_config=evaluate_config,
            evaluate_fn=shifted_fn if evaluate_fn is not None else None,
        )

    def evaluate_tasks(
        self,
        grid: Grid,
        arrays: ArrayRecord,
        snapshots: list[ArrayRecord] | None = None,
    ) -> dict[int, tuple[list[float], list[int], list[float] | None]]:
        """Evaluate ``arrays`` on every task of every client, outside Flower's round loop.

        Used for the model before training (the baseline of forward transfer) and, with
        ``snapshots``, for the final model next to the snapshot ensemble. Returns, per partition
        id that answered, ``(accuracy per task, test examples per task, ensemble accuracy per
        task or None)``; a failed or malformed reply is logged and left out.
        """
        snapshots = snapshots or []
        connected = set(grid.get_node_ids())
        messages = []
        for client in self.by_partition.values():
            if client.node_id not in connected:
                continue
            config = ConfigRecord(dict(self.cfg))
            config[keys.SNAPSHOTS] = len(snapshots)
            content = RecordDict({keys.ARRAYS: arrays, keys.CONFIG: config})
            for i, snapshot in enumerate(snapshots):
                content[keys.SNAPSHOT.format(i)] = snapshot
            messages.append(
                Message(content, dst_node_id=client.node_id, message_type=MessageType.EVALUATE)
            )
        out: dict[int, tuple[list[float], list[int], list[float] | None]] = {}
        timeout = float(self.cfg["round-timeout"])
        for reply in grid.send_and_receive(messages, timeout=timeout):
            node = self.clients.get(reply.metadata.src_node_id)
            if node is None or reply.has_error():
                reason = str(reply.error.reason) if reply.has_error() else "unknown node"
                log.warning("fedlr: task evaluation failed on a node: %s", reason)
                continue
            metrics = reply.content.metric_records.get(keys.METRICS, MetricRecord())
            tasks = _task_lists(metrics, keys.TASK_ACCURACY, self.cfg["num-tasks"])
            ensemble = (
                _task_lists(metrics, keys.ENSEMBLE_TASK_ACCURACY, self.cfg["num-tasks"])
                if snapshots
                else None
            )
            if tasks is None or (snapshots and ensemble is None):
                log.warning("fedlr: partition %d sent no usable task accuracies", node.partition_id)
                continue
            out[node.partition_id] = (*tasks, ensemble[0] if ensemble else None)
        return out

    # -- rates -------------------------------------------------------------------------------
    def size(self, client: ClientInfo) -> int:
        """The examples ``client`` counts for: what it reported, at most ``example_cap``."""
        return min(client.num_examples, self.example_cap)

    def noise_for_rule(self) -> dict[int, float]:
        """Noise per partition id that the rule may use now (oracle truth or smoothed estimates)."""
        if self.rate_source == "oracle":
            # the config refuses the oracle where clients report no truth (real files)
            return {
                pid: c.noise_true
                for pid, c in self.by_partition.items()
                if c.noise_true is not None
            }
        return {pid: v for pid, v in self.ema.values.items() if pid not in self.invalid_last}

    def noisy_partitions(self) -> set[int]:
        """Partition ids whose noise stands apart (:func:`fedlr.rates.robust.noisy_group`)."""
        noise = self.noise_for_rule()
        pids = sorted(noise)
        if not pids:
            return set()
        mask = robust.noisy_group(
            np.array([noise[p] for p in pids]),
            min_ratio=self.cfg["rate-guard-ratio"],
            floor=self.cfg["noise-floor"],
        )
        return {p for p, flagged in zip(pids, mask, strict=True) if flagged}

    def factors(self) -> dict[int, float]:
        """Rate factor per partition id: the rule over clients with usable noise, 1 elsewhere.

        With ``rate-guard = "gap"``, all factors are 1 unless some clients' estimates stand apart
        (:func:`fedlr.rates.robust.guarded_factors`).
        """
        noise = self.noise_for_rule()
        pids = sorted(noise)
        out = dict.fromkeys(self.by_partition, 1.0)
        if pids:
            sizes = np.array([self.size(self.by_partition[p]) for p in pids])
            values = self.rule(np.array([noise[p] for p in pids]), sizes)
            if self.cfg["rate-guard"] == "gap":
                noisy = self.noisy_partitions()
                values = robust.guarded_factors(values, np.array([p in noisy for p in pids]))
            out.update(zip(pids, (float(v) for v in values), strict=True))
        return out

    def noise_factors(self, server_round: int) -> dict[int, float]:
        """The noise-inverse factor per partition id this round (1 when uniform or warming up)."""
        if self.rate_source == "uniform" or (
            self.rate_source == "estimate" and server_round <= self.cfg["warmup-rounds"]
        ):
            return dict.fromkeys(self.by_partition, 1.0)
        return self.factors()

    def coupling_factors(self, server_round: int) -> dict[int, float]:
        """The batch-size coupling factor per partition id (``+coupled``; 1 otherwise).

        Relative to ``coupling-reference`` (0: the clients' median batch), bounded by
        ``[coupling-low, coupling-high]``, ramped from 1 over ``coupling-warmup-rounds`` rounds
        (:func:`fedlr.rates.coupling.goyal_warmup_lr`). ``optimal`` uses the smoothed noise scale
        as ``B_noise``; until one is measured it falls back to the optimizer's rule.
        """
        if not self.coupled or self.graph:
            return dict.fromkeys(self.by_partition, 1.0)
        rule, b_noise = self.coupling_rule, None
        if rule == "optimal":
            b_noise = self.noise_scale.b_simple
            if b_noise is None or not np.isfinite(b_noise) or b_noise < 0:
                rule, b_noise = coupling.rule_for_optimizer(self.cfg["optimizer"]), None
        pids = sorted(self.by_partition)
        values = coupling.coupling_factors(
            [self.batch[p] for p in pids],
            self.reference_batch,
            rule,
            b_noise=b_noise,
            low=self.cfg["coupling-low"],
            high=self.cfg["coupling-high"],
        )
        warmup = int(self.cfg["coupling-warmup-rounds"])
        out = {}
        for pid, value in zip(pids, values, strict=True):
            out[pid] = (
                coupling.goyal_warmup_lr(1.0, float(value), server_round - 1, warmup)
                if warmup
                else float(value)
            )
        return out

    def schedule(self, server_round: int) -> dict[int, tuple[float, int]]:
        """``(rate multiplier, local batch)`` per partition id this round.

        The multiplier is the strategy's round-indexed schedule (:meth:`multipliers`), or the
        step decay of ``lr-decay-rounds`` (the two are never configured together). The client's
        own batch (times the ``noise-scale-growth`` factor in batch mode), never
        more than its examples; with ``lr-decay-rounds`` the step decay of
        :func:`fedlr.rates.coupling.decay_or_grow` (``+grow-batch``: batch growth up to the
        client's example count, then rate decay, at the decay schedule's ``lr / B``).
        """
        out = {}
        grow = self.growth if self.cfg["noise-scale-growth"] == "batch" else 1.0
        last = self.cfg["num-server-rounds"]
        for pid, client in self.by_partition.items():
            most = max(1, client.num_examples)
            batch = min(most, max(1, round(self.batch[pid] * grow)))
            if not self.milestones:
                if self.schedule_name == "constant":
                    out[pid] = (1.0, batch)
                else:  # a round past the run (never sent) keeps the last multiplier
                    out[pid] = (self.multipliers(pid)[min(max(server_round, 1), last) - 1], batch)
                continue
            out[pid] = coupling.decay_or_grow(
                server_round,
                self.milestones,
                self.cfg["lr-decay-factor"],
                base_lr=1.0,
                base_batch=batch,
                max_batch=most,
                mode="grow" if self.grow_batch else "decay",
            )
        return out

    def round_plan(self, server_round: int) -> dict[int, tuple[float, int, float, float]]:
        """Per partition id: ``(lr, batch, coupling factor, schedule factor)`` this round.

        ``lr = base * schedule * noise * coupling``, each factor computed once here.
        """
        noise = self.noise_factors(server_round)
        couple = self.coupling_factors(server_round)
        plan = self.schedule(server_round)
        return {
            pid: (
                self.base_lr * plan[pid][0] * noise[pid] * couple[pid],
                plan[pid][1],
                couple[pid],
                plan[pid][0],
            )
            for pid in self.by_partition
        }

    def client_lr(self, server_round: int) -> dict[int, float]:
        """Learning rate per partition id for this round (:meth:`round_plan`'s first entry)."""
        return {pid: entry[0] for pid, entry in self.round_plan(server_round).items()}

    def optimizer_settings(self, pid: int, lr: float, coupling_factor: float) -> dict[str, float]:
        """Per-client optimizer settings beyond the rate: weight decay and Adam's betas/eps."""
        out: dict[str, float] = {}
        if self.cfg["weight-decay"] > 0:
            out[keys.CLIENT_WEIGHT_DECAY] = coupling.coupled_weight_decay(
                self.cfg["weight-decay"], lr, self.base_lr, self.cfg["weight-decay-coupling"]
            )
        if self.coupled and self.cfg["optimizer"] == "adam" and self.coupling_rule == "sqrt":
            try:  # the sqrt factor is sqrt(kappa): kappa = factor^2 (bounds included)
                hyper = coupling.malladi_sqrt(self.base_lr, 0.9, 0.999, 1e-8, coupling_factor**2)
            except ValueError as error:
                if pid not in self._kept_betas:  # once per client, not every round
                    self._kept_betas.add(pid)
                    log.warning("fedlr: partition %d keeps Adam's betas: %s", pid, error)
            else:
                out.update(
                    {
                        keys.ADAM_BETA1: hyper.beta1,
                        keys.ADAM_BETA2: hyper.beta2,
                        keys.ADAM_EPS: hyper.eps,
                    }
                )
        return out

    def client_settings(self, pid: int, server_round: int) -> dict[str, float]:
        """Per-client config entries a subclass adds (FedCorr's proximal mu); none here."""
        return {}

    def sample(self, server_round: int) -> list[int]:
        """Partition ids trained this round: seeded by (seed, round), independent of node ids."""
        pids = sorted(self.by_partition)
        count = max(1, int(len(pids) * self.cfg["fraction-train"]))  # Flower floors too
        if self.cfg["noise-scale-growth"] == "clients":
            count = min(len(pids), round(count * self.growth))
        if count >= len(pids):
            return pids
        rng = np.random.default_rng([self.cfg["seed"], server_round])
        # by index: the same draw as choosing from the ids, for node ids beyond int64 too
        return sorted(pids[int(i)] for i in rng.choice(len(pids), size=count, replace=False))

    # -- Flower hooks ------------------------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Send each sampled client the shared content plus its own learning rate."""
        server_round += self.round_offset
        config[keys.ESTIMATE_NOISE] = self.uses_estimates
        if not self.open:  # what fedlr's own ClientApp reads; a user's app needs none of it
            config[keys.DEGREE_RULE] = self.degree_rule
            config[keys.MEASURE_NOISE_SCALE] = self.measure_noise_scale
            config[keys.REPLAY] = self.replay
        self._sent = arrays
        template = list(super().configure_train(server_round, arrays, config, grid))
        if not template:
            return []
        connected = {m.metadata.dst_node_id for m in template}
        if self.open:
            self.learn_nodes(connected)
        else:
            self.adopt_restarted_nodes(grid, connected)
        content = template[0].content
        plan = self.round_plan(server_round)
        noise_factors = self.noise_factors(server_round)
        noisy: set[int] = set()
        if self.guarded and (
            self.rate_source == "oracle" or server_round > self.cfg["warmup-rounds"]
        ):
            noisy = self.noisy_partitions()
        select = noisy if self.cfg["noise-response"] == "small-loss" else set()
        log_ = self.rounds.setdefault(server_round, RoundLog())
        log_.sampled = self.sample(server_round)
        log_.noisy_group = sorted(noisy)
        messages = []
        for pid in log_.sampled:
            node = self.by_partition[pid]
            if node.node_id not in connected:  # gone: recorded as missing, not waited for
                continue
            client_config = ConfigRecord(dict(content.config_records[keys.CONFIG]))
            lr, batch, coupling_factor, schedule_factor = plan[pid]
            client_config[keys.LR] = lr
            if not self.open or select:
                client_config[keys.SELECT_CLEAN] = pid in select
            self._noise_sent[pid] = noise_factors[pid]
            log_.lr[pid] = lr
            log_.schedule_factor[pid] = schedule_factor
            if not self.graph and not self.open:  # a user's app owns its batches
                client_config[keys.CLIENT_BATCH_SIZE] = batch
                log_.batch_size[pid] = batch
                log_.coupling_factor[pid] = coupling_factor
                client_config.update(self.optimizer_settings(pid, lr, coupling_factor))
            client_config.update(self.client_settings(pid, server_round))
            messages.append(
                Message(
                    RecordDict(
                        {
                            keys.ARRAYS: content.array_records[keys.ARRAYS],
                            keys.CONFIG: client_config,
                        }
                    ),
                    dst_node_id=node.node_id,
                    message_type=MessageType.TRAIN,
                )
            )
        return messages

    def learn_nodes(self, connected: Iterable[int]) -> list[int]:
        """Library use: take every connected node not seen before as a client; return their ids.

        Its id is its key in every log (``partition_id`` = node id); its example count is learnt
        from its first train reply; its rate is uniform until it sends a valid estimate.
        """
        new = sorted(set(connected) - set(self.clients))
        for node_id in new:
            info = ClientInfo(node_id, node_id, num_examples=0, noise_true=None, role=None)
            self.clients[node_id] = self.by_partition[node_id] = info
            self.batch[node_id] = int(self.cfg["batch-size"])
        if new:
            log.info("fedlr: %d new node(s): %s", len(new), ", ".join(map(str, new)))
        return new

    def learn_examples(self, log_: RoundLog, reported: Mapping[int, int]) -> None:
        """Library use: each client's example count is what its latest reply says, bounded.

        The bound is ``max-examples`` or 10x the median over all clients' counts
        (:func:`fedlr.fl.checks.example_cap`), so one client's claim cannot outweigh the rest.
        """
        for pid, count in reported.items():
            moved = replace(self.by_partition[pid], num_examples=count)
            self.by_partition[pid] = self.clients[moved.node_id] = moved
        counts = [c.num_examples for c in self.by_partition.values() if c.num_examples > 0]
        self.example_cap = checks.example_cap(counts, int(self.cfg["max-examples"]))
        over = {pid: n for pid, n in reported.items() if n > self.example_cap}
        for pid, count in over.items():
            used = self.example_cap
            log_.capped.append(
                {"partition_id": pid, "what": "num-examples", "reported": count, "used": used}
            )
        if over:
            log.warning(_cap_message(over, self.example_cap))

    def adopt_restarted_nodes(self, grid: Grid, connected: Iterable[int]) -> list[int]:
        """Map partitions to the new node ids of restarted nodes; return the partitions moved.

        A SuperNode with authentication keeps its node id across restarts (the id belongs to
        its key); one without gets a new id. Connected nodes we do not know are asked, once, who
        they are (one that fails or does not answer is not asked again). One holding a partition
        of this run (same partition id and example count) takes that partition's place as soon
        as the partition's old node is gone (the SuperLink lists a dead node for up to two missed
        heartbeats); any other is left alone.
        """
        connected = set(connected)
        unknown = sorted(connected - set(self.clients) - self.strangers - set(self.waiting))
        if unknown:
            answers, _failed = query_nodes(
                grid, unknown, self.cfg, float(self.cfg["round-timeout"])
            )
            # A node that fails or does not answer is not asked again in this strategy.
            self.strangers.update(set(unknown) - {info.node_id for info in answers})
            for info in answers:
                old = self.by_partition.get(info.partition_id)
                if old is None or old.num_examples != info.num_examples:
                    self.strangers.add(info.node_id)
                    log.warning(
                        "fedlr: node %d (partition %d) holds no partition of this run; ignored",
                        info.node_id,
                        info.partition_id,
                    )
                else:
                    self.waiting[info.node_id] = info
        moved = []
        for node_id, info in sorted(self.waiting.items()):
            old = self.by_partition[info.partition_id]
            if node_id not in connected or old.node_id in connected:
                continue  # gone again, or its partition's node is still there
            del self.waiting[node_id]
            moved_to = replace(old, node_id=node_id)
            del self.clients[old.node_id]
            self.clients[node_id] = moved_to
            self.by_partition[info.partition_id] = moved_to
            moved.append(info.partition_id)
            log.info("fedlr: partition %d is back as node %d", info.partition_id, node_id)
        return moved

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Check replies and estimates, set aggregation weights, then aggregate with ``super()``."""
        server_round += self.round_offset
        log_ = self.rounds.setdefault(server_round, RoundLog())
        accepted: list[Message] = []
        raw: dict[int, float] = {}
        diagnostics: dict[int, tuple[list[float], list[float], list[float]]] = {}
        gradients: dict[int, tuple[np.ndarray, int]] = {}
        examples: dict[int, int] = {}  # continual: examples trained on this round
        reported: dict[int, int] = {}  # library use: each reply's example count
        extras: dict[int, dict[str, float]] = {}  # a user's own train metrics, checked
        for reply in replies:
            node = self.clients.get(reply.metadata.src_node_id)
            pid = node.partition_id if node else -1
            if reply.has_error():
                log_.errors.append({"partition_id": pid, "reason": str(reply.error.reason)})
                continue
            metrics = reply.content.metric_records.get(keys.METRICS, MetricRecord())
            if node is None or keys.ARRAYS not in reply.content.array_records:
                log_.errors.append({"partition_id": pid, "reason": "unknown node or no arrays"})
                continue
            problem = self.array_problem(reply.content.array_records[keys.ARRAYS])
            if problem is not None:
                log_.errors.append({"partition_id": pid, "reason": problem})
                continue
            if self.open:  # its weight is what it reports, bounded below (learn_examples)
                count = _scalar(metrics.get(keys.NUM_EXAMPLES))
                if not (np.isfinite(count) and count >= 1 and count.is_integer()):
                    value = metrics.get(keys.NUM_EXAMPLES)
                    reason = f"num-examples {value!r} is not an integer >= 1"
                    log_.errors.append({"partition_id": pid, "reason": reason})
                    log.warning("fedlr: node %d: reply dropped: %s", pid, reason)
                    continue
                reported[pid] = int(count)
            if self.stream != "none":
                # A continual client trains on its current task (+ replay): that is its weight,
                # at most all its examples plus the replay sample, whatever it reports.
                trained = _scalar(metrics.get(keys.NUM_EXAMPLES))
                most = self.size(node) + int(self.cfg["replay-size"]) * self.replay
                examples[pid] = int(min(trained, most)) if np.isfinite(trained) else 0
                if examples[pid] <= 0:
                    reason = "no examples of its current task"
                    log_.errors.append({"partition_id": pid, "reason": reason})
                    continue
            train_loss = _scalar(metrics.get(keys.TRAIN_LOSS))
            if self.needs_train_loss and not np.isfinite(train_loss):
                # QFedAvg scales the update by the loss: one NaN would make every weight NaN.
                log_.errors.append({"partition_id": pid, "reason": "missing or non-finite loss"})
                continue
            log_.train_loss[pid] = train_loss
            task = _scalar(metrics.get(keys.TASK))
            if np.isfinite(task) and task >= 0:
                log_.task[pid] = int(task)
            steps = _scalar(metrics.get(keys.STEPS))
            if np.isfinite(steps) and steps >= 0:
                log_.steps[pid] = int(steps)
            # the noise-scale gradient is not a model: it never reaches the aggregation
            gradient = reply.content.array_records.get(keys.GRADIENT)
            if gradient is not None:
                del reply.content[keys.GRADIENT]
                if self.measure_noise_scale:
                    usable = _gradient(gradient, _scalar(metrics.get(keys.GRADIENT_BATCH)))
                    if usable is None:
                        log_.errors.append({"partition_id": pid, "reason": "malformed gradient"})
                    else:
                        gradients[pid] = usable
            if self.graph:
                degree = _float_list(metrics.get(keys.GRAD_DEGREE))
                norm = _float_list(metrics.get(keys.GRAD_NORM))
                scaled = _float_list(metrics.get(keys.GRAD_NORM_SCALED))
                if degree and norm and scaled and len(degree) == len(norm) == len(scaled):
                    diagnostics[pid] = (degree, norm, scaled)
            if self.uses_estimates:
                value = metrics.get(keys.NOISE_ESTIMATE)
                if is_valid_estimate(value):
                    raw[pid] = _scalar(value)
                    self.invalid_last.discard(pid)
                else:
                    log_.invalid_estimates.append({"partition_id": pid, "value": repr(value)})
                    if pid not in self.invalid_last:  # once, not every round it stays bad
                        log.warning(
                            "fedlr: partition %d: noise estimate %r missing or invalid; "
                            "uniform rate until a valid one arrives",
                            pid,
                            value,
                        )
                    self.invalid_last.add(pid)
                log_.noise_estimate[pid] = raw.get(pid)
            kept, dropped = evaluate_metrics(metrics, keys.TRAIN_KEYS)
            if kept:
                extras[pid] = kept
            if dropped is not None:
                log_.errors.append({"partition_id": pid, "reason": dropped})
            accepted.append(reply)
        if reported:
            self.learn_examples(log_, reported)

        if self.needs_train_loss:
            # q-FedAvg scales each update by its loss: one huge (finite) loss would dominate.
            pids = [self.clients[r.metadata.src_node_id].partition_id for r in accepted]
            bounded, capped = checks.bounded_losses({p: log_.train_loss[p] for p in pids})
            for pid in capped:
                log_.capped.append(
                    {
                        "partition_id": pid,
                        "what": "train-loss",
                        "reported": log_.train_loss[pid],
                        "used": bounded[pid],
                    }
                )
                log_.train_loss[pid] = bounded[pid]
        # Estimates from the last warm-up round on seed the EMA (earlier models are too raw).
        if server_round >= self.cfg["warmup-rounds"]:
            for pid, value in raw.items():
                log_.noise_smoothed[pid] = self.ema.update(pid, value)
        # Uniform weights during warm-up, as for rates.
        use_noise = self.weight_by_noise and (
            self.rate_source == "oracle" or server_round > self.cfg["warmup-rounds"]
        )
        factors = self.factors() if use_noise else {}
        # Replies come in arrival order; Flower sums float32 arrays in place, so fix the order
        # (by partition id) to make a run replay bit for bit.
        accepted.sort(key=lambda r: self.clients[r.metadata.src_node_id].partition_id)
        pids = [self.clients[r.metadata.src_node_id].partition_id for r in accepted]
        # Flower needs the same metric keys in every reply: a user's metrics that all send, and
        # the loss where every client has a finite one (fedlr's clients always do)
        shared = set.intersection(*(set(extras.get(p, {})) for p in pids)) if pids else set()
        with_loss = not self.open or all(np.isfinite(log_.train_loss[p]) for p in pids)
        for reply in accepted:
            node = self.clients[reply.metadata.src_node_id]
            pid = node.partition_id
            size = examples.get(pid, self.size(node))
            weight = size * factors.get(pid, 1.0)
            log_.aggregation_weight[pid] = float(weight)
            if pid in extras:
                log_.train_metrics[pid] = extras[pid]
            values: dict[str, int | float | list[int] | list[float]] = {
                keys.NUM_EXAMPLES: size,
                keys.AGGREGATION_WEIGHT: float(weight),
            }
            if with_loss:
                values[keys.TRAIN_LOSS] = log_.train_loss[pid]
            values.update((k, v) for k, v in extras.get(pid, {}).items() if k in shared)
            # only the contract goes on: records a client added are ignored, not fatal
            reply.content = RecordDict(
                {
                    keys.ARRAYS: reply.content.array_records[keys.ARRAYS],
                    keys.METRICS: MetricRecord(values),
                }
            )
        compensation = float(self.cfg["rate-compensation"])
        if compensation > 0 and self._sent is not None:
            for reply in accepted:
                pid = self.clients[reply.metadata.src_node_id].partition_id
                factor = self._noise_sent.get(pid, 1.0) ** compensation
                if factor != 1.0:
                    record = reply.content.array_records[keys.ARRAYS]
                    for key in list(record.keys()):
                        if key in self._sent and key not in self.node_owned_keys:
                            update = robust.normalized_update(
                                self._sent[key].numpy(), record[key].numpy(), factor
                            )
                            record[key] = Array(update)
        if float(self.cfg.get("clip-update-norm", 0.0)) > 0 and self._sent is not None:
            self.clip_updates(log_, accepted)
        if gradients:
            self.measure(log_, gradients)
        if diagnostics:
            log_.gradient_slope, log_.gradient_profile = gradient_diagnostic(
                [diagnostics[pid] for pid in sorted(diagnostics)],  # replies arrive in any order
                with_profile=server_round == 1,
            )
        if not accepted:
            return None, None
        sent = self._sent
        owned = {
            key: [r.content.array_records[keys.ARRAYS][key].numpy() for r in accepted]
            for key in self.node_owned_keys
            if sent is not None and key in sent
        }
        if self.aggregation == "mean":
            arrays, aggregated = super().aggregate_train(server_round, accepted)
        else:
            arrays, aggregated = self.robust_aggregate(accepted)
        if arrays is not None and not all(
            np.all(np.isfinite(a)) for a in arrays.to_numpy_ndarrays()
        ):
            reason = "non-finite aggregate: the round's model is kept"
            log_.errors.append({"partition_id": -1, "reason": reason})
            return None, aggregated
        if arrays is not None and sent is not None:
            for key, tables in owned.items():
                received = sent[key].numpy()
                total = received + sum(table - received for table in tables)
                arrays[key] = Array(np.asarray(total, dtype=received.dtype))
        return arrays, aggregated

    def array_problem(self, returned: ArrayRecord) -> str | None:
        """Why a train reply's arrays cannot be aggregated (see :mod:`fedlr.fl.checks`)."""
        try:
            arrays = {key: returned[key].numpy() for key in returned}
            sent = {key: self._sent[key].numpy() for key in self._sent} if self._sent else None
        except Exception as error:  # noqa: BLE001  (bytes a client made up)
            return f"unreadable arrays ({type(error).__name__})"
        return checks.array_problem(sent, arrays)

    def clip_updates(self, log_: RoundLog, accepted: list[Message]) -> None:
        """Clip each update (returned - sent) to ``clip-update-norm`` x the round's median norm."""
        assert self._sent is not None
        sent = {k: self._sent[k].numpy() for k in self._sent if k not in self.node_owned_keys}
        norms = {}
        for reply in accepted:
            record = reply.content.array_records[keys.ARRAYS]
            squares = sum(float(np.sum((record[k].numpy() - v) ** 2)) for k, v in sent.items())
            norms[self.clients[reply.metadata.src_node_id].partition_id] = math.sqrt(squares)
        scales = checks.clip_norms(norms, float(self.cfg["clip-update-norm"]))
        for reply in accepted:
            pid = self.clients[reply.metadata.src_node_id].partition_id
            if pid not in scales:
                continue
            record = reply.content.array_records[keys.ARRAYS]
            for key, received in sent.items():
                update = (record[key].numpy() - received) * scales[pid]
                record[key] = Array(np.asarray(received + update, dtype=received.dtype))
            log_.capped.append(
                {
                    "partition_id": pid,
                    "what": "update-norm",
                    "reported": norms[pid],
                    "used": norms[pid] * scales[pid],
                }
            )

    def robust_aggregate(
        self, accepted: list[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Flower's median, trimmed mean, Krum or Multi-Krum over the checked replies.

        Median and trimmed mean are per coordinate and unweighted (as Flower's FedMedian and
        FedTrimmedAvg); Krum and Multi-Krum select replies by Flower's ``select_multikrum`` and
        average the selected ones by aggregation weight, so the rates' weights still apply.
        """
        from flwr.serverapp.strategy.fedtrimmedavg import trim_mean
        from flwr.serverapp.strategy.multikrum import select_multikrum
        from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

        valid, _ = self._check_and_log_replies(accepted, is_train=True)
        if not valid:
            return None, None
        contents = [reply.content for reply in valid]
        if self.aggregation in ("krum", "multi-krum"):
            malicious = int(self.cfg.get("krum-malicious", 1))
            keep = 1 if self.aggregation == "krum" else max(1, len(contents) - malicious)
            contents = select_multikrum(contents, malicious, keep)
            arrays = aggregate_arrayrecords(contents, self.weighted_by_key)
        else:
            arrays = ArrayRecord()
            first = contents[0].array_records[keys.ARRAYS]
            for key in first:
                stack = np.stack([c.array_records[keys.ARRAYS][key].numpy() for c in contents])
                if self.aggregation == "median":
                    value = np.median(stack, axis=0)
                else:
                    value = trim_mean(stack, float(self.cfg.get("trim-fraction", 0.2)))
                arrays[key] = Array(np.asarray(value, dtype=stack.dtype))
        return arrays, self.train_metrics_aggr_fn(contents, self.weighted_by_key)

    def measure(self, log_: RoundLog, gradients: Mapping[int, tuple[np.ndarray, int]]) -> None:
        """Estimate the round's noise scale from the clients' gradients at the received weights.

        Logs the round's unbiased ``|G|^2`` and ``tr(Sigma)`` and their ratio, and the ratio of
        their smoothed values (``B_simple``); then sets the ``noise-scale-growth`` factor for the
        next round: the smoothed ``B_simple`` over its first usable value, within
        ``[1, noise-scale-growth-max]``. The first value is taken once the average holds about
        ``1 / (1 - noise-scale-ema)`` rounds (one round's ratio is biased low and noisy), and
        the factor never shrinks: batches and clients per round only grow. A gradient whose
        length differs from the model's (the most common length) is logged and dropped; fewer
        than two clients give no estimate.
        """
        lengths = [len(g) for g, _ in gradients.values()]
        common = max(set(lengths), key=lambda n: (lengths.count(n), n)) if lengths else 0
        for pid in sorted(gradients):
            if len(gradients[pid][0]) != common:
                log_.errors.append({"partition_id": pid, "reason": "gradient of another length"})
        pids = sorted(p for p in gradients if len(gradients[p][0]) == common)
        if len(pids) < 2:
            log_.noise_scale = {"clients": len(pids), "b_simple": self.noise_scale.b_simple}
            return
        g2, trace = coupling.federated_terms(
            np.stack([gradients[p][0] for p in pids]), [gradients[p][1] for p in pids]
        )
        smoothed = self.noise_scale.update(g2, trace)
        log_.noise_scale = {
            "clients": len(pids),
            "examples": int(sum(gradients[p][1] for p in pids)),
            "g2": g2,
            "trace": trace,
            "b_simple_round": coupling.b_simple(g2, trace),
            "g2_smoothed": self.noise_scale.g2,
            "trace_smoothed": self.noise_scale.trace,
            "b_simple": smoothed,
        }
        settled = self.noise_scale.count >= math.ceil(1.0 / (1.0 - self.noise_scale.decay) - 1e-9)
        if smoothed is not None and np.isfinite(smoothed) and smoothed > 0 and settled:
            if self.first_b_simple is None:
                self.first_b_simple = float(smoothed)
            ratio = float(smoothed) / self.first_b_simple
            top = self.cfg["noise-scale-growth-max"]
            self.growth = float(np.clip(max(ratio, self.growth), 1.0, top))

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Flower's ``configure_evaluate`` with the run's round number, to this run's nodes only."""
        messages = super().configure_evaluate(
            server_round + self.round_offset, arrays, config, grid
        )
        return [m for m in messages if m.metadata.dst_node_id in self.clients]

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Keep each client's accuracy, loss and other metrics, then aggregate with ``super()``.

        Metrics beyond accuracy and loss are checked by
        :func:`fedlr.fl.client_metrics.evaluate_metrics`; what it drops is logged in the round's
        errors. ``super()`` takes the unweighted mean of accuracy and loss.
        """
        server_round += self.round_offset
        log_ = self.rounds.setdefault(server_round, RoundLog())
        accepted = []
        outcomes: dict[int, tuple[list[int], list[int]]] = {}  # partition -> (degree, correct)
        for reply in replies:
            if reply.has_error():
                continue
            node = self.clients.get(reply.metadata.src_node_id)
            metrics = reply.content.metric_records.get(keys.METRICS)
            if node is None or metrics is None:
                pid = node.partition_id if node else -1
                log_.errors.append({"partition_id": pid, "reason": "unknown node or no metrics"})
                continue
            count = _scalar(metrics.get(keys.NUM_EXAMPLES))
            if self.open and not (np.isfinite(count) and count >= 1):
                reason = f"num-examples {metrics.get(keys.NUM_EXAMPLES)!r} is not a number >= 1"
                log_.errors.append({"partition_id": node.partition_id, "reason": reason})
                continue
            accepted.append(reply)
            if node is not None:
                loss = _scalar(metrics.get(keys.EVAL_LOSS))
                if np.isfinite(loss) and loss >= 0.0:
                    log_.eval_loss[node.partition_id] = loss
                elif np.isfinite(loss):  # a cross-entropy is never negative
                    reason = f"invalid eval-loss {loss!r}"
                    log_.errors.append({"partition_id": node.partition_id, "reason": reason})
                extras, dropped = evaluate_metrics(metrics)
                if extras:
                    log_.metrics[node.partition_id] = extras
                if dropped is not None:
                    log_.errors.append({"partition_id": node.partition_id, "reason": dropped})
                accuracy = _scalar(metrics.get(keys.ACCURACY))
                if 0.0 <= accuracy <= 1.0:
                    log_.accuracy[node.partition_id] = accuracy
                elif self.open and keys.ACCURACY not in metrics:
                    pass  # a user's app need not report accuracy
                else:  # NaN, a list, or out of range: logged, never averaged into the fairness
                    reason = f"invalid accuracy {metrics.get(keys.ACCURACY)!r}"
                    log_.errors.append({"partition_id": node.partition_id, "reason": reason})
            if self.stream != "none" and node is not None:
                tasks = _task_lists(metrics, keys.TASK_ACCURACY, self.cfg["num-tasks"])
                if tasks is not None:
                    log_.task_accuracy[node.partition_id], log_.task_examples[node.partition_id] = (
                        tasks
                    )
            if self.graph:
                degrees = _int_list(metrics.get(keys.TEST_DEGREE))
                correct = _int_list(metrics.get(keys.TEST_CORRECT))
                if degrees is not None and correct is not None and len(degrees) == len(correct):
                    outcomes[node.partition_id] = (degrees, correct)
            # The weighting key is shared with training; evaluation weights are example counts.
            count = _scalar(metrics.get(keys.NUM_EXAMPLES))
            cap = float(self.example_cap) if self.example_cap or not self.open else count
            metrics[keys.AGGREGATION_WEIGHT] = min(count, cap)
            reply.content = RecordDict({keys.METRICS: metrics})  # records beyond it are ignored
        if outcomes:
            test_degree = [d for pid in sorted(outcomes) for d in outcomes[pid][0]]
            test_correct = [c for pid in sorted(outcomes) for c in outcomes[pid][1]]
            log_.degree_fairness = degree_bucket_fairness(test_correct, test_degree)
            log_.degree_fairness["accuracy"] = float(np.mean(test_correct))
            log_.degree_fairness["nodes"] = len(test_correct)
        accepted.sort(key=lambda r: self.clients[r.metadata.src_node_id].partition_id)
        # Flower refuses replies whose MetricRecords differ in keys (and ends the run): keys that
        # only some clients send (a task's own metric) are recorded above, then left out here.
        records = [r.content.metric_records[keys.METRICS] for r in accepted]
        common = set.intersection(*(set(m) for m in records)) if records else set()
        for record in records:
            for key in [k for k in record if k not in common]:
                del record[key]
        return super().aggregate_evaluate(server_round, accepted)

    def summary(self) -> None:
        """Flower's summary, plus the rate source."""
        log.info(
            "fedlr rates: source=%s weight_by_noise=%s", self.rate_source, self.weight_by_noise
        )
        super().summary()


class NoiseAdaptiveFedAvg(PerClientRates, FedAvg):
    """Flower's FedAvg with per-client rates inverse to estimated (or true) noise.

    Examples
    --------
    In your own ServerApp (your ClientApp reads ``msg.content["config"]["lr"]`` and replies
    ``num-examples`` and ``noise-estimate``, see :func:`fedlr.client.estimate_noise`):

    >>> strategy = NoiseAdaptiveFedAvg(lr=0.1, fraction_evaluate=0.0)
    >>> strategy.cfg["lr"], strategy.rate_source, strategy.cfg["warmup-rounds"]
    (0.1, 'estimate', 2)
    """


class NoiseAdaptiveFedProx(PerClientRates, FedProx):
    """Flower's FedProx (server adds ``proximal-mu``) with fedlr's per-client rates."""


class NoiseAdaptiveQFedAvg(PerClientRates, QFedAvg):
    """Flower's q-FedAvg with fedlr's per-client rates (replies need a finite ``train_loss``)."""

    needs_train_loss = True


class NoiseAdaptiveFedAdam(PerClientRates, FedAdam):
    """Flower's FedAdam (Reddi et al. 2021) over fedlr's per-client rates and weights."""


class NoiseAdaptiveFedYogi(PerClientRates, FedYogi):
    """Flower's FedYogi (Reddi et al. 2021) over fedlr's per-client rates and weights."""


class NoiseAdaptiveFedAvgM(PerClientRates, FedAvgM):
    """Flower's FedAvgM (Hsu et al. 2019) over fedlr's per-client rates and weights."""


def per_client(strategy: type[FedAvg]) -> type[PerClientRates]:
    """The per-client layer over any Flower ``FedAvg``-family strategy class.

    Examples
    --------
    >>> from flwr.serverapp.strategy import FedAdagrad
    >>> cls = per_client(FedAdagrad)
    >>> cls.__name__, issubclass(cls, FedAdagrad)
    ('NoiseAdaptiveFedAdagrad', True)
    """
    if not (isinstance(strategy, type) and issubclass(strategy, FedAvg)):
        raise TypeError(f"per_client: expected a Flower FedAvg-family class, got {strategy!r}")
    if issubclass(strategy, PerClientRates):
        return strategy
    name = f"NoiseAdaptive{strategy.__name__}"
    doc = f"Flower's {strategy.__name__} with fedlr's per-client rates and weights."
    return type(name, (PerClientRates, strategy), {"__doc__": doc, "__module__": __name__})


class FedCorrProx(NoiseAdaptiveFedProx):
    """FedCorr's adaptive proximal term (Xu et al., CVPR 2022) as a peer, at uniform rates.

    Client k's proximal mu is ``fedcorr-beta * sigma_k / max_j sigma_j``.
    FedCorr scales an (un-squared) proximal term by each client's estimated noisy fraction, its
    closest analogue to a per-client rate. fedlr's estimates are levels, not fractions, so they
    are divided by the largest one; fedlr's proximal term is FedProx's squared one. During
    ``warmup-rounds`` every client gets ``fedprox-mu``.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.uses_estimates = True

    def client_settings(self, pid: int, server_round: int) -> dict[str, float]:
        """``proximal-mu`` for client ``pid`` this round."""
        noise = self.noise_for_rule()
        if server_round <= self.cfg["warmup-rounds"] or pid not in noise:
            return {}
        top = max(noise.values())
        share = noise[pid] / top if top > 0 else 0.0
        return {keys.PROXIMAL_MU: float(self.cfg["fedcorr-beta"]) * share}


def build_strategy(name: str, cfg: Mapping[str, Any], clients: list[ClientInfo]) -> PerClientRates:
    """The strategy called ``name`` (``RULE[+MODIFIER...]``) in the config's ``strategies``."""
    rule, _ = parse_strategy(name)
    cfg = strategy_config(name, cfg)
    common: dict[str, Any] = {"cfg": cfg, "clients": clients, "rate_source": "uniform"}
    strategy: PerClientRates
    if rule == "fedavg":
        strategy = NoiseAdaptiveFedAvg(**common, weight_by_noise=False)
    elif rule == "inverse-noise-weights":
        strategy = NoiseAdaptiveFedAvg(**common, weight_by_noise=True)
    elif rule == "noise-adaptive":
        strategy = NoiseAdaptiveFedAvg(
            **{**common, "rate_source": "estimate"},
            weight_by_noise=cfg["noise-weighted-aggregation"],
        )
    elif rule == "oracle-noise-rates":
        strategy = NoiseAdaptiveFedAvg(**{**common, "rate_source": "oracle"}, weight_by_noise=False)
    elif rule == "fedprox":
        strategy = NoiseAdaptiveFedProx(
            **common, weight_by_noise=False, proximal_mu=cfg["fedprox-mu"]
        )
    elif rule == "fedcorr-prox":
        strategy = FedCorrProx(**common, weight_by_noise=False, proximal_mu=cfg["fedprox-mu"])
    elif rule == "qfedavg":
        strategy = NoiseAdaptiveQFedAvg(
            **common,
            weight_by_noise=False,
            client_learning_rate=cfg["lr"],
            q=cfg["qfedavg-q"],
            train_loss_key=keys.TRAIN_LOSS,
        )
    else:
        raise ValueError(f"strategies: unknown strategy {name!r}")
    strategy.degree_rule = uses_degree(name)
    strategy.coupled = uses_modifier(name, "coupled")
    strategy.grow_batch = uses_modifier(name, "grow-batch")
    strategy.schedule_name = schedule_of(name)
    strategy.replay = uses_modifier(name, "replay")
    return strategy
