import doctest
import math

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given

import fedlr.metrics.fairness
from fedlr.metrics.fairness import (
    best_fraction_mean,
    clean_noisy_gap,
    fairness_summary,
    gini,
    jain_index,
    metric_fairness_summary,
    spearman_rho,
    worst_fraction_mean,
)

SUMMARY_KEYS = {"mean", "variance", "worst10", "best10", "jain", "gini"}

accuracy = st.floats(min_value=0.0, max_value=1.0, allow_nan=False, allow_infinity=False)
accuracy_lists = st.lists(accuracy, min_size=1, max_size=40)


# --- hand-worked values ---------------------------------------------------------------------


def test_summary_by_hand():
    summary = fairness_summary([0.5, 0.7, 0.9, 1.0])
    assert set(summary) == SUMMARY_KEYS
    # mean = 3.1 / 4
    assert summary["mean"] == pytest.approx(0.775)
    # deviations -0.275, -0.075, 0.125, 0.225; squares 0.075625 + 0.005625 + 0.015625 + 0.050625
    # = 0.1475; / K=4 (ddof=0, not 3) = 0.036875
    assert summary["variance"] == pytest.approx(0.036875)
    # K=4: ceil(0.4) = 1 client
    assert summary["worst10"] == 0.5
    assert summary["best10"] == 1.0
    # (sum a)^2 = 3.1^2 = 9.61; sum a^2 = 0.25 + 0.49 + 0.81 + 1.0 = 2.55; 9.61 / (4 * 2.55)
    assert summary["jain"] == pytest.approx(9.61 / 10.2)
    # pairs i<j: 0.2 + 0.4 + 0.5 + 0.2 + 0.3 + 0.1 = 1.7, both orders 3.4; 2 K^2 mean = 2*16*0.775
    assert summary["gini"] == pytest.approx(3.4 / 24.8)


def test_summary_values_are_python_floats():
    assert all(type(value) is float for value in fairness_summary([0.2, 0.4]).values())


def test_clients_are_not_weighted():
    # A client listed once counts once: no example counts enter anywhere.
    assert fairness_summary([0.0, 1.0])["mean"] == 0.5
    assert fairness_summary([0.0, 1.0])["variance"] == 0.25


def test_extremes_of_jain_and_gini():
    # One client holds all the accuracy: J = 1/K, G = 1 - 1/K.
    assert jain_index([0.8, 0.0, 0.0, 0.0, 0.0]) == pytest.approx(1 / 5)
    assert gini([0.8, 0.0, 0.0, 0.0, 0.0]) == pytest.approx(4 / 5)
    assert jain_index([0.3]) == 1.0
    assert gini([0.3]) == 0.0


def test_all_zero_accuracies_are_perfectly_equal():
    summary = fairness_summary([0.0, 0.0, 0.0])
    assert summary == {
        "mean": 0.0,
        "variance": 0.0,
        "worst10": 0.0,
        "best10": 0.0,
        "jain": 1.0,
        "gini": 0.0,
    }


def test_worst_best_ten_clients():
    # K=10: ceil(1.0) = 1 client each way.
    accuracies = [0.5, 0.1, 0.9, 0.3, 1.0, 0.7, 0.2, 0.8, 0.4, 0.6]
    assert worst_fraction_mean(accuracies) == 0.1
    assert best_fraction_mean(accuracies) == 1.0


def test_worst_best_twenty_five_clients_round_up():
    # K=25: ceil(2.5) = 3 clients; accuracies k/25 for k = 0..24, reversed to be unsorted.
    accuracies = [k / 25 for k in reversed(range(25))]
    assert worst_fraction_mean(accuracies) == pytest.approx((0 + 1 + 2) / 75)
    assert best_fraction_mean(accuracies) == pytest.approx((22 + 23 + 24) / 75)
    summary = fairness_summary(accuracies)
    assert summary["worst10"] == pytest.approx(0.04)
    assert summary["best10"] == pytest.approx(0.92)


