"""fedlr.tasks.streams: split, permuted and rotated digits, arrival rounds, replay samples."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

import fedlr.tasks.streams
from fedlr.data.datasets import load_digits_arrays
from fedlr.tasks.streams import (
    arrival_rounds,
    build_stream,
    permutation,
    replay_indices,
    rotate,
    task_classes,
    task_mask,
)

X, Y = load_digits_arrays()
XTR, YTR, XTE, YTE = X[:1200], Y[:1200], X[1200:], Y[1200:]


@pytest.mark.parametrize("kind", ["class-incremental", "task-incremental"])
def test_split_stream_partitions_the_data_by_class(kind):
    tasks = build_stream(kind, XTR, YTR, XTE, YTE, num_tasks=5, seed=0)
    assert [t.classes for t in tasks] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    for t in tasks:
        assert set(np.unique(t.y_train)) == set(t.classes) == set(np.unique(t.y_test))
    # every example in exactly one task, unchanged
    assert sum(len(t.y_train) for t in tasks) == len(YTR)
    assert sum(len(t.y_test) for t in tasks) == len(YTE)
    np.testing.assert_array_equal(tasks[1].x_train, XTR[np.isin(YTR, (2, 3))])


def test_permuted_stream_shares_one_permutation_per_task_across_clients():
    a = build_stream("permuted", XTR[:600], YTR[:600], XTE, YTE, num_tasks=3, seed=4)
    b = build_stream("permuted", XTR[600:], YTR[600:], XTE, YTE, num_tasks=3, seed=4)
    np.testing.assert_array_equal(a[0].x_train, XTR[:600])  # task 0: identity
    order = permutation(64, 2, seed=4)
    assert sorted(order) == list(range(64)) and not np.array_equal(order, np.arange(64))
    np.testing.assert_array_equal(a[2].x_train, XTR[:600][:, order])
    np.testing.assert_array_equal(b[2].x_train, XTR[600:][:, order])  # same at every client
    np.testing.assert_array_equal(a[2].x_test, b[2].x_test)
    assert all(t.classes == tuple(range(10)) for t in a)
    assert not np.array_equal(permutation(64, 1, 4), permutation(64, 2, 4))
    assert not np.array_equal(permutation(64, 1, 4), permutation(64, 1, 5))


def test_rotated_stream_turns_the_images():
    tasks = build_stream("rotated", XTR, YTR, XTE, YTE, num_tasks=3, seed=0, max_angle=90.0)
    np.testing.assert_array_equal(tasks[0].x_train, XTR)
    # 90 degrees of an 8x8 grid is exact: np.rot90 (counter-clockwise) of every image
    turned = np.rot90(XTR.reshape(-1, 8, 8), k=1, axes=(1, 2)).reshape(len(XTR), -1)
    np.testing.assert_allclose(tasks[2].x_train, turned, atol=1e-5)
    # 45 degrees: a real change that keeps the shape and the value range
    assert tasks[1].x_train.shape == XTR.shape
    assert not np.allclose(tasks[1].x_train, XTR)
    assert tasks[1].x_train.min() >= -1e-6 and tasks[1].x_train.max() <= 1 + 1e-6


def test_rotate_by_zero_is_the_identity():
    assert rotate(XTR, 0.0) is XTR


def test_task_mask_and_classes():
    assert task_mask((8, 9)).tolist() == [False] * 8 + [True, True]
    assert task_classes(2) == [(0, 1, 2, 3, 4), (5, 6, 7, 8, 9)]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: task_classes(3), "num_tasks: expected a divisor of the 10 classes"),
        (lambda: build_stream("mixed", XTR, YTR, XTE, YTE, num_tasks=2, seed=0), "stream:"),
        (lambda: arrival_rounds(3, 4, 2), "num_tasks: expected at most num_rounds (3)"),
        (lambda: arrival_rounds(10, 2, 2, stagger=-1), "stagger: expected an integer >= 0"),
        (lambda: replay_indices([5], task=3, capacity=2, seed=0), "task: expected 0..1"),
    ],
)
def test_bad_input_names_the_argument(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


def test_arrival_rounds_together_and_staggered():
    together = arrival_rounds(30, 5, 4)
    assert together.tolist() == [[1, 7, 13, 19, 25]] * 4
    staggered = arrival_rounds(30, 5, 4, stagger=2)
    assert staggered[:, 0].tolist() == [1, 3, 5, 6]  # capped at the shortest task's length - 1
    assert np.all(np.diff(staggered, axis=1) > 0)
    assert staggered.max() <= 30


def test_replay_sample_is_even_seeded_and_from_earlier_tasks_only():
    first = replay_indices([100, 100, 100, 100], task=3, capacity=30, seed=1)
    assert [len(i) for i in first] == [10, 10, 10]
    assert all(len(set(i)) == len(i) and i.max() < 100 for i in first)
    again = replay_indices([100, 100, 100, 100], task=3, capacity=30, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    other = replay_indices([100, 100, 100, 100], task=3, capacity=30, seed=2)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other, strict=True))
    assert replay_indices([100, 100], task=0, capacity=30, seed=1) == []
    # a small earlier task gives what it has; the rest goes to the others
    assert [len(i) for i in replay_indices([2, 100], task=2, capacity=10, seed=0)] == [2, 8]


def test_doctests():
    result = doctest.testmod(fedlr.tasks.streams)
    assert result.attempted > 0 and result.failed == 0
