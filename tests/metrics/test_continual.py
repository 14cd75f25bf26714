"""fedlr.metrics.continual: GEM's ACC / BWT / FWT and Chaudhry's forgetting on worked matrices.

Worked example (3 tasks), rows = after training task i, columns = task j:

    R = [[0.90, 0.20, 0.10],
         [0.70, 0.85, 0.15],
         [0.60, 0.80, 0.95]],   baseline b = (0.10, 0.10, 0.10)

ACC = (0.60 + 0.80 + 0.95) / 3 = 0.783333...; BWT = ((0.60 - 0.90) + (0.80 - 0.85)) / 2 = -0.175;
FWT = ((0.20 - 0.10) + (0.15 - 0.10)) / 2 = 0.075; forgetting after task 2: task 0
max(0.90, 0.70) - 0.60 = 0.30, task 1 max(0.20, 0.85) - 0.80 = 0.05, mean 0.175; after task 1:
task 0 0.90 - 0.70 = 0.20. A_1 = (0.70 + 0.85) / 2 = 0.775.
"""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import fedlr.metrics.continual
from fedlr.metrics.continual import (
    average_accuracy,
    backward_transfer,
    forgetting,
    forgetting_per_task,
    learning_accuracy,
    forward_transfer,
    matrix_at,
    per_client,
    pooled,
    summary,
)

R = [[0.90, 0.20, 0.10], [0.70, 0.85, 0.15], [0.60, 0.80, 0.95]]
B = [0.10, 0.10, 0.10]


def test_worked_example():
    assert average_accuracy(R) == pytest.approx(2.35 / 3)
    assert average_accuracy(R, after=1) == pytest.approx(0.775)
    assert backward_transfer(R) == pytest.approx(-0.175)
    assert forward_transfer(R, B) == pytest.approx(0.075)
    assert forgetting_per_task(R) == pytest.approx([0.30, 0.05])
    assert forgetting(R) == pytest.approx(0.175)
    assert forgetting_per_task(R, after=1) == pytest.approx([0.20])
    assert forgetting_per_task(R, after=0) == []
    assert learning_accuracy(R) == pytest.approx((0.90 + 0.85 + 0.95) / 3)
    assert summary(R)["learning_acc"] == learning_accuracy(R)


def test_max_based_forgetting_is_at_least_minus_bwt_per_task():
    # Task 0 peaked after task 1 (0.95), above its just-trained 0.90: Chaudhry counts from the peak
    peaked = [[0.90, 0.1, 0.1], [0.95, 0.8, 0.1], [0.50, 0.9, 0.7]]
    assert forgetting_per_task(peaked) == pytest.approx([0.45, -0.1])
    assert 0.90 - 0.50 < forgetting_per_task(peaked)[0]


def test_summary_and_one_task():
    full = summary(R, B)
    assert full["acc"] == pytest.approx(2.35 / 3) and full["fwt"] == pytest.approx(0.075)
    assert summary(R)["fwt"] is None  # no baseline
    assert summary([[0.8]]) == {
        "acc": 0.8,
        "learning_acc": 0.8,
        "bwt": None,
        "fwt": None,
        "forgetting": None,
        "forgetting_per_task": [],
    }


def test_per_client():
    other = np.eye(3).tolist()
    rows = per_client([R, other], [B, [0.0, 0.0, 0.0]])
    assert rows[0] == summary(R, B)
    assert rows[1]["bwt"] == pytest.approx(-1.0) and rows[1]["forgetting"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="baselines: expected one per client"):
        per_client([R], [B, B])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: average_accuracy([[0.1, 0.2]]), "R: expected a square T x T matrix"),
        (lambda: average_accuracy([[float("nan")]]), "R: expected finite accuracies"),
        (lambda: average_accuracy(R, after=3), "after: expected a task index in 0..2"),
        (lambda: average_accuracy(R, after=True), "after: expected a task index in 0..2"),
        (lambda: backward_transfer([[0.5]]), "R: backward transfer needs at least 2 tasks"),
        (lambda: forward_transfer(R, [0.1]), "baseline: expected 3 finite accuracies"),
        (lambda: forgetting(R, after=0), "after: forgetting needs at least one earlier task"),
    ],
)
def test_bad_input_names_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()


unit = st.floats(min_value=0.0, max_value=1.0)


