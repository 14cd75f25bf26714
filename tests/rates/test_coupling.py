"""Tests for fedlr/rates/coupling.py: batch-size rules, the gradient noise scale, schedules, decay.

The noise-scale estimators are checked on linear regression with Gaussian data, where the true
gradient, its per-example covariance and hence B_simple have a closed form.
"""

from __future__ import annotations

import doctest
import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fedlr.rates.coupling
from fedlr.rates.coupling import (
    COUPLING_RULES,
    RULES,
    WEIGHT_DECAY_COUPLINGS,
    AdamHyper,
    NoiseScaleEMA,
    adascale_gain,
    b_simple,
    batch_scale_factor,
    coupled_weight_decay,
    coupling_factors,
    decay_or_grow,
    federated_terms,
    goyal_warmup_lr,
    malladi_sqrt,
    noise_temperature,
    optimal_lr,
    rule_for_optimizer,
    rule_invariant,
    scale_lr,
    two_batch_terms,
)

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


# ---------------------------------------------------------------------------------------------
# The gradient noise scale on linear regression, where it has a closed form
# ---------------------------------------------------------------------------------------------
#
# Per-example loss 0.5 * (x.w - y)^2 with x ~ N(0, I_d), y = x.w* + eps, eps ~ N(0, s^2). At w,
# with delta = w - w*, the per-example gradient is g = x (x.delta - eps), so
#   G = E g = E[x x^T] delta = delta,
#   Sigma = E[g g^T] - G G^T = E[(x.delta)^2 x x^T] + s^2 I - delta delta^T
#         = (|delta|^2 I + 2 delta delta^T) + s^2 I - delta delta^T     (Isserlis)
#         = (|delta|^2 + s^2) I + delta delta^T,
#   |G|^2 = |delta|^2,  tr Sigma = d (|delta|^2 + s^2) + |delta|^2.
# With d = 20, |delta| = 1, s = 1: tr Sigma = 20 * 2 + 1 = 41 = B_simple.

DIM = 20
LABEL_NOISE_SD = 1.0


def regression_offset(seed: int) -> np.ndarray:
    """delta = w - w*, a random direction of norm 1."""
    delta = np.random.default_rng(seed).normal(size=DIM)
    return delta / np.linalg.norm(delta)


def closed_form(delta: np.ndarray) -> tuple[float, float]:
    """(|G|^2, tr Sigma) of the regression at offset delta."""
    g2 = float(delta @ delta)
    return g2, DIM * (g2 + LABEL_NOISE_SD**2) + g2


def per_example_gradients(rng: np.random.Generator, delta: np.ndarray, shape) -> np.ndarray:
    """Per-example gradients x (x.delta - eps), shape (*shape, DIM)."""
    x = rng.normal(size=(*shape, DIM))
    eps = rng.normal(scale=LABEL_NOISE_SD, size=shape)
    return x * (x @ delta - eps)[..., None]


def client_gradients(
    rng: np.random.Generator, delta: np.ndarray, batch_sizes: list[int], draws: int
) -> np.ndarray:
    """(draws, K, DIM): client k's mean gradient over b_k fresh examples, in each draw."""
    out = np.empty((draws, len(batch_sizes), DIM))
    for k, batch in enumerate(batch_sizes):
        out[:, k] = per_example_gradients(rng, delta, (draws, batch)).mean(axis=1)
    return out


def assert_mean_is(samples: np.ndarray, truth: float, label: str) -> None:
    """The sample mean is within 4 standard errors (from the samples' own spread) of truth."""
    mean = float(np.mean(samples))
    standard_error = float(np.std(samples, ddof=1) / math.sqrt(len(samples)))
    assert abs(mean - truth) < 4 * standard_error, (label, mean, truth, standard_error)


def test_the_closed_form_of_the_regression_gradient():
    delta = regression_offset(0)
    g2, trace = closed_form(delta)
    assert (g2, trace) == pytest.approx((1.0, 41.0))
    grads = per_example_gradients(np.random.default_rng(1), delta, (200_000,))
    # G = delta, coordinate by coordinate.
    for coordinate in range(DIM):
        assert_mean_is(grads[:, coordinate], delta[coordinate], f"G[{coordinate}]")
    centred = grads - delta
    # tr Sigma = E |g - G|^2.
    assert_mean_is(np.einsum("nd,nd->n", centred, centred), trace, "tr Sigma")
    # Sigma along delta: (|delta|^2 + s^2) + |delta|^2 = 3; across it: |delta|^2 + s^2 = 2.
    across = np.linalg.svd(delta[None, :])[2][1]  # a unit vector orthogonal to delta
    assert abs(across @ delta) < 1e-12
    assert_mean_is((centred @ delta) ** 2, 3.0, "delta' Sigma delta")
    assert_mean_is((centred @ across) ** 2, 2.0, "u' Sigma u")
    assert_mean_is((centred @ delta) * (centred @ across), 0.0, "delta' Sigma u")


def test_two_batch_terms_are_unbiased():
    delta = regression_offset(2)
    g2, trace = closed_form(delta)
    rng = np.random.default_rng(3)
    draws = 3000
    small = per_example_gradients(rng, delta, (draws, 4)).mean(axis=1)
    big = per_example_gradients(rng, delta, (draws, 32)).mean(axis=1)
    terms = np.array(
        [
            two_batch_terms(float(s @ s), float(b @ b), 4, 32)
            for s, b in zip(small, big, strict=True)
        ]
    )
    assert_mean_is(terms[:, 0], g2, "|G|^2")
    assert_mean_is(terms[:, 1], trace, "tr Sigma")
    assert (terms < 0).any()  # single draws can go negative; the means may not


