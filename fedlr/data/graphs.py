r"""A run's graph federation: a run config's graph, split, with each client's role and noise.

:func:`build_graph_run` loads the graph of the run's ``dataset`` (:func:`load_graph`, with the
loaders of :mod:`fedlr.data.graph_loaders`), gives it label masks (:func:`label_masks`), deals it
out to clients (:func:`~fedlr.data.graph_split.split_graph`) and adds each client's label and
feature noise. The loaders and the split are re-exported here, so ``fedlr.data.graphs.<name>``
names all of them.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

with warnings.catch_warnings():  # PyG 2.8 calls torch.jit.script at import; torch 2.13 warns
    warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", DeprecationWarning)
    from torch_geometric.data import Data

from fedlr.data.graph_loaders import (
    CORA_RAW_FILES,
    DEFAULT_PLANETOID_DIR,
    PLANETOID_ENV,
    barabasi_albert_graph,
    load_cora,
    load_karate,
)
from fedlr.data.graph_split import SPLIT_METHODS, ClientGraph, GraphFederation, split_graph
from fedlr.data.noise import gaussian_feature_noise

__all__ = [
    "BA_CLASSES",
    "BA_FEATURES",
    "CORA_RAW_FILES",
    "DEFAULT_PLANETOID_DIR",
    "PLANETOID_ENV",
    "SPLIT_METHODS",
    "ClientGraph",
    "GraphClientData",
    "GraphFederation",
    "GraphRun",
    "barabasi_albert_graph",
    "build_graph_run",
    "default_data_dir",
    "label_masks",
    "load_cora",
    "load_graph",
    "load_karate",
    "split_graph",
]

BA_FEATURES = 8
"""Node-feature width of the run config's ``ba`` graph."""

BA_CLASSES = 4
"""Classes of the run config's ``ba`` graph."""

_TAG_GRAPH_LABELS = 5  # stream tag of the label split (fedlr.data.federated uses 1..4)


@dataclass(frozen=True, eq=False)
class GraphClientData:
    """One client of a graph run: its subgraph, role and the truth about its noise.

    Attributes
    ----------
    partition_id, role, noise_rate, flip_fraction, feature_sigma
        As in :class:`fedlr.data.federated.ClientData`.
    data : Data
        The client's induced subgraph: ``x`` (with feature noise, if any), ``y`` (train nodes'
        labels possibly noisy, test nodes' always clean), ``edge_index``, ``train_mask``,
        ``test_mask``, and ``n_id``, the global ids of its nodes (the rows of the federation's
        node-embedding table, see :meth:`fedlr.tasks.graph.GNN.node_inputs`).
    y_clean : torch.Tensor
        Labels before noise.
    local_degree, global_degree : torch.Tensor
        Degree of each node in the client's subgraph and in the whole graph.
    dropped_edges : int
        Edges to other clients' nodes, dropped.
    """

    partition_id: int
    role: str
    noise_rate: float
    flip_fraction: float
    feature_sigma: float
    data: Data
    y_clean: torch.Tensor
    local_degree: torch.Tensor
    global_degree: torch.Tensor
    dropped_edges: int

    @property
    def num_train(self) -> int:
        """Labelled nodes this client trains on."""
        return int(self.data.train_mask.sum())

    @property
    def num_test(self) -> int:
        """Nodes this client is scored on."""
        return int(self.data.test_mask.sum())


@dataclass(frozen=True, eq=False)
class GraphRun:
    """Every client of a graph run, ordered by partition id, and the shape of the task."""

    clients: list[GraphClientData]
    num_classes: int
    num_features: int
    num_nodes: int
    dropped_edges: int
    method: str


