r"""Degree-aware learning rates for graph neural networks: per-node scales from node degrees.

The rule
--------
Node :math:`v` with degree :math:`d_v`, among nodes whose mean degree is :math:`\bar d`, gets

.. math::

    s_v = \operatorname{clip}\!\left(
        \left(\frac{d_v + 1}{\bar d + 1}\right)^{-\gamma},\ \mathrm{low},\ \mathrm{high}\right),
    \qquad \bar d = \frac1N \sum_{u} d_u .

The mean is over the raw degrees of the nodes given, and the 1 is added to it; since
:math:`\frac1N\sum_u (d_u + 1) = \bar d + 1`, adding it before averaging is the same. So the
reference is the mean degree with the self-loop that GCN adds (:math:`\hat d = d + 1`,
:math:`\hat A = A + I`), and isolated nodes (:math:`d_v = 0`) are fine. A node of mean degree
gets exactly 1, hubs get less, leaves more; :math:`\gamma = 0` turns the rule off (every scale
is exactly 1.0). ``0 < low <= 1 <= high``, so the bounds never move a node of mean degree, and no
node is scaled beyond ``[low, high]``, whatever its degree.

Degrees are whatever the caller counts, typically in-degrees without self-loops,
``torch_geometric.utils.degree(edge_index[1], num_nodes)``. In a federation a client passes the
degrees of its *local* subgraph (boundary nodes then count only their local neighbours): the
mean, and so the reference, is the client's own, and no client needs global degrees, which would
leak the structure of other clients' subgraphs.

Why
---
For a layer :math:`h = \hat A X W` the gradient reaching input row :math:`j` is
:math:`\sum_i \hat A_{ij} \delta_i W^\top`: when the errors :math:`\delta_i` of neighbours agree
(homophily) its norm grows with the column sum of :math:`\hat A`, roughly
:math:`\sqrt{\hat d_j}` for GCN's symmetric normalisation and :math:`d_j` for sum aggregation.
A learnable embedding row of a hub therefore takes larger steps than a leaf's;
:math:`\gamma = 1/2` (GCN) or :math:`\gamma = 1` (sum) cancels that growth, and over-corrects
when neighbours' errors do not agree (slopes of :math:`\log\lVert\partial L/\partial
x_j\rVert` against :math:`\log(d_j + 1)` at initialisation, as recorded in the project's methods
notes: 0.46 coherent / 0.07 incoherent for GCNConv, 1.03 / 0.57 for GraphConv), so
:math:`\gamma` is a knob, not a constant.
For the *shared* weights :math:`W` the same scales serve as per-node loss weights
(:func:`degree_loss_weights`, :func:`weighted_node_loss`), which up-weight low-degree nodes.
RawlsGCN (Kang et al., WWW 2022, "RawlsGCN: Towards Rawlsian Difference Principle on Graph
Convolutional Network") shows that low-degree nodes get the higher loss and that the gradient of
:math:`W` is dominated by high-degree nodes; it fixes this without new parameters by making the
normalised adjacency doubly stochastic (RawlsGCN-Graph) or by pre-conditioning the gradient with
it (RawlsGCN-Grad). The loss weights here are the plain re-weighting view of that idea, not the
paper's algorithm.

Applying the scales
-------------------
* :func:`scale_row_grads` — a gradient hook on an embedding table (``nn.Embedding.weight`` or a
  parameter of shape ``(num_nodes, ...)``) that multiplies row :math:`v`'s gradient by
  :math:`s_v`. With SGD (momentum included, no weight decay) this *is* a per-row learning rate
  :math:`\mathrm{lr} \cdot s_v`. Adam, AdamW, Adagrad and RMSprop divide each element's update
  by a running root mean square of its own gradient, so a fixed per-row gradient scale cancels
  (up to ``eps``): there the hook does almost nothing.
* :func:`row_scaled_updates` — for those optimizers: a context manager around
  ``optimizer.step()`` that scales each row's *update*, which is a per-row learning rate for any
  optimizer whose step is proportional to ``lr`` and whose state does not depend on ``lr``
  (SGD with or without momentum and weight decay, Adam, AdamW, Adagrad, RMSprop).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import numpy as np

from fedlr.rates._checks import _number
import torch
from torch.utils.hooks import RemovableHandle

Degrees = TypeVar("Degrees", np.ndarray, torch.Tensor)
DegreeRule = Callable[[Degrees], Degrees]

DEFAULT_GAMMA = 0.5
DEFAULT_LOW = 0.1
DEFAULT_HIGH = 10.0


def _check_real(name: str, value: object, lowest: float, highest: float, allowed: str) -> float:
    return _number(name, value, allowed, lambda v: lowest <= v <= highest)


def degree_rule(
    *, gamma: float = DEFAULT_GAMMA, low: float = DEFAULT_LOW, high: float = DEFAULT_HIGH
) -> DegreeRule:
    r"""Make the degree rule: ``degrees -> scales``.

    .. math::

        s_v = \operatorname{clip}\!\left(\left(\frac{d_v + 1}{\bar d + 1}\right)^{-\gamma},\
            \mathrm{low},\ \mathrm{high}\right)

    Parameters
    ----------
    gamma : float
        Exponent :math:`\gamma`; finite and ``>= 0``. 0 turns the rule off (all scales 1.0);
        1/2 cancels GCN's :math:`\sqrt{\hat d}` gradient growth, 1 that of sum aggregation.
    low, high : float
        Bounds of the scales; ``0 < low <= 1 <= high``, finite.

    Returns
    -------
    callable
        ``rule(degrees)``: ``degrees`` of shape ``(N,)``, integer or float, finite and ``>= 0``;
        :math:`\bar d` is their mean. Returns the scales, shape ``(N,)``: a numpy array for a
        numpy array (or list), a tensor on the same device for a tensor. Floating inputs keep
        their dtype; integer inputs give float64 (numpy) or torch's default dtype (torch). The
        arithmetic is done in float64 either way, so numpy and torch agree.

    Examples
    --------
    A star: the centre has degree 3, the three leaves degree 1, so :math:`\bar d = 1.5` and the
    scales are :math:`(4 / 2.5)^{-\gamma}` and :math:`(2 / 2.5)^{-\gamma}`:

    >>> rule = degree_rule(gamma=1.0, low=0.1, high=10.0)
    >>> rule(np.array([3, 1, 1, 1])).tolist()
    [0.625, 1.25, 1.25, 1.25]
    >>> degree_rule(gamma=0.5)(torch.tensor([3.0, 1.0, 1.0, 1.0]))
    tensor([0.7906, 1.1180, 1.1180, 1.1180])
    """
    gamma = _check_real("gamma", gamma, 0.0, math.inf, "a finite number >= 0")
    low = _check_real("low", low, 0.0, 1.0, "a number in (0, 1]")
    if low == 0.0:
        raise ValueError(f"low: expected a number in (0, 1], got {low!r}")
    high = _check_real("high", high, 1.0, math.inf, "a finite number >= 1")

    def rule(degrees: Degrees) -> Degrees:
        if isinstance(degrees, torch.Tensor):
            return _torch_scales(degrees, gamma, low, high)
        return _numpy_scales(np.asarray(degrees), gamma, low, high)

    return rule


def _numpy_scales(degrees: np.ndarray, gamma: float, low: float, high: float) -> np.ndarray:
    if degrees.ndim != 1:
        raise ValueError(f"degrees: expected a 1-D array of shape (N,), got shape {degrees.shape}")
    if not (np.issubdtype(degrees.dtype, np.integer) or np.issubdtype(degrees.dtype, np.floating)):
        raise ValueError(f"degrees: expected integer or float degrees, got dtype {degrees.dtype}")
    out_dtype = degrees.dtype if np.issubdtype(degrees.dtype, np.floating) else np.float64
    values = degrees.astype(np.float64)
    if values.size == 0:
        return values.astype(out_dtype)
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError("degrees: expected finite degrees >= 0")
    ratio = (values + 1.0) / (values.mean() + 1.0)
    return np.clip(ratio ** (-gamma), low, high).astype(out_dtype)


def _torch_scales(degrees: torch.Tensor, gamma: float, low: float, high: float) -> torch.Tensor:
    if degrees.ndim != 1:
        raise ValueError(
            f"degrees: expected a 1-D tensor of shape (N,), got shape {tuple(degrees.shape)}"
        )
    if degrees.dtype == torch.bool or degrees.is_complex():
        raise ValueError(f"degrees: expected integer or float degrees, got dtype {degrees.dtype}")
    out_dtype = degrees.dtype if degrees.is_floating_point() else torch.get_default_dtype()
    values = degrees.detach().to(torch.float64)
    if values.numel() == 0:
        return values.to(out_dtype)
    if not bool(torch.isfinite(values).all()) or bool((values < 0).any()):
        raise ValueError("degrees: expected finite degrees >= 0")
    ratio = (values + 1.0) / (values.mean() + 1.0)
    return torch.clamp(ratio ** (-gamma), low, high).to(out_dtype)


def degree_scales(
    degrees: Degrees,
    *,
    gamma: float = DEFAULT_GAMMA,
    low: float = DEFAULT_LOW,
    high: float = DEFAULT_HIGH,
) -> Degrees:
    """Per-node scales ``degree_rule(gamma=gamma, low=low, high=high)(degrees)``.

    Examples
    --------
    >>> degree_scales(np.array([3, 1, 1, 1]), gamma=1.0).tolist()
    [0.625, 1.25, 1.25, 1.25]

    Mean degree 100, so unclipped 101 / 1 = 101 for the leaves and 101 / 401 = 0.25 for the hub:

    >>> degree_scales(np.array([0, 0, 0, 400]), gamma=1.0, low=0.5, high=2.0).tolist()
    [2.0, 2.0, 2.0, 0.5]
    """
    return degree_rule(gamma=gamma, low=low, high=high)(degrees)


# ---------------------------------------------------------------------------------------------
# Learnable node embeddings: one learning rate per row.
# ---------------------------------------------------------------------------------------------


def _row_scales_for(param: torch.Tensor, scales: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``scales`` as a tensor on ``param``'s device and dtype, shaped to broadcast over rows."""
    if not isinstance(param, torch.Tensor) or param.ndim < 1:
        raise ValueError("param: expected a tensor of shape (num_nodes, ...)")
    row_scales = torch.as_tensor(scales).detach()
    if row_scales.ndim != 1 or row_scales.shape[0] != param.shape[0]:
        raise ValueError(
            f"scales: expected shape ({param.shape[0]},), one per row of param, "
            f"got {tuple(row_scales.shape)}"
        )
    row_scales = row_scales.to(device=param.device, dtype=param.dtype)
    if not bool(torch.isfinite(row_scales).all()) or bool((row_scales < 0).any()):
        raise ValueError("scales: expected finite scales >= 0")
    # A copy: later changes to the caller's array do not reach the hook.
    return row_scales.clone().view(-1, *([1] * (param.ndim - 1)))


