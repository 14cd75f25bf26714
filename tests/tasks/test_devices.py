"""Tests for fedlr/tasks/devices.py: the device a client trains on, and a model's device."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedlr.tasks import devices, tabular
from tests.tasks.test_tabular import CFG


def test_auto_is_cuda_exactly_when_a_gpu_is_visible():
    expected = "cuda" if torch.cuda.is_available() else "cpu"  # cpu on a machine without one
    assert devices.pick_device("auto") == torch.device(expected)
    assert devices.pick_device("cpu") == torch.device("cpu")


def test_pick_device_with_a_visible_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.pick_device("auto") == torch.device("cuda")
    assert devices.pick_device("cuda") == torch.device("cuda")
    assert devices.pick_device("cpu") == torch.device("cpu")


def test_cuda_without_a_visible_gpu_names_the_key(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.pick_device("auto") == torch.device("cpu")
    with pytest.raises(
        ValueError, match=r"^device: expected auto or cpu on a machine without a visible GPU, "
    ):
        devices.pick_device("cuda")


def test_unknown_device_names_the_key():
    with pytest.raises(ValueError, match="device: expected auto, cpu or cuda, got 'tpu'"):
        devices.pick_device("tpu")


def test_model_device_is_where_the_parameters_are():
    assert devices.model_device(tabular.build_model(CFG)) == torch.device("cpu")
    assert devices.model_device(nn.ReLU()) == torch.device("cpu")
