import doctest
import time

import numpy as np
import pytest

import fedlr.data.federated as federated_module
from fedlr.config import resolve
from fedlr.data.federated import build_federation, client_roles, describe


@pytest.fixture(scope="module")
def default_federation():
    return build_federation(resolve())


def _arrays(client):
    return [client.x_train, client.y_train, client.y_train_clean, client.x_test, client.y_test]


def test_docstring_examples():
    assert doctest.testmod(federated_module).failed == 0


def test_roles_and_rates_by_partition_id_on_the_default_config(default_federation):
    # defaults: 10 clients, 8 noisy with rates linspace(0.6, 0.95, 8), 1 hard-clean, 1 clean
    clients = default_federation.clients
    assert [c.partition_id for c in clients] == list(range(10))
    assert [c.role for c in clients] == ["noisy"] * 8 + ["hard-clean", "clean"]
    assert [c.noise_rate for c in clients] == [0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.0, 0.0]
    assert all(c.feature_sigma == 0.0 for c in clients)
    assert default_federation.num_classes == 10 and default_federation.num_features == 64


def test_flip_fraction_matches_changed_labels(default_federation):
    for client in default_federation.clients:
        changed = np.mean(client.y_train != client.y_train_clean)
        assert client.flip_fraction == pytest.approx(changed)
        if client.role == "noisy":
            # symmetric: expected 0.9 * rate; 4 binomial stds at n_train >= 50
            expected = client.noise_rate * 0.9
            std = np.sqrt(expected * (1 - expected) / client.y_train.size)
            assert abs(client.flip_fraction - expected) < 4 * std + 1e-9
        else:
            assert client.flip_fraction == 0.0
            np.testing.assert_array_equal(client.y_train, client.y_train_clean)


def test_test_labels_stay_clean_and_digits_are_used_once(default_federation):
    from fedlr.data.datasets import load_digits_arrays

    x_all, y_all = load_digits_arrays()
    rows = {row.tobytes(): label for row, label in zip(x_all, y_all, strict=True)}
    seen = 0
    for client in default_federation.clients:
        for x, y in ((client.x_train, client.y_train_clean), (client.x_test, client.y_test)):
            assert [rows[row.tobytes()] for row in x] == y.tolist()
            seen += y.size
    assert seen == 1797


def test_test_fraction(default_federation):
    for client in default_federation.clients:
        n = client.y_train.size + client.y_test.size
        assert client.y_test.size == int(np.ceil(0.25 * n))


def test_hard_clean_client_holds_only_hard_classes_and_clean_labels(default_federation):
    hard = default_federation.clients[8]
    assert hard.role == "hard-clean"
    assert set(np.unique(hard.y_train).tolist()) == {1, 3, 8, 9}
    assert set(np.unique(hard.y_test).tolist()) <= {1, 3, 8, 9}
    np.testing.assert_array_equal(hard.y_train, hard.y_train_clean)
    assert hard.y_train.size + hard.y_test.size == 1797 // 10


def test_feature_noise_on_train_and_test_of_the_last_ids_only():
    overrides = {"feature-noise-clients": 2, "feature-noise-sigma": 0.5}
    plain = build_federation(resolve())
    noisy = build_federation(resolve(overrides=overrides))
    for before, after in zip(plain.clients, noisy.clients, strict=True):
        np.testing.assert_array_equal(before.y_train, after.y_train)
        if before.partition_id >= 8:
            assert after.feature_sigma == 0.5
            for x0, x1 in ((before.x_train, after.x_train), (before.x_test, after.x_test)):
                assert x1.dtype == np.float32
                assert np.std(x1 - x0) == pytest.approx(0.5, rel=0.1)
        else:
            assert after.feature_sigma == 0.0
            np.testing.assert_array_equal(before.x_train, after.x_train)
            np.testing.assert_array_equal(before.x_test, after.x_test)


def test_same_config_identical_arrays_other_seed_different(default_federation):
    again = build_federation(resolve())
    other = build_federation(resolve(overrides={"seed": 1}))
    for a, b in zip(default_federation.clients, again.clients, strict=True):
        for x, y in zip(_arrays(a), _arrays(b), strict=True):
            np.testing.assert_array_equal(x, y)
    assert any(
        a.y_train.shape != c.y_train.shape or not np.array_equal(a.y_train, c.y_train)
        for a, c in zip(default_federation.clients, other.clients, strict=True)
    )


def test_pair_flip_noise_on_noisy_clients():
    federation = build_federation(resolve(overrides={"label-noise": "pair-flip"}))
    for client in federation.clients:
        changed = client.y_train != client.y_train_clean
        np.testing.assert_array_equal(
            client.y_train[changed], (client.y_train_clean[changed] + 1) % 10
        )