@pytest.mark.parametrize("batch_sizes", [[8, 8], [16] * 8, [4, 8, 16, 32]])
def test_federated_terms_are_unbiased(batch_sizes):
    delta = regression_offset(4)
    g2, trace = closed_form(delta)
    grads = client_gradients(np.random.default_rng(5), delta, batch_sizes, 3000)
    terms = np.array([federated_terms(g, batch_sizes) for g in grads])
    assert_mean_is(terms[:, 0], g2, "|G|^2")
    assert_mean_is(terms[:, 1], trace, "tr Sigma")


def test_the_ratio_of_averaged_terms_finds_b_simple_with_8_clients():
    delta = regression_offset(6)
    g2, trace = closed_form(delta)
    truth = trace / g2
    grads = client_gradients(np.random.default_rng(7), delta, [16] * 8, 4000)
    terms = np.array([federated_terms(g, [16] * 8) for g in grads])
    mean_g2, mean_trace = terms.mean(axis=0)
    ratio = mean_trace / mean_g2
    # Delta method: var(T/G) ~ var(T - ratio * G) / (n G^2).
    standard_error = np.std(terms[:, 1] - ratio * terms[:, 0], ddof=1) / (
        math.sqrt(len(terms)) * mean_g2
    )
    assert abs(ratio - truth) < 4 * standard_error
    assert ratio == pytest.approx(truth, rel=0.03)
    # The running EMA (gpt-neox's beta = 0.99) hovers around the same value.
    ema = NoiseScaleEMA(decay=0.99)
    running = np.array([ema.update(a, b) for a, b in terms])
    assert np.median(running[len(running) // 2 :]) == pytest.approx(truth, rel=0.03)


def test_a_per_draw_ratio_is_biased_low_with_2_clients():
    # Two clients of 8: |G|^2's estimate is noisy (a quarter of the draws are <= 0) and sits in
    # the denominator. The median per-draw ratio lies far below B_simple = 41 (about 21 here),
    # while the ratio of the averaged terms, from the very same draws, does not.
    delta = regression_offset(8)
    g2, trace = closed_form(delta)
    truth = trace / g2
    grads = client_gradients(np.random.default_rng(9), delta, [8, 8], 2000)
    terms = np.array([federated_terms(g, [8, 8]) for g in grads])
    per_draw = terms[:, 1] / terms[:, 0]
    # Median below 0.8 * truth: more than half the draws lie below it, by 4 binomial s.e.
    share_below = float(np.mean(per_draw < 0.8 * truth))
    assert share_below > 0.5 + 4 * 0.5 / math.sqrt(len(per_draw))
    assert_mean_is(terms[:, 0], g2, "|G|^2")
    assert_mean_is(terms[:, 1], trace, "tr Sigma")


# ---------------------------------------------------------------------------------------------
# Noise-scale estimators, worked by hand
# ---------------------------------------------------------------------------------------------


def test_two_batch_terms_by_hand():
    # |G|^2 = (40 * 2 - 10 * 5) / (40 - 10) = 1;  tr Sigma = (5 - 2) / (1/10 - 1/40) = 40.
    assert two_batch_terms(5.0, 2.0, 10, 40) == (1.0, 40.0)
    # A big batch noisier than the small one: tr Sigma < 0 for this draw.
    # |G|^2 = (4 * 3 - 2 * 2) / 2 = 4;  tr Sigma = (2 - 3) / (1/2 - 1/4) = -4.
    assert two_batch_terms(2.0, 3.0, 2, 4) == (4.0, -4.0)


def test_federated_terms_by_hand():
    # Equal batches of 1, g = (1, 0), (3, 0): S = (1 + 9)/2 = 5, |gbar|^2 = 4, K = 2:
    # |G|^2 = (2 * 4 - 5)/1 = 3, tr Sigma = 1 * 2 * (5 - 4)/1 = 2.
    grads = np.array([[1.0, 0.0], [3.0, 0.0]])
    assert federated_terms(grads, [1, 1]) == (3.0, 2.0)
    # Batches 1 and 3: small batch = harmonic mean 2 / (1 + 1/3) = 1.5 with S = 5; big batch
    # 4 with pooled gradient (1 * 1 + 3 * 3)/4 = 2.5, |.|^2 = 6.25:
    # |G|^2 = (4 * 6.25 - 1.5 * 5)/(4 - 1.5) = 7, tr Sigma = (5 - 6.25)/(1/1.5 - 1/4) = -3.
    g2, trace = federated_terms(grads, [1, 3])
    assert g2 == pytest.approx(7.0, rel=1e-12)
    assert trace == pytest.approx(-3.0, rel=1e-12)


def test_b_simple_by_hand():
    assert b_simple(1.0, 40.0) == 40.0
    assert b_simple(2.0, 0.0) == 0.0
    assert math.isnan(b_simple(0.0, 40.0))
    assert math.isnan(b_simple(-1.0, 40.0))
    assert math.isnan(b_simple(1.0, -0.5))


def test_noise_scale_ema_by_hand():
    ema = NoiseScaleEMA(decay=0.5)
    assert (ema.g2, ema.trace, ema.b_simple, ema.count) == (None, None, None, 0)
    # m_g = 0.5 * 1 = 0.5, corrected 0.5 / (1 - 0.5) = 1; m_t = 5 -> 10; ratio 10.
    assert ema.update(1.0, 10.0) == 10.0
    assert (ema.g2, ema.trace) == (1.0, 10.0)
    # m_g = 0.25 + 1.5 = 1.75 -> 1.75 / 0.75; m_t = 2.5 + 10 = 12.5 -> 12.5 / 0.75;
    # ratio 12.5 / 1.75 = 7.142857, not the mean of the ratios (10 + 20/3) / 2 = 8.33.
    assert ema.update(3.0, 20.0) == pytest.approx(12.5 / 1.75, rel=1e-12)
    assert ema.g2 == pytest.approx(1.75 / 0.75, rel=1e-12)
    assert ema.trace == pytest.approx(12.5 / 0.75, rel=1e-12)
    assert ema.count == 2
    # Averaged |G|^2 below zero: nan, not a number that means something.
    assert math.isnan(ema.update(-20.0, 1.0))


def test_noise_scale_ema_without_smoothing_keeps_the_last_values():
    ema = NoiseScaleEMA(decay=0.0)
    ema.update(1.0, 10.0)
    assert ema.update(2.0, 30.0) == 15.0
    assert (ema.g2, ema.trace) == (2.0, 30.0)


# ---------------------------------------------------------------------------------------------
# Rules, worked by hand
# ---------------------------------------------------------------------------------------------


def test_optimal_lr_by_hand():
    # 1 / (1 + 300/100) = 0.25;  0.2 / (1 + 100/100) = 0.1;  B_noise = 0: lr_max.
    assert optimal_lr(100, 1.0, 300.0) == 0.25
    assert optimal_lr(100, 0.2, 100.0) == pytest.approx(0.1)
    assert optimal_lr(7, 0.3, 0.0) == 0.3
    # Far above the noise scale the rate saturates at lr_max.
    assert optimal_lr(1e9, 0.3, 100.0) == pytest.approx(0.3, rel=1e-6)


def test_adascale_gain_by_hand():
    # sigma^2 = 3, mu^2 = 1, S = 4: (3 + 1) / (3/4 + 1) = 4 / 1.75 = 2.2857.
    assert adascale_gain(3.0, 1.0, 4.0) == pytest.approx(4 / 1.75, rel=1e-12)
    # Pure noise: S (linear scaling); exact gradient: 1; nothing at all: 1.
    assert adascale_gain(5.0, 0.0, 8.0) == 8.0
    assert adascale_gain(0.0, 2.0, 8.0) == 1.0
    assert adascale_gain(0.0, 0.0, 8.0) == 1.0
    # S = 1: no gain whatever the statistics.
    assert adascale_gain(3.0, 1.0, 1.0) == 1.0


def test_adascale_gain_is_the_ratio_of_optimal_rates():
    # Base batch b = 32, tr Sigma = 96, |G|^2 = 1, so sigma^2 = 96/32 = 3 and B_simple = 96:
    # optimal_lr(128) / optimal_lr(32) = (1 / 1.75) / (1 / 4) = 2.2857 = the gain at S = 4.
    assert adascale_gain(96 / 32, 1.0, 4.0) == pytest.approx(
        optimal_lr(4 * 32, 1.0, 96.0) / optimal_lr(32, 1.0, 96.0), rel=1e-12
    )


def test_goyal_warmup_lr_by_hand():
    # 0.1 -> 0.4 over 4 steps: + 0.075 per step.
    assert goyal_warmup_lr(0.1, 4.0, 0, 4) == 0.1
    assert goyal_warmup_lr(0.1, 4.0, 1, 4) == pytest.approx(0.175)
    assert goyal_warmup_lr(0.1, 4.0, 2, 4) == pytest.approx(0.25)
    assert goyal_warmup_lr(0.1, 4.0, 4, 4) == pytest.approx(0.4)
    assert goyal_warmup_lr(0.1, 4.0, 100, 4) == pytest.approx(0.4)
    # No warm-up: the scaled rate at once.
    assert goyal_warmup_lr(0.1, 4.0, 0, 0) == pytest.approx(0.4)
    # A client with a quarter of the reference batch warms *down*: 0.1 -> 0.025.
    assert goyal_warmup_lr(0.1, 0.25, 2, 4) == pytest.approx(0.1 * (1 - 0.75 / 2))
    assert goyal_warmup_lr(0.1, 0.25, 4, 4) == pytest.approx(0.025)


def test_malladi_sqrt_by_hand():
    # kappa = 4: lr x 2; 1 - 0.9 = 0.1 -> 0.4 (beta1 0.6); 1 - 0.999 -> 0.004 (beta2 0.996);
    # eps / 2.
    scaled = malladi_sqrt(1e-3, 0.9, 0.999, 1e-8, 4.0)
    assert isinstance(scaled, AdamHyper)
    assert scaled.lr == pytest.approx(2e-3, rel=1e-12)
    assert scaled.beta1 == pytest.approx(0.6, rel=1e-12)
    assert scaled.beta2 == pytest.approx(0.996, rel=1e-12)
    assert scaled.eps == pytest.approx(5e-9, rel=1e-12)
    # kappa = 1/4 goes back: lr / 2, 1 - beta / 4, eps x 2.
    back = malladi_sqrt(scaled.lr, scaled.beta1, scaled.beta2, scaled.eps, 0.25)
    assert (back.lr, back.beta1, back.beta2, back.eps) == pytest.approx(
        (1e-3, 0.9, 0.999, 1e-8), rel=1e-9
    )


def test_malladi_sqrt_refuses_to_leave_its_range():
    # kappa = 4 on beta1 = 0.75: 1 - 4 * 0.25 = 0 -> beta1 would be 0 (values exact in binary);
    # kappa = 8 makes it -1; kappa = 2 is allowed: 1 - 2 * 0.25 = 0.5.
    for kappa in (4.0, 8.0):
        with pytest.raises(ValueError, match=r"^kappa: expected kappa \* \(1 - beta1\) < 1"):
            malladi_sqrt(1e-3, 0.75, 0.999, 1e-8, kappa)
    assert malladi_sqrt(1e-3, 0.75, 0.999, 1e-8, 2.0).beta1 == 0.5
    assert malladi_sqrt(1e-3, 0.9, 0.999, 1e-8, 9.0).beta1 == pytest.approx(0.1)
    # kappa = 2000 on beta2 = 0.999: 1 - 2000 * 0.001 = -1 (beta1 = 0.9999 is fine: 0.8).
    with pytest.raises(ValueError, match=r"^kappa: expected kappa \* \(1 - beta2\) < 1"):
        malladi_sqrt(1e-3, 0.9999, 0.999, 1e-8, 2000.0)


def test_rule_invariant_by_hand():
    # linear: 0.4 / 64 = 0.1 / 16 = 0.00625;  sqrt: 0.2 / 8 = 0.1 / 4 = 0.025.
    assert rule_invariant(0.4, 64, "linear") == pytest.approx(0.00625)
    assert rule_invariant(0.2, 64, "sqrt") == 0.025
    assert rule_invariant(0.1, 16, "sqrt") == 0.025


def test_noise_temperature_by_hand():
    # 0.1 * (10000/100 - 1) / (1 - 0.9) = 0.1 * 99 / 0.1 = 99.
    assert noise_temperature(0.1, 100, 10_000, 0.9) == pytest.approx(99.0)
    # No momentum: 0.1 * (1000/10 - 1) = 9.9;  full batch: no noise.
    assert noise_temperature(0.1, 10, 1000) == pytest.approx(9.9)
    assert noise_temperature(0.1, 1000, 1000) == 0.0


def test_coupling_factors_by_hand():
    # reference 32: linear b/32, sqrt sqrt(b/32).
    assert coupling_factors([8, 32, 128], 32, "linear").tolist() == [0.25, 1.0, 4.0]
    assert coupling_factors([8, 32, 128], 32, "sqrt").tolist() == [0.5, 1.0, 2.0]
    # optimal, B_noise = 64: (1 + 64/32) / (1 + 64/b) = 3/9, 3/3, 3/1.5.
    factors = coupling_factors([8, 32, 128], 32, "optimal", b_noise=64.0)
    assert factors.tolist() == pytest.approx([1 / 3, 1.0, 2.0], rel=1e-12)
    assert factors[1] == 1.0
    # B_noise = 0: the rate does not depend on the batch at all.
    assert coupling_factors([8, 32, 128], 32, "optimal", b_noise=0.0).tolist() == [1.0] * 3
    # Clipping: 1/32 -> 0.1, 4096/32 = 128 -> 10.
    clipped = coupling_factors([1, 32, 4096], 32, "linear", low=0.1, high=10.0)
    assert clipped.tolist() == [0.1, 1.0, 10.0]
    # The defaults clip to [0.05, 20].
    assert coupling_factors([1, 10_000], 32, "linear").tolist() == [0.05, 20.0]
    assert coupling_factors([], 32, "sqrt").shape == (0,)


def test_coupling_factors_optimal_needs_b_noise():
    with pytest.raises(ValueError, match=r"^b_noise: expected a finite number >= 0"):
        coupling_factors([8, 16], 16, "optimal")


def test_decay_or_grow_by_hand():
    # Milestones 10, 20; factor 1/2; base lr 0.1, batch 32, cap 100.
    common = {"base_lr": 0.1, "base_batch": 32, "max_batch": 100}
    milestones = [10, 20]
    decay = [decay_or_grow(r, milestones, 0.5, mode="decay", **common) for r in (1, 9, 10, 20, 99)]
    assert decay == [(0.1, 32), (0.1, 32), (0.05, 32), (0.025, 32), (0.025, 32)]
    grow = [decay_or_grow(r, milestones, 0.5, mode="grow", **common) for r in (1, 9, 10, 20, 99)]
    # Round 10: batch 64 at rate 0.1. Round 20: 128 is capped at 100, and the remaining
    # factor 100/128 is taken as rate decay: 0.1 * 0.25 * 100/32 = 0.078125.
    assert grow == [(0.1, 32), (0.1, 32), (0.1, 64), (0.078125, 100), (0.078125, 100)]
    for (lr_decay, batch_decay), (lr_grow, batch_grow) in zip(decay, grow, strict=True):
        assert lr_grow / batch_grow == pytest.approx(lr_decay / batch_decay, rel=1e-12)


def test_decay_or_grow_rounds_the_batch_and_keeps_lr_over_batch():
    # factor 0.3: 32 / 0.3 = 106.67 -> 107, lr = 0.1 * 0.3 * 107 / 32 = 0.1003125.
    lr, batch = decay_or_grow(
        5, [5], 0.3, base_lr=0.1, base_batch=32, max_batch=10_000, mode="grow"
    )
    assert batch == 107
    assert lr == pytest.approx(0.1003125, rel=1e-12)


def test_decay_or_grow_noise_temperature():
    # lr / B is equal in both modes, so Smith's lr * N / B is; the exact lr * (N/B - 1)
    # differs by lr_decay * (B/B0 - 1), here 0.05 * (64/32 - 1) = 0.05 of 0.05 * (10000/32 - 1).
    common = {"base_lr": 0.1, "base_batch": 32, "max_batch": 100}
    lr_decay, batch_decay = decay_or_grow(10, [10], 0.5, mode="decay", **common)
    lr_grow, batch_grow = decay_or_grow(10, [10], 0.5, mode="grow", **common)
    n = 10_000
    assert lr_grow * n / batch_grow == pytest.approx(lr_decay * n / batch_decay, rel=1e-12)
    gap = noise_temperature(lr_decay, batch_decay, n) - noise_temperature(lr_grow, batch_grow, n)
    assert gap == pytest.approx(0.05, rel=1e-9)


def test_coupled_weight_decay_by_hand():
    # Set wd 0.01 at rate 0.1 (shrink 1 - 0.001 per step). At rate 0.2, fixed-shrink halves wd
    # (0.2 * 0.005 = 0.001); lr-proportional keeps 0.01 (shrink 1 - 0.002).
    assert coupled_weight_decay(0.01, 0.2, 0.1, "fixed-shrink") == pytest.approx(0.005)
    assert coupled_weight_decay(0.01, 0.05, 0.1, "fixed-shrink") == pytest.approx(0.02)
    assert coupled_weight_decay(0.01, 0.2, 0.1, "lr-proportional") == 0.01
    assert coupled_weight_decay(0.0, 0.2, 0.1, "fixed-shrink") == 0.0
    assert coupled_weight_decay(0.01, 0.1, 0.1, "fixed-shrink") == 0.01


def one_step_shrink(optimizer: str, lr: float, weight_decay: float) -> float:
    """Factor by which one step with a zero gradient multiplies a parameter (float64)."""
    torch = pytest.importorskip("torch")
    param = torch.nn.Parameter(torch.tensor([2.0, -3.0], dtype=torch.float64))
    if optimizer == "sgd":
        opt = torch.optim.SGD([param], lr=lr, momentum=0.0, weight_decay=weight_decay)
    else:
        opt = torch.optim.AdamW([param], lr=lr, weight_decay=weight_decay)
    param.grad = torch.zeros_like(param)
    before = param.detach().clone()
    opt.step()
    ratios = (param.detach() / before).tolist()
    assert ratios[0] == pytest.approx(ratios[1], rel=1e-15)
    return ratios[0]


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("coupling", WEIGHT_DECAY_COUPLINGS)
def test_one_torch_step_shrinks_by_one_minus_lr_times_wd(optimizer, coupling):
    base_lr, weight_decay = 0.1, 0.01
    shrinks = []
    for lr in (0.05, 0.4):
        wd = coupled_weight_decay(weight_decay, lr, base_lr, coupling)
        shrink = one_step_shrink(optimizer, lr, wd)
        assert shrink == pytest.approx(1 - lr * wd, rel=1e-14)
        shrinks.append(shrink)
    if coupling == "fixed-shrink":
        # 1 - 0.1 * 0.01 = 0.999 at both rates.
        assert shrinks == pytest.approx([0.999, 0.999], rel=1e-14)
    else:
        # 1 - 0.05 * 0.01 = 0.9995 and 1 - 0.4 * 0.01 = 0.996.
        assert shrinks == pytest.approx([0.9995, 0.996], rel=1e-14)


# ---------------------------------------------------------------------------------------------
# Validation: one line naming the argument, what was given and what is allowed
# ---------------------------------------------------------------------------------------------

VALID = {
    two_batch_terms: {"sq_norm_small": 5.0, "sq_norm_big": 2.0, "b_small": 10, "b_big": 40},
    b_simple: {"g2": 1.0, "trace": 40.0},
    optimal_lr: {"batch_size": 100, "lr_max": 1.0, "b_noise": 300.0},
    adascale_gain: {"sigma2": 3.0, "mu2": 1.0, "scale": 4.0},
    goyal_warmup_lr: {"base_lr": 0.1, "scale": 4.0, "step": 2, "warmup_steps": 4},
    malladi_sqrt: {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "kappa": 4.0},
    rule_invariant: {"lr": 0.1, "batch_size": 16, "rule": "sqrt"},
    noise_temperature: {"lr": 0.1, "batch_size": 100, "dataset_size": 10_000, "momentum": 0.9},
    coupling_factors: {
        "batch_sizes": [8, 32],
        "reference": 32,
        "rule": "optimal",
        "b_noise": 64.0,
        "low": 0.05,
        "high": 20.0,
    },
    decay_or_grow: {
        "round_": 3,
        "milestones": [2, 5],
        "factor": 0.5,
        "base_lr": 0.1,
        "base_batch": 32,
        "max_batch": 100,
        "mode": "grow",
    },
    coupled_weight_decay: {
        "weight_decay": 0.01,
        "lr": 0.2,
        "base_lr": 0.1,
        "coupling": "fixed-shrink",
    },
}

# (function, argument, what is allowed): "positive" > 0, "non-negative" >= 0, "finite" any sign,
# "unit" in [0, 1), "open unit" in (0, 1), "low" in (0, 1], "high" >= 1, "int>=k" integers >= k.
NUMERIC_ARGUMENTS = [
    (two_batch_terms, "sq_norm_small", "non-negative"),
    (two_batch_terms, "sq_norm_big", "non-negative"),
    (two_batch_terms, "b_small", "positive"),
    (b_simple, "g2", "finite"),
    (b_simple, "trace", "finite"),
    (optimal_lr, "batch_size", "positive"),
    (optimal_lr, "lr_max", "positive"),
    (optimal_lr, "b_noise", "non-negative"),
    (adascale_gain, "sigma2", "non-negative"),
    (adascale_gain, "mu2", "non-negative"),
    (adascale_gain, "scale", "positive"),
    (goyal_warmup_lr, "base_lr", "positive"),
    (goyal_warmup_lr, "scale", "positive"),
    (goyal_warmup_lr, "step", "int>=0"),
    (goyal_warmup_lr, "warmup_steps", "int>=0"),
    (malladi_sqrt, "lr", "positive"),
    (malladi_sqrt, "beta1", "unit"),
    (malladi_sqrt, "beta2", "unit"),
    (malladi_sqrt, "eps", "non-negative"),
    (malladi_sqrt, "kappa", "positive"),
    (rule_invariant, "lr", "positive"),
    (rule_invariant, "batch_size", "positive"),
    (noise_temperature, "lr", "positive"),
    (noise_temperature, "batch_size", "int>=1"),
    (noise_temperature, "momentum", "unit"),
    (coupling_factors, "reference", "positive"),
    (coupling_factors, "b_noise", "non-negative"),
    (coupling_factors, "low", "low"),
    (coupling_factors, "high", "high"),
    (decay_or_grow, "round_", "int>=1"),
    (decay_or_grow, "factor", "open unit"),
    (decay_or_grow, "base_lr", "positive"),
    (decay_or_grow, "base_batch", "int>=1"),
    (coupled_weight_decay, "weight_decay", "non-negative"),
    (coupled_weight_decay, "lr", "positive"),
    (coupled_weight_decay, "base_lr", "positive"),
]

finite_floats = st.floats(allow_nan=False, allow_infinity=False)
NOT_A_FINITE_NUMBER = st.one_of(
    st.booleans(),
    st.sampled_from([math.nan, math.inf, -math.inf, np.float64("nan")]),
    st.text(max_size=3),
    st.none(),
)
OUT_OF_RANGE = {
    "positive": st.floats(max_value=0.0, allow_nan=False),
    "non-negative": st.floats(max_value=0.0, exclude_max=True, allow_nan=False),
    "finite": st.nothing(),
    "unit": st.one_of(
        st.floats(min_value=1.0, allow_nan=False), st.floats(max_value=0.0, exclude_max=True)
    ),
    "open unit": st.one_of(st.floats(min_value=1.0), st.floats(max_value=0.0)),
    "low": st.one_of(st.floats(min_value=1.0, exclude_min=True), st.floats(max_value=0.0)),
    "high": st.floats(max_value=1.0, exclude_max=True),
    "int>=0": st.one_of(st.integers(max_value=-1), finite_floats),
    "int>=1": st.one_of(st.integers(max_value=0), finite_floats, st.just(np.int64(0))),
}


@given(data=st.data())
def test_a_bad_number_names_the_argument_and_what_was_given(data):
    function, argument, allowed = data.draw(st.sampled_from(NUMERIC_ARGUMENTS))
    bad = data.draw(st.one_of(NOT_A_FINITE_NUMBER, OUT_OF_RANGE[allowed]))
    with pytest.raises(ValueError) as error:
        function(**{**VALID[function], argument: bad})
    message = str(error.value)
    assert message.startswith(f"{argument}: expected "), message
    assert message.endswith(f"got {bad!r}"), message
    assert "\n" not in message


def test_the_valid_arguments_are_valid():
    for function, arguments in VALID.items():
        function(**arguments)


@pytest.mark.parametrize(
    ("function", "changes", "message"),
    [
        (
            two_batch_terms,
            {"b_big": 10},
            r"b_big: expected a finite number > b_small \(10\), got 10",
        ),
        (two_batch_terms, {"b_big": 4}, r"b_big: expected a finite number > b_small \(10\), got 4"),
        (rule_invariant, {"rule": "optimal"}, r"rule: expected linear or sqrt, got 'optimal'"),
        (
            coupling_factors,
            {"rule": "cubic"},
            r"rule: expected linear, sqrt or optimal, got 'cubic'",
        ),
        (
            coupling_factors,
            {"batch_sizes": [8, 0]},
            r"batch_sizes: expected numbers > 0, got \[8, 0\]",
        ),
        (
            coupling_factors,
            {"batch_sizes": [8, True]},
            r"batch_sizes: expected numbers > 0, got \[8, True\]",
        ),
        (
            coupling_factors,
            {"batch_sizes": [8, math.inf]},
            r"batch_sizes: expected numbers > 0, got \[8, inf\]",
        ),
        (
            noise_temperature,
            {"dataset_size": 50},
            r"dataset_size: expected an integer >= batch_size \(100\), got 50",
        ),
        (
            noise_temperature,
            {"dataset_size": 1e6},
            r"dataset_size: expected an integer >= batch_size \(100\), got 1000000\.0",
        ),
        (decay_or_grow, {"mode": "shrink"}, r"mode: expected decay or grow, got 'shrink'"),
        (
            decay_or_grow,
            {"milestones": [5, 5]},
            r"milestones: expected strictly increasing integers >= 1, got \[5, 5\]",
        ),
        (
            decay_or_grow,
            {"milestones": [0, 5]},
            r"milestones: expected strictly increasing integers >= 1, got \[0, 5\]",
        ),
        (
            decay_or_grow,
            {"milestones": [2.5]},
            r"milestones: expected strictly increasing integers >= 1, got \[2\.5\]",
        ),
        (
            decay_or_grow,
            {"max_batch": 16},
            r"max_batch: expected an integer >= base_batch \(32\), got 16",
        ),
        (
            coupled_weight_decay,
            {"coupling": "decoupled"},
            r"coupling: expected fixed-shrink or lr-proportional, got 'decoupled'",
        ),
    ],
)
def test_bad_choices_and_sequences_name_the_argument(function, changes, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        function(**{**VALID[function], **changes})


@pytest.mark.parametrize(
    ("gradients", "batch_sizes", "message"),
    [
        (np.ones((1, 3)), [4], r"^gradients: expected a finite array of shape \(K >= 2, P\)"),
        (np.ones(3), [4, 4, 4], r"^gradients: expected a finite array of shape \(K >= 2, P\)"),
        (np.array([[1.0, np.nan], [1.0, 2.0]]), [4, 4], r"^gradients: .* non-finite values$"),
        (np.ones((2, 3)), [4], r"^batch_sizes: expected K = 2 integers >= 1, got \[4\]$"),
        (np.ones((2, 3)), [4, 0], r"^batch_sizes: expected K = 2 integers >= 1, got \[4, 0\]$"),
        (np.ones((2, 3)), [4, 2.5], r"^batch_sizes: expected K = 2 integers >= 1"),
        (np.ones((2, 3)), [4, True], r"^batch_sizes: expected K = 2 integers >= 1"),
    ],
)
def test_bad_federated_input_names_the_argument(gradients, batch_sizes, message):
    with pytest.raises(ValueError, match=message):
        federated_terms(gradients, batch_sizes)


def test_bad_noise_scale_ema_input_names_the_argument():
    for decay in (1.0, -0.1, math.nan, True):
        with pytest.raises(
            ValueError, match=rf"^decay: expected a number in \[0, 1\), got {decay!r}$"
        ):
            NoiseScaleEMA(decay=decay)
    ema = NoiseScaleEMA()
    for value in (math.nan, math.inf, None, True):
        with pytest.raises(ValueError, match=r"^g2: expected a finite number, got "):
            ema.update(value, 1.0)
        with pytest.raises(ValueError, match=r"^trace: expected a finite number, got "):
            ema.update(1.0, value)
    assert ema.count == 0  # a refused update changes nothing
    with pytest.raises(ValueError, match=r"^state: expected the key 'count'"):
        NoiseScaleEMA.from_dict({"decay": 0.5, "g2_sum": 0.0, "trace_sum": 0.0})
    with pytest.raises(ValueError, match=r"^state\['count'\]: expected an integer >= 0, got -1$"):
        NoiseScaleEMA.from_dict({"decay": 0.5, "count": -1, "g2_sum": 0.0, "trace_sum": 0.0})


# ---------------------------------------------------------------------------------------------
# Properties of the new rules and estimators
# ---------------------------------------------------------------------------------------------

noise_scales = st.floats(min_value=0.0, max_value=1e6)
client_batches = st.lists(batches, min_size=1, max_size=12)


@given(
    sizes=client_batches,
    reference=st.floats(min_value=1.0, max_value=4096.0),
    rule=st.sampled_from(COUPLING_RULES),
    b_noise=noise_scales,
)
def test_the_coupled_rate_never_falls_with_the_batch(sizes, reference, rule, b_noise):
    sizes = sorted(sizes)
    factors = coupling_factors(sizes, reference, rule, b_noise=b_noise)
    assert np.all(np.diff(factors) >= 0)
    assert np.all((factors >= 0.05) & (factors <= 20.0))
    assert np.all(factors[np.asarray(sizes) == reference] == 1.0)


@given(
    sizes=client_batches,
    reference=batches,
    base_lr=rates,
    rule=st.sampled_from(RULES),
)
def test_after_coupling_every_client_has_the_same_invariant(sizes, reference, base_lr, rule):
    # Wide clip range, so that no factor is clipped: then lr_k / b_k (or / sqrt(b_k)) is shared.
    factors = coupling_factors(sizes, reference, rule, low=1e-9, high=1e9)
    invariants = [rule_invariant(base_lr * f, b, rule) for f, b in zip(factors, sizes, strict=True)]
    assert invariants == pytest.approx(
        [rule_invariant(base_lr, reference, rule)] * len(sizes), rel=1e-12
    )


@given(
    sigma2=st.floats(min_value=0.0, max_value=1e6),
    mu2=st.floats(min_value=0.0, max_value=1e6),
    scale=st.floats(min_value=1e-3, max_value=1e4),
)
def test_the_adascale_gain_lies_between_1_and_s(sigma2, mu2, scale):
    gain = adascale_gain(sigma2, mu2, scale)
    assert min(1.0, scale) <= gain <= max(1.0, scale)


@given(
    base_batch=st.floats(min_value=1.0, max_value=1e4),
    scale=st.floats(min_value=1.0, max_value=1e3),
    noise_scale=st.floats(min_value=1e-3, max_value=1e6),
    g2=st.floats(min_value=1e-3, max_value=1e3),
)
def test_the_adascale_gain_is_a_ratio_of_optimal_rates(base_batch, scale, noise_scale, g2):
    # sigma^2 = tr Sigma / b with tr Sigma = B_simple * |G|^2.
    gain = adascale_gain(noise_scale * g2 / base_batch, g2, scale)
    ratio = optimal_lr(scale * base_batch, 1.0, noise_scale) / optimal_lr(
        base_batch, 1.0, noise_scale
    )
    assert gain == pytest.approx(ratio, rel=1e-9)


@given(
    rounds=st.integers(min_value=1, max_value=60),
    milestones=st.lists(st.integers(min_value=1, max_value=60), max_size=5, unique=True).map(
        sorted
    ),
    factor=st.floats(min_value=0.05, max_value=0.95),
    base_lr=rates,
    base_batch=st.integers(min_value=1, max_value=512),
    extra=st.integers(min_value=0, max_value=10_000),
)
def test_growing_the_batch_keeps_lr_over_batch_of_decaying_the_rate(
    rounds, milestones, factor, base_lr, base_batch, extra
):
    common = {"base_lr": base_lr, "base_batch": base_batch, "max_batch": base_batch + extra}
    for round_ in range(1, rounds + 1):
        lr_decay, batch_decay = decay_or_grow(round_, milestones, factor, mode="decay", **common)
        lr_grow, batch_grow = decay_or_grow(round_, milestones, factor, mode="grow", **common)
        assert batch_decay == base_batch
        assert base_batch <= batch_grow <= base_batch + extra
        assert lr_decay <= lr_grow
        assert lr_grow / batch_grow == pytest.approx(lr_decay / batch_decay, rel=1e-12)


@given(
    decay=st.floats(min_value=0.0, max_value=0.999),
    draws=st.lists(
        st.tuples(finite_floats, finite_floats).filter(lambda t: max(map(abs, t)) < 1e100),
        max_size=20,
    ),
    more=st.tuples(
        st.floats(min_value=-1e3, max_value=1e3), st.floats(min_value=-1e3, max_value=1e3)
    ),
)
def test_noise_scale_ema_round_trips_through_json(decay, draws, more):
    ema = NoiseScaleEMA(decay=decay)
    for g2, trace in draws:
        ema.update(g2, trace)
    restored = NoiseScaleEMA.from_dict(json.loads(json.dumps(ema.to_dict())))
    assert restored.to_dict() == ema.to_dict()
    assert restored.count == ema.count
    for name in ("g2", "trace", "b_simple"):
        a, b = getattr(restored, name), getattr(ema, name)
        assert a == b or (a != a and b != b), name  # equal, or both nan
    # ... and it goes on exactly as the original would.
    a, b = restored.update(*more), ema.update(*more)
    assert a == b or (math.isnan(a) and math.isnan(b))


@given(
    decay=st.floats(min_value=0.0, max_value=0.99),
    draws=st.lists(
        st.tuples(
            st.floats(min_value=-10.0, max_value=10.0), st.floats(min_value=-100.0, max_value=100.0)
        ),
        min_size=1,
        max_size=20,
    ),
)
def test_noise_scale_ema_is_a_ratio_of_weighted_means(decay, draws):
    ema = NoiseScaleEMA(decay=decay)
    for g2, trace in draws:
        ema.update(g2, trace)
    values = np.array(draws)
    weights = decay ** np.arange(len(draws))[::-1]  # the newest draw weighs 1
    g2_mean, trace_mean = weights @ values / weights.sum()
    assert ema.g2 == pytest.approx(g2_mean, rel=1e-9, abs=1e-9)
    assert ema.trace == pytest.approx(trace_mean, rel=1e-9, abs=1e-8)


@given(
    num_clients=st.integers(min_value=2, max_value=8),
    batch=st.integers(min_value=1, max_value=64),
    size=st.integers(min_value=1, max_value=10),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_federated_terms_with_equal_batches_is_the_adaptdl_estimator(
    num_clients, batch, size, seed
):
    grads = np.random.default_rng(seed).normal(size=(num_clients, size))
    g2, trace = federated_terms(grads, [batch] * num_clients)
    mean_sq = float(np.mean(np.sum(grads**2, axis=1)))
    mean_grad = grads.mean(axis=0)
    sq_mean = float(mean_grad @ mean_grad)
    assert g2 == pytest.approx(
        (num_clients * sq_mean - mean_sq) / (num_clients - 1), rel=1e-9, abs=1e-9
    )
    assert trace == pytest.approx(
        batch * num_clients * (mean_sq - sq_mean) / (num_clients - 1), rel=1e-9, abs=1e-9
    )


@given(
    sizes=st.lists(st.integers(min_value=1, max_value=256), min_size=2, max_size=8),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    data=st.data(),
)
def test_client_order_does_not_change_the_federated_terms(sizes, seed, data):
    grads = np.random.default_rng(seed).normal(size=(len(sizes), 5))
    order = data.draw(st.permutations(range(len(sizes))))
    shuffled = federated_terms(grads[list(order)], [sizes[i] for i in order])
    assert shuffled == pytest.approx(federated_terms(grads, sizes), rel=1e-9, abs=1e-9)
