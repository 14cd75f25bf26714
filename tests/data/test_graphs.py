"""Tests for fedlr/data/graphs.py: a run config's graph dealt out to clients, with noise.

The loaders and the split it re-exports have their own tests (test_graph_loaders.py,
test_graph_split.py).

Karate has 34 nodes; with ``test-fraction`` 0.3 the random label split makes
``ceil(0.3 * 34) = ceil(10.2) = 11`` test nodes (``round`` would give 10), with 0.25 it makes
``ceil(8.5) = 9``. The small BA graph has 200 nodes: ``ceil(0.25 * 200) = 50`` test nodes.
"""

from __future__ import annotations

import doctest

import pytest
import torch
from torch_geometric.utils import degree

from fedlr.config import resolve
import fedlr.data.graph_loaders
import fedlr.data.graph_split
import fedlr.data.graphs
from fedlr.data.graphs import build_graph_run, label_masks, load_graph, load_karate

KARATE = {"dataset": "karate", "num-clients": 2, "noisy-clients": 0, "hard-clean-clients": 0}
BA = {**KARATE, "dataset": "ba", "num-clients": 4, "ba-nodes": 200}


def test_docstring_examples():
    assert doctest.testmod(fedlr.data.graphs).failed == 0


def test_the_loaders_and_the_split_are_re_exported():
    for module in (fedlr.data.graph_loaders, fedlr.data.graph_split):
        public = [
            name
            for name, value in vars(module).items()
            if not name.startswith("_")
            and (name.isupper() or getattr(value, "__module__", None) == module.__name__)
        ]
        assert public
        for name in public:
            assert name in fedlr.data.graphs.__all__, name
            assert getattr(fedlr.data.graphs, name) is getattr(module, name), name


def karate_cfg(**overrides: object) -> dict:
    return resolve(overrides={**KARATE, **overrides})


def whole_graph_ids(run) -> torch.Tensor:
    return torch.cat([client.data.n_id for client in run.clients])


@pytest.mark.parametrize("split", ["louvain", "random"])
@pytest.mark.parametrize(
    ("overrides", "num_nodes"),
    [(KARATE, 34), ({**KARATE, "num-clients": 4, "test-fraction": 0.5}, 34), (BA, 200)],
    ids=["karate-2", "karate-4", "ba-4"],
)
def test_every_node_is_in_exactly_one_client(split, overrides, num_nodes):
    cfg = resolve(overrides={**overrides, "graph-split": split})
    run = build_graph_run(cfg)

    assert run.num_nodes == num_nodes and len(run.clients) == cfg["num-clients"]
    ids = whole_graph_ids(run)
    assert ids.numel() == num_nodes  # disjoint ...
    assert torch.equal(ids.sort().values, torch.arange(num_nodes))  # ... and covering
    whole = load_graph(cfg)
    global_degree = degree(whole.edge_index[0], num_nodes, dtype=torch.long)
    for pid, client in enumerate(run.clients):
        n_id = client.data.n_id
        assert client.partition_id == pid
        assert client.data.num_nodes == n_id.numel() == client.local_degree.numel()
        assert torch.equal(client.data.x, whole.x[n_id])  # no feature noise configured
        assert torch.equal(client.y_clean, whole.y[n_id])
        assert torch.equal(client.global_degree, global_degree[n_id])
        local = degree(client.data.edge_index[0], n_id.numel(), dtype=torch.long)
        assert torch.equal(client.local_degree, local)
    assert 2 * run.dropped_edges == sum(client.dropped_edges for client in run.clients)


@pytest.mark.parametrize(
    ("overrides", "num_test"),
    [
        ({**KARATE, "test-fraction": 0.3}, 11),
        ({**KARATE, "test-fraction": 0.25, "graph-split": "random"}, 9),
        (BA, 50),
    ],
)
def test_random_labels_make_ceil_test_fraction_test_nodes(overrides, num_test):
    cfg = resolve(overrides=overrides)
    run = build_graph_run(cfg)

    train = torch.cat([client.data.train_mask for client in run.clients])
    test = torch.cat([client.data.test_mask for client in run.clients])
    assert bool((train ^ test).all())  # every node is train or test, never both
    assert int(test.sum()) == num_test
    assert sum(client.num_test for client in run.clients) == num_test
    assert sum(client.num_train for client in run.clients) == run.num_nodes - num_test
    # the clients' masks are the whole graph's label_masks, read at their nodes
    whole_train, whole_test = label_masks(load_graph(cfg), cfg)
    for client in run.clients:
        assert torch.equal(client.data.train_mask, whole_train[client.data.n_id])
        assert torch.equal(client.data.test_mask, whole_test[client.data.n_id])
        assert client.num_train >= 1 and client.num_test >= 1