def scale_row_grads(param: torch.Tensor, scales: np.ndarray | torch.Tensor) -> RemovableHandle:
    r"""Multiply row :math:`v` of ``param``'s gradient by ``scales[v]``, from now on.

    Registers ``param.register_hook(lambda g: g * scales[:, None])`` (dense and sparse
    gradients, e.g. ``nn.Embedding(..., sparse=True)``). With SGD, momentum included, the step
    of row :math:`v` is then that of a learning rate :math:`\mathrm{lr} \cdot s_v`; SGD's
    ``weight_decay`` is added after the hook and so is not scaled. Adam, AdamW, Adagrad and
    RMSprop normalise each element by its own gradient's running size, which cancels a fixed
    scale (up to ``eps``): for them use :func:`row_scaled_updates`. Gradient clipping sees the
    scaled gradient.

    Parameters
    ----------
    param : Tensor, shape (num_nodes, ...)
        A tensor that requires grad, typically ``embedding.weight``.
    scales : ndarray or Tensor, shape (num_nodes,)
        Finite and ``>= 0``, e.g. :func:`degree_scales`; copied to ``param``'s device and dtype
        now, so later changes to ``scales`` have no effect.

    Returns
    -------
    RemovableHandle
        ``handle.remove()`` restores plain gradients.

    Examples
    --------
    >>> weight = torch.nn.Parameter(torch.ones(3, 2))
    >>> handle = scale_row_grads(weight, torch.tensor([0.5, 1.0, 2.0]))
    >>> weight.sum().backward()
    >>> weight.grad
    tensor([[0.5000, 0.5000],
            [1.0000, 1.0000],
            [2.0000, 2.0000]])
    >>> handle.remove()
    """
    if not isinstance(param, torch.Tensor) or not param.requires_grad:
        raise ValueError("param: expected a tensor that requires grad, of shape (num_nodes, ...)")
    row_scales = _row_scales_for(param, scales)

    def hook(grad: torch.Tensor) -> torch.Tensor:
        # expand_as, not broadcasting: sparse COO gradients multiply only by a same-shape tensor.
        return grad * row_scales.expand_as(grad)

    return param.register_hook(hook)


