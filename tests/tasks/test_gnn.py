"""Tests for fedlr/tasks/gnn.py: the GNN models (and the fixtures of the GNN tests).

Most tests use a 4-node star (centre 0, leaves 1-3, both edge directions): degrees (3, 1, 1, 1),
mean 1.5, so with gamma = 1 the scales are (4/2.5)^-1 = 0.625 and (2/2.5)^-1 = 1.25, and the
loss weights (scales / their mean 35/32) are (4/7, 8/7, 8/7, 8/7).
"""

from __future__ import annotations

import doctest
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch_geometric.data import Data
from torch_geometric.datasets import KarateClub

import fedlr.tasks.gnn
from fedlr.tasks.gnn import build_gnn
from fedlr.tasks.gnn_training import evaluate_gnn, train_gnn

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


def test_doctests():
    result = doctest.testmod(fedlr.tasks.gnn)
    assert result.attempted > 0
    assert result.failed == 0
