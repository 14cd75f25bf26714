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
    forward_transfer,
    per_client,
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


def test_doctests():
    result = doctest.testmod(fedlr.metrics.continual)
    assert result.attempted > 0
    assert result.failed == 0
