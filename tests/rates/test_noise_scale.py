"""Tests for fedlr/rates/noise_scale.py: the gradient noise scale and the rates it gives.

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

import fedlr.rates.noise_scale
from fedlr.rates.noise_scale import (
    NoiseScaleEMA,
    adascale_gain,
    b_simple,
    federated_terms,
    optimal_lr,
    two_batch_terms,
)

finite_floats = st.floats(allow_nan=False, allow_infinity=False)


def test_doctests():
    result = doctest.testmod(fedlr.rates.noise_scale)
    assert result.attempted > 0
    assert result.failed == 0


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
# The rates a noise scale gives, worked by hand
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


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


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
# Properties
# ---------------------------------------------------------------------------------------------


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
