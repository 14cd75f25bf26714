"""The Task protocol: what the one ClientApp asks of any task, built in or a user's own.

A task is data + model + local loops. fedlr's ClientApp (:mod:`fedlr.fl.client_app`) talks to
nothing else: per message it builds a :class:`ClientContext`, asks the task for the client's data
and model, and then for one of

* ``describe(data)``: the query round's answer, the number of train examples and, only where the
  data was simulated with injected noise, the truth (``noise-true``, ``role``);
* ``train(model, data, plan)``: local training under the server's :class:`RoundPlan` (rate,
  epochs, batch, optimizer settings, seed), returning a :class:`TrainReport`: metrics (the loss
  of the received model, the client's noise statistic, steps, anything else to log) and, when the
  plan asks to measure the noise scale, the gradient at the received weights;
* ``evaluate(model, data, ctx)``: named metrics on the client's test split, at least
  ``num-examples``, ``accuracy`` and ``eval-loss``; any other scalar a task returns reaches
  ``rounds.jsonl``.

The built-in tasks implement it: :class:`fedlr.tasks.tabular.TabularTask` (digits, synthetic,
users' files), :class:`fedlr.tasks.continual.ContinualTask` (a stream of tasks over tabular data)
and :class:`fedlr.tasks.graph.GraphTask` (a subgraph per client). A user's task is named in the
config as ``task = "package.module:factory"``; ``factory(cfg)`` returns the task. The easiest is
a subclass of :class:`ArrayTask`, which needs two methods, :meth:`ArrayTask.load` (the client's
arrays) and :meth:`ArrayTask.make_model`, and brings fedlr's loops, noise estimators and metrics::

    class DigitsCNN(ArrayTask):
        num_classes = 10

        def load(self, ctx):            # this client's (x_train, y_train, x_test, y_test)
            ...

        def make_model(self):           # the server builds it too, without any data
            return SmallCNN()


    def make(cfg):
        return DigitsCNN(cfg)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from fedlr.config import ConfigError, split_list
from fedlr.data.federated import ClientData, client_roles, make_client
from fedlr.tasks import tabular_loops, tabular_noise


# Keys the tasks read and report; fedlr.fl.keys re-exports them (one module of message keys).
SITE_AGREEMENT = "site-agreement"  # users' files: the sites' agreement (JSON) sent to every client
DATA_PATH = "data-path"  # node config: this SuperNode's own file
# continual: the task trained on (train); accuracy and test examples per task (evaluate), and
# the same for the snapshot ensemble (an evaluate message carrying snapshots)
TASK = "task"
TASK_ACCURACY = "task-accuracy"  # one per task; -1 where the client holds no test example
TASK_EXAMPLES = "task-examples"
ENSEMBLE_TASK_ACCURACY = "ensemble-task-accuracy"
# graphs: per test node (evaluate) and per node at the received weights (train)
TEST_DEGREE = "test-degree"  # global degree of each test node
TEST_CORRECT = "test-correct"  # 1 when that test node is classified correctly
GRAD_DEGREE = "grad-degree"  # the degree the rule reads, per node
GRAD_NORM = "grad-norm"  # norm of the loss gradient at each node's input row
GRAD_NORM_SCALED = "grad-norm-scaled"  # the same times the node's degree scale s_v


@dataclass(frozen=True)
class ClientContext:
    """Where a client is: the run config, its partition id, its node's config, the message's.

    Attributes
    ----------
    cfg : Mapping
        The run config (every key of :data:`fedlr.config.SCHEMA`, as the strategy sends it).
    partition_id : int
        The client's ``partition-id`` (node config).
    node_config : Mapping
        The SuperNode's ``--node-config`` (e.g. ``data-path``), or the simulation engine's.
    message : Mapping
        The message's ConfigRecord: the run config plus the server's per-round keys.
    snapshots : tuple of dict
        State dicts of earlier global models a message carries (a continual run's final
        evaluation ensembles them); empty otherwise.
    """

    cfg: Mapping[str, Any]
    partition_id: int
    node_config: Mapping[str, Any] = field(default_factory=dict)
    message: Mapping[str, Any] = field(default_factory=dict)
    snapshots: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class RoundPlan:
    """What the server asks of one client in one round (rates are the server's, not the task's)."""

    server_round: int
    lr: float
    epochs: int
    batch_size: int
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    proximal_mu: float = 0.0
    seed: int = 0
    estimate_noise: bool = False
    select_clean: bool = False  # train on the examples of the low-loss component only
    estimator: str = "loss-margin"
    measure_noise_scale: bool = False
    degree_rule: bool = False
    replay: bool = False


@dataclass
class TrainReport:
    """What local training returns: metrics to send, and the measured gradient if asked for."""

    metrics: dict[str, Any]
    num_examples: int
    gradient: np.ndarray | None = None
    gradient_batch: int = 0


@runtime_checkable
class Task(Protocol):
    """What the ClientApp asks of a task (see the module docstring)."""

    mini_batches: bool  # whether batch sizes and the noise scale apply (False: full-batch)

    def client_data(self, ctx: ClientContext) -> Any:
        """The client's data (with ``num_train`` and ``num_test``)."""
        ...

    def build_model(self, ctx: ClientContext | None = None) -> nn.Module:
        """The model, seeded; ``ctx`` is None on the server, which holds no data."""
        ...

    def describe(self, data: Any) -> dict[str, Any]:
        """The query round's answer: ``num-examples`` (train) and, if known, the truth."""
        ...

    def train(self, model: nn.Module, data: Any, plan: RoundPlan) -> TrainReport:
        """Local training under ``plan``."""
        ...

    def evaluate(self, model: nn.Module, data: Any, ctx: ClientContext) -> dict[str, Any]:
        """Named metrics on the test split: num-examples, accuracy, eval-loss, and any other."""
        ...


