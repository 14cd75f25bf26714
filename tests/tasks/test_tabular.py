"""fedlr.tasks.tabular: the federation cache, the model, local training and the noise estimators.

One small federation is used throughout (digits, 4 clients): partition ids 0 and 1 are noisy
(rates 0.6 and 0.95), 2 is hard-clean, 3 is clean. Models are MLPs with 16 hidden units.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from fedlr.config import resolve
from fedlr.data.federated import build_federation
from fedlr.tasks import tabular
from fedlr.tasks.streams import task_mask

CFG = resolve(overrides={"num-clients": 4, "noisy-clients": 2, "hidden": 16})
NOISY, CLEAN = 1, 3  # partition ids: flip rate 0.95, clean


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: torch's intra-op threads only contend (as the ClientApp also sets)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return float(torch.sqrt(sum(((a[k] - b[k]) ** 2).sum() for k in a)))


def first(data, n: int):
    """The client's first ``n`` train samples, as a ClientData."""
    return dataclasses.replace(data, x_train=data.x_train[:n], y_train=data.y_train[:n])


def full_batch_grad(model: nn.Module, data) -> list[torch.Tensor]:
    """Gradient of the mean cross-entropy over the whole train split, by autograd."""
    x = torch.from_numpy(np.asarray(data.x_train, np.float32))
    y = torch.from_numpy(np.asarray(data.y_train, np.int64))
    loss = nn.functional.cross_entropy(model(x), y)
    return list(torch.autograd.grad(loss, list(model.parameters())))


# -- federation --------------------------------------------------------------------------------


def test_federation_is_built_once_per_data_config():
    fed = tabular.federation(CFG)
    assert tabular.federation(dict(CFG)) is fed
    assert tabular.federation(resolve(overrides={"num-clients": 4, "noisy-clients": 2})) is fed
    assert tabular.federation({**CFG, "lr": 0.5, "strategies": "fedavg", "hidden": 8}) is fed
    assert tabular.federation({**CFG, "seed": 1}) is not fed


def test_build_federation_reads_only_data_keys():
    # What the cache key leaves out must not change the data.
    read: set[str] = set()

    class Recording(dict):
        def __getitem__(self, key):
            read.add(key)
            return super().__getitem__(key)

        def get(self, key, default=None):
            read.add(key)
            return super().get(key, default)

    build_federation(Recording(CFG))
    assert read <= set(tabular.DATA_KEYS)


@pytest.mark.parametrize("partition_id", [-1, 4])
def test_client_data_rejects_a_partition_id_out_of_range(partition_id):
    with pytest.raises(ValueError, match=r"partition-id: expected 0\.\.3"):
        tabular.client_data(CFG, partition_id)


def test_client_data_is_the_federation_client():
    assert tabular.client_data(CFG, 2) is tabular.federation(CFG).clients[2]


# -- device ------------------------------------------------------------------------------------


def test_auto_is_cuda_exactly_when_a_gpu_is_visible():
    expected = "cuda" if torch.cuda.is_available() else "cpu"  # cpu on a machine without one
    assert tabular.pick_device("auto") == torch.device(expected)
    assert tabular.pick_device("cpu") == torch.device("cpu")


def test_pick_device_with_a_visible_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert tabular.pick_device("auto") == torch.device("cuda")
    assert tabular.pick_device("cuda") == torch.device("cuda")
    assert tabular.pick_device("cpu") == torch.device("cpu")


