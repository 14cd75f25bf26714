"""``client-batch-sizes``: its format, checked once, and each client's batch size it gives."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fedlr.config.choices import BATCH_SPREADS
from fedlr.config.values import split_list


def is_batch_spec(value: str) -> bool:
    """Whether ``value`` is ``""``, ``B1,B2,...`` (>= 1) or ``SPREAD:MIN:MAX``."""
    if not value.strip():
        return True
    kind, _, rest = value.partition(":")
    try:
        if kind.strip() in BATCH_SPREADS:
            low, high = (int(v) for v in rest.split(":"))
            if kind.strip() == "powers-of-two":  # at least one power of two in [low, high]
                return 1 <= low <= high and 2 ** (high.bit_length() - 1) >= low
            return 1 <= low <= high
        return all(int(item) >= 1 for item in split_list(value)) and bool(split_list(value))
    except ValueError:
        return False


def client_batch_sizes(cfg: Mapping[str, Any]) -> list[int]:
    """Each client's local batch size, by partition id, from ``client-batch-sizes``.

    ``""``: every client uses ``batch-size``. ``B1,B2,...``: one per client.
    ``log-uniform:MIN:MAX``: each client draws ``round(exp(U(log MIN, log MAX)))``.
    ``powers-of-two:MIN:MAX``: the powers of two in ``[MIN, MAX]`` dealt round-robin over the
    clients in a seeded random order, so every size occurs. Draws are seeded by ``seed``.

    >>> client_batch_sizes({"client-batch-sizes": "powers-of-two:8:32", "num-clients": 4,
    ...                     "batch-size": 16, "seed": 0})
    [16, 32, 8, 8]
    """
    spec, n = str(cfg["client-batch-sizes"]).strip(), int(cfg["num-clients"])
    if not spec:
        return [int(cfg["batch-size"])] * n
    kind, _, rest = spec.partition(":")
    rng = np.random.default_rng([int(cfg["seed"]), 0xBA7C])
    if kind.strip() == "log-uniform":
        low, high = (int(v) for v in rest.split(":"))
        draws = np.exp(rng.uniform(np.log(low), np.log(high), size=n))
        return [int(min(high, max(low, round(float(d))))) for d in draws]
    if kind.strip() == "powers-of-two":
        low, high = (int(v) for v in rest.split(":"))
        powers = [2**e for e in range(0, 31) if low <= 2**e <= high]
        order = rng.permutation(n)
        sizes = [0] * n
        for i, pid in enumerate(order):
            sizes[int(pid)] = powers[i % len(powers)]
        return sizes
    return [int(item) for item in split_list(spec)]
