"""Tests for fedlr/rates/noise.py: the inverse-noise rate rule, the EMA and the estimators."""

from __future__ import annotations

import doctest
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fedlr.rates.noise
from fedlr.rates.noise import (
    NoiseEMA,
    gradient_noise_ratio,
    inverse_noise_rates,
    inverse_noise_rule,
    is_valid_estimate,
    loss_mixture_noise,
    margin_losses,
    mean_margin_noise,
)

# ---------------------------------------------------------------------------------------------
# inverse_noise_rule: worked by hand
# ---------------------------------------------------------------------------------------------


def test_rule_equal_sizes_no_clipping():
    rule = inverse_noise_rule(power=1.0, low=0.25, high=4.0, floor=0.05)
    factors = rule(np.array([0.1, 0.2, 0.5]), np.array([1, 1, 1]))
    # 1/noise = (10, 5, 2), mean 17/3; factors = (10, 5, 2) / (17/3) = (30, 15, 6) / 17,
    # all inside [0.25, 4].
    np.testing.assert_allclose(factors, [30 / 17, 15 / 17, 6 / 17], atol=1e-9)


def test_rule_clipping_at_high_others_absorb_the_rest():
    rule = inverse_noise_rule(power=1.0, low=0.25, high=2.0, floor=0.05)
    factors = rule(np.array([0.05, 0.5, 1.0]), np.array([1, 1, 1]))
    # Unclipped: (20, 2, 1) * 3/23 = (2.61, 0.26, 0.13): client 0 clips at high = 2.
    # The others share the rest: 2 + ref/0.5 + ref/1.0 = 3  ->  3 ref = 1  ->  ref = 1/3,
    # so factors = (2, 2/3, 1/3); client 0 is indeed clipped (ref/0.05 = 6.7 > 2), 1/3 >= 0.25.
    np.testing.assert_allclose(factors, [2.0, 2 / 3, 1 / 3], atol=1e-9)


def test_rule_clipping_at_low():
    rule = inverse_noise_rule(power=1.0, low=0.25, high=2.0, floor=0.05)
    factors = rule(np.array([0.05, 0.5]), np.array([1, 1]))
    # Unclipped: (20, 2) * 2/22 = (1.82, 0.18): client 1 clips at low = 0.25.
    # Then ref/0.05 + 0.25 = 2  ->  ref/0.05 = 1.75.
    np.testing.assert_allclose(factors, [1.75, 0.25], atol=1e-9)


def test_rule_floor_zero_noise_counts_as_floor():
    rule = inverse_noise_rule(power=1.0, low=0.25, high=4.0, floor=0.05)
    factors = rule(np.array([0.0, 0.05, 0.1]), np.array([1, 1, 1]))
    # Floored noise (0.05, 0.05, 0.1): 1/noise = (20, 20, 10), mean 50/3 -> (1.2, 1.2, 0.6).
    np.testing.assert_allclose(factors, [1.2, 1.2, 0.6], atol=1e-9)
    np.testing.assert_allclose(
        factors, rule(np.array([0.05, 0.05, 0.1]), np.array([1, 1, 1])), atol=1e-12
    )


def test_rule_weighted_by_num_examples():
    rule = inverse_noise_rule(power=1.0, low=0.25, high=4.0, floor=0.05)
    num_examples = np.array([1, 3])
    factors = rule(np.array([0.1, 0.2]), num_examples)
    # factors = ref * (10, 5); weighted mean (1 * 10 ref + 3 * 5 ref) / 4 = 25 ref / 4 = 1
    # -> ref = 0.16 -> (1.6, 0.8); check (1 * 1.6 + 3 * 0.8) / 4 = 4 / 4 = 1.
    np.testing.assert_allclose(factors, [1.6, 0.8], atol=1e-9)
    assert abs(float(num_examples @ factors) / num_examples.sum() - 1.0) < 1e-9


