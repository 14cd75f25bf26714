r"""Fairness metrics over per-client accuracies.

Every metric here treats each client as one unit: client :math:`k` contributes its accuracy
:math:`a_k` once, whatever its number of examples :math:`n_k`. This follows q-FFL (Li et al.,
"Fair Resource Allocation in Federated Learning", ICLR 2020), which reports the unweighted spread
of accuracies across devices ("treat each device equally", ``litian96/fair_flearn`` issue #1).

Accuracies are fractions in :math:`[0, 1]`, one per client, given as a 1-D array-like of length
:math:`K \ge 1`. :func:`metric_fairness_summary` summarises another per-client metric the same
way (a score in :math:`[0, 1]`, or a loss, where the worst clients are those of highest loss).
All functions are pure: numpy and scipy only, no I/O, no randomness.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedlr.metrics.classification import higher_is_better

__all__ = [
    "best_fraction_mean",
    "clean_noisy_gap",
    "fairness_summary",
    "gini",
    "jain_index",
    "metric_fairness_summary",
    "spearman_rho",
    "worst_fraction_mean",
]

FloatArray = NDArray[np.float64]


def _as_vector(values: ArrayLike, name: str) -> FloatArray:
    """Return ``values`` as a 1-D float64 array, or raise ``ValueError`` naming ``name``."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D sequence (one value per client), got shape {array.shape}"
        )
    return array


def _as_accuracies(accuracies: ArrayLike, name: str = "accuracies") -> FloatArray:
    """Validate per-client accuracies: 1-D, non-empty, finite, each in [0, 1]."""
    array = _as_vector(accuracies, name)
    if array.size == 0:
        raise ValueError(f"{name} must hold at least one client accuracy, got an empty sequence")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite numbers in [0, 1], got {array.tolist()}")
    if np.any(array < 0.0) or np.any(array > 1.0):
        raise ValueError(f"{name} must be fractions in [0, 1], got {array.tolist()}")
    return array


def _fraction_count(num_clients: int, fraction: float) -> int:
    """Return ceil(fraction * K), clamped to [1, K], ignoring float round-off in the product."""
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, numbers.Real)
        or not 0 < fraction <= 1
    ):
        raise ValueError(f"fraction must be a number in (0, 1], got {fraction!r}")
    # Round first so that e.g. 0.7 * 10 = 7.000000000000001 counts 7 clients, not 8.
    count = math.ceil(round(fraction * num_clients, 9))
    return min(max(count, 1), num_clients)


def worst_fraction_mean(accuracies: ArrayLike, fraction: float = 0.1) -> float:
    r"""Mean accuracy of the worst ``fraction`` of clients.

    With the accuracies sorted ascending, :math:`a_{(1)} \le \dots \le a_{(K)}`, and
    :math:`m = \lceil \text{fraction} \cdot K \rceil`,

    .. math:: \text{worst}(a) = \frac{1}{m} \sum_{i=1}^{m} a_{(i)}.

    This is the q-FFL "worst 10%" convention at ``fraction=0.1``: at least one client is always
    counted, so with :math:`K < 10` it is the single lowest accuracy.

    Parameters
    ----------
    accuracies : array_like, shape (K,)
        Per-client accuracies in [0, 1], each client counted once.
    fraction : float, default 0.1
        Fraction of clients to average, in (0, 1]. ``fraction=1`` gives the plain mean.

    Returns
    -------
    float
        Mean of the :math:`\lceil \text{fraction} \cdot K \rceil` lowest accuracies.

    Raises
    ------
    ValueError
        If ``accuracies`` is empty, not 1-D, non-finite or outside [0, 1], or if ``fraction`` is
        not in (0, 1].

    Examples
    --------
    >>> worst_fraction_mean([0.9, 0.2, 0.6, 0.5], fraction=0.5)  # ceil(0.5 * 4) = 2 clients
    0.35
    >>> worst_fraction_mean([0.9, 0.2, 0.6, 0.4])  # ceil(0.1 * 4) = 1 client
    0.2
    """
    array = _as_accuracies(accuracies)
    count = _fraction_count(array.size, fraction)
    return float(np.mean(np.sort(array)[:count]))


