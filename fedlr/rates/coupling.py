r"""Coupling of learning rate and batch size: the rate a client uses for the batch it trains on.

The rules
---------
A rate :math:`\mathrm{lr}` tuned for batch size :math:`B_{\mathrm{ref}}` becomes, for batch size
:math:`B`,

.. math::

    \mathrm{lr}(B) = \mathrm{lr} \cdot \left(\frac{B}{B_{\mathrm{ref}}}\right)^{\alpha},
    \qquad \alpha = 1 \ (\texttt{linear}), \quad \alpha = \tfrac12 \ (\texttt{sqrt}).

* ``linear`` — SGD (Goyal et al. 2017, "Accurate, Large Minibatch SGD: Training ImageNet in
  1 Hour"): one SGD step on a batch :math:`kB` at rate :math:`k\,\mathrm{lr}` approximates
  :math:`k` steps on batches :math:`B` at rate :math:`\mathrm{lr}`, as long as the gradient
  changes little over those :math:`k` steps (they pair it with a warm-up for early training,
  :func:`goyal_warmup_lr`).
* ``sqrt`` — Adam (Malladi et al. 2022, "On the SDEs and Scaling Rules for Adaptive Gradient
  Algorithms"; earlier for SGD, Hoffer et al. 2017, "Train longer, generalize better", and
  Krizhevsky 2014): Adam's update is normalised by the gradient's second moment, so the batch's
  gradient *noise*, whose standard deviation falls as :math:`1/\sqrt{B}`, is what the rate must
  keep constant. Malladi et al.'s full rule also sets :math:`1-\beta_{1,2} \to k(1-\beta_{1,2})`
  and :math:`\epsilon \to \epsilon/\sqrt{k}` (:func:`malladi_sqrt`); :func:`scale_lr` scales the
  rate only.
* ``optimal`` — McCandlish et al. 2018 ("An Empirical Model of Large-Batch Training"): the best
  SGD rate at batch :math:`B` is :math:`\mathrm{lr}_{\max} / (1 + B_{\mathrm{noise}}/B)`
  (:func:`optimal_lr`), linear in :math:`B` far below the gradient noise scale
  :math:`B_{\mathrm{noise}}` and flat far above it. AdaScale's gain (Johnson et al. 2020,
  :func:`adascale_gain`) is the same ratio.

:func:`coupling_factors` gives each client of a round the factor of its rate under one of these
rules (``COUPLING_RULES``), clipped so that no client gets an unbounded rate;
:func:`rule_invariant` is what a rule keeps equal across batch sizes and
:func:`noise_temperature` is Smith et al.'s noise scale :math:`\mathrm{lr}(N/B - 1)/(1 - m)`.

fedlr applies the linear and square-root rules when a client's local training spans ``P``
processes (``ddp-procs``): the server's rate is for the configured ``batch-size`` :math:`B`, the
processes together step on global batches of :math:`P B`.

The gradient noise scale
------------------------
Both power rules hold while the batch stays below the critical batch size, which McCandlish et
al. approximate by the *simple noise scale*
:math:`B_{\mathrm{simple}} = \operatorname{tr}\Sigma / \lVert G\rVert^2` (:func:`b_simple`;
:math:`G` the full-batch gradient, :math:`\Sigma` the per-example covariance). It is estimated
without per-example gradients from squared norms of mean gradients at two batch sizes
(:func:`two_batch_terms`); in a federation the clients' gradients at the received weights are
the small batches and their example-weighted mean is the big one (:func:`federated_terms`).
Each term is unbiased but their ratio is not, so the terms are averaged over rounds and divided
afterwards (:class:`NoiseScaleEMA`). With non-IID clients the estimate includes their
heterogeneity: it is the noise scale of the federation, not of one client.

Schedules
---------
Smith et al. 2018 ("Don't Decay the Learning Rate, Increase the Batch Size"): multiplying the
batch by :math:`1/\alpha` trains like multiplying the rate by :math:`\alpha`, with fewer updates.
:func:`decay_or_grow` gives either form of a step schedule; in a federation "grow" means a
larger local batch, capped by the client's data.

Weight decay
------------
When a client's rate changes, its weight decay can either keep the per-step shrink
:math:`1 - \mathrm{lr}\cdot\lambda` fixed (``fixed-shrink``: Wang & Aitchison 2025's
timescale :math:`1/(\mathrm{lr}\,\lambda)`; unlike Composer's decoupled optimizers, whose shrink
still follows the schedule, it stays fixed across a schedule too) or let it follow the rate
(``lr-proportional``: what PyTorch's ``AdamW`` and SGD's L2 decay do with a fixed
``weight_decay``); :func:`coupled_weight_decay` gives the ``weight_decay`` for either
(``WEIGHT_DECAY_COUPLINGS``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np

RULES = ("linear", "sqrt")
COUPLING_RULES = ("linear", "sqrt", "optimal")
WEIGHT_DECAY_COUPLINGS = ("fixed-shrink", "lr-proportional")
SCHEDULE_MODES = ("decay", "grow")
# The exponent alpha of B / B_ref for each rule.
_EXPONENT = {"linear": 1.0, "sqrt": 0.5}
_RULE_FOR_OPTIMIZER = {"sgd": "linear", "adam": "sqrt", "adagrad": "sqrt"}


def _number(name: str, value: object, allowed: str, ok: Callable[[float], bool]) -> float:
    """``value`` as a float if it is a finite real number (not a bool) with ``ok(value)``.

    Otherwise ``ValueError("<name>: expected <allowed>, got <value!r>")``.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, Real)
        or not math.isfinite(value)
        or not ok(float(value))
    ):
        raise ValueError(f"{name}: expected {allowed}, got {value!r}")
    return float(value)