def test_rule_power_two():
    rule = inverse_noise_rule(power=2.0, low=0.25, high=4.0, floor=0.05)
    factors = rule(np.array([0.1, 0.2]), np.array([1, 1]))
    # (1/noise)^2 = (100, 25), mean 62.5 -> (1.6, 0.4).
    np.testing.assert_allclose(factors, [1.6, 0.4], atol=1e-9)


def test_rule_empty():
    rule = inverse_noise_rule()
    assert rule(np.array([]), np.array([])).shape == (0,)


def test_rates_are_base_lr_times_factors():
    rates = inverse_noise_rates(np.array([0.1, 0.2, 0.5]), np.array([1, 1, 1]), 0.1, high=4.0)
    # 0.1 * (30, 15, 6) / 17, see test_rule_equal_sizes_no_clipping.
    np.testing.assert_allclose(rates, [3 / 17, 1.5 / 17, 0.6 / 17], atol=1e-9)


# ---------------------------------------------------------------------------------------------
# inverse_noise_rule: properties
# ---------------------------------------------------------------------------------------------


@st.composite
def rule_case(draw):
    k = draw(st.integers(1, 8))
    noise = np.array(draw(st.lists(st.floats(0.0, 10.0), min_size=k, max_size=k)))
    num_examples = np.array(draw(st.lists(st.integers(1, 1000), min_size=k, max_size=k)))
    params = {
        "power": draw(st.floats(0.25, 4.0)),
        "low": draw(st.floats(0.05, 1.0)),
        "high": draw(st.floats(1.0, 10.0)),
        "floor": draw(st.floats(0.01, 0.5)),
    }
    return noise, num_examples, params


@settings(max_examples=200, deadline=None)
@given(rule_case())
def test_rule_bounds_and_weighted_mean_one(case):
    noise, num_examples, params = case
    factors = inverse_noise_rule(**params)(noise, num_examples)
    assert factors.shape == noise.shape
    assert np.all(factors >= params["low"]) and np.all(factors <= params["high"])
    assert abs(float(num_examples @ factors) / num_examples.sum() - 1.0) < 1e-9


@settings(max_examples=200, deadline=None)
@given(rule_case())
def test_rule_non_increasing_in_noise(case):
    noise, num_examples, params = case
    order = np.argsort(noise, kind="stable")
    factors = inverse_noise_rule(**params)(noise[order], num_examples[order])
    assert np.all(np.diff(factors) <= 1e-12)


@settings(max_examples=100, deadline=None)
@given(rule_case(), st.floats(0.0, 10.0))
def test_rule_constant_noise_gives_ones(case, value):
    _, num_examples, params = case
    factors = inverse_noise_rule(**params)(np.full(num_examples.shape, value), num_examples)
    np.testing.assert_allclose(factors, 1.0, atol=1e-9)


@settings(max_examples=100, deadline=None)
@given(rule_case(), st.randoms(use_true_random=False))
def test_rule_client_order_does_not_matter(case, random):
    noise, num_examples, params = case
    rule = inverse_noise_rule(**params)
    perm = np.array(random.sample(range(len(noise)), len(noise)))
    np.testing.assert_allclose(
        rule(noise[perm], num_examples[perm]), rule(noise, num_examples)[perm], atol=1e-9
    )


@settings(max_examples=100, deadline=None)
@given(rule_case())
def test_rule_power_scaling(case):
    # (ref / max(noise, floor))^p = (ref^p / max(noise^p, floor^p))^1: the rule with power p
    # equals the rule with power 1 on noise^p and floor^p (clipping included).
    noise, num_examples, params = case
    p = params["power"]
    lhs = inverse_noise_rule(**params)(noise, num_examples)
    rhs = inverse_noise_rule(**{**params, "power": 1.0, "floor": params["floor"] ** p})(
        noise**p, num_examples
    )
    np.testing.assert_allclose(lhs, rhs, atol=1e-8)


