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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from typing import Any

import numpy as np
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Result

from fedlr.analysis import json_safe
from fedlr.config import is_graph, split_list
from fedlr.fl import checks, keys
from fedlr.fl.aggregation import (
    cap_message,
    clip_updates,
    compensate,
    integer_dtypes,
    mean_metrics,
    own_rows,
    robust_aggregate,
)
from fedlr.fl.library import KNOBS, library_config
from fedlr.fl.nodes import ClientInfo
from fedlr.fl.evaluation import Evaluation
from fedlr.fl.membership import Membership
from fedlr.fl.observers import Batches, Continual, DegreeDiagnostics, NoiseScale, Observer
from fedlr.fl.roundlog import RoundLog
from fedlr.fl.train_replies import TrainReplies
from fedlr.rates import coupling
from fedlr.rates.factors import (
    NoiseFactor,
)

log = logging.getLogger("fedlr")


class PerClientRates(TrainReplies, Membership, Evaluation, FedAvg):
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
        arguments = locals()  # the knobs by name (each is a config key with dashes)
        given = {name: arguments[name] for name in KNOBS if arguments[name] is not None}
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
            train_metrics_aggr_fn=mean_metrics,
            evaluate_metrics_aggr_fn=mean_metrics,
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
            log.warning(cap_message(over, self.example_cap))
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
            logged=not self.graph,
        )
        self.continual = Continual(stream=self.stream != "none", num_tasks=cfg["num-tasks"])
        # in this order their columns follow each other in rounds.jsonl
        self.observers: list[Observer] = [self.continual, self.noise_scale_observer]
        if self.graph:
            self.observers.append(DegreeDiagnostics())
        else:
            self.observers.insert(0, Batches())
        self.own_observers: list[Observer] = []  # a run's own (``observers``), in self.observers
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

    # -- state (checkpoint and resume) -------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything this strategy carries from round to round, as strict-JSON plain data.

        A non-finite float (the NaN loss of a reply without ``train_loss``) is written as None
        (``json.dumps(state, allow_nan=False)`` works); :meth:`load_state_dict` reads it back
        as NaN where a round log holds floats (:meth:`RoundLog.from_dict`).
        """
        return json_safe(
            {
                **self.noise.state_dict(),
                "rounds": {r: asdict(log_) for r, log_ in self.rounds.items()},
                **self.noise_scale_observer.state_dict(),
                **self.continual.state_dict(),
                **(
                    {"observers": {o.name: o.state_dict() for o in self.own_observers}}
                    if self.own_observers
                    else {}
                ),
                # library use: the nodes learnt from replies, and the examples each reported
                **(
                    {"nodes": {n: c.num_examples for n, c in self.clients.items()}}
                    if self.open
                    else {}
                ),
            }
        )

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (the rule's parameters come from the config, not here)."""
        self.noise.load_state_dict(state)
        self.rounds = {int(r): RoundLog.from_dict(log_) for r, log_ in state["rounds"].items()}
        self.noise_scale_observer.load_state_dict(state)
        self.continual.load_state_dict(state)
        for observer in self.own_observers:
            observer.load_state_dict(state.get("observers", {}).get(observer.name, {}))
        if self.open and "nodes" in state:
            self.learn_nodes(int(n) for n in state["nodes"])
            self.learn_examples(
                RoundLog(), {int(n): int(c) for n, c in state["nodes"].items() if int(c) > 0}
            )

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
            self.present = connected  # a node's id is its partition id: plan over these only
        else:
            self.adopt_restarted_nodes(grid, connected)
        content = template[0].content
        # every factor planned once: the rate and each factor's share of it
        plans = self.rates.plan(server_round, self.client_stats(), base=self.base_lr)
        noisy: set[int] = set()
        if self.guarded and (
            self.rate_source == "oracle" or server_round > self.cfg["warmup-rounds"]
        ):
            noisy = self.noisy_partitions()
        select = noisy if self.cfg["noise-response"] == "small-loss" else set()
        log_ = self.rounds.setdefault(server_round, RoundLog())
        log_.sampled = self.sample(server_round, connected if self.open else None)
        log_.noisy_group = sorted(noisy)
        messages = []
        for pid in log_.sampled:
            node = self.by_partition[pid]
            if node.node_id not in connected:  # gone: recorded as missing, not waited for
                continue
            client_config = ConfigRecord(dict(content.config_records[self.configrecord_key]))
            lr, batch, factors = plans[pid]
            coupling_factor, schedule_factor = factors["coupling"], factors["schedule"]
            client_config[keys.LR] = lr
            if not self.open or select:
                client_config[keys.SELECT_CLEAN] = pid in select
            self._noise_sent[pid] = factors["noise"]
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
                            self.arrayrecord_key: content.array_records[self.arrayrecord_key],
                            self.configrecord_key: client_config,
                        }
                    ),
                    dst_node_id=node.node_id,
                    message_type=MessageType.TRAIN,
                )
            )
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Check replies and estimates, set aggregation weights, then aggregate with ``super()``."""
        server_round += self.round_offset
        log_ = self.rounds.setdefault(server_round, RoundLog())
        read = self.read_train_replies(log_, replies)
        accepted, raw, examples, extras = read.accepted, read.raw, read.examples, read.extras
        if read.reported:
            self.learn_examples(log_, read.reported)

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
                    self.arrayrecord_key: reply.content.array_records[self.arrayrecord_key],
                    keys.METRICS: MetricRecord(values),
                }
            )
        records = {
            self.clients[r.metadata.src_node_id].partition_id: r.content.array_records[
                self.arrayrecord_key
            ]
            for r in accepted
        }
        compensation = float(self.cfg["rate-compensation"])
        if compensation > 0 and self._sent is not None:
            compensate(self._sent, records, self._noise_sent, compensation, self.node_owned_keys)
        ratio = float(self.cfg.get("clip-update-norm", 0.0))
        if ratio > 0 and self._sent is not None:
            log_.capped.extend(clip_updates(self._sent, records, ratio, self.node_owned_keys))
        for observer in self.observers:  # the noise scale, degree slopes
            observer.after_train(server_round, log_)
        if not accepted:
            return None, None
        sent = self._sent
        owned = {
            key: [r.content.array_records[self.arrayrecord_key][key].numpy() for r in accepted]
            for key in self.node_owned_keys
            if sent is not None and key in sent
        }
        if self.aggregation == "mean":
            arrays, aggregated = super().aggregate_train(server_round, accepted)
        else:
            checked, _ = self._check_and_log_replies(accepted, is_train=True)
            if not checked:
                return None, None
            contents = [reply.content for reply in checked]
            arrays, contents = robust_aggregate(
                contents,
                self.aggregation,
                self.weighted_by_key,
                malicious=int(self.cfg.get("krum-malicious", 1)),
                trim_fraction=float(self.cfg.get("trim-fraction", 0.2)),
                arrays_key=self.arrayrecord_key,
            )
            aggregated = self.train_metrics_aggr_fn(contents, self.weighted_by_key)
        if arrays is not None and not all(
            np.all(np.isfinite(a)) for a in arrays.to_numpy_ndarrays()
        ):
            reason = "non-finite aggregate: the round's model is kept"
            log_.errors.append({"partition_id": -1, "reason": reason})
            return None, aggregated
        if arrays is not None and sent is not None:
            own_rows(arrays, sent, owned)
            integer_dtypes(arrays, sent)
        return arrays, aggregated

    def summary(self) -> None:
        """Flower's summary, plus the rate source."""
        log.info(
            "fedlr rates: source=%s weight_by_noise=%s", self.rate_source, self.weight_by_noise
        )
        super().summary()
