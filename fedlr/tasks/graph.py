r"""Graph task: full-batch node classification with PyG layers and degree-aware node rates.

A model is two message-passing layers of one kind (Kipf & Welling 2017; Hamilton et al. 2017;
Xu et al. 2019), with :math:`\hat A = A + I`, :math:`\hat D` its degrees and
:math:`\mathcal N(v)` the in-neighbours of :math:`v`:

* ``gcn`` — ``GCNConv``: :math:`H' = \hat D^{-1/2} \hat A \hat D^{-1/2} H W`;
* ``sage`` — ``SAGEConv`` with mean aggregation:
  :math:`h'_v = W_1 h_v + W_2 \frac{1}{|\mathcal N(v)|} \sum_{u \in \mathcal N(v)} h_u`;
* ``gin`` — ``GINConv`` with a two-layer MLP and sum aggregation:
  :math:`h'_v = \mathrm{MLP}\big((1 + \epsilon) h_v + \sum_{u \in \mathcal N(v)} h_u\big)`,
  :math:`\epsilon = 0`.

Layer 0 reads the node features :math:`x_v` and, with ``embedding_dim > 0``, a learnable row
:math:`e_v` of an ``nn.Embedding(num_nodes, embedding_dim)``: :math:`[x_v \,\|\, e_v]`, or
:math:`e_v` alone with ``num_features = 0``. Node :math:`v` of the graph is row :math:`v` of the
table (full batch: the model is tied to one node set, e.g. one client's subgraph).

Everything is pure PyTorch: these layers aggregate with ``torch_geometric.utils.scatter`` (torch's
``scatter_reduce``), so neither pyg-lib, torch-scatter nor torch-sparse is needed; there is no
neighbour sampling. Loops run on the device the model is on, like :mod:`fedlr.tasks.tabular`
(whose :func:`pick_device` and :func:`model_device` are re-exported here).

Degree-aware rates (:mod:`fedlr.rates.degree`): with ``gamma > 0``, :func:`train_gnn` gives
embedding row :math:`v` the learning rate :math:`\mathrm{lr} \cdot s_v`,
:math:`s_v = \operatorname{clip}(((d_v + 1)/(\bar d + 1))^{-\gamma}, \mathrm{low}, \mathrm{high})`,
and/or weights node :math:`v`'s loss by :math:`w_v \propto s_v` (mean 1 over the train nodes).
:func:`gradient_norms_by_node` is the diagnostic that motivates it: the norm of
:math:`\partial L / \partial e_v` grows with degree, like :math:`(d + 1)^{1/2}` for GCN and
:math:`(d + 1)^{1}` for sum aggregation when neighbours' errors agree.
"""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

with warnings.catch_warnings():  # PyG 2.8 calls torch.jit.script at import; torch 2.13 warns
    warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", DeprecationWarning)
    from torch_geometric.data import Data
    from torch_geometric.nn import GCNConv, GINConv, SAGEConv
    from torch_geometric.utils import degree as pyg_degree

from fedlr.data.graphs import GraphClientData, GraphRun, build_graph_run
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
from fedlr.rates.noise import loss_mixture_noise, mean_margin_noise
from fedlr.tasks.base import (
    GRAD_DEGREE,
    GRAD_NORM,
    GRAD_NORM_SCALED,
    TEST_CORRECT,
    TEST_DEGREE,
    ClientContext,
    RoundPlan,
    TrainReport,
    describe_truth,
)
from fedlr.tasks.tabular import model_device, pick_device

__all__ = [
    "GNN",
    "GNN_KINDS",
    "build_gnn",
    "evaluate_gnn",
    "gradient_norms_by_node",
    "model_device",
    "node_degrees",
    "pick_device",
    "train_gnn",
]

GNN_KINDS = ("gcn", "sage", "gin")
OPTIMIZERS = ("sgd", "adam", "adagrad")
DEGREE_MODES = ("embedding", "loss", "both")


def _conv(kind: str, in_channels: int, out_channels: int, hidden: int) -> nn.Module:
    if kind == "gcn":
        return GCNConv(in_channels, out_channels)
    if kind == "sage":
        return SAGEConv(in_channels, out_channels, aggr="mean")
    mlp = nn.Sequential(nn.Linear(in_channels, hidden), nn.ReLU(), nn.Linear(hidden, out_channels))
    return GINConv(mlp, eps=0.0, train_eps=False)  # aggr="add": sum aggregation


