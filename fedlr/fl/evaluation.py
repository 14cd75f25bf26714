"""Federated evaluation of a per-client strategy: every client's metrics, checked and kept.

:class:`Evaluation` is the part of :class:`fedlr.fl.client_rates.PerClientRates` that overrides
Flower's ``configure_evaluate`` and ``aggregate_evaluate``; the round observers read each
accepted reply (accuracy per task, per test node). ``evaluate_tasks`` evaluates every task of a
continual stream outside the round loop.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedlr.fl import keys
from fedlr.fl.client_metrics import evaluate_metrics
from fedlr.fl.nodes import ClientInfo, scalar
from fedlr.fl.observers import Continual, Observer
from fedlr.fl.roundlog import RoundLog


class Evaluation(FedAvg):
    """Mixin over a Flower strategy: fedlr's checks and records of evaluate replies."""

    cfg: dict[str, Any]
    clients: dict[int, ClientInfo]
    by_partition: dict[int, ClientInfo]
    rounds: dict[int, RoundLog]
    round_offset: int
    example_cap: int
    open: bool
    observers: list[Observer]
    continual: Continual

    def evaluate_tasks(
        self,
        grid: Grid,
        arrays: ArrayRecord,
        snapshots: list[ArrayRecord] | None = None,
    ) -> dict[int, tuple[list[float], list[int], list[float] | None]]:
        """Every client's accuracy per task, outside the round loop (:class:`Continual`)."""
        return self.continual.evaluate_tasks(grid, arrays, self.by_partition, self.cfg, snapshots)

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
            kept: dict[str, Any] = {}  # what goes on to the aggregate: checked values only
            if node is not None:
                loss = scalar(metrics.get(keys.EVAL_LOSS))
                if np.isfinite(loss) and loss >= 0.0:
                    log_.eval_loss[node.partition_id] = loss
                    kept[keys.EVAL_LOSS] = loss
                elif np.isfinite(loss):  # a cross-entropy is never negative
                    reason = f"invalid eval-loss {loss!r}"
                    log_.errors.append({"partition_id": node.partition_id, "reason": reason})
                extras, dropped = evaluate_metrics(metrics)
                if extras:
                    log_.metrics[node.partition_id] = extras
                    kept.update(extras)
                if dropped is not None:
                    log_.errors.append({"partition_id": node.partition_id, "reason": dropped})
                accuracy = scalar(metrics.get(keys.ACCURACY))
                if 0.0 <= accuracy <= 1.0:
                    log_.accuracy[node.partition_id] = accuracy
                    kept[keys.ACCURACY] = accuracy
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
            weight = min(count, cap)
            kept.update({keys.NUM_EXAMPLES: weight, keys.AGGREGATION_WEIGHT: weight})
            # only the checked values go on; records beyond the metrics are ignored
            reply.content = RecordDict({keys.METRICS: MetricRecord(kept)})
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