@pytest.mark.parametrize("label_noise", ["symmetric", "pair-flip"])
def test_label_noise_changes_only_train_labels_and_flip_fraction_counts_them(label_noise):
    cfg = karate_cfg(
        **{
            "noisy-clients": 1,
            "noise-rate-min": 0.8,
            "noise-rate-max": 0.8,
            "label-noise": label_noise,
            "graph-split": "random",
        }
    )
    noisy, clean = build_graph_run(cfg).clients

    assert (noisy.role, noisy.noise_rate) == ("noisy", 0.8)
    changed = noisy.data.y != noisy.y_clean
    assert not bool(changed[noisy.data.test_mask].any())  # test labels stay clean
    train_changed = changed[noisy.data.train_mask]
    assert int(train_changed.sum()) > 0
    assert noisy.flip_fraction == int(train_changed.sum()) / noisy.num_train
    assert (clean.role, clean.noise_rate, clean.flip_fraction) == ("clean", 0.0, 0.0)
    assert torch.equal(clean.data.y, clean.y_clean)


def test_feature_noise_reaches_only_the_last_clients():
    cfg = karate_cfg(**{"num-clients": 3, "feature-noise-clients": 1, "feature-noise-sigma": 0.5})
    run = build_graph_run(cfg)
    whole = load_graph(cfg)

    sigmas = [client.feature_sigma for client in run.clients]
    assert sigmas == [0.0, 0.0, 0.5]
    for client in run.clients[:2]:
        assert torch.equal(client.data.x, whole.x[client.data.n_id])
    last = run.clients[2]
    noise = last.data.x - whole.x[last.data.n_id]
    assert bool((noise != 0).all())
    assert torch.equal(last.data.y, last.y_clean)  # feature noise leaves labels alone


def _snapshot(run) -> list[tuple[torch.Tensor, ...]]:
    return [
        (c.data.n_id, c.data.x, c.data.y, c.data.edge_index, c.data.train_mask, c.data.test_mask)
        for c in run.clients
    ]


@pytest.mark.parametrize("split", ["louvain", "random"])
def test_same_config_gives_the_same_clients(split):
    overrides = {"graph-split": split, "noisy-clients": 1, "num-clients": 3}
    first = _snapshot(build_graph_run(karate_cfg(**overrides)))
    second = _snapshot(build_graph_run(karate_cfg(**overrides)))
    for a, b in zip(first, second, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_a_different_seed_gives_a_different_split():
    ids = [
        [
            c.data.n_id.tolist()
            for c in build_graph_run(karate_cfg(seed=s, **{"graph-split": "random"})).clients
        ]
        for s in (0, 1)
    ]
    assert ids[0] != ids[1]
    tests = [
        sorted(
            torch.cat(
                [c.data.n_id[c.data.test_mask] for c in build_graph_run(karate_cfg(seed=s)).clients]
            ).tolist()
        )
        for s in (0, 1)
    ]
    assert tests[0] != tests[1] and len(tests[0]) == len(tests[1]) == 9


def test_more_clients_than_nodes_is_refused_naming_num_clients():
    with pytest.raises(
        ValueError, match=r"^num-clients: expected at most 34 \(the nodes of karate\), got 35$"
    ):
        build_graph_run(karate_cfg(**{"num-clients": 35}))


def test_a_client_without_test_nodes_is_refused_naming_num_clients():
    # 20 clients of 1 or 2 nodes share 9 test nodes: some client has none.
    with pytest.raises(ValueError, match=r"^num-clients: partition \d+ of karate \(\d nodes\) has"):
        build_graph_run(karate_cfg(**{"num-clients": 20, "graph-split": "random"}))


def test_public_labels_on_karate_are_load_karates_masks():
    cfg = karate_cfg(**{"graph-labels": "public", "seed": 3})
    run = build_graph_run(cfg)
    karate = load_karate(3)

    for client in run.clients:
        assert torch.equal(client.data.train_mask, karate.train_mask[client.data.n_id])
        assert torch.equal(client.data.test_mask, karate.test_mask[client.data.n_id])
    # 17 train, 9 test; the 8 validation nodes are in neither
    assert sum(client.num_train for client in run.clients) == 17
    assert sum(client.num_test for client in run.clients) == 9


def test_an_exact_test_fraction_is_not_rounded_up_by_float_error():
    cfg = resolve(overrides={**BA, "num-clients": 2, "ba-nodes": 100, "test-fraction": 0.07})
    assert sum(client.num_test for client in build_graph_run(cfg).clients) == 7