def best_fraction_mean(accuracies: ArrayLike, fraction: float = 0.1) -> float:
    r"""Mean accuracy of the best ``fraction`` of clients.

    With the accuracies sorted descending and :math:`m = \lceil \text{fraction} \cdot K \rceil`,
    this is the mean of the :math:`m` highest accuracies (q-FFL "best 10%" at ``fraction=0.1``).
    At least one client is always counted.

    Parameters
    ----------
    accuracies : array_like, shape (K,)
        Per-client accuracies in [0, 1], each client counted once.
    fraction : float, default 0.1
        Fraction of clients to average, in (0, 1].

    Returns
    -------
    float
        Mean of the :math:`\lceil \text{fraction} \cdot K \rceil` highest accuracies.

    Raises
    ------
    ValueError
        If ``accuracies`` is empty, not 1-D, non-finite or outside [0, 1], or if ``fraction`` is
        not in (0, 1].

    Examples
    --------
    >>> best_fraction_mean([0.9, 0.2, 0.6, 0.4], fraction=0.5)  # ceil(0.5 * 4) = 2 clients
    0.75
    >>> best_fraction_mean([0.9, 0.2, 0.6, 0.4])  # ceil(0.1 * 4) = 1 client
    0.9
    """
    array = _as_accuracies(accuracies)
    count = _fraction_count(array.size, fraction)
    return float(np.mean(np.sort(array)[array.size - count :]))


def jain_index(accuracies: ArrayLike) -> float:
    r"""Jain's fairness index of per-client accuracies.

    .. math:: J(a) = \frac{\left(\sum_{k=1}^{K} a_k\right)^2}{K \sum_{k=1}^{K} a_k^2}
              \in \left[\tfrac{1}{K}, 1\right].

    :math:`J = 1` when all clients have the same accuracy and :math:`J = 1/K` when one client has
    all of it. By convention, all-zero accuracies are perfectly equal: :math:`J = 1`.
    The index is scale-invariant, so it is computed on :math:`a / \max_k a_k` to avoid underflow
    of :math:`a_k^2`; the result is clipped to :math:`[1/K, 1]` to remove float round-off only.

    Parameters
    ----------
    accuracies : array_like, shape (K,)
        Per-client accuracies in [0, 1], each client counted once.

    Returns
    -------
    float
        Jain's index in [1/K, 1].

    Raises
    ------
    ValueError
        If ``accuracies`` is empty, not 1-D, non-finite or outside [0, 1].

    Examples
    --------
    >>> jain_index([0.5, 0.5, 0.5, 0.5])
    1.0
    >>> jain_index([1.0, 0.0, 0.0, 0.0])  # 1/K
    0.25
    >>> round(jain_index([0.5, 0.7, 0.9, 1.0]), 6)  # 3.1**2 / (4 * 2.55)
    0.942157
    """
    return _jain(_as_accuracies(accuracies))


def _jain(array: FloatArray) -> float:
    """Jain's index of finite values >= 0 (:func:`jain_index` without its [0, 1] check)."""
    top = float(np.max(array))
    if top == 0.0:
        return 1.0
    scaled = array / top
    index = float(np.sum(scaled) ** 2 / (array.size * np.sum(scaled**2)))
    return min(max(index, 1.0 / array.size), 1.0)