def default_data_dir() -> Path:
    """``$XDG_CACHE_HOME/fedlr`` (``~/.cache/fedlr``): where ``data-dir = ""`` caches datasets."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fedlr"


def load_graph(cfg: Any) -> Data:
    """The whole graph of a run config's ``dataset`` (``cora``, ``karate`` or ``ba``).

    Cora is read by :func:`load_cora` under ``data-dir/planetoid``; a file lock keeps processes
    that start together (simulated clients, SuperNodes of one machine) from writing PyG's
    processed cache at the same time. ``normalize-features`` applies PyG's
    ``NormalizeFeatures`` (shift to >= 0, rows sum to 1).
    """
    from filelock import FileLock

    dataset = cfg["dataset"]
    seed = int(cfg["seed"])
    if dataset == "cora":
        root = Path(cfg["data-dir"] or default_data_dir()) / "planetoid"
        root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(root / ".cora.lock")):
            data = load_cora(root)
    elif dataset == "karate":
        data = load_karate(seed)
    elif dataset == "ba":
        data = barabasi_albert_graph(
            int(cfg["ba-nodes"]), int(cfg["ba-m"]), BA_FEATURES, BA_CLASSES, seed
        )
    else:
        raise ValueError(f"dataset: expected cora, karate or ba, got {dataset!r}")
    if cfg["normalize-features"]:
        from torch_geometric.transforms import NormalizeFeatures

        data = NormalizeFeatures()(data)
    return data


def label_masks(data: Data, cfg: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and test masks of the whole graph for a run config's ``graph-labels``.

    ``random``: a seeded permutation of all nodes; the first ``ceil(test-fraction * N)`` are
    test nodes, the rest train (validation is not used). ``public``: the dataset's own
    ``train_mask`` and ``test_mask`` (Cora: Planetoid's 140 and 1000 nodes).
    """
    num_nodes = int(data.num_nodes)
    if cfg["graph-labels"] == "public":
        return data.train_mask.clone(), data.test_mask.clone()
    rng = np.random.default_rng([int(cfg["seed"]), _TAG_GRAPH_LABELS])
    order = torch.from_numpy(rng.permutation(num_nodes))
    wanted = math.ceil(round(float(cfg["test-fraction"]) * num_nodes, 9))  # 0.07 * 100 is 7.0..01
    num_test = min(max(wanted, 1), num_nodes - 1)
    test = torch.zeros(num_nodes, dtype=torch.bool)
    test[order[:num_test]] = True
    return ~test, test


def build_graph_run(cfg: Any) -> GraphRun:
    """Deal a run config's graph out to ``num-clients`` clients, with roles and noise.

    The graph (:func:`load_graph`) gets its label masks (:func:`label_masks`), is split by
    :func:`split_graph` (``graph-split``, seeded by ``seed``), and each client gets the role of
    its partition id (:func:`fedlr.data.federated.client_roles`): label noise (``label-noise``
    at the client's rate) on its *train* nodes' labels only, Gaussian feature noise on all its
    nodes' features for the last ``feature-noise-clients``. Draws use the same seeded streams
    as tabular data, so the same config gives the same clients.

    Raises
    ------
    ValueError
        A client would have no train or no test node (too many clients for the graph); the
        message names the partition and what to change.
    """
    from fedlr.data import federated as fed

    data = load_graph(cfg)
    data.train_mask, data.test_mask = label_masks(data, cfg)
    num_classes = int(data.y.max()) + 1
    num_clients = int(cfg["num-clients"])
    if num_clients > int(data.num_nodes):
        raise ValueError(
            f"num-clients: expected at most {data.num_nodes} (the nodes of {cfg['dataset']}), "
            f"got {num_clients}"
        )
    split = split_graph(data, num_clients, str(cfg["graph-split"]), int(cfg["seed"]))
    seed = int(cfg["seed"])
    clients = []
    for pid, (part, (role, rate, sigma)) in enumerate(
        zip(split.clients, fed.client_roles(cfg), strict=True)
    ):
        sub = part.data
        train, test = sub.train_mask, sub.test_mask
        if not bool(train.any()) or not bool(test.any()):
            raise ValueError(
                f"num-clients: partition {pid} of {cfg['dataset']} ({part.num_nodes} nodes) has "
                f"{int(train.sum())} train and {int(test.sum())} test nodes; expected at least "
                "one of each: use fewer clients"
                + (", or graph-labels=random" if cfg["graph-labels"] == "public" else "")
            )
        y_clean = sub.y.clone()
        y = y_clean.clone()
        noisy, flip_fraction = fed.client_label_noise(
            cfg, pid, rate, y_clean[train].numpy(), num_classes
        )
        y[train] = torch.from_numpy(noisy)
        x = sub.x
        if sigma > 0 and x is not None:
            rng = np.random.default_rng([seed, pid, fed.TAG_FEATURE_NOISE])
            x = torch.from_numpy(gaussian_feature_noise(x.numpy(), sigma, rng)).to(x.dtype)
        client_graph = Data(
            x=x,
            y=y,
            edge_index=sub.edge_index,
            train_mask=train,
            test_mask=test,
            n_id=part.global_ids,
            num_nodes=part.num_nodes,
        )
        clients.append(
            GraphClientData(
                partition_id=pid,
                role=role,
                noise_rate=rate,
                flip_fraction=flip_fraction,
                feature_sigma=sigma,
                data=client_graph,
                y_clean=y_clean,
                local_degree=part.local_degree,
                global_degree=part.global_degree,
                dropped_edges=part.dropped_edges,
            )
        )
    return GraphRun(
        clients=clients,
        num_classes=num_classes,
        num_features=int(data.num_features),
        num_nodes=int(data.num_nodes),
        dropped_edges=split.dropped_edges,
        method=split.method,
    )
