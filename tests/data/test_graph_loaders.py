"""Tests for fedlr/data/graph_loaders.py: Cora offline, karate, the Barabasi-Albert graph."""

import doctest
import socket

import numpy as np
import pytest
import torch
from torch_geometric.datasets import Planetoid
from torch_geometric.utils import contains_self_loops, degree, homophily, is_undirected

import fedlr.data.graph_loaders as graph_loaders_module
from fedlr.data.graph_loaders import (
    CORA_RAW_FILES,
    DEFAULT_PLANETOID_DIR,
    PLANETOID_ENV,
    barabasi_albert_graph,
    load_cora,
    load_karate,
)
from fedlr.data.graph_split import split_graph


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(Planetoid, "download", refuse)


def _has_shared_cora():
    return all((DEFAULT_PLANETOID_DIR / "Cora" / "raw" / name).is_file() for name in CORA_RAW_FILES)


needs_cora = pytest.mark.skipif(not _has_shared_cora(), reason="no raw Cora files at the default")


@pytest.fixture(scope="module")
def cora_root(tmp_path_factory):
    return tmp_path_factory.mktemp("planetoid")


def test_docstring_examples():
    assert doctest.testmod(graph_loaders_module).failed == 0


# ---------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------


@needs_cora
def test_cora_loads_offline_with_the_public_split(cora_root, no_network, monkeypatch):
    monkeypatch.delenv(PLANETOID_ENV, raising=False)
    data = load_cora(cora_root)
    assert sorted(p.name for p in (cora_root / "Cora" / "raw").iterdir()) == sorted(CORA_RAW_FILES)
    assert data.num_nodes == 2708 and data.num_features == 1433
    assert int(data.y.max()) + 1 == 7
    assert data.edge_index.shape == (2, 10556)  # 5278 undirected edges
    assert is_undirected(data.edge_index) and not contains_self_loops(data.edge_index)
    masks = (data.train_mask, data.val_mask, data.test_mask)
    assert [int(mask.sum()) for mask in masks] == [140, 500, 1000]
    assert torch.equal(data.train_mask.nonzero().view(-1), torch.arange(140))  # public split
    assert int(torch.stack(masks).sum(dim=0).max()) == 1  # disjoint


@needs_cora
def test_cora_second_load_needs_no_source(cora_root, no_network, tmp_path):
    load_cora(cora_root)  # copies the raw files if the previous test did not run
    data = load_cora(cora_root, source=tmp_path / "empty")
    assert data.num_nodes == 2708


def test_cora_missing_source_names_the_paths(tmp_path, no_network, monkeypatch):
    monkeypatch.delenv(PLANETOID_ENV, raising=False)
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="source") as error:
        load_cora(tmp_path / "root", source=missing)
    assert str(missing / "Cora" / "raw") in str(error.value)
    assert PLANETOID_ENV in str(error.value)
    assert not (tmp_path / "root" / "Cora" / "processed").exists()


def test_cora_missing_env_directory_is_named(tmp_path, no_network, monkeypatch):
    monkeypatch.setenv(PLANETOID_ENV, str(tmp_path / "from-env"))
    with pytest.raises(FileNotFoundError, match=f"\\${PLANETOID_ENV}") as error:
        load_cora(tmp_path / "root")
    assert str(tmp_path / "from-env") in str(error.value)


@needs_cora
def test_cora_source_may_hold_the_files_directly(tmp_path, no_network):
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in CORA_RAW_FILES:
        (flat / name).write_bytes((DEFAULT_PLANETOID_DIR / "Cora" / "raw" / name).read_bytes())
    assert load_cora(tmp_path / "root", source=flat).num_nodes == 2708


