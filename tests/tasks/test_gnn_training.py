"""Tests for fedlr/tasks/gnn_training.py: full-batch training with degree-aware rates, diagnostics.

The graphs and helpers are test_gnn.py's: most tests use its 4-node star (degrees (3, 1, 1, 1),
scales (0.625, 1.25, 1.25, 1.25) and loss weights (4/7, 8/7, 8/7, 8/7) with gamma = 1).
"""

from __future__ import annotations

import doctest
from collections import deque

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Data
from torch_geometric.utils import barabasi_albert_graph, to_undirected

import fedlr.tasks.gnn_training
from fedlr.metrics.degree import loglog_slope
from fedlr.tasks.gnn import build_gnn, node_degrees
from fedlr.tasks.gnn_training import evaluate_gnn, gradient_norms_by_node, train_gnn
from tests.tasks.test_gnn import (  # noqa: F401 (one_thread: a fixture)
    KINDS,
    STAR_SCALES,
    STAR_WEIGHTS,
    karate,
    one_thread,
    same_weights,
    star,
    weights,
)


def test_doctests():
    assert doctest.testmod(fedlr.tasks.gnn_training).failed == 0


# ---------------------------------------------------------------------------------------------
# Training: gamma = 0 is plain training
# ---------------------------------------------------------------------------------------------


def plain_training(model, data, *, lr, epochs, optimizer, momentum=0.0):
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        opt.zero_grad()
        logits = model(data.x, data.edge_index)
        F.cross_entropy(logits[data.train_mask], data.y[data.train_mask]).backward()
        opt.step()


@pytest.mark.parametrize(("optimizer", "momentum"), [("sgd", 0.9), ("adam", 0.0)])
@pytest.mark.parametrize("degree_mode", ["embedding", "loss", "both"])
def test_gamma_zero_is_plain_training_bit_for_bit(optimizer, momentum, degree_mode):
    data = karate()
    reference = build_gnn("gcn", 34, 4, 8, num_nodes=34, embedding_dim=4, seed=3)
    ruled = build_gnn("gcn", 34, 4, 8, num_nodes=34, embedding_dim=4, seed=3)
    plain_training(reference, data, lr=0.05, epochs=5, optimizer=optimizer, momentum=momentum)
    train_gnn(
        ruled,
        data,
        lr=0.05,
        epochs=5,
        optimizer=optimizer,
        momentum=momentum,
        gamma=0.0,
        degree=node_degrees(data),
        degree_mode=degree_mode,
    )
    assert same_weights(weights(reference), weights(ruled))


def test_train_returns_mean_loss_and_leaves_the_global_rng_alone():
    data = star()
    model = build_gnn("gcn", 2, 2, 4, seed=0)
    first, _, _ = evaluate_gnn(model, data, data.train_mask)
    state = torch.get_rng_state()
    assert train_gnn(model, data, lr=0.1, epochs=1) == pytest.approx(first)
    assert torch.equal(torch.get_rng_state(), state)
    assert train_gnn(model, data, lr=0.1, epochs=0) == 0.0


# ---------------------------------------------------------------------------------------------
# Training: degree-scaled embedding rows
# ---------------------------------------------------------------------------------------------


def one_step(optimizer, gamma, weight_decay=0.0, momentum=0.0):
    data = star()
    model = build_gnn("gcn", 2, 2, 4, num_nodes=4, embedding_dim=3, seed=1)
    before = weights(model)
    train_gnn(
        model,
        data,
        lr=0.1,
        epochs=1,
        optimizer=optimizer,
        momentum=momentum,
        gamma=gamma,
        degree_mode="embedding",
        weight_decay=weight_decay,
    )
    after = weights(model)
    return before, after


@pytest.mark.parametrize(
    ("optimizer", "weight_decay"),
    [("sgd", 0.0), ("sgd", 0.1), ("adam", 0.0), ("adagrad", 0.0), ("adagrad", 0.1)],
)
def test_embedding_rows_move_s_v_times_as_far(optimizer, weight_decay):
    before, plain = one_step(optimizer, 0.0, weight_decay)
    _, scaled = one_step(optimizer, 1.0, weight_decay)
    key = "embedding.weight"
    plain_move = plain[key] - before[key]
    scaled_move = scaled[key] - before[key]
    assert plain_move.abs().min() > 0
    torch.testing.assert_close(scaled_move, STAR_SCALES[:, None] * plain_move)
    # The shared weights are not touched by the row rule.
    assert all(torch.equal(plain[k], scaled[k]) for k in plain if k != key)


