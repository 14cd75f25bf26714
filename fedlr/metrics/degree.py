r"""Degree metrics for node classification: accuracy per degree bucket, and log-log slopes.

GNNs serve low-degree nodes worse (RawlsGCN, Kang et al., WWW 2022): these metrics measure that
gap, treating each degree bucket as one unit the way :mod:`fedlr.metrics.fairness` treats each
client, and measure how a per-node quantity (e.g. a gradient norm) grows with degree.

Buckets
-------
Nodes are bucketed by *degree value*, not by rank: with :math:`e_1 \le \dots \le e_{B-1}` the
``np.quantile`` values of the degrees at :math:`1/B, \dots, (B-1)/B` (linear interpolation),
node :math:`v` falls in bucket

.. math:: b_v = \#\{q : e_q < d_v\} \in \{0, \dots, B - 1\},

i.e. bucket :math:`b` holds :math:`e_b < d \le e_{b+1}` (:math:`e_0 = -\infty`,
:math:`e_B = +\infty`). So a node's bucket depends only on its degree: equal degrees always
share a bucket, and a degree that equals an edge goes to the *lower* bucket. When many nodes share
the lowest degree (Cora: most nodes have degree 1 to 3), bucket 0 grows beyond a quarter of the
nodes, and when more than :math:`q/B` of them share it, edges coincide and the buckets between
them are *empty*: their accuracy is ``nan`` and they are left out of the fairness summary. The
alternative, splitting by rank with ties broken by node index, keeps the buckets equal in size
but puts nodes of the same degree in different buckets by their (arbitrary) index.

All functions are pure: numpy only, no I/O, no randomness.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedlr.metrics.fairness import jain_index

__all__ = [
    "degree_bucket_fairness",
    "degree_buckets",
    "degree_quartile_accuracy",
    "loglog_slope",
]

FloatArray = NDArray[np.float64]


def _as_degrees(degree: ArrayLike) -> FloatArray:
    """Validate degrees: 1-D, non-empty, finite, ``>= 0``; float64."""
    array = np.asarray(degree, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"degree: expected a 1-D array (one per node), got shape {array.shape}")
    if array.size == 0:
        raise ValueError("degree: expected at least one node, got an empty array")
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ValueError("degree: expected finite degrees >= 0")
    return array


def _as_correct(correct: ArrayLike, size: int) -> FloatArray:
    """Validate per-node correctness: shape ``(size,)``, values in [0, 1] (bool or 0/1)."""
    array = np.asarray(correct, dtype=np.float64)
    if array.shape != (size,):
        raise ValueError(
            f"correct: expected shape ({size},), one per node of degree, got {array.shape}"
        )
    if not np.all(np.isfinite(array)) or np.any(array < 0) or np.any(array > 1):
        raise ValueError("correct: expected booleans or values in [0, 1]")
    return array


def _check_num_buckets(num_buckets: int) -> int:
    if isinstance(num_buckets, bool) or not isinstance(num_buckets, int | np.integer):
        raise ValueError(f"num_buckets: expected an integer >= 1, got {num_buckets!r}")
    if num_buckets < 1:
        raise ValueError(f"num_buckets: expected an integer >= 1, got {num_buckets!r}")
    return int(num_buckets)


def degree_buckets(degree: ArrayLike, num_buckets: int = 4) -> tuple[np.ndarray, FloatArray]:
    r"""Bucket of each node by degree quantiles, and the edges used.

    :math:`b_v = \#\{q : e_q < d_v\}` with :math:`e_q` = ``np.quantile(degree, q / B)``,
    :math:`q = 1, \dots, B - 1` (see the module docstring for ties).

    Parameters
    ----------
    degree : array_like, shape (N,)
        Node degrees, finite and ``>= 0``, ``N >= 1``.
    num_buckets : int, default 4
        :math:`B`, the number of buckets (4: quartiles).

    Returns
    -------
    buckets : ndarray of int64, shape (N,)
        Bucket index of each node, in ``[0, B)``.
    edges : ndarray of float64, shape (B - 1,)
        The inner edges :math:`e_1, \dots, e_{B-1}`.

    Examples
    --------
    >>> buckets, edges = degree_buckets([1, 2, 3, 4, 5, 6, 7, 8])
    >>> buckets.tolist(), edges.tolist()
    ([0, 0, 1, 1, 2, 2, 3, 3], [2.75, 4.5, 6.25])

    Five of eight nodes have degree 1, so edges 1 and 2 are both 1 and bucket 1 is empty:

    >>> buckets, edges = degree_buckets([1, 1, 1, 1, 1, 2, 3, 9])
    >>> buckets.tolist(), edges.tolist()
    ([0, 0, 0, 0, 0, 2, 3, 3], [1.0, 1.0, 2.25])
    """
    array = _as_degrees(degree)
    count = _check_num_buckets(num_buckets)
    edges = np.quantile(array, np.arange(1, count) / count)
    # side="left": searchsorted counts the edges strictly below d, so d == edge goes lower.
    buckets = np.searchsorted(edges, array, side="left").astype(np.int64)
    return buckets, np.asarray(edges, dtype=np.float64)


def degree_quartile_accuracy(
    correct: ArrayLike, degree: ArrayLike, num_buckets: int = 4
) -> list[float]:
    r"""Accuracy of each degree bucket (quartiles by default), lowest degrees first.

    .. math:: \mathrm{acc}_b = \frac{1}{|V_b|} \sum_{v \in V_b} c_v,
              \qquad V_b = \{v : b_v = b\},

    with :math:`b_v` from :func:`degree_buckets` (equal degrees share a bucket; a degree equal to
    a quantile goes to the lower bucket). An empty bucket has accuracy ``nan``.

    Parameters
    ----------
    correct : array_like, shape (N,)
        Whether each node is classified correctly (bool, or 0/1 values).
    degree : array_like, shape (N,)
        Degrees of the same nodes, finite and ``>= 0``.
    num_buckets : int, default 4
        Number of buckets.

    Returns
    -------
    list of float
        ``num_buckets`` accuracies in [0, 1], or ``nan`` for an empty bucket.

    Raises
    ------
    ValueError
        If ``degree`` is empty, not 1-D, non-finite or negative; if ``correct`` does not match it
        or is outside [0, 1]; if ``num_buckets < 1``.

    Examples
    --------
    >>> degree_quartile_accuracy([0, 1, 1, 1, 0, 0, 1, 1], [1, 2, 3, 4, 5, 6, 7, 8])
    [0.5, 1.0, 0.0, 1.0]
    >>> degree_quartile_accuracy([0, 1, 1, 1, 0, 0, 1, 1], [1, 1, 1, 1, 1, 2, 3, 9])
    [0.6, nan, 0.0, 1.0]
    """
    accuracies, _ = _bucket_accuracies(correct, degree, num_buckets)
    return [float(value) for value in accuracies]


def _bucket_accuracies(
    correct: ArrayLike, degree: ArrayLike, num_buckets: int
) -> tuple[FloatArray, np.ndarray]:
    degrees = _as_degrees(degree)
    hits = _as_correct(correct, degrees.size)
    buckets, _ = degree_buckets(degrees, num_buckets)
    sizes = np.bincount(buckets, minlength=num_buckets)
    sums = np.bincount(buckets, weights=hits, minlength=num_buckets)
    accuracies = np.full(num_buckets, np.nan)
    filled = sizes > 0
    accuracies[filled] = sums[filled] / sizes[filled]
    return accuracies, sizes


def degree_bucket_fairness(
    correct: ArrayLike, degree: ArrayLike, num_buckets: int = 4
) -> dict[str, Any]:
    r"""Accuracy across degree buckets, with each bucket counted once.

    Over the non-empty buckets :math:`b` with accuracies :math:`a_b` (from
    :func:`degree_quartile_accuracy`):

    * ``jain``: Jain's index :math:`(\sum_b a_b)^2 / (B' \sum_b a_b^2)`, :math:`B'` the number of
      non-empty buckets (:func:`fedlr.metrics.fairness.jain_index`);
    * ``worst``: :math:`\min_b a_b`; ``gap``: :math:`\max_b a_b - \min_b a_b`;
    * ``low-high-gap``: accuracy of the lowest non-empty bucket minus that of the highest
      (positive when low-degree nodes are served *better*).

    Parameters
    ----------
    correct, degree, num_buckets
        As in :func:`degree_quartile_accuracy`.

    Returns
    -------
    dict
        ``bucket-accuracy`` (list, ``nan`` for empty buckets), ``bucket-size`` (list of int),
        ``bucket-edges`` (list of the inner quantile edges), ``jain``, ``worst``, ``gap``,
        ``low-high-gap`` (floats).

    Examples
    --------
    >>> summary = degree_bucket_fairness([0, 1, 1, 1, 0, 0, 1, 1], [1, 2, 3, 4, 5, 6, 7, 8])
    >>> summary["bucket-accuracy"], summary["bucket-size"]
    ([0.5, 1.0, 0.0, 1.0], [2, 2, 2, 2])
    >>> round(summary["jain"], 6)  # 2.5**2 / (4 * 2.25) = 25/36
    0.694444
    >>> summary["worst"], summary["gap"], summary["low-high-gap"]
    (0.0, 1.0, -0.5)
    """
    accuracies, sizes = _bucket_accuracies(correct, degree, num_buckets)
    _, edges = degree_buckets(degree, num_buckets)
    filled = accuracies[sizes > 0]
    return {
        "bucket-accuracy": [float(value) for value in accuracies],
        "bucket-size": [int(size) for size in sizes],
        "bucket-edges": [float(edge) for edge in edges],
        "jain": jain_index(filled),
        "worst": float(np.min(filled)),
        "gap": float(np.max(filled) - np.min(filled)),
        "low-high-gap": float(filled[0] - filled[-1]),
    }


def loglog_slope(values: ArrayLike, degree: ArrayLike) -> float:
    r"""Least-squares slope of :math:`\log y_v` on :math:`\log(d_v + 1)`.

    .. math:: \hat\beta = \frac{\sum_v (u_v - \bar u)(t_v - \bar t)}{\sum_v (u_v - \bar u)^2},
              \qquad u_v = \log(d_v + 1),\ t_v = \log y_v,

    over the nodes with a finite, positive :math:`y_v` only: zeros (e.g. a node with no path to
    any labelled node has gradient 0), negatives, ``nan`` and ``inf`` have no logarithm and are
    dropped silently. :math:`y \propto (d + 1)^{\beta}` gives exactly :math:`\beta`; a gradient
    norm with slope 0.5 grows like :math:`\sqrt{d + 1}`.

    Parameters
    ----------
    values : array_like, shape (N,)
        Per-node values, e.g. gradient norms.
    degree : array_like, shape (N,)
        Degrees of the same nodes, finite and ``>= 0``.

    Returns
    -------
    float
        The slope :math:`\hat\beta`.

    Raises
    ------
    ValueError
        If the shapes differ or ``degree`` is invalid; if fewer than two nodes are kept, or all
        kept nodes have the same degree (the slope is undefined).

    Examples
    --------
    >>> degree = np.array([0, 1, 3, 8, 15])
    >>> round(loglog_slope((degree + 1.0) ** 0.5, degree), 12)
    0.5
    >>> round(loglog_slope([0.0, 2.0, 4.0, np.nan], [5, 1, 3, 7]), 12)  # 0 and nan dropped
    1.0
    """
    degrees = _as_degrees(degree)
    ys = np.asarray(values, dtype=np.float64)
    if ys.shape != degrees.shape:
        raise ValueError(
            f"values: expected shape {degrees.shape}, one per node of degree, got {ys.shape}"
        )
    keep = np.isfinite(ys) & (ys > 0)
    if np.count_nonzero(keep) < 2:
        raise ValueError("values: expected at least two finite, positive values")
    u = np.log1p(degrees[keep])
    t = np.log(ys[keep])
    centred = u - u.mean()
    spread = float(np.sum(centred**2))
    if spread == 0.0:
        raise ValueError("degree: the kept nodes all have the same degree; the slope is undefined")
    return float(np.sum(centred * (t - t.mean())) / spread)
