"""A user's own task: a small CNN on scikit-learn's 8x8 handwritten digits, seen as images.

fedlr's built-in digits task flattens each image into 64 features for an MLP. Here a user brings
their own task instead: :class:`DigitsCNN` loads each client's images as ``(N, 1, 8, 8)``
tensors and builds a two-layer convolutional network; fedlr brings the rest (the federation,
per-client rates, noise estimators, metrics, report) through :class:`fedlr.tasks.base.ArrayTask`.

Run it from this folder (the config names the factory as ``task = "task:make"``)::

    fedlr simulate scenario.toml
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from torch import nn

from fedlr.data.partition import partition_indices
from fedlr.tasks.base import ArrayTask, ClientContext


class SmallCNN(nn.Module):
    """Conv(1->8) -> ReLU -> MaxPool -> Conv(8->16) -> ReLU -> global average -> Linear(16->10)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(16, num_classes)

    def forward(self, x):
        """Logits of shape ``(N, num_classes)`` for images ``(N, 1, 8, 8)``."""
        return self.head(self.features(x))


class DigitsCNN(ArrayTask):
    """Each client holds a Dirichlet share of the digits, as images; 25% of it to test."""

    num_classes = 10

    def load(self, ctx: ClientContext):
        """The client's images and labels: its share of the 1,797 digits, split 75/25."""
        digits = load_digits()
        images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]  # (N, 1, 8, 8)
        labels = digits.target.astype(np.int64)
        parts = partition_indices(
            labels,
            int(self.cfg["num-clients"]),
            "dirichlet",
            alpha=float(self.cfg["dirichlet-alpha"]),
            seed=int(self.cfg["seed"]),
        )
        mine = np.random.default_rng([int(self.cfg["seed"]), ctx.partition_id]).permutation(
            parts[ctx.partition_id]
        )
        cut = int(0.75 * len(mine))
        train, test = mine[:cut], mine[cut:]
        return images[train], labels[train], images[test], labels[test]

    def make_model(self) -> nn.Module:
        """The CNN; fedlr seeds it, so every strategy starts from the same weights."""
        return SmallCNN(self.num_classes)


def make(cfg):
    """The factory the config names (``task = "task:make"``)."""
    return DigitsCNN(cfg)
