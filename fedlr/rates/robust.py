r"""Noise-adaptive rates that keep each site's share: a guard, FedNova, small-loss selection.

Why
---
An inverse-noise rate :math:`\mathrm{lr}_k = f_k \mathrm{lr}_0` changes two things at once. To
first order, :math:`E` local steps give :math:`\Delta_k \approx -f_k \mathrm{lr}_0 E \nabla F_k`,
so FedAvg descends :math:`\sum_k p_k f_k F_k`: a site with a small rate loses its *share* of the
objective (FedNova, Wang et al., NeurIPS 2020, "Tackling the Objective Inconsistency Problem in
Heterogeneous Federated Optimization"). A noisy site that also holds what other sites lack
(classes under label skew, another patient mix) then loses the most, and the worst site's
accuracy falls. The smaller rate also shortens the local trajectory, in which a model memorises
wrong labels (FedCorr, Xu et al., CVPR 2022); that part is wanted.

The three pieces here separate the two effects:

* :func:`noisy_group` — the **no-harm guard**. Clean but different sites have different noise
  estimates too (a loss-based estimate measures misfit to the global model, which mixes label
  noise with distribution shift). Rates stay uniform unless the estimates split into two groups
  whose gap (as a ratio) is larger than ``min_ratio`` and larger than the spread inside the low
  group; only then is the high group treated as noisy.
* :func:`normalized_update` — FedNova's normalisation for equal local step counts: the server
  aggregates :math:`w + \Delta_k / f_k`, so every site keeps its share :math:`p_k` of the
  objective while its local steps stay small.
* :func:`small_loss_mask` — the noise response inside a site (Co-teaching, Han et al., NeurIPS
  2018; FedCorr's 2-component mixture on per-sample losses, Arazo et al., ICML 2019): a noisy
  site trains on the examples whose margin loss under the received global model falls in the
  low-loss component, so its clean examples keep counting and its flipped labels do not.
"""

from __future__ import annotations

import numpy as np


def noisy_group(noise: np.ndarray, *, min_ratio: float = 2.0, floor: float = 0.05) -> np.ndarray:
    """Which clients' estimates stand apart as noisy: a boolean mask, all False when none do.

    The estimates (floored at ``floor``) are sorted on a log scale and split at their largest
    gap. The upper group is noisy when that gap, as a ratio, is at least ``min_ratio`` *and* at
    least the ratio spanned by the lower group (the spread that clean but different sites show).
    One client, or equal estimates, are never split.

    Examples
    --------
    >>> noisy_group(np.array([0.10, 0.12, 0.9, 1.4])).tolist()      # a clear gap
    [False, False, True, True]
    >>> noisy_group(np.array([0.13, 0.18, 0.25, 0.30])).tolist()    # clean sites' spread
    [False, False, False, False]
    """
    if not min_ratio >= 1:
        raise ValueError(f"min_ratio: expected a number >= 1, got {min_ratio}")
    values = np.asarray(noise, dtype=float)
    if values.ndim != 1 or not np.all(np.isfinite(values)):
        raise ValueError("noise: expected a 1-d array of finite estimates")
    mask = np.zeros(values.shape, dtype=bool)
    if values.size < 2:
        return mask
    logs = np.log(np.maximum(values, floor))
    order = np.argsort(logs, kind="stable")
    ranked = logs[order]
    gaps = np.diff(ranked)
    split = int(np.argmax(gaps))  # the low group is ranked[: split + 1]
    gap = float(gaps[split])
    low_spread = float(ranked[split] - ranked[0])
    if gap <= 0 or gap < np.log(min_ratio) or gap < low_spread:
        return mask
    mask[order[split + 1 :]] = True
    return mask


def guarded_factors(factors: np.ndarray, noisy: np.ndarray) -> np.ndarray:
    """The rule's factors where some clients stand apart as noisy; all ones where none do.

    Examples
    --------
    >>> guarded_factors(np.array([2.0, 0.5]), np.array([False, True])).tolist()
    [2.0, 0.5]
    >>> guarded_factors(np.array([1.2, 0.8]), np.array([False, False])).tolist()
    [1.0, 1.0]
    """
    factors = np.asarray(factors, dtype=float)
    noisy = np.asarray(noisy, dtype=bool)
    if factors.shape != noisy.shape:
        raise ValueError("factors and noisy: expected arrays of the same shape")
    return factors.copy() if noisy.any() else np.ones_like(factors)


def normalized_update(sent: np.ndarray, returned: np.ndarray, factor: float) -> np.ndarray:
    r"""FedNova's normalised model for one client: ``sent + (returned - sent) / factor``.

    With equal local step counts, dividing the update by the client's rate factor restores its
    share of the objective (its update is :math:`\approx -f_k \mathrm{lr}_0 E \nabla F_k`).

    Examples
    --------
    >>> normalized_update(np.array([1.0, 1.0]), np.array([0.8, 1.2]), 0.5).tolist()
    [0.6, 1.4]
    """
    if not 0 < factor < np.inf:
        raise ValueError(f"factor: expected a number > 0, got {factor}")
    sent = np.asarray(sent)
    returned = np.asarray(returned)
    out = sent.astype(np.float64) + (returned.astype(np.float64) - sent) / factor
    return out.astype(returned.dtype)


def small_loss_mask(losses: np.ndarray, *, seed: int = 0, min_keep: float = 0.1) -> np.ndarray:
    """Examples to keep: those a 2-component Gaussian mixture puts in the low-loss component.

    ``losses`` are per-example (margin) losses under the received global model. When the two
    components are not separated by at least one pooled standard deviation, or one component
    fits as well (lower or equal BIC), every example is kept. At least ``min_keep`` of the
    examples are kept (those with the smallest losses), so a site never trains on nothing.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> losses = np.concatenate([rng.normal(0.1, 0.05, 70), rng.normal(3.0, 0.5, 30)])
    >>> int(small_loss_mask(losses).sum())
    70
    """
    from sklearn.mixture import GaussianMixture

    losses = np.asarray(losses, dtype=float)
    keep = np.ones(losses.shape, dtype=bool)
    if losses.ndim != 1 or losses.size < 4 or not np.all(np.isfinite(losses)):
        return keep
    if float(losses.std()) < 1e-12:
        return keep
    gmm = GaussianMixture(n_components=2, random_state=seed, reg_covar=1e-4, max_iter=200)
    column = losses.reshape(-1, 1)
    gmm.fit(column)
    means = gmm.means_.ravel()
    stds = np.sqrt(gmm.covariances_.ravel())
    if abs(means[1] - means[0]) < float(np.sqrt(np.mean(stds**2))):
        return keep
    single = GaussianMixture(n_components=1, reg_covar=1e-4).fit(column)
    if single.bic(column) <= gmm.bic(column):  # one population explains the losses as well
        return keep
    high = int(np.argmax(means))
    keep = gmm.predict_proba(column)[:, high] <= 0.5
    least = int(np.ceil(min_keep * losses.size))
    if keep.sum() < least:
        keep = np.zeros(losses.shape, dtype=bool)
        keep[np.argsort(losses, kind="stable")[:least]] = True
    return keep
