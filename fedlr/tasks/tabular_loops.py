"""Training and evaluation loops of the tabular task: local SGD/Adam/Adagrad, scores, gradients.

Every loop runs on the device the model is on (inputs follow the model, results come back as
CPU floats and arrays). The same loop also runs one rank of a DistributedDataParallel job
(:mod:`fedlr.tasks.ddp`): ``train_local(..., rank=r, world_size=P)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from fedlr.data.federated import ClientData
from fedlr.tasks.devices import model_device

# A logit outside an example's task head (task-incremental streams): exp() of it is 0.
MASKED_LOGIT = -1e9


def _tensors(
    x: np.ndarray, y: np.ndarray, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    xt = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    yt = torch.from_numpy(np.ascontiguousarray(y, np.int64))
    return xt.to(device), yt.to(device)  # no copy when already there (the CPU default)


def train_local(
    model: nn.Module,
    data: ClientData,
    *,
    lr: float,
    epochs: int,
    batch_size: int,
    optimizer: str = "sgd",
    momentum: float = 0.0,
    proximal_mu: float = 0.0,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    weight_decay: float = 0.0,
    adam_betas: tuple[float, float] = (0.9, 0.999),
    adam_eps: float = 1e-8,
    logit_mask: np.ndarray | None = None,
) -> float:
    r"""Train ``model`` in place, on its device, on the client's (possibly noisy) train split.

    With ``proximal_mu > 0`` the FedProx term ``(mu / 2) * ||w - w_global||^2`` is added, with
    ``w_global`` the weights received (Li et al. 2020). Batches are shuffled by a
    ``torch.Generator`` seeded with ``seed``, so every strategy sees the same batches.

    With ``world_size = P > 1`` this is rank ``rank`` of a DistributedDataParallel job and
    ``model`` is the DDP-wrapped module. ``batch_size`` is then the *global* batch: every rank
    draws the same permutation as a single process would, and takes its contiguous share
    :math:`S_r` of each global batch :math:`S` (``torch.tensor_split``; the last, short batch
    too, so a rank may get none). Rank ``r`` back-propagates
    :math:`P \cdot \sum_{i \in S_r} \ell_i / |S|`; DDP averages the ranks' gradients, which gives
    :math:`\frac{1}{P} \sum_r P \sum_{i \in S_r} \nabla\ell_i / |S| = \frac{1}{|S|}
    \sum_{i \in S} \nabla \ell_i`, the single-process gradient of the mean loss over :math:`S`.
    The proximal term is added unscaled on every rank, so its gradient survives the average.

    ``weight_decay`` is SGD's and Adagrad's L2 term, and for Adam the decoupled decay of AdamW
    (``torch.optim.AdamW``): with zero gradient each step shrinks the weights by
    ``1 - lr * weight_decay`` (SGD without momentum, AdamW). ``adam_betas`` and ``adam_eps`` are
    Adam's (Malladi et al.'s square-root rule changes them with the batch size).

    ``logit_mask`` (``(N, C)`` booleans, one row per train example) keeps each example's own
    output head: masked logits are set to a large negative number before the loss, so only the
    classes of the example's task compete (task-incremental continual learning).

    Returns
    -------
    float
        Mean training loss over the local steps (without the proximal term). With
        ``world_size > 1``, this rank's share of it: the sum over ranks is the mean.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank: expected 0..{world_size - 1} (world_size), got {rank}")
    x, y = _tensors(data.x_train, data.y_train, model_device(model))
    params = model.parameters()
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            params, lr=lr, momentum=momentum, weight_decay=weight_decay
        )
    elif optimizer == "adam" and weight_decay > 0:
        opt = torch.optim.AdamW(
            params, lr=lr, betas=adam_betas, eps=adam_eps, weight_decay=weight_decay
        )
    elif optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr, betas=adam_betas, eps=adam_eps)
    elif optimizer == "adagrad":
        opt = torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay)
    else:
        raise ValueError(f"optimizer: expected sgd, adam or adagrad, got {optimizer!r}")
    global_params = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else []
    keep = None
    if logit_mask is not None:
        keep = torch.from_numpy(np.asarray(logit_mask, bool)).to(x.device)

    def forward(rows: torch.Tensor) -> torch.Tensor:
        return _masked(model(x[rows]), None if keep is None else keep[rows])

    generator = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    total, steps = 0.0, 0
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator).to(x.device)
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            opt.zero_grad()
            if world_size == 1:
                loss = loss_fn(forward(idx), y[idx])
                total, steps = total + float(loss.detach()), steps + 1
            else:
                mine = torch.tensor_split(idx, world_size)[rank]
                share = nn.functional.cross_entropy(forward(mine), y[mine], reduction="sum")
                share = share / len(idx)
                total, steps = total + float(share.detach()), steps + 1
                loss = world_size * share  # undoes DDP's average over ranks
            if proximal_mu > 0:
                pairs = zip(model.parameters(), global_params, strict=True)
                prox = sum(((p - g) ** 2).sum() for p, g in pairs)
                loss = loss + 0.5 * proximal_mu * prox
            loss.backward()
            opt.step()
    return total / max(steps, 1)


