r"""Learning rates inverse to each client's estimated data noise, and the noise estimators.

The rule
--------
Client :math:`k` with noise estimate :math:`\sigma_k` and :math:`n_k` examples gets

.. math::

    \mathrm{lr}_k = \mathrm{lr}_0 \cdot \operatorname{clip}\!\left(
        \left(\frac{\mathrm{ref}}{\max(\sigma_k, \sigma_{\min})}\right)^{p},\ \mathrm{low},\
        \mathrm{high}\right)

where ``ref`` is the one number that makes the example-weighted mean rate equal
:math:`\mathrm{lr}_0`, :math:`\sum_k n_k \mathrm{lr}_k / \sum_k n_k = \mathrm{lr}_0`. The mean of
clipped terms is continuous and non-decreasing in ``ref`` and runs from ``low`` to ``high``, so with
``low <= 1 <= high`` such a ``ref`` exists; it is found by bisection on ``log ref``.

Why: to first order in the rate, :math:`E` local SGD steps give :math:`\Delta_k \approx
-\mathrm{lr}_k E \nabla F_k(w)`, so FedAvg then descends :math:`\sum_k p_k \mathrm{lr}_k F_k`:
an inverse-noise rate down-weights noisy objectives as inverse-variance weighting does
(Robust-HDP, ICML 2024, weights updates by :math:`1/\lVert S_k\rVert^2`), and it also shortens the
local steps in which a model memorises wrong labels (FedCorr, CVPR 2022, scales its proximal term
by the estimated noisy fraction). FedNova (NeurIPS 2020) shows that unequal local progress
re-weights the objective in exactly this way. Rates are bounded: whatever a client reports, its
rate stays in ``[low * lr_0, high * lr_0]`` (strictly, ``low`` and ``high`` bound the *factor*).

The estimators
--------------
* :func:`loss_mixture_noise` — FedCorr/DivideMix: fit a 2-component Gaussian mixture to the
  per-sample losses of the received global model; the weight of the high-loss component is the
  estimated noisy fraction.
* :func:`mean_margin_noise` — the mean *margin loss*, the loss minus the loss the model's own
  top class would have, :math:`\ell_i - \min_c \ell_{i,c} = \log p_{\max} - \log p_{y_i} \ge 0`.
  A correctly labelled sample the model gets right has margin 0; a hard but clean sample has a
  flat prediction and so a small margin even when its loss is high; a wrongly labelled sample
  has a confident prediction for another class and a large margin. This is fedlr's answer to the
  hard-but-clean trap of loss-based estimates. It is a noise *level*, not a fraction: the rule is
  scale-free (``ref`` absorbs the scale), and only ranks and ratios matter.
* :func:`gradient_noise_ratio` — :math:`\operatorname{tr}\Sigma / \lVert G \rVert^2` of the
  per-sample gradients (McCandlish et al. 2018, "An Empirical Model of Large-Batch Training",
  :math:`B_{\mathrm{simple}}`): noisy labels add gradient variance that does not add up.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

RateRule = Callable[[np.ndarray, np.ndarray], np.ndarray]


def inverse_noise_rule(
    *, power: float = 1.0, low: float = 0.25, high: float = 4.0, floor: float = 0.05
) -> RateRule:
    """Make the inverse-noise rule: ``(noise, num_examples) -> rate factors``.

    Multiply the returned factors by ``lr_0`` to get rates; their ``num_examples``-weighted mean
    is 1 (up to ``1e-9``).

    Parameters
    ----------
    power : float
        Exponent ``p`` of ``ref / noise``; 0 < p.
    low, high : float
        Bounds of the factor; ``0 < low <= 1 <= high``.
    floor : float
        Noise estimates below ``floor`` count as ``floor`` (a client claiming zero noise gets at
        most ``high``).

    Returns
    -------
    callable
        ``rule(noise, num_examples)`` with arrays of shape ``(K,)``; returns factors ``(K,)``.

    Examples
    --------
    >>> rule = inverse_noise_rule(power=1.0, low=0.25, high=4.0, floor=0.05)
    >>> rule(np.array([0.1, 0.2, 0.4]), np.array([1, 1, 1])).round(4).tolist()
    [1.7143, 0.8571, 0.4286]
    """
    if not 0 < power < np.inf:
        raise ValueError(f"power: expected a number > 0, got {power}")
    if not 0 < low <= 1:
        raise ValueError(f"low: expected a number in (0, 1], got {low}")
    if not 1 <= high < np.inf:
        raise ValueError(f"high: expected a number >= 1, got {high}")
    if not 0 < floor < np.inf:
        raise ValueError(f"floor: expected a number > 0, got {floor}")

    def rule(noise: np.ndarray, num_examples: np.ndarray) -> np.ndarray:
        noise = np.asarray(noise, dtype=float)
        weights = np.asarray(num_examples, dtype=float)
        if noise.shape != weights.shape or noise.ndim != 1:
            raise ValueError("noise and num_examples: expected two arrays of the same shape (K,)")
        if noise.size == 0:
            return noise.copy()
        if not np.all(np.isfinite(noise)) or np.any(noise < 0):
            raise ValueError("noise: expected finite estimates >= 0")
        if not np.all(weights > 0):
            raise ValueError("num_examples: expected positive counts")
        weights = weights / weights.sum()
        log_noise = np.log(np.maximum(noise, floor))

        def factors(log_ref: float) -> np.ndarray:
            return np.clip(np.exp(power * (log_ref - log_noise)), low, high)

        # mean(factors) is non-decreasing in log_ref; bracket where it is low and high.
        lo = float(log_noise.min()) + np.log(low) / power - 1.0
        hi = float(log_noise.max()) + np.log(high) / power + 1.0
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if float(weights @ factors(mid)) < 1.0:
                lo = mid
            else:
                hi = mid
            if hi - lo < 1e-13:
                break
        return factors(0.5 * (lo + hi))

    return rule


def inverse_noise_rates(
    noise: np.ndarray,
    num_examples: np.ndarray,
    base_lr: float,
    *,
    power: float = 1.0,
    low: float = 0.25,
    high: float = 4.0,
    floor: float = 0.05,
) -> np.ndarray:
    """Per-client learning rates ``base_lr * inverse_noise_rule(...)(noise, num_examples)``.

    Examples
    --------
    >>> inverse_noise_rates(np.array([0.0, 0.5]), np.array([100, 100]), 0.1,
    ...                     low=0.25, high=2.0).round(4).tolist()
    [0.175, 0.025]
    """
    if not 0 < base_lr < np.inf:
        raise ValueError(f"base_lr: expected a number > 0, got {base_lr}")
    rule = inverse_noise_rule(power=power, low=low, high=high, floor=floor)
    return base_lr * rule(np.asarray(noise, float), np.asarray(num_examples, float))


def is_valid_estimate(value: object) -> bool:
    """True for a finite, non-negative number (what a client must report as its noise)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        return False
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float range (10**400): no finite estimate
        return False
    return math.isfinite(number) and number >= 0


