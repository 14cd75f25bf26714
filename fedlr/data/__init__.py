"""Data with no download: digits and LEAF Synthetic, flwr-datasets partitioners, noise injection.

The entry point is :func:`fedlr.data.federated.build_federation`, which turns a resolved config
into per-client train/test arrays with known roles and noise rates.
"""

from fedlr.data.federated import ClientData, Federation, build_federation, describe

__all__ = ["ClientData", "Federation", "build_federation", "describe"]
