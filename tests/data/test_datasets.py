import doctest

import numpy as np
import pytest

import fedlr.data.datasets as datasets_module
from fedlr.data.datasets import load_digits_arrays, synthetic_federated


def test_docstring_examples():
    assert doctest.testmod(datasets_module).failed == 0


def test_digits_arrays():
    x, y = load_digits_arrays()
    assert x.shape == (1797, 64) and x.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0  # pixel counts 0..16, divided by 16
    assert set(np.unique(y).tolist()) == set(range(10))


def test_digits_file_gives_exactly_what_load_digits_gives():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = load_digits_arrays()
    np.testing.assert_array_equal(x, (digits.data / 16.0).astype(np.float32))
    np.testing.assert_array_equal(y, digits.target)


def test_synthetic_shapes_dtypes_and_label_range():
    clients = synthetic_federated(5, 0.5, 0.5, seed=3, num_features=7, num_classes=4)
    assert len(clients) == 5
    for x, y in clients:
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert x.shape == (y.size, 7)
        assert 50 <= y.size <= 600  # int(lognormal(4, 2)) + 50, capped at 600
        assert y.min() >= 0 and y.max() < 4


def test_synthetic_labels_are_argmax_of_the_client_model():
    # alpha = beta = 0 and 1 feature: the model is W x + b with W, b ~ N(0, 1); the labels
    # must be a monotone step function of x (a 1-D argmax of lines), so sorting by x gives
    # each class in one contiguous run.
    ((x, y),) = synthetic_federated(1, 0.0, 0.0, seed=0, num_features=1, num_classes=3)
    runs = y[np.argsort(x[:, 0])]
    changes = np.flatnonzero(np.diff(runs) != 0)
    assert len(changes) + 1 == len(np.unique(runs))


def test_synthetic_deterministic_per_seed():
    a = synthetic_federated(4, 1.0, 1.0, seed=7)
    b = synthetic_federated(4, 1.0, 1.0, seed=7)
    c = synthetic_federated(4, 1.0, 1.0, seed=8)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert any(
        xa.shape != xc.shape or not np.array_equal(xa, xc)
        for (xa, _), (xc, _) in zip(a, c, strict=True)
    )


def test_synthetic_input_covariance_is_j_to_minus_1_2():
    ((x, _),) = synthetic_federated(1, 0.0, 0.0, seed=1, num_features=3, min_samples=600)
    assert x.shape[0] == 600
    np.testing.assert_allclose(x.var(axis=0), [1.0, 2**-1.2, 3**-1.2], rtol=0.2)


def test_synthetic_client_classes_restrict_labels_only_there():
    free = synthetic_federated(6, 1.0, 1.0, seed=0)
    restricted = synthetic_federated(6, 1.0, 1.0, seed=0, client_classes={2: [1, 3]})
    assert set(np.unique(restricted[2][1]).tolist()) <= {1, 3}
    np.testing.assert_array_equal(free[2][0], restricted[2][0])  # same inputs
    for k in (0, 1, 3, 4, 5):
        np.testing.assert_array_equal(free[k][1], restricted[k][1])


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_clients": 0}, "num_clients"),
        ({"alpha": -0.1}, "alpha"),
        ({"beta": -1.0}, "beta"),
        ({"num_features": 0}, "num_features"),
        ({"num_classes": 1}, "num_classes"),
        ({"max_samples": 10}, "max_samples"),
        ({"client_classes": {0: [10]}}, "client_classes"),
        ({"client_classes": {5: [1]}}, "client_classes"),
    ],
)
def test_synthetic_bad_arguments(kwargs, name):
    args = {"num_clients": 2, "alpha": 1.0, "beta": 1.0, **kwargs}
    with pytest.raises(ValueError, match=name):
        synthetic_federated(
            args.pop("num_clients"), args.pop("alpha"), args.pop("beta"), seed=0, **args
        )