def gini(accuracies: ArrayLike) -> float:
    r"""Gini coefficient of per-client accuracies.

    .. math:: G(a) = \frac{\sum_{i=1}^{K} \sum_{j=1}^{K} |a_i - a_j|}{2 K^2 \bar{a}}
              \in \left[0, 1 - \tfrac{1}{K}\right],
              \qquad \bar{a} = \frac{1}{K} \sum_{k=1}^{K} a_k.

    :math:`G = 0` when all clients are equal and :math:`G = 1 - 1/K` when one client has all the
    accuracy. By convention :math:`G = 0` when :math:`\bar{a} = 0` (all clients at zero are
    equal). It is computed in :math:`O(K \log K)` from the sorted accuracies
    :math:`a_{(1)} \le \dots \le a_{(K)}` via
    :math:`\sum_i \sum_j |a_i - a_j| = 2 \sum_{i=1}^{K} (2i - K - 1)\, a_{(i)}`, on
    :math:`a / \max_k a_k` (scale-invariant), and clipped to its range to remove round-off only.

    Parameters
    ----------
    accuracies : array_like, shape (K,)
        Per-client accuracies in [0, 1], each client counted once.

    Returns
    -------
    float
        Gini coefficient in [0, 1 - 1/K].

    Raises
    ------
    ValueError
        If ``accuracies`` is empty, not 1-D, non-finite or outside [0, 1].

    Examples
    --------
    >>> gini([0.5, 0.5, 0.5, 0.5])
    0.0
    >>> gini([1.0, 0.0, 0.0, 0.0])  # 1 - 1/K
    0.75
    >>> round(gini([0.5, 0.7, 0.9, 1.0]), 6)  # 3.4 / (2 * 16 * 0.775)
    0.137097
    """
    return _gini(_as_accuracies(accuracies))


def _gini(array: FloatArray) -> float:
    """Gini coefficient of finite values >= 0 (:func:`gini` without its [0, 1] check)."""
    num_clients = array.size
    top = float(np.max(array))
    if top == 0.0:
        return 0.0
    ordered = np.sort(array / top)
    weights = 2.0 * np.arange(1, num_clients + 1) - num_clients - 1.0
    # sum_ij |a_i - a_j| / (2 K^2 mean) = sum_i (2i - K - 1) a_(i) / (K * sum a).
    value = float(np.dot(weights, ordered) / (num_clients * np.sum(ordered)))
    return min(max(value, 0.0), 1.0 - 1.0 / num_clients)


def fairness_summary(accuracies: ArrayLike) -> dict[str, float]:
    r"""Summarise the spread of per-client accuracies, each client counted once.

    With :math:`K` clients and accuracies :math:`a_1, \dots, a_K`:

    - ``"mean"``: :math:`\bar{a} = \frac{1}{K} \sum_k a_k` (unweighted, not by examples).
    - ``"variance"``: :math:`\frac{1}{K} \sum_k (a_k - \bar{a})^2`, population variance
      (``ddof=0``), unweighted across clients: the q-FFL convention.
    - ``"worst10"`` / ``"best10"``: mean of the :math:`\lceil 0.1 K \rceil` lowest / highest
      :math:`a_k` (see :func:`worst_fraction_mean`, :func:`best_fraction_mean`).
    - ``"jain"``: Jain's index :math:`(\sum_k a_k)^2 / (K \sum_k a_k^2) \in [1/K, 1]`, 1.0 for
      all-zero accuracies (see :func:`jain_index`).
    - ``"gini"``: :math:`\sum_i \sum_j |a_i - a_j| / (2 K^2 \bar{a}) \in [0, 1 - 1/K]`, 0.0 when
      :math:`\bar{a} = 0` (see :func:`gini`).

    Parameters
    ----------
    accuracies : array_like, shape (K,)
        Per-client accuracies in [0, 1], e.g. on clean test data, each client counted once.

    Returns
    -------
    dict of str to float
        Exactly the keys ``"mean"``, ``"variance"``, ``"worst10"``, ``"best10"``, ``"jain"``,
        ``"gini"``.

    Raises
    ------
    ValueError
        If ``accuracies`` is empty, not 1-D, non-finite or outside [0, 1].

    Examples
    --------
    >>> summary = fairness_summary([0.5, 0.7, 0.9, 1.0])
    >>> {key: round(value, 6) for key, value in summary.items()}  # doctest: +NORMALIZE_WHITESPACE
    {'mean': 0.775, 'variance': 0.036875, 'worst10': 0.5, 'best10': 1.0,
     'jain': 0.942157, 'gini': 0.137097}
    """
    array = _as_accuracies(accuracies)
    return {
        "mean": float(np.mean(array)),
        "variance": float(np.var(array, ddof=0)),
        "worst10": worst_fraction_mean(array, 0.1),
        "best10": best_fraction_mean(array, 0.1),
        "jain": jain_index(array),
        "gini": gini(array),
    }


