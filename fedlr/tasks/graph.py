r"""Graph task: full-batch node classification with PyG layers and degree-aware node rates.

The graph task of a run, what the ClientApp and ServerApp call: the run's graph clients
(:func:`graph_run`, once per process), its GNN (:func:`build_model`), a client's round of
training with the degree diagnostic (:func:`train_client`) and its evaluation
(:func:`evaluate_client`), behind :class:`GraphTask`.

The model is :class:`~fedlr.tasks.gnn.GNN` (:mod:`fedlr.tasks.gnn`), trained by
:func:`~fedlr.tasks.gnn_training.train_gnn` (:mod:`fedlr.tasks.gnn_training`, degree-aware rates
included); both modules' names are re-exported here, as are :func:`pick_device` and
:func:`model_device` (:mod:`fedlr.tasks.devices`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedlr.data.graphs import GraphClientData, GraphRun, build_graph_run
from fedlr.rates.degree import degree_scales
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
from fedlr.tasks.devices import model_device, pick_device
from fedlr.tasks.gnn import GNN, GNN_KINDS, build_gnn, node_degrees
from fedlr.tasks.gnn_training import (
    DEGREE_MODES,
    OPTIMIZERS,
    _node_tensors,
    evaluate_gnn,
    gradient_norms_by_node,
    train_gnn,
)

__all__ = [
    "DEGREE_MODES",
    "GNN",
    "GNN_KINDS",
    "OPTIMIZERS",
    "GraphTask",
    "build_gnn",
    "evaluate_gnn",
    "gradient_norms_by_node",
    "model_device",
    "node_degrees",
    "pick_device",
    "train_gnn",
]


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
