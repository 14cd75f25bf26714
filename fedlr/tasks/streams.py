"""Task streams for continual federated learning: one client's data cut into tasks over time.

Three standard settings (van de Ven & Tolias 2019, "Three scenarios for continual learning"):

* ``class-incremental``: split digits, ``num-tasks`` tasks of ``10 / num-tasks`` classes each
  (5 tasks of 2 classes: {0, 1}, {2, 3}, ...); the model must tell all classes seen so far apart.
* ``task-incremental``: the same split, but the task is known at test time: predictions are
  restricted to the task's own classes (:func:`task_mask`, a multi-head evaluation).
* ``permuted`` / ``rotated`` (domain-incremental): every task holds all ten digits; task ``t``
  applies a fixed pixel permutation (task 0: identity; Goodfellow et al. 2013) or rotates the
  8x8 image by ``t * max-angle / (num-tasks - 1)`` degrees (``scipy.ndimage.rotate``). The
  permutation of a task is the same at every client (seeded by the run seed and the task).

Clients are stateless between messages, so nothing here keeps state: a task's data, and the
replay sample a client mixes in (:func:`replay_indices`), are functions of the client's data,
the task index and the seed. :func:`arrival_rounds` gives the round each task arrives at each
client, together or staggered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from fedlr.config import STREAMS, stagger_limit
from fedlr.data.federated import ClientData


@dataclass(frozen=True, eq=False)
class Task:
    """One task of one client: its classes and its train/test arrays."""

    index: int
    classes: tuple[int, ...]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    train_index: np.ndarray  # rows of the client's train split this task's train set comes from


def _check_stream(kind: str, num_tasks: int, num_classes: int) -> None:
    if kind not in STREAMS:
        raise ValueError(f"stream: expected {', '.join(STREAMS)}, got {kind!r}")
    if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(f"num_tasks: expected an integer >= 1, got {num_tasks!r}")
    if kind in ("class-incremental", "task-incremental") and num_classes % num_tasks:
        raise ValueError(
            f"num_tasks: expected a divisor of the {num_classes} classes for a split stream, "
            f"got {num_tasks}"
        )


def task_classes(num_tasks: int, num_classes: int = 10) -> list[tuple[int, ...]]:
    """The classes of each task of a split stream, in label order.

    >>> task_classes(5)
    [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    """
    _check_stream("class-incremental", num_tasks, num_classes)
    per = num_classes // num_tasks
    return [tuple(range(t * per, (t + 1) * per)) for t in range(num_tasks)]


def task_mask(classes: Sequence[int], num_classes: int = 10) -> np.ndarray:
    """Boolean mask over the logits that keeps a task's own classes (task-incremental heads).

    >>> task_mask((2, 3), 5).tolist()
    [False, False, True, True, False]
    """
    mask = np.zeros(num_classes, dtype=bool)
    mask[list(classes)] = True
    return mask


def permutation(num_features: int, task: int, seed: int) -> np.ndarray:
    """The pixel permutation of ``task`` (identity for task 0), the same at every client."""
    if task == 0:
        return np.arange(num_features)
    return np.random.default_rng([seed, 0x5EED, task]).permutation(num_features)


def rotate(x: np.ndarray, angle: float, shape: tuple[int, int] = (8, 8)) -> np.ndarray:
    """Rotate flattened images ``x`` (``(N, H*W)``) by ``angle`` degrees about their centre.

    Bilinear (``order=1``), same size, pixels outside the image are 0; ``angle == 0`` returns
    ``x`` unchanged.
    """
    if angle == 0:
        return x
    from scipy import ndimage  # only rotated streams need it

    images = x.reshape(-1, *shape)
    turned = ndimage.rotate(images, angle, axes=(2, 1), reshape=False, order=1, mode="constant")
    return turned.reshape(len(x), -1).astype(x.dtype)


def build_stream(
    kind: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    num_tasks: int,
    seed: int,
    num_classes: int = 10,
    max_angle: float = 90.0,
    image_shape: tuple[int, int] = (8, 8),
) -> list[Task]:
    """Cut one client's train and test data into ``num_tasks`` tasks of stream ``kind``.

    Split streams deal examples by their observed label ``y_train`` (a client's noisy labels
    included, as the client itself would see them) and keep the examples of each task's
    classes (a client without any example of a task's classes gets an empty task). Domain
    streams transform all examples per task.
    """
    _check_stream(kind, num_tasks, num_classes)
    tasks = []
    if kind in ("class-incremental", "task-incremental"):
        for t, classes in enumerate(task_classes(num_tasks, num_classes)):
            keep_train, keep_test = np.isin(y_train, classes), np.isin(y_test, classes)
            tasks.append(
                Task(
                    t,
                    classes,
                    x_train[keep_train],
                    y_train[keep_train],
                    x_test[keep_test],
                    y_test[keep_test],
                    np.flatnonzero(keep_train),
                )
            )
        return tasks
    everything = tuple(range(num_classes))
    for t in range(num_tasks):
        if kind == "permuted":
            order = permutation(x_train.shape[1], t, seed)
            train, test = x_train[:, order], x_test[:, order]
        else:
            angle = t * max_angle / (num_tasks - 1) if num_tasks > 1 else 0.0
            train, test = rotate(x_train, angle, image_shape), rotate(x_test, angle, image_shape)
        tasks.append(Task(t, everything, train, y_train, test, y_test, np.arange(len(y_train))))
    return tasks


def arrival_rounds(
    num_rounds: int, num_tasks: int, num_clients: int, stagger: int = 0
) -> np.ndarray:
    """First round of each task at each client, shape ``(num_clients, num_tasks)``.

    Together (``stagger = 0``) task ``t`` arrives everywhere in round
    ``1 + floor(t * num_rounds / num_tasks)``. Staggered, every client starts task 0 in round 1
    and client ``k`` gets every later task ``min(k * stagger, L - 1)`` rounds after client 0,
    where ``L`` is the shortest task's length, so each task still has at least one round at
    every client (:func:`stagger_limit`).

    >>> arrival_rounds(10, 2, 3, stagger=2).tolist()
    [[1, 6], [1, 8], [1, 10]]
    """
    for name, value, low in (
        ("num_rounds", num_rounds, 1),
        ("num_tasks", num_tasks, 1),
        ("num_clients", num_clients, 1),
        ("stagger", stagger, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
    if num_tasks > num_rounds:
        raise ValueError(
            f"num_tasks: expected at most num_rounds ({num_rounds}) tasks, got {num_tasks}"
        )
    base = np.array([1 + (t * num_rounds) // num_tasks for t in range(num_tasks)])
    offsets = np.minimum(np.arange(num_clients) * stagger, stagger_limit(num_rounds, num_tasks))
    starts = base[None, :] + offsets[:, None]
    starts[:, 0] = 1  # task 0 is there from the start
    return starts


def replay_indices(
    task_sizes: Sequence[int], task: int, capacity: int, seed: int
) -> list[np.ndarray]:
    """A small replay sample of the tasks before ``task``: indices into their train sets.

    ``capacity`` examples in all, split as evenly as the earlier tasks allow, drawn without
    replacement and seeded by ``(seed, task)``; the same call always returns the same sample
    (a stateless client rebuilds its buffer each round). Entry ``j`` is for task ``j < task``.

    >>> [len(i) for i in replay_indices([10, 10, 3], task=2, capacity=8, seed=0)]
    [4, 4]
    """
    if capacity < 0:
        raise ValueError(f"capacity: expected an integer >= 0, got {capacity!r}")
    if not 0 <= task <= len(task_sizes):
        raise ValueError(f"task: expected 0..{len(task_sizes)}, got {task!r}")
    rng = np.random.default_rng([seed, 0xB0FF, task])
    earlier = list(task_sizes[:task])
    share = [0] * len(earlier)
    left = capacity
    while left > 0 and any(share[j] < earlier[j] for j in range(len(earlier))):
        for j in range(len(earlier)):
            if left > 0 and share[j] < earlier[j]:
                share[j] += 1
                left -= 1
    return [
        np.sort(rng.choice(earlier[j], size=share[j], replace=False)) for j in range(len(earlier))
    ]


def current_task(starts: Sequence[int], server_round: int) -> int:
    """The task a client trains on in ``server_round``: the last one that has arrived.

    ``starts`` is the client's row of :func:`arrival_rounds` (task 0 starts in round 1).

    >>> current_task([1, 6], 5), current_task([1, 6], 6)
    (0, 1)
    """
    return max(0, int(np.searchsorted(np.asarray(starts), server_round, side="right")) - 1)


def task_ends(starts: np.ndarray, num_rounds: int) -> np.ndarray:
    """Last round of each task at each client, ``(clients, tasks)``: the round before the next.

    ``starts`` is :func:`arrival_rounds`'s array (one row, 1-D, is read as one client).

    >>> task_ends(arrival_rounds(10, 2, 2, stagger=2), 10).tolist()
    [[5, 10], [7, 10]]
    """
    starts = np.atleast_2d(np.asarray(starts))
    last = np.full((starts.shape[0], 1), num_rounds)
    return np.concatenate([starts[:, 1:] - 1, last], axis=1)


def snapshot_rounds(starts: np.ndarray, num_rounds: int) -> list[int]:
    """The round each task has ended at every client: where the global model is kept.

    The latest client's end of each task (together: the round before the next task arrives;
    the last task ends with the run).

    >>> snapshot_rounds(arrival_rounds(10, 2, 2, stagger=2), 10)
    [7, 10]
    """
    return [int(v) for v in task_ends(starts, num_rounds).max(axis=0)]


def training_view(
    data: ClientData, tasks: Sequence[Task], task: int, replay: int, seed: int
) -> tuple[ClientData, np.ndarray]:
    """The client's data as one round of continual training sees it.

    Train split: task ``task``'s train examples followed by a replay sample of ``replay``
    examples of the earlier tasks (:func:`replay_indices`, seeded by ``seed``); test split:
    task ``task``'s test examples. Clean labels (``y_train_clean``) follow the same rows, so
    noise estimators keep working. Also returns each train example's task index (per-task
    output heads of ``task-incremental`` mask the logits by it).
    """
    current = tasks[task]
    sizes = [len(t.y_train) for t in tasks]
    picks = replay_indices(sizes, task, replay, seed) if replay > 0 else []
    parts = [(current, np.arange(len(current.y_train)))]
    parts += [(tasks[j], idx) for j, idx in enumerate(picks) if len(idx)]
    x = np.concatenate([t.x_train[i] for t, i in parts]).astype(data.x_train.dtype, copy=False)
    y = np.concatenate([t.y_train[i] for t, i in parts]).astype(data.y_train.dtype, copy=False)
    clean = np.concatenate([data.y_train_clean[t.train_index[i]] for t, i in parts])
    owner = np.concatenate([np.full(len(i), t.index) for t, i in parts]).astype(np.int64)
    view = replace(
        data,
        x_train=x,
        y_train=y,
        y_train_clean=clean.astype(data.y_train_clean.dtype, copy=False),
        x_test=current.x_test,
        y_test=current.y_test,
    )
    return view, owner


def logit_masks(tasks: Sequence[Task], owner: np.ndarray, num_classes: int = 10) -> np.ndarray:
    """Per-example mask of the logits of its task's classes, shape ``(len(owner), classes)``."""
    heads = np.stack([task_mask(t.classes, num_classes) for t in tasks])
    return heads[np.asarray(owner, dtype=np.int64)]