@dataclass
class NoiseEMA:
    """Per-client exponential moving average of noise estimates, keyed by partition id.

    ``smoothed = decay * previous + (1 - decay) * new``; the first estimate is taken as is.
    Explicit state (``to_dict`` / ``from_dict``) so that a run can be saved and resumed.

    Examples
    --------
    >>> ema = NoiseEMA(decay=0.5)
    >>> ema.update(3, 0.8); ema.update(3, 0.4)
    0.8
    0.6000000000000001
    """

    decay: float = 0.5
    values: dict[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 <= self.decay < 1:
            raise ValueError(f"decay: expected a number in [0, 1), got {self.decay}")

    def update(self, partition_id: int, estimate: float) -> float:
        """Fold one valid estimate in; return the smoothed value."""
        if not is_valid_estimate(estimate):
            raise ValueError(f"estimate: expected a finite number >= 0, got {estimate!r}")
        previous = self.values.get(partition_id)
        value = (
            float(estimate)
            if previous is None
            else (self.decay * previous + (1 - self.decay) * float(estimate))
        )
        self.values[partition_id] = value
        return value

    def to_dict(self) -> dict[str, object]:
        """State as plain JSON-able data."""
        return {"decay": self.decay, "values": {str(k): v for k, v in self.values.items()}}

    @classmethod
    def from_dict(cls, state: Mapping[str, object]) -> NoiseEMA:
        """Restore from :meth:`to_dict`."""
        values = state.get("values", {})
        assert isinstance(values, Mapping)
        return cls(
            decay=float(state["decay"]),  # type: ignore[arg-type]
            values={int(k): float(v) for k, v in values.items()},
        )


# ---------------------------------------------------------------------------------------------
# Estimators: statistics of the received global model on the client's own training data.
# ---------------------------------------------------------------------------------------------


def margin_losses(log_probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    r"""Per-sample margin losses :math:`\log p_{\max,i} - \log p_{y_i,i} \ge 0`.

    Parameters
    ----------
    log_probs : ndarray, shape (N, C)
        Log-softmax outputs of the global model.
    labels : ndarray, shape (N,)
        The client's (possibly noisy) labels.

    Examples
    --------
    >>> lp = np.log(np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]]))
    >>> margin_losses(lp, np.array([1, 1])).round(4).tolist()
    [1.2528, 0.1335]
    """
    log_probs = np.asarray(log_probs, dtype=float)
    labels = np.asarray(labels, dtype=int)
    picked = log_probs[np.arange(len(labels)), labels]
    return log_probs.max(axis=1) - picked


def mean_margin_noise(log_probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean margin loss of a client's samples (see :func:`margin_losses`).

    0 when the model agrees with every label; large when it confidently disagrees with many.

    Examples
    --------
    >>> lp = np.log(np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]]))
    >>> round(mean_margin_noise(lp, np.array([0, 1])), 4)  # (0 + log(0.4/0.35)) / 2
    0.0668
    """
    margins = margin_losses(log_probs, labels)
    if margins.size == 0 or not np.all(np.isfinite(margins)):
        return float("nan")
    return float(margins.mean())


def loss_mixture_noise(
    losses: np.ndarray, *, seed: int = 0, min_separation: float = 1.0, bic_check: bool = False
) -> float:
    """Noisy fraction from a 2-component Gaussian mixture on per-sample losses (FedCorr).

    Fits ``sklearn.mixture.GaussianMixture(2)`` to the losses and returns the share of samples
    whose posterior favours the component with the larger mean. Returns 0 when the two means are
    closer than ``min_separation`` pooled standard deviations (one population, no noisy mode) or,
    with ``bic_check``, when a 1-component fit has the lower (better) BIC.

    The BIC check makes a Gaussian sample with one mode read 0 (without it, the mixture splits
    one bell curve in two), but real loss distributions are skewed, and on ``noisy_hospitals`` it
    zeroed noisy clients: Spearman's rho against the true flipped fraction fell from 0.06 / 0.52
    / 0.72 to -0.22 / -0.27 / 0.08 after 5 / 15 / 30 FedAvg rounds (``benchmarks/estimators.py``).
    So it is off by default, as in FedCorr.

    Parameters
    ----------
    losses : ndarray, shape (N,)
        Per-sample losses (cross-entropy or :func:`margin_losses`).
    seed : int
        ``random_state`` of the mixture fit.
    min_separation : float
        Required distance between the component means, in pooled standard deviations.
    bic_check : bool
        Also return 0 when one component explains the losses better (BIC).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> losses = np.concatenate([rng.normal(0.1, 0.05, 70), rng.normal(3.0, 0.5, 30)])
    >>> round(loss_mixture_noise(losses), 2)
    0.3
    """
    from sklearn.mixture import GaussianMixture

    losses = np.asarray(losses, dtype=float).reshape(-1, 1)
    if losses.shape[0] < 4 or not np.all(np.isfinite(losses)):
        return float("nan")
    if float(losses.std()) < 1e-12:
        return 0.0
    gmm = GaussianMixture(n_components=2, random_state=seed, reg_covar=1e-4, max_iter=200)
    gmm.fit(losses)
    if bic_check:
        single = GaussianMixture(n_components=1, reg_covar=1e-4).fit(losses)
        if single.bic(losses) <= gmm.bic(losses):
            return 0.0
    means = gmm.means_.ravel()
    stds = np.sqrt(gmm.covariances_.ravel())
    high = int(np.argmax(means))
    if abs(means[1] - means[0]) < min_separation * float(np.sqrt(np.mean(stds**2))):
        return 0.0
    return float(np.mean(gmm.predict_proba(losses)[:, high] > 0.5))


def gradient_noise_ratio(per_sample_grads: np.ndarray) -> float:
    r"""Gradient noise ratio :math:`\operatorname{tr}\Sigma / \lVert G \rVert^2` of one client.

    With per-sample gradients :math:`g_i` (rows), :math:`G = \frac1N\sum_i g_i` and
    :math:`\operatorname{tr}\Sigma = \frac1{N-1}\sum_i \lVert g_i - G\rVert^2`. This is
    McCandlish et al.'s :math:`B_{\mathrm{simple}}` measured on one client: the batch size at
    which gradient noise and signal are equal. Mislabelled samples pull in incoherent directions,
    so noise raises it.

    Examples
    --------
    >>> gradient_noise_ratio(np.array([[1.0, 0.0], [3.0, 0.0]]))  # G=(2,0), trΣ = (1+1)/1
    0.5
    """
    grads = np.asarray(per_sample_grads, dtype=float)
    if grads.ndim != 2 or grads.shape[0] < 2:
        raise ValueError("per_sample_grads: expected an array of shape (N >= 2, P)")
    mean = grads.mean(axis=0)
    trace = float(((grads - mean) ** 2).sum() / (grads.shape[0] - 1))
    signal = float(mean @ mean)
    if signal <= 0:
        return float("inf")
    return trace / signal