# ---------------------------------------------------------------------------------------------
# inverse_noise_rule: argument errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("power", {"power": 0.0}),
        ("power", {"power": -1.0}),
        ("power", {"power": math.nan}),
        ("power", {"power": math.inf}),
        ("low", {"low": 0.0}),
        ("low", {"low": 1.5}),
        ("low", {"low": math.nan}),
        ("high", {"high": 0.5}),
        ("high", {"high": math.nan}),
        ("high", {"high": math.inf}),
        ("floor", {"floor": 0.0}),
        ("floor", {"floor": -0.1}),
        ("floor", {"floor": math.inf}),
    ],
)
def test_rule_argument_errors(name, kwargs):
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        inverse_noise_rule(**kwargs)


@pytest.mark.parametrize("base_lr", [0.0, -0.1, math.nan, math.inf])
def test_rates_base_lr_error(base_lr):
    with pytest.raises(ValueError, match=r"^base_lr\b"):
        inverse_noise_rates(np.array([0.1]), np.array([1]), base_lr)


@pytest.mark.parametrize(
    ("name", "noise", "num_examples"),
    [
        ("noise", [0.1, math.nan], [1, 1]),
        ("noise", [0.1, math.inf], [1, 1]),
        ("noise", [0.1, -0.2], [1, 1]),
        ("noise", [0.1, 0.2], [1, 1, 1]),
        ("noise", [[0.1, 0.2]], [[1, 1]]),
        ("num_examples", [0.1, 0.2], [1, 0]),
    ],
)
def test_rule_input_errors(name, noise, num_examples):
    rule = inverse_noise_rule()
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        rule(np.array(noise), np.array(num_examples))


# ---------------------------------------------------------------------------------------------
# is_valid_estimate and NoiseEMA
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [math.nan, math.inf, -math.inf, -1, -0.5, None, "0.3", True, pytest.param(10**400, id="1e400")],
)
def test_invalid_estimates(value):
    assert is_valid_estimate(value) is False


@pytest.mark.parametrize("value", [0, 0.0, 2.5, 7, np.float64(0.3), np.float32(0.3), np.int64(2)])
def test_valid_estimates(value):
    assert is_valid_estimate(value) is True


def test_ema_hand_worked():
    ema = NoiseEMA(decay=0.75)
    assert ema.update(3, 0.8) == 0.8  # first value taken as is
    # 0.75 * 0.8 + 0.25 * 0.4 = 0.6 + 0.1 = 0.7
    assert ema.update(3, 0.4) == pytest.approx(0.7)
    # 0.75 * 0.7 + 0.25 * 0.0 = 0.525
    assert ema.update(3, 0.0) == pytest.approx(0.525)
    assert ema.update(5, 0.2) == 0.2  # another client starts fresh
    assert ema.values == pytest.approx({3: 0.525, 5: 0.2})


def test_ema_decay_zero_keeps_latest():
    ema = NoiseEMA(decay=0.0)
    ema.update(0, 0.9)
    assert ema.update(0, 0.1) == 0.1


@pytest.mark.parametrize("value", [math.nan, math.inf, -0.1, None, "0.3", True])
def test_ema_invalid_value_raises(value):
    ema = NoiseEMA()
    ema.update(1, 0.5)
    with pytest.raises(ValueError, match=r"^estimate\b"):
        ema.update(1, value)
    assert ema.values == {1: 0.5}


@pytest.mark.parametrize("decay", [-0.1, 1.0, math.nan])
def test_ema_decay_error(decay):
    with pytest.raises(ValueError, match=r"^decay\b"):
        NoiseEMA(decay=decay)


def test_ema_round_trip():
    ema = NoiseEMA(decay=0.75)
    ema.update(3, 0.8)
    ema.update(3, 0.4)
    ema.update(12, 1.5)
    state = json.loads(json.dumps(ema.to_dict()))
    restored = NoiseEMA.from_dict(state)
    assert restored == ema
    # and it goes on exactly as the original: 0.75 * 0.7 + 0.25 * 0.3 = 0.6
    assert restored.update(3, 0.3) == ema.update(3, 0.3) == pytest.approx(0.6)


# ---------------------------------------------------------------------------------------------
# Estimators
# ---------------------------------------------------------------------------------------------

LOG_PROBS = np.log(np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]]))


