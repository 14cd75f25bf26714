"""fedlr.metrics.degree: degree buckets, per-bucket accuracy and fairness, log-log slopes."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

import fedlr.metrics.degree
from fedlr.metrics.degree import (
    degree_bucket_fairness,
    degree_buckets,
    degree_quartile_accuracy,
    loglog_slope,
)

# ---------------------------------------------------------------------------------------------
# Buckets
# ---------------------------------------------------------------------------------------------


def test_quartiles_of_distinct_degrees_split_evenly():
    # Quantiles of 1..8 at 1/4, 1/2, 3/4 (linear): 2.75, 4.5, 6.25.
    buckets, edges = degree_buckets(np.arange(1, 9))
    assert edges.tolist() == [2.75, 4.5, 6.25]
    assert buckets.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_equal_degrees_share_a_bucket_and_an_edge_value_goes_down():
    # Degrees 1,1,2,2,3,3,4,4: edges 1.75, 2.5, 3.25; then 1,1,1,2,2,2,3,3: edges 1, 2, 2.25.
    assert degree_buckets([1, 1, 2, 2, 3, 3, 4, 4])[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    buckets, edges = degree_buckets([2, 1, 1, 2, 3, 1, 2, 3])
    assert edges.tolist() == [1.0, 2.0, 2.25]
    # d == 1 == e1 -> bucket 0; d == 2 == e2 -> bucket 1; d = 3 > 2.25 -> bucket 3.
    assert buckets.tolist() == [1, 0, 0, 1, 3, 0, 1, 3]


def test_many_lowest_degree_nodes_leave_empty_buckets():
    # 6 of 8 nodes of degree 1 (like Cora's leaves): e1 = e2 = e3 = 1 except the last, 1.25.
    buckets, edges = degree_buckets([1, 1, 1, 1, 1, 1, 2, 5])
    assert edges.tolist() == [1.0, 1.0, 1.25]
    assert buckets.tolist() == [0, 0, 0, 0, 0, 0, 3, 3]
    accuracy = degree_quartile_accuracy([1, 0, 1, 0, 1, 0, 1, 0], [1, 1, 1, 1, 1, 1, 2, 5])
    assert accuracy[0] == 0.5 and accuracy[3] == 0.5
    assert np.isnan(accuracy[1]) and np.isnan(accuracy[2])


def test_all_equal_degrees_fall_in_the_lowest_bucket():
    accuracy = degree_quartile_accuracy([True, False, True, True], [3, 3, 3, 3])
    assert accuracy[0] == 0.75
    assert all(np.isnan(value) for value in accuracy[1:])
    summary = degree_bucket_fairness([True, False, True, True], [3, 3, 3, 3])
    assert summary["bucket-size"] == [4, 0, 0, 0]
    assert summary["jain"] == 1.0 and summary["worst"] == 0.75 and summary["gap"] == 0.0


def test_quartile_accuracy_by_hand():
    # Buckets (0, 0, 1, 1, 2, 2, 3, 3); node order does not matter, degrees do.
    correct = [1, 0, 1, 1, 0, 0, 1, 0]
    degree = [8, 1, 2, 7, 3, 4, 5, 6]  # buckets 3, 0, 0, 3, 1, 1, 2, 2
    assert degree_quartile_accuracy(correct, degree) == [0.5, 0.0, 0.5, 1.0]
    # Median 4.5: degrees 1-4 have 1 of 4 right, degrees 5-8 have 3 of 4.
    assert degree_quartile_accuracy(correct, degree, num_buckets=2) == [0.25, 0.75]
    assert degree_quartile_accuracy(correct, degree, num_buckets=1) == [0.5]


def test_bucket_fairness_by_hand():
    summary = degree_bucket_fairness([1, 0, 1, 1, 0, 0, 1, 0], [8, 1, 2, 7, 3, 4, 5, 6])
    assert summary["bucket-accuracy"] == [0.5, 0.0, 0.5, 1.0]
    assert summary["bucket-size"] == [2, 2, 2, 2]
    assert summary["bucket-edges"] == [2.75, 4.5, 6.25]
    # Jain: (0.5 + 0 + 0.5 + 1)^2 / (4 * (0.25 + 0 + 0.25 + 1)) = 4 / 6.
    assert summary["jain"] == pytest.approx(2 / 3)
    assert summary["worst"] == 0.0 and summary["gap"] == 1.0
    assert summary["low-high-gap"] == -0.5


def test_bucket_fairness_skips_empty_buckets():
    # Buckets (0, 0, 0, 0, 0, 0, 3, 3): accuracies 4/6 and 1/2 over two non-empty buckets.
    summary = degree_bucket_fairness([1, 1, 1, 1, 0, 0, 1, 0], [1, 1, 1, 1, 1, 1, 2, 5])
    assert summary["bucket-size"] == [6, 0, 0, 2]
    # (2/3 + 1/2)^2 / (2 * (4/9 + 1/4)) = (49/36) / (25/18) = 49/50.
    assert summary["jain"] == pytest.approx(49 / 50)
    assert summary["worst"] == 0.5
    assert summary["low-high-gap"] == pytest.approx(2 / 3 - 1 / 2)


@pytest.mark.parametrize(
    ("correct", "degree", "message"),
    [
        ([], [], "degree: expected at least one node"),
        ([1, 0], [[1, 2]], "degree: expected a 1-D array"),
        ([1, 0], [1, -1], "degree: expected finite degrees >= 0"),
        ([1, 0], [1, np.nan], "degree: expected finite degrees >= 0"),
        ([1, 0, 1], [1, 2], r"correct: expected shape \(2,\)"),
        ([1, 2], [1, 2], r"correct: expected booleans or values in \[0, 1\]"),
    ],
)
def test_bucket_metrics_reject(correct, degree, message):
    with pytest.raises(ValueError, match=message):
        degree_quartile_accuracy(correct, degree)
    with pytest.raises(ValueError, match=message):
        degree_bucket_fairness(correct, degree)


@pytest.mark.parametrize("num_buckets", [0, -1, 2.0, True])
def test_num_buckets_must_be_a_positive_integer(num_buckets):
    with pytest.raises(ValueError, match="num_buckets: expected an integer >= 1"):
        degree_buckets([1, 2, 3], num_buckets)


# ---------------------------------------------------------------------------------------------
# Log-log slope
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("exponent", [0.5, 1.0, -0.25, 0.0])
def test_slope_of_an_exact_power_law(exponent):
    degree = np.array([0, 1, 2, 5, 10, 40, 300])
    values = 3.0 * (degree + 1.0) ** exponent
    assert loglog_slope(values, degree) == pytest.approx(exponent, abs=1e-12)


def test_slope_is_least_squares():
    # In units of log 2: u = log(d + 1) = (0, 1, 2), t = log(values) = (0, 2, 1), both mean 1;
    # slope = sum((u - 1)(t - 1)) / sum((u - 1)^2) = ((-1)(-1) + 0 + (1)(0)) / 2 = 1/2.
    assert loglog_slope([1.0, 4.0, 2.0], [0, 1, 3]) == pytest.approx(0.5)


def test_slope_drops_zero_and_non_finite_values():
    degree = np.array([0, 1, 3, 7, 2, 4])
    values = np.array([1.0, 2.0, 4.0, 8.0, 0.0, np.inf])
    assert loglog_slope(values, degree) == pytest.approx(1.0)
    assert loglog_slope(np.append(values, [-1.0, np.nan]), np.append(degree, [5, 6])) == (
        pytest.approx(1.0)
    )


@pytest.mark.parametrize(
    ("values", "degree", "message"),
    [
        ([], [], "degree: expected at least one node"),
        ([1.0, 2.0], [1, 2, 3], r"values: expected shape \(3,\)"),
        ([1.0, 0.0, np.nan], [1, 2, 3], "values: expected at least two finite, positive"),
        ([1.0, 2.0, 3.0], [4, 4, 4], "degree: the kept nodes all have the same degree"),
        ([1.0, 2.0], [1, -2], "degree: expected finite degrees >= 0"),
    ],
)
def test_slope_rejects(values, degree, message):
    with pytest.raises(ValueError, match=message):
        loglog_slope(values, degree)


def test_module_is_pure_numpy():
    source = open(fedlr.metrics.degree.__file__).read()
    assert "import torch" not in source and "torch_geometric" not in source


def test_doctests():
    result = doctest.testmod(fedlr.metrics.degree)
    assert result.attempted > 0
    assert result.failed == 0