def _positive(name: str, value: object) -> float:
    return _number(name, value, "a finite number > 0", lambda v: v > 0)


def _finite(name: str, value: object) -> float:
    return _number(name, value, "a finite number", lambda v: True)


def _non_negative(name: str, value: object) -> float:
    return _number(name, value, "a finite number >= 0", lambda v: v >= 0)


def _integer(name: str, value: object, minimum: int) -> int:
    """``value`` as an int if it is an integer (not a bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _choice(name: str, value: object, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        words = ", ".join(allowed[:-1]) + " or " + allowed[-1]
        raise ValueError(f"{name}: expected {words}, got {value!r}")
    return value


def rule_for_optimizer(optimizer: str) -> str:
    """The batch-size scaling rule that fits an optimizer: ``sgd`` -> linear, ``adam`` -> sqrt.

    Adagrad, like Adam, divides by a running root of squared gradients, so it takes the
    square-root rule too.

    Examples
    --------
    >>> rule_for_optimizer("sgd"), rule_for_optimizer("adam")
    ('linear', 'sqrt')
    """
    if optimizer not in _RULE_FOR_OPTIMIZER:
        raise ValueError(f"optimizer: expected sgd, adam or adagrad, got {optimizer!r}")
    return _RULE_FOR_OPTIMIZER[optimizer]


def batch_scale_factor(batch_size: int, base_batch_size: int, rule: str) -> float:
    r"""The factor :math:`(B / B_{\mathrm{ref}})^{\alpha}` that moves a rate to another batch.

    Parameters
    ----------
    batch_size : int
        The batch :math:`B` the rate is wanted for; ``>= 1``.
    base_batch_size : int
        The batch :math:`B_{\mathrm{ref}}` the rate was set for; ``>= 1``.
    rule : str
        ``"linear"`` (:math:`\alpha = 1`, SGD) or ``"sqrt"`` (:math:`\alpha = 1/2`, Adam).

    Returns
    -------
    float
        The factor; exactly 1.0 when ``batch_size == base_batch_size``.

    Examples
    --------
    >>> batch_scale_factor(64, 16, "linear"), batch_scale_factor(64, 16, "sqrt")
    (4.0, 2.0)
    >>> batch_scale_factor(8, 32, "sqrt")
    0.5
    """
    for name, value in (("batch_size", batch_size), ("base_batch_size", base_batch_size)):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
    if rule not in _EXPONENT:
        raise ValueError(f"rule: expected {' or '.join(RULES)}, got {rule!r}")
    ratio = batch_size / base_batch_size
    return ratio if rule == "linear" else math.sqrt(ratio)


def scale_lr(lr: float, batch_size: int, base_batch_size: int, rule: str) -> float:
    r"""The rate for batch ``batch_size``, given rate ``lr`` for batch ``base_batch_size``.

    .. math::

        \mathrm{lr}(B) = \mathrm{lr} \cdot (B / B_{\mathrm{ref}})^{\alpha}

    Parameters
    ----------
    lr : float
        The rate set for ``base_batch_size``; finite and ``> 0``.
    batch_size, base_batch_size, rule
        As in :func:`batch_scale_factor`.

    Returns
    -------
    float
        The scaled rate; ``lr`` itself when the two batch sizes are equal.

    Examples
    --------
    Two processes with batches of 16 step on global batches of 32:

    >>> scale_lr(0.1, 32, 16, rule_for_optimizer("sgd"))
    0.2
    >>> round(scale_lr(0.001, 32, 16, rule_for_optimizer("adam")), 8)
    0.00141421
    """
    if isinstance(lr, bool) or not isinstance(lr, Real) or not 0 < lr < math.inf:
        raise ValueError(f"lr: expected a finite number > 0, got {lr!r}")
    return lr * batch_scale_factor(batch_size, base_batch_size, rule)


# ---------------------------------------------------------------------------------------------
# Gradient noise scale (McCandlish et al. 2018, "An Empirical Model of Large-Batch Training",
# appendix A)
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Rules
# ---------------------------------------------------------------------------------------------


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


def goyal_warmup_lr(base_lr: float, scale: float, step: int, warmup_steps: int) -> float:
    r"""Goyal et al.'s gradual warm-up from ``base_lr`` to ``scale * base_lr``.

    Goyal et al. 2017, "Accurate, Large Minibatch SGD": start at the small-batch rate and add a
    constant each step, reaching the linearly scaled rate after ``warmup_steps`` steps (5 epochs
    in the paper):

    .. math::

        \mathrm{lr}_t = \mathrm{lr}_0 \left(1 + (S - 1)\,\frac{\min(t, W)}{W}\right).

    Parameters
    ----------
    base_lr : float
        :math:`\mathrm{lr}_0`, ``> 0``.
    scale : float
        :math:`S`, ``> 0``; below 1 (a client whose batch is smaller than the reference) the
        rate warms *down*.
    step : int
        :math:`t`, ``>= 0``.
    warmup_steps : int
        :math:`W`, ``>= 0``; 0 jumps to ``scale * base_lr`` at once.

    Returns
    -------
    float
        The rate; exactly ``scale * base_lr`` from step ``warmup_steps`` on.

    Examples
    --------
    :math:`0.1 \cdot (1 + 3 \cdot 2/4) = 0.25`:

    >>> goyal_warmup_lr(0.1, 4.0, 0, 4), goyal_warmup_lr(0.1, 4.0, 2, 4)
    (0.1, 0.25)
    >>> goyal_warmup_lr(0.1, 4.0, 9, 4)
    0.4
    """
    rate = _positive("base_lr", base_lr)
    multiple = _positive("scale", scale)
    t = _integer("step", step, 0)
    length = _integer("warmup_steps", warmup_steps, 0)
    if t >= length:
        return rate * multiple
    return rate * (1.0 + (multiple - 1.0) * t / length)


@dataclass(frozen=True)
class AdamHyper:
    """Adam/RMSprop hyperparameters: rate, the two decay rates and epsilon."""

    lr: float
    beta1: float
    beta2: float
    eps: float


def malladi_sqrt(lr: float, beta1: float, beta2: float, eps: float, kappa: float) -> AdamHyper:
    r"""Malladi et al.'s square-root rule for Adam/RMSprop at batch :math:`\times\kappa`.

    Malladi et al. 2022, "On the SDEs and Scaling Rules for Adaptive Gradient Algorithms": the
    SDE of Adam stays the same when the batch grows by :math:`\kappa` and

    .. math::

        \mathrm{lr} \to \sqrt\kappa\,\mathrm{lr}, \qquad
        1 - \beta_i \to \kappa (1 - \beta_i), \qquad
        \epsilon \to \epsilon / \sqrt\kappa.

    Scaling the rate alone (:func:`scale_lr` with ``"sqrt"``) is the common shortcut.

    Parameters
    ----------
    lr : float
        The rate at the original batch; ``> 0``.
    beta1, beta2 : float
        In ``[0, 1)``.
    eps : float
        ``>= 0``.
    kappa : float
        The batch multiple; ``> 0``, and small enough that :math:`\kappa (1 - \beta_i) < 1`
        for both betas.

    Returns
    -------
    AdamHyper
        The scaled hyperparameters.

    Raises
    ------
    ValueError
        Also when :math:`\kappa (1 - \beta_i) \ge 1`: the rule leaves its range there (the new
        beta would be :math:`\le 0`).

    Examples
    --------
    Batch :math:`\times 4`: rate :math:`\times 2`, :math:`1 - 0.9 = 0.1 \to 0.4`,
    :math:`1 - 0.999 = 0.001 \to 0.004`, :math:`\epsilon / 2`:

    >>> h = malladi_sqrt(1e-3, 0.9, 0.999, 1e-8, 4.0)
    >>> h.lr, round(h.beta1, 12), round(h.beta2, 12), h.eps
    (0.002, 0.6, 0.996, 5e-09)
    """
    rate = _positive("lr", lr)
    b1 = _number("beta1", beta1, "a number in [0, 1)", lambda v: 0 <= v < 1)
    b2 = _number("beta2", beta2, "a number in [0, 1)", lambda v: 0 <= v < 1)
    epsilon = _non_negative("eps", eps)
    k = _positive("kappa", kappa)
    for name, beta in (("beta1", b1), ("beta2", b2)):
        if k * (1.0 - beta) >= 1.0:
            raise ValueError(
                f"kappa: expected kappa * (1 - {name}) < 1 with {name} = {beta!r}, i.e. "
                f"kappa < {1.0 / (1.0 - beta)!r}, got {kappa!r}"
            )
    root = math.sqrt(k)
    return AdamHyper(
        lr=rate * root,
        beta1=1.0 - k * (1.0 - b1),
        beta2=1.0 - k * (1.0 - b2),
        eps=epsilon / root,
    )


def rule_invariant(lr: float, batch_size: float, rule: str) -> float:
    r"""The quantity a power rule keeps equal across batch sizes.

    * ``linear``: :math:`\mathrm{lr}/B`, Smith et al.'s noise scale :math:`\mathrm{lr} N / B`
      up to the dataset size :math:`N` that all batch sizes share (:func:`noise_temperature`);
    * ``sqrt``: :math:`\mathrm{lr}/\sqrt B`, what fixes the SDE of Adam (Malladi et al. 2022).

    Parameters
    ----------
    lr : float
        ``> 0``.
    batch_size : float
        ``> 0``.
    rule : str
        ``"linear"`` or ``"sqrt"`` (``RULES``).

    Returns
    -------
    float
        The invariant.

    Examples
    --------
    >>> rule_invariant(0.4, 64, "linear") == rule_invariant(0.1, 16, "linear")
    True
    >>> rule_invariant(0.2, 64, "sqrt"), rule_invariant(0.1, 16, "sqrt")
    (0.025, 0.025)
    """
    rate = _positive("lr", lr)
    batch = _positive("batch_size", batch_size)
    kind = _choice("rule", rule, RULES)
    return rate / batch if kind == "linear" else rate / math.sqrt(batch)


def noise_temperature(
    lr: float, batch_size: int, dataset_size: int, momentum: float = 0.0
) -> float:
    r"""Smith et al.'s SGD noise scale :math:`g = \mathrm{lr}\,(N/B - 1)/(1 - m)`.

    Smith et al. 2018, "Don't Decay the Learning Rate, Increase the Batch Size": SGD with rate
    :math:`\mathrm{lr}`, batch :math:`B` drawn from :math:`N` examples and momentum :math:`m`
    follows an SDE whose noise scale is :math:`g`, :math:`\approx \mathrm{lr} N / (B (1 - m))`
    for :math:`B \ll N`. Runs with equal :math:`g` train alike per epoch.

    Parameters
    ----------
    lr : float
        ``> 0``.
    batch_size : int
        :math:`B`, ``1 <= B <= N``.
    dataset_size : int
        :math:`N`, ``>= batch_size``.
    momentum : float
        :math:`m`, in ``[0, 1)``.

    Returns
    -------
    float
        :math:`g`; 0 for full-batch training (:math:`B = N`).

    Examples
    --------
    :math:`0.1 \cdot (10000/100 - 1) / (1 - 0.9) = 99`:

    >>> round(noise_temperature(0.1, 100, 10_000, momentum=0.9), 9)
    99.0
    """
    rate = _positive("lr", lr)
    batch = _integer("batch_size", batch_size, 1)
    if (
        isinstance(dataset_size, bool)
        or not isinstance(dataset_size, Integral)
        or (dataset_size < batch)
    ):
        raise ValueError(
            f"dataset_size: expected an integer >= batch_size ({batch}), got {dataset_size!r}"
        )
    m = _number("momentum", momentum, "a number in [0, 1)", lambda v: 0 <= v < 1)
    return rate * (int(dataset_size) / batch - 1.0) / (1.0 - m)


def coupling_factors(
    batch_sizes: Sequence[int],
    reference: float,
    rule: str,
    *,
    b_noise: float | None = None,
    low: float = 0.05,
    high: float = 20.0,
) -> np.ndarray:
    r"""Per-client rate factors that put clients with different batch sizes at one noise scale.

    A rate tuned for batch ``reference`` :math:`B_{\mathrm{ref}}`, times the factor, is client
    :math:`k`'s rate for its batch :math:`b_k`:

    * ``linear``: :math:`b_k / B_{\mathrm{ref}}` (Goyal et al. 2017);
    * ``sqrt``: :math:`\sqrt{b_k / B_{\mathrm{ref}}}` (Malladi et al. 2022);
    * ``optimal``: :math:`\mathrm{optimal\_lr}(b_k) / \mathrm{optimal\_lr}(B_{\mathrm{ref}})
      = (1 + B_{\mathrm{noise}}/B_{\mathrm{ref}}) / (1 + B_{\mathrm{noise}}/b_k)`
      (McCandlish et al. 2018, :func:`optimal_lr`; AdaScale's gain at
      :math:`S = b_k/B_{\mathrm{ref}}`).

    Every factor is non-decreasing in :math:`b_k`, and exactly 1.0 where
    :math:`b_k = B_{\mathrm{ref}}`. Factors are clipped to ``[low, high]``: whatever batch a
    client reports, its rate stays bounded.

    Parameters
    ----------
    batch_sizes : sequence of int, length K
        The clients' batch sizes; numbers ``> 0``.
    reference : float
        :math:`B_{\mathrm{ref}}`, the batch the base rate was tuned for; ``> 0``.
    rule : str
        ``"linear"``, ``"sqrt"`` or ``"optimal"`` (``COUPLING_RULES``).
    b_noise : float or None
        :math:`B_{\mathrm{noise}}` (e.g. :attr:`NoiseScaleEMA.b_simple`), ``>= 0``; required by
        ``"optimal"``, ignored by the other rules.
    low, high : float
        Bounds of the factor, ``0 < low <= 1 <= high``.

    Returns
    -------
    ndarray, shape (K,)
        The factors.

    Examples
    --------
    :math:`(1 + 64/32)/(1 + 64/b)`: :math:`3/9`, 1, :math:`3/1.5`:

    >>> coupling_factors([8, 32, 128], 32, "linear").tolist()
    [0.25, 1.0, 4.0]
    >>> coupling_factors([8, 32, 128], 32, "sqrt").tolist()
    [0.5, 1.0, 2.0]
    >>> coupling_factors([8, 32, 128], 32, "optimal", b_noise=64.0).round(4).tolist()
    [0.3333, 1.0, 2.0]
    >>> coupling_factors([1, 32, 4096], 32, "linear", low=0.1, high=10.0).tolist()
    [0.1, 1.0, 10.0]
    """
    ref = _positive("reference", reference)
    kind = _choice("rule", rule, COUPLING_RULES)
    lower = _number("low", low, "a number in (0, 1]", lambda v: 0 < v <= 1)
    upper = _number("high", high, "a finite number >= 1", lambda v: v >= 1)
    noise = 0.0
    if kind == "optimal":
        if b_noise is None:
            raise ValueError("b_noise: expected a finite number >= 0 for rule 'optimal', got None")
        noise = _non_negative("b_noise", b_noise)
    sizes = list(batch_sizes)
    for b in sizes:
        if isinstance(b, bool) or not isinstance(b, Real) or not 0 < b < math.inf:
            raise ValueError(f"batch_sizes: expected numbers > 0, got {batch_sizes!r}")
    batches = np.asarray(sizes, dtype=float)
    ratio = batches / ref
    if kind == "linear":
        factors = ratio
    elif kind == "sqrt":
        factors = np.sqrt(ratio)
    else:
        factors = (1.0 + noise / ref) / (1.0 + noise / batches)
    factors = np.where(batches == ref, 1.0, factors)
    return np.clip(factors, lower, upper)


# ---------------------------------------------------------------------------------------------
# Schedules: decay the rate or grow the batch (Smith et al. 2018)
# ---------------------------------------------------------------------------------------------


def decay_or_grow(
    round_: int,
    milestones: Sequence[int],
    factor: float,
    *,
    base_lr: float,
    base_batch: int,
    max_batch: int,
    mode: str,
) -> tuple[float, int]:
    r"""``(lr, batch)`` in a round of a step schedule that decays the rate or grows the batch.

    Smith et al. 2018, "Don't Decay the Learning Rate, Increase the Batch Size": multiplying the
    batch by :math:`1/\alpha` instead of the rate by :math:`\alpha` gives the same training
    curve per epoch, in fewer updates. After :math:`m` milestones (round :math:`\ge` milestone):

    * ``"decay"``: :math:`(\mathrm{lr}_0 \alpha^m,\ B_0)`;
    * ``"grow"``: :math:`B = \min(B_{\max}, \operatorname{round}(B_0/\alpha^m))`, and the growth
      that the cap :math:`B_{\max}` (e.g. the client's data size) or the rounding prevents is
      taken as rate decay: :math:`\mathrm{lr} = \mathrm{lr}_0 \alpha^m B / B_0`.

    So :math:`\mathrm{lr}/B` is the same in both modes at every round, and with it Smith's
    :math:`B \ll N` noise scale :math:`\mathrm{lr} N / B`. The exact
    :func:`noise_temperature` :math:`\mathrm{lr}(N/B - 1)` differs between the modes by
    :math:`\mathrm{lr}_0\alpha^m (B/B_0 - 1)`, a share :math:`(B - B_0)/(N - B_0)` of it.

    Parameters
    ----------
    round_ : int
        The round, ``>= 1``.
    milestones : sequence of int
        Rounds at which the schedule steps; integers ``>= 1``, strictly increasing (may be
        empty).
    factor : float
        :math:`\alpha`, in ``(0, 1)``.
    base_lr : float
        :math:`\mathrm{lr}_0`, ``> 0``.
    base_batch : int
        :math:`B_0`, ``>= 1``.
    max_batch : int
        :math:`B_{\max}`, ``>= base_batch``.
    mode : str
        ``"decay"`` or ``"grow"``.

    Returns
    -------
    (float, int)
        The rate and the batch size.

    Examples
    --------
    Milestones 10 and 20, :math:`\alpha = 1/2`, :math:`B_0 = 32`; in round 20 the batch would
    be 128 but the cap is 100, so the rate takes the rest: :math:`0.1 \cdot 0.25 \cdot 100/32`:

    >>> decay_or_grow(20, [10, 20], 0.5, base_lr=0.1, base_batch=32, max_batch=100, mode="decay")
    (0.025, 32)
    >>> decay_or_grow(10, [10, 20], 0.5, base_lr=0.1, base_batch=32, max_batch=100, mode="grow")
    (0.1, 64)
    >>> decay_or_grow(20, [10, 20], 0.5, base_lr=0.1, base_batch=32, max_batch=100, mode="grow")
    (0.078125, 100)
    """
    now = _integer("round_", round_, 1)
    steps = list(milestones)
    if not all(
        isinstance(s, Integral) and not isinstance(s, bool) and s >= 1 for s in steps
    ) or any(a >= b for a, b in zip(steps, steps[1:], strict=False)):
        raise ValueError(
            f"milestones: expected strictly increasing integers >= 1, got {milestones!r}"
        )
    alpha = _number("factor", factor, "a number in (0, 1)", lambda v: 0 < v < 1)
    rate = _positive("base_lr", base_lr)
    batch0 = _integer("base_batch", base_batch, 1)
    if isinstance(max_batch, bool) or not isinstance(max_batch, Integral) or max_batch < batch0:
        raise ValueError(
            f"max_batch: expected an integer >= base_batch ({batch0}), got {max_batch!r}"
        )
    kind = _choice("mode", mode, SCHEDULE_MODES)
    passed = sum(1 for s in steps if now >= s)
    decayed = alpha**passed
    if kind == "decay":
        return rate * decayed, batch0
    cap = int(max_batch)
    # base / decayed >= cap, written so that an underflowed decayed = 0 takes the cap.
    batch = cap if batch0 >= cap * decayed else min(cap, round(batch0 / decayed))
    # batch / batch0 first: exactly 1.0 (the decay schedule's rate) while the batch has not grown.
    return rate * decayed * (batch / batch0), batch


# ---------------------------------------------------------------------------------------------
# Weight decay coupling
# ---------------------------------------------------------------------------------------------


def coupled_weight_decay(weight_decay: float, lr: float, base_lr: float, coupling: str) -> float:
    r"""The weight decay for a client at rate ``lr`` when ``weight_decay`` was set for ``base_lr``.

    Decoupled decay multiplies the weights by :math:`1 - \mathrm{lr}\,\lambda` each step
    (PyTorch ``AdamW``; SGD's L2 ``weight_decay`` does the same when the gradient is zero). Two
    conventions, which differ as soon as rates differ:

    * ``"fixed-shrink"``: keep :math:`\mathrm{lr}\,\lambda = \mathrm{lr}_0 \lambda_0`, i.e.
      :math:`\lambda = \lambda_0 \mathrm{lr}_0 / \mathrm{lr}`, so the per-step shrink is the
      same at every rate and every round of a schedule (Wang & Aitchison 2025: the timescale
      :math:`1/(\mathrm{lr}\,\lambda)` is what to keep; Composer's ``DecoupledSGDW`` and
      ``DecoupledAdamW`` differ: their shrink :math:`\lambda_0\,\mathrm{lr}_t/\mathrm{lr}_0`
      still follows the schedule). For Adagrad, whose ``weight_decay`` is an L2 term divided by
      its accumulator, neither is an exact shrink;
    * ``"lr-proportional"``: :math:`\lambda = \lambda_0`, so the shrink
      :math:`\mathrm{lr}\,\lambda_0` is proportional to the rate (PyTorch ``AdamW``'s implicit
      coupling, and SGD's L2 decay): a rate schedule or rule then schedules the decay too.

    Parameters
    ----------
    weight_decay : float
        :math:`\lambda_0`, ``>= 0``.
    lr : float
        The client's rate, ``> 0``.
    base_lr : float
        :math:`\mathrm{lr}_0`, the rate ``weight_decay`` was set for; ``> 0``.
    coupling : str
        ``"fixed-shrink"`` or ``"lr-proportional"`` (``WEIGHT_DECAY_COUPLINGS``).

    Returns
    -------
    float
        :math:`\lambda` to give the client's optimizer.

    Examples
    --------
    A client at twice the rate: :math:`0.01 \cdot 0.1/0.2 = 0.005` keeps the shrink
    :math:`1 - 0.2 \cdot 0.005 = 1 - 0.1 \cdot 0.01`:

    >>> coupled_weight_decay(0.01, 0.2, 0.1, "fixed-shrink")
    0.005
    >>> coupled_weight_decay(0.01, 0.2, 0.1, "lr-proportional")
    0.01
    """
    decay = _non_negative("weight_decay", weight_decay)
    rate = _positive("lr", lr)
    rate0 = _positive("base_lr", base_lr)
    kind = _choice("coupling", coupling, WEIGHT_DECAY_COUPLINGS)
    if kind == "lr-proportional":
        return decay
    return decay * rate0 / rate
