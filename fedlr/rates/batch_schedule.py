r"""Decay the rate or grow the batch: one step schedule in either form (Smith et al. 2018).

Smith et al. 2018 ("Don't Decay the Learning Rate, Increase the Batch Size"): multiplying the
batch by :math:`1/\alpha` trains like multiplying the rate by :math:`\alpha`, with fewer updates.
:func:`decay_or_grow` gives either form of a step schedule; in a federation "grow" means a
larger local batch, capped by the client's data.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral

from fedlr.rates._checks import _choice, _integer, _number, _positive

SCHEDULE_MODES = ("decay", "grow")


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
    :func:`~fedlr.rates.coupling.noise_temperature` :math:`\mathrm{lr}(N/B - 1)` differs
    between the modes by :math:`\mathrm{lr}_0\alpha^m (B/B_0 - 1)`, a share
    :math:`(B - B_0)/(N - B_0)` of it.

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
