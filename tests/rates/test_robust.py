"""The guard, share compensation and small-loss selection of ``fedlr.rates.robust``, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from fedlr.rates.robust import guarded_factors, noisy_group, normalized_update, small_loss_mask


def test_noisy_group_splits_at_the_largest_gap():
    # logs of 0.1, 0.12 | 0.9, 1.4: the gap 0.12 -> 0.9 (ratio 7.5) beats the low group's 1.2
    mask = noisy_group(np.array([0.9, 0.10, 1.4, 0.12]), min_ratio=2.0)
    assert mask.tolist() == [True, False, True, False]


def test_noisy_group_needs_the_ratio():
    # the largest gap, 0.2 -> 0.35, is a ratio of 1.75 < 2
    assert not noisy_group(np.array([0.18, 0.2, 0.35, 0.4]), min_ratio=2.0).any()
    assert noisy_group(np.array([0.18, 0.2, 0.35, 0.4]), min_ratio=1.5).tolist() == [
        False,
        False,
        True,
        True,
    ]


def test_noisy_group_gap_must_exceed_the_low_groups_spread():
    # steps of 1.5 from 0.1 to 0.5 (a ratio of 5), then a gap of 2.4 to 1.2: clean sites that
    # differ this much among themselves are not split off by a smaller gap
    values = np.array([0.1, 0.15, 0.225, 0.3375, 0.50625, 1.215])
    assert not noisy_group(values, min_ratio=2.0).any()
    assert noisy_group(np.append(values[:2], 1.215), min_ratio=2.0).tolist() == [
        False,
        False,
        True,
    ]


def test_noisy_group_floor_and_degenerate_inputs():
    # 0.0 and 0.01 both count as the floor 0.05; the gap to 0.5 is a ratio of 10
    assert noisy_group(np.array([0.0, 0.01, 0.5]), floor=0.05).tolist() == [False, False, True]
    assert noisy_group(np.array([0.7])).tolist() == [False]
    assert noisy_group(np.array([0.3, 0.3, 0.3])).tolist() == [False, False, False]
    assert noisy_group(np.array([])).tolist() == []
    with pytest.raises(ValueError, match="min_ratio"):
        noisy_group(np.array([0.1, 1.0]), min_ratio=0.5)
    with pytest.raises(ValueError, match="finite"):
        noisy_group(np.array([0.1, np.nan]))


def test_guarded_factors_all_or_nothing():
    factors = np.array([1.6, 0.4])
    assert guarded_factors(factors, np.array([False, True])).tolist() == [1.6, 0.4]
    assert guarded_factors(factors, np.array([False, False])).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="same shape"):
        guarded_factors(factors, np.array([True]))


def test_normalized_update_divides_the_update():
    sent = np.array([1.0, -2.0], dtype=np.float32)
    out = normalized_update(sent, np.array([1.5, -3.0], dtype=np.float32), 0.25)
    # update (0.5, -1.0) / 0.25 = (2, -4)
    assert out.dtype == np.float32
    assert out.tolist() == [3.0, -6.0]
    assert normalized_update(sent, sent, 0.25).tolist() == sent.tolist()
    with pytest.raises(ValueError, match="factor"):
        normalized_update(sent, sent, 0.0)


def test_small_loss_mask_drops_the_high_loss_component():
    rng = np.random.default_rng(1)
    losses = np.concatenate([rng.normal(0.05, 0.02, 80), rng.normal(2.5, 0.4, 20)])
    keep = small_loss_mask(losses, seed=0)
    assert keep[:80].all() and not keep[80:].any()


def test_small_loss_mask_keeps_all_of_one_population_and_at_least_min_keep():
    rng = np.random.default_rng(2)
    assert small_loss_mask(rng.normal(1.0, 0.1, 50)).all()  # one bell: components overlap
    assert small_loss_mask(np.full(10, 0.3)).all()
    assert small_loss_mask(np.array([0.1, 5.0])).all()  # too few to fit a mixture
    # 95 high, 5 low: the low component holds 5%, so the 20% smallest losses are kept
    losses = np.concatenate([np.full(5, 0.01), rng.normal(3.0, 0.1, 95)])
    keep = small_loss_mask(losses, min_keep=0.2)
    assert keep.sum() == 20 and keep[:5].all()
