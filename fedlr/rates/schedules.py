r"""Round-indexed learning-rate schedules: one rate multiplier per server round.

What a schedule is
------------------
A round-indexed schedule maps a 1-based server round :math:`r = 1, \dots, R` to a rate
*multiplier*; the server multiplies the clients' base rate by it before sending the round's
configuration, so a client's rate is built one bounded factor at a time (DESIGN.md)::

    lr[k, r] = base * schedule(r) * noise_factor[k] * coupling_factor[k]

:func:`round_multipliers` gives the list ``[schedule(1), ..., schedule(R)]`` for one of
``SCHEDULES``; :class:`RoundMultipliers` is the same sequence read lazily (what the server
uses: a round's multiplier is computed when that round is configured, never all up front).
The classic decays (``step``, ``exponential``, ``cosine``, ``warm-restarts``,
``cyclical``, ``one-cycle``) are not re-derived here: they are read off PyTorch's own
``torch.optim.lr_scheduler`` classes, stepped once per round on a throwaway optimizer with
rate 1, so fedlr's multipliers are exactly torch's rates.

Cosine phases for continual learning
------------------------------------
``phases`` restarts the rate at every task boundary: re-warm, then re-decay (Gupta et al. 2023,
"Continual Pre-Training of Large Language Models: How to (re)warm your model?"; Ibrahim et al.
2024, "Simple and Scalable Strategies to Continually Pre-train Large Language Models"). Within
phase :math:`p` of length :math:`L_p`, warm-up :math:`W`, peak :math:`\eta_p = \gamma^p
\eta_{\max}` (``peak_decay`` :math:`\gamma \le 1`) and floor :math:`\eta_{\min}`, the phase-local
step :math:`s = 0, \dots, L_p - 1` gets (:func:`phase_lr`)

.. math::

    \eta(s) = \begin{cases}
        \eta_{\min} + (\eta_p - \eta_{\min})\,\dfrac{s + 1}{W} & s < W, \\[1ex]
        \eta_{\min} + \tfrac12 (\eta_p - \eta_{\min})
            \left(1 + \cos\dfrac{\pi (s - W)}{L_p - W}\right) & s \ge W,
    \end{cases}

the cosine of SGDR (Loshchilov & Hutter 2017, "SGDR: Stochastic Gradient Descent with Warm
Restarts") with a linear warm-up in front. :func:`cosine_phases` lays the phases out from the
rounds at which tasks start, and :func:`phase_ends` gives the rounds at which a caller keeps a
snapshot.

Why a closed form
-----------------
The multiplier of a round is computed from its phase-local step, never by stepping a scheduler,
so a reset cannot overshoot. Stepping does: Avalanche's ``LRSchedulerPlugin(reset_lr=True,
reset_scheduler=True)`` resets an experience by writing ``base_lrs`` into the parameter groups
and setting ``last_epoch = 0``, but chainable schedulers such as ``LinearLR`` multiply the
*current* rate, so a warm-up of 0.25, 0.5, 0.75, 1.0 runs at 1.0, 2.0, 3.0, 4.0 in the second
experience (a 4x spike; measured with torch 2.13).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Any, overload

import torch

from fedlr.config import SCHEDULE_MODIFIERS
from fedlr.rates._checks import _choice, _integer
from fedlr.rates._checks import _number as _real

# constant, then the schedules a strategy names as a modifier (+step, +cosine, ..., +phases)
SCHEDULES = ("constant", *SCHEDULE_MODIFIERS)
CYCLIC_MODES = ("triangular", "triangular2", "exp_range")
ANNEAL_STRATEGIES = ("cos", "linear")

# The keyword arguments each schedule takes (besides num_rounds), in the order they are listed.
_PARAMS: dict[str, tuple[str, ...]] = {
    "constant": (),
    "step": ("step_size", "gamma"),
    "exponential": ("gamma",),
    "cosine": ("t_max", "floor"),
    "warm-restarts": ("t_0", "t_mult", "floor"),
    "cyclical": ("step_size_up", "step_size_down", "mode", "gamma", "floor"),
    "one-cycle": (
        "pct_start",
        "anneal_strategy",
        "div_factor",
        "final_div_factor",
        "three_phase",
    ),
    "phases": ("starts", "warmup", "peak", "floor", "peak_decay"),
}


def _fail(name: str, allowed: str, value: object) -> ValueError:
    return ValueError(f"{name}: expected {allowed}, got {value!r}")


def _rate(name: str, value: object) -> float:
    return _real(name, value, "a finite number >= 0", lambda v: v >= 0)


def _decay(name: str, value: object) -> float:
    return _real(name, value, "a number in (0, 1]", lambda v: 0 < v <= 1)


def _below(name: str, value: object, length: int) -> int:
    """``value`` as an int if it is an integer (not a bool) in ``[0, length - 1]``."""
    if isinstance(value, bool) or not isinstance(value, Integral) or not 0 <= int(value) < length:
        raise _fail(name, f"an integer in [0, length - 1 = {length - 1}]", value)
    return int(value)


def _check_phase(length: object, warmup: object, peak: object, floor: object) -> None:
    """Validate the shape of one phase: ``0 <= warmup < length``, ``0 <= floor <= peak``."""
    length = _integer("length", length, 1)
    _below("warmup", warmup, length)
    peak = _rate("peak", peak)
    _real("floor", floor, f"a finite number in [0, peak = {peak}]", lambda v: 0 <= v <= peak)


def phase_lr(step: int, *, length: int, warmup: int, peak: float, floor: float) -> float:
    r"""The rate at phase-local step ``step`` of one warm-up + cosine phase.

    .. math::

        \eta(s) = \begin{cases}
            f + (p - f)\,(s + 1)/W & s < W \\
            f + \tfrac12 (p - f)\,\bigl(1 + \cos(\pi (s - W)/(L - W))\bigr) & s \ge W
        \end{cases}

    with :math:`L` = ``length``, :math:`W` = ``warmup``, :math:`p` = ``peak``, :math:`f` =
    ``floor``: the cosine of SGDR (Loshchilov & Hutter 2017) behind a linear warm-up whose last
    step reaches the peak; re-warm and re-decay per task as in Gupta et al. 2023 and Ibrahim et
    al. 2024. The rate stays in ``[floor, peak]``; the floor itself would be reached at step
    ``L``, where the next phase restarts instead (as SGDR does).

    Parameters
    ----------
    step : int
        Phase-local step ``s``, ``0 <= s < length``.
    length : int
        Steps (rounds) in the phase, ``>= 1``.
    warmup : int
        Warm-up steps, ``0 <= warmup < length``; 0 starts the phase at the peak.
    peak, floor : float
        Highest and lowest rate, ``0 <= floor <= peak``.

    Returns
    -------
    float
        The rate, ``floor <= rate <= peak``.

    Examples
    --------
    >>> [round(phase_lr(s, length=6, warmup=2, peak=1.0, floor=0.0), 4) for s in range(6)]
    [0.5, 1.0, 1.0, 0.8536, 0.5, 0.1464]
    """
    _check_phase(length, warmup, peak, floor)
    _below("step", step, length)
    if step < warmup:
        rate = floor + (peak - floor) * (step + 1) / warmup
    else:
        rate = floor + 0.5 * (peak - floor) * (
            1 + math.cos(math.pi * (step - warmup) / (length - warmup))
        )
    # Clip the last ulp of rounding: the closed form never leaves [floor, peak].
    return min(peak, max(floor, rate))


@dataclass(frozen=True)
class Phase:
    """One warm-up + cosine phase of a continual schedule (see :func:`phase_lr`).

    Attributes
    ----------
    start : int
        First round of the phase (1-based).
    length : int
        Rounds in the phase.
    warmup : int
        Warm-up rounds, ``0 <= warmup < length``.
    peak, floor : float
        Highest and lowest multiplier, ``0 <= floor <= peak``.
    """

    start: int
    length: int
    warmup: int
    peak: float
    floor: float

    def __post_init__(self) -> None:
        _integer("start", self.start, 1)
        _check_phase(self.length, self.warmup, self.peak, self.floor)


def cosine_phases(
    num_rounds: int,
    starts: Sequence[int],
    *,
    warmup: int = 0,
    peak: float = 1.0,
    floor: float = 0.0,
    peak_decay: float = 1.0,
) -> list[Phase]:
    r"""Lay out one warm-up + cosine phase per task over ``num_rounds`` rounds.

    Phase :math:`k` starts at round ``starts[k]`` and runs to the round before the next start
    (the last phase to ``num_rounds``); its peak is :math:`\eta_{\max}\gamma^k` (``peak *
    peak_decay**k``, Ibrahim et al. 2024 re-warm to the same or a lower peak). A phase shorter
    than ``warmup + 1`` rounds warms up for ``length - 1`` rounds, so it still reaches its peak.

    Parameters
    ----------
    num_rounds : int
        Server rounds in the run, ``>= 1``.
    starts : sequence of int
        First round of each task: ``starts[0] == 1``, strictly increasing, ``<= num_rounds``.
    warmup : int
        Warm-up rounds of each phase, ``>= 0`` (clipped to ``length - 1``).
    peak : float
        Peak multiplier of the first phase, ``>= 0``.
    floor : float
        Floor of every phase, ``0 <= floor <=`` the last phase's peak.
    peak_decay : float
        Factor :math:`\gamma` from one phase's peak to the next, ``0 < peak_decay <= 1``.

    Returns
    -------
    list of Phase
        One per start, in order.

    Examples
    --------
    >>> for phase in cosine_phases(10, [1, 7], warmup=2, peak_decay=0.5):
    ...     print(phase)
    Phase(start=1, length=6, warmup=2, peak=1.0, floor=0.0)
    Phase(start=7, length=4, warmup=2, peak=0.5, floor=0.0)
    """
    num_rounds = _integer("num_rounds", num_rounds, 1)
    allowed = f"a non-empty increasing sequence of integers from 1 to num_rounds = {num_rounds}"
    if (
        isinstance(starts, str | bytes)
        or not isinstance(starts, Sequence)
        or not starts
        or starts[0] != 1
        or any(isinstance(s, bool) or not isinstance(s, Integral) for s in starts)
        or any(later <= earlier for earlier, later in zip(starts, starts[1:], strict=False))
        or starts[-1] > num_rounds
    ):
        raise _fail("starts", allowed, starts)
    warmup = _integer("warmup", warmup, 0)
    peak = _rate("peak", peak)
    peak_decay = _decay("peak_decay", peak_decay)
    peaks = [peak * peak_decay**k for k in range(len(starts))]
    lowest = min(peaks)
    floor = _real(
        "floor", floor, f"a finite number in [0, last peak = {lowest}]", lambda v: 0 <= v <= lowest
    )
    ends = [int(s) - 1 for s in starts[1:]] + [num_rounds]
    return [
        Phase(
            start=int(start),
            length=end - int(start) + 1,
            warmup=min(warmup, end - int(start)),
            peak=phase_peak,
            floor=floor,
        )
        for start, end, phase_peak in zip(starts, ends, peaks, strict=True)
    ]


def phase_ends(phases: Sequence[Phase]) -> list[int]:
    """The last round of each phase: where a caller keeps a snapshot of the model.

    Examples
    --------
    >>> phase_ends(cosine_phases(10, [1, 4, 8]))
    [3, 7, 10]
    """
    for phase in phases:
        if not isinstance(phase, Phase):
            raise _fail("phases", "a sequence of Phase", phase)
    return [phase.start + phase.length - 1 for phase in phases]


def _torch_scheduler(
    name: str, num_rounds: int, optimizer: torch.optim.Optimizer, params: dict[str, Any]
) -> torch.optim.lr_scheduler.LRScheduler:
    """Validate ``params`` and build torch's scheduler for ``name`` on ``optimizer`` (rate 1)."""
    sched = torch.optim.lr_scheduler
    if name == "step":
        return sched.StepLR(
            optimizer,
            step_size=_integer("step_size", params.get("step_size"), 1),
            gamma=_decay("gamma", params.get("gamma", 0.1)),
        )
    if name == "exponential":
        return sched.ExponentialLR(optimizer, gamma=_decay("gamma", params.get("gamma")))
    if name == "cosine":
        return sched.CosineAnnealingLR(
            optimizer,
            T_max=_integer("t_max", params.get("t_max", max(1, num_rounds - 1)), 1),
            eta_min=_real("floor", params.get("floor", 0.0), "a number in [0, 1]", _unit),
        )
    if name == "warm-restarts":
        return sched.CosineAnnealingWarmRestarts(
            optimizer,
            T_0=_integer("t_0", params.get("t_0"), 1),
            T_mult=_integer("t_mult", params.get("t_mult", 1), 1),
            eta_min=_real("floor", params.get("floor", 0.0), "a number in [0, 1]", _unit),
        )
    if name == "cyclical":
        down = params.get("step_size_down")
        return sched.CyclicLR(
            optimizer,
            base_lr=_real("floor", params.get("floor", 0.0), "a number in [0, 1]", _unit),
            max_lr=1.0,
            step_size_up=_integer("step_size_up", params.get("step_size_up"), 1),
            step_size_down=None if down is None else _integer("step_size_down", down, 1),
            mode=_choice("mode", params.get("mode", "triangular"), CYCLIC_MODES),  # type: ignore[arg-type]
            gamma=_decay("gamma", params.get("gamma", 1.0)),
            # Plain SGD without momentum has no momentum to cycle.
            cycle_momentum=False,
        )
    if name == "one-cycle":
        three_phase = params.get("three_phase", False)
        if not isinstance(three_phase, bool):
            raise _fail("three_phase", "True or False", three_phase)
        return sched.OneCycleLR(
            optimizer,
            max_lr=1.0,
            total_steps=num_rounds,
            pct_start=_real(
                "pct_start", params.get("pct_start", 0.3), "a number in (0, 1)", _open_unit
            ),
            anneal_strategy=_choice(  # type: ignore[arg-type]
                "anneal_strategy", params.get("anneal_strategy", "cos"), ANNEAL_STRATEGIES
            ),
            cycle_momentum=False,
            div_factor=_real(
                "div_factor", params.get("div_factor", 25.0), "a number >= 1", lambda v: v >= 1
            ),
            final_div_factor=_real(
                "final_div_factor",
                params.get("final_div_factor", 1e4),
                "a number >= 1",
                lambda v: v >= 1,
            ),
            three_phase=three_phase,
        )
    raise AssertionError(name)  # unreachable: round_multipliers checked the name


