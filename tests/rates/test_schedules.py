"""Tests for fedlr/rates/schedules.py: warm-up + cosine phases and the torch-backed schedules."""

from __future__ import annotations

import doctest
import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fedlr.rates.schedules
from fedlr.rates.schedules import (
    SCHEDULES,
    Phase,
    RoundMultipliers,
    cosine_phases,
    phase_ends,
    phase_lr,
    round_multipliers,
)


def torch_rates(make_scheduler, num_rounds):
    """Step a torch scheduler on its own SGD optimizer (rate 1): the rate of rounds 1..R."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = make_scheduler(optimizer)
    rates = []
    for _ in range(num_rounds):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


# ---------------------------------------------------------------------------------------------
# phase_lr, worked by hand
# ---------------------------------------------------------------------------------------------


def test_warmup_climbs_linearly_to_the_peak():
    # floor 0.2, peak 1.0, warm-up 4: 0.2 + 0.8 * (s + 1) / 4.
    kwargs = dict(length=10, warmup=4, peak=1.0, floor=0.2)
    assert phase_lr(0, **kwargs) == pytest.approx(0.4)
    assert phase_lr(1, **kwargs) == pytest.approx(0.6)
    assert phase_lr(3, **kwargs) == 1.0  # the warm-up's last step is the peak


def test_cosine_starts_at_peak_passes_the_midpoint_and_ends_near_the_floor():
    # warm-up 2, then a cosine over length - warmup = 8 steps: s = 2 + 4 is its midpoint.
    kwargs = dict(length=10, warmup=2, peak=0.8, floor=0.2)
    assert phase_lr(2, **kwargs) == 0.8
    assert phase_lr(6, **kwargs) == pytest.approx((0.8 + 0.2) / 2)
    # last step: 0.2 + 0.3 * (1 + cos(7 pi / 8)), just above the floor.
    last = phase_lr(9, **kwargs)
    assert last == pytest.approx(0.2 + 0.3 * (1 + math.cos(7 * math.pi / 8)))
    assert 0.2 < last < 0.23


def test_no_warmup_starts_at_the_peak_and_a_single_step_phase_is_the_peak():
    assert phase_lr(0, length=5, warmup=0, peak=0.5, floor=0.0) == 0.5
    assert phase_lr(0, length=1, warmup=0, peak=0.5, floor=0.1) == 0.5


def test_flat_phase_when_floor_equals_peak():
    assert {phase_lr(s, length=4, warmup=1, peak=0.3, floor=0.3) for s in range(4)} == {0.3}


@pytest.mark.parametrize(
    ("kwargs", "arg"),
    [
        (dict(step=5, length=5, warmup=0, peak=1.0, floor=0.0), "step"),
        (dict(step=-1, length=5, warmup=0, peak=1.0, floor=0.0), "step"),
        (dict(step=0, length=0, warmup=0, peak=1.0, floor=0.0), "length"),
        (dict(step=0, length=5, warmup=5, peak=1.0, floor=0.0), "warmup"),
        (dict(step=0, length=5, warmup=0, peak=-1.0, floor=0.0), "peak"),
        (dict(step=0, length=5, warmup=0, peak=1.0, floor=2.0), "floor"),
        (dict(step=0, length=5, warmup=0, peak=math.nan, floor=0.0), "peak"),
        (dict(step=True, length=5, warmup=0, peak=1.0, floor=0.0), "step"),
    ],
)
def test_phase_lr_rejects_bad_arguments_by_name(kwargs, arg):
    step = kwargs.pop("step")
    with pytest.raises(ValueError, match=rf"^{arg}: expected "):
        phase_lr(step, **kwargs)


# ---------------------------------------------------------------------------------------------
# cosine_phases and phase_ends
# ---------------------------------------------------------------------------------------------


def test_cosine_phases_layout_peaks_and_clipped_warmup():
    phases = cosine_phases(12, [1, 6, 11], warmup=3, peak=0.8, floor=0.1, peak_decay=0.5)
    assert [p.start for p in phases] == [1, 6, 11]
    assert [p.length for p in phases] == [5, 5, 2]
    assert [p.peak for p in phases] == [0.8, 0.4, 0.2]
    assert [p.warmup for p in phases] == [3, 3, 1]  # 2 rounds: warm up 1, then decay 1
    assert {p.floor for p in phases} == {0.1}
    assert phase_ends(phases) == [5, 10, 12]


def test_one_task_is_one_phase_over_all_rounds():
    assert cosine_phases(7, [1]) == [Phase(start=1, length=7, warmup=0, peak=1.0, floor=0.0)]
    assert phase_ends([]) == []


@pytest.mark.parametrize(
    ("args", "kwargs", "arg"),
    [
        ((0, [1]), {}, "num_rounds"),
        ((10, []), {}, "starts"),
        ((10, [2, 5]), {}, "starts"),
        ((10, [1, 5, 5]), {}, "starts"),
        ((10, [1, 11]), {}, "starts"),
        ((10, [1, 2.5]), {}, "starts"),
        ((10, "1"), {}, "starts"),
        ((10, [1]), {"warmup": -1}, "warmup"),
        ((10, [1]), {"peak": math.inf}, "peak"),
        ((10, [1]), {"peak_decay": 0.0}, "peak_decay"),
        ((10, [1]), {"peak_decay": 1.5}, "peak_decay"),
        ((10, [1, 5]), {"peak_decay": 0.5, "floor": 0.6}, "floor"),  # above the last peak
    ],
)
def test_cosine_phases_rejects_bad_arguments_by_name(args, kwargs, arg):
    with pytest.raises(ValueError, match=rf"^{arg}: expected "):
        cosine_phases(*args, **kwargs)


def test_phase_checks_itself():
    with pytest.raises(ValueError, match="^warmup: expected"):
        Phase(start=1, length=3, warmup=3, peak=1.0, floor=0.0)
    with pytest.raises(ValueError, match="^start: expected"):
        Phase(start=0, length=3, warmup=0, peak=1.0, floor=0.0)


# ---------------------------------------------------------------------------------------------
# round_multipliers: closed forms and torch's own stepped values
# ---------------------------------------------------------------------------------------------


def test_constant_is_one_every_round():
    assert round_multipliers("constant", 4) == [1.0, 1.0, 1.0, 1.0]


def test_step_closed_form():
    got = round_multipliers("step", 9, step_size=3, gamma=0.5)
    assert got == pytest.approx([0.5 ** ((r - 1) // 3) for r in range(1, 10)])


def test_exponential_closed_form():
    got = round_multipliers("exponential", 6, gamma=0.9)
    assert got == pytest.approx([0.9 ** (r - 1) for r in range(1, 7)])


def test_cosine_starts_at_one_and_ends_at_the_floor():
    got = round_multipliers("cosine", 11, floor=0.1)
    assert got[0] == 1.0
    assert got[-1] == pytest.approx(0.1)
    assert got[5] == pytest.approx(0.55)  # midpoint of T_max = 10
    assert all(a >= b for a, b in zip(got, got[1:], strict=False))


def test_warm_restarts_restart_every_t_0_rounds():
    got = round_multipliers("warm-restarts", 8, t_0=4)
    assert got[0] == got[4] == 1.0
    assert got[2] == pytest.approx(0.5)
    assert got[6] == pytest.approx(0.5)


def test_cyclical_triangle_from_the_floor():
    got = round_multipliers("cyclical", 9, step_size_up=2, floor=0.2)
    assert got == pytest.approx([0.2, 0.6, 1.0, 0.6, 0.2, 0.6, 1.0, 0.6, 0.2])


def test_one_cycle_starts_at_one_over_div_factor():
    got = round_multipliers("one-cycle", 20)
    assert got[0] == pytest.approx(1 / 25)
    assert max(got) == pytest.approx(1.0)
    assert got[-1] == pytest.approx(1 / 25 / 1e4)


TORCH_CASES = [
    ("step", {"step_size": 3, "gamma": 0.5}, lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.5)),
    ("exponential", {"gamma": 0.8}, lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.8)),
    (
        "cosine",
        {"floor": 0.05},
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=15, eta_min=0.05),
    ),
    (
        "warm-restarts",
        {"t_0": 3, "t_mult": 2, "floor": 0.1},
        lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, 3, 2, eta_min=0.1),
    ),
    (
        "cyclical",
        {"step_size_up": 3, "step_size_down": 2, "mode": "triangular2", "floor": 0.1},
        lambda o: torch.optim.lr_scheduler.CyclicLR(
            o, 0.1, 1.0, 3, 2, mode="triangular2", cycle_momentum=False
        ),
    ),
    (
        "one-cycle",
        {"pct_start": 0.25, "anneal_strategy": "linear", "three_phase": True},
        lambda o: torch.optim.lr_scheduler.OneCycleLR(
            o,
            1.0,
            total_steps=16,
            pct_start=0.25,
            anneal_strategy="linear",
            three_phase=True,
            cycle_momentum=False,
        ),
    ),
]


@pytest.mark.parametrize(("name", "params", "make"), TORCH_CASES, ids=[c[0] for c in TORCH_CASES])
def test_torch_schedules_equal_torchs_own_stepped_rates(name, params, make):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "scheduler.step() before optimizer.step()" warning
        got = round_multipliers(name, 16, **params)
    assert got == torch_rates(make, 16)
    assert all(type(m) is float and math.isfinite(m) and m >= 0 for m in got)


@pytest.mark.parametrize("name", [n for n in SCHEDULES if n not in ("step", "exponential")])
def test_every_schedule_with_minimal_params_has_one_multiplier_per_round(name):
    required = {
        "warm-restarts": {"t_0": 2},
        "cyclical": {"step_size_up": 2},
        "phases": {"starts": [1, 4]},
    }
    for num_rounds in (1, 7):
        params = dict(required.get(name, {}))
        if name == "phases" and num_rounds == 1:
            params["starts"] = [1]
        got = round_multipliers(name, num_rounds, **params)
        assert len(got) == num_rounds
        assert all(math.isfinite(m) and m >= 0 for m in got)


@pytest.mark.parametrize(
    ("name", "params", "pattern"),
    [
        ("linear", {}, r"^name: expected constant, step, .* or phases, got 'linear'$"),
        (
            "constant",
            {"gamma": 0.5},
            r"^params: expected no parameters .*'constant', got \['gamma'\]",
        ),
        ("warm-restarts", {"T_0": 2}, r"^params: expected t_0, t_mult, floor .* got \['T_0'\]$"),
        ("step", {}, r"^step_size: expected an integer >= 1, got None$"),
        ("step", {"step_size": 2, "gamma": 1.5}, r"^gamma: expected"),
        ("exponential", {}, r"^gamma: expected .*, got None$"),
        ("cosine", {"floor": 1.5}, r"^floor: expected"),
        ("cyclical", {"step_size_up": 2, "mode": "sine"}, r"^mode: expected triangular, "),
        ("one-cycle", {"pct_start": 1.0}, r"^pct_start: expected"),
        ("one-cycle", {"three_phase": 1}, r"^three_phase: expected"),
        ("phases", {}, r"^starts: expected"),
        ("phases", {"starts": [1, 3], "peak_decay": 2.0}, r"^peak_decay: expected"),
    ],
)
def test_round_multipliers_rejects_bad_params_by_name(name, params, pattern):
    with pytest.raises(ValueError, match=pattern):
        round_multipliers(name, 6, **params)


def test_num_rounds_is_checked():
    with pytest.raises(ValueError, match="^num_rounds: expected an integer >= 1, got 0$"):
        round_multipliers("constant", 0)


# ---------------------------------------------------------------------------------------------
# phases: resets never overshoot (and the Avalanche-style reset that does)
# ---------------------------------------------------------------------------------------------


def test_phases_per_round_equal_phase_lr_of_the_phase_local_step():
    got = round_multipliers("phases", 10, starts=[1, 5], warmup=2, floor=0.1, peak_decay=0.5)
    first = [phase_lr(s, length=4, warmup=2, peak=1.0, floor=0.1) for s in range(4)]
    second = [phase_lr(s, length=6, warmup=2, peak=0.5, floor=0.1) for s in range(6)]
    assert got == first + second
    assert got[4] == pytest.approx(0.1 + 0.4 / 2)  # the reset re-warms from near the floor


@st.composite
def phase_layouts(draw):
    num_rounds = draw(st.integers(min_value=1, max_value=60))
    later = set()
    if num_rounds >= 2:
        later = draw(st.sets(st.integers(min_value=2, max_value=num_rounds), max_size=6))
    starts = [1, *sorted(later)]
    peak = draw(st.floats(min_value=0.0, max_value=10.0))
    peak_decay = draw(st.floats(min_value=0.05, max_value=1.0))
    lowest = peak * peak_decay ** (len(starts) - 1)
    floor = draw(st.floats(min_value=0.0, max_value=1.0)) * lowest
    warmup = draw(st.integers(min_value=0, max_value=8))
    return num_rounds, dict(
        starts=starts, warmup=warmup, peak=peak, floor=floor, peak_decay=peak_decay
    )


@settings(max_examples=150, deadline=None)
@given(phase_layouts())
def test_no_round_exceeds_its_phase_peak_and_resets_never_overshoot(layout):
    num_rounds, params = layout
    multipliers = round_multipliers("phases", num_rounds, **params)
    phases = cosine_phases(num_rounds, **params)
    assert len(multipliers) == num_rounds
    for phase in phases:
        in_phase = multipliers[phase.start - 1 : phase.start - 1 + phase.length]
        assert all(phase.floor <= m <= phase.peak for m in in_phase)
        assert in_phase[0] <= phase.peak  # the round right after a reset
        assert max(in_phase) == pytest.approx(phase.peak)  # and the phase does reach its peak


def test_avalanche_style_reset_of_a_warmup_scheduler_overshoots_and_phases_do_not():
    # Avalanche's LRSchedulerPlugin(reset_lr=True, reset_scheduler=True) writes base_lrs into
    # the groups and sets last_epoch = 0. LinearLR is chainable (multiplies the current rate),
    # so the second warm-up starts from 1.0 instead of 0.25. Reproduced with torch 2.13.
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.25, total_iters=3)
    phase_rates = []
    for _ in range(2):
        rates = []
        for _ in range(4):
            rates.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        phase_rates.append(rates)
        for group, base_lr in zip(optimizer.param_groups, scheduler.base_lrs, strict=True):
            group["lr"] = base_lr
        scheduler.last_epoch = 0
    assert phase_rates[0] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert phase_rates[1] == pytest.approx([1.0, 2.0, 3.0, 4.0])  # a 4x spike

    # The same warm-up (4 rounds to the peak) as closed-form phases: both phases re-warm alike.
    got = round_multipliers("phases", 10, starts=[1, 6], warmup=4)
    assert got[0:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert got[5:9] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert max(got) == 1.0


# ---------------------------------------------------------------------------------------------
# the module's examples
# ---------------------------------------------------------------------------------------------


def test_doctests():
    result = doctest.testmod(fedlr.rates.schedules)
    assert result.attempted > 0
    assert result.failed == 0


SCHEDULE_PARAMS = {
    "constant": {},
    "step": {"step_size": 2, "gamma": 0.5},
    "exponential": {"gamma": 0.9},
    "cosine": {"floor": 0.1},
    "warm-restarts": {"t_0": 3, "t_mult": 2},
    "cyclical": {"step_size_up": 2, "mode": "triangular2"},
    "one-cycle": {},
    "phases": {"starts": [1, 5, 9], "warmup": 1, "peak_decay": 0.5},
}


@pytest.mark.parametrize("name", SCHEDULES)
def test_lazy_multipliers_read_in_any_order_equal_the_list(name):
    expected = round_multipliers(name, 12, **SCHEDULE_PARAMS[name])
    lazy = RoundMultipliers(name, 12, **SCHEDULE_PARAMS[name])
    assert len(lazy) == 12
    assert [lazy[i] for i in reversed(range(12))] == expected[::-1]
    assert lazy[-1] == expected[-1] and lazy[2:5] == expected[2:5] and list(lazy) == expected
    with pytest.raises(IndexError):
        lazy[12]


def test_a_long_schedule_does_no_per_round_work_up_front(monkeypatch):
    steps = []
    original = torch.optim.lr_scheduler.CosineAnnealingLR.step

    def counted(self, *args, **kwargs):
        steps.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.lr_scheduler.CosineAnnealingLR, "step", counted)
    lazy = RoundMultipliers("cosine", 10**6, floor=0.1)
    at_start = len(steps)  # torch steps once when it builds a scheduler
    assert lazy[0] == 1.0 and len(steps) == at_start
    closed_form = 0.1 + 0.9 * (1 + math.cos(math.pi * 2 / (10**6 - 1))) / 2  # torch's eta_t
    assert math.isclose(lazy[2], closed_form, rel_tol=1e-12)
    assert len(steps) == at_start + 2  # rounds 2 and 3 read: two steps, not a million
    phases = RoundMultipliers("phases", 10**6, starts=[1, 500_000])
    assert phases[499_999] == 1.0  # round 500,000 opens the second phase at its peak
