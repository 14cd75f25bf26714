"""Tests for fedlr/tasks/graph.py, the graph task of a run.

A client's subgraph against the federation's embedding table.

Karate (34 nodes) dealt to two clients; the model has one embedding row per node of the whole
graph, and a client reads (and trains) only the rows ``n_id`` of its own nodes. The degree rule
is checked against a plain SGD step whose gradient is scaled by hand:
``s_v = clip(((d_v + 1) / (mean_d + 1))^-gamma, low, high)``, the mean over the client's nodes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch_geometric.datasets import KarateClub
from torch_geometric.utils import degree

from fedlr.config import resolve
from fedlr.tasks import graph
from fedlr.tasks.graph import build_gnn, evaluate_gnn, train_gnn
from tests.tasks.test_gnn import one_thread, same_weights, weights  # noqa: F401 (fixture)

EMB = "embedding.weight"


def cfg_for(**overrides: object) -> dict:
    values = {
        "dataset": "karate",
        "num-clients": 2,
        "noisy-clients": 0,
        "hard-clean-clients": 0,
        "graph-split": "random",
        "embedding-dim": 4,
        "hidden": 8,
        "local-epochs": 1,
        "optimizer": "sgd",
        "momentum": 0.0,
        "degree-gamma": 1.0,
        "degree-mode": "embedding",
        "strategies": "fedavg,fedavg+degree",
    }
    values.update(overrides)
    return resolve(overrides=values)


CFG = cfg_for()


def gradients(model, client) -> dict[str, torch.Tensor]:
    """Gradient of every parameter of the client's mean train loss (``.grad`` left empty)."""
    data = client.data
    model.zero_grad()
    logits = model(data.x, data.edge_index, data.n_id)
    F.cross_entropy(logits[data.train_mask], data.y[data.train_mask]).backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters()}
    model.zero_grad()
    return grads


def hand_scales(degrees: torch.Tensor, gamma: float, low: float, high: float) -> torch.Tensor:
    d = degrees.to(torch.float64)
    return (((d + 1) / (d.mean() + 1)) ** -gamma).clamp(low, high)


# -- forward with n_id -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gcn", "sage", "gin"])
@pytest.mark.parametrize("num_features", [34, 0])
def test_n_id_forward_equals_a_model_with_only_those_rows(kind, num_features):
    client = graph.client_data(CFG, 1)
    data = client.data
    n_id = data.n_id
    big = build_gnn(kind, num_features, 4, 8, num_nodes=34, embedding_dim=4, seed=5)
    small = build_gnn(kind, num_features, 4, 8, num_nodes=n_id.numel(), embedding_dim=4, seed=9)
    state = big.state_dict()
    state[EMB] = state[EMB][n_id].clone()  # row i of the small table is node n_id[i]
    small.load_state_dict(state)
    x = data.x if num_features else None

    with torch.no_grad():
        expected = small(x, data.edge_index)
        got = big(x, data.edge_index, n_id)
        first_rows = big(x, data.edge_index, torch.arange(n_id.numel()))  # the wrong nodes
    assert got.shape == (n_id.numel(), 4)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert not torch.allclose(first_rows, expected)


# -- train_client --------------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adagrad"])
def test_train_client_leaves_other_clients_rows_alone(optimizer):
    cfg = cfg_for(optimizer=optimizer, **{"local-epochs": 3})
    client = graph.client_data(cfg, 0)
    others = torch.ones(34, dtype=torch.bool)
    others[client.data.n_id] = False
    for degree_rule in (False, True):
        model = graph.build_model(cfg)
        before = weights(model)[EMB]
        graph.train_client(model, client, cfg, lr=0.1, degree_rule=degree_rule, proximal_mu=0.5)
        after = weights(model)[EMB]
        assert torch.equal(after[others], before[others])
        assert bool((after[~others] != before[~others]).any(dim=1).all())  # each own row moved


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize(("degree_rule", "gamma"), [(False, 1.0), (True, 0.0)])
def test_train_client_without_the_rule_is_plain_train_gnn(optimizer, degree_rule, gamma):
    cfg = cfg_for(optimizer=optimizer, **{"local-epochs": 3, "degree-gamma": gamma})
    client = graph.client_data(cfg, 0)
    model, reference = graph.build_model(cfg), graph.build_model(cfg)

    graph.train_client(model, client, cfg, lr=0.05, degree_rule=degree_rule, seed=4)
    train_gnn(reference, client.data, lr=0.05, epochs=3, optimizer=optimizer, seed=4)
    assert same_weights(weights(model), weights(reference))


