"""The reply and influence checks, by hand."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

import fedlr.fl.checks
from fedlr.fl.checks import array_problem, bounded_losses, clip_norms, example_cap

SENT = {"0": np.zeros((64, 64), np.float32), "1": np.zeros(64, np.float32)}


def test_doctests():
    result = doctest.testmod(fedlr.fl.checks)
    assert result.failed == 0 and result.attempted >= 6


def test_arrays_like_the_sent_ones_pass():
    returned = {key: np.ones_like(value) for key, value in SENT.items()}
    assert array_problem(SENT, returned) is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"0": np.ones(1, np.float32)}, "array '0': expected shape (64, 64), got (1,)"),
        ({"0": np.ones((65, 64), np.float32)}, "array '0': expected shape (64, 64), got (65, 64)"),
        ({"0": np.ones((0, 64), np.float32)}, "array '0': expected shape (64, 64), got (0, 64)"),
        ({"1": np.ones(64, np.complex64)}, "array '1': expected dtype float32, got complex64"),
        ({"1": np.ones(64, np.int32)}, "array '1': expected dtype float32, got int32"),
        ({"2": np.ones(3, np.float32)}, "unexpected arrays: '2'"),
        ({"1": np.full(64, math.nan, np.float32)}, "non-finite weights"),
        ({"1": np.full(64, -math.inf, np.float32)}, "non-finite weights"),
    ],
)
def test_a_wrong_array_is_named(change, reason):
    returned = {key: np.ones_like(value) for key, value in SENT.items()} | change
    assert array_problem(SENT, returned) == reason


def test_another_float_width_passes():
    # Flower's QFedAvg aggregates in float64 what clients trained in float32
    returned = {key: np.ones(value.shape, np.float64) for key, value in SENT.items()}
    assert array_problem(SENT, returned) is None


def test_a_missing_array_is_named():
    assert array_problem(SENT, {"0": np.ones((64, 64), np.float32)}) == "missing arrays: '1'"


def test_without_the_sent_arrays_only_values_are_checked():
    assert array_problem(None, {"a": np.ones(3)}) is None
    assert array_problem(None, {"a": np.ones(3, np.complex128)}) == (
        "array 'a': expected real numbers, got dtype complex128"
    )
    assert array_problem(None, {"a": np.array([1.0, math.nan])}) == "non-finite weights"


def test_example_cap_is_ten_medians_or_the_configured_value():
    assert example_cap([135] * 9 + [10**12]) == 1350
    assert example_cap([135] * 10, max_examples=200) == 200
    assert example_cap([]) == 0
    assert example_cap([0, 0, 1]) == 1  # never below one example


def test_losses_above_ten_medians_are_capped_and_named():
    losses, capped = bounded_losses({0: 1.0, 1: 2.0, 2: 1.5, 3: 1e40})
    assert capped == [3]
    assert losses[3] == pytest.approx(10 * 1.75)
    assert {k: losses[k] for k in (0, 1, 2)} == {0: 1.0, 1: 2.0, 2: 1.5}
    assert bounded_losses({}) == ({}, [])


def test_clip_norms_scales_only_the_outliers():
    factors = clip_norms({0: 1.0, 1: 1.0, 2: 1.0, 3: 100.0}, ratio=3.0)
    assert factors == {3: pytest.approx(0.03)}
    assert clip_norms({0: 1.0, 1: 100.0}, ratio=0.0) == {}