@given(
    st.integers(min_value=2, max_value=6).flatmap(lambda t: arrays(float, (t, t), elements=unit))
)
def test_properties(matrix):
    tasks = len(matrix)
    # a model that never changes after training each task: no forgetting, zero BWT
    frozen = np.tril(np.repeat(np.diag(matrix)[None, :], tasks, axis=0))
    assert backward_transfer(frozen) == pytest.approx(0.0, abs=1e-12)
    assert forgetting(frozen) == pytest.approx(0.0, abs=1e-12)
    # max-based forgetting of each task is at least its drop since just after training
    per_task = forgetting_per_task(matrix)
    for j, value in enumerate(per_task):
        assert value >= matrix[j, j] - matrix[-1, j] - 1e-12
    # BWT is the mean drop (sign flipped): forgetting >= -BWT
    assert forgetting(matrix) >= -backward_transfer(matrix) - 1e-9  # two summation orders
    assert 0.0 <= average_accuracy(matrix) <= 1.0


# -- accuracy matrices from per-round evaluations, pooled over clients ---------------------------


def test_matrix_at_takes_the_latest_round_at_or_before_each_end():
    history = {4: [0.5, 0.9], 1: [0.9, 0.1], 3: [0.8, 0.2]}  # in any order
    # end 2: round 1 (no evaluation in round 2); end 3: round 3 itself, not round 4
    np.testing.assert_array_equal(matrix_at(history, [2, 3]), [[0.9, 0.1], [0.8, 0.2]])
    np.testing.assert_array_equal(matrix_at(history, [3, 9]), [[0.8, 0.2], [0.5, 0.9]])


def test_matrix_at_is_nan_where_nothing_was_measured():
    history = {2: [0.7, None, 0.1], 5: [0.6, -1.0, 0.3]}
    matrix = matrix_at(history, [1, 3, 6])
    assert matrix.shape == (3, 3)
    assert np.isnan(matrix[0]).all()  # no evaluation by round 1
    np.testing.assert_array_equal(matrix[1], [0.7, np.nan, 0.1])  # None: no test example
    np.testing.assert_array_equal(matrix[2], [0.6, np.nan, 0.3])  # negative: no test example
    assert np.isnan(matrix_at({}, [1, 2])).all()
    assert matrix_at({1: [0.0, 0.25]}, [1, 2]).tolist() == [[0.0, 0.25], [0.0, 0.25]]


@pytest.mark.parametrize(("row", "count"), [([0.5], 1), ([0.5, 0.5, 0.5], 3)])
def test_matrix_at_refuses_a_round_of_the_wrong_length(row, count):
    with pytest.raises(ValueError, match=f"history: expected 2 accuracies per round, got {count}"):
        matrix_at({1: [0.9, 0.1], 2: row}, [1, 2])


@given(
    st.dictionaries(
        st.integers(min_value=1, max_value=12),
        st.lists(unit, min_size=3, max_size=3),
        max_size=8,
    ),
    st.lists(st.integers(min_value=1, max_value=12), min_size=3, max_size=3),
)
def test_matrix_at_rows_are_the_last_evaluation_by_each_end(history, ends):
    matrix = matrix_at(history, ends)
    for i, end in enumerate(ends):
        seen = [r for r in history if r <= end]
        expected = history[max(seen)] if seen else [np.nan] * 3
        np.testing.assert_array_equal(matrix[i], expected)


def test_pooled_weights_by_test_examples():
    # column 0: (0.8 * 1 + 0.4 * 3) / 4 = 0.5; column 1: (0.2 * 3 + 0.6 * 1) / 4 = 0.3
    assert pooled([[0.8, 0.2], [0.4, 0.6]], [[1, 3], [3, 1]]).tolist() == pytest.approx([0.5, 0.3])
    # equal weights: the plain mean; one client: itself
    assert pooled([[0.8, 0.2], [0.4, 0.6]], [[2, 5], [2, 5]]).tolist() == pytest.approx([0.6, 0.4])
    assert pooled([[0.8, 0.2]], [[7, 1]]).tolist() == pytest.approx([0.8, 0.2])


