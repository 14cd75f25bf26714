import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fedlr.data.partition as partition_module
from fedlr.data.datasets import load_digits_arrays
from fedlr.data.partition import log_normal_sizes, partition_indices

METHODS = ["iid", "dirichlet", "size-skew"]


def test_docstring_examples():
    assert doctest.testmod(partition_module).failed == 0


def _labels(n, num_classes=5):
    return np.arange(n) % num_classes


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(40, 300),
    num_partitions=st.integers(1, 4),
    method=st.sampled_from(METHODS),
)
def test_partitions_cover_every_index_exactly_once(seed, n, num_partitions, method):
    parts = partition_indices(
        _labels(n), num_partitions, method, alpha=5.0, seed=seed, min_partition_size=2
    )
    assert len(parts) == num_partitions
    for part in parts:
        assert part.dtype == np.int64
        assert np.all(np.diff(part) > 0)  # sorted, no duplicates
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(n))


@pytest.mark.parametrize("method", METHODS)
def test_deterministic_for_a_seed_and_different_for_another(method):
    labels = _labels(200)
    a = partition_indices(labels, 4, method, seed=11)
    b = partition_indices(labels, 4, method, seed=11)
    c = partition_indices(labels, 4, method, seed=12)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_iid_sizes_differ_by_at_most_one():
    sizes = [p.size for p in partition_indices(_labels(103), 4, "iid", seed=0)]
    assert sorted(sizes) == [25, 26, 26, 26]


def test_dirichlet_on_digits_keeps_ten_samples_per_partition():
    _, y = load_digits_arrays()
    for seed in range(5):
        parts = partition_indices(y, 10, "dirichlet", alpha=1.0, seed=seed)
        assert min(p.size for p in parts) >= 10


def test_dirichlet_small_alpha_skews_labels():
    _, y = load_digits_arrays()
    skewed = partition_indices(y, 10, "dirichlet", alpha=0.1, seed=0, min_partition_size=5)
    iid = partition_indices(y, 10, "iid", seed=0)

    def mean_classes(parts):
        return np.mean([np.unique(y[p]).size for p in parts])

    assert mean_classes(iid) == 10
    assert mean_classes(skewed) < 7


def test_size_skew_sizes_are_log_normal_shares():
    parts = partition_indices(_labels(1000), 5, "size-skew", size_sigma=1.0, seed=0)
    sizes = [p.size for p in parts]
    expected = log_normal_sizes(1000, 5, 1.0, np.random.default_rng(0), minimum=10)
    assert sizes == expected
    assert sum(sizes) == 1000 and min(sizes) >= 10
    assert max(sizes) > 2 * min(sizes)


def test_log_normal_sizes_worked_example():
    # weights lognormal(0, sigma) normalised; with a tiny sigma all weights are ~1: equal shares,
    # and the remainder 10 - 3*3 = 1 goes to the largest fractional part
    sizes = log_normal_sizes(10, 3, 1e-9, np.random.default_rng(0), minimum=1)
    assert sum(sizes) == 10 and sorted(sizes) == [3, 3, 4]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"method": "shards"}, "method"),
        ({"num_partitions": 0}, "num_partitions"),
        ({"num_partitions": 11}, "num_partitions"),
        ({"alpha": 0.0}, "alpha"),
        ({"size_sigma": -1.0}, "size_sigma"),
        ({"seed": -1}, "seed"),
        ({"min_partition_size": 0}, "min_partition_size"),
    ],
)
def test_bad_arguments(kwargs, name):
    args = {"num_partitions": 2, "method": "iid", "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=name):
        partition_indices(_labels(10), args.pop("num_partitions"), args.pop("method"), **args)


def test_bad_labels():
    with pytest.raises(ValueError, match="labels"):
        partition_indices(np.zeros((2, 2)), 2, "iid", seed=0)