def metric_fairness_summary(values: ArrayLike, metric: str = "accuracy") -> dict[str, float]:
    r"""The fairness summary of any per-client metric, ``"worst"`` meaning the metric's worst.

    For a score in :math:`[0, 1]`, higher better (``accuracy``, ``balanced-accuracy``,
    ``auroc``, ``f1``), this is :func:`fairness_summary` of the scores.

    For ``loss`` (a mean cross-entropy :math:`\ell_k \ge 0`, lower better), the same keys:

    - ``"mean"``, ``"variance"``: as for accuracies, unweighted, ``ddof=0``.
    - ``"worst10"``: mean of the :math:`\lceil 0.1 K \rceil` *highest* losses; ``"best10"``: of
      the lowest.
    - ``"jain"``, ``"gini"``: Jain's index and the Gini coefficient of the losses as they are,
      :math:`(\sum_k \ell_k)^2 / (K \sum_k \ell_k^2) \in [1/K, 1]` and
      :math:`\sum_i \sum_j |\ell_i - \ell_j| / (2 K^2 \bar\ell) \in [0, 1 - 1/K]`. Both measure
      inequality of any non-negative quantity and are scale-free, so the losses need no bound
      (or flipping): 1 and 0 mean every client has the same loss, as they mean the same accuracy
      for accuracies. Equal losses are not equal accuracies, though: compare a loss summary only
      with loss summaries. All-zero losses count as equal (1 and 0).

    Parameters
    ----------
    values : array_like, shape (K,)
        One value per client, each client counted once.
    metric : str, default "accuracy"
        The metric's name (:data:`fedlr.metrics.classification.NAMES`); ``loss`` is the one
        where lower is better.

    Returns
    -------
    dict of str to float
        The keys of :func:`fairness_summary`.

    Raises
    ------
    ValueError
        If ``values`` is empty, not 1-D or non-finite, outside [0, 1] for a score, or negative
        for ``loss``.

    Examples
    --------
    >>> summary = metric_fairness_summary([0.2, 0.4, 0.6, 0.8], "loss")
    >>> {key: round(value, 6) for key, value in summary.items()}  # doctest: +NORMALIZE_WHITESPACE
    {'mean': 0.5, 'variance': 0.05, 'worst10': 0.8, 'best10': 0.2,
     'jain': 0.833333, 'gini': 0.25}
    """
    if higher_is_better(metric):
        return fairness_summary(values)
    array = _as_vector(values, metric)
    if array.size == 0:
        raise ValueError(f"{metric} must hold at least one client value, got an empty sequence")
    if not np.all(np.isfinite(array)) or np.any(array < 0.0):
        raise ValueError(f"{metric} must be finite numbers >= 0, got {array.tolist()}")
    count = _fraction_count(array.size, 0.1)
    ordered = np.sort(array)
    return {
        "mean": float(np.mean(array)),
        "variance": float(np.var(array, ddof=0)),
        "worst10": float(np.mean(ordered[array.size - count :])),
        "best10": float(np.mean(ordered[:count])),
        "jain": _jain(array),
        "gini": _gini(array),
    }


