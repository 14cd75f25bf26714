"""What a client's reply may contain, and how much one client may weigh: pure checks.

A federation runs other people's code. A reply is checked against the contract before anything
from it reaches the aggregate (Flower itself checks neither shapes nor dtypes, and raises, ending
the run, on records it did not expect):

* :func:`array_problem` — the returned arrays have the keys, shapes and kinds of dtype (float,
  int) of the arrays that were sent, real numbers only, all finite;
* :func:`example_cap` — a reported example count is an aggregation weight: it is capped (by
  default at 10x the median the clients reported when they were first asked), so one client
  cannot claim the aggregate;
* :func:`bounded_losses` — q-FedAvg scales each update by the client's loss: losses are capped
  at 10x the round's median, so one reported loss cannot dominate;
* :func:`clip_norms` — update-norm clipping relative to the round's median norm.

Robust aggregation itself (median, trimmed mean, Krum) is Flower's: see
:meth:`fedlr.fl.strategy.PerClientRates.aggregate_train`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

# A reported loss above this multiple of the round's median is cut down to it (q-FedAvg).
LOSS_CAP_RATIO = 10.0
# Without `max-examples`, a client counts for at most this multiple of the median client.
EXAMPLES_CAP_RATIO = 10


def array_problem(
    sent: Mapping[str, np.ndarray] | None, returned: Mapping[str, np.ndarray]
) -> str | None:
    """Why ``returned`` cannot be aggregated with models like ``sent``; None when it can.

    ``sent`` None checks only that every array is real and finite.

    Examples
    --------
    >>> sent = {"w": np.zeros((2, 2), np.float32)}
    >>> array_problem(sent, {"w": np.ones((2, 2), np.float32)}) is None
    True
    >>> array_problem(sent, {"w": np.ones(1, np.float32)})
    "array 'w': expected shape (2, 2), got (1,)"
    >>> array_problem(sent, {"w": np.ones((2, 2)), "x": np.ones(1)})
    "unexpected arrays: 'x'"
    """
    if sent is not None:
        missing = [key for key in sent if key not in returned]
        extra = [key for key in returned if key not in sent]
        if missing:
            return "missing arrays: " + ", ".join(repr(k) for k in missing)
        if extra:
            return "unexpected arrays: " + ", ".join(repr(k) for k in extra[:5])
    for key, value in returned.items():
        array = np.asarray(value)
        if sent is not None:
            want = np.asarray(sent[key])
            if array.shape != want.shape:
                return f"array {key!r}: expected shape {want.shape}, got {array.shape}"
            # the same kind: Flower's QFedAvg sends float64 where clients train in float32
            if array.dtype.kind != want.dtype.kind:
                return f"array {key!r}: expected dtype {want.dtype}, got {array.dtype}"
        if array.dtype.kind not in "fiu":
            return f"array {key!r}: expected real numbers, got dtype {array.dtype}"
        if not np.all(np.isfinite(array)):
            return "non-finite weights"
    return None


def example_cap(counts: Sequence[int], max_examples: int = 0) -> int:
    """The most examples one client may count for: ``max_examples``, or 10x the median count.

    Examples
    --------
    >>> example_cap([100, 120, 135, 10**12])
    1275
    >>> example_cap([100, 120], max_examples=500)
    500
    """
    if max_examples > 0:
        return int(max_examples)
    if len(counts) == 0:
        return 0
    return max(1, int(EXAMPLES_CAP_RATIO * float(np.median(np.asarray(counts, dtype=float)))))


def bounded_losses(losses: Mapping[int, float]) -> tuple[dict[int, float], list[int]]:
    """Cap each loss at ``LOSS_CAP_RATIO`` x the median; return the losses and who was capped.

    Examples
    --------
    >>> bounded_losses({0: 1.0, 1: 1.2, 2: 1e40})
    ({0: 1.0, 1: 1.2, 2: 12.0}, [2])
    """
    if not losses:
        return {}, []
    cap = LOSS_CAP_RATIO * float(np.median(list(losses.values())))
    capped = [pid for pid, loss in losses.items() if loss > cap]
    return {pid: min(loss, cap) for pid, loss in losses.items()}, capped


def clip_norms(norms: Mapping[int, float], ratio: float) -> dict[int, float]:
    """Scale factors (<= 1) that clip each update norm to ``ratio`` x the median norm.

    Only the clipped clients appear in the result; ``ratio`` 0 clips nothing.

    Examples
    --------
    >>> clip_norms({0: 1.0, 1: 2.0, 2: 40.0}, ratio=2.0)
    {2: 0.1}
    """
    if ratio <= 0 or not norms:
        return {}
    cap = ratio * float(np.median(list(norms.values())))
    return {pid: cap / norm for pid, norm in norms.items() if norm > cap and norm > 0}