class GNN(nn.Module):
    """Two message-passing layers: ``conv -> ReLU -> conv``, optional node embeddings first.

    Build it with :func:`build_gnn` (seeded). ``forward(x, edge_index)`` returns logits of shape
    ``(N, num_classes)``; ``x`` of shape ``(N, num_features)`` (ignored, may be ``None``, when
    ``num_features == 0``).
    """

    def __init__(
        self,
        kind: str,
        num_features: int,
        num_classes: int,
        hidden: int,
        num_nodes: int | None = None,
        embedding_dim: int = 0,
    ) -> None:
        super().__init__()
        self.kind, self.num_features, self.num_classes = kind, num_features, num_classes
        self.hidden, self.num_nodes, self.embedding_dim = hidden, num_nodes, embedding_dim
        self.embedding: nn.Embedding | None = None
        if embedding_dim > 0:
            assert num_nodes is not None  # checked by build_gnn
            self.embedding = nn.Embedding(num_nodes, embedding_dim)
        in_channels = num_features + embedding_dim
        self.conv1 = _conv(kind, in_channels, hidden, hidden)
        self.conv2 = _conv(kind, hidden, num_classes, hidden)

    def node_inputs(self, x: torch.Tensor | None, n_id: torch.Tensor | None = None) -> torch.Tensor:
        """Layer-0 input rows: ``x``, ``[x || embedding]`` or the embedding alone.

        ``n_id`` (int64, one per node of the graph passed in) names the table row of each node:
        a client's subgraph reads rows ``n_id`` = its nodes' global ids of the federation's
        table. Without it, node ``v`` is row ``v`` and the graph must have one node per row.
        """
        if self.embedding is None:
            if x is None:
                raise ValueError("x: expected node features of shape (N, num_features), got None")
            return x
        table = self.embedding.weight if n_id is None else self.embedding(n_id)
        if self.num_features == 0:
            return table
        if x is None or x.shape[0] != table.shape[0]:
            shape = None if x is None else tuple(x.shape)
            raise ValueError(
                f"x: expected shape ({table.shape[0]}, {self.num_features}), one row per "
                f"embedding row, got {shape}"
            )
        return torch.cat([x, table], dim=1)

    def forward(
        self,
        x: torch.Tensor | None,
        edge_index: torch.Tensor,
        n_id: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits of shape ``(N, num_classes)``; ``n_id`` as in :meth:`node_inputs`."""
        hidden = F.relu(self.conv1(self.node_inputs(x, n_id), edge_index))
        return self.conv2(hidden, edge_index)


def _positive_int(name: str, value: Any, lowest: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < lowest:
        raise ValueError(f"{name}: expected an integer >= {lowest}, got {value!r}")
    return int(value)


def build_gnn(
    kind: str,
    num_features: int,
    num_classes: int,
    hidden: int,
    num_nodes: int | None = None,
    embedding_dim: int = 0,
    *,
    seed: int = 0,
) -> GNN:
    """A two-layer GNN whose initial weights are a function of ``seed`` only.

    Parameters
    ----------
    kind : {"gcn", "sage", "gin"}
        ``GCNConv``; ``SAGEConv`` with mean aggregation; ``GINConv`` (sum) with an MLP
        ``Linear -> ReLU -> Linear`` of width ``hidden``.
    num_features : int
        Width of ``x``; 0 for embeddings only (then ``embedding_dim`` must be > 0).
    num_classes, hidden : int
        Output and hidden widths, ``>= 1``.
    num_nodes : int, optional
        Rows of the embedding table; required when ``embedding_dim > 0``.
    embedding_dim : int, default 0
        Width of the learnable node embeddings; 0 for none.
    seed : int
        Seeds a forked RNG: the caller's global RNG state is untouched.

    Examples
    --------
    >>> model = build_gnn("gcn", 3, 2, 8, num_nodes=4, embedding_dim=5, seed=0)
    >>> tuple(model.embedding.weight.shape), model.conv1.in_channels
    ((4, 5), 8)
    """
    if kind not in GNN_KINDS:
        raise ValueError(f"kind: expected one of {', '.join(GNN_KINDS)}, got {kind!r}")
    _positive_int("num_features", num_features, lowest=0)
    _positive_int("num_classes", num_classes)
    _positive_int("hidden", hidden)
    _positive_int("embedding_dim", embedding_dim, lowest=0)
    if embedding_dim > 0:
        _positive_int("num_nodes", num_nodes)
    if num_features == 0 and embedding_dim == 0:
        raise ValueError("embedding_dim: expected > 0 when num_features is 0 (no input at all)")
    with torch.random.fork_rng(devices=[]):  # built on the CPU: only its RNG is seeded
        torch.manual_seed(seed)
        return GNN(kind, num_features, num_classes, hidden, num_nodes, embedding_dim)


def node_degrees(data: Data) -> torch.Tensor:
    """In-degrees without self-loops, ``degree(edge_index[1], num_nodes)``, as float."""
    return pyg_degree(data.edge_index[1], num_nodes=data.num_nodes, dtype=torch.float)


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


# -- the graph task of a run: what the ClientApp and ServerApp call ----------------------------

DATA_KEYS = (
    "dataset",
    "seed",
    "num-clients",
    "data-dir",
    "graph-split",
    "graph-labels",
    "normalize-features",
    "ba-nodes",
    "ba-m",
    "test-fraction",
    "label-noise",
    "noisy-clients",
    "noisy-client-ids",
    "noise-rate-min",
    "noise-rate-max",
    "hard-clean-clients",
    "feature-noise-clients",
    "feature-noise-sigma",
)
"""The config keys that decide a graph run's clients (a change rebuilds them)."""


@functools.lru_cache(maxsize=4)
def _graph_run(data_key: str) -> GraphRun:
    return build_graph_run(json.loads(data_key))


def graph_run(cfg: Mapping[str, Any]) -> GraphRun:
    """The run's graph clients (:func:`~fedlr.data.graphs.build_graph_run`), once per process."""
    return _graph_run(json.dumps({k: cfg[k] for k in DATA_KEYS}, sort_keys=True))


def client_data(cfg: Mapping[str, Any], partition_id: int) -> GraphClientData:
    """One client's subgraph; ``partition_id`` must be in ``[0, num-clients)``."""
    clients = graph_run(cfg).clients
    if not 0 <= partition_id < len(clients):
        raise ValueError(
            f"partition-id: expected 0..{len(clients) - 1} (num-clients = {len(clients)}), "
            f"got {partition_id}"
        )
    return clients[partition_id]


def build_model(cfg: Mapping[str, Any], seed: int | None = None) -> GNN:
    """The run's GNN (``gnn``, ``hidden``, ``embedding-dim``).

    One embedding row per node of the whole graph; initial weights are a function of ``seed``
    (default: the run seed).
    """
    run = graph_run(cfg)
    return build_gnn(
        str(cfg["gnn"]),
        run.num_features,
        run.num_classes,
        int(cfg["hidden"]),
        num_nodes=run.num_nodes,
        embedding_dim=int(cfg["embedding-dim"]),
        seed=int(cfg["seed"] if seed is None else seed),
    )


def rule_degrees(client: GraphClientData, cfg: Mapping[str, Any]) -> torch.Tensor:
    """The degrees the rule reads (``degree-source``): in the client's subgraph or the graph.

    ``local`` is what a client of a real federation sees: a boundary node's edges to other
    clients are missing. ``global`` needs the whole graph's degrees (a client knows them only
    if the data owner shares them); it is what the fairness metrics bucket by.
    """
    source = client.local_degree if cfg["degree-source"] == "local" else client.global_degree
    return source.to(torch.float)


@torch.no_grad()
def _train_log_probs(model: GNN, client: GraphClientData) -> tuple[np.ndarray, np.ndarray]:
    x, edge_index, y, n_id = _node_tensors(model, client.data)
    model.eval()
    mask = client.data.train_mask.to(edge_index.device)
    log_probs = F.log_softmax(model(x, edge_index, n_id)[mask], dim=1)
    return log_probs.cpu().numpy(), y[mask].cpu().numpy()


def received_loss(model: GNN, client: GraphClientData) -> float:
    """Mean cross-entropy of the received model on the client's (possibly noisy) train nodes."""
    return evaluate_gnn(model, client.data, client.data.train_mask)[0]


def estimate_noise(model: GNN, client: GraphClientData, estimator: str, *, seed: int = 0) -> float:
    """The client's noise estimate from the received model, on its train nodes.

    As :func:`fedlr.tasks.tabular.estimate_noise`: ``loss`` (2-component loss mixture),
    ``loss-margin`` (mean margin loss), ``oracle`` (fraction of train labels changed).
    """
    if estimator == "oracle":
        return float(client.flip_fraction)
    if estimator in ("loss", "loss-margin"):
        log_probs, labels = _train_log_probs(model, client)
        if estimator == "loss-margin":
            return mean_margin_noise(log_probs, labels)
        return loss_mixture_noise(-log_probs[np.arange(len(labels)), labels], seed=seed)
    raise ValueError(f"estimator: expected loss, loss-margin or oracle, got {estimator!r}")


def train_client(
    model: GNN,
    client: GraphClientData,
    cfg: Mapping[str, Any],
    *,
    lr: float,
    degree_rule: bool,
    proximal_mu: float = 0.0,
    seed: int = 0,
) -> dict[str, list[float]]:
    """One round of local training; returns the degree diagnostic taken before it.

    First, at the received weights, :func:`gradient_norms_by_node` of every node of the
    subgraph (train loss) and the same times the node's scale :math:`s_v` with the config's
    ``degree-gamma`` (whether or not this strategy applies it): the server pools them into
    the gradient-norm vs degree slope before and after scaling. Then :func:`train_gnn` for
    ``local-epochs`` full-batch steps at ``lr``, with the rule on (``degree-gamma``,
    ``degree-mode``, ``degree-source``) when ``degree_rule``.
    """
    degrees = rule_degrees(client, cfg)
    gamma = float(cfg["degree-gamma"])
    low, high = float(cfg["degree-low"]), float(cfg["degree-high"])
    norms = gradient_norms_by_node(model, client.data, mask=client.data.train_mask)
    scaled = norms * degree_scales(degrees.numpy(), gamma=gamma, low=low, high=high)
    train_gnn(
        model,
        client.data,
        lr=lr,
        epochs=int(cfg["local-epochs"]),
        optimizer=str(cfg["optimizer"]),
        momentum=float(cfg["momentum"]) if cfg["optimizer"] == "sgd" else 0.0,
        gamma=gamma if degree_rule else 0.0,
        degree=degrees,
        degree_mode=str(cfg["degree-mode"]),
        low=low,
        high=high,
        seed=seed,
        proximal_mu=proximal_mu,
    )
    return {
        "degree": degrees.tolist(),
        "norm": norms.tolist(),
        "norm-scaled": np.asarray(scaled, dtype=np.float64).tolist(),
    }


def evaluate_client(
    model: GNN, client: GraphClientData
) -> tuple[float, float, list[int], list[int]]:
    """Loss and accuracy on the client's test nodes, and each one's global degree and 0/1.

    The server buckets the test nodes of all clients by global degree.
    """
    mask = client.data.test_mask
    loss, accuracy, correct = evaluate_gnn(model, client.data, mask)
    return loss, accuracy, client.global_degree[mask].tolist(), correct.astype(int).tolist()


class GraphTask:
    """The built-in graph task (:class:`~fedlr.tasks.base.Task`): a subgraph per client.

    Full-batch training (:func:`train_client`, with the degree rule for ``+degree``
    strategies); each round also reports, per node, the gradient norms at the received weights
    and, on evaluation, each test node's global degree and correctness, which the server pools
    into the degree-fairness diagnostics.
    """

    mini_batches = False

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        self.cfg = cfg

    def client_data(self, ctx: ClientContext) -> GraphClientData:
        """The client's subgraph."""
        return client_data(ctx.cfg, ctx.partition_id)

    def build_model(self, ctx: ClientContext | None = None) -> nn.Module:
        """The run's GNN."""
        return build_model(self.cfg if ctx is None else ctx.cfg)

    def describe(self, data: GraphClientData) -> dict[str, Any]:
        """``num-examples`` (train nodes) and the simulated truth."""
        return describe_truth(data)

    def train(self, model: nn.Module, data: GraphClientData, plan: RoundPlan) -> TrainReport:
        """Received loss, noise statistic, degree diagnostic, then full-batch training."""
        assert isinstance(model, GNN)
        loss = received_loss(model, data)
        estimate = -1.0
        if plan.estimate_noise:
            estimate = estimate_noise(model, data, plan.estimator, seed=plan.seed)
        diagnostic = train_client(
            model,
            data,
            self.cfg,
            lr=plan.lr,
            degree_rule=plan.degree_rule,
            proximal_mu=plan.proximal_mu,
            seed=plan.seed,
        )
        return TrainReport(
            metrics={
                "train_loss": loss,
                "noise-estimate": float(estimate),
                GRAD_DEGREE: diagnostic["degree"],
                GRAD_NORM: diagnostic["norm"],
                GRAD_NORM_SCALED: diagnostic["norm-scaled"],
            },
            num_examples=data.num_train,
        )

    def evaluate(
        self, model: nn.Module, data: GraphClientData, ctx: ClientContext
    ) -> dict[str, Any]:
        """Loss and accuracy on the test nodes, and each one's global degree and 0/1."""
        assert isinstance(model, GNN)
        loss, accuracy, test_degree, test_correct = evaluate_client(model, data)
        return {
            "num-examples": data.num_test,
            TEST_DEGREE: test_degree,
            TEST_CORRECT: test_correct,
            "accuracy": accuracy,
            "eval-loss": loss,
        }