def clean_noisy_gap(accuracies: ArrayLike, noise_true: ArrayLike) -> float:
    r"""Mean accuracy of clean clients minus mean accuracy of noisy clients.

    .. math:: \Delta = \frac{1}{|C|} \sum_{k \in C} a_k - \frac{1}{|N|} \sum_{k \in N} a_k,
              \qquad C = \{k : \rho_k = 0\}, \; N = \{k : \rho_k > 0\},

    where :math:`\rho_k` is client :math:`k`'s true label-noise rate. Each client is counted once.
    A positive gap means noisy clients are served worse.

    Parameters
    ----------
    accuracies : array_like, shape (K,)
        Per-client accuracies in [0, 1].
    noise_true : array_like, shape (K,)
        True per-client noise rates, finite and >= 0; 0 marks a clean client.

    Returns
    -------
    float
        The gap, or ``float('nan')`` if there is no clean client or no noisy client.

    Raises
    ------
    ValueError
        If either input is empty, not 1-D or non-finite, if ``accuracies`` is outside [0, 1], if
        ``noise_true`` is negative, or if the lengths differ.

    Examples
    --------
    >>> round(clean_noisy_gap([0.9, 0.8, 0.5, 0.7], [0.0, 0.0, 0.4, 0.2]), 6)  # 0.85 - 0.6
    0.25
    >>> clean_noisy_gap([0.9, 0.8], [0.0, 0.0])  # no noisy client
    nan
    """
    array = _as_accuracies(accuracies)
    noise = _as_vector(noise_true, "noise_true")
    if noise.size != array.size:
        raise ValueError(
            f"accuracies and noise_true must have the same length (one per client), "
            f"got {array.size} and {noise.size}"
        )
    if not np.all(np.isfinite(noise)) or np.any(noise < 0.0):
        raise ValueError(f"noise_true must be finite noise rates >= 0, got {noise.tolist()}")
    clean = noise == 0.0
    if not np.any(clean) or np.all(clean):
        return float("nan")
    return float(np.mean(array[clean]) - np.mean(array[~clean]))


def spearman_rho(estimate: ArrayLike, truth: ArrayLike) -> float:
    r"""Spearman rank correlation between estimated and true per-client values.

    .. math:: \rho = \operatorname{corr}\big(\operatorname{rank}(x), \operatorname{rank}(y)\big),

    the Pearson correlation of the ranks, computed by :func:`scipy.stats.spearmanr`; tied values
    get the average of the ranks they span. Typical use: how well a per-client noise estimate
    orders clients compared with the true noise rates.

    Returns ``float('nan')`` (rather than raising) when the correlation is undefined or
    untrustworthy: fewer than 2 values (including none), either input constant, or any value
    non-finite (nan or inf).

    Parameters
    ----------
    estimate : array_like, shape (K,)
        Estimated values, one per client.
    truth : array_like, shape (K,)
        True values, one per client, in the same client order.

    Returns
    -------
    float
        :math:`\rho \in [-1, 1]`, or ``float('nan')`` in the cases above.

    Raises
    ------
    ValueError
        If either input is not 1-D or the lengths differ.

    Examples
    --------
    >>> spearman_rho([0.1, 0.5, 0.3], [0.0, 0.4, 0.2])  # same order
    1.0
    >>> round(spearman_rho([0.1, 0.1, 0.3], [0.0, 0.2, 0.4]), 6)  # ranks (1.5, 1.5, 3), (1, 2, 3)
    0.866025
    >>> spearman_rho([0.2, 0.2, 0.2], [0.0, 0.4, 0.2])  # constant estimate
    nan
    """
    x = _as_vector(estimate, "estimate")
    y = _as_vector(truth, "truth")
    if x.size != y.size:
        raise ValueError(
            f"estimate and truth must have the same length (one per client), "
            f"got {x.size} and {y.size}"
        )
    if x.size < 2 or not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        return float("nan")
    if np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    import scipy.stats  # 0.6 s to import: only when a correlation is asked for

    rho = float(scipy.stats.spearmanr(x, y).statistic)
    return min(max(rho, -1.0), 1.0)