def test_fraction_count_ignores_round_off():
    # 0.7 * 10 = 7.000000000000001 in floats; still 7 clients, not 8.
    accuracies = [k / 10 for k in range(10)]
    assert worst_fraction_mean(accuracies, fraction=0.7) == pytest.approx(sum(range(7)) / 70)
    assert best_fraction_mean(accuracies, fraction=0.7) == pytest.approx(sum(range(3, 10)) / 70)
    # K=30: ceil(3.0) = 3.
    accuracies = [k / 30 for k in range(30)]
    assert worst_fraction_mean(accuracies) == pytest.approx((0 + 1 + 2) / 90)


def test_fraction_one_is_the_mean():
    assert worst_fraction_mean([0.2, 0.4, 0.9], fraction=1.0) == pytest.approx(0.5)
    assert best_fraction_mean([0.2, 0.4, 0.9], fraction=1) == pytest.approx(0.5)


def test_clean_noisy_gap_by_hand():
    # clean: (0.9 + 0.8) / 2 = 0.85; noisy: (0.5 + 0.7) / 2 = 0.6
    assert clean_noisy_gap([0.9, 0.8, 0.5, 0.7], [0.0, 0.0, 0.4, 0.2]) == pytest.approx(0.25)
    # noisy clients better: negative gap
    assert clean_noisy_gap([0.4, 0.8], [0.0, 0.1]) == pytest.approx(-0.4)


@pytest.mark.parametrize("noise_true", [[0.0, 0.0, 0.0], [0.1, 0.2, 0.5]])
def test_clean_noisy_gap_is_nan_with_one_group(noise_true):
    assert math.isnan(clean_noisy_gap([0.5, 0.6, 0.7], noise_true))


def test_spearman_by_hand():
    # ranks (3, 1, 4, 2) vs (3, 1, 2, 4); d = (0, 0, 2, -2), sum d^2 = 8
    # rho = 1 - 6 * 8 / (4 * (16 - 1)) = 1 - 48 / 60 = 0.2
    assert spearman_rho([0.3, 0.1, 0.4, 0.2], [0.2, 0.0, 0.1, 0.3]) == pytest.approx(0.2)
    assert spearman_rho([0.1, 0.2, 0.3], [5.0, 7.0, 100.0]) == pytest.approx(1.0)
    assert spearman_rho([0.1, 0.2, 0.3], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)


def test_spearman_ties_get_average_ranks():
    # ranks (1.5, 1.5, 3) vs (1, 2, 3); centred (-0.5, -0.5, 1) and (-1, 0, 1)
    # cov 0.5 + 0 + 1 = 1.5; norms^2 1.5 and 2; rho = 1.5 / sqrt(3) = sqrt(3) / 2
    assert spearman_rho([0.1, 0.1, 0.3], [0.0, 0.2, 0.4]) == pytest.approx(math.sqrt(3) / 2)


@pytest.mark.parametrize(
    ("estimate", "truth"),
    [
        ([0.2, 0.2, 0.2], [0.1, 0.2, 0.3]),  # constant estimate
        ([0.1, 0.2, 0.3], [0.4, 0.4, 0.4]),  # constant truth
        ([0.1], [0.2]),  # fewer than 2 values
        ([], []),
        ([0.1, float("nan"), 0.3], [0.1, 0.2, 0.3]),
        ([0.1, 0.2, 0.3], [0.1, float("inf"), 0.3]),
    ],
)
def test_spearman_nan_cases(estimate, truth):
    assert math.isnan(spearman_rho(estimate, truth))


# --- input validation -----------------------------------------------------------------------

ACCURACY_FUNCTIONS = [fairness_summary, worst_fraction_mean, best_fraction_mean, jain_index, gini]


