"""Tests for fedlr/data/graph_split.py: a graph dealt out to clients as induced subgraphs."""

import doctest

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_geometric.data import Data

import fedlr.data.graph_split as graph_split_module
from fedlr.data.graph_loaders import barabasi_albert_graph
from fedlr.data.graph_split import split_graph


def _undirected(edges, num_nodes, **attrs):
    edge_index = torch.tensor(edges + [(v, u) for u, v in edges], dtype=torch.long).t()
    return Data(edge_index=edge_index.reshape(2, -1), num_nodes=num_nodes, **attrs)


# two triangles {0, 1, 2} and {3, 4, 5} joined by the edges 2-3 and 1-4: 8 undirected edges
SIX = [(0, 1), (1, 2), (0, 2), (3, 4), (4, 5), (3, 5), (2, 3), (1, 4)]


def test_docstring_examples():
    result = doctest.testmod(graph_split_module)
    assert result.attempted > 0
    assert result.failed == 0


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
