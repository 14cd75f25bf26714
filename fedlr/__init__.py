"""fedlr: federated training in which every client learns at its own, adaptive rate."""

__version__ = "0.1.0"