@pytest.mark.parametrize("function", ACCURACY_FUNCTIONS)
@pytest.mark.parametrize(
    ("accuracies", "match"),
    [
        ([], "accuracies .*at least one"),
        ([0.5, float("nan")], "accuracies .*finite"),
        ([0.5, float("inf")], "accuracies .*finite"),
        ([0.5, 1.5], r"accuracies .*\[0, 1\]"),
        ([-0.1, 0.5], r"accuracies .*\[0, 1\]"),
        ([[0.5, 0.6]], "accuracies .*1-D"),
    ],
)
def test_invalid_accuracies_raise(function, accuracies, match):
    with pytest.raises(ValueError, match=match):
        function(accuracies)


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, float("nan"), True])
def test_invalid_fraction_raises(fraction):
    with pytest.raises(ValueError, match=r"fraction .*\(0, 1\]"):
        worst_fraction_mean([0.5, 0.6], fraction)
    with pytest.raises(ValueError, match=r"fraction .*\(0, 1\]"):
        best_fraction_mean([0.5, 0.6], fraction)


def test_clean_noisy_gap_validation():
    with pytest.raises(ValueError, match="same length"):
        clean_noisy_gap([0.5, 0.6], [0.0])
    with pytest.raises(ValueError, match="accuracies .*at least one"):
        clean_noisy_gap([], [])
    with pytest.raises(ValueError, match="accuracies .*finite"):
        clean_noisy_gap([0.5, float("nan")], [0.0, 0.1])
    with pytest.raises(ValueError, match="noise_true .*>= 0"):
        clean_noisy_gap([0.5, 0.6], [0.0, -0.1])
    with pytest.raises(ValueError, match="noise_true .*finite"):
        clean_noisy_gap([0.5, 0.6], [0.0, float("nan")])


def test_spearman_validation():
    with pytest.raises(ValueError, match="same length"):
        spearman_rho([0.1, 0.2, 0.3], [0.1, 0.2])
    with pytest.raises(ValueError, match="estimate .*1-D"):
        spearman_rho([[0.1, 0.2]], [0.1, 0.2])


# --- properties -----------------------------------------------------------------------------


@given(accuracy_lists)
def test_jain_and_gini_stay_in_bounds(accuracies):
    num_clients = len(accuracies)
    assert 1 / num_clients <= jain_index(accuracies) <= 1.0
    assert 0.0 <= gini(accuracies) <= 1 - 1 / num_clients


@given(accuracy_lists)
def test_summary_is_ordered(accuracies):
    summary = fairness_summary(accuracies)
    assert set(summary) == SUMMARY_KEYS
    low, high = min(accuracies), max(accuracies)
    # a mean of equal values may round one ulp past them, hence the tolerance
    tolerance = 1e-12
    assert low - tolerance <= summary["worst10"] <= summary["best10"] + tolerance
    assert summary["best10"] <= high + tolerance
    assert low - tolerance <= summary["mean"] <= high + tolerance
    assert summary["worst10"] - tolerance <= summary["mean"] <= summary["best10"] + tolerance
    assert summary["variance"] >= 0.0


@given(accuracy_lists, st.floats(min_value=0.01, max_value=1.0), st.data())
def test_accuracy_metrics_are_permutation_invariant(accuracies, fraction, data):
    shuffled = data.draw(st.permutations(accuracies))
    original, permuted = fairness_summary(accuracies), fairness_summary(shuffled)
    for key in SUMMARY_KEYS:
        assert permuted[key] == pytest.approx(original[key], rel=1e-12, abs=1e-12), key
    assert worst_fraction_mean(shuffled, fraction) == pytest.approx(
        worst_fraction_mean(accuracies, fraction), rel=1e-12, abs=1e-12
    )
    assert best_fraction_mean(shuffled, fraction) == pytest.approx(
        best_fraction_mean(accuracies, fraction), rel=1e-12, abs=1e-12
    )


paired_clients = st.lists(
    st.tuples(accuracy, st.sampled_from([0.0, 0.0, 0.1, 0.2, 0.4])), min_size=1, max_size=40
)


