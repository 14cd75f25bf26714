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
  changes little over those :math:`k` steps (they pair it with a warm-up for early training).
* ``sqrt`` — Adam (Malladi et al. 2022, "On the SDEs and Scaling Rules for Adaptive Gradient
  Algorithms"; earlier for SGD, Hoffer et al. 2017, "Train longer, generalize better", and
  Krizhevsky 2014): Adam's update is normalised by the gradient's second moment, so the batch's
  gradient *noise*, whose standard deviation falls as :math:`1/\sqrt{B}`, is what the rate must
  keep constant. Malladi et al.'s full rule also sets :math:`1-\beta_{1,2} \to k(1-\beta_{1,2})`
  and :math:`\epsilon \to \epsilon/\sqrt{k}`; fedlr scales the rate only.

Both rules hold while the batch stays below the critical batch size (McCandlish et al. 2018,
"An Empirical Model of Large-Batch Training"); estimators of that gradient noise scale belong in
this module too.

fedlr applies them when a client's local training spans ``P`` processes (``ddp-procs``): the
server's rate is for the configured ``batch-size`` :math:`B`, the processes together step on
global batches of :math:`P B`.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

RULES = ("linear", "sqrt")
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
