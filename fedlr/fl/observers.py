"""Round observers: features that watch a round without changing anyone's rate.

Each observer owns its fields of the round log (:class:`~fedlr.fl.roundlog.RoundLog`) and
follows one protocol; the strategy only loops over them:

* ``train_reply(pid, reply, metrics, log_)``: read one accepted train reply (before aggregation);
* ``after_train(server_round, log_)``: summarise the round's train replies;
* ``evaluate_reply(pid, metrics, log_)`` and ``after_evaluate(server_round, log_)``: the same
  for evaluation;
* ``state_dict()`` / ``load_state_dict(state)``: its memory, for checkpoints.

fedlr's own (:class:`FeatureObserver`) also own their columns of ``rounds.jsonl``: ``row(log_,
pid)`` for a client's row and ``line(server_round, rounds)`` for the round's line, so the
recorder writes them without knowing any feature. :class:`Batches` logs batch sizes, coupling
factors and steps; :class:`NoiseScale` measures the gradient noise scale (and drives
``noise-scale-growth``); :class:`DegreeDiagnostics` pools graph clients' per-node reports;
:class:`Continual` keeps each client's accuracy per task of a stream. A run's own observers
(``observers``, :mod:`fedlr.fl.own_observers`) log what ``round_record(server_round)`` returns under
``observers.NAME``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid

from fedlr.analysis import finite_or_none, json_safe
from fedlr.fl import keys
from fedlr.fl.nodes import ClientInfo, float_list, int_list, scalar
from fedlr.fl.roundlog import RoundLog
from fedlr.metrics.degree import degree_bucket_fairness, loglog_slope
from fedlr.rates import coupling

log = logging.getLogger("fedlr")


class Observer(Protocol):
    """The protocol every round observer follows (see the module docstring)."""

    name: str

    def train_reply(self, pid: int, reply: Message, metrics: MetricRecord, log_: RoundLog) -> None:
        """Read one accepted train reply."""
        ...

    def after_train(self, server_round: int, log_: RoundLog) -> None:
        """Summarise the round's train replies."""
        ...

    def evaluate_reply(self, pid: int, metrics: MetricRecord, log_: RoundLog) -> None:
        """Read one accepted evaluate reply."""
        ...

    def after_evaluate(self, server_round: int, log_: RoundLog) -> None:
        """Summarise the round's evaluate replies."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The observer's memory as plain data."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        ...


class FeatureObserver:
    """The base of fedlr's own observers: default hooks and columns, each overridden as needed.

    Its columns of ``rounds.jsonl`` (:meth:`row`, :meth:`line`) are written by the recorder as
    they are, so the recorder knows no feature.
    """

    def train_reply(self, pid: int, reply: Message, metrics: MetricRecord, log_: RoundLog) -> None:
        """Nothing to read."""

    def after_train(self, server_round: int, log_: RoundLog) -> None:
        """Nothing to summarise."""

    def evaluate_reply(self, pid: int, metrics: MetricRecord, log_: RoundLog) -> None:
        """Nothing to read."""

    def after_evaluate(self, server_round: int, log_: RoundLog) -> None:
        """Nothing to summarise."""

    def state_dict(self) -> dict[str, Any]:
        """No memory."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """No memory."""

    def row(self, log_: RoundLog, pid: int) -> dict[str, Any]:
        """Its columns of a client's row in ``rounds.jsonl``: none."""
        return {}

    def line(self, server_round: int, rounds: Mapping[int, RoundLog]) -> dict[str, Any]:
        """Its fields of the round's line in ``rounds.jsonl``: none."""
        return {}


class Batches(FeatureObserver):
    """Tabular tasks: each client's batch, coupling factor and optimizer steps per round.

    The rate factors set the batch and coupling factor, the replies report the steps; this
    owns their columns in ``rounds.jsonl`` (``batch_size``, ``coupling_factor``, ``steps``, and
    the round's ``steps_mean`` and running ``steps_total``).
    """

    name = "batches"

    def row(self, log_: RoundLog, pid: int) -> dict[str, Any]:
        """The client's batch, coupling factor and steps this round."""
        return {
            "batch_size": log_.batch_size.get(pid),
            "coupling_factor": log_.coupling_factor.get(pid),
            "steps": log_.steps.get(pid),
        }

    def line(self, server_round: int, rounds: Mapping[int, RoundLog]) -> dict[str, Any]:
        """Mean steps over the clients that trained, and their sum over the rounds so far."""
        return {
            "steps_mean": _steps_mean(rounds[server_round]),
            "steps_total": sum(_steps_mean(rounds[r]) or 0.0 for r in rounds if r <= server_round),
        }


