"""Tests for fedlr/tasks/tabular_loops.py: local training, task heads, evaluation, ensembles.

The federation and helpers are test_tabular.py's (digits, 4 clients, MLPs of 16 hidden units).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from fedlr.tasks import tabular, tabular_loops
from fedlr.tasks.streams import task_mask
from tests.tasks.test_tabular import (  # noqa: F401 (one_thread: a fixture)
    CFG,
    CLEAN,
    NOISY,
    distance,
    first,
    full_batch_grad,
    one_thread,
    same_weights,
    weights,
)


# -- train_local -------------------------------------------------------------------------------


def test_train_local_reduces_the_training_loss_on_a_clean_client():
    data = tabular.client_data(CFG, CLEAN)
    model = tabular.build_model(CFG)
    before, _ = tabular_loops.evaluate(model, data.x_train, data.y_train)
    mean_loss = tabular_loops.train_local(model, data, lr=0.1, epochs=5, batch_size=16, seed=0)
    after, accuracy = tabular_loops.evaluate(model, data.x_train, data.y_train)
    assert after < 0.5 * before
    assert after < mean_loss < before + 0.1  # mean over the steps lies between
    assert accuracy > 0.5


def test_train_local_is_seeded():
    data = tabular.client_data(CFG, CLEAN)

    def trained(seed: int) -> dict[str, torch.Tensor]:
        model = tabular.build_model(CFG)
        tabular_loops.train_local(model, data, lr=0.1, epochs=1, batch_size=16, seed=seed)
        return weights(model)

    assert same_weights(trained(1), trained(1))
    assert not same_weights(trained(1), trained(2))


def test_one_full_batch_sgd_step_is_w_minus_lr_times_the_gradient():
    data = first(tabular.client_data(CFG, NOISY), 20)
    model = tabular.build_model(CFG)
    w0 = weights(model)
    grads = full_batch_grad(model, data)
    loss0, _ = tabular_loops.evaluate(model, data.x_train, data.y_train)

    mean_loss = tabular_loops.train_local(model, data, lr=0.3, epochs=1, batch_size=20)

    assert mean_loss == pytest.approx(loss0, rel=1e-5)  # one step: the loss before it
    for (name, w1), g in zip(weights(model).items(), grads, strict=True):
        torch.testing.assert_close(w1, w0[name] - 0.3 * g, rtol=1e-5, atol=1e-6)


def test_proximal_term_matches_two_hand_worked_steps():
    # Step 1 at w0 = w_global: the proximal gradient mu * (w - w_global) is 0, a plain step.
    # Step 2: w2 = w1 - lr * (grad(w1) + mu * (w1 - w0)).
    lr, mu = 0.3, 2.0
    data = first(tabular.client_data(CFG, NOISY), 20)
    model = tabular.build_model(CFG)
    w0 = weights(model)
    g0 = full_batch_grad(model, data)
    loss0, _ = tabular_loops.evaluate(model, data.x_train, data.y_train)
    reference = tabular.build_model(CFG)
    with torch.no_grad():
        for p, g in zip(reference.parameters(), g0, strict=True):
            p -= lr * g
    w1 = weights(reference)
    g1 = full_batch_grad(reference, data)
    loss1, _ = tabular_loops.evaluate(reference, data.x_train, data.y_train)

    mean_loss = tabular_loops.train_local(
        model, data, lr=lr, epochs=2, batch_size=20, proximal_mu=mu, seed=0
    )

    for (name, w2), g in zip(weights(model).items(), g1, strict=True):
        expected = w1[name] - lr * (g + mu * (w1[name] - w0[name]))
        torch.testing.assert_close(w2, expected, rtol=1e-5, atol=1e-6)
    assert mean_loss == pytest.approx((loss0 + loss1) / 2, rel=1e-5)  # without the prox term


def test_proximal_term_keeps_weights_closer_to_the_start():
    data = tabular.client_data(CFG, CLEAN)

    def moved(mu: float) -> float:
        model = tabular.build_model(CFG)
        start = weights(model)
        tabular_loops.train_local(
            model, data, lr=0.1, epochs=2, batch_size=16, proximal_mu=mu, seed=5
        )
        return distance(weights(model), start)

    assert moved(1.0) < moved(0.0)


def test_adam_trains():
    data = tabular.client_data(CFG, CLEAN)
    model = tabular.build_model(CFG)
    start = weights(model)
    before, _ = tabular_loops.evaluate(model, data.x_train, data.y_train)
    loss = tabular_loops.train_local(
        model, data, lr=0.01, epochs=2, batch_size=16, optimizer="adam"
    )
    after, _ = tabular_loops.evaluate(model, data.x_train, data.y_train)
    assert np.isfinite(loss) and after < before
    assert not same_weights(weights(model), start)


@pytest.mark.parametrize(("rank", "world_size"), [(2, 2), (-1, 2), (0, 0)])
def test_a_rank_outside_the_world_raises(rank, world_size):
    model = tabular.build_model(CFG)
    with pytest.raises(ValueError, match=f"rank: expected .*, got {rank}"):
        tabular_loops.train_local(
            model, tabular.client_data(CFG, CLEAN), lr=0.1, epochs=1, batch_size=8,
            rank=rank, world_size=world_size,
        )  # fmt: skip


def test_unknown_optimizer_raises():
    model = tabular.build_model(CFG)
    with pytest.raises(ValueError, match="optimizer: expected sgd, adam or adagrad, got 'rmsprop'"):
        tabular_loops.train_local(
            model, tabular.client_data(CFG, CLEAN), lr=0.1, epochs=1, batch_size=8,
            optimizer="rmsprop",
        )  # fmt: skip


# -- task heads: logit masks in training, heads in evaluation ----------------------------------


def only_classes(data, classes):
    """The client's train examples of ``classes`` only, as a ClientData."""
    keep = np.isin(data.y_train, classes)
    return dataclasses.replace(data, x_train=data.x_train[keep], y_train=data.y_train[keep])


