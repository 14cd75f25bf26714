"""The continual task (:class:`~fedlr.tasks.base.Task`): a stream of tasks over tabular data.

Each client's data (digits or synthetic) is cut into ``num-tasks`` tasks
(:func:`fedlr.tasks.streams.build_stream`: class-incremental, task-incremental, permuted or
rotated), which arrive in rounds :func:`fedlr.tasks.streams.arrival_rounds` (together, or
staggered per client). In a round a client trains on its current task, plus a replay sample of
earlier ones under ``+replay``; it evaluates the global model on every task (a row of the
accuracy matrix), and on a message carrying snapshots, the snapshot ensemble too.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np
from torch import nn

from fedlr.data.federated import ClientData
from fedlr.tasks import streams, tabular
from fedlr.tasks.base import (
    ENSEMBLE_TASK_ACCURACY,
    TASK,
    TASK_ACCURACY,
    TASK_EXAMPLES,
    ClientContext,
    RoundPlan,
    TrainReport,
    estimate_kwargs,
    train_kwargs,
)


@functools.lru_cache(maxsize=16)
def _stream(data: Any, kind: str, num_tasks: int, seed: int, max_angle: float) -> list[Any]:
    # ``data`` is the task module's cached ClientData (hashed by identity): built once per process
    return streams.build_stream(
        kind,
        data.x_train,
        data.y_train,
        data.x_test,
        data.y_test,
        num_tasks=num_tasks,
        seed=seed,
        max_angle=max_angle,
    )


def client_stream(cfg: Mapping[str, Any], data: Any, pid: int) -> tuple[list[Any], np.ndarray]:
    """A client's tasks (:func:`fedlr.tasks.streams.build_stream`) and their arrival rounds."""
    tasks = _stream(data, cfg["stream"], cfg["num-tasks"], cfg["seed"], cfg["rotation-max"])
    starts = streams.arrival_rounds(
        cfg["num-server-rounds"], cfg["num-tasks"], cfg["num-clients"], cfg["task-stagger"]
    )[pid]
    return tasks, starts


class ContinualTask(tabular.TabularTask):
    """The tabular task under a ``stream``: train on the current task, evaluate on every task."""

    def task_view(self, data: ClientData, model: nn.Module, plan: RoundPlan):
        """A continual client's round: ``(task, data, per-example heads or None, probe)``.

        ``data`` is the task's train split plus the replay sample. ``probe`` is the ``(model,
        data)`` the received loss, the noise estimate and the noise-scale gradient read: with
        task-incremental heads, the model through the task's head on the task's own examples
        (the replayed ones belong to other heads); otherwise the model and ``data``.
        """
        cfg, pid = self.cfg, data.partition_id
        tasks, starts = client_stream(cfg, data, pid)
        task = streams.current_task(list(starts), plan.server_round)
        replay = int(cfg["replay-size"]) if plan.replay else 0
        replay_seed = int(np.random.SeedSequence([cfg["seed"], pid]).generate_state(1)[0])
        view, owner = streams.training_view(data, tasks, task, replay, replay_seed)
        if cfg["stream"] != "task-incremental":
            return task, view, None, (model, view)
        own, _ = streams.training_view(data, tasks, task, 0, replay_seed)
        head = streams.task_mask(tasks[task].classes)
        masked = tabular.HeadMasked(model, head).to(tabular.model_device(model))
        return task, view, streams.logit_masks(tasks, owner), (masked, own)

    def train(self, model: nn.Module, data: ClientData, plan: RoundPlan) -> TrainReport:
        """Train on the round's task (+ replay): probes through its head, training with heads."""
        task, view, heads, probe = self.task_view(data, model, plan)
        if probe[1].num_train == 0:  # no example of the task's own: read the replay
            probe = (model, view)
        gradient = None
        if plan.measure_noise_scale and view.num_train:
            # at the received weights, before any step; its own seed: training batches unchanged
            gradient = tabular.mean_gradient(
                probe[0], probe[1], plan.batch_size, seed=plan.seed ^ 0x6E5
            )
        metrics: dict[str, Any]
        if view.num_train == 0:  # a task this client holds no example of
            metrics = {"train_loss": float("nan"), "noise-estimate": -1.0, "steps": 0}
        else:
            probe_model, probe_data = probe
            # q-FFL's F_k: loss of the received global model on the client's data.
            received_loss, _ = tabular.evaluate(probe_model, probe_data.x_train, probe_data.y_train)
            estimate = -1.0
            if plan.estimate_noise:
                estimate = tabular.estimate_noise(
                    probe_model, probe_data, plan.estimator, **estimate_kwargs(plan)
                )
            procs = int(self.cfg.get("ddp-procs", 1))
            if procs == 1:
                tabular.train_local(model, view, logit_mask=heads, **train_kwargs(plan))
                steps = tabular.local_steps(view.num_train, plan.batch_size, plan.epochs)
            else:  # class-incremental or permuted: no heads (task-incremental refuses DDP)
                report = tabular.TabularTask.train(self, model, view, _unmeasured(plan))
                steps = int(report.metrics["steps"])
            metrics = {
                "train_loss": received_loss,
                "noise-estimate": float(estimate),
                "steps": steps,
            }
        metrics[TASK] = task
        return TrainReport(
            metrics=metrics,
            num_examples=view.num_train,
            gradient=gradient,
            gradient_batch=min(plan.batch_size, view.num_train) if gradient is not None else 0,
        )

    def evaluate(self, model: nn.Module, data: ClientData, ctx: ClientContext) -> dict[str, Any]:
        """Loss and accuracy over all tasks' test examples; per task, and for the ensemble.

        Per task: accuracy on its test split (a row of the accuracy matrix, -1 where the client
        holds none) and, for a message carrying snapshots (``ctx.snapshots``), the snapshot
        ensemble's accuracy.
        """
        cfg = self.cfg
        tasks, _ = client_stream(cfg, data, data.partition_id)
        heads = [
            streams.task_mask(t.classes) if cfg["stream"] == "task-incremental" else None
            for t in tasks
        ]
        counts = [len(t.y_test) for t in tasks]
        scored = [
            tabular.evaluate(model, t.x_test, t.y_test, head) if n else (0.0, -1.0)
            for t, head, n in zip(tasks, heads, counts, strict=True)
        ]
        values: dict[str, Any] = {
            TASK_ACCURACY: [float(acc) for _, acc in scored],
            TASK_EXAMPLES: counts,
            "num-examples": int(sum(counts)),
        }
        if ctx.snapshots:
            device = tabular.model_device(model)
            members = []
            for state in ctx.snapshots:
                member = tabular.build_model(cfg)
                member.load_state_dict(state)
                members.append(member.to(device))
            values[ENSEMBLE_TASK_ACCURACY] = [
                float(tabular.evaluate_ensemble(members, t.x_test, t.y_test, head)[1])
                if n
                else -1.0
                for t, head, n in zip(tasks, heads, counts, strict=True)
            ]
        total = max(1, sum(counts))
        loss = sum(n * s[0] for s, n in zip(scored, counts, strict=True)) / total
        accuracy = sum(n * s[1] for s, n in zip(scored, counts, strict=True)) / total
        values.update({"accuracy": float(accuracy), "eval-loss": float(loss)})
        return values


def _unmeasured(plan: RoundPlan) -> RoundPlan:
    from dataclasses import replace

    return replace(plan, measure_noise_scale=False, estimate_noise=False)