@contextmanager
def row_scaled_updates(param: torch.Tensor, scales: np.ndarray | torch.Tensor) -> Iterator[None]:
    r"""Scale the update that the enclosed ``optimizer.step()`` makes to each row of ``param``.

    After the block, row :math:`v` is :math:`w_v + s_v (w'_v - w_v)`, where :math:`w` is
    ``param`` before the block and :math:`w'` after it. For an optimizer whose step is
    :math:`\mathrm{lr}` times something that does not depend on :math:`\mathrm{lr}` (SGD with
    momentum and weight decay, Adam, AdamW, Adagrad, RMSprop), this is exactly a per-row learning
    rate :math:`\mathrm{lr} \cdot s_v`, and the optimizer's state is what it would be. It copies
    ``param`` once per step. When every scale is 1.0 ``param`` is left bit-identical.

    Parameters
    ----------
    param : Tensor, shape (num_nodes, ...)
        The parameter the optimizer updates, typically ``embedding.weight``.
    scales : ndarray or Tensor, shape (num_nodes,)
        Finite and ``>= 0``, e.g. :func:`degree_scales`.

    Examples
    --------
    >>> weight = torch.nn.Parameter(torch.zeros(2, 1))
    >>> optimizer = torch.optim.Adam([weight], lr=0.1)
    >>> weight.sum().backward()
    >>> with row_scaled_updates(weight, np.array([0.5, 2.0])):
    ...     optimizer.step()
    >>> weight.detach().round(decimals=4)  # Adam's first step is -lr per element
    tensor([[-0.0500],
            [-0.2000]])
    """
    row_scales = _row_scales_for(param, scales)
    before = param.detach().clone()
    yield
    with torch.no_grad():
        # w' + (s - 1)(w' - w): adds exactly 0 where s == 1, unlike w + s (w' - w).
        param.add_((row_scales - 1.0) * (param - before))


