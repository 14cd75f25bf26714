r"""Continual-learning metrics from an accuracy matrix (pure numpy).

The accuracy matrix
-------------------
After training through task :math:`i` (tasks :math:`0..T-1` in arrival order) the model is
evaluated on every task :math:`j`: :math:`R_{i,j}`. Row :math:`i` is one evaluation, column
:math:`j` one task's history. ``baseline[j]`` (:math:`\bar b_j`) is the accuracy on task
:math:`j` of the model before any training, which forward transfer needs. Everything else is a
function of :math:`R`, so a run logs :math:`R` (per client and pooled) and derives the rest.

Definitions (0-based; :math:`T` tasks)
--------------------------------------
* Average accuracy (GEM, Lopez-Paz & Ranzato 2017):
  :math:`\mathrm{ACC} = \frac1T \sum_{j} R_{T-1,j}`.
* Backward transfer (GEM): :math:`\mathrm{BWT} = \frac{1}{T-1}\sum_{j<T-1} (R_{T-1,j} - R_{j,j})`;
  negative is forgetting.
* Forward transfer (GEM): :math:`\mathrm{FWT} = \frac{1}{T-1}\sum_{j\ge1} (R_{j-1,j} - \bar b_j)`:
  what earlier tasks already taught about task :math:`j` before it was trained.
* Forgetting (Chaudhry et al. 2018, "Riemannian Walk"), max-based: after task :math:`k`,
  :math:`f^k_j = \max_{l<k} R_{l,j} - R_{k,j}` for :math:`j<k`, and
  :math:`F_k = \frac1k\sum_{j<k} f^k_j`. It compares with the *best* accuracy the task ever had,
  so it is at least Avalanche's "accuracy just after training minus now" (:math:`-` BWT per task).
* Learning accuracy (Riemer et al. 2019): :math:`\mathrm{LA} = \frac1T \sum_j R_{j,j}`, the
  accuracy on each task just after training it (plasticity).
* Average accuracy after task :math:`k`: :math:`A_k = \frac{1}{k+1}\sum_{j\le k} R_{k,j}`.

>>> R = [[0.9, 0.1], [0.6, 0.8]]
>>> out = summary(R, baseline=[0.1, 0.1])
>>> out["acc"], out["learning_acc"], out["bwt"], out["fwt"], out["forgetting"]
(0.7, 0.85, -0.3, 0.0, 0.3)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _matrix(R: Any) -> np.ndarray:
    array = np.asarray(R, dtype=float)
    if array.ndim != 2 or array.shape[0] != array.shape[1] or array.shape[0] < 1:
        raise ValueError(f"R: expected a square T x T matrix with T >= 1, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("R: expected finite accuracies, got NaN or inf")
    return array


def _baseline(baseline: Any, tasks: int) -> np.ndarray:
    array = np.asarray(baseline, dtype=float)
    if array.shape != (tasks,) or not np.all(np.isfinite(array)):
        raise ValueError(
            f"baseline: expected {tasks} finite accuracies (one per task), got shape {array.shape}"
        )
    return array


def average_accuracy(R: Any, after: int | None = None) -> float:
    """:math:`A_k`: mean accuracy over tasks ``0..k`` after task ``k`` (default: the last, ACC).

    >>> average_accuracy([[0.9, 0.1], [0.6, 0.8]]), average_accuracy([[0.9, 0.1], [0.6, 0.8]], 0)
    (0.7, 0.9)
    """
    matrix = _matrix(R)
    k = matrix.shape[0] - 1 if after is None else after
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 0 <= k < len(matrix):
        raise ValueError(f"after: expected a task index in 0..{len(matrix) - 1}, got {after!r}")
    return float(np.round(np.mean(matrix[k, : k + 1]), 12))


def backward_transfer(R: Any) -> float:
    """GEM's BWT: mean over earlier tasks of final accuracy minus accuracy just after training.

    Raises ``ValueError`` for a single task (no earlier task to look back at).

    >>> backward_transfer([[0.9, 0.1], [0.6, 0.8]])
    -0.3
    """
    matrix = _matrix(R)
    tasks = len(matrix)
    if tasks < 2:
        raise ValueError("R: backward transfer needs at least 2 tasks, got 1")
    last = matrix[tasks - 1, : tasks - 1]
    diagonal = np.diag(matrix)[: tasks - 1]
    return float(np.round(np.mean(last - diagonal), 12))


def forward_transfer(R: Any, baseline: Any) -> float:
    """GEM's FWT: mean over tasks 1.. of accuracy before training it minus the untrained model's.

    >>> forward_transfer([[0.9, 0.3], [0.6, 0.8]], [0.1, 0.1])
    0.2
    """
    matrix = _matrix(R)
    tasks = len(matrix)
    base = _baseline(baseline, tasks)
    if tasks < 2:
        raise ValueError("R: forward transfer needs at least 2 tasks, got 1")
    before = np.array([matrix[j - 1, j] for j in range(1, tasks)])
    return float(np.round(np.mean(before - base[1:]), 12))


def forgetting_per_task(R: Any, after: int | None = None) -> list[float]:
    r"""Chaudhry et al.'s :math:`f^k_j = \max_{l<k} R_{l,j} - R_{k,j}` for tasks ``j < k``.

    ``after`` is :math:`k` (default: the last task). Empty for ``k = 0``.

    >>> forgetting_per_task([[0.9, 0.1, 0.1], [0.95, 0.8, 0.1], [0.5, 0.9, 0.7]])
    [0.45, -0.1]
    """
    matrix = _matrix(R)
    k = len(matrix) - 1 if after is None else after
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 0 <= k < len(matrix):
        raise ValueError(f"after: expected a task index in 0..{len(matrix) - 1}, got {after!r}")
    return [float(np.round(matrix[:k, j].max() - matrix[k, j], 12)) for j in range(k)]


def forgetting(R: Any, after: int | None = None) -> float:
    """:math:`F_k`: mean of :func:`forgetting_per_task` (``ValueError`` when ``k = 0``).

    >>> forgetting([[0.9, 0.1, 0.1], [0.95, 0.8, 0.1], [0.5, 0.9, 0.7]])
    0.175
    """
    values = forgetting_per_task(R, after)
    if not values:
        raise ValueError("after: forgetting needs at least one earlier task, got task 0")
    return float(np.round(np.mean(values), 12))


def learning_accuracy(R: Any) -> float:
    r"""Learning accuracy (Riemer et al. 2019): :math:`\frac1T\sum_j R_{j,j}`.

    The accuracy on each task just after training it: plasticity. A schedule that stops
    learning new tasks forgets less but scores low here.

    >>> learning_accuracy([[0.9, 0.1], [0.6, 0.8]])
    0.85
    """
    return float(np.round(np.mean(np.diag(_matrix(R))), 12))


def summary(R: Any, baseline: Any | None = None) -> dict[str, Any]:
    """ACC, learning accuracy, BWT, FWT (``None`` without ``baseline``), forgetting (and per task).

    With one task only ACC is defined; the others are ``None`` (and the per-task list empty).
    """
    matrix = _matrix(R)
    several = len(matrix) >= 2
    return {
        "acc": average_accuracy(matrix),
        "learning_acc": learning_accuracy(matrix),
        "bwt": backward_transfer(matrix) if several else None,
        "fwt": forward_transfer(matrix, baseline) if several and baseline is not None else None,
        "forgetting": forgetting(matrix) if several else None,
        "forgetting_per_task": forgetting_per_task(matrix),
    }


def per_client(
    matrices: Sequence[Any], baselines: Sequence[Any] | None = None
) -> list[dict[str, Any]]:
    """:func:`summary` of each client's own accuracy matrix (same task order for all)."""
    if baselines is not None and len(baselines) != len(matrices):
        raise ValueError(
            f"baselines: expected one per client ({len(matrices)}), got {len(baselines)}"
        )
    return [summary(m, None if baselines is None else baselines[i]) for i, m in enumerate(matrices)]


