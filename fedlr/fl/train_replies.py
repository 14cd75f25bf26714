"""Reading a round's train replies: each checked, then its count, loss, estimate and metrics.

:class:`TrainReplies` is a part of :class:`fedlr.fl.client_rates.PerClientRates`: it decides
which replies are aggregated (a bad one is dropped and logged under the round's ``errors``,
never fatal), lets the round observers read each accepted one, and keeps what the strategy
weighs them by. The weighing and aggregation stay in ``aggregate_train``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord

from fedlr.fl import checks, keys
from fedlr.fl.client_metrics import evaluate_metrics
from fedlr.fl.nodes import ClientInfo, scalar, shown
from fedlr.fl.observers import Observer
from fedlr.fl.roundlog import RoundLog, record_error
from fedlr.fl.rate_plan import RatePlanning

log = logging.getLogger("fedlr")


@dataclass
class ReadReplies:
    """What a round's train replies said, once checked."""

    accepted: list[Message] = field(default_factory=list)
    raw: dict[int, float] = field(default_factory=dict)  # valid noise estimates
    examples: dict[int, int] = field(default_factory=dict)  # continual: trained on this round
    reported: dict[int, int] = field(default_factory=dict)  # library use: each reply's count
    extras: dict[int, dict[str, float]] = field(default_factory=dict)  # a user's train metrics


class TrainReplies(RatePlanning):
    """Checks and reads train replies (a part of ``PerClientRates``, over its rate planning)."""

    # besides RatePlanning's (cfg, stream, noise, ...): what PerClientRates sets
    clients: dict[int, ClientInfo]
    open: bool
    replay: bool
    needs_train_loss: bool
    uses_estimates: bool
    observers: list[Observer]
    arrayrecord_key: str
    _sent: ArrayRecord | None

    def read_train_replies(self, log_: RoundLog, replies: Iterable[Message]) -> ReadReplies:
        """Check each reply and read what the strategy weighs it by; log the dropped ones."""
        read = ReadReplies()
        accepted, raw, examples, reported, extras = (
            read.accepted,
            read.raw,
            read.examples,
            read.reported,
            read.extras,
        )
        for reply in replies:
            node_id = reply.metadata.src_node_id
            node = self.clients.get(node_id)
            pid = node.partition_id if node else -1
            reason = self._dropped_train(reply, node)
            if reason is not None:
                record_error(log_, node_id, pid, reason, "train reply dropped")
                continue
            assert node is not None  # _dropped_train refuses a node this strategy does not know
            metrics = reply.content.metric_records.get(keys.METRICS, MetricRecord())
            if self.open:  # its weight is what it reports, bounded below (learn_examples)
                reported[pid] = int(scalar(metrics[keys.NUM_EXAMPLES]))
            if self.stream != "none":
                # A continual client trains on its current task (+ replay): that is its weight,
                # at most all its examples plus the replay sample, whatever it reports.
                trained = scalar(metrics.get(keys.NUM_EXAMPLES))
                most = self.size(node) + int(self.cfg["replay-size"]) * self.replay
                examples[pid] = int(min(trained, most)) if np.isfinite(trained) else 0
                if examples[pid] <= 0:
                    reason = "no examples of its current task"
                    record_error(log_, node_id, pid, reason, "train reply dropped")
                    continue
            train_loss = scalar(metrics.get(keys.TRAIN_LOSS))
            if self.needs_train_loss and not (np.isfinite(train_loss) and train_loss >= 0):
                # QFedAvg scales the update by loss^q: one NaN (or a negative loss's NaN power)
                # would make every weight NaN.
                reason = "missing or non-finite loss"
                record_error(log_, node_id, pid, reason, "train reply dropped")
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
                usable, _ = self.noise.check({pid: value})
                raw.update(usable)
                if not usable:
                    log_.invalid_estimates.append({"partition_id": pid, "value": shown(value)})
                    if not was_invalid:  # once, not every round it stays bad
                        log.warning(
                            "fedlr: partition %d: noise estimate %s missing or invalid; "
                            "uniform rate until a valid one arrives",
                            pid,
                            shown(value),
                        )
                log_.noise_estimate[pid] = raw.get(pid)
            kept, dropped = evaluate_metrics(metrics, keys.TRAIN_KEYS)
            if kept:
                extras[pid] = kept
            if dropped is not None:
                record_error(log_, node_id, pid, dropped, "train reply")
            accepted.append(reply)
        return read

    def _dropped_train(self, reply: Message, node: ClientInfo | None) -> str | None:
        """Why a train reply is left out before anything is read from it; None when it is read.

        A reply carrying an error, from a node this strategy does not know, without arrays or
        with arrays unlike those sent (:meth:`array_problem`), or (library use, where the count
        is the reply's weight) without an integer count >= 1.
        """
        if reply.has_error():
            return str(reply.error.reason)
        arrays = reply.content.array_records.get(self.arrayrecord_key)
        if node is None or arrays is None:
            return "unknown node or no arrays"
        problem = self.array_problem(arrays)
        if problem is not None:
            return problem
        count = reply.content.metric_records.get(keys.METRICS, MetricRecord()).get(
            keys.NUM_EXAMPLES
        )
        number = scalar(count)
        if self.open and not (np.isfinite(number) and number >= 1 and number.is_integer()):
            return f"num-examples {shown(count)} is not an integer >= 1"
        return None

    def array_problem(self, returned: ArrayRecord) -> str | None:
        """Why a train reply's arrays cannot be aggregated (see :mod:`fedlr.fl.checks`)."""
        try:
            arrays = {key: returned[key].numpy() for key in returned}
            sent = {key: self._sent[key].numpy() for key in self._sent} if self._sent else None
        except Exception as error:  # noqa: BLE001  (bytes a client made up)
            return f"unreadable arrays ({type(error).__name__})"
        return checks.array_problem(sent, arrays)