def test_pooled_matrices_weight_each_column_by_its_tasks_examples():
    a = [[1.0, np.nan], [0.5, 0.25]]  # 1 test example of task 0, 2 of task 1
    b = [[0.0, np.nan], [1.0, 0.75]]  # 3 of task 0, 2 of task 1
    result = pooled([a, b], [[1, 2], [3, 2]])
    assert result.shape == (2, 2)
    # (0,0): (1*1 + 0*3)/4; (1,0): (0.5*1 + 1.0*3)/4; (1,1): (0.25*2 + 0.75*2)/4
    np.testing.assert_allclose(result, [[0.25, np.nan], [0.875, 0.5]])


def test_pooled_skips_nan_and_zero_weight_entries():
    # a NaN with weight and a value without weight both drop out; nothing left: NaN
    result = pooled([[np.nan, 0.9, 0.3], [0.4, 0.1, 0.7]], [[5, 0, 0], [1, 2, 0]])
    np.testing.assert_allclose(result, [0.4, 0.1, np.nan])
    assert np.isnan(pooled([[np.nan]], [[4]])).all()


@pytest.mark.parametrize(
    ("values", "examples", "message"),
    [
        ([[0.5, 0.5], [0.5, 0.5]], [[1, 1]], r"examples: expected one row per client \(2\), got 1"),
        ([[0.5, 0.5]], [[1, 1], [1, 1]], r"examples: expected one row per client \(1\), got 2"),
        ([], [], r"examples: expected one row per client \(0\), got 0"),
        ([[0.5, 0.5], [0.5, 0.5]], [[1, 1, 1], [1, 1, 1]], None),  # 3 weights for 2 tasks
        ([[0.5, 0.5], [0.5, 0.5]], [[1, 1], [1]], None),
        ([[[0.5, 0.5], [0.5, 0.5]]], [[1, 1, 1]], None),
    ],
)
def test_pooled_refuses_mismatched_lengths(values, examples, message):
    with pytest.raises(ValueError, match=message):
        pooled(values, examples)


@pytest.mark.parametrize(
    "values",
    [[[1.0, 0.0], [0.5, 0.5]], [[[1.0, 0.0], [0.5, 0.5]], [[0.0, 1.0], [0.5, 0.5]]]],
    ids=["vectors", "matrices"],
)
def test_pooled_refuses_one_weight_for_several_tasks(values):
    # one weight per client is not one per task: numpy would broadcast it over every column
    with pytest.raises(ValueError, match="examples"):
        pooled(values, [[1], [3]])


@given(
    st.integers(min_value=1, max_value=4).flatmap(
        lambda tasks: st.tuples(
            arrays(float, (3, tasks), elements=unit),
            arrays(int, (3, tasks), elements=st.integers(min_value=1, max_value=50)),
        )
    )
)
def test_pooled_lies_between_the_clients_and_ignores_their_order(args):
    values, examples = args
    result = pooled(values.tolist(), examples.tolist())
    assert np.all(result >= values.min(axis=0) - 1e-12)
    assert np.all(result <= values.max(axis=0) + 1e-12)
    flipped = pooled(values[::-1].tolist(), examples[::-1].tolist())
    np.testing.assert_allclose(flipped, result, rtol=1e-12)


def test_pooled_takes_numpy_arrays():
    # a stack of per-client matrices is the natural input; it must pool as the nested lists do
    values = np.array([[0.8, 0.2], [0.4, 0.6]])
    examples = np.array([[1, 3], [3, 1]])
    np.testing.assert_allclose(pooled(values, examples), [0.5, 0.3])
    np.testing.assert_allclose(pooled(list(values), list(examples)), [0.5, 0.3])


def test_doctests():
    result = doctest.testmod(fedlr.metrics.continual)
    assert result.attempted > 0
    assert result.failed == 0


def test_matrix_at_never_takes_a_row_from_before_the_task_arrived():
    # task 1 arrives in round 4; its end-of-task evaluation (round 5) is missing, and the latest
    # earlier evaluation (round 3) is from before the task was trained: the row stays NaN
    history = {2: [0.9, 0.1], 3: [0.8, 0.2], 6: [0.5, 0.9]}
    assert matrix_at(history, [3, 5]).tolist() == [[0.8, 0.2], [0.8, 0.2]]
    bounded = matrix_at(history, [3, 5], starts=[1, 4])
    assert bounded[0].tolist() == [0.8, 0.2] and np.isnan(bounded[1]).all()
    with pytest.raises(ValueError, match="starts: expected one round per task"):
        matrix_at(history, [3, 5], starts=[1])