def test_a_logit_mask_leaves_the_output_rows_of_other_classes_unchanged():
    data = only_classes(tabular.client_data(CFG, CLEAN), (2, 3))
    assert data.num_train > 20
    head = task_mask((2, 3))
    masks = np.tile(head, (data.num_train, 1))

    def trained(logit_mask):
        model = tabular.build_model(CFG)
        start = weights(model)
        tabular_loops.train_local(
            model, data, lr=0.5, epochs=2, batch_size=8, seed=0, logit_mask=logit_mask
        )
        return start, weights(model)

    start, end = trained(masks)
    for name in ("net.2.weight", "net.2.bias"):
        assert torch.equal(end[name][~head], start[name][~head])  # no gradient: not one bit moves
        assert not torch.equal(end[name][head], start[name][head])
    assert not torch.equal(end["net.0.weight"], start["net.0.weight"])
    # without the mask the other classes' rows are pushed down: the mask is what kept them
    start, end = trained(None)
    assert not torch.equal(end["net.2.weight"][~head], start["net.2.weight"][~head])


def test_a_masked_step_follows_the_loss_of_the_heads_classes_only():
    # The loss with a mask is the two-class cross-entropy over logits 2 and 3 (labels 2 -> 0,
    # 3 -> 1); one full-batch SGD step moves by lr times its gradient.
    data = first(only_classes(tabular.client_data(CFG, NOISY), (2, 3)), 20)
    model = tabular.build_model(CFG)
    w0 = weights(model)
    x = torch.from_numpy(data.x_train)
    y = torch.from_numpy(data.y_train)
    two_class = nn.functional.cross_entropy(model(x)[:, [2, 3]], y - 2)
    grads = torch.autograd.grad(two_class, list(model.parameters()))
    mask = np.tile(task_mask((2, 3)), (len(y), 1))

    mean_loss = tabular_loops.train_local(
        model, data, lr=0.3, epochs=1, batch_size=20, logit_mask=mask
    )

    assert mean_loss == pytest.approx(two_class.item(), rel=1e-5)
    for (name, w1), g in zip(weights(model).items(), grads, strict=True):
        torch.testing.assert_close(w1, w0[name] - 0.3 * g, rtol=1e-5, atol=1e-6)


def test_per_example_masks_keep_each_examples_own_head():
    data = only_classes(tabular.client_data(CFG, CLEAN), (1, 2, 4))
    heads = {1: (0, 1), 2: (2, 3), 4: (4, 5)}
    masks = np.stack([task_mask(heads[int(label)]) for label in data.y_train])
    model = tabular.build_model(CFG)
    start = weights(model)
    tabular_loops.train_local(model, data, lr=0.5, epochs=1, batch_size=8, seed=0, logit_mask=masks)
    moved = weights(model)["net.2.bias"] != start["net.2.bias"]
    assert moved.tolist() == [True] * 6 + [False] * 4  # classes 6..9 are in no example's head