def _unit(value: float) -> bool:
    return 0 <= value <= 1


def _open_unit(value: float) -> bool:
    return 0 < value < 1


def round_multipliers(name: str, num_rounds: int, **params: Any) -> list[float]:
    """The rate multiplier of each round ``1..num_rounds`` under schedule ``name``.

    The torch schedules are read off ``torch.optim.lr_scheduler`` on a throwaway SGD optimizer
    with rate 1: round ``r`` gets the rate after ``r - 1`` calls of ``scheduler.step()``.

    * ``constant``: no parameters; every round 1.0.
    * ``step``: ``StepLR``; ``step_size`` (required), ``gamma`` (0.1). Round ``r`` gets
      ``gamma ** ((r - 1) // step_size)``.
    * ``exponential``: ``ExponentialLR``; ``gamma`` (required). Round ``r`` gets
      ``gamma ** (r - 1)``.
    * ``cosine``: ``CosineAnnealingLR``; ``t_max`` (``num_rounds - 1``: the last round is at
      the floor), ``floor`` as ``eta_min`` (0.0).
    * ``warm-restarts``: ``CosineAnnealingWarmRestarts`` (SGDR); ``t_0`` (required),
      ``t_mult`` (1), ``floor`` as ``eta_min`` (0.0).
    * ``cyclical``: ``CyclicLR`` from ``base_lr = floor`` (0.0) to ``max_lr = 1``, so round 1
      is at the floor; ``step_size_up`` (required), ``step_size_down`` (None: as up), ``mode``
      (``triangular``, ``triangular2`` or ``exp_range``), ``gamma`` (1.0, for ``exp_range``).
    * ``one-cycle``: ``OneCycleLR`` with ``max_lr = 1`` and ``total_steps = num_rounds``;
      ``pct_start`` (0.3), ``anneal_strategy`` (``cos`` or ``linear``), ``div_factor`` (25.0:
      round 1 is ``1 / div_factor``), ``final_div_factor`` (1e4), ``three_phase`` (False).
      With fewer than ~4 rounds torch's warm-up ends before round 1 and round 1 is near 1.
    * ``phases``: no torch; :func:`cosine_phases` with ``starts`` (required), ``warmup`` (0),
      ``peak`` (1.0), ``floor`` (0.0), ``peak_decay`` (1.0), and :func:`phase_lr` of each
      round's phase-local step.

    ``gamma`` is in ``(0, 1]`` and ``floor`` in ``[0, 1]`` for the torch schedules, so their
    multipliers stay in ``[0, 1]``. ``phases`` is a closed form of the phase-local step, never
    stepped, so a reset at a task boundary cannot overshoot (unlike a warm-up scheduler reset by
    Avalanche's ``LRSchedulerPlugin``, whose second phase runs at 1x, 2x, 3x, 4x).

    Parameters
    ----------
    name : str
        One of ``SCHEDULES``.
    num_rounds : int
        Server rounds, ``>= 1``.
    **params
        The schedule's parameters (list above); any other name is a ``ValueError``.

    Returns
    -------
    list of float
        ``num_rounds`` finite multipliers ``>= 0``; index ``r - 1`` is round ``r``.

    Examples
    --------
    >>> round_multipliers("step", 5, step_size=2, gamma=0.5)
    [1.0, 1.0, 0.5, 0.5, 0.25]
    >>> [round(m, 3) for m in round_multipliers("cosine", 5, floor=0.2)]
    [1.0, 0.883, 0.6, 0.317, 0.2]
    >>> multipliers = round_multipliers("phases", 7, starts=[1, 4], warmup=1, peak_decay=0.5)
    >>> [round(m, 3) for m in multipliers]
    [1.0, 1.0, 0.5, 0.5, 0.5, 0.375, 0.125]
    """
    return list(RoundMultipliers(name, num_rounds, **params))


