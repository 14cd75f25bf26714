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

The rest of the family lives next door and is re-exported here, so ``coupling.<name>`` keeps
working: the gradient noise scale and the rates it gives (:mod:`fedlr.rates.noise_scale`:
:func:`~fedlr.rates.noise_scale.federated_terms`, :class:`~fedlr.rates.noise_scale.NoiseScaleEMA`,
:func:`~fedlr.rates.noise_scale.optimal_lr`, ...), decaying the rate or growing the batch
(:mod:`fedlr.rates.batch_schedule`: :func:`~fedlr.rates.batch_schedule.decay_or_grow`), and the
weight decay that goes with a changed rate (:mod:`fedlr.rates.weight_decay`:
:func:`~fedlr.rates.weight_decay.coupled_weight_decay`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np

from fedlr.rates._checks import _choice, _integer, _non_negative, _number, _positive
from fedlr.rates.batch_schedule import SCHEDULE_MODES, decay_or_grow
from fedlr.rates.noise_scale import (
    NoiseScaleEMA,
    adascale_gain,
    b_simple,
    federated_terms,
    optimal_lr,
    two_batch_terms,
)
from fedlr.rates.weight_decay import WEIGHT_DECAY_COUPLINGS, coupled_weight_decay

__all__ = [
    "COUPLING_RULES",
    "RULES",
    "SCHEDULE_MODES",
    "WEIGHT_DECAY_COUPLINGS",
    "AdamHyper",
    "NoiseScaleEMA",
    "adascale_gain",
    "b_simple",
    "batch_scale_factor",
    "coupled_weight_decay",
    "coupling_factors",
    "decay_or_grow",
    "federated_terms",
    "goyal_warmup_lr",
    "malladi_sqrt",
    "noise_temperature",
    "optimal_lr",
    "rule_for_optimizer",
    "rule_invariant",
    "scale_lr",
    "two_batch_terms",
]

RULES = ("linear", "sqrt")
COUPLING_RULES = ("linear", "sqrt", "optimal")
# The exponent alpha of B / B_ref for each rule.
_EXPONENT = {"linear": 1.0, "sqrt": 0.5}
_RULE_FOR_OPTIMIZER = {"sgd": "linear", "adam": "sqrt", "adagrad": "sqrt"}


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