def constant_model(logits, num_classes: int = 10) -> tabular.MLP:
    """A model whose logits are ``logits`` for every input (zero last layer, bias = logits)."""
    model = tabular.MLP(64, num_classes, 4)
    with torch.no_grad():
        model.net[2].weight.zero_()
        model.net[2].bias.copy_(torch.tensor(logits, dtype=torch.float32))
    return model


X_ANY = tabular.client_data(CFG, CLEAN).x_test[:6]


def test_a_head_restricts_the_prediction_to_its_classes():
    # logits favour class 0, then 3 over 2: under head {2, 3} the model predicts 3
    model = constant_model([5.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    head = task_mask((2, 3))
    threes, twos = np.full(6, 3), np.full(6, 2)
    assert tabular_loops.evaluate(model, X_ANY, threes)[1] == 0.0
    loss, accuracy = tabular_loops.evaluate(model, X_ANY, threes, head)
    assert accuracy == 1.0
    assert loss == pytest.approx(np.log1p(np.exp(-1.0)), rel=1e-6)  # -log(e^2 / (e^1 + e^2))
    assert tabular_loops.evaluate(model, X_ANY, twos, head)[1] == 0.0
    assert tabular_loops.evaluate(model, X_ANY, np.full(6, 0))[1] == 1.0  # without a head: class 0


def test_an_ensemble_of_one_is_the_model():
    data = tabular.client_data(CFG, CLEAN)
    model = tabular.build_model(CFG)
    tabular_loops.train_local(model, first(data, 64), lr=0.1, epochs=1, batch_size=16, seed=0)
    for head in (None, task_mask((1, 4, 7))):
        keep = np.ones(data.num_test, bool) if head is None else head[data.y_test]
        x, y = data.x_test[keep], data.y_test[keep]
        loss, accuracy = tabular_loops.evaluate(model, x, y, head)
        ensemble_loss, ensemble_accuracy = tabular_loops.evaluate_ensemble([model], x, y, head)
        assert ensemble_accuracy == accuracy
        assert ensemble_loss == pytest.approx(loss, rel=1e-5)


def test_an_ensemble_averages_probabilities():
    # Member a: p = (0.5, 0.1, 0.4) predicts 0; member b: p = (0.1, 0.5, 0.4) predicts 1.
    # Averaged: (0.3, 0.3, 0.4) predicts 2, the true class; the loss is -log 0.4.
    a = constant_model(np.log([0.5, 0.1, 0.4]), num_classes=3)
    b = constant_model(np.log([0.1, 0.5, 0.4]), num_classes=3)
    y = np.full(len(X_ANY), 2)
    assert (
        tabular_loops.evaluate(a, X_ANY, y)[1] == 0.0
        and tabular_loops.evaluate(b, X_ANY, y)[1] == 0.0
    )
    loss, accuracy = tabular_loops.evaluate_ensemble([a, b], X_ANY, y)
    assert accuracy == 1.0
    assert loss == pytest.approx(-np.log(0.4), rel=1e-6)
    assert tabular_loops.evaluate_ensemble([b, a], X_ANY, y) == pytest.approx((loss, accuracy))
    # a head renormalises each member before the average: under head {1, 2}, a gives class 2
    # 0.4 / 0.5 and b 0.4 / 0.9, so the ensemble's p(2) = (0.8 + 4/9) / 2 = 28/45
    head = np.array([False, True, True])
    loss, accuracy = tabular_loops.evaluate_ensemble([a, b], X_ANY, y, head)
    assert accuracy == 1.0
    assert loss == pytest.approx(-np.log(28 / 45), rel=1e-6)


def test_an_ensemble_of_no_models_raises():
    with pytest.raises(ValueError, match="models: expected at least one model"):
        tabular_loops.evaluate_ensemble([], X_ANY, np.zeros(len(X_ANY), int))


def test_head_masked_shares_the_models_parameters_and_masks_its_logits():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 4)
    head = np.array([False, True, True, False])
    masked = tabular_loops.HeadMasked(model, head)
    assert [p.data_ptr() for p in masked.parameters()] == [p.data_ptr() for p in model.parameters()]
    x = torch.randn(5, 3)
    out = masked(x)
    torch.testing.assert_close(out[:, head], model(x)[:, head])
    assert torch.all(out[:, ~head] == tabular_loops.MASKED_LOGIT)
    # a gradient through it reaches only the head's output rows
    torch.nn.functional.cross_entropy(out, torch.tensor([1, 2, 1, 2, 1])).backward()
    assert torch.all(model.weight.grad[~head] == 0) and torch.any(model.weight.grad[head] != 0)
