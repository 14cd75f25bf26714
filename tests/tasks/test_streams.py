"""fedlr.tasks.streams: split, permuted and rotated digits, arrival rounds, replay samples."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fedlr.tasks.streams
from fedlr import config
from fedlr.data.datasets import load_digits_arrays
from fedlr.data.federated import ClientData
from fedlr.tasks.streams import (
    arrival_rounds,
    build_stream,
    current_task,
    logit_masks,
    permutation,
    replay_indices,
    rotate,
    snapshot_rounds,
    task_classes,
    task_ends,
    task_mask,
    training_view,
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
    assert staggered[:, 0].tolist() == [1, 1, 1, 1]  # task 0 is there from round 1
    assert staggered[:, 1].tolist() == [7, 9, 11, 12]  # capped at the shortest task's length - 1
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


# -- the stream a client builds ----------------------------------------------------------------


@pytest.mark.parametrize("kind", config.STREAMS)
def test_every_configurable_stream_builds(kind):
    tasks = build_stream(kind, XTR[:60], YTR[:60], XTE[:30], YTE[:30], num_tasks=2, seed=0)
    assert [t.index for t in tasks] == [0, 1]
    assert sum(len(t.y_train) for t in tasks) == 60 * (1 if "incremental" in kind else 2)


@pytest.mark.parametrize("kind", ["class-incremental", "task-incremental"])
def test_split_task_train_index_gives_its_rows_of_the_train_split(kind):
    tasks = build_stream(kind, XTR, YTR, XTE, YTE, num_tasks=5, seed=0)
    for t in tasks:
        np.testing.assert_array_equal(YTR[t.train_index], t.y_train)
        np.testing.assert_array_equal(XTR[t.train_index], t.x_train)
        assert np.all(np.diff(t.train_index) > 0)  # in the client's order
    # together the tasks hold every row once
    rows = np.concatenate([t.train_index for t in tasks])
    assert sorted(rows.tolist()) == list(range(len(YTR)))


@pytest.mark.parametrize("kind", ["permuted", "rotated"])
def test_domain_task_train_index_is_every_row(kind):
    tasks = build_stream(kind, XTR[:100], YTR[:100], XTE, YTE, num_tasks=3, seed=0)
    for t in tasks:
        np.testing.assert_array_equal(t.train_index, np.arange(100))
        np.testing.assert_array_equal(t.y_train, YTR[:100])


def test_a_client_without_a_tasks_classes_gets_an_empty_task():
    only_low = np.isin(YTR, (0, 1, 2, 3))
    tasks = build_stream(
        "class-incremental", XTR[only_low], YTR[only_low], XTE, YTE, num_tasks=5, seed=0
    )
    assert [len(t.y_train) for t in tasks][2:] == [0, 0, 0]
    assert tasks[4].train_index.shape == (0,) and tasks[4].x_train.shape == (0, 64)


# -- rounds: current task, task ends, snapshots --------------------------------------------------


@pytest.mark.parametrize(
    ("starts", "server_round", "task"),
    [
        ([1, 6], 1, 0),
        ([1, 6], 5, 0),
        ([1, 6], 6, 1),  # the round a task arrives is its first
        ([1, 6], 10, 1),
        ([1, 6], 99, 1),  # the last task goes on
        ([3, 8], 1, 0),  # before its first task arrives a client trains on task 0
        ([3, 8], 7, 0),
        ([3, 8], 8, 1),
        ([1, 4, 7], 7, 2),
    ],
)
def test_current_task(starts, server_round, task):
    assert current_task(starts, server_round) == task
    assert current_task(np.asarray(starts), server_round) == task


def test_task_ends_and_snapshot_rounds_worked_by_hand():
    together = arrival_rounds(30, 5, 2)  # tasks start at 1, 7, 13, 19, 25
    assert task_ends(together, 30).tolist() == [[6, 12, 18, 24, 30]] * 2
    assert snapshot_rounds(together, 30) == [6, 12, 18, 24, 30]
    # staggered by 2: the second client's tasks start at 3, 9, ...; the last client decides
    staggered = arrival_rounds(30, 5, 2, stagger=2)
    assert task_ends(staggered, 30).tolist() == [[6, 12, 18, 24, 30], [8, 14, 20, 26, 30]]
    assert snapshot_rounds(staggered, 30) == [8, 14, 20, 26, 30]
    assert snapshot_rounds(arrival_rounds(7, 1, 3, stagger=4), 7) == [7]


@given(
    st.integers(min_value=1, max_value=40).flatmap(
        lambda rounds: st.tuples(
            st.just(rounds),
            st.integers(min_value=1, max_value=rounds),
            st.integers(min_value=1, max_value=5),
            st.integers(min_value=0, max_value=6),
        )
    )
)
def test_every_round_belongs_to_the_task_between_its_start_and_end(args):
    rounds, num_tasks, num_clients, stagger = args
    starts = arrival_rounds(rounds, num_tasks, num_clients, stagger)
    ends = task_ends(starts, rounds)
    assert ends.shape == starts.shape and np.all(ends >= starts) and np.all(ends <= rounds)
    for k in range(num_clients):
        for t in range(num_tasks):
            for r in (starts[k, t], ends[k, t]):
                assert current_task(starts[k], int(r)) == t
    snapshots = snapshot_rounds(starts, rounds)
    assert snapshots == ends.max(axis=0).tolist() and snapshots[-1] == rounds
    assert all(a < b for a, b in zip(snapshots, snapshots[1:], strict=False))
    # at its snapshot round every client has finished the task (trains a later one, or the run ends)
    for t, r in enumerate(snapshots[:-1]):
        assert all(current_task(starts[k], r) >= t for k in range(num_clients))
        assert all(current_task(starts[k], r + 1) > t for k in range(num_clients))


# -- one round's training view -------------------------------------------------------------------


@pytest.fixture(scope="module")
def noisy_client() -> ClientData:
    """A client whose train labels are a quarter flipped (stream cut by the noisy labels)."""
    rng = np.random.default_rng(11)
    x_train, clean = XTR[:400], YTR[:400]
    flip = rng.random(len(clean)) < 0.25
    noisy = np.where(flip, (clean + rng.integers(1, 10, len(clean))) % 10, clean)
    return ClientData(
        partition_id=3,
        role="noisy",
        noise_rate=0.25,
        flip_fraction=float(flip.mean()),
        feature_sigma=0.0,
        x_train=x_train,
        y_train=noisy.astype(np.int64),
        y_train_clean=clean,
        x_test=XTE[:200],
        y_test=YTE[:200],
    )


def stream_of(data: ClientData, kind: str, num_tasks: int = 5, seed: int = 0):
    return build_stream(
        kind, data.x_train, data.y_train, data.x_test, data.y_test, num_tasks=num_tasks, seed=seed
    )


@pytest.mark.parametrize("task", [0, 2])
def test_training_view_without_replay_is_the_task(noisy_client, task):
    tasks = stream_of(noisy_client, "class-incremental")
    view, owner = training_view(noisy_client, tasks, task, replay=0, seed=1)
    current = tasks[task]
    np.testing.assert_array_equal(view.x_train, current.x_train)
    np.testing.assert_array_equal(view.y_train, current.y_train)
    np.testing.assert_array_equal(
        view.y_train_clean, noisy_client.y_train_clean[current.train_index]
    )
    np.testing.assert_array_equal(view.x_test, current.x_test)
    np.testing.assert_array_equal(view.y_test, current.y_test)
    np.testing.assert_array_equal(owner, np.full(len(current.y_train), task))
    assert owner.dtype == np.int64
    assert (view.partition_id, view.role, view.noise_rate) == (3, "noisy", 0.25)
    assert view.x_train.dtype == np.float32 and view.y_train.dtype == np.int64


def test_replay_at_the_first_task_gives_just_the_task(noisy_client):
    tasks = stream_of(noisy_client, "class-incremental")
    view, owner = training_view(noisy_client, tasks, 0, replay=10, seed=1)
    assert view.num_train == len(tasks[0].y_train) and set(owner.tolist()) == {0}


def test_training_view_appends_a_replay_sample_of_earlier_tasks(noisy_client):
    tasks = stream_of(noisy_client, "class-incremental")
    view, owner = training_view(noisy_client, tasks, 2, replay=6, seed=1)
    n = len(tasks[2].y_train)
    picks = replay_indices([len(t.y_train) for t in tasks], 2, 6, seed=1)
    assert [len(i) for i in picks] == [3, 3]
    # the current task first, then 3 examples of task 0 and 3 of task 1
    assert owner.tolist() == [2] * n + [0] * 3 + [1] * 3
    rows = np.concatenate([tasks[2].train_index] + [tasks[j].train_index[picks[j]] for j in (0, 1)])
    np.testing.assert_array_equal(view.x_train, noisy_client.x_train[rows])
    np.testing.assert_array_equal(view.y_train, noisy_client.y_train[rows])
    assert set(view.y_train[n:].tolist()) <= {0, 1, 2, 3}
    # clean labels follow the same rows (and differ from the noisy ones somewhere)
    np.testing.assert_array_equal(view.y_train_clean, noisy_client.y_train_clean[rows])
    assert not np.array_equal(view.y_train_clean, view.y_train)
    # the test split is the current task's only
    np.testing.assert_array_equal(view.y_test, tasks[2].y_test)


def test_replay_is_seeded(noisy_client):
    tasks = stream_of(noisy_client, "class-incremental")
    first, owner = training_view(noisy_client, tasks, 3, replay=9, seed=5)
    again, owner_again = training_view(noisy_client, tasks, 3, replay=9, seed=5)
    np.testing.assert_array_equal(first.x_train, again.x_train)
    np.testing.assert_array_equal(first.y_train_clean, again.y_train_clean)
    np.testing.assert_array_equal(owner, owner_again)
    other, _ = training_view(noisy_client, tasks, 3, replay=9, seed=6)
    assert not np.array_equal(first.x_train, other.x_train)


def test_permuted_replay_rows_keep_their_tasks_permutation(noisy_client):
    tasks = stream_of(noisy_client, "permuted", num_tasks=3, seed=4)
    view, owner = training_view(noisy_client, tasks, 2, replay=8, seed=1)
    picks = replay_indices([400, 400, 400], 2, 8, seed=1)
    x = noisy_client.x_train
    np.testing.assert_array_equal(view.x_train[owner == 2], x[:, permutation(64, 2, 4)])
    np.testing.assert_array_equal(view.x_train[owner == 0], x[picks[0]])  # task 0: identity
    np.testing.assert_array_equal(view.x_train[owner == 1], x[picks[1]][:, permutation(64, 1, 4)])
    np.testing.assert_array_equal(
        view.y_train_clean[owner == 1], noisy_client.y_train_clean[picks[1]]
    )
    np.testing.assert_array_equal(view.x_test, noisy_client.x_test[:, permutation(64, 2, 4)])


def test_logit_masks_keep_each_examples_task_head(noisy_client):
    tasks = stream_of(noisy_client, "task-incremental")
    masks = logit_masks(tasks, np.array([2, 2, 0, 4]))
    assert masks.shape == (4, 10) and masks.dtype == bool
    assert [np.flatnonzero(row).tolist() for row in masks] == [[4, 5], [4, 5], [0, 1], [8, 9]]
    # with the training view's owners: every example's own label is inside its head
    view, owner = training_view(noisy_client, tasks, 3, replay=10, seed=0)
    heads = logit_masks(tasks, owner)
    assert heads[np.arange(view.num_train), view.y_train].all()
    assert heads.sum(axis=1).tolist() == [2] * view.num_train


def test_domain_stream_masks_keep_every_class(noisy_client):
    tasks = stream_of(noisy_client, "permuted", num_tasks=3)
    assert logit_masks(tasks, np.array([0, 1, 2])).all()
