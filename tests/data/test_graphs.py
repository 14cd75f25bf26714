import doctest
import socket

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_geometric.data import Data
from torch_geometric.datasets import Planetoid
from torch_geometric.utils import contains_self_loops, degree, homophily, is_undirected

import fedlr.data.graphs as graphs_module
from fedlr.data.graphs import (
    CORA_RAW_FILES,
    DEFAULT_PLANETOID_DIR,
    PLANETOID_ENV,
    barabasi_albert_graph,
    load_cora,
    load_karate,
    split_graph,
)


def _undirected(edges, num_nodes, **attrs):
    edge_index = torch.tensor(edges + [(v, u) for u, v in edges], dtype=torch.long).t()
    return Data(edge_index=edge_index.reshape(2, -1), num_nodes=num_nodes, **attrs)


# two triangles {0, 1, 2} and {3, 4, 5} joined by the edges 2-3 and 1-4: 8 undirected edges
SIX = [(0, 1), (1, 2), (0, 2), (3, 4), (4, 5), (3, 5), (2, 3), (1, 4)]


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
    assert doctest.testmod(graphs_module).failed == 0


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


# ---------------------------------------------------------------------------------------------
# Federated split
# ---------------------------------------------------------------------------------------------


def test_louvain_on_six_nodes_worked_by_hand():
    x = torch.arange(6, dtype=torch.float32).view(-1, 1)
    federation = split_graph(_undirected(SIX, 6, x=x), 2, "louvain", seed=0)
    first, second = federation.clients
    assert first.global_ids.tolist() == [0, 1, 2] and second.global_ids.tolist() == [3, 4, 5]
    assert federation.assignment.tolist() == [0, 0, 0, 1, 1, 1]
    # kept: the two triangles, 3 + 3; dropped: 8 - 6 = 2 (2-3 and 1-4), one end at each client
    assert [client.data.num_edges // 2 for client in federation.clients] == [3, 3]
    assert federation.dropped_edges == 2
    assert [client.dropped_edges for client in federation.clients] == [2, 2]
    # node:          0  1  2         3  4  5
    assert first.local_degree.tolist() == [2, 2, 2]
    assert first.global_degree.tolist() == [2, 3, 3]
    assert second.local_degree.tolist() == [2, 2, 2]
    assert second.global_degree.tolist() == [3, 3, 2]
    assert first.local_degree.dtype == torch.long
    assert second.data.x.view(-1).tolist() == [3.0, 4.0, 5.0]
    assert second.data.edge_index.max() == 2  # relabelled to 0..2


@pytest.mark.parametrize("method", ["louvain", "random"])
def test_one_client_keeps_everything_and_one_node_each_drops_everything(method):
    data = _undirected(SIX, 6)
    whole = split_graph(data, 1, method, seed=0)
    assert whole.dropped_edges == 0 and whole.clients[0].data.num_edges == 16
    assert torch.equal(whole.clients[0].local_degree, whole.clients[0].global_degree)
    alone = split_graph(data, 6, method, seed=0)
    assert alone.dropped_edges == 8
    by_node = sorted((int(c.global_ids), c.dropped_edges) for c in alone.clients)
    assert by_node == [(0, 2), (1, 3), (2, 3), (3, 3), (4, 3), (5, 2)]  # the global degrees


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_louvain_puts_each_of_two_cliques_in_one_client(seed):
    clique = [(u, v) for u in range(5) for v in range(u + 1, 5)]
    edges = clique + [(u + 5, v + 5) for u, v in clique] + [(4, 5)]
    federation = split_graph(_undirected(edges, 10), 2, "louvain", seed=seed)
    assert sorted(c.global_ids.tolist() for c in federation.clients) == [
        [0, 1, 2, 3, 4],
        [5, 6, 7, 8, 9],
    ]
    assert federation.dropped_edges == 1  # undirected edges; 2 edge_index entries


def test_louvain_packs_communities_into_balanced_clients():
    # four triangles and three clients: sizes 6, 3, 3 (the largest-first greedy)
    edges = [(3 * t + a, 3 * t + b) for t in range(4) for a, b in ((0, 1), (1, 2), (0, 2))]
    federation = split_graph(_undirected(edges, 12), 3, "louvain", seed=0)
    assert sorted(c.num_nodes for c in federation.clients) == [3, 3, 6]
    assert federation.dropped_edges == 0
    # fewer communities (4) than clients (6): the largest are halved
    federation = split_graph(_undirected(edges, 12), 6, "louvain", seed=0)
    assert sorted(c.num_nodes for c in federation.clients) == [1, 1, 2, 2, 3, 3]


@pytest.mark.parametrize("method", ["louvain", "random"])
def test_split_is_deterministic_per_seed(method):
    data = barabasi_albert_graph(300, 2, 4, 3, seed=0)
    a = split_graph(data, 4, method, seed=7)
    b = split_graph(data, 4, method, seed=7)
    assert torch.equal(a.assignment, b.assignment) and a.dropped_edges == b.dropped_edges
    if method == "random":
        assert not torch.equal(a.assignment, split_graph(data, 4, method, seed=8).assignment)


def test_random_split_sizes_differ_by_at_most_one():
    federation = split_graph(barabasi_albert_graph(103, 2, 4, 3, seed=0), 4, "random", seed=0)
    assert sorted(c.num_nodes for c in federation.clients) == [25, 26, 26, 26]


def test_louvain_drops_fewer_edges_than_random():
    data = barabasi_albert_graph(500, 2, 4, 4, seed=0)
    louvain = split_graph(data, 5, "louvain", seed=0)
    random = split_graph(data, 5, "random", seed=0)
    assert louvain.dropped_edges < random.dropped_edges / 2


@st.composite
def small_graphs(draw):
    num_nodes = draw(st.integers(1, 25))
    pairs = draw(
        st.lists(
            st.tuples(st.integers(0, num_nodes - 1), st.integers(0, num_nodes - 1)), max_size=60
        )
    )
    edges = sorted({(min(u, v), max(u, v)) for u, v in pairs if u != v})
    x = torch.arange(num_nodes, dtype=torch.float32).view(-1, 1)
    return _undirected(edges, num_nodes, x=x), len(edges)


@settings(max_examples=40, deadline=None)
@given(
    graph=small_graphs(),
    clients_fraction=st.floats(0.0, 1.0),
    method=st.sampled_from(["louvain", "random"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_every_node_is_in_exactly_one_client(graph, clients_fraction, method, seed):
    data, num_edges = graph
    num_clients = 1 + int(clients_fraction * (data.num_nodes - 1))
    federation = split_graph(data, num_clients, method, seed=seed)
    assert len(federation.clients) == num_clients and federation.num_nodes == data.num_nodes
    ids = torch.cat([client.global_ids for client in federation.clients])
    assert torch.equal(ids.sort().values, torch.arange(data.num_nodes))
    kept = 0
    for k, client in enumerate(federation.clients):
        assert client.num_nodes >= 1
        assert bool((federation.assignment[client.global_ids] == k).all())
        assert torch.equal(client.data.x.view(-1), client.global_ids.float())
        assert bool((client.local_degree <= client.global_degree).all())
        assert client.dropped_edges == int((client.global_degree - client.local_degree).sum())
        kept += client.data.num_edges // 2
    assert federation.dropped_edges == num_edges - kept
    assert 2 * federation.dropped_edges == sum(c.dropped_edges for c in federation.clients)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_clients": 0}, "num_clients"),
        ({"num_clients": 7}, "num_clients"),
        ({"method": "metis"}, "method"),
        ({"seed": -1}, "seed"),
    ],
)
def test_split_bad_arguments(kwargs, name):
    args = {"num_clients": 2, "method": "louvain", "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=name):
        split_graph(_undirected(SIX, 6), **args)


def test_split_refuses_a_directed_graph():
    directed = Data(edge_index=torch.tensor([[0, 1], [1, 2]]), num_nodes=3)
    with pytest.raises(ValueError, match="undirected"):
        split_graph(directed, 2, "random", seed=0)


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