@pytest.mark.parametrize("partitioner", ["iid", "dirichlet", "size-skew"])
def test_every_partitioner_builds(partitioner):
    federation = build_federation(resolve(overrides={"partitioner": partitioner}))
    assert all(c.y_train.size >= 5 and c.y_test.size >= 1 for c in federation.clients)


def test_synthetic_federation():
    cfg = resolve(overrides={"dataset": "synthetic", "num-clients": 6, "noisy-clients": 3})
    federation = build_federation(cfg)
    assert federation.num_features == 60 and federation.num_classes == 10
    assert [c.role for c in federation.clients] == ["noisy"] * 3 + ["hard-clean"] + ["clean"] * 2
    hard = federation.clients[3]
    assert set(np.unique(np.concatenate([hard.y_train, hard.y_test])).tolist()) <= {1, 3, 8, 9}
    for client in federation.clients:
        assert client.x_train.dtype == np.float32 and client.x_train.shape[1] == 60
        assert client.y_train.dtype == np.int64
        assert 0 <= client.y_train.min() and client.y_train.max() < 10


def test_client_roles_worked_example():
    cfg = resolve(
        overrides={
            "num-clients": 5,
            "noisy-clients": 3,
            "noise-rate-min": 0.1,
            "noise-rate-max": 0.5,
            "hard-clean-clients": 1,
            "feature-noise-clients": 3,
            "feature-noise-sigma": 0.2,
        }
    )
    assert client_roles(cfg) == [
        ("noisy", 0.1, 0.0),
        ("noisy", 0.3, 0.0),
        ("noisy", 0.5, 0.2),
        ("hard-clean", 0.0, 0.2),
        ("clean", 0.0, 0.2),
    ]


def test_noisy_client_ids_choose_the_noisy_clients_in_rate_order():
    cfg = resolve(
        overrides={
            "num-clients": 5,
            "noisy-clients": 2,
            "noisy-client-ids": "3,1",
            "noise-rate-min": 0.3,
            "noise-rate-max": 0.4,
            "hard-clean-clients": 1,
        }
    )
    # 3 gets the first rate, 1 the second; hard-clean is the first id left, 0
    assert client_roles(cfg) == [
        ("hard-clean", 0.0, 0.0),
        ("noisy", 0.4, 0.0),
        ("clean", 0.0, 0.0),
        ("noisy", 0.3, 0.0),
        ("clean", 0.0, 0.0),
    ]
    fed = build_federation(cfg)
    flipped = [float(np.mean(c.y_train != c.y_train_clean)) for c in fed.clients]
    assert flipped[1] > 0 and flipped[3] > 0
    assert flipped[0] == flipped[2] == flipped[4] == 0


@pytest.mark.parametrize("ids", ["1", "1,1", "0,5", "a,b"])
def test_noisy_client_ids_must_name_noisy_clients_distinct_ids(ids):
    from fedlr.config import ConfigError

    with pytest.raises(ConfigError, match="noisy-client-ids"):
        resolve(overrides={"num-clients": 5, "noisy-clients": 2, "noisy-client-ids": ids})


def test_describe(default_federation):
    rows = describe(default_federation)
    assert len(rows) == 10
    assert set(rows[0]) == {
        "partition_id",
        "role",
        "noise_rate",
        "flip_fraction",
        "feature_sigma",
        "n_train",
        "n_test",
        "classes",
    }
    assert rows[8]["classes"] == [1, 3, 8, 9]
    assert sum(r["n_train"] + r["n_test"] for r in rows) == 1797


def test_too_many_hard_clean_clients_raise():
    # classes 1, 3, 8, 9 hold 182 + 183 + 174 + 180 = 719 digits: 9 clients of 1797 // 10 = 179
    # do not fit, so each gets 719 // 9 = 79
    cfg = resolve(overrides={"noisy-clients": 0, "hard-clean-clients": 9})
    federation = build_federation(cfg)
    assert all(c.y_train.size + c.y_test.size == 79 for c in federation.clients[:9])
    # class 0 holds 178 digits: 169 clients cannot each get 2 (170 clients pass the size check)
    with pytest.raises(ValueError, match="hard-clean-clients"):
        build_federation(
            resolve(
                overrides={
                    "num-clients": 170,
                    "noisy-clients": 0,
                    "hard-clean-clients": 169,
                    "hard-classes": "0",
                }
            )
        )


def test_digits_build_is_fast(default_federation):
    start = time.perf_counter()
    build_federation(resolve())
    assert time.perf_counter() - start < 1.0


def test_too_many_clients_for_digits_raise():
    # 1797 digits, 10 or more per client: at most 179 clients
    with pytest.raises(ValueError, match="num-clients: digits has 1797 samples"):
        build_federation(resolve(overrides={"num-clients": 180, "noisy-clients": 0}))