@pytest.mark.parametrize("source", ["local", "global"])
def test_degree_rule_scales_each_own_row_step_by_s_v(source):
    cfg = cfg_for(**{"degree-source": source, "degree-low": 0.1, "degree-high": 10.0})
    client = graph.client_data(cfg, 0)
    n_id = client.data.n_id
    model = graph.build_model(cfg)
    before = weights(model)
    grads = gradients(model, client)

    graph.train_client(model, client, cfg, lr=0.1, degree_rule=True)
    after = weights(model)

    degrees = client.local_degree if source == "local" else client.global_degree
    scales = hand_scales(degrees, 1.0, 0.1, 10.0).to(torch.float32)
    assert len(set(scales.tolist())) > 2  # a real spread of degrees
    expected_rows = before[EMB][n_id] - 0.1 * scales[:, None] * grads[EMB][n_id]
    torch.testing.assert_close(after[EMB][n_id], expected_rows, rtol=1e-5, atol=1e-7)
    # the shared weights take the plain step
    for name in before:
        if name != EMB:
            torch.testing.assert_close(after[name], before[name] - 0.1 * grads[name])


def test_degree_rule_in_loss_mode_leaves_rows_unscaled_but_reweights():
    cfg = cfg_for(**{"degree-mode": "loss"})
    client = graph.client_data(cfg, 0)
    plain, ruled = graph.build_model(cfg), graph.build_model(cfg)
    graph.train_client(plain, client, cfg, lr=0.1, degree_rule=False)
    graph.train_client(ruled, client, cfg, lr=0.1, degree_rule=True)
    assert not same_weights(weights(plain), weights(ruled))


def test_proximal_mu_pulls_toward_the_start_weights():
    def distance(mu: float, epochs: int) -> float:
        cfg = cfg_for(**{"local-epochs": epochs})
        client = graph.client_data(cfg, 0)
        model = graph.build_model(cfg)
        start = weights(model)
        graph.train_client(model, client, cfg, lr=0.5, degree_rule=False, proximal_mu=mu)
        end = weights(model)
        return math.sqrt(sum(float(((end[k] - start[k]) ** 2).sum()) for k in start))

    # The proximal gradient mu (w - w0) is 0 at the start: one step does not see mu.
    assert distance(1.0, 1) == distance(0.0, 1) > 0
    free, pulled, tight = distance(0.0, 10), distance(1.0, 10), distance(1.9, 10)
    assert tight < pulled < free


def test_train_client_reports_the_diagnostic_before_training():
    cfg = cfg_for(**{"degree-gamma": 0.5})
    client = graph.client_data(cfg, 1)
    model = graph.build_model(cfg)
    expected_norms = graph.gradient_norms_by_node(
        graph.build_model(cfg), client.data, mask=client.data.train_mask
    )

    report = graph.train_client(model, client, cfg, lr=0.1, degree_rule=True)

    n = client.data.num_nodes
    assert [len(report[k]) for k in ("degree", "norm", "norm-scaled")] == [n, n, n]
    assert report["degree"] == client.local_degree.float().tolist()
    np.testing.assert_array_equal(report["norm"], expected_norms)  # the received weights'
    scales = hand_scales(client.local_degree, 0.5, 0.1, 10.0).numpy()
    # float32 degrees give float32 scales
    np.testing.assert_allclose(report["norm-scaled"], expected_norms * scales, rtol=1e-6)


# -- evaluate_client -----------------------------------------------------------------------------


def test_evaluate_client_reports_each_test_node_with_its_global_degree():
    client = graph.client_data(CFG, 0)
    data = client.data
    model = graph.build_model(CFG)
    whole = KarateClub()[0]
    global_degree = degree(whole.edge_index[0], 34, dtype=torch.long)

    loss, accuracy, test_degree, test_correct = graph.evaluate_client(model, client)

    assert len(test_degree) == len(test_correct) == client.num_test == int(data.test_mask.sum())
    assert test_degree == global_degree[data.n_id[data.test_mask]].tolist()
    assert test_degree != client.local_degree[data.test_mask].tolist()  # not the local ones
    expected_loss, expected_accuracy, correct = evaluate_gnn(model, data, data.test_mask)
    assert test_correct == correct.astype(int).tolist()
    assert set(test_correct) <= {0, 1}
    assert accuracy == expected_accuracy == pytest.approx(sum(test_correct) / len(test_correct))
    assert loss == expected_loss
