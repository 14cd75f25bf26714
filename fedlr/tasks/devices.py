"""The device a client trains on, and the device a model is on."""

from __future__ import annotations

import torch
from torch import nn


def pick_device(name: str = "auto") -> torch.device:
    """The device a client trains on: the run config's ``device`` key, resolved on this machine.

    ``auto`` is ``cuda`` when a GPU is visible (``torch.cuda.is_available()``), else ``cpu``;
    fedlr never assumes a GPU. ``cuda`` means the first visible GPU (Flower's simulation engine
    makes a client's share of GPUs visible through ``CUDA_VISIBLE_DEVICES``).

    Raises
    ------
    ValueError
        For ``cuda`` on a machine without a visible GPU, or an unknown name.
    """
    if name == "cpu":
        return torch.device("cpu")
    if name in ("auto", "cuda"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if name == "auto":
            return torch.device("cpu")
        raise ValueError(
            "device: expected auto or cpu on a machine without a visible GPU, got 'cuda'"
        )
    raise ValueError(f"device: expected auto, cpu or cuda, got {name!r}")


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s parameters (CPU for a model without parameters)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))
