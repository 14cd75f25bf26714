r"""Full-batch training and evaluation of a :class:`~fedlr.tasks.gnn.GNN`, with degree-aware rates.

Loops run on the device the model is on, like :mod:`fedlr.tasks.tabular`.

Degree-aware rates (:mod:`fedlr.rates.degree`): with ``gamma > 0``, :func:`train_gnn` gives
embedding row :math:`v` the learning rate :math:`\mathrm{lr} \cdot s_v`,
:math:`s_v = \operatorname{clip}(((d_v + 1)/(\bar d + 1))^{-\gamma}, \mathrm{low}, \mathrm{high})`,
and/or weights node :math:`v`'s loss by :math:`w_v \propto s_v` (mean 1 over the train nodes).
:func:`gradient_norms_by_node` is the diagnostic that motivates it: the norm of
:math:`\partial L / \partial e_v` grows with degree, like :math:`(d + 1)^{1/2}` for GCN and
:math:`(d + 1)^{1}` for sum aggregation when neighbours' errors agree.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

with warnings.catch_warnings():  # PyG 2.8 calls torch.jit.script at import; torch 2.13 warns
    warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", DeprecationWarning)
    from torch_geometric.data import Data

from fedlr.rates.degree import (
    DEFAULT_HIGH,
    DEFAULT_LOW,
    degree_loss_weights,
    degree_rule,
    degree_scales,
    row_scaled_updates,
    scale_row_grads,
    weighted_node_loss,
)
from fedlr.tasks.devices import model_device
from fedlr.tasks.gnn import GNN, _positive_int, node_degrees

OPTIMIZERS = ("sgd", "adam", "adagrad")
DEGREE_MODES = ("embedding", "loss", "both")


def _node_tensors(
    model: nn.Module, data: Data
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``x``, ``edge_index``, ``y``, ``n_id`` on the model's device (``data`` is not moved).

    ``n_id`` is ``data.n_id`` when the graph has one (a client subgraph: the embedding rows of
    its nodes, see :meth:`GNN.node_inputs`), else ``None``.
    """
    device = model_device(model)
    x = None if data.x is None else data.x.to(device)
    n_id = getattr(data, "n_id", None)
    if n_id is not None:
        n_id = torch.as_tensor(n_id, dtype=torch.long).to(device)
    return x, data.edge_index.to(device), data.y.to(device), n_id


def _table_scales(model: GNN, n_id: torch.Tensor | None, scales: torch.Tensor) -> torch.Tensor:
    """Per-row scales of the whole embedding table: ``scales`` at rows ``n_id``, 1 elsewhere."""
    if n_id is None:
        return scales
    assert model.embedding is not None
    full = torch.ones(model.embedding.num_embeddings, dtype=scales.dtype, device=scales.device)
    full[n_id] = scales
    return full


def _mask(data: Data, mask: torch.Tensor | None, name: str, device: torch.device) -> torch.Tensor:
    num_nodes = int(data.num_nodes)
    if mask is None:
        return torch.ones(num_nodes, dtype=torch.bool, device=device)
    if mask.dtype != torch.bool or tuple(mask.shape) != (num_nodes,):
        raise ValueError(
            f"{name}: expected a boolean mask of shape ({num_nodes},), "
            f"got {mask.dtype} {tuple(mask.shape)}"
        )
    if not bool(mask.any()):
        raise ValueError(f"{name}: selects no nodes")
    return mask.to(device)


def _degrees_for(data: Data, degree: Any) -> torch.Tensor:
    degrees = node_degrees(data) if degree is None else torch.as_tensor(degree)
    if tuple(degrees.shape) != (int(data.num_nodes),):
        raise ValueError(
            f"degree: expected shape ({data.num_nodes},), one per node, got {tuple(degrees.shape)}"
        )
    return degrees