def local_steps(num_examples: int, batch_size: int, epochs: int) -> int:
    """Optimizer steps of :func:`train_local`: ``epochs * ceil(num_examples / batch_size)``.

    >>> local_steps(100, 16, 2)
    14
    """
    return epochs * -(-num_examples // batch_size)


def mean_gradient(model: nn.Module, data: ClientData, batch_size: int, seed: int) -> np.ndarray:
    """The gradient of the mean cross-entropy over one batch, at the model's current weights.

    The batch is ``min(batch_size, N)`` train examples drawn without replacement (seeded); the
    result is every parameter's gradient flattened into one float32 vector, in
    ``named_parameters`` order. It is what the server's noise-scale estimate reads
    (:func:`fedlr.rates.coupling.federated_terms`): one extra backward pass, no step.
    """
    generator = torch.Generator().manual_seed(seed)
    count = min(batch_size, data.num_train)
    pick = torch.randperm(data.num_train, generator=generator)[:count].sort().values.numpy()
    x, y = _tensors(data.x_train[pick], data.y_train[pick], model_device(model))
    model.zero_grad(set_to_none=True)
    model.train()
    nn.functional.cross_entropy(model(x), y).backward()
    flat = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
    model.zero_grad(set_to_none=True)
    return flat.detach().cpu().numpy().astype(np.float32)


@torch.no_grad()
def evaluate(
    model: nn.Module, x: np.ndarray, y: np.ndarray, head: np.ndarray | None = None
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``.

    ``head`` (``C`` booleans) restricts the prediction to those classes (a task's output head).
    """
    model.eval()
    xt, yt = _tensors(x, y, model_device(model))
    logits = _masked(model(xt), head)
    loss = float(nn.functional.cross_entropy(logits, yt))
    accuracy = float((logits.argmax(dim=1) == yt).float().mean())
    return loss, accuracy


class HeadMasked(nn.Module):
    """``model`` seen through one task's output head: logits outside ``head`` are masked.

    It shares ``model``'s parameters (same order), so a loss, noise estimate or gradient taken
    through it is one of ``model`` under task-incremental evaluation.
    """

    def __init__(self, model: nn.Module, head: np.ndarray) -> None:
        super().__init__()
        self.inner = model
        self.register_buffer("keep", torch.from_numpy(np.asarray(head, bool)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The inner model's logits, masked to the head."""
        return _masked(self.inner(x), self.get_buffer("keep"))


def _masked(logits: torch.Tensor, head: np.ndarray | torch.Tensor | None) -> torch.Tensor:
    """``logits`` with the entries outside ``head`` (booleans, ``(C,)`` or ``(N, C)``) masked."""
    if head is None:
        return logits
    keep = head if isinstance(head, torch.Tensor) else torch.from_numpy(np.asarray(head, bool))
    return logits.masked_fill(~keep.to(logits.device), MASKED_LOGIT)


@torch.no_grad()
def evaluate_ensemble(
    models: Sequence[nn.Module], x: np.ndarray, y: np.ndarray, head: np.ndarray | None = None
) -> tuple[float, float]:
    """Loss and accuracy of the average of ``models``' predicted probabilities on ``(x, y)``.

    A snapshot ensemble (Huang et al. 2017, "Snapshot Ensembles: Train 1, get M for free"):
    softmax outputs are averaged, then the argmax is taken; the loss is the negative log of the
    averaged probability of the true class. ``head`` as in :func:`evaluate`.
    """
    if not models:
        raise ValueError("models: expected at least one model")
    probs = None
    for model in models:
        model.eval()
        xt, yt = _tensors(x, y, model_device(model))
        p = torch.softmax(_masked(model(xt), head), dim=1)
        probs = p if probs is None else probs + p.to(probs.device)
    assert probs is not None
    probs = probs / len(models)
    yt = yt.to(probs.device)
    loss = float(-torch.log(probs.gather(1, yt[:, None]).clamp_min(1e-12)).mean())
    accuracy = float((probs.argmax(dim=1) == yt).float().mean())
    return loss, accuracy


@torch.no_grad()
def log_probs(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """Log-softmax outputs, shape ``(N, C)``."""
    model.eval()
    xt, _ = _tensors(x, np.zeros(len(x)), model_device(model))
    return torch.log_softmax(model(xt), dim=1).cpu().numpy()
