"""Tests for fedlr/rates/coupling.py: the linear (SGD) and square-root (Adam) batch-size rules."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fedlr.rates.coupling
from fedlr.rates.coupling import RULES, batch_scale_factor, rule_for_optimizer, scale_lr

batches = st.integers(min_value=1, max_value=4096)
rates = st.floats(min_value=1e-6, max_value=10.0)

# ---------------------------------------------------------------------------------------------
# worked by hand
# ---------------------------------------------------------------------------------------------


def test_rule_for_optimizer():
    assert rule_for_optimizer("sgd") == "linear"
    assert rule_for_optimizer("adam") == "sqrt"


def test_linear_rule_multiplies_by_the_batch_ratio():
    # Goyal et al.: batch 16 -> 64 is k = 4, so lr 0.1 -> 0.4; batch 16 -> 8 halves it.
    assert batch_scale_factor(64, 16, "linear") == 4.0
    assert scale_lr(0.1, 64, 16, "linear") == pytest.approx(0.4)
    assert scale_lr(0.1, 8, 16, "linear") == pytest.approx(0.05)
    assert scale_lr(0.1, 48, 16, "linear") == pytest.approx(0.3)


def test_sqrt_rule_multiplies_by_the_root_of_the_batch_ratio():
    # Malladi et al.: k = 4 -> sqrt(4) = 2; k = 1/4 -> 1/2; k = 2 -> 1.41421...
    assert batch_scale_factor(64, 16, "sqrt") == 2.0
    assert scale_lr(0.003, 4, 16, "sqrt") == pytest.approx(0.0015)
    assert scale_lr(0.001, 32, 16, "sqrt") == pytest.approx(0.001 * 1.41421356, rel=1e-8)


def test_two_processes_with_the_default_batch():
    # ddp-procs = 2, batch-size = 16: the global batch is 32.
    assert scale_lr(0.1, 2 * 16, 16, rule_for_optimizer("sgd")) == pytest.approx(0.2)
    assert scale_lr(0.01, 2 * 16, 16, rule_for_optimizer("adam")) == pytest.approx(0.01414213562)


def test_numpy_integers_are_batch_sizes():
    assert scale_lr(np.float64(0.1), np.int64(32), np.int32(16), "linear") == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0.1, 0, 16, "linear"), r"batch_size: expected an integer >= 1, got 0"),
        ((0.1, -4, 16, "linear"), r"batch_size: expected an integer >= 1, got -4"),
        ((0.1, 2.5, 16, "linear"), r"batch_size: expected an integer >= 1, got 2\.5"),
        ((0.1, True, 16, "linear"), r"batch_size: expected an integer >= 1, got True"),
        ((0.1, 32, 0, "linear"), r"base_batch_size: expected an integer >= 1, got 0"),
        ((0.1, 32, 16, "cubic"), r"rule: expected linear or sqrt, got 'cubic'"),
        ((0.0, 32, 16, "linear"), r"lr: expected a finite number > 0, got 0\.0"),
        ((-0.1, 32, 16, "linear"), r"lr: expected a finite number > 0, got -0\.1"),
        ((math.nan, 32, 16, "sqrt"), r"lr: expected a finite number > 0, got nan"),
        ((math.inf, 32, 16, "sqrt"), r"lr: expected a finite number > 0, got inf"),
    ],
)
def test_bad_arguments_name_the_argument_and_the_allowed_range(args, message):
    with pytest.raises(ValueError, match=message):
        scale_lr(*args)


def test_unknown_optimizer_names_the_key():
    with pytest.raises(ValueError, match="optimizer: expected sgd, adam or adagrad, got 'rmsprop'"):
        rule_for_optimizer("rmsprop")


def test_doctests():
    result = doctest.testmod(fedlr.rates.coupling)
    assert result.attempted > 0
    assert result.failed == 0


# ---------------------------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------------------------


@given(lr=rates, batch=batches, rule=st.sampled_from(RULES))
def test_equal_batches_leave_the_rate_unchanged(lr, batch, rule):
    assert scale_lr(lr, batch, batch, rule) == lr


@given(lr=rates, base=batches, small=batches, large=batches, rule=st.sampled_from(RULES))
def test_a_larger_batch_never_gets_a_smaller_rate(lr, base, small, large, rule):
    small, large = sorted((small, large))
    assert scale_lr(lr, small, base, rule) <= scale_lr(lr, large, base, rule)


@given(base=batches, batch=batches)
def test_sqrt_is_the_root_of_linear_and_lies_between_it_and_one(base, batch):
    linear = batch_scale_factor(batch, base, "linear")
    sqrt = batch_scale_factor(batch, base, "sqrt")
    assert sqrt**2 == pytest.approx(linear, rel=1e-12)
    assert min(1.0, linear) <= sqrt <= max(1.0, linear)


@given(lr=rates, b1=batches, b2=batches, b3=batches, rule=st.sampled_from(RULES))
def test_scaling_in_two_hops_equals_one_hop(lr, b1, b2, b3, rule):
    two_hops = scale_lr(scale_lr(lr, b2, b1, rule), b3, b2, rule)
    assert two_hops == pytest.approx(scale_lr(lr, b3, b1, rule), rel=1e-12)