@given(paired_clients, st.data())
def test_gap_and_spearman_are_permutation_invariant(clients, data):
    shuffled = data.draw(st.permutations(clients))
    accuracies, noise = (list(column) for column in zip(*clients, strict=True))
    accuracies_p, noise_p = (list(column) for column in zip(*shuffled, strict=True))
    gap, gap_p = clean_noisy_gap(accuracies, noise), clean_noisy_gap(accuracies_p, noise_p)
    assert (math.isnan(gap) and math.isnan(gap_p)) or gap_p == pytest.approx(gap, abs=1e-12)
    rho, rho_p = spearman_rho(accuracies, noise), spearman_rho(accuracies_p, noise_p)
    assert (math.isnan(rho) and math.isnan(rho_p)) or rho_p == pytest.approx(rho, abs=1e-12)
    assert math.isnan(rho) or -1.0 <= rho <= 1.0


@given(accuracy, st.integers(min_value=1, max_value=50))
def test_constant_accuracies_are_perfectly_fair(value, num_clients):
    summary = fairness_summary([value] * num_clients)
    assert summary["variance"] == pytest.approx(0.0, abs=1e-12)
    assert summary["jain"] == pytest.approx(1.0)
    assert summary["gini"] == pytest.approx(0.0, abs=1e-12)
    assert summary["worst10"] == pytest.approx(value)
    assert summary["best10"] == pytest.approx(value)


@given(st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=30, unique=True))
def test_spearman_of_a_sequence_with_itself_is_one(values):
    assert spearman_rho(values, values) == pytest.approx(1.0)
    assert spearman_rho(values, [-value for value in values]) == pytest.approx(-1.0)


def test_spearman_uses_numpy_inputs():
    rng = np.random.default_rng(0)
    truth = rng.uniform(size=20)
    assert spearman_rho(truth * 3 + 1, truth) == pytest.approx(1.0)


# --- other metrics than accuracy ------------------------------------------------------------


def test_a_loss_summary_by_hand():
    # losses 0.2, 0.4, 0.6, 0.8: mean 0.5; squared deviations 0.09 + 0.01 + 0.01 + 0.09 = 0.2,
    # / 4 = 0.05; worst = highest (ceil(0.4) = 1 client), best = lowest;
    # Jain 2^2 / (4 * (0.04 + 0.16 + 0.36 + 0.64)) = 4 / 4.8; Gini: pairs i<j 0.2 + 0.4 + 0.6 +
    # 0.2 + 0.4 + 0.2 = 2.0, both orders 4.0, / (2 * 16 * 0.5) = 0.25
    summary = metric_fairness_summary([0.6, 0.2, 0.8, 0.4], "loss")
    assert set(summary) == SUMMARY_KEYS
    assert summary["mean"] == pytest.approx(0.5)
    assert summary["variance"] == pytest.approx(0.05)
    assert (summary["worst10"], summary["best10"]) == (0.8, 0.2)
    assert summary["jain"] == pytest.approx(4 / 4.8)
    assert summary["gini"] == pytest.approx(0.25)


def test_losses_need_no_upper_bound_and_jain_gini_are_scale_free():
    small = metric_fairness_summary([0.5, 1.0, 2.0], "loss")
    large = metric_fairness_summary([5.0, 10.0, 20.0], "loss")
    assert large["jain"] == pytest.approx(small["jain"])
    assert large["gini"] == pytest.approx(small["gini"])
    zeros = metric_fairness_summary([0.0, 0.0], "loss")
    assert (zeros["jain"], zeros["gini"]) == (1.0, 0.0)  # all equal


@pytest.mark.parametrize("metric", ["accuracy", "balanced-accuracy", "auroc", "f1"])
def test_a_score_summary_is_the_accuracy_summary(metric):
    values = [0.5, 0.7, 0.9, 1.0]
    assert metric_fairness_summary(values, metric) == fairness_summary(values)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metric_fairness_summary([1.5], metric)


@pytest.mark.parametrize("bad", [[], [-0.1], [float("nan")], [float("inf")]])
def test_bad_losses_are_refused(bad):
    with pytest.raises(ValueError, match="loss"):
        metric_fairness_summary(bad, "loss")


# --- docstring examples ---------------------------------------------------------------------


def test_docstring_examples_are_correct():
    result = doctest.testmod(fedlr.metrics.fairness)
    assert result.attempted > 0
    assert result.failed == 0
