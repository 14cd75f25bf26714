"""fedlr.client.estimate_noise: what a user's ClientApp calls, on arrays, tensors and loaders."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedlr.client import estimate_noise
from fedlr.rates.noise import mean_margin_noise

ROOT = Path(__file__).resolve().parents[1]


def data(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3)).astype(np.float32), rng.integers(0, 2, n)


def test_arrays_tensors_and_a_dataloader_give_the_same_estimate():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    x, y = data()
    on_arrays = estimate_noise(model, x, y)
    on_tensors = estimate_noise(model, torch.from_numpy(x), torch.from_numpy(y))
    loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=7)
    assert on_tensors == on_arrays
    assert estimate_noise(model, loader) == pytest.approx(on_arrays, rel=1e-6)
    with torch.no_grad():
        expected = mean_margin_noise(torch.log_softmax(model(torch.from_numpy(x)), 1).numpy(), y)
    assert on_arrays == pytest.approx(expected, rel=1e-6)


def test_flipped_labels_raise_the_estimate_and_the_model_keeps_its_mode():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    x, _ = data(400)
    y = (x[:, 0] > 0).astype(int)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[-3.0, 0.0, 0.0], [3.0, 0.0, 0.0]]))
        model.bias.zero_()
    flipped = y.copy()
    flipped[::3] = 1 - flipped[::3]
    model.train()
    clean, noisy = estimate_noise(model, x, y), estimate_noise(model, x, flipped)
    assert model.training
    assert clean < 0.1 < noisy
    assert 0.2 < estimate_noise(model, x, flipped, estimator="loss") < 0.5  # a third flipped


def test_bad_input_is_refused_with_what_is_allowed():
    model = nn.Linear(3, 2)
    x, y = data()
    with pytest.raises(ValueError, match=re.escape("labels must lie in [0, 2), got 0..2")):
        estimate_noise(model, x, np.where(y == 1, 2, 0))
    with pytest.raises(ValueError, match="differ in length"):
        estimate_noise(model, x, y[:-1])
    with pytest.raises(ValueError, match="estimator: expected loss-margin or loss"):
        estimate_noise(model, x, y, estimator="oracle")
    assert math.isnan(estimate_noise(model, x[:0], y[:0]))


def test_column_labels_are_read_as_a_vector_and_fractions_are_refused():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    x, y = data()
    assert estimate_noise(model, x, y.reshape(-1, 1)) == estimate_noise(model, x, y)
    with pytest.raises(ValueError, match="whole numbers"):
        estimate_noise(model, x, y + 0.5)
    with pytest.raises(ValueError, match=re.escape("shape (N,), got shape (60, 2)")):
        estimate_noise(model, x, np.stack([y, y], axis=1))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_inputs_are_cast_to_the_models_dtype_and_labels_stay_integer(dtype):
    torch.manual_seed(0)
    reference = nn.Linear(3, 2)
    model = nn.Linear(3, 2).to(dtype)
    model.load_state_dict(reference.state_dict())
    x, y = data()  # float32 features, int64 labels
    with torch.no_grad():
        logits = model(torch.from_numpy(x).to(dtype))
    expected = mean_margin_noise(torch.log_softmax(logits, 1).double().numpy(), y)
    loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=7)
    assert estimate_noise(model, x, y) == pytest.approx(expected, rel=1e-12)
    assert estimate_noise(model, torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(
        expected, rel=1e-12
    )
    assert estimate_noise(model, loader) == pytest.approx(expected, rel=1e-6)
    # the same model in float32, within the precision of the model's own dtype
    assert estimate_noise(model, x, y) == pytest.approx(estimate_noise(reference, x, y), rel=0.05)