def train_gnn(
    model: GNN,
    data: Data,
    *,
    lr: float,
    epochs: int,
    optimizer: str = "sgd",
    momentum: float = 0.0,
    gamma: float = 0.0,
    degree: torch.Tensor | np.ndarray | None = None,
    degree_mode: str = "embedding",
    low: float = DEFAULT_LOW,
    high: float = DEFAULT_HIGH,
    seed: int = 0,
    weight_decay: float = 0.0,
    proximal_mu: float = 0.0,
) -> float:
    r"""Train ``model`` in place, full batch, on the nodes of ``data.train_mask``.

    Each epoch is one step on the mean cross-entropy over the train nodes. With ``gamma > 0``
    the degree rule of :mod:`fedlr.rates.degree` applies, with ``degree`` the degrees of all
    nodes (default :func:`node_degrees`, the local graph's in-degrees):

    * ``degree_mode="embedding"`` — embedding row :math:`v` learns at
      :math:`\mathrm{lr} \cdot s_v`, :math:`s_v` = ``degree_scales(degree, gamma=gamma)``
      (mean over the nodes of ``data``: a client's subgraph when it has ``n_id``). With SGD,
      and no weight decay, this is the gradient hook
      :func:`~fedlr.rates.degree.scale_row_grads`: SGD's step (momentum included) is linear
      in the gradient, so scaling row :math:`v`'s gradient by :math:`s_v` scales its step by
      :math:`s_v`, at no cost. Adam and Adagrad divide each element by the running root mean
      square of its own gradient, which cancels a fixed per-row scale (up to ``eps``), so for
      them, and for SGD with ``weight_decay > 0`` (the decay is added after the hook and would
      not be scaled), the step itself is scaled by :func:`~fedlr.rates.degree.row_scaled_updates`
      (exact, because their state does not depend on ``lr``).
    * ``degree_mode="loss"`` — the objective becomes
      :math:`\sum_{v \in T} w_v \ell_v / \sum_{v \in T} w_v` with
      :math:`w = ` ``degree_loss_weights(degree[train_mask], gamma=gamma)`` (RawlsGCN's concern,
      by re-weighting): this reaches the shared weights too, and needs no embeddings.
    * ``degree_mode="both"`` — both.

    ``gamma = 0`` is plain training, bit for bit: no hook, no update scaling, the unweighted
    mean loss.

    Parameters
    ----------
    model : GNN
        Trained in place on its own device; ``data`` is copied there, not moved.
    data : torch_geometric.data.Data
        ``x`` (may be ``None`` for an embeddings-only model), ``edge_index``, ``y``,
        ``train_mask``.
    lr : float
        Learning rate.
    epochs : int
        Full-batch steps, ``>= 0``.
    optimizer : {"sgd", "adam", "adagrad"}
        ``torch.optim.SGD`` (with ``momentum``), ``Adam`` or ``Adagrad``.
    momentum : float
        SGD only.
    gamma : float
        Exponent of the degree rule, ``>= 0``; 0 turns it off.
    degree : Tensor or ndarray, shape (N,), optional
        Node degrees; default :func:`node_degrees`.
    degree_mode : {"embedding", "loss", "both"}
        Where the rule applies (see above).
    low, high : float
        Bounds of the scales (:func:`~fedlr.rates.degree.degree_rule`).
    seed : int
        Seeds a forked RNG around the loop (the caller's global RNG is untouched).
    weight_decay : float
        The optimizer's L2 weight decay.
    proximal_mu : float
        FedProx's :math:`\frac{\mu}{2} \lVert w - w_0 \rVert^2` (Li et al. 2020), with
        :math:`w_0` the weights on entry; 0 for none.

    Returns
    -------
    float
        Mean over the epochs of the objective before each step (the weighted loss when the loss
        weights apply); 0.0 for no epochs.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    if degree_mode not in DEGREE_MODES:
        raise ValueError(
            f"degree_mode: expected one of {', '.join(DEGREE_MODES)}, got {degree_mode!r}"
        )
    _positive_int("epochs", epochs, lowest=0)
    degree_rule(gamma=gamma, low=low, high=high)  # checks gamma, low and high once
    if momentum != 0.0 and optimizer != "sgd":
        warnings.warn(f"momentum: ignored by {optimizer}", stacklevel=2)
    train_mask = getattr(data, "train_mask", None)
    if train_mask is None:
        raise ValueError("data: expected a train_mask")
    device = model_device(model)
    train_mask = _mask(data, train_mask, "train_mask", device)
    x, edge_index, y, n_id = _node_tensors(model, data)

    params = list(model.parameters())
    anchors = [p.detach().clone() for p in params] if proximal_mu > 0 else []
    opt: torch.optim.Optimizer
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    elif optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay)

    row_scales: torch.Tensor | None = None
    loss_weights: torch.Tensor | None = None
    if gamma > 0:
        degrees = _degrees_for(data, degree).to(device)
        if degree_mode in ("embedding", "both"):
            if model.embedding is None:
                warnings.warn(
                    f"degree_mode: {degree_mode!r} scales embedding rows, but the model has "
                    "no node embeddings (embedding_dim = 0); only loss weights apply",
                    stacklevel=2,
                )
            else:
                row_scales = _table_scales(
                    model, n_id, degree_scales(degrees, gamma=gamma, low=low, high=high)
                )
        if degree_mode in ("loss", "both"):
            loss_weights = degree_loss_weights(degrees[train_mask], gamma=gamma, low=low, high=high)
    # SGD without decay: scale gradients (free); otherwise scale each step (one copy per step).
    hook_rows = row_scales is not None and optimizer == "sgd" and weight_decay == 0.0
    scale_steps = row_scales is not None and not hook_rows

    handle = None
    if hook_rows:
        assert model.embedding is not None and row_scales is not None
        handle = scale_row_grads(model.embedding.weight, row_scales)
    total = 0.0
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            model.train()
            for _ in range(epochs):
                opt.zero_grad()
                logits = model(x, edge_index, n_id)
                if loss_weights is None:
                    loss = F.cross_entropy(logits[train_mask], y[train_mask])
                else:
                    per_node = F.cross_entropy(logits[train_mask], y[train_mask], reduction="none")
                    loss = weighted_node_loss(per_node, loss_weights.to(per_node.dtype))
                total += float(loss.detach())
                if anchors:
                    prox = sum(((p - a) ** 2).sum() for p, a in zip(params, anchors, strict=True))
                    loss = loss + 0.5 * proximal_mu * prox
                loss.backward()
                if scale_steps:
                    assert model.embedding is not None and row_scales is not None
                    with row_scaled_updates(model.embedding.weight, row_scales):
                        opt.step()
                else:
                    opt.step()
    finally:
        if handle is not None:
            handle.remove()
    return total / max(epochs, 1)


@torch.no_grad()
def evaluate_gnn(
    model: GNN, data: Data, mask: torch.Tensor | None = None
) -> tuple[float, float, np.ndarray]:
    """Cross-entropy, accuracy and per-node correctness on the nodes of ``mask``.

    Parameters
    ----------
    model : GNN
        Evaluated on its device, in eval mode.
    data : torch_geometric.data.Data
        The graph (all nodes take part in message passing).
    mask : Tensor of bool, shape (N,), optional
        The nodes scored, e.g. ``data.test_mask``; default all nodes. Must select at least one.

    Returns
    -------
    loss : float
        Mean cross-entropy over the masked nodes.
    accuracy : float
        Fraction of them classified correctly.
    per_node_correct : ndarray of bool, shape (mask.sum(),)
        Correctness of each masked node, in node order (feed it, with ``degree[mask]``, to
        :func:`fedlr.metrics.degree.degree_bucket_fairness`).
    """
    device = model_device(model)
    selected = _mask(data, mask, "mask", device)
    x, edge_index, y, n_id = _node_tensors(model, data)
    model.eval()
    logits = model(x, edge_index, n_id)[selected]
    labels = y[selected]
    correct = logits.argmax(dim=1) == labels
    loss = float(F.cross_entropy(logits, labels))
    return loss, float(correct.float().mean()), correct.cpu().numpy()


def gradient_norms_by_node(
    model: GNN,
    data: Data,
    *,
    mask: torch.Tensor | None = None,
    gamma: float = 0.0,
    degree: torch.Tensor | np.ndarray | None = None,
    low: float = DEFAULT_LOW,
    high: float = DEFAULT_HIGH,
) -> np.ndarray:
    r"""Norm of the loss gradient at each node's input row, at the current weights.

    .. math:: g_v = s_v \left\lVert \frac{\partial L}{\partial e_v} \right\rVert_2,
              \qquad L = \frac{1}{|M|} \sum_{u \in M} \ell_u ,

    with :math:`e_v` the node's embedding row when the model has embeddings, else its feature
    row :math:`x_v` (differentiated with ``x.requires_grad``), :math:`M` = ``mask`` (default
    ``data.train_mask``, or all nodes without one) and :math:`s_v` the degree scales
    ``degree_scales(degree, gamma=gamma, low=low, high=high)`` (1 with ``gamma = 0``): the norm
    of the *scaled* gradient, i.e. of the SGD step per unit ``lr`` under the degree rule.
    ``fedlr.metrics.degree.loglog_slope(norms, degree)`` is then about 0.5 for GCN and 1 for
    sum aggregation when neighbours' errors agree (homophilous labels), and about 0 after
    scaling with the matching ``gamma``. Parameters' ``.grad`` are not touched.

    Returns
    -------
    ndarray of float64, shape (N,)
        One norm per node; 0 for a node outside the receptive field of every node of ``M``.
    """
    device = model_device(model)
    if mask is None:
        mask = getattr(data, "train_mask", None)
    selected = _mask(data, mask, "mask", device)
    x, edge_index, y, n_id = _node_tensors(model, data)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            if model.embedding is not None:
                wrt = model.embedding.weight
            else:
                if x is None:
                    raise ValueError("data: expected node features x (the model has no embeddings)")
                x = x.detach().clone().requires_grad_(True)
                wrt = x
            logits = model(x, edge_index, n_id)
            loss = F.cross_entropy(logits[selected], y[selected])
            (grad,) = torch.autograd.grad(loss, wrt)
    finally:
        model.train(was_training)
    if model.embedding is not None and n_id is not None:
        grad = grad[n_id]  # this graph's rows of the table, in node order
    norms = grad.detach().flatten(1).norm(dim=1).to(torch.float64)
    if gamma > 0:
        degrees = _degrees_for(data, degree).to(device)
        norms = norms * degree_scales(degrees, gamma=gamma, low=low, high=high).to(norms)
    else:
        degree_rule(gamma=gamma, low=low, high=high)  # still reject a bad gamma
    return norms.cpu().numpy()
