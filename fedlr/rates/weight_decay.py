r"""Weight decay for a client whose rate differs from the rate the decay was set for.

When a client's rate changes, its weight decay can either keep the per-step shrink
:math:`1 - \mathrm{lr}\cdot\lambda` fixed (``fixed-shrink``: Wang & Aitchison 2025's
timescale :math:`1/(\mathrm{lr}\,\lambda)`; unlike Composer's decoupled optimizers, whose shrink
still follows the schedule, it stays fixed across a schedule too) or let it follow the rate
(``lr-proportional``: what PyTorch's ``AdamW`` and SGD's L2 decay do with a fixed
``weight_decay``); :func:`coupled_weight_decay` gives the ``weight_decay`` for either
(``WEIGHT_DECAY_COUPLINGS``).
"""

from __future__ import annotations

from fedlr.rates._checks import _choice, _non_negative, _positive

WEIGHT_DECAY_COUPLINGS = ("fixed-shrink", "lr-proportional")


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
