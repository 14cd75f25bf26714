"""Tests for fedlr/tasks/tabular.py: the federation cache, the model, and the fixtures of its tests.

One small federation is used throughout (digits, 4 clients): partition ids 0 and 1 are noisy
(rates 0.6 and 0.95), 2 is hard-clean, 3 is clean. Models are MLPs with 16 hidden units.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from fedlr.config import resolve
from fedlr.data.federated import build_federation
from fedlr.tasks import devices, tabular, tabular_loops, tabular_noise

CFG = resolve(overrides={"num-clients": 4, "noisy-clients": 2, "hidden": 16})
NOISY, CLEAN = 1, 3  # partition ids: flip rate 0.95, clean


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: torch's intra-op threads only contend (as the ClientApp also sets)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return float(torch.sqrt(sum(((a[k] - b[k]) ** 2).sum() for k in a)))


def first(data, n: int):
    """The client's first ``n`` train samples, as a ClientData."""
    return dataclasses.replace(data, x_train=data.x_train[:n], y_train=data.y_train[:n])


def full_batch_grad(model: nn.Module, data) -> list[torch.Tensor]:
    """Gradient of the mean cross-entropy over the whole train split, by autograd."""
    x = torch.from_numpy(np.asarray(data.x_train, np.float32))
    y = torch.from_numpy(np.asarray(data.y_train, np.int64))
    loss = nn.functional.cross_entropy(model(x), y)
    return list(torch.autograd.grad(loss, list(model.parameters())))


# -- federation --------------------------------------------------------------------------------


def test_federation_is_built_once_per_data_config():
    fed = tabular.federation(CFG)
    assert tabular.federation(dict(CFG)) is fed
    assert tabular.federation(resolve(overrides={"num-clients": 4, "noisy-clients": 2})) is fed
    assert tabular.federation({**CFG, "lr": 0.5, "strategies": "fedavg", "hidden": 8}) is fed
    assert tabular.federation({**CFG, "seed": 1}) is not fed


def test_build_federation_reads_only_data_keys():
    # What the cache key leaves out must not change the data.
    read: set[str] = set()

    class Recording(dict):
        def __getitem__(self, key):
            read.add(key)
            return super().__getitem__(key)

        def get(self, key, default=None):
            read.add(key)
            return super().get(key, default)

    build_federation(Recording(CFG))
    assert read <= set(tabular.DATA_KEYS)


@pytest.mark.parametrize("partition_id", [-1, 4])
def test_client_data_rejects_a_partition_id_out_of_range(partition_id):
    with pytest.raises(ValueError, match=r"partition-id: expected 0\.\.3"):
        tabular.client_data(CFG, partition_id)


def test_client_data_is_the_federation_client():
    assert tabular.client_data(CFG, 2) is tabular.federation(CFG).clients[2]


# -- model -------------------------------------------------------------------------------------


def test_build_model_is_a_function_of_the_seed():
    a, b = weights(tabular.build_model(CFG, seed=3)), weights(tabular.build_model(CFG, seed=3))
    assert same_weights(a, b)
    assert not same_weights(a, weights(tabular.build_model(CFG, seed=4)))
    # default seed: the run's
    assert same_weights(weights(tabular.build_model(CFG)), weights(tabular.build_model(CFG, 0)))
    fed = tabular.federation(CFG)
    assert a["net.0.weight"].shape == (16, fed.num_features)
    assert a["net.2.weight"].shape == (fed.num_classes, 16)


def test_the_split_out_names_are_re_exported():
    # Callers use tabular.<name> for the loops, the estimators and the devices.
    for module in (devices, tabular_loops, tabular_noise):
        public = [
            name
            for name, value in vars(module).items()
            if not name.startswith("_")
            and (name.isupper() or getattr(value, "__module__", None) == module.__name__)
        ]
        assert public
        for name in public:
            assert name in tabular.__all__, name
            assert getattr(tabular, name) is getattr(module, name), name


# -- the crossfit estimator and small-loss selection --------------------------------------------


def trained_on_clean_labels(data) -> nn.Module:
    """A model that knows the client's true labels (what a good global model would be)."""
    model = tabular.build_model(CFG)
    clean = dataclasses.replace(data, y_train=data.y_train_clean)
    tabular.train_local(model, clean, lr=0.1, epochs=30, batch_size=16, seed=0)
    return model


def test_clean_part_drops_mostly_flipped_labels_and_only_when_asked():
    from fedlr.tasks.base import RoundPlan, clean_part

    data = tabular.client_data(CFG, NOISY)
    model = trained_on_clean_labels(data)
    plan = RoundPlan(server_round=3, lr=0.1, epochs=1, batch_size=16, select_clean=True)
    kept = clean_part(model, data, plan)
    assert 0 < kept.num_train < data.num_train
    flipped = float(np.mean(data.y_train != data.y_train_clean))
    assert float(np.mean(kept.y_train != kept.y_train_clean)) < 0.5 * flipped
    assert clean_part(model, data, dataclasses.replace(plan, select_clean=False)) is data
