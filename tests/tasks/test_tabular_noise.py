"""Tests for fedlr/tasks/tabular_noise.py: per-sample gradients and the noise estimators.

The federation and helpers are test_tabular.py's (digits, 4 clients, MLPs of 16 hidden units):
partition ids 0 and 1 are noisy (rates 0.6 and 0.95), 2 is hard-clean, 3 is clean.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from fedlr.tasks import tabular, tabular_loops, tabular_noise
from tests.tasks.test_tabular import (  # noqa: F401 (one_thread: a fixture)
    CFG,
    CLEAN,
    NOISY,
    distance,
    first,
    full_batch_grad,
    one_thread,
    same_weights,
    weights,
)


# -- per-sample gradients and noise estimates --------------------------------------------------


def test_per_sample_gradients_match_a_loop_of_autograd():
    data = tabular.client_data(CFG, NOISY)
    x, y = data.x_train[:5], data.y_train[:5]
    model = tabular.build_model(CFG)
    grads = tabular_noise.per_sample_gradients(model, x, y, max_samples=256, seed=0)

    params = list(model.parameters())
    assert grads.shape == (5, sum(p.numel() for p in params))
    for i in range(5):
        logits = model(torch.from_numpy(x[i : i + 1]))
        loss = nn.functional.cross_entropy(logits, torch.from_numpy(y[i : i + 1]))
        expected = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])
        np.testing.assert_allclose(grads[i], expected.numpy(), rtol=1e-5, atol=1e-6)


def test_per_sample_gradients_subsample_at_most_max_samples_seeded():
    data = tabular.client_data(CFG, NOISY)
    model = tabular.build_model(CFG)
    a = tabular_noise.per_sample_gradients(model, data.x_train, data.y_train, max_samples=7, seed=1)
    b = tabular_noise.per_sample_gradients(model, data.x_train, data.y_train, max_samples=7, seed=1)
    assert a.shape[0] == 7
    np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def clean_trained_model() -> nn.Module:
    """A fresh model trained briefly on the clean labels of every client."""
    clients = tabular.federation(CFG).clients
    pooled = dataclasses.replace(
        clients[0],
        x_train=np.concatenate([c.x_train for c in clients]),
        y_train=np.concatenate([c.y_train_clean for c in clients]),
    )
    model = tabular.build_model(CFG)
    tabular_loops.train_local(model, pooled, lr=0.1, epochs=5, batch_size=32, seed=0)
    return model


def test_oracle_estimate_is_the_flip_fraction():
    data = tabular.client_data(CFG, NOISY)
    model = tabular.build_model(CFG)
    assert tabular_noise.estimate_noise(model, data, "oracle") == data.flip_fraction > 0.5
    assert tabular_noise.estimate_noise(model, tabular.client_data(CFG, CLEAN), "oracle") == 0.0


def test_loss_margin_ranks_a_noisy_client_above_a_clean_one(clean_trained_model):
    noisy = tabular_noise.estimate_noise(
        clean_trained_model, tabular.client_data(CFG, NOISY), "loss-margin"
    )
    clean = tabular_noise.estimate_noise(
        clean_trained_model, tabular.client_data(CFG, CLEAN), "loss-margin"
    )
    assert 0.0 <= clean < noisy


def test_loss_margin_is_zero_when_the_model_agrees_with_every_label(clean_trained_model):
    data = tabular.client_data(CFG, NOISY)
    predicted = tabular_loops.log_probs(clean_trained_model, data.x_train).argmax(axis=1)
    agreed = dataclasses.replace(data, y_train=predicted)
    assert tabular_noise.estimate_noise(clean_trained_model, agreed, "loss-margin") == 0.0


def test_loss_estimate_is_a_fraction(clean_trained_model):
    estimate = tabular_noise.estimate_noise(
        clean_trained_model, tabular.client_data(CFG, NOISY), "loss", seed=0
    )
    assert 0.0 <= estimate <= 1.0


def test_gradient_estimate_is_finite_positive_and_seeded():
    data = tabular.client_data(CFG, NOISY)  # 447 train samples: a 256 subsample
    model = tabular.build_model(CFG)
    estimate = tabular_noise.estimate_noise(model, data, "gradient", seed=3)
    assert np.isfinite(estimate) and estimate > 0
    assert tabular_noise.estimate_noise(model, data, "gradient", seed=3) == estimate


def test_unknown_estimator_raises():
    with pytest.raises(ValueError, match="estimator: expected .*, got 'magic'"):
        tabular_noise.estimate_noise(tabular.build_model(CFG), tabular.client_data(CFG, 0), "magic")


def test_crossfit_ranks_noisy_above_clean_and_leaves_the_model_unchanged():
    noisy, clean = tabular.client_data(CFG, NOISY), tabular.client_data(CFG, CLEAN)
    model = tabular.build_model(CFG)
    tabular_loops.train_local(model, clean, lr=0.1, epochs=10, batch_size=16, seed=0)
    before = weights(model)
    kwargs = {"seed": 3, "lr": 0.1, "batch_size": 16, "epochs": 2}
    on_noisy = tabular_noise.estimate_noise(model, noisy, "crossfit", **kwargs)
    on_clean = tabular_noise.estimate_noise(model, clean, "crossfit", **kwargs)
    assert on_noisy > 2 * on_clean
    assert same_weights(weights(model), before)
    assert tabular_noise.estimate_noise(model, noisy, "crossfit", **kwargs) == on_noisy  # seeded
