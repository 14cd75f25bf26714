"""Tests for fedlr/rates/coupling.py: batch-size rules, and the names it re-exports.

The noise scale, the batch schedule and the weight decay have their own test modules
(test_noise_scale.py, test_batch_schedule.py, test_weight_decay.py); the validation table below
covers every function of the coupling API, wherever it is defined.
"""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fedlr.rates.batch_schedule
import fedlr.rates.coupling
import fedlr.rates.noise_scale
import fedlr.rates.weight_decay
from fedlr.rates.coupling import (
    COUPLING_RULES,
    RULES,
    AdamHyper,
    adascale_gain,
    b_simple,
    batch_scale_factor,
    coupled_weight_decay,
    coupling_factors,
    decay_or_grow,
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


def test_the_split_out_names_are_re_exported():
    # Callers use coupling.<name> for the whole family (fedlr.fl.strategy among them).
    for module in (
        fedlr.rates.noise_scale,
        fedlr.rates.batch_schedule,
        fedlr.rates.weight_decay,
    ):
        public = [
            name
            for name, value in vars(module).items()
            if not name.startswith("_")
            and (name.isupper() or getattr(value, "__module__", None) == module.__name__)
        ]
        assert public
        for name in public:
            assert name in fedlr.rates.coupling.__all__, name
            assert getattr(fedlr.rates.coupling, name) is getattr(module, name), name


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
# Rules, worked by hand
# ---------------------------------------------------------------------------------------------


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
