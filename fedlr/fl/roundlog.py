"""The round log: what happened to each client in one round (strategy and observers fill it)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("fedlr")

# RoundLog fields keyed by partition id (a JSON copy of a state has them as strings)
PER_CLIENT_LOGS = (
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
# Those of them whose values are floats, never None: in a strict-JSON state (every non-finite
# float written as None) a None there stands for NaN
FLOAT_LOGS = (
    "lr",
    "train_loss",
    "accuracy",
    "aggregation_weight",
    "coupling_factor",
    "schedule_factor",
    "eval_loss",
)


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

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> RoundLog:
        """A round log from :func:`dataclasses.asdict` of one, or from a JSON copy of that.

        Partition ids come back as int (JSON's keys are strings); in :data:`FLOAT_LOGS` a None
        (a non-finite value in a strict-JSON state) comes back as NaN.
        """
        log_ = cls(**state)
        for name in PER_CLIENT_LOGS:
            nan_for_none = name in FLOAT_LOGS
            values = getattr(log_, name).items()
            setattr(
                log_,
                name,
                {int(k): math.nan if v is None and nan_for_none else v for k, v in values},
            )
        return log_


def record_error(log_: RoundLog, node_id: int, pid: int, reason: str, what: str) -> None:
    """Keep why (part of) a reply was not used in the round's ``errors``, and log one line.

    ``pid`` is the client's key in the round log (its node id in library use, -1 for a node the
    strategy does not know); ``what`` says what happened, e.g. ``"evaluate reply dropped"``.
    """
    log_.errors.append({"partition_id": pid, "reason": reason})
    where = f"node {node_id}" if pid in (node_id, -1) else f"node {node_id} (partition {pid})"
    log.warning("fedlr: %s: %s: %s", where, what, reason)
