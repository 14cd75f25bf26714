"""fedlr's built-in tabular model: a two-layer perceptron."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """Two-layer perceptron: ``Linear -> ReLU -> Linear``."""

    def __init__(self, num_features: int, num_classes: int, hidden: int) -> None:
        super().__init__()
        self.num_features, self.num_classes, self.hidden = num_features, num_classes, hidden
        self.net = nn.Sequential(
            nn.Linear(num_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(N, num_classes)``."""
        return self.net(x)
