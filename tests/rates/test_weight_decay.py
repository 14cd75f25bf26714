"""Tests for fedlr/rates/weight_decay.py: the weight decay for a client at another rate."""

from __future__ import annotations

import doctest

import pytest

import fedlr.rates.weight_decay
from fedlr.rates.weight_decay import WEIGHT_DECAY_COUPLINGS, coupled_weight_decay


def test_doctests():
    result = doctest.testmod(fedlr.rates.weight_decay)
    assert result.attempted > 0
    assert result.failed == 0


def test_coupled_weight_decay_by_hand():
    # Set wd 0.01 at rate 0.1 (shrink 1 - 0.001 per step). At rate 0.2, fixed-shrink halves wd
    # (0.2 * 0.005 = 0.001); lr-proportional keeps 0.01 (shrink 1 - 0.002).
    assert coupled_weight_decay(0.01, 0.2, 0.1, "fixed-shrink") == pytest.approx(0.005)
    assert coupled_weight_decay(0.01, 0.05, 0.1, "fixed-shrink") == pytest.approx(0.02)
    assert coupled_weight_decay(0.01, 0.2, 0.1, "lr-proportional") == 0.01
    assert coupled_weight_decay(0.0, 0.2, 0.1, "fixed-shrink") == 0.0
    assert coupled_weight_decay(0.01, 0.1, 0.1, "fixed-shrink") == 0.01


def one_step_shrink(optimizer: str, lr: float, weight_decay: float) -> float:
    """Factor by which one step with a zero gradient multiplies a parameter (float64)."""
    torch = pytest.importorskip("torch")
    param = torch.nn.Parameter(torch.tensor([2.0, -3.0], dtype=torch.float64))
    if optimizer == "sgd":
        opt = torch.optim.SGD([param], lr=lr, momentum=0.0, weight_decay=weight_decay)
    else:
        opt = torch.optim.AdamW([param], lr=lr, weight_decay=weight_decay)
    param.grad = torch.zeros_like(param)
    before = param.detach().clone()
    opt.step()
    ratios = (param.detach() / before).tolist()
    assert ratios[0] == pytest.approx(ratios[1], rel=1e-15)
    return ratios[0]


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("coupling", WEIGHT_DECAY_COUPLINGS)
def test_one_torch_step_shrinks_by_one_minus_lr_times_wd(optimizer, coupling):
    base_lr, weight_decay = 0.1, 0.01
    shrinks = []
    for lr in (0.05, 0.4):
        wd = coupled_weight_decay(weight_decay, lr, base_lr, coupling)
        shrink = one_step_shrink(optimizer, lr, wd)
        assert shrink == pytest.approx(1 - lr * wd, rel=1e-14)
        shrinks.append(shrink)
    if coupling == "fixed-shrink":
        # 1 - 0.1 * 0.01 = 0.999 at both rates.
        assert shrinks == pytest.approx([0.999, 0.999], rel=1e-14)
    else:
        # 1 - 0.05 * 0.01 = 0.9995 and 1 - 0.4 * 0.01 = 0.996.
        assert shrinks == pytest.approx([0.9995, 0.996], rel=1e-14)