def describe_truth(data: Any) -> dict[str, Any]:
    """``num-examples`` and the simulated truth a client's data carries (none for real data)."""
    out: dict[str, Any] = {"num-examples": int(data.num_train)}
    if getattr(data, "flip_fraction", None) is not None:
        out["noise-true"] = float(data.flip_fraction)
    if getattr(data, "role", None) is not None:
        out["role"] = str(data.role)
    return out


class ArrayTask:
    """A supervised task on arrays, with fedlr's loops: subclass it for your own data and model.

    A subclass sets ``num_classes`` and implements :meth:`load` and :meth:`make_model`. Inputs
    may have any shape (a CNN takes ``(N, 1, 8, 8)``); labels are class indices ``0..C-1``.
    Training is :func:`fedlr.tasks.tabular.train_local` (SGD/Adam/Adagrad, FedProx term,
    seeded batches), evaluation reports accuracy, the loss and the run's ``metrics``, and the
    noise estimators are fedlr's, so every strategy works on it. Label or feature noise is
    injected when the config asks (``noisy-clients``, ...), as for built-in data. Override
    :meth:`extra_metrics` to report more (e.g. a site's sensitivity).
    """

    mini_batches = True
    num_classes: int = 0

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        self.cfg = cfg
        self._data: dict[tuple[int, str], ClientData] = {}

    # -- what a user implements ---------------------------------------------------------------
    def load(self, ctx: ClientContext) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The client's own ``(x_train, y_train, x_test, y_test)`` (its rows only)."""
        raise NotImplementedError

    def make_model(self) -> nn.Module:
        """A fresh model (the caller seeds it)."""
        raise NotImplementedError

    def extra_metrics(self, model: nn.Module, data: ClientData) -> dict[str, float]:
        """More metrics on the test split; passed through to ``rounds.jsonl``."""
        return {}

    # -- the protocol -------------------------------------------------------------------------
    def client_data(self, ctx: ClientContext) -> ClientData:
        """The loaded arrays, checked, with the configured noise injected; cached per process."""
        key = (ctx.partition_id, str(ctx.node_config.get("data-path", "")))
        if key not in self._data:
            x_train, y_train, x_test, y_test = self.load(ctx)
            y_train, y_test = _labels(y_train, self.num_classes), _labels(y_test, self.num_classes)
            if len(x_train) != len(y_train) or len(x_test) != len(y_test) or not len(x_train):
                raise ValueError(
                    "task: load() must return x_train, y_train, x_test, y_test with as many "
                    f"labels as inputs and some train rows; got {len(x_train)}, {len(y_train)}, "
                    f"{len(x_test)}, {len(y_test)}"
                )
            pid = ctx.partition_id
            roles = client_roles(self.cfg)
            role = roles[pid] if pid < len(roles) else ("clean", 0.0, 0.0)
            split = (
                np.asarray(x_train, np.float32),
                y_train,
                np.asarray(x_test, np.float32),
                y_test,
            )
            data = make_client(self.cfg, pid, split, self.num_classes, role)
            if not self._truth():
                data = _without_truth(data)
            self._data[key] = data
        return self._data[key]

    def _truth(self) -> bool:
        return bool(self.cfg["noisy-clients"] or self.cfg["feature-noise-clients"])

    def build_model(self, ctx: ClientContext | None = None) -> nn.Module:
        """:meth:`make_model` under the run seed (the same initial weights everywhere)."""
        with torch.random.fork_rng():
            torch.manual_seed(int(self.cfg["seed"]))
            model = self.make_model()
        if not isinstance(model, nn.Module):
            raise ConfigError(
                f"task: make_model() returned {type(model).__name__}; expected a torch.nn.Module"
            )
        return model

    def describe(self, data: ClientData) -> dict[str, Any]:
        """``num-examples`` and, where noise was injected, the truth."""
        return describe_truth(data)

    def train(self, model: nn.Module, data: ClientData, plan: RoundPlan) -> TrainReport:
        """Received loss, noise statistic, then :func:`~fedlr.tasks.tabular.train_local`."""
        gradient = None
        if plan.measure_noise_scale and data.num_train:
            # at the received weights, before any step; its own seed: training batches unchanged
            gradient = tabular_loops.mean_gradient(
                model, data, plan.batch_size, seed=plan.seed ^ 0x6E5
            )
        received_loss, _ = tabular_loops.evaluate(model, data.x_train, data.y_train)
        estimate = -1.0
        if plan.estimate_noise:
            estimate = tabular_noise.estimate_noise(
                model, data, plan.estimator, **estimate_kwargs(plan)
            )
        tabular_loops.train_local(model, clean_part(model, data, plan), **train_kwargs(plan))
        return TrainReport(
            metrics={
                "train_loss": received_loss,
                "noise-estimate": float(estimate),
                "steps": tabular_loops.local_steps(data.num_train, plan.batch_size, plan.epochs),
            },
            num_examples=data.num_train,
            gradient=gradient,
            gradient_batch=min(plan.batch_size, data.num_train) if gradient is not None else 0,
        )

    def evaluate(self, model: nn.Module, data: ClientData, ctx: ClientContext) -> dict[str, Any]:
        """Accuracy, loss, the run's ``metrics`` and :meth:`extra_metrics` on the test split."""
        loss, accuracy = tabular_loops.evaluate(model, data.x_test, data.y_test)
        values: dict[str, Any] = {
            "num-examples": data.num_test,
            "accuracy": accuracy,
            "eval-loss": loss,
        }
        values.update(classification_metrics(model, data, ctx.cfg))
        extra = {str(k): float(v) for k, v in self.extra_metrics(model, data).items()}
        taken = sorted(set(extra) & set(values))
        if taken:
            raise ValueError(
                f"task: extra_metrics() returned {taken[0]!r}, a name fedlr reports itself; "
                "expected other names"
            )
        values.update(extra)
        return values


