"""fedlr.tasks.graph: GNN models, full-batch training with degree-aware rates, diagnostics.

Most tests use a 4-node star (centre 0, leaves 1-3, both edge directions): degrees (3, 1, 1, 1),
mean 1.5, so with gamma = 1 the scales are (4/2.5)^-1 = 0.625 and (2/2.5)^-1 = 1.25, and the
loss weights (scales / their mean 35/32) are (4/7, 8/7, 8/7, 8/7).
"""

from __future__ import annotations

import doctest
import subprocess
import sys
from collections import deque

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.data import Data
from torch_geometric.datasets import KarateClub
from torch_geometric.utils import barabasi_albert_graph, to_undirected

import fedlr.tasks.graph
from fedlr.metrics.degree import loglog_slope
from fedlr.tasks.graph import (
    build_gnn,
    evaluate_gnn,
    gradient_norms_by_node,
    node_degrees,
    train_gnn,
)

KINDS = ("gcn", "sage", "gin")
STAR_SCALES = torch.tensor([0.625, 1.25, 1.25, 1.25])  # gamma = 1
STAR_WEIGHTS = torch.tensor([4 / 7, 8 / 7, 8 / 7, 8 / 7])  # gamma = 1


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: torch's intra-op threads only contend."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def star() -> Data:
    edge_index = torch.tensor([[0, 0, 0, 1, 2, 3], [1, 2, 3, 0, 0, 0]])
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, -1.0]])
    y = torch.tensor([0, 1, 1, 0])
    return Data(x=x, edge_index=edge_index, y=y, train_mask=torch.ones(4, dtype=torch.bool))


def karate() -> Data:
    return KarateClub()[0]


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("embedding_dim", [0, 8])
def test_each_kind_trains_and_loss_falls(kind, embedding_dim):
    data = karate()
    model = build_gnn(kind, 34, 4, 16, num_nodes=34, embedding_dim=embedding_dim, seed=0)
    before, _, _ = evaluate_gnn(model, data, data.train_mask)
    train_gnn(model, data, lr=0.01, epochs=20, optimizer="adam", seed=0)
    after, accuracy, correct = evaluate_gnn(model, data, data.train_mask)
    assert after < before
    assert correct.shape == (4,) and correct.dtype == bool
    assert accuracy == correct.mean()


def test_layers_and_aggregations():
    sage = build_gnn("sage", 2, 2, 4, seed=0)
    gin = build_gnn("gin", 2, 2, 4, seed=0)
    assert sage.conv1.aggr == "mean" and gin.conv1.aggr == "add"
    assert isinstance(gin.conv1.nn, nn.Sequential)
    assert build_gnn("gcn", 2, 2, 4, seed=0).embedding is None


def test_embeddings_concatenate_or_replace_features():
    data = star()
    both = build_gnn("gcn", 2, 3, 4, num_nodes=4, embedding_dim=5, seed=0)
    assert both.conv1.in_channels == 7
    assert torch.equal(both.node_inputs(data.x)[:, :2], data.x)
    only = build_gnn("gcn", 0, 3, 4, num_nodes=4, embedding_dim=5, seed=0)
    assert only.conv1.in_channels == 5
    assert only(None, data.edge_index).shape == (4, 3)
    with pytest.raises(ValueError, match="x: expected shape"):
        both(torch.ones(3, 2), data.edge_index)


def test_build_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    a = build_gnn("gin", 2, 2, 4, num_nodes=4, embedding_dim=3, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    b = build_gnn("gin", 2, 2, 4, num_nodes=4, embedding_dim=3, seed=7)
    c = build_gnn("gin", 2, 2, 4, num_nodes=4, embedding_dim=3, seed=8)
    assert same_weights(weights(a), weights(b))
    assert not same_weights(weights(a), weights(c))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "gat"}, "kind: expected one of gcn, sage, gin"),
        ({"num_features": 0}, "embedding_dim: expected > 0"),
        ({"embedding_dim": 3}, "num_nodes: expected an integer >= 1"),
        ({"hidden": 0}, "hidden: expected an integer >= 1"),
    ],
)
def test_build_rejects(kwargs, message):
    args = {"kind": "gcn", "num_features": 2, "num_classes": 2, "hidden": 4} | kwargs
    with pytest.raises(ValueError, match=message):
        build_gnn(**args)


def test_layers_need_no_compiled_extensions():
    """Block pyg-lib, torch-scatter and torch-sparse, then run every kind forward and back."""
    code = """
import sys
for name in ("pyg_lib", "torch_scatter", "torch_sparse", "torch_cluster"):
    sys.modules[name] = None  # import raises ImportError
import torch
from fedlr.tasks.graph import build_gnn
edge_index = torch.tensor([[0, 0, 1, 2], [1, 2, 0, 0]])
for kind in ("gcn", "sage", "gin"):
    model = build_gnn(kind, 2, 2, 4, num_nodes=3, embedding_dim=2, seed=0)
    model(torch.ones(3, 2), edge_index).sum().backward()
    assert model.embedding.weight.grad is not None
import torch_geometric.typing as t
assert not (t.WITH_PYG_LIB or t.WITH_TORCH_SCATTER or t.WITH_TORCH_SPARSE)
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


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


def test_doctests():
    result = doctest.testmod(fedlr.tasks.graph)
    assert result.attempted > 0
    assert result.failed == 0
