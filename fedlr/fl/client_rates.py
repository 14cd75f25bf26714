"""The per-client layer over any Flower ``FedAvg``-family strategy: :class:`PerClientRates`.

It overrides the minimum, as Flower's own ``fedprox.py`` does:

* ``configure_train``: ``super()`` builds the round's content (FedProx adds ``proximal-mu``,
  QFedAvg keeps the current weights); we then sample clients by partition id with a seeded RNG and
  send each sampled node its own ConfigRecord holding its own ``lr``.
* ``aggregate_train``: checks each reply (:mod:`fedlr.fl.checks`), reads its noise estimate,
  lets the round observers read it, sets its aggregation weight, then hands the replies to
  ``super()``. The round loop stays Flower's.
* ``aggregate_evaluate``: keeps every client's accuracy, loss and other metrics (bounded and
  checked) for the run log.
* ``start(..., first_round=r)``: Flower's own loop, continued from a checkpoint; every hook adds
  the rounds already done, so a resumed run sends, seeds and logs the same round numbers.

A client's rate is the product of the rate factors of :mod:`fedlr.rates.factors`, chained in
this order: ``lr[k, r] = base * schedule[k, r] * noise[k, r] * coupling[k, r]``. ``schedule`` is
the strategy's round-indexed schedule or the step decay of ``lr-decay-rounds``
(:func:`fedlr.rates.coupling.decay_or_grow`; with ``+grow-batch`` the batch grows instead, at the
same ``lr / B``); ``noise`` follows :func:`fedlr.rates.noise.inverse_noise_rule` once estimates
exist (uniform during the warm-up rounds), bounded by ``[rate-low, rate-high]``, and so is a
client's aggregation weight relative to its example count, whatever it reports; ``coupling``
(``+coupled``) moves the base rate, tuned for batch ``coupling-reference``, to each client's own
batch size (:func:`fedlr.rates.coupling.coupling_factors`); with Adam the square-root rule also
moves Adam's betas and epsilon (Malladi et al. 2022).

Features that only watch a round are observers (:mod:`fedlr.fl.observers`): the gradient noise
scale (``measure-noise-scale``; ``noise-scale-growth`` grows local batches or clients per round
with it, and ``coupling-rule = optimal`` reads it as ``B_noise``), graph clients' degree
diagnostics, and continual streams' accuracy per task.

On graphs, rows of a node-embedding table belong to the one client holding the node, so
``embedding.weight`` is aggregated as the received table plus every client's change (each client
changes only its own rows), not averaged: an average would shrink each row's step by its owner's
weight.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, replace
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
from flwr.serverapp.strategy import FedAvg, Result

from fedlr.config import is_graph, split_list
from fedlr.fl import checks, keys
from fedlr.fl.client_metrics import evaluate_metrics
from fedlr.fl.nodes import ClientInfo, query_nodes, scalar
from fedlr.fl.observers import Continual, DegreeDiagnostics, NoiseScale, Observer
from fedlr.fl.roundlog import PER_CLIENT_LOGS, RoundLog
from fedlr.rates import coupling, robust, schedules
from fedlr.rates.factors import (
    Chain,
    ClientStats,
    ConstantFactor,
    CouplingFactor,
    NoiseFactor,
    ScheduleFactor,
    chain,
)
from fedlr.rates.noise import NoiseEMA

log = logging.getLogger("fedlr")


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
        values = [scalar(m[key]) for m in metrics if key in m]
        if values:
            out[key] = float(np.mean(values))
    skip = {*_OWN_MEANS, *keys.TRAIN_KEYS, *keys.EVALUATE_KEYS}
    weights = np.array([scalar(m.get(keys.NUM_EXAMPLES)) for m in metrics])
    if metrics and np.all(np.isfinite(weights)) and weights.sum() > 0:
        for key in sorted(set.intersection(*(set(m) for m in metrics)) - skip):
            column = np.array([scalar(m[key]) for m in metrics])
            if np.all(np.isfinite(column)):
                out[key] = float(np.dot(weights, column) / weights.sum())
    return MetricRecord(out)


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
    schedule, coupled, grow_batch, replay, degree_rule
        A fedlr strategy's modifiers (``RULE+cosine+coupled``, :func:`fedlr.config.parse_strategy`):
        the round-indexed schedule, batch-size coupling, batch growth instead of rate decay,
        replay of earlier tasks, the degree rule on graphs.
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
        schedule: str = "constant",
        coupled: bool = False,
        grow_batch: bool = False,
        replay: bool = False,
        degree_rule: bool = False,
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
        self.rounds: dict[int, RoundLog] = {}
        self.round_offset = 0  # rounds done before this start() (a resumed run)
        self.strangers: set[int] = set()  # connected nodes that hold no partition of this run
        self.waiting: dict[int, ClientInfo] = {}  # new nodes whose partition's old node is alive
        self.graph = is_graph(cfg)
        self._sent: ArrayRecord | None = None  # the arrays of this round's train messages
        self._noise_sent: dict[int, float] = {}  # this round's noise factor per partition id
        # the no-harm guard or the in-site response is on: the noisy group is found each round
        # (for strategies whose rates or weights follow the noise)
        self.guarded = (cfg["rate-guard"] != "none" or cfg["noise-response"] != "none") and (
            rate_source != "uniform" or weight_by_noise
        )
        # modifiers
        self.schedule_name = schedule
        self.coupled = coupled
        self.grow_batch = grow_batch
        self.replay = replay
        self.degree_rule = degree_rule
        # the batch a client actually trains on: its own, at most its example count
        # (tabular tasks; graphs train full-batch)
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
        self._kept_betas: set[int] = set()  # clients past Malladi's range (warned once)
        self.stream = str(cfg.get("stream", "none"))
        # what watches a round: each owns its fields of the round log
        self.noise_scale_observer = NoiseScale(
            enabled=self.measure_noise_scale,
            decay=cfg["noise-scale-ema"],
            growth_max=cfg["noise-scale-growth-max"],
        )
        self.continual = Continual(stream=self.stream != "none", num_tasks=cfg["num-tasks"])
        self.observers: list[Observer] = [self.continual, self.noise_scale_observer]
        if self.graph:
            self.observers.append(DegreeDiagnostics())
        # what makes a rate: lr = base * schedule * noise * coupling
        self.noise = NoiseFactor(
            source=rate_source,
            power=cfg["rate-power"],
            low=cfg["rate-low"],
            high=cfg["rate-high"],
            floor=cfg["noise-floor"],
            warmup=cfg["warmup-rounds"],
            ema_decay=cfg["ema-decay"],
            guard=cfg["rate-guard"],
            guard_ratio=cfg["rate-guard-ratio"],
        )
        self.rates = self.rate_chain()

    def rate_chain(self) -> Chain:
        """The rate factors of this strategy, in the order they multiply."""
        cfg = self.cfg
        schedule = ScheduleFactor(
            self.schedule_name,
            int(cfg["num-server-rounds"]),
            params=lambda starts: schedule_params(self.schedule_name, self.cfg, starts),
            milestones=self.milestones,
            decay_factor=cfg["lr-decay-factor"],
            grow_batch=self.grow_batch,
            growth=lambda: (
                self.noise_scale_observer.growth
                if self.cfg["noise-scale-growth"] == "batch"
                else 1.0
            ),
        )
        couple: ConstantFactor | CouplingFactor = ConstantFactor("coupling")
        if self.coupled and not self.graph:
            couple = CouplingFactor(
                rule=self.coupling_rule,
                optimizer=cfg["optimizer"],
                reference=self.reference_batch,
                low=cfg["coupling-low"],
                high=cfg["coupling-high"],
                warmup=int(cfg["coupling-warmup-rounds"]),
                b_noise=lambda: self.noise_scale_observer.b_simple,
            )
        return chain(schedule, self.noise, couple)

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
        schedule = self.rates["schedule"]
        assert isinstance(schedule, ScheduleFactor)
        return schedule.multipliers(starts)

    # -- state (checkpoint and resume) -------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything this strategy carries from round to round, as plain data."""
        return {
            **self.noise.state_dict(),
            "rounds": {r: asdict(log_) for r, log_ in self.rounds.items()},
            **self.noise_scale_observer.state_dict(),
            **self.continual.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (the rule's parameters come from the config, not here)."""
        self.noise.load_state_dict(state)
        self.rounds = {int(r): RoundLog(**log_) for r, log_ in state["rounds"].items()}
        for log_ in self.rounds.values():  # partition ids as int (a JSON copy has strings)
            for name in PER_CLIENT_LOGS:
                setattr(log_, name, {int(k): v for k, v in getattr(log_, name).items()})
        self.noise_scale_observer.load_state_dict(state)
        self.continual.load_state_dict(state)

    # what the observers and factors keep, under the names the recorder and server app read
    @property
    def ema(self) -> NoiseEMA:
        """The smoothed noise estimates (the noise factor's)."""
        return self.noise.ema

    @property
    def invalid_last(self) -> set[int]:
        """Partition ids whose last estimate was invalid (the noise factor's)."""
        return self.noise.invalid

    @property
    def growth(self) -> float:
        """The ``noise-scale-growth`` factor for the next round (the noise-scale observer's)."""
        return self.noise_scale_observer.growth

    @property
    def noise_scale(self) -> coupling.NoiseScaleEMA:
        """The smoothed noise-scale terms (the noise-scale observer's)."""
        return self.noise_scale_observer.noise_scale

    @property
    def first_b_simple(self) -> float | None:
        """The first settled noise scale (the noise-scale observer's)."""
        return self.noise_scale_observer.first_b_simple

    @property
    def task_baseline(self) -> dict[int, list[float]]:
        """Accuracy per task of the untrained model, per partition id (continual streams)."""
        return self.continual.task_baseline

    @task_baseline.setter
    def task_baseline(self, value: dict[int, list[float]]) -> None:
        self.continual.task_baseline = value

    @property
    def task_ensemble(self) -> dict[int, list[float]]:
        """Accuracy per task of the snapshot ensemble, per partition id (continual streams)."""
        return self.continual.task_ensemble

    @task_ensemble.setter
    def task_ensemble(self, value: dict[int, list[float]]) -> None:
        self.continual.task_ensemble = value

    @property
    def ensemble_examples(self) -> dict[int, list[int]]:
        """Test examples per task behind :attr:`task_ensemble`, per partition id."""
        return self.continual.ensemble_examples

    @ensemble_examples.setter
    def ensemble_examples(self, value: dict[int, list[int]]) -> None:
        self.continual.ensemble_examples = value

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
            self.rates = self.rate_chain()

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
        """Every client's accuracy per task, outside the round loop (:class:`Continual`)."""
        return self.continual.evaluate_tasks(grid, arrays, self.by_partition, self.cfg, snapshots)

    # -- rates -------------------------------------------------------------------------------
    def size(self, client: ClientInfo) -> int:
        """The examples ``client`` counts for: what it reported, at most ``example_cap``."""
        return min(client.num_examples, self.example_cap)

    def client_stats(self) -> dict[int, ClientStats]:
        """What the rate factors may know of each client, by partition id."""
        starts = self.task_starts() if self.schedule_name == "phases" else None
        return {
            pid: ClientStats(
                size=self.size(client),
                batch=self.batch[pid],
                num_examples=client.num_examples,
                noise_true=client.noise_true,
                task_starts=tuple(int(v) for v in starts[pid]) if starts is not None else (),
            )
            for pid, client in self.by_partition.items()
        }

    def noise_for_rule(self) -> dict[int, float]:
        """Noise per partition id that the rule may use now (oracle truth or smoothed estimates)."""
        return self.noise.noise(self.client_stats())

    def noisy_partitions(self) -> set[int]:
        """Partition ids whose noise stands apart (:func:`fedlr.rates.robust.noisy_group`)."""
        return self.noise.noisy_group(self.client_stats())

    def factors(self) -> dict[int, float]:
        """Noise factor per partition id, warm-up aside (:meth:`NoiseFactor.factors`)."""
        return self.noise.factors(self.client_stats())

    def noise_factors(self, server_round: int) -> dict[int, float]:
        """The noise-inverse factor per partition id this round (1 when uniform or warming up)."""
        return {
            p: step.rate for p, step in self.noise.plan(server_round, self.client_stats()).items()
        }

    def coupling_factors(self, server_round: int) -> dict[int, float]:
        """The batch-size coupling factor per partition id (``+coupled``; 1 otherwise)."""
        planned = self.rates["coupling"].plan(server_round, self.client_stats())
        return {pid: step.rate for pid, step in planned.items()}

    def schedule(self, server_round: int) -> dict[int, tuple[float, int]]:
        """``(rate multiplier, local batch)`` per partition id this round (the schedule factor)."""
        planned = self.rates["schedule"].plan(server_round, self.client_stats())
        return {pid: (step.rate, int(step.batch or 0)) for pid, step in planned.items()}

    def round_plan(self, server_round: int) -> dict[int, tuple[float, int, float, float]]:
        """Per partition id: ``(lr, batch, coupling factor, schedule factor)`` this round.

        ``lr = base * schedule * noise * coupling`` (:attr:`rates`), each factor computed once.
        """
        plans = self.rates.plan(server_round, self.client_stats(), base=self.base_lr)
        return {
            pid: (plan.lr, plan.batch, plan.factors["coupling"], plan.factors["schedule"])
            for pid, plan in plans.items()
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
                count = scalar(metrics.get(keys.NUM_EXAMPLES))
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
                trained = scalar(metrics.get(keys.NUM_EXAMPLES))
                most = self.size(node) + int(self.cfg["replay-size"]) * self.replay
                examples[pid] = int(min(trained, most)) if np.isfinite(trained) else 0
                if examples[pid] <= 0:
                    reason = "no examples of its current task"
                    log_.errors.append({"partition_id": pid, "reason": reason})
                    continue
            train_loss = scalar(metrics.get(keys.TRAIN_LOSS))
            if self.needs_train_loss and not np.isfinite(train_loss):
                # QFedAvg scales the update by the loss: one NaN would make every weight NaN.
                log_.errors.append({"partition_id": pid, "reason": "missing or non-finite loss"})
                continue
            log_.train_loss[pid] = train_loss
            steps = scalar(metrics.get(keys.STEPS))
            if np.isfinite(steps) and steps >= 0:
                log_.steps[pid] = int(steps)
            for observer in self.observers:  # the task trained on, gradients, degree reports
                observer.train_reply(pid, reply, metrics, log_)
            if self.uses_estimates:
                value = metrics.get(keys.NOISE_ESTIMATE)
                was_invalid = pid in self.noise.invalid
                valid, _ = self.noise.check({pid: value})
                raw.update(valid)
                if not valid:
                    log_.invalid_estimates.append({"partition_id": pid, "value": repr(value)})
                    if not was_invalid:  # once, not every round it stays bad
                        log.warning(
                            "fedlr: partition %d: noise estimate %r missing or invalid; "
                            "uniform rate until a valid one arrives",
                            pid,
                            value,
                        )
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
        log_.noise_smoothed.update(self.noise.update(server_round, raw))
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
        for observer in self.observers:  # the noise scale, degree slopes
            observer.after_train(server_round, log_)
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
        for reply in replies:
            if reply.has_error():
                continue
            node = self.clients.get(reply.metadata.src_node_id)
            metrics = reply.content.metric_records.get(keys.METRICS)
            if node is None or metrics is None:
                pid = node.partition_id if node else -1
                log_.errors.append({"partition_id": pid, "reason": "unknown node or no metrics"})
                continue
            count = scalar(metrics.get(keys.NUM_EXAMPLES))
            if self.open and not (np.isfinite(count) and count >= 1):
                reason = f"num-examples {metrics.get(keys.NUM_EXAMPLES)!r} is not a number >= 1"
                log_.errors.append({"partition_id": node.partition_id, "reason": reason})
                continue
            accepted.append(reply)
            if node is not None:
                loss = scalar(metrics.get(keys.EVAL_LOSS))
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
                accuracy = scalar(metrics.get(keys.ACCURACY))
                if 0.0 <= accuracy <= 1.0:
                    log_.accuracy[node.partition_id] = accuracy
                elif self.open and keys.ACCURACY not in metrics:
                    pass  # a user's app need not report accuracy
                else:  # NaN, a list, or out of range: logged, never averaged into the fairness
                    reason = f"invalid accuracy {metrics.get(keys.ACCURACY)!r}"
                    log_.errors.append({"partition_id": node.partition_id, "reason": reason})
            for observer in self.observers:  # accuracy per task, per test node
                observer.evaluate_reply(node.partition_id, metrics, log_)
            # The weighting key is shared with training; evaluation weights are example counts.
            count = scalar(metrics.get(keys.NUM_EXAMPLES))
            cap = float(self.example_cap) if self.example_cap or not self.open else count
            metrics[keys.AGGREGATION_WEIGHT] = min(count, cap)
            reply.content = RecordDict({keys.METRICS: metrics})  # records beyond it are ignored
        for observer in self.observers:  # accuracy by degree quartile
            observer.after_evaluate(server_round, log_)
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
