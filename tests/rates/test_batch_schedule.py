"""Tests for fedlr/rates/batch_schedule.py: a step schedule that decays rates or grows batches."""

from __future__ import annotations

import doctest

import pytest
from hypothesis import given
from hypothesis import strategies as st

import fedlr.rates.batch_schedule
from fedlr.rates.batch_schedule import decay_or_grow
from fedlr.rates.coupling import noise_temperature

rates = st.floats(min_value=1e-6, max_value=10.0)


def test_doctests():
    result = doctest.testmod(fedlr.rates.batch_schedule)
    assert result.attempted > 0
    assert result.failed == 0


def test_decay_or_grow_by_hand():
    # Milestones 10, 20; factor 1/2; base lr 0.1, batch 32, cap 100.
    common = {"base_lr": 0.1, "base_batch": 32, "max_batch": 100}
    milestones = [10, 20]
    decay = [decay_or_grow(r, milestones, 0.5, mode="decay", **common) for r in (1, 9, 10, 20, 99)]
    assert decay == [(0.1, 32), (0.1, 32), (0.05, 32), (0.025, 32), (0.025, 32)]
    grow = [decay_or_grow(r, milestones, 0.5, mode="grow", **common) for r in (1, 9, 10, 20, 99)]
    # Round 10: batch 64 at rate 0.1. Round 20: 128 is capped at 100, and the remaining
    # factor 100/128 is taken as rate decay: 0.1 * 0.25 * 100/32 = 0.078125.
    assert grow == [(0.1, 32), (0.1, 32), (0.1, 64), (0.078125, 100), (0.078125, 100)]
    for (lr_decay, batch_decay), (lr_grow, batch_grow) in zip(decay, grow, strict=True):
        assert lr_grow / batch_grow == pytest.approx(lr_decay / batch_decay, rel=1e-12)


def test_decay_or_grow_rounds_the_batch_and_keeps_lr_over_batch():
    # factor 0.3: 32 / 0.3 = 106.67 -> 107, lr = 0.1 * 0.3 * 107 / 32 = 0.1003125.
    lr, batch = decay_or_grow(
        5, [5], 0.3, base_lr=0.1, base_batch=32, max_batch=10_000, mode="grow"
    )
    assert batch == 107
    assert lr == pytest.approx(0.1003125, rel=1e-12)


def test_decay_or_grow_noise_temperature():
    # lr / B is equal in both modes, so Smith's lr * N / B is; the exact lr * (N/B - 1)
    # differs by lr_decay * (B/B0 - 1), here 0.05 * (64/32 - 1) = 0.05 of 0.05 * (10000/32 - 1).
    common = {"base_lr": 0.1, "base_batch": 32, "max_batch": 100}
    lr_decay, batch_decay = decay_or_grow(10, [10], 0.5, mode="decay", **common)
    lr_grow, batch_grow = decay_or_grow(10, [10], 0.5, mode="grow", **common)
    n = 10_000
    assert lr_grow * n / batch_grow == pytest.approx(lr_decay * n / batch_decay, rel=1e-12)
    gap = noise_temperature(lr_decay, batch_decay, n) - noise_temperature(lr_grow, batch_grow, n)
    assert gap == pytest.approx(0.05, rel=1e-9)


@given(
    rounds=st.integers(min_value=1, max_value=60),
    milestones=st.lists(st.integers(min_value=1, max_value=60), max_size=5, unique=True).map(
        sorted
    ),
    factor=st.floats(min_value=0.05, max_value=0.95),
    base_lr=rates,
    base_batch=st.integers(min_value=1, max_value=512),
    extra=st.integers(min_value=0, max_value=10_000),
)
def test_growing_the_batch_keeps_lr_over_batch_of_decaying_the_rate(
    rounds, milestones, factor, base_lr, base_batch, extra
):
    common = {"base_lr": base_lr, "base_batch": base_batch, "max_batch": base_batch + extra}
    for round_ in range(1, rounds + 1):
        lr_decay, batch_decay = decay_or_grow(round_, milestones, factor, mode="decay", **common)
        lr_grow, batch_grow = decay_or_grow(round_, milestones, factor, mode="grow", **common)
        assert batch_decay == base_batch
        assert base_batch <= batch_grow <= base_batch + extra
        assert lr_decay <= lr_grow
        assert lr_grow / batch_grow == pytest.approx(lr_decay / batch_decay, rel=1e-12)