class RoundMultipliers(Sequence[float]):
    """The multipliers of :func:`round_multipliers`, each computed when first read.

    Parameters are checked at construction; a round's value costs nothing until it is read, and
    reading round ``r`` steps torch's scheduler up to ``r`` (once: values are kept), so a run of
    10^6 rounds does no per-round work up front. ``phases`` and ``constant`` are closed forms.
    Equal, value for value, to ``round_multipliers(name, num_rounds, **params)``.
    """

    def __init__(self, name: str, num_rounds: int, **params: Any) -> None:
        self.name = _choice("name", name, SCHEDULES)
        self.num_rounds = _integer("num_rounds", num_rounds, 1)
        allowed = _PARAMS[self.name]
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            words = ", ".join(allowed) if allowed else "no parameters"
            raise ValueError(f"params: expected {words} for schedule {name!r}, got {unknown!r}")
        self._values: list[float] = []
        self._phases: list[Phase] = []
        self._optimizer: torch.optim.Optimizer | None = None
        self._scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        if self.name == "phases":
            if "starts" not in params:
                raise _fail("starts", "a sequence of the rounds at which tasks start", None)
            self._phases = cosine_phases(self.num_rounds, **params)
            self._starts = [phase.start for phase in self._phases]
        elif self.name != "constant":
            weight = torch.zeros(1, requires_grad=True)
            self._optimizer = torch.optim.SGD([weight], lr=1.0)
            self._scheduler = _torch_scheduler(self.name, self.num_rounds, self._optimizer, params)

    def __len__(self) -> int:
        return self.num_rounds

    @overload
    def __getitem__(self, index: int) -> float: ...

    @overload
    def __getitem__(self, index: slice) -> list[float]: ...

    def __getitem__(self, index: int | slice) -> float | list[float]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.num_rounds))]
        position = index + self.num_rounds if index < 0 else index
        if not 0 <= position < self.num_rounds:
            raise IndexError(f"round index {index} out of range for {self.num_rounds} rounds")
        if self.name == "constant":
            return 1.0
        if self.name == "phases":
            return self._check(position, self._phase_value(position))
        while len(self._values) <= position:
            self._values.append(self._check(len(self._values), self._torch_value()))
        return self._values[position]

    def _phase_value(self, position: int) -> float:
        # the phases tile rounds 1..num_rounds in order: the last one starting at or before
        phase = self._phases[bisect.bisect_right(self._starts, position + 1) - 1]
        return phase_lr(
            position + 1 - phase.start,
            length=phase.length,
            warmup=phase.warmup,
            peak=phase.peak,
            floor=phase.floor,
        )

    def _torch_value(self) -> float:
        assert self._optimizer is not None and self._scheduler is not None
        if self._values:
            # optimizer.step() first, or torch warns that the schedule skipped a value.
            self._optimizer.step()
            self._scheduler.step()
        return float(self._optimizer.param_groups[0]["lr"])

    @staticmethod
    def _check(position: int, multiplier: float) -> float:
        if not (math.isfinite(multiplier) and multiplier >= 0):  # pragma: no cover - invariant
            raise ValueError(
                f"params: expected a schedule with finite multipliers >= 0, "
                f"got {multiplier!r} at round {position + 1}"
            )
        return multiplier
