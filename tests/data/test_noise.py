import doctest

import numpy as np
import pytest

import fedlr.data.noise as noise_module
from fedlr.data.noise import gaussian_feature_noise, pair_flip_label_noise, symmetric_label_noise


def test_docstring_examples():
    assert doctest.testmod(noise_module).failed == 0


@pytest.mark.parametrize(("rate", "num_classes"), [(0.3, 10), (0.8, 4), (1.0, 2)])
def test_symmetric_changed_fraction_is_rate_times_one_minus_one_over_c(rate, num_classes):
    n = 50_000
    y = np.arange(n) % num_classes
    y_noisy, changed = symmetric_label_noise(y, rate, num_classes, np.random.default_rng(0))
    expected = rate * (1 - 1 / num_classes)
    std = np.sqrt(expected * (1 - expected) / n)
    assert abs(changed.mean() - expected) < 4 * std
    np.testing.assert_array_equal(changed, y_noisy != y)
    assert y_noisy.dtype == np.int64 and y_noisy.min() >= 0 and y_noisy.max() < num_classes


def test_symmetric_draws_uniformly_over_all_classes_true_one_included():
    y = np.zeros(40_000, dtype=np.int64)
    y_noisy, _ = symmetric_label_noise(y, 1.0, 4, np.random.default_rng(1))
    counts = np.bincount(y_noisy, minlength=4) / y.size
    np.testing.assert_allclose(counts, [0.25] * 4, atol=0.01)


def test_rate_zero_changes_nothing():
    y = np.arange(100) % 10
    for inject in (symmetric_label_noise, pair_flip_label_noise):
        y_noisy, changed = inject(y, 0.0, 10, np.random.default_rng(0))
        np.testing.assert_array_equal(y_noisy, y)
        assert not changed.any()


def test_pair_flip_maps_to_next_class_exactly_where_changed():
    y = np.arange(10_000) % 5
    y_noisy, changed = pair_flip_label_noise(y, 0.4, 5, np.random.default_rng(0))
    np.testing.assert_array_equal(y_noisy[changed], (y[changed] + 1) % 5)
    np.testing.assert_array_equal(y_noisy[~changed], y[~changed])
    assert abs(changed.mean() - 0.4) < 4 * np.sqrt(0.4 * 0.6 / y.size)


def test_pair_flip_worked_example():
    y_noisy, changed = pair_flip_label_noise(np.array([0, 1, 2]), 1.0, 3, np.random.default_rng(0))
    assert y_noisy.tolist() == [1, 2, 0] and changed.tolist() == [True, True, True]


def test_label_noise_is_seeded():
    y = np.arange(1000) % 10
    a = symmetric_label_noise(y, 0.5, 10, np.random.default_rng(3))[0]
    b = symmetric_label_noise(y, 0.5, 10, np.random.default_rng(3))[0]
    c = symmetric_label_noise(y, 0.5, 10, np.random.default_rng(4))[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_gaussian_feature_noise():
    x = np.ones((20_000, 3), dtype=np.float32)
    noisy = gaussian_feature_noise(x, 0.5, np.random.default_rng(0))
    assert noisy.dtype == np.float32 and noisy.shape == x.shape
    np.testing.assert_allclose(noisy.mean(axis=0), 1.0, atol=0.02)
    np.testing.assert_allclose(noisy.std(axis=0), 0.5, rtol=0.03)
    np.testing.assert_array_equal(x, 1.0)  # input untouched
    same = gaussian_feature_noise(x, 0.0, np.random.default_rng(0))
    np.testing.assert_array_equal(same, x)
    assert same is not x


@pytest.mark.parametrize("inject", [symmetric_label_noise, pair_flip_label_noise])
@pytest.mark.parametrize(
    ("y", "rate", "num_classes", "name"),
    [
        (np.array([0, 1]), -0.1, 3, "rate"),
        (np.array([0, 1]), 1.5, 3, "rate"),
        (np.array([0, 1]), 0.5, 1, "num_classes"),
        (np.array([0, 3]), 0.5, 3, "y"),
        (np.array([-1, 0]), 0.5, 3, "y"),
        (np.array([0.0, 1.0]), 0.5, 3, "y"),
    ],
)
def test_label_noise_bad_arguments(inject, y, rate, num_classes, name):
    with pytest.raises(ValueError, match=rf"^{name}:"):
        inject(y, rate, num_classes, np.random.default_rng(0))


@pytest.mark.parametrize("sigma", [-0.1, float("nan"), float("inf")])
def test_feature_noise_bad_sigma(sigma):
    with pytest.raises(ValueError, match="sigma"):
        gaussian_feature_noise(np.zeros(3), sigma, np.random.default_rng(0))