def test_sgd_momentum_rows_keep_their_scale_over_steps():
    data = star()
    runs = {}
    for gamma in (0.0, 1.0):
        model = build_gnn("gcn", 0, 2, 4, num_nodes=4, embedding_dim=3, seed=2)
        # Freeze the shared weights so that the rows' gradients do not depend on gamma.
        for name, param in model.named_parameters():
            param.requires_grad_(name == "embedding.weight")
        start = model.embedding.weight.detach().clone()
        train_gnn(model, data, lr=0.1, epochs=1, momentum=0.9, gamma=gamma)
        runs[gamma] = model.embedding.weight.detach() - start
    torch.testing.assert_close(runs[1.0], STAR_SCALES[:, None] * runs[0.0])


def test_row_hook_is_removed_after_training():
    data = star()
    model = build_gnn("gcn", 2, 2, 4, num_nodes=4, embedding_dim=3, seed=1)
    train_gnn(model, data, lr=0.1, epochs=1, gamma=1.0)
    model.zero_grad()
    model(data.x, data.edge_index).sum().backward()
    # A hook left behind would scale row 0 by 0.625: compare with an unhooked copy.
    fresh = build_gnn("gcn", 2, 2, 4, num_nodes=4, embedding_dim=3, seed=1)
    fresh.load_state_dict(model.state_dict())
    fresh(data.x, data.edge_index).sum().backward()
    assert torch.equal(fresh.embedding.weight.grad, model.embedding.weight.grad)


# ---------------------------------------------------------------------------------------------
# Training: per-node loss weights
# ---------------------------------------------------------------------------------------------


def test_loss_weights_change_the_gradient_as_the_formula_says():
    data = star()
    model = build_gnn("sage", 2, 2, 4, seed=4)
    expected = build_gnn("sage", 2, 2, 4, seed=4)
    logits = expected(data.x, data.edge_index)
    per_node = F.cross_entropy(logits, data.y, reduction="none")
    loss = (STAR_WEIGHTS * per_node).sum() / STAR_WEIGHTS.sum()
    loss.backward()
    with torch.no_grad():
        for param in expected.parameters():
            param -= 0.5 * param.grad
    returned = train_gnn(model, data, lr=0.5, epochs=1, gamma=1.0, degree_mode="loss")
    assert returned == pytest.approx(float(loss.detach()))
    for name, value in weights(expected).items():
        torch.testing.assert_close(weights(model)[name], value)
    assert not torch.allclose(STAR_WEIGHTS, torch.ones(4))


def test_loss_weights_use_the_train_nodes_degrees():
    data = star()
    data.train_mask = torch.tensor([True, True, False, False])  # degrees 3 and 1
    model = build_gnn("gcn", 2, 2, 4, seed=5)
    expected = build_gnn("gcn", 2, 2, 4, seed=5)
    # Over degrees (3, 1): mean 2, scales (4/3)^-1 = 0.75 and (2/3)^-1 = 1.5, weights 2/3, 4/3.
    train_weights = torch.tensor([2 / 3, 4 / 3])
    logits = expected(data.x, data.edge_index)[data.train_mask]
    per_node = F.cross_entropy(logits, data.y[data.train_mask], reduction="none")
    ((train_weights * per_node).sum() / train_weights.sum()).backward()
    with torch.no_grad():
        for param in expected.parameters():
            param -= 0.5 * param.grad
    train_gnn(model, data, lr=0.5, epochs=1, gamma=1.0, degree_mode="loss")
    for name, value in weights(expected).items():
        torch.testing.assert_close(weights(model)[name], value)


def test_embedding_mode_without_embeddings_warns():
    data = star()
    model = build_gnn("gcn", 2, 2, 4, seed=0)
    with pytest.warns(UserWarning, match="no node embeddings"):
        train_gnn(model, data, lr=0.1, epochs=1, gamma=0.5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"optimizer": "rmsprop"}, "optimizer: expected one of sgd, adam, adagrad"),
        ({"degree_mode": "rows"}, "degree_mode: expected one of embedding, loss, both"),
        ({"gamma": -1.0}, "gamma: expected a finite number >= 0"),
        ({"epochs": -1}, "epochs: expected an integer >= 0"),
        ({"gamma": 0.5, "degree": torch.ones(3)}, r"degree: expected shape \(4,\)"),
    ],
)
def test_train_rejects(kwargs, message):
    model = build_gnn("gcn", 2, 2, 4, num_nodes=4, embedding_dim=2, seed=0)
    with pytest.raises(ValueError, match=message):
        train_gnn(model, star(), **({"lr": 0.1, "epochs": 1} | kwargs))