# ---------------------------------------------------------------------------------------------
# Shared GNN weights: per-node loss weights (the re-weighting view of RawlsGCN).
# ---------------------------------------------------------------------------------------------


def degree_loss_weights(
    degrees: Degrees,
    *,
    gamma: float = DEFAULT_GAMMA,
    low: float = DEFAULT_LOW,
    high: float = DEFAULT_HIGH,
) -> Degrees:
    r"""Per-node loss weights :math:`w_v = s_v / \frac1N\sum_u s_u`: the scales, mean 1.

    Pass the degrees of the nodes the loss runs over, e.g. ``deg[train_mask]`` with ``deg``
    counted on the whole (local) graph; both :math:`\bar d` and the normalisation are over them.
    Between the bounds the normalisation cancels :math:`(\bar d + 1)^{\gamma}`, so
    :math:`w_v \propto (d_v + 1)^{-\gamma}`. With :math:`\gamma = 0` every weight is exactly 1.0.

    Examples
    --------
    The star of :func:`degree_rule`: scales (0.625, 1.25, 1.25, 1.25), mean 1.09375 = 35/32, so
    the weights are (4/7, 8/7, 8/7, 8/7):

    >>> degree_loss_weights(np.array([3, 1, 1, 1]), gamma=1.0).round(6).tolist()
    [0.571429, 1.142857, 1.142857, 1.142857]
    """
    scales = degree_scales(degrees, gamma=gamma, low=low, high=high)
    if scales.shape[0] == 0:
        return scales
    return scales / scales.mean()


def weighted_node_loss(per_node_loss: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    r"""Weighted mean :math:`\sum_v w_v \ell_v / \sum_v w_v` of per-node losses.

    Use ``reduction="none"`` for the per-node loss, e.g.
    ``F.cross_entropy(out[train_mask], y[train_mask], reduction="none")``, and weights from
    :func:`degree_loss_weights` (``>= 0`` with a positive sum; not checked here, which would
    synchronise with the device every step). With all weights equal it is the plain mean.

    Examples
    --------
    >>> weighted_node_loss(torch.tensor([1.0, 2.0, 4.0]), torch.tensor([2.0, 1.0, 1.0]))
    tensor(2.)
    """
    if per_node_loss.ndim != 1:
        raise ValueError(f"per_node_loss: expected shape (N,), got {tuple(per_node_loss.shape)}")
    if tuple(weights.shape) != tuple(per_node_loss.shape):
        raise ValueError(
            f"weights: expected the shape of per_node_loss, {tuple(per_node_loss.shape)}, "
            f"got {tuple(weights.shape)}"
        )
    weights = torch.as_tensor(weights, dtype=per_node_loss.dtype, device=per_node_loss.device)
    return (weights * per_node_loss).sum() / weights.sum()
