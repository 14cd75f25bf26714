r"""The gradient noise scale of a federation, and the rates it gives (McCandlish et al. 2018).

The power rules of :mod:`fedlr.rates.coupling` hold while the batch stays below the critical
batch size, which McCandlish et al. ("An Empirical Model of Large-Batch Training", appendix A)
approximate by the *simple noise scale*
:math:`B_{\mathrm{simple}} = \operatorname{tr}\Sigma / \lVert G\rVert^2` (:func:`b_simple`;
:math:`G` the full-batch gradient, :math:`\Sigma` the per-example covariance). It is estimated
without per-example gradients from squared norms of mean gradients at two batch sizes
(:func:`two_batch_terms`); in a federation the clients' gradients at the received weights are
the small batches and their example-weighted mean is the big one (:func:`federated_terms`).
Each term is unbiased but their ratio is not, so the terms are averaged over rounds and divided
afterwards (:class:`NoiseScaleEMA`). With non-IID clients the estimate includes their
heterogeneity: it is the noise scale of the federation, not of one client.

Given a noise scale, the best SGD rate at batch :math:`B` is
:math:`\mathrm{lr}_{\max} / (1 + B_{\mathrm{noise}}/B)` (:func:`optimal_lr`), linear in
:math:`B` far below the noise scale and flat far above it; AdaScale's gain (Johnson et al. 2020,
:func:`adascale_gain`) is the same ratio.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from numbers import Integral
from typing import Any

import numpy as np

from fedlr.rates._checks import _finite, _integer, _non_negative, _number, _positive


def two_batch_terms(
    sq_norm_small: float, sq_norm_big: float, b_small: float, b_big: float
) -> tuple[float, float]:
    r"""Unbiased estimates of :math:`\lVert G\rVert^2` and :math:`\operatorname{tr}\Sigma`.

    The mean gradient :math:`G_B` over :math:`B` independent examples has
    :math:`\mathbb{E}\lVert G_B\rVert^2 = \lVert G\rVert^2 + \operatorname{tr}\Sigma / B`, with
    :math:`G` the expected gradient and :math:`\Sigma` the per-example covariance. Two batch
    sizes :math:`b_s < b_b` at the same weights give two such equations; solving them
    (McCandlish et al. 2018, appendix A.1):

    .. math::

        \lVert G\rVert^2 \approx \frac{b_b \lVert G_{b_b}\rVert^2 - b_s \lVert G_{b_s}\rVert^2}
            {b_b - b_s}, \qquad
        \operatorname{tr}\Sigma \approx \frac{\lVert G_{b_s}\rVert^2 - \lVert G_{b_b}\rVert^2}
            {1/b_s - 1/b_b}.

    Each is unbiased, being linear in the squared norms; either may be negative for one draw.
    Their ratio is *not* unbiased: average the terms over draws (:class:`NoiseScaleEMA`), then
    divide (:func:`b_simple`).

    Parameters
    ----------
    sq_norm_small : float
        :math:`\lVert G_{b_s}\rVert^2`, the squared norm of the mean gradient over ``b_small``
        examples; finite, ``>= 0``.
    sq_norm_big : float
        :math:`\lVert G_{b_b}\rVert^2`, over ``b_big`` examples at the same weights.
    b_small, b_big : float
        The two batch sizes, ``0 < b_small < b_big`` (not necessarily integers: see
        :func:`federated_terms`).

    Returns
    -------
    (float, float)
        ``(g2, trace)``: the estimates of :math:`\lVert G\rVert^2` and
        :math:`\operatorname{tr}\Sigma`.

    Examples
    --------
    :math:`\lVert G\rVert^2 = (40 \cdot 2 - 10 \cdot 5)/30 = 1`,
    :math:`\operatorname{tr}\Sigma = (5 - 2)/(1/10 - 1/40) = 40`:

    >>> two_batch_terms(5.0, 2.0, 10, 40)
    (1.0, 40.0)
    """
    small = _non_negative("sq_norm_small", sq_norm_small)
    big = _non_negative("sq_norm_big", sq_norm_big)
    b_s = _positive("b_small", b_small)
    b_b = _number("b_big", b_big, f"a finite number > b_small ({b_small!r})", lambda v: v > b_s)
    g2 = (b_b * big - b_s * small) / (b_b - b_s)
    # (small - big) / (1/b_s - 1/b_b), without the rounding of two reciprocals.
    trace = (small - big) * b_s * b_b / (b_b - b_s)
    return g2, trace


def federated_terms(gradients: np.ndarray, batch_sizes: Sequence[int]) -> tuple[float, float]:
    r"""The two-batch estimates from one round of :math:`K \ge 2` clients' gradients.

    Client :math:`k` reports :math:`g_k`, its mean gradient over :math:`b_k` examples at the
    global weights it received. They give both batches of :func:`two_batch_terms`:

    * small: :math:`\bar S = \frac1K\sum_k \lVert g_k\rVert^2` has expectation
      :math:`\lVert G\rVert^2 + \operatorname{tr}\Sigma \cdot \frac1K\sum_k 1/b_k`, so it is a
      batch of the harmonic mean :math:`b_s = K / \sum_k b_k^{-1}`;
    * big: the example-weighted mean :math:`g = \sum_k b_k g_k / \sum_k b_k` is the mean
      gradient over all :math:`b_b = \sum_k b_k` examples, with expectation
      :math:`\lVert G\rVert^2 + \operatorname{tr}\Sigma / b_b`.

    With equal batches :math:`b` this is the cross-replica estimator of ``petuum/adaptdl``
    (``gradient_noise_scale.py``), :math:`\bar g` the plain mean:

    .. math::

        \lVert G\rVert^2 \approx \frac{K\lVert\bar g\rVert^2 - \bar S}{K - 1}, \qquad
        \operatorname{tr}\Sigma \approx \frac{b K (\bar S - \lVert\bar g\rVert^2)}{K - 1}.

    Federated caveats: the estimate treats the clients' examples as draws from one
    distribution. With non-IID clients the between-client spread of gradients is counted in
    :math:`\operatorname{tr}\Sigma`, so this is the noise scale *of the federation*, client
    heterogeneity included. And only gradients at the received weights are valid input: after
    several local steps a model delta is not a gradient at those weights (using deltas is a
    heuristic). Each client's gradient counts with its own :math:`b_k` here, whatever weights
    the aggregation uses.

    Parameters
    ----------
    gradients : ndarray, shape (K, P)
        Row :math:`k` is :math:`g_k`; finite, ``K >= 2``.
    batch_sizes : sequence of int, length K
        :math:`b_k`, the number of examples behind each row; integers ``>= 1``.

    Returns
    -------
    (float, float)
        ``(g2, trace)`` as in :func:`two_batch_terms`.

    Examples
    --------
    Two clients of one example, :math:`g = (1, 0), (3, 0)`: :math:`\bar S = 5`,
    :math:`\lVert\bar g\rVert^2 = 4`, so :math:`\lVert G\rVert^2 = (2\cdot4 - 5)/1 = 3` and
    :math:`\operatorname{tr}\Sigma = 1\cdot2\,(5 - 4)/1 = 2`:

    >>> federated_terms(np.array([[1.0, 0.0], [3.0, 0.0]]), [1, 1])
    (3.0, 2.0)
    """
    grads = np.asarray(gradients, dtype=float)
    if grads.ndim != 2 or grads.shape[0] < 2 or not np.all(np.isfinite(grads)):
        raise ValueError(
            f"gradients: expected a finite array of shape (K >= 2, P), got shape {grads.shape}"
            + ("" if grads.ndim != 2 or np.all(np.isfinite(grads)) else " with non-finite values")
        )
    num_clients = grads.shape[0]
    sizes = list(batch_sizes)
    if len(sizes) != num_clients or not all(
        isinstance(b, Integral) and not isinstance(b, bool) and b >= 1 for b in sizes
    ):
        raise ValueError(
            f"batch_sizes: expected K = {num_clients} integers >= 1, got {batch_sizes!r}"
        )
    weights = np.asarray(sizes, dtype=float)
    small = float(np.mean(np.einsum("kp,kp->k", grads, grads)))
    pooled = weights @ grads / weights.sum()
    big = float(pooled @ pooled)
    b_small = num_clients / float(np.sum(1.0 / weights))
    # Harmonic mean <= max(b) < sum(b) for K >= 2, so b_small < b_big always.
    return two_batch_terms(small, big, b_small, float(weights.sum()))


def b_simple(g2: float, trace: float) -> float:
    r"""The simple noise scale :math:`\operatorname{tr}\Sigma / \lVert G\rVert^2`.

    McCandlish et al. 2018, eq. 2.9: the batch at which the gradient's noise and signal are
    equal, an estimate of the critical batch size (exact for a Hessian proportional to the
    identity, where it equals :math:`B_{\mathrm{noise}}`).

    Parameters
    ----------
    g2, trace : float
        Estimates of :math:`\lVert G\rVert^2` and :math:`\operatorname{tr}\Sigma`; finite, of
        either sign (two-batch estimates of one draw can be negative).

    Returns
    -------
    float
        ``trace / g2``; ``nan`` when ``g2 <= 0`` or ``trace < 0``, where the estimate says
        nothing (no signal, or a noise estimate below zero).

    Examples
    --------
    >>> b_simple(1.0, 40.0), b_simple(-0.5, 40.0)
    (40.0, nan)
    """
    signal = _finite("g2", g2)
    noise = _finite("trace", trace)
    if signal <= 0 or noise < 0:
        return math.nan
    return noise / signal


class NoiseScaleEMA:
    r"""Bias-corrected moving averages of the two noise-scale terms, and their ratio.

    Each term is averaged on its own (Adam-style bias correction, so early values are not pulled
    towards 0), and :math:`B_{\mathrm{simple}}` is the ratio of the two averages, never an
    average of per-draw ratios: a per-draw ratio is biased, because the estimate of
    :math:`\lVert G\rVert^2` is noisy and sits in the denominator (with 2 clients of 32, the
    median per-round ratio was 12% low in the methods notes and 24% low on the regression case
    of ``benchmarks/noise_scale.py``, where the ratio of means is within 0.2%). EleutherAI's
    ``gpt-neox`` (``megatron/gradient_noise_scale/gradient_noise_scale.py``) does the same with
    :math:`\beta = 0.99`.

    .. math::

        m_t = \beta\, m_{t-1} + (1 - \beta)\, x_t, \quad m_0 = 0, \qquad
        \hat m_t = m_t / (1 - \beta^t).

    Parameters
    ----------
    decay : float
        :math:`\beta`, in ``[0, 1)``; 0 keeps the last values only.

    Attributes
    ----------
    count : int
        Number of updates so far.

    Examples
    --------
    With :math:`\beta = 1/2`: after (1, 10) the averages are (1, 10); after (3, 20) they are
    :math:`(1.75/0.75, 12.5/0.75)`, ratio :math:`12.5/1.75 = 7.14`, not the mean ratio
    :math:`(10 + 20/3)/2 = 8.33`:

    >>> ema = NoiseScaleEMA(decay=0.5)
    >>> ema.update(1.0, 10.0)
    10.0
    >>> round(ema.update(3.0, 20.0), 4)
    7.1429
    >>> NoiseScaleEMA.from_dict(ema.to_dict()).b_simple == ema.b_simple
    True
    """

    def __init__(self, decay: float = 0.9) -> None:
        self.decay = _number("decay", decay, "a number in [0, 1)", lambda v: 0 <= v < 1)
        self.count = 0
        self._g2_sum = 0.0  # the uncorrected averages m_t
        self._trace_sum = 0.0

    def __repr__(self) -> str:
        return (
            f"NoiseScaleEMA(decay={self.decay!r}, count={self.count}, g2={self.g2!r}, "
            f"trace={self.trace!r})"
        )

    def update(self, g2: float, trace: float) -> float:
        """Fold one draw's estimates in (from :func:`two_batch_terms` / :func:`federated_terms`).

        Parameters
        ----------
        g2, trace : float
            Finite, of either sign.

        Returns
        -------
        float
            :attr:`b_simple` after the update (``nan`` while the averaged ``g2 <= 0`` or
            ``trace < 0``).
        """
        signal = _finite("g2", g2)
        noise = _finite("trace", trace)
        self._g2_sum = self.decay * self._g2_sum + (1 - self.decay) * signal
        self._trace_sum = self.decay * self._trace_sum + (1 - self.decay) * noise
        self.count += 1
        value = self.b_simple
        assert value is not None
        return value

    def _corrected(self, total: float) -> float | None:
        if self.count == 0:
            return None
        return total / (1 - self.decay**self.count)

    @property
    def g2(self) -> float | None:
        r"""Bias-corrected average of :math:`\lVert G\rVert^2`; None before any update."""
        return self._corrected(self._g2_sum)

    @property
    def trace(self) -> float | None:
        r"""Bias-corrected average of :math:`\operatorname{tr}\Sigma`; None before any update."""
        return self._corrected(self._trace_sum)

    @property
    def b_simple(self) -> float | None:
        """Ratio of the averages (:func:`b_simple`); None before any update."""
        if self.count == 0:
            return None
        # The bias corrections cancel in the ratio; dividing the raw sums avoids rounding.
        return b_simple(self._g2_sum, self._trace_sum)

    def to_dict(self) -> dict[str, Any]:
        """State as plain JSON-able data (floats round-trip exactly through ``json``)."""
        return {
            "decay": self.decay,
            "count": self.count,
            "g2_sum": self._g2_sum,
            "trace_sum": self._trace_sum,
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> NoiseScaleEMA:
        """Restore from :meth:`to_dict`."""
        for key in ("decay", "count", "g2_sum", "trace_sum"):
            if key not in state:
                raise ValueError(f"state: expected the key {key!r}, got keys {sorted(state)}")
        ema = cls(decay=state["decay"])
        ema.count = _integer("state['count']", state["count"], 0)
        ema._g2_sum = _finite("state['g2_sum']", state["g2_sum"])
        ema._trace_sum = _finite("state['trace_sum']", state["trace_sum"])
        return ema


def optimal_lr(batch_size: float, lr_max: float, b_noise: float) -> float:
    r"""The best SGD rate at batch :math:`B`: :math:`\mathrm{lr}_{\max} / (1 + B_n/B)`.

    McCandlish et al. 2018, eq. 2.7 (for a quadratic loss: the step that most reduces the loss
    in expectation). Far below the noise scale (:math:`B \ll B_{\mathrm{noise}}`) it is
    :math:`\approx \mathrm{lr}_{\max} B / B_{\mathrm{noise}}`, the linear rule; far above it,
    :math:`\mathrm{lr}_{\max}`: a bigger batch no longer buys a bigger step.

    Parameters
    ----------
    batch_size : float
        :math:`B`, ``> 0``.
    lr_max : float
        :math:`\mathrm{lr}_{\max}`, the rate for noise-free gradients; ``> 0``.
    b_noise : float
        :math:`B_{\mathrm{noise}}` (in practice :math:`B_{\mathrm{simple}}`); ``>= 0``, 0 gives
        ``lr_max`` at every batch.

    Returns
    -------
    float
        The rate, in :math:`(0, \mathrm{lr}_{\max}]`.

    Examples
    --------
    :math:`1 / (1 + 300/100) = 0.25`:

    >>> optimal_lr(100, 1.0, 300.0)
    0.25
    """
    batch = _positive("batch_size", batch_size)
    rate = _positive("lr_max", lr_max)
    noise = _non_negative("b_noise", b_noise)
    return rate / (1.0 + noise / batch)


def adascale_gain(sigma2: float, mu2: float, scale: float) -> float:
    r"""AdaScale's gain ratio :math:`r = (\sigma^2 + \mu^2) / (\sigma^2/S + \mu^2)`.

    Johnson et al. 2020, "AdaScale SGD: A User-Friendly Algorithm for Distributed Training":
    training at :math:`S` times the base batch, AdaScale multiplies the base schedule's rate by
    :math:`r`, which lies in :math:`[1, S]` for :math:`S \ge 1`: :math:`S` (linear scaling)
    when noise dominates, 1 when the gradient is exact. Here :math:`\sigma^2` is the trace of
    the covariance of one *base-batch* gradient and :math:`\mu^2 = \lVert\nabla F\rVert^2`.
    (fairscale's ``AdaScale`` docstring swaps the two labels; the formula is the one above.)

    With :math:`\sigma^2 = \operatorname{tr}\Sigma / b` for base batch :math:`b`,
    :math:`r = (1 + B_{\mathrm{simple}}/b) / (1 + B_{\mathrm{simple}}/(S b))
    = \mathrm{optimal\_lr}(S b) / \mathrm{optimal\_lr}(b)` (:func:`optimal_lr` with
    :math:`B_{\mathrm{noise}} = B_{\mathrm{simple}}`).

    Parameters
    ----------
    sigma2 : float
        :math:`\sigma^2`, ``>= 0``.
    mu2 : float
        :math:`\mu^2`, ``>= 0``.
    scale : float
        :math:`S`, the batch multiple; ``> 0`` (below 1 the gain lies in :math:`[S, 1]`).

    Returns
    -------
    float
        :math:`r`; 1.0 when :math:`\sigma^2 = \mu^2 = 0`.

    Examples
    --------
    Base batch 32, :math:`\operatorname{tr}\Sigma = 96`, :math:`\lVert G\rVert^2 = 1`, so
    :math:`\sigma^2 = 3`; at :math:`S = 4`, :math:`r = 4 / (3/4 + 1) = 2.2857`, the ratio of
    :math:`1/(1 + 96/128)` to :math:`1/(1 + 96/32)`:

    >>> round(adascale_gain(96 / 32, 1.0, 4), 6)
    2.285714
    >>> round(optimal_lr(4 * 32, 1.0, 96.0) / optimal_lr(32, 1.0, 96.0), 6)
    2.285714
    """
    noise = _non_negative("sigma2", sigma2)
    signal = _non_negative("mu2", mu2)
    multiple = _positive("scale", scale)
    if noise == 0 and signal == 0:
        return 1.0
    gain = (noise + signal) / (noise / multiple + signal)
    # Keep the documented bounds exact under rounding.
    return min(max(gain, min(1.0, multiple)), max(1.0, multiple))