def test_karate_has_a_seeded_split():
    data = load_karate(seed=3)
    assert data.num_nodes == 34 and data.edge_index.shape == (2, 156)
    assert int(data.y.max()) + 1 == 4
    assert is_undirected(data.edge_index) and not contains_self_loops(data.edge_index)
    masks = torch.stack([data.train_mask, data.val_mask, data.test_mask])
    assert masks.sum(dim=1).tolist() == [17, 8, 9]
    assert torch.equal(masks.sum(dim=0), torch.ones(34, dtype=torch.long))  # a partition
    assert torch.equal(load_karate(seed=3).train_mask, data.train_mask)
    assert not torch.equal(load_karate(seed=4).train_mask, data.train_mask)


def test_ba_graph_is_deterministic_per_seed():
    a = barabasi_albert_graph(200, 2, 4, 3, seed=5)
    b = barabasi_albert_graph(200, 2, 4, 3, seed=5)
    c = barabasi_albert_graph(200, 2, 4, 3, seed=6)
    for key in ("x", "y", "edge_index", "train_mask", "val_mask", "test_mask"):
        assert torch.equal(a[key], b[key])
    assert not torch.equal(a.edge_index, c.edge_index)


def test_ba_graph_shapes_and_masks():
    n, m = 300, 3
    data = barabasi_albert_graph(n, m, 5, 4, seed=0)
    assert data.x.shape == (n, 5) and data.x.dtype == torch.float32
    assert data.y.dtype == torch.int64 and set(data.y.tolist()) == {0, 1, 2, 3}
    # a clique on m + 1 nodes, then m edges per node; stored in both directions
    assert data.num_edges == 2 * (m * (m + 1) // 2 + (n - m - 1) * m)
    assert is_undirected(data.edge_index) and not contains_self_loops(data.edge_index)
    assert data.edge_index.unique(dim=1).shape[1] == data.num_edges  # no multi-edges
    masks = torch.stack([data.train_mask, data.val_mask, data.test_mask])
    assert masks.sum(dim=1).tolist() == [180, 60, 60]
    assert torch.equal(masks.sum(dim=0), torch.ones(n, dtype=torch.long))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ba_graph_is_heavy_tailed_and_homophilous(seed):
    data = barabasi_albert_graph(1000, 2, 8, 4, seed=seed)
    deg = degree(data.edge_index[0], data.num_nodes)
    assert int(deg.min()) == 2
    assert float(deg.max()) > 5 * float(deg.mean())  # mean ~4, hubs of degree 40+
    # h = 0.9, C = 4: about 0.9 / (0.9 + 0.1 * 3) = 0.75 of edges within a class; chance 0.25
    assert homophily(data.edge_index, data.y) > 0.6


def test_ba_graph_without_class_bias_is_at_chance():
    data = barabasi_albert_graph(1000, 2, 8, 4, seed=0, homophily=0.5)
    assert 0.15 < homophily(data.edge_index, data.y) < 0.35


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"m": 0}, "m"),
        ({"num_nodes": 2}, "num_nodes"),
        ({"num_features": 0}, "num_features"),
        ({"num_classes": 0}, "num_classes"),
        ({"homophily": 1.0}, "homophily"),
        ({"feature_noise": -1.0}, "feature_noise"),
        ({"seed": -1}, "seed"),
        ({"train_fraction": 0.9, "val_fraction": 0.2}, "train_fraction"),
    ],
)
def test_ba_graph_bad_arguments(kwargs, name):
    args = {"num_nodes": 20, "m": 2, "num_features": 3, "num_classes": 2, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=name):
        barabasi_albert_graph(**args)


def test_cora_federation_figures(cora_root):
    if not _has_shared_cora():
        pytest.skip("no raw Cora files at the default")
    data = load_cora(cora_root)
    federation = split_graph(data, 5, "louvain", seed=0)
    sizes = [client.num_nodes for client in federation.clients]
    assert sum(sizes) == 2708 and max(sizes) - min(sizes) <= 0.05 * 2708
    assert federation.dropped_edges < 0.15 * 5278  # Louvain keeps most edges inside clients
    assert split_graph(data, 5, "random", seed=0).dropped_edges > 0.7 * 5278  # ~4/5 cut
    assert np.isclose(sum(int(c.data.train_mask.sum()) for c in federation.clients), 140)
