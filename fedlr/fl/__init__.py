"""Flower glue: strategies, ServerApp, ClientApp, message keys.

fedlr's strategies are plain Flower strategies (docs/library.md)::

    from fedlr.fl import NoiseAdaptiveFedAvg
    strategy = NoiseAdaptiveFedAvg(lr=0.1, fraction_evaluate=0.0)

They are imported on first use, so ``import fedlr.fl.keys`` stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "NoiseAdaptiveFedAdam",
    "NoiseAdaptiveFedAvg",
    "NoiseAdaptiveFedAvgM",
    "NoiseAdaptiveFedProx",
    "NoiseAdaptiveFedYogi",
    "NoiseAdaptiveQFedAvg",
    "PerClientRates",
    "per_client",
]


def __getattr__(name: str) -> Any:
    """The strategies of :mod:`fedlr.fl.strategy`, imported when first named (PEP 562)."""
    if name in __all__:
        from fedlr.fl import strategy

        return getattr(strategy, name)
    raise AttributeError(f"module 'fedlr.fl' has no attribute {name!r}")
