r"""Graph neural networks for full-batch node classification: two PyG layers, optional embeddings.

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
neighbour sampling. Training and evaluation are in :mod:`fedlr.tasks.gnn_training`.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

with warnings.catch_warnings():  # PyG 2.8 calls torch.jit.script at import; torch 2.13 warns
    warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", DeprecationWarning)
    from torch_geometric.data import Data
    from torch_geometric.nn import GCNConv, GINConv, SAGEConv
    from torch_geometric.utils import degree as pyg_degree

from fedlr.config import GNN_KINDS
from fedlr.rates._checks import _integer


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
    return _integer(name, value, lowest)


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