def test_train_needs_a_train_mask():
    data = star()
    del data.train_mask
    with pytest.raises(ValueError, match="train_mask"):
        train_gnn(build_gnn("gcn", 2, 2, 4, seed=0), data, lr=0.1, epochs=1)


def test_evaluate_rejects_an_empty_mask():
    with pytest.raises(ValueError, match="mask: selects no nodes"):
        evaluate_gnn(build_gnn("gcn", 2, 2, 4, seed=0), star(), torch.zeros(4, dtype=torch.bool))


# ---------------------------------------------------------------------------------------------
# Gradient norms by node
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("embedding_dim", [0, 6])
def test_gradient_norms_one_finite_value_per_node(embedding_dim):
    data = karate()
    model = build_gnn("gin", 34, 4, 8, num_nodes=34, embedding_dim=embedding_dim, seed=0)
    norms = gradient_norms_by_node(model, data, mask=torch.ones(34, dtype=torch.bool))
    assert norms.shape == (34,) and norms.dtype == np.float64
    assert np.all(np.isfinite(norms)) and np.all(norms > 0)
    assert all(param.grad is None for param in model.parameters())


def test_gradient_norms_match_autograd_and_scale_by_s_v():
    data = star()
    model = build_gnn("gcn", 0, 2, 4, num_nodes=4, embedding_dim=3, seed=0)
    logits = model(None, data.edge_index)
    F.cross_entropy(logits, data.y).backward()
    expected = model.embedding.weight.grad.norm(dim=1).double().numpy()
    model.zero_grad()
    np.testing.assert_allclose(gradient_norms_by_node(model, data), expected, rtol=1e-6)
    scaled = gradient_norms_by_node(model, data, gamma=1.0)
    np.testing.assert_allclose(scaled, STAR_SCALES.double().numpy() * expected, rtol=1e-6)


def ba_graph(num_nodes: int, num_edges: int, seed: int) -> torch.Tensor:
    """PyG's BA generator draws from numpy's and torch's global RNGs: seed them, then restore."""
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            edge_index = barabasi_albert_graph(num_nodes, num_edges)
    finally:
        np.random.set_state(state)
    return to_undirected(edge_index, num_nodes=num_nodes)


def community_labels(edge_index: torch.Tensor, num_nodes: int, classes: int, seed: int):
    """Homophilous labels: each node takes the class of its nearest seed node (multi-source BFS)."""
    neighbours: list[list[int]] = [[] for _ in range(num_nodes)]
    for source, target in edge_index.t().tolist():
        neighbours[source].append(target)
    labels = [-1] * num_nodes
    queue = deque()
    seeds = np.random.default_rng(seed).choice(num_nodes, classes, replace=False)
    for label, node in enumerate(seeds.tolist()):
        labels[node] = label
        queue.append(node)
    while queue:
        node = queue.popleft()
        for other in neighbours[node]:
            if labels[other] < 0:
                labels[other] = labels[node]
                queue.append(other)
    return torch.tensor(labels)


@pytest.mark.parametrize(("kind", "gamma", "least"), [("gcn", 0.5, 0.2), ("gin", 1.0, 0.5)])
def test_embedding_gradient_slope_grows_with_degree_and_scaling_flattens_it(kind, gamma, least):
    num_nodes, seed = 300, 1
    edge_index = ba_graph(num_nodes, 3, seed)
    labels = community_labels(edge_index, num_nodes, 2, seed)
    data = Data(
        edge_index=edge_index,
        y=labels,
        num_nodes=num_nodes,
        train_mask=torch.ones(num_nodes, dtype=torch.bool),
    )
    degree = node_degrees(data).numpy()
    model = build_gnn(kind, 0, 2, 16, num_nodes=num_nodes, embedding_dim=16, seed=seed)
    slope = loglog_slope(gradient_norms_by_node(model, data), degree)
    fixed = loglog_slope(gradient_norms_by_node(model, data, gamma=gamma), degree)
    matched = loglog_slope(gradient_norms_by_node(model, data, gamma=slope), degree)
    assert slope > least
    assert abs(fixed) < abs(slope)
    # Unclipped, s_v is proportional to (d_v + 1)^-gamma: the slope drops by exactly gamma.
    assert abs(matched) < 0.05