def classification_metrics(
    model: nn.Module, data: ClientData, cfg: Mapping[str, Any]
) -> dict[str, float]:
    """The run's ``metrics`` beyond accuracy and loss, on the test split (scikit-learn)."""
    names = [m for m in split_list(cfg.get("metrics", "accuracy")) if m not in ("accuracy", "loss")]
    if not names or not data.num_test:
        return {}
    from fedlr.metrics import classification

    log_probs = tabular_loops.log_probs(model, data.x_test)
    scores = classification.scores(log_probs, data.y_test, names, log_probs.shape[1])
    return {name: float(scores[name]) for name in names}


def clean_part(model: nn.Module, data: ClientData, plan: RoundPlan) -> ClientData:
    """The examples to train on: all, or with ``plan.select_clean`` the low-loss component.

    The margin losses of the received model (:func:`fedlr.rates.noise.margin_losses`) are split
    by :func:`fedlr.rates.robust.small_loss_mask`; the site keeps its aggregation weight.
    """
    if not plan.select_clean or data.num_train < 4:
        return data
    from dataclasses import replace

    from fedlr.rates.noise import margin_losses
    from fedlr.rates.robust import small_loss_mask

    margins = margin_losses(tabular_loops.log_probs(model, data.x_train), np.asarray(data.y_train))
    keep = small_loss_mask(margins, seed=plan.seed)
    if keep.all():
        return data
    clean = np.asarray(data.y_train_clean)
    return replace(
        data,
        x_train=data.x_train[keep],
        y_train=np.asarray(data.y_train)[keep],
        y_train_clean=clean[keep] if len(clean) == len(keep) else clean,
    )


def estimate_kwargs(plan: RoundPlan) -> dict[str, Any]:
    """:func:`fedlr.tasks.tabular.estimate_noise`'s keyword arguments for ``plan``."""
    return {
        "seed": plan.seed,
        "lr": plan.lr,
        "batch_size": plan.batch_size,
        "epochs": plan.epochs,
    }


def train_kwargs(plan: RoundPlan) -> dict[str, Any]:
    """:func:`fedlr.tasks.tabular.train_local`'s keyword arguments for ``plan``."""
    return {
        "lr": plan.lr,
        "epochs": plan.epochs,
        "batch_size": plan.batch_size,
        "optimizer": plan.optimizer,
        "momentum": plan.momentum,
        "proximal_mu": plan.proximal_mu,
        "seed": plan.seed,
        "weight_decay": plan.weight_decay,
        "adam_betas": plan.adam_betas,
        "adam_eps": plan.adam_eps,
    }


def _labels(y: Any, num_classes: int) -> np.ndarray:
    labels = np.asarray(y)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"task: labels must be 1-d class indices, got dtype {labels.dtype}")
    if num_classes < 2 or (len(labels) and (labels.min() < 0 or labels.max() >= num_classes)):
        raise ValueError(
            f"task: labels must lie in 0..num_classes - 1 with num_classes >= 2 "
            f"(num_classes = {num_classes})"
        )
    return labels.astype(np.int64)


def _without_truth(data: ClientData) -> ClientData:
    from dataclasses import replace

    return replace(data, role=None, flip_fraction=None)