def test_cuda_without_a_visible_gpu_names_the_key(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert tabular.pick_device("auto") == torch.device("cpu")
    with pytest.raises(
        ValueError, match=r"^device: expected auto or cpu on a machine without a visible GPU, "
    ):
        tabular.pick_device("cuda")


def test_unknown_device_names_the_key():
    with pytest.raises(ValueError, match="device: expected auto, cpu or cuda, got 'tpu'"):
        tabular.pick_device("tpu")


def test_model_device_is_where_the_parameters_are():
    assert tabular.model_device(tabular.build_model(CFG)) == torch.device("cpu")
    assert tabular.model_device(nn.ReLU()) == torch.device("cpu")


# -- model -------------------------------------------------------------------------------------


def test_build_model_is_a_function_of_the_seed():
    a, b = weights(tabular.build_model(CFG, seed=3)), weights(tabular.build_model(CFG, seed=3))
    assert same_weights(a, b)
    assert not same_weights(a, weights(tabular.build_model(CFG, seed=4)))
    # default seed: the run's
    assert same_weights(weights(tabular.build_model(CFG)), weights(tabular.build_model(CFG, 0)))
    fed = tabular.federation(CFG)
    assert a["net.0.weight"].shape == (16, fed.num_features)
    assert a["net.2.weight"].shape == (fed.num_classes, 16)


# -- train_local -------------------------------------------------------------------------------


def test_train_local_reduces_the_training_loss_on_a_clean_client():
    data = tabular.client_data(CFG, CLEAN)
    model = tabular.build_model(CFG)
    before, _ = tabular.evaluate(model, data.x_train, data.y_train)
    mean_loss = tabular.train_local(model, data, lr=0.1, epochs=5, batch_size=16, seed=0)
    after, accuracy = tabular.evaluate(model, data.x_train, data.y_train)
    assert after < 0.5 * before
    assert after < mean_loss < before + 0.1  # mean over the steps lies between
    assert accuracy > 0.5


def test_train_local_is_seeded():
    data = tabular.client_data(CFG, CLEAN)

    def trained(seed: int) -> dict[str, torch.Tensor]:
        model = tabular.build_model(CFG)
        tabular.train_local(model, data, lr=0.1, epochs=1, batch_size=16, seed=seed)
        return weights(model)

    assert same_weights(trained(1), trained(1))
    assert not same_weights(trained(1), trained(2))


def test_one_full_batch_sgd_step_is_w_minus_lr_times_the_gradient():
    data = first(tabular.client_data(CFG, NOISY), 20)
    model = tabular.build_model(CFG)
    w0 = weights(model)
    grads = full_batch_grad(model, data)
    loss0, _ = tabular.evaluate(model, data.x_train, data.y_train)

    mean_loss = tabular.train_local(model, data, lr=0.3, epochs=1, batch_size=20)

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
    loss0, _ = tabular.evaluate(model, data.x_train, data.y_train)
    reference = tabular.build_model(CFG)
    with torch.no_grad():
        for p, g in zip(reference.parameters(), g0, strict=True):
            p -= lr * g
    w1 = weights(reference)
    g1 = full_batch_grad(reference, data)
    loss1, _ = tabular.evaluate(reference, data.x_train, data.y_train)

    mean_loss = tabular.train_local(
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
        tabular.train_local(model, data, lr=0.1, epochs=2, batch_size=16, proximal_mu=mu, seed=5)
        return distance(weights(model), start)

    assert moved(1.0) < moved(0.0)


def test_adam_trains():
    data = tabular.client_data(CFG, CLEAN)
    model = tabular.build_model(CFG)
    start = weights(model)
    before, _ = tabular.evaluate(model, data.x_train, data.y_train)
    loss = tabular.train_local(model, data, lr=0.01, epochs=2, batch_size=16, optimizer="adam")
    after, _ = tabular.evaluate(model, data.x_train, data.y_train)
    assert np.isfinite(loss) and after < before
    assert not same_weights(weights(model), start)


@pytest.mark.parametrize(("rank", "world_size"), [(2, 2), (-1, 2), (0, 0)])
def test_a_rank_outside_the_world_raises(rank, world_size):
    model = tabular.build_model(CFG)
    with pytest.raises(ValueError, match=f"rank: expected .*, got {rank}"):
        tabular.train_local(
            model, tabular.client_data(CFG, CLEAN), lr=0.1, epochs=1, batch_size=8,
            rank=rank, world_size=world_size,
        )  # fmt: skip


def test_unknown_optimizer_raises():
    model = tabular.build_model(CFG)
    with pytest.raises(ValueError, match="optimizer: expected sgd, adam or adagrad, got 'rmsprop'"):
        tabular.train_local(
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
        tabular.train_local(
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

    mean_loss = tabular.train_local(model, data, lr=0.3, epochs=1, batch_size=20, logit_mask=mask)

    assert mean_loss == pytest.approx(two_class.item(), rel=1e-5)
    for (name, w1), g in zip(weights(model).items(), grads, strict=True):
        torch.testing.assert_close(w1, w0[name] - 0.3 * g, rtol=1e-5, atol=1e-6)


def test_per_example_masks_keep_each_examples_own_head():
    data = only_classes(tabular.client_data(CFG, CLEAN), (1, 2, 4))
    heads = {1: (0, 1), 2: (2, 3), 4: (4, 5)}
    masks = np.stack([task_mask(heads[int(label)]) for label in data.y_train])
    model = tabular.build_model(CFG)
    start = weights(model)
    tabular.train_local(model, data, lr=0.5, epochs=1, batch_size=8, seed=0, logit_mask=masks)
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
    assert tabular.evaluate(model, X_ANY, threes)[1] == 0.0
    loss, accuracy = tabular.evaluate(model, X_ANY, threes, head)
    assert accuracy == 1.0
    assert loss == pytest.approx(np.log1p(np.exp(-1.0)), rel=1e-6)  # -log(e^2 / (e^1 + e^2))
    assert tabular.evaluate(model, X_ANY, twos, head)[1] == 0.0
    assert tabular.evaluate(model, X_ANY, np.full(6, 0))[1] == 1.0  # without a head: class 0


def test_an_ensemble_of_one_is_the_model():
    data = tabular.client_data(CFG, CLEAN)
    model = tabular.build_model(CFG)
    tabular.train_local(model, first(data, 64), lr=0.1, epochs=1, batch_size=16, seed=0)
    for head in (None, task_mask((1, 4, 7))):
        keep = np.ones(data.num_test, bool) if head is None else head[data.y_test]
        x, y = data.x_test[keep], data.y_test[keep]
        loss, accuracy = tabular.evaluate(model, x, y, head)
        ensemble_loss, ensemble_accuracy = tabular.evaluate_ensemble([model], x, y, head)
        assert ensemble_accuracy == accuracy
        assert ensemble_loss == pytest.approx(loss, rel=1e-5)


def test_an_ensemble_averages_probabilities():
    # Member a: p = (0.5, 0.1, 0.4) predicts 0; member b: p = (0.1, 0.5, 0.4) predicts 1.
    # Averaged: (0.3, 0.3, 0.4) predicts 2, the true class; the loss is -log 0.4.
    a = constant_model(np.log([0.5, 0.1, 0.4]), num_classes=3)
    b = constant_model(np.log([0.1, 0.5, 0.4]), num_classes=3)
    y = np.full(len(X_ANY), 2)
    assert tabular.evaluate(a, X_ANY, y)[1] == 0.0 and tabular.evaluate(b, X_ANY, y)[1] == 0.0
    loss, accuracy = tabular.evaluate_ensemble([a, b], X_ANY, y)
    assert accuracy == 1.0
    assert loss == pytest.approx(-np.log(0.4), rel=1e-6)
    assert tabular.evaluate_ensemble([b, a], X_ANY, y) == pytest.approx((loss, accuracy))
    # a head renormalises each member before the average: under head {1, 2}, a gives class 2
    # 0.4 / 0.5 and b 0.4 / 0.9, so the ensemble's p(2) = (0.8 + 4/9) / 2 = 28/45
    head = np.array([False, True, True])
    loss, accuracy = tabular.evaluate_ensemble([a, b], X_ANY, y, head)
    assert accuracy == 1.0
    assert loss == pytest.approx(-np.log(28 / 45), rel=1e-6)


def test_an_ensemble_of_no_models_raises():
    with pytest.raises(ValueError, match="models: expected at least one model"):
        tabular.evaluate_ensemble([], X_ANY, np.zeros(len(X_ANY), int))


# -- per-sample gradients and noise estimates --------------------------------------------------


def test_per_sample_gradients_match_a_loop_of_autograd():
    data = tabular.client_data(CFG, NOISY)
    x, y = data.x_train[:5], data.y_train[:5]
    model = tabular.build_model(CFG)
    grads = tabular.per_sample_gradients(model, x, y, max_samples=256, seed=0)

    params = list(model.parameters())
    assert grads.shape == (5, sum(p.numel() for p in params))
    for i in range(5):
        logits = model(torch.from_numpy(x[i : i + 1]))
        loss = nn.functional.cross_entropy(logits, torch.from_numpy(y[i : i + 1]))
        expected = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])
        np.testing.assert_allclose(grads[i], expected.numpy(), rtol=1e-5, atol=1e-6)


def test_per_sample_gradients_subsample_at_most_max_samples_seeded():
    data = tabular.client_data(CFG, NOISY)
    model = tabular.build_model(CFG)
    a = tabular.per_sample_gradients(model, data.x_train, data.y_train, max_samples=7, seed=1)
    b = tabular.per_sample_gradients(model, data.x_train, data.y_train, max_samples=7, seed=1)
    assert a.shape[0] == 7
    np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def clean_trained_model() -> nn.Module:
    """A fresh model trained briefly on the clean labels of every client."""
    clients = tabular.federation(CFG).clients
    pooled = dataclasses.replace(
        clients[0],
        x_train=np.concatenate([c.x_train for c in clients]),
        y_train=np.concatenate([c.y_train_clean for c in clients]),
    )
    model = tabular.build_model(CFG)
    tabular.train_local(model, pooled, lr=0.1, epochs=5, batch_size=32, seed=0)
    return model


def test_oracle_estimate_is_the_flip_fraction():
    data = tabular.client_data(CFG, NOISY)
    model = tabular.build_model(CFG)
    assert tabular.estimate_noise(model, data, "oracle") == data.flip_fraction > 0.5
    assert tabular.estimate_noise(model, tabular.client_data(CFG, CLEAN), "oracle") == 0.0


def test_loss_margin_ranks_a_noisy_client_above_a_clean_one(clean_trained_model):
    noisy = tabular.estimate_noise(
        clean_trained_model, tabular.client_data(CFG, NOISY), "loss-margin"
    )
    clean = tabular.estimate_noise(
        clean_trained_model, tabular.client_data(CFG, CLEAN), "loss-margin"
    )
    assert 0.0 <= clean < noisy


def test_loss_margin_is_zero_when_the_model_agrees_with_every_label(clean_trained_model):
    data = tabular.client_data(CFG, NOISY)
    predicted = tabular.log_probs(clean_trained_model, data.x_train).argmax(axis=1)
    agreed = dataclasses.replace(data, y_train=predicted)
    assert tabular.estimate_noise(clean_trained_model, agreed, "loss-margin") == 0.0


def test_loss_estimate_is_a_fraction(clean_trained_model):
    estimate = tabular.estimate_noise(
        clean_trained_model, tabular.client_data(CFG, NOISY), "loss", seed=0
    )
    assert 0.0 <= estimate <= 1.0


def test_gradient_estimate_is_finite_positive_and_seeded():
    data = tabular.client_data(CFG, NOISY)  # 447 train samples: a 256 subsample
    model = tabular.build_model(CFG)
    estimate = tabular.estimate_noise(model, data, "gradient", seed=3)
    assert np.isfinite(estimate) and estimate > 0
    assert tabular.estimate_noise(model, data, "gradient", seed=3) == estimate


def test_unknown_estimator_raises():
    with pytest.raises(ValueError, match="estimator: expected .*, got 'magic'"):
        tabular.estimate_noise(tabular.build_model(CFG), tabular.client_data(CFG, 0), "magic")


def test_head_masked_shares_the_models_parameters_and_masks_its_logits():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 4)
    head = np.array([False, True, True, False])
    masked = tabular.HeadMasked(model, head)
    assert [p.data_ptr() for p in masked.parameters()] == [p.data_ptr() for p in model.parameters()]
    x = torch.randn(5, 3)
    out = masked(x)
    torch.testing.assert_close(out[:, head], model(x)[:, head])
    assert torch.all(out[:, ~head] == tabular.MASKED_LOGIT)
    # a gradient through it reaches only the head's output rows
    torch.nn.functional.cross_entropy(out, torch.tensor([1, 2, 1, 2, 1])).backward()
    assert torch.all(model.weight.grad[~head] == 0) and torch.any(model.weight.grad[head] != 0)


# -- the crossfit estimator and small-loss selection --------------------------------------------


def trained_on_clean_labels(data) -> nn.Module:
    """A model that knows the client's true labels (what a good global model would be)."""
    model = tabular.build_model(CFG)
    clean = dataclasses.replace(data, y_train=data.y_train_clean)
    tabular.train_local(model, clean, lr=0.1, epochs=30, batch_size=16, seed=0)
    return model


def test_crossfit_ranks_noisy_above_clean_and_leaves_the_model_unchanged():
    noisy, clean = tabular.client_data(CFG, NOISY), tabular.client_data(CFG, CLEAN)
    model = tabular.build_model(CFG)
    tabular.train_local(model, clean, lr=0.1, epochs=10, batch_size=16, seed=0)
    before = weights(model)
    kwargs = {"seed": 3, "lr": 0.1, "batch_size": 16, "epochs": 2}
    on_noisy = tabular.estimate_noise(model, noisy, "crossfit", **kwargs)
    on_clean = tabular.estimate_noise(model, clean, "crossfit", **kwargs)
    assert on_noisy > 2 * on_clean
    assert same_weights(weights(model), before)
    assert tabular.estimate_noise(model, noisy, "crossfit", **kwargs) == on_noisy  # seeded


def test_clean_part_drops_mostly_flipped_labels_and_only_when_asked():
    from fedlr.tasks.base import RoundPlan, clean_part

    data = tabular.client_data(CFG, NOISY)
    model = trained_on_clean_labels(data)
    plan = RoundPlan(server_round=3, lr=0.1, epochs=1, batch_size=16, select_clean=True)
    kept = clean_part(model, data, plan)
    assert 0 < kept.num_train < data.num_train
    flipped = float(np.mean(data.y_train != data.y_train_clean))
    assert float(np.mean(kept.y_train != kept.y_train_clean)) < 0.5 * flipped
    assert clean_part(model, data, dataclasses.replace(plan, select_clean=False)) is data