def _steps_mean(log_: RoundLog) -> float | None:
    """Mean local optimizer steps over the clients that trained in a round."""
    return float(np.mean(list(log_.steps.values()))) if log_.steps else None


def _gradient(record: ArrayRecord, batch: float) -> tuple[np.ndarray, int] | None:
    """A client's noise-scale gradient as float64, with its batch; None when malformed."""
    try:
        flat = np.concatenate([a.reshape(-1) for a in record.to_numpy_ndarrays()])
    except (ValueError, TypeError):
        return None
    if not (np.isfinite(batch) and batch >= 1 and flat.size and np.all(np.isfinite(flat))):
        return None
    return flat.astype(np.float64), int(batch)


class NoiseScale(FeatureObserver):
    """The gradient noise scale ``B_simple`` of each round, from the clients' gradients.

    With ``measure-noise-scale`` every client sends the gradient of one batch at the received
    weights (the ``gradient`` ArrayRecord); it never reaches the aggregation, measured or not.
    The round's unbiased ``|G|^2`` and ``tr(Sigma)`` (:func:`fedlr.rates.coupling.federated_terms`)
    are smoothed by :class:`fedlr.rates.coupling.NoiseScaleEMA`. :attr:`growth` is the
    ``noise-scale-growth`` factor for the next round; :attr:`b_simple` feeds the ``optimal``
    coupling rule. Owns ``noise_scale`` in the round log.
    """

    name = "noise_scale"

    def __init__(
        self, *, enabled: bool, decay: float, growth_max: float, logged: bool = True
    ) -> None:
        self.enabled = enabled
        self.logged = logged  # a line's noise_scale field (tabular tasks)
        self.growth_max = growth_max
        self.noise_scale = coupling.NoiseScaleEMA(decay=decay)
        self.first_b_simple: float | None = None  # the first usable smoothed estimate
        self.growth = 1.0  # noise-scale-growth factor for the next round
        self.gradients: dict[int, tuple[np.ndarray, int]] = {}

    @property
    def b_simple(self) -> float | None:
        """The smoothed noise scale (None until measured)."""
        return self.noise_scale.b_simple

    def train_reply(self, pid: int, reply: Message, metrics: MetricRecord, log_: RoundLog) -> None:
        """Take the reply's gradient out of it, and keep it when measuring."""
        gradient = reply.content.array_records.get(keys.GRADIENT)
        if gradient is None:
            return
        del reply.content[keys.GRADIENT]
        if self.enabled:
            usable = _gradient(gradient, scalar(metrics.get(keys.GRADIENT_BATCH)))
            if usable is None:
                log_.errors.append({"partition_id": pid, "reason": "malformed gradient"})
            else:
                self.gradients[pid] = usable

    def after_train(self, server_round: int, log_: RoundLog) -> None:
        """Measure the round's noise scale from the gradients kept."""
        gradients, self.gradients = self.gradients, {}
        if gradients:
            self.measure(log_, gradients)

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
            top = self.growth_max
            self.growth = float(np.clip(max(ratio, self.growth), 1.0, top))

    def line(self, server_round: int, rounds: Mapping[int, RoundLog]) -> dict[str, Any]:
        """The round's ``noise_scale`` (tabular tasks)."""
        return {"noise_scale": json_safe(rounds[server_round].noise_scale)} if self.logged else {}

    def state_dict(self) -> dict[str, Any]:
        """The smoothed terms, the first usable estimate and the growth factor."""
        return {
            "noise_scale": self.noise_scale.to_dict(),
            "first_b_simple": self.first_b_simple,
            "growth": self.growth,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (checkpoints written before noise scales have none)."""
        if "noise_scale" in state:
            self.noise_scale = coupling.NoiseScaleEMA.from_dict(state["noise_scale"])
            self.first_b_simple = state["first_b_simple"]
            self.growth = float(state["growth"])


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


class DegreeDiagnostics(FeatureObserver):
    """Graph tasks: what clients report per node, pooled over the federation.

    Accuracy by global-degree quartile over all clients' test nodes
    (:func:`fedlr.metrics.degree.degree_bucket_fairness`) and the slope of gradient norm vs
    degree before and after the degree scales (:func:`gradient_diagnostic`; the profile in
    round 1). Owns ``degree_fairness``, ``gradient_slope`` and ``gradient_profile``.
    """

    name = "degree"

    def __init__(self) -> None:
        self.diagnostics: dict[int, tuple[list[float], list[float], list[float]]] = {}
        self.outcomes: dict[int, tuple[list[int], list[int]]] = {}  # pid -> (degree, correct)

    def train_reply(self, pid: int, reply: Message, metrics: MetricRecord, log_: RoundLog) -> None:
        """Keep the reply's per-node degree, gradient norm and scaled norm."""
        degree = float_list(metrics.get(keys.GRAD_DEGREE))
        norm = float_list(metrics.get(keys.GRAD_NORM))
        scaled = float_list(metrics.get(keys.GRAD_NORM_SCALED))
        if degree and norm and scaled and len(degree) == len(norm) == len(scaled):
            self.diagnostics[pid] = (degree, norm, scaled)

    def after_train(self, server_round: int, log_: RoundLog) -> None:
        """The round's slopes (and, in round 1, the profile)."""
        diagnostics, self.diagnostics = self.diagnostics, {}
        if diagnostics:
            log_.gradient_slope, log_.gradient_profile = gradient_diagnostic(
                [diagnostics[pid] for pid in sorted(diagnostics)],  # replies arrive in any order
                with_profile=server_round == 1,
            )

    def evaluate_reply(self, pid: int, metrics: MetricRecord, log_: RoundLog) -> None:
        """Keep the reply's test nodes' degrees and outcomes."""
        degrees = int_list(metrics.get(keys.TEST_DEGREE))
        correct = int_list(metrics.get(keys.TEST_CORRECT))
        if degrees is not None and correct is not None and len(degrees) == len(correct):
            self.outcomes[pid] = (degrees, correct)

    def after_evaluate(self, server_round: int, log_: RoundLog) -> None:
        """Accuracy by degree quartile over every client's test nodes."""
        outcomes, self.outcomes = self.outcomes, {}
        if outcomes:
            test_degree = [d for pid in sorted(outcomes) for d in outcomes[pid][0]]
            test_correct = [c for pid in sorted(outcomes) for c in outcomes[pid][1]]
            log_.degree_fairness = degree_bucket_fairness(test_correct, test_degree)
            log_.degree_fairness["accuracy"] = float(np.mean(test_correct))
            log_.degree_fairness["nodes"] = len(test_correct)

    def line(self, server_round: int, rounds: Mapping[int, RoundLog]) -> dict[str, Any]:
        """The round's degree fairness and gradient slope (and, in round 1, the profile)."""
        log_ = rounds[server_round]
        out = {
            "degree_fairness": json_safe(log_.degree_fairness),
            "gradient_slope": json_safe(log_.gradient_slope),
        }
        if log_.gradient_profile is not None:  # round 1: mean norm per degree
            out["gradient_profile"] = json_safe(log_.gradient_profile)
        return out


def task_lists(
    metrics: MetricRecord, accuracy_key: str, num_tasks: int
) -> tuple[list[float], list[int]] | None:
    """A continual reply's accuracy per task (-1: no test example) and test examples per task.

    None when either list is missing, has another length than ``num_tasks``, or holds an
    accuracy outside ``[0, 1]`` that is not -1.
    """
    accuracy = float_list(metrics.get(accuracy_key))
    examples = int_list(metrics.get(keys.TASK_EXAMPLES))
    if accuracy is None or examples is None or not len(accuracy) == len(examples) == num_tasks:
        return None
    if not all(a == -1.0 or 0.0 <= a <= 1.0 for a in accuracy) or min(examples) < 0:
        return None
    return [float(a) for a in accuracy], [int(n) for n in examples]


class Continual(FeatureObserver):
    """Continual streams: the task each client trained on and its accuracy per task.

    Besides the round log's ``task``, ``task_accuracy`` and ``task_examples``, it keeps each
    client's accuracy per task of the untrained model (:attr:`task_baseline`, forward transfer's
    reference) and of the final snapshot ensemble (:attr:`task_ensemble`), from
    :meth:`evaluate_tasks` outside Flower's round loop.
    """

    name = "continual"

    def __init__(self, *, stream: bool, num_tasks: int) -> None:
        self.stream = stream
        self.num_tasks = num_tasks
        self.task_baseline: dict[int, list[float]] = {}  # per task, of the initial model
        self.task_ensemble: dict[int, list[float]] = {}  # per task, of the snapshot ensemble
        self.ensemble_examples: dict[int, list[int]] = {}

    def train_reply(self, pid: int, reply: Message, metrics: MetricRecord, log_: RoundLog) -> None:
        """The task the client trained on (any task reporting one)."""
        task = scalar(metrics.get(keys.TASK))
        if np.isfinite(task) and task >= 0:
            log_.task[pid] = int(task)

    def evaluate_reply(self, pid: int, metrics: MetricRecord, log_: RoundLog) -> None:
        """A stream client's accuracy and test examples per task."""
        if self.stream:
            tasks = task_lists(metrics, keys.TASK_ACCURACY, self.num_tasks)
            if tasks is not None:
                log_.task_accuracy[pid], log_.task_examples[pid] = tasks

    def row(self, log_: RoundLog, pid: int) -> dict[str, Any]:
        """A stream client's task this round and its accuracy and test examples per task."""
        if not self.stream:
            return {}
        accuracy = log_.task_accuracy.get(pid)
        return {
            "task": log_.task.get(pid),
            # null where it has no test example of a task
            "task_accuracy": None
            if accuracy is None
            else [None if v < 0 else finite_or_none(v) for v in accuracy],
            "task_examples": log_.task_examples.get(pid),
        }

    def evaluate_tasks(
        self,
        grid: Grid,
        arrays: ArrayRecord,
        clients: Mapping[int, ClientInfo],
        cfg: Mapping[str, Any],
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
        by_node = {c.node_id: c for c in clients.values()}
        messages = []
        for client in clients.values():
            if client.node_id not in connected:
                continue
            config = ConfigRecord(dict(cfg))
            config[keys.SNAPSHOTS] = len(snapshots)
            content = RecordDict({keys.ARRAYS: arrays, keys.CONFIG: config})
            for i, snapshot in enumerate(snapshots):
                content[keys.SNAPSHOT.format(i)] = snapshot
            messages.append(
                Message(content, dst_node_id=client.node_id, message_type=MessageType.EVALUATE)
            )
        out: dict[int, tuple[list[float], list[int], list[float] | None]] = {}
        timeout = float(cfg["round-timeout"])
        for reply in grid.send_and_receive(messages, timeout=timeout):
            node = by_node.get(reply.metadata.src_node_id)
            if node is None or reply.has_error():
                reason = str(reply.error.reason) if reply.has_error() else "unknown node"
                log.warning("fedlr: task evaluation failed on a node: %s", reason)
                continue
            metrics = reply.content.metric_records.get(keys.METRICS, MetricRecord())
            tasks = task_lists(metrics, keys.TASK_ACCURACY, self.num_tasks)
            ensemble = (
                task_lists(metrics, keys.ENSEMBLE_TASK_ACCURACY, self.num_tasks)
                if snapshots
                else None
            )
            if tasks is None or (snapshots and ensemble is None):
                log.warning("fedlr: partition %d sent no usable task accuracies", node.partition_id)
                continue
            out[node.partition_id] = (*tasks, ensemble[0] if ensemble else None)
        return out

    def state_dict(self) -> dict[str, Any]:
        """The baseline and ensemble accuracies per task."""
        return {
            "task_baseline": self.task_baseline,
            "task_ensemble": self.task_ensemble,
            "ensemble_examples": self.ensemble_examples,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        for name in ("task_baseline", "task_ensemble", "ensemble_examples"):
            setattr(self, name, {int(k): list(v) for k, v in state.get(name, {}).items()})
