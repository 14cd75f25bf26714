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
from fedlr.fl.nodes import ClientInfo, scalar, shown
from fedlr.fl.observers import Continual, Observer
from fedlr.fl.roundlog import RoundLog, record_error


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

        A reply that carries an error or fails the checks (:meth:`_dropped`) is left out; what
        is dropped, whole or in part, is logged in the round's errors with one warning line
        (:func:`fedlr.fl.roundlog.record_error`). ``super()`` takes the unweighted mean of
        accuracy and loss.
        """
        server_round += self.round_offset
        log_ = self.rounds.setdefault(server_round, RoundLog())
        accepted = []
        for reply in replies:
            node_id = reply.metadata.src_node_id
            node = self.clients.get(node_id)
            reason = self._dropped(reply, node)
            if reason is not None:
                pid = node.partition_id if node else -1
                record_error(log_, node_id, pid, reason, "evaluate reply dropped")
                continue
            assert node is not None  # _dropped refuses a node this strategy does not know
            accepted.append(reply)
            metrics = reply.content.metric_records[keys.METRICS]
            kept = self._checked_values(node, metrics, log_)
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

    def _dropped(self, reply: Message, node: ClientInfo | None) -> str | None:
        """Why an evaluate reply is left out whole; None when it is read.

        A reply carrying an error, from a node this strategy does not know, without metrics,
        or (library use, where the count is the reply's weight) without a count >= 1.
        """
        if reply.has_error():
            return str(reply.error.reason)
        metrics = reply.content.metric_records.get(keys.METRICS)
        if node is None or metrics is None:
            return "unknown node or no metrics"
        count = metrics.get(keys.NUM_EXAMPLES)
        number = scalar(count)
        if self.open and not (np.isfinite(number) and number >= 1):
            return f"num-examples {shown(count)} is not a number >= 1"
        return None

    def _checked_values(
        self, node: ClientInfo, metrics: MetricRecord, log_: RoundLog
    ) -> dict[str, Any]:
        """A read reply's loss, accuracy and other metrics that pass the checks, recorded.

        Metrics beyond accuracy and loss are checked by
        :func:`fedlr.fl.client_metrics.evaluate_metrics`; each refused value is recorded in the
        round's errors, and the rest of the reply is still used.
        """
        pid = node.partition_id
        kept: dict[str, Any] = {}  # what goes on to the aggregate: checked values only
        loss = scalar(metrics.get(keys.EVAL_LOSS))
        if np.isfinite(loss) and loss >= 0.0:
            log_.eval_loss[pid] = loss
            kept[keys.EVAL_LOSS] = loss
        elif np.isfinite(loss):  # a cross-entropy is never negative
            record_error(log_, node.node_id, pid, f"invalid eval-loss {loss!r}", "evaluate reply")
        extras, dropped = evaluate_metrics(metrics)
        if extras:
            log_.metrics[pid] = extras
            kept.update(extras)
        if dropped is not None:
            record_error(log_, node.node_id, pid, dropped, "evaluate reply")
        accuracy = scalar(metrics.get(keys.ACCURACY))
        if 0.0 <= accuracy <= 1.0:
            log_.accuracy[pid] = accuracy
            kept[keys.ACCURACY] = accuracy
        elif not (self.open and keys.ACCURACY not in metrics):  # a user's app need not send it
            # NaN, a list, or out of range: logged, never averaged into the fairness
            reason = f"invalid accuracy {shown(metrics.get(keys.ACCURACY))}"
            record_error(log_, node.node_id, pid, reason, "evaluate reply")
        return kept