def test_margin_losses_hand_worked():
    margins = margin_losses(LOG_PROBS, np.array([0, 2]))
    # sample 0: label = top class -> 0; sample 1: log(0.4) - log(0.25) = log(1.6) = 0.4700
    np.testing.assert_allclose(margins, [0.0, math.log(1.6)], atol=1e-12)


def test_margin_losses_never_negative():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 4))
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    assert np.all(margin_losses(log_probs, rng.integers(0, 4, 50)) >= 0)


def test_mean_margin_noise_hand_worked():
    # (0 + log(1.6)) / 2 = 0.2350; all labels = top class -> 0
    assert mean_margin_noise(LOG_PROBS, np.array([0, 2])) == pytest.approx(math.log(1.6) / 2)
    assert mean_margin_noise(LOG_PROBS, np.array([0, 0])) == 0.0


def test_mean_margin_noise_empty_or_non_finite_is_nan():
    assert math.isnan(mean_margin_noise(np.zeros((0, 3)), np.zeros(0, dtype=int)))
    with np.errstate(divide="ignore"):
        log_probs = np.log(np.array([[1.0, 0.0]]))  # log 0 = -inf: infinite margin
    assert math.isnan(mean_margin_noise(log_probs, np.array([1])))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_mixture_noise_bimodal(seed):
    rng = np.random.default_rng(seed)
    # 160 clean samples near 0.2, 40 noisy near 2.5: noisy fraction 40 / 200 = 0.2
    losses = np.concatenate([rng.normal(0.2, 0.1, 160), rng.normal(2.5, 0.3, 40)])
    assert abs(loss_mixture_noise(losses) - 0.2) <= 0.05


def test_loss_mixture_noise_constant_is_zero():
    assert loss_mixture_noise(np.full(50, 0.3)) == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_mixture_noise_unimodal_is_zero_with_bic_check(seed):
    rng = np.random.default_rng(seed)
    assert loss_mixture_noise(rng.normal(1.0, 0.2, 200), bic_check=True) == 0.0


def test_loss_mixture_noise_bic_check_keeps_two_modes():
    rng = np.random.default_rng(0)
    losses = np.concatenate([rng.normal(0.2, 0.1, 160), rng.normal(2.5, 0.3, 40)])
    assert abs(loss_mixture_noise(losses, bic_check=True) - 0.2) <= 0.05


@pytest.mark.parametrize("losses", [[], [0.1], [0.1, 2.0, 0.2]])
def test_loss_mixture_noise_too_few_is_nan(losses):
    assert math.isnan(loss_mixture_noise(np.array(losses)))


def test_loss_mixture_noise_non_finite_is_nan():
    assert math.isnan(loss_mixture_noise(np.array([0.1, 0.2, math.inf, 0.3, 0.4])))


def test_gradient_noise_ratio_hand_worked():
    grads = np.array([[1.0, 0.0], [2.0, 0.0], [6.0, 0.0]])
    # G = (3, 0), |G|^2 = 9; deviations -2, -1, 3: trΣ = (4 + 1 + 9) / (3 - 1) = 7 -> 7/9
    assert gradient_noise_ratio(grads) == pytest.approx(7 / 9)


def test_gradient_noise_ratio_identical_gradients_is_zero():
    assert gradient_noise_ratio(np.array([[1.0, 2.0], [1.0, 2.0]])) == 0.0


def test_gradient_noise_ratio_zero_mean_is_inf():
    assert gradient_noise_ratio(np.array([[1.0, -1.0], [-1.0, 1.0]])) == math.inf


@pytest.mark.parametrize("grads", [np.array([1.0, 2.0]), np.array([[1.0, 2.0]]), np.zeros((0, 3))])
def test_gradient_noise_ratio_errors(grads):
    with pytest.raises(ValueError, match=r"^per_sample_grads\b"):
        gradient_noise_ratio(grads)


# ---------------------------------------------------------------------------------------------
# The docstring examples
# ---------------------------------------------------------------------------------------------


def test_doctests():
    result = doctest.testmod(fedlr.rates.noise)
    assert result.attempted > 0
    assert result.failed == 0