def matrix_at(
    history: Mapping[int, Sequence[float | None]],
    ends: Sequence[int],
    starts: Sequence[int] | None = None,
) -> np.ndarray:
    """One client's accuracy matrix from its per-round evaluations.

    ``history[r]`` is the client's accuracy on every task after round ``r`` (``None`` or a
    negative value where it has no test example of a task); row ``i`` of the result is the
    evaluation at round ``ends[i]`` (the end of task ``i``), or at the latest round before it
    that has one (a client that missed an evaluation), but never before ``starts[i]``, the round
    task ``i`` arrived (an evaluation from before it was trained is not its row). Entries nobody
    measured are NaN.

    >>> matrix_at({2: [0.9, 0.1], 3: [0.8, 0.2], 4: [0.5, 0.9]}, [3, 4]).tolist()
    [[0.8, 0.2], [0.5, 0.9]]
    >>> matrix_at({2: [0.9, 0.1], 3: [0.8, 0.2]}, [3, 4], starts=[1, 4]).tolist()
    [[0.8, 0.2], [nan, nan]]
    """
    tasks = len(ends)
    if starts is not None and len(starts) != tasks:
        raise ValueError(f"starts: expected one round per task ({tasks}), got {len(starts)}")
    out = np.full((tasks, tasks), np.nan)
    rounds = sorted(history)
    for i, end in enumerate(ends):
        first = starts[i] if starts is not None else -np.inf
        seen = [r for r in rounds if first <= r <= end]
        if not seen:
            continue
        row = [np.nan if v is None or v < 0 else float(v) for v in history[seen[-1]]]
        if len(row) != tasks:
            raise ValueError(f"history: expected {tasks} accuracies per round, got {len(row)}")
        out[i] = row
    return out


def pooled(values: Sequence[Any], examples: Sequence[Sequence[int]]) -> np.ndarray:
    """Example-weighted mean over clients, entry by entry; NaN where no client has a value.

    ``values[k]`` is client ``k``'s matrix (``T x T``) or vector (``T``); ``examples[k][j]``
    its test examples of task ``j``, the weight of its column ``j``.

    >>> pooled([[1.0, 0.0], [0.5, np.nan]], [[1, 3], [3, 0]]).tolist()
    [0.625, 0.0]
    """
    if len(values) == 0 or len(values) != len(examples):
        raise ValueError(
            f"examples: expected one row per client ({len(values)}), got {len(examples)}"
        )
    stack = np.asarray(values, dtype=float)
    weight = np.asarray(examples, dtype=float)
    if weight.shape != (len(stack), stack.shape[-1]):
        raise ValueError(
            f"examples: expected {stack.shape[-1]} test-example counts per client (one per "
            f"task), got shape {weight.shape}"
        )
    if stack.ndim == 3:
        weight = np.broadcast_to(weight[:, None, :], stack.shape)
    usable = np.isfinite(stack) & (weight > 0)
    total = np.where(usable, weight, 0.0).sum(axis=0)
    summed = np.where(usable, stack * weight, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, summed / np.where(total > 0, total, 1.0), np.nan)
