"""The tabular task's noise estimators: a client's label-noise estimate from the received model.

:func:`estimate_noise` dispatches on the run's ``noise-estimator``: the loss mixture, the mean
margin, its cross-fitted form (:func:`crossfit_noise`), the per-sample gradient noise ratio
(:func:`per_sample_gradients`) or, in simulation, the injected truth.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from fedlr.data.federated import ClientData
from fedlr.rates.noise import gradient_noise_ratio, loss_mixture_noise, mean_margin_noise
from fedlr.tasks.devices import model_device
from fedlr.tasks.tabular_loops import _tensors, log_probs, train_local

# Per-sample gradients of at most this many examples feed the gradient estimator.
GRADIENT_SAMPLE = 256


def per_sample_gradients(
    model: nn.Module, x: np.ndarray, y: np.ndarray, *, max_samples: int, seed: int
) -> np.ndarray:
    """Per-sample gradients of the cross-entropy, flattened: shape ``(N, P)`` (torch.func)."""
    rng = np.random.default_rng(seed)
    if len(x) > max_samples:
        keep = np.sort(rng.choice(len(x), max_samples, replace=False))
        x, y = x[keep], y[keep]
    xt, yt = _tensors(x, y, model_device(model))
    params = {name: p.detach() for name, p in model.named_parameters()}

    def sample_loss(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor):
        logits = functional_call(model, p, (xi.unsqueeze(0),))
        return nn.functional.cross_entropy(logits, yi.unsqueeze(0))

    grads = vmap(grad(sample_loss), in_dims=(None, 0, 0))(params, xt, yt)
    return torch.cat([g.reshape(len(xt), -1) for g in grads.values()], dim=1).cpu().numpy()


def estimate_noise(
    model: nn.Module,
    data: ClientData,
    estimator: str,
    *,
    seed: int = 0,
    lr: float = 0.1,
    batch_size: int = 16,
    epochs: int = 2,
) -> float:
    """The client's noise estimate from the received global model, before local training.

    ``loss``: noisy fraction from a 2-component mixture on cross-entropy losses (FedCorr).
    ``loss-margin``: mean margin loss ``log p_max - log p_label`` (see
    :func:`fedlr.rates.noise.mean_margin_noise`). ``crossfit``: the same margin on held-out
    halves, each scored by a copy of the received model tuned on the other half
    (:func:`crossfit_noise`; ``lr``, ``batch_size`` and ``epochs`` are the tuning's).
    ``gradient``: per-sample gradient noise ratio ``tr(Sigma) / |G|^2``. ``oracle``: the
    fraction of train labels actually changed (simulation only).
    """
    if estimator == "crossfit":
        return crossfit_noise(model, data, seed=seed, lr=lr, batch_size=batch_size, epochs=epochs)
    if estimator == "oracle":
        if data.flip_fraction is None:
            raise ValueError("estimator: 'oracle' needs injected noise; this client has no truth")
        return float(data.flip_fraction)
    if estimator in ("loss", "loss-margin"):
        lp = log_probs(model, data.x_train)
        labels = np.asarray(data.y_train, dtype=int)
        if estimator == "loss-margin":
            return mean_margin_noise(lp, labels)
        return loss_mixture_noise(-lp[np.arange(len(labels)), labels], seed=seed)
    if estimator == "gradient":
        grads = per_sample_gradients(
            model, data.x_train, data.y_train, max_samples=GRADIENT_SAMPLE, seed=seed
        )
        return gradient_noise_ratio(grads)
    raise ValueError(
        f"estimator: expected loss, loss-margin, gradient or oracle, got {estimator!r}"
    )


def crossfit_noise(
    model: nn.Module,
    data: ClientData,
    *,
    seed: int = 0,
    lr: float = 0.1,
    batch_size: int = 16,
    epochs: int = 2,
) -> float:
    """Cross-fitted margin: label noise the site's own data cannot explain, less its shift.

    The train split is halved (seeded); a copy of the received model is tuned on each half
    (:func:`train_local`) and scores the other half's mean margin loss
    (:func:`fedlr.rates.noise.mean_margin_noise`); the estimate is the two halves' mean.
    Tuning adapts the global model to the site's own inputs and label prior, so misfit that
    comes from a different patient mix shrinks, while a flipped label stays unpredictable from
    the other half (cross-fitting as in Chernozhukov et al. 2018; confident learning scores
    out-of-sample predictions for the same reason, Northcutt et al., JAIR 2021). The received
    model is not changed.
    """
    import copy

    n = data.num_train
    if n < 4:
        return mean_margin_noise(log_probs(model, data.x_train), np.asarray(data.y_train))
    order = np.random.default_rng(seed).permutation(n)
    halves = (order[: n // 2], order[n // 2 :])
    x, y = np.asarray(data.x_train), np.asarray(data.y_train)
    margins = []
    for fit, score in (halves, halves[::-1]):
        tuned = copy.deepcopy(model)
        part = replace(data, x_train=x[fit], y_train=y[fit], y_train_clean=y[fit])
        train_local(tuned, part, lr=lr, epochs=epochs, batch_size=batch_size, seed=seed)
        lp = log_probs(tuned, x[score])
        margins.append(lp.max(axis=1) - lp[np.arange(len(score)), y[score]])
    values = np.concatenate(margins)
    return float(values.mean()) if np.all(np.isfinite(values)) else float("nan")
