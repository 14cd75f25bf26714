"""What a client of your own Flower app computes for fedlr's strategies.

:func:`estimate_noise` is the statistic :class:`fedlr.fl.NoiseAdaptiveFedAvg` turns into a rate:
call it in your ClientApp with the weights just received, before training, and reply it as
``"noise-estimate"`` next to ``"num-examples"`` (docs/library.md has the whole contract)::

    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    estimate = estimate_noise(model, x_train, y_train)
    ...train with lr = msg.content["config"]["lr"]...
    MetricRecord({"num-examples": len(x_train), "noise-estimate": estimate})
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from fedlr.rates.noise import loss_mixture_noise, mean_margin_noise

__all__ = ["ESTIMATORS", "estimate_noise"]

ESTIMATORS = ("loss-margin", "loss")
_CHUNK = 4096  # rows per forward pass for arrays


def _features(inputs: Any, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Inputs as a tensor on ``device``; floating ones in ``dtype``, integer ones as they are.

    A float64 (``model.double()``) or bf16 model needs its inputs in its own dtype; integer
    inputs (token ids for an embedding) keep theirs.
    """
    tensor = torch.as_tensor(inputs)
    if tensor.is_floating_point():
        return tensor.to(device=device, dtype=dtype)
    return tensor.to(device)


def _batches(
    x: Any, y: Any, device: torch.device, dtype: torch.dtype
) -> Iterable[tuple[torch.Tensor, Any]]:
    """``(inputs, labels)`` chunks from arrays, tensors or a DataLoader of ``(x, y)`` pairs.

    Inputs are made ready for the model (:func:`_features`); labels are left as they are
    (:func:`_labels` reads them on the CPU).
    """
    if y is None:  # a DataLoader (or any iterable of batches)
        for batch in x:
            if not (isinstance(batch, list | tuple) and len(batch) >= 2):
                raise ValueError("estimate_noise: a DataLoader must yield (inputs, labels) pairs")
            yield _features(batch[0], device, dtype), batch[1]
        return
    inputs = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    labels = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y)
    if len(inputs) != len(labels):
        raise ValueError(
            f"estimate_noise: x and y differ in length ({len(inputs)} vs {len(labels)})"
        )
    for start in range(0, len(inputs), _CHUNK):
        end = start + _CHUNK
        yield _features(inputs[start:end], device, dtype), labels[start:end]


def _labels(targets: Any) -> np.ndarray:
    """Class labels as a 1-D int array: ``(N, 1)`` is squeezed; fractions and 2-D are refused."""
    values = torch.as_tensor(targets).detach().cpu()
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise ValueError(
            "estimate_noise: labels must be class indices of shape (N,), "
            f"got shape {tuple(values.shape)}"
        )
    if values.is_floating_point() and not bool(torch.all(values == torch.round(values))):
        raise ValueError("estimate_noise: labels must be whole numbers (class indices)")
    return values.long().numpy()


def estimate_noise(
    model: nn.Module, x: Any, y: Any = None, *, estimator: str = "loss-margin", seed: int = 0
) -> float:
    """A client's label-noise statistic under the model it just received (before training).

    ``loss-margin`` (the default) is the mean margin loss ``log p_max - log p_label``
    (:func:`fedlr.rates.noise.mean_margin_noise`): 0 when the model agrees with every label,
    large when it confidently disagrees with many. ``loss`` is the noisy fraction of a
    two-component mixture on per-sample cross-entropies (FedCorr, Xu et al. 2022;
    :func:`fedlr.rates.noise.loss_mixture_noise`, seeded by ``seed``).

    Parameters
    ----------
    model : torch.nn.Module
        A classifier returning logits of shape ``(N, C)``; it is put in eval mode for the pass
        and returned to the mode it was in.
    x : array-like, torch.Tensor or DataLoader
        The client's training inputs, or a DataLoader yielding ``(inputs, labels)`` (then
        leave ``y`` out). Floating inputs are cast to the dtype of the model's first floating
        parameter (float64 after ``model.double()``, bf16, ...) and moved to its device.
    y : array-like or torch.Tensor, optional
        Integer labels in ``[0, C)``.
    estimator : {"loss-margin", "loss"}
        Which statistic.
    seed : int
        Seed of the mixture fit (``loss``).

    Returns
    -------
    float
        The estimate (NaN when there is no example or the model's outputs are not finite:
        the server then keeps this client's rate uniform and logs it).

    Examples
    --------
    >>> model = nn.Linear(2, 2)
    >>> with torch.no_grad():
    ...     _ = model.weight.copy_(torch.tensor([[4.0, 0.0], [0.0, 4.0]]))
    ...     _ = model.bias.zero_()
    >>> x = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> estimate_noise(model, x, np.array([0, 1]))  # the model agrees with both labels
    0.0
    >>> round(estimate_noise(model, x, np.array([1, 1])), 3)  # one label disagrees by 4 nats
    2.0
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator: expected {' or '.join(ESTIMATORS)}, got {estimator!r}")
    was_training = model.training
    # inputs go to the model's device, in its dtype (float64 after model.double(), bf16, ...)
    like = next((p for p in model.parameters() if p.is_floating_point()), None)
    device = like.device if like is not None else torch.device("cpu")
    dtype = like.dtype if like is not None else torch.get_default_dtype()
    log_probs, labels = [], []
    model.eval()
    try:
        with torch.no_grad():
            for inputs, targets in _batches(x, y, device, dtype):
                log_probs.append(torch.log_softmax(model(inputs), dim=1).double().cpu().numpy())
                labels.append(_labels(targets))
    finally:
        model.train(was_training)
    if not log_probs or sum(len(b) for b in labels) == 0:
        return float("nan")
    lp, target = np.concatenate(log_probs), np.concatenate(labels)
    if target.min() < 0 or target.max() >= lp.shape[1]:
        low, high = int(target.min()), int(target.max())
        raise ValueError(
            f"estimate_noise: labels must lie in [0, {lp.shape[1]}), got {low}..{high}"
        )
    if estimator == "loss-margin":
        return mean_margin_noise(lp, target)
    return loss_mixture_noise(-lp[np.arange(len(target)), target], seed=seed)
