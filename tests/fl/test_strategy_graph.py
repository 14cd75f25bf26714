"""fedlr.fl.strategy on graph runs: modifiers, owner-sum of node embeddings, degree diagnostics.

Hand-worked numbers (clients with 100 and 300 examples, so FedAvg weights 1/4 and 3/4):

* received ``embedding.weight`` R (4 x 2); client 0 changes rows 0, 1 by C0, client 1 rows 2, 3
  by C1: the aggregate is ``R + C0 + C1`` (each row moves by its owner's full step), where the
  weighted mean would be ``R + C0 / 4 + 3 C1 / 4``.
* ``bias``: (100 * [1, 2] + 300 * [3, -2]) / 400 = [2.5, -1.0], the weighted mean as usual.
* test nodes with degrees 1..8 and correctness [0, 1, 1, 1, 0, 0, 1, 1] (the example of
  ``degree_bucket_fairness``): quartile accuracies [0.5, 1, 0, 1], Jain 2.5^2 / (4 * 2.25) =
  25/36, worst 0, gap 1, low-high gap -0.5, accuracy 5/8.
* norms ``sqrt(d + 1)`` have log-log slope 0.5 against degree; times ``(d + 1)^-0.5`` they are
  all 1, slope 0.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)

from fedlr import config as fedlr_config
from fedlr.fl import keys
from fedlr.fl.strategy import build_strategy, gradient_diagnostic
from fedlr.metrics.degree import degree_bucket_fairness

EMB = "embedding.weight"
RECEIVED = np.arange(8, dtype=np.float32).reshape(4, 2)
CHANGE_0 = np.array([[1, -2], [0.5, 0.5], [0, 0], [0, 0]], dtype=np.float32)
CHANGE_1 = np.array([[0, 0], [0, 0], [4, 4], [-1, 0.25]], dtype=np.float32)
BIAS_0, BIAS_1 = [1.0, 2.0], [3.0, -2.0]


def graph_cfg(**overrides: object) -> dict:
    values = {
        "dataset": "karate",
        "num-clients": 2,
        "noisy-clients": 0,
        "hard-clean-clients": 0,
        "strategies": "fedavg,fedavg+degree,fedavg+adam,noise-adaptive+adagrad+degree",
        "lr": 0.1,
        "adam-lr": 0.02,
        "adagrad-lr": 0.07,
        "warmup-rounds": 1,
    }
    values.update(overrides)
    return fedlr_config.resolve(overrides=values)


def named_arrays(table: np.ndarray, bias: list[float]) -> ArrayRecord:
    return ArrayRecord(
        {EMB: Array(np.asarray(table, np.float32)), "bias": Array(np.asarray(bias, np.float32))}
    )


def send(strategy, clients, fake_grid, server_round=1, arrays=None) -> dict[int, Message]:
    """``configure_train`` of one round; the messages by partition id."""
    arrays = arrays if arrays is not None else named_arrays(RECEIVED, [0.0, 0.0])
    config = ConfigRecord(dict(strategy.cfg))
    sent = strategy.configure_train(server_round, arrays, config, fake_grid(clients))
    return {strategy.clients[m.metadata.dst_node_id].partition_id: m for m in sent}


def reply(msg: Message, arrays: ArrayRecord, **metrics: object) -> Message:
    """A train reply carrying named arrays and any metrics (lists included)."""
    values = {keys.NUM_EXAMPLES: 1, keys.TRAIN_LOSS: 1.0, **metrics}
    content = RecordDict({keys.ARRAYS: arrays, keys.METRICS: MetricRecord(values)})
    return Message(content, reply_to=msg)


# -- modifiers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "degree_rule"),
    [("fedavg", False), ("fedavg+degree", True), ("noise-adaptive+adagrad+degree", True)],
)
def test_the_degree_rule_flag_reaches_every_train_message(
    make_clients, fake_grid, name, degree_rule
):
    clients = make_clients([100, 300])
    strategy = build_strategy(name, graph_cfg(), clients)
    assert strategy.degree_rule is degree_rule

    messages = send(strategy, clients, fake_grid)

    assert sorted(messages) == [0, 1]
    for message in messages.values():
        assert message.content[keys.CONFIG][keys.DEGREE_RULE] is degree_rule


@pytest.mark.parametrize(
    ("name", "optimizer", "lr"),
    [
        ("fedavg", "sgd", 0.1),
        ("fedavg+adam", "adam", 0.02),
        ("noise-adaptive+adagrad+degree", "adagrad", 0.07),
        ("fedprox+adam", "adam", 0.02),
    ],
)
def test_an_optimizer_modifier_sets_the_optimizer_and_its_base_rate(
    make_clients, fake_grid, name, optimizer, lr
):
    cfg = graph_cfg()
    clients = make_clients([100, 300])
    strategy = build_strategy(name, cfg, clients)

    assert strategy.cfg["optimizer"] == optimizer
    assert strategy.base_lr == lr == strategy.cfg["lr"]
    assert (cfg["optimizer"], cfg["lr"]) == ("sgd", 0.1)  # the run config is not changed
    for message in send(strategy, clients, fake_grid).values():
        sent = message.content[keys.CONFIG]
        assert (sent["optimizer"], sent[keys.LR]) == (optimizer, lr)


def test_qfedavg_with_adam_takes_adams_rate_for_its_lipschitz_constant(make_clients):
    strategy = build_strategy("qfedavg+adam", graph_cfg(), make_clients([100, 300]))
    assert strategy.client_learning_rate == 0.02


# -- owner-sum of node embeddings ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["fedavg", "fedavg+degree", "fedprox", "qfedavg"])
def test_embedding_rows_are_received_plus_each_owners_change(make_clients, fake_grid, name):
    clients = make_clients([100, 300])
    strategy = build_strategy(name, graph_cfg(), clients)
    messages = send(strategy, clients, fake_grid)
    replies = [
        reply(messages[1], named_arrays(RECEIVED + CHANGE_1, BIAS_1), **{keys.TRAIN_LOSS: 2.0}),
        reply(messages[0], named_arrays(RECEIVED + CHANGE_0, BIAS_0), **{keys.TRAIN_LOSS: 1.0}),
    ]

    arrays, _ = strategy.aggregate_train(1, replies)

    table = arrays[EMB].numpy()
    assert table.dtype == np.float32
    np.testing.assert_array_equal(table, RECEIVED + CHANGE_0 + CHANGE_1)
    weighted_mean = RECEIVED + CHANGE_0 / 4 + 3 * CHANGE_1 / 4
    assert not np.allclose(table, weighted_mean)
    if name != "qfedavg":  # q-FedAvg's shared weights follow its own formula
        np.testing.assert_allclose(arrays["bias"].numpy(), [2.5, -1.0], rtol=1e-6)


def test_rows_of_a_client_that_does_not_reply_stay_as_received(make_clients, fake_grid):
    clients = make_clients([100, 300, 50])
    strategy = build_strategy("fedavg", graph_cfg(**{"num-clients": 3}), clients)
    messages = send(strategy, clients, fake_grid)
    replies = [  # partition 2 owns no changed row here, and does not reply
        reply(messages[0], named_arrays(RECEIVED + CHANGE_0, BIAS_0)),
        reply(messages[1], named_arrays(RECEIVED + CHANGE_1, BIAS_1)),
    ]

    arrays, _ = strategy.aggregate_train(1, replies)

    np.testing.assert_array_equal(arrays[EMB].numpy(), RECEIVED + CHANGE_0 + CHANGE_1)
    assert strategy.rounds[1].sampled == [0, 1, 2]


def test_without_an_embedding_table_everything_is_the_weighted_mean(make_clients, fake_grid):
    clients = make_clients([100, 300])
    strategy = build_strategy("fedavg", graph_cfg(), clients)
    bias_only = ArrayRecord({"bias": Array(np.zeros(2, np.float32))})
    messages = send(strategy, clients, fake_grid, arrays=bias_only)
    replies = [
        reply(messages[pid], ArrayRecord({"bias": Array(np.asarray(b, np.float32))}))
        for pid, b in ((0, BIAS_0), (1, BIAS_1))
    ]

    arrays, _ = strategy.aggregate_train(1, replies)

    assert list(arrays) == ["bias"]
    np.testing.assert_allclose(arrays["bias"].numpy(), [2.5, -1.0], rtol=1e-6)


# -- gradient-norm diagnostic --------------------------------------------------------------------


def power_law_report(degrees: list[int]) -> tuple[list[float], list[float], list[float]]:
    d = np.asarray(degrees, dtype=float)
    norm = np.sqrt(d + 1)
    return d.tolist(), norm.tolist(), (norm * (d + 1) ** -0.5).tolist()


def test_gradient_diagnostic_pools_clients_into_slopes_and_a_profile():
    # degrees 0, 3, 8, 15 -> norms 1, 2, 3, 4; a zero norm has no logarithm and is left out
    first = power_law_report([0, 3, 8])
    second = power_law_report([3, 15, 0])
    second = (second[0] + [24.0], second[1] + [0.0], second[2] + [0.0])

    slopes, profile = gradient_diagnostic([first, second], with_profile=True)

    assert slopes["before"] == pytest.approx(0.5, abs=1e-12)
    assert slopes["after"] == pytest.approx(0.0, abs=1e-12)
    assert profile["degree"] == [0.0, 3.0, 8.0, 15.0]
    np.testing.assert_allclose(profile["before"], [1.0, 2.0, 3.0, 4.0], rtol=1e-12)
    np.testing.assert_allclose(profile["after"], [1.0, 1.0, 1.0, 1.0], rtol=1e-12)
    assert profile["count"] == [2, 2, 1, 1]
    assert gradient_diagnostic([first, second], with_profile=False) == (slopes, None)


def test_gradient_diagnostic_slope_is_none_for_one_degree():
    slopes, _ = gradient_diagnostic([([2.0, 2.0], [1.0, 3.0], [1.0, 3.0])], with_profile=False)
    assert slopes == {"before": None, "after": None}


def test_aggregate_train_pools_the_diagnostic_and_keeps_a_profile_in_round_one(
    make_clients, fake_grid
):
    clients = make_clients([100, 300, 50])
    strategy = build_strategy("fedavg+degree", graph_cfg(**{"num-clients": 3}), clients)
    reports = {
        0: power_law_report([0, 3, 8]),
        1: power_law_report([3, 15, 0]),
        # lists that disagree in length: left out of the pool (its 1000 would move the slope)
        2: ([1.0, 1000.0], [5.0], []),
    }
    for server_round in (1, 2):
        messages = send(strategy, clients, fake_grid, server_round)
        replies = [
            reply(
                messages[pid],
                named_arrays(RECEIVED, BIAS_0),
                **{
                    keys.GRAD_DEGREE: reports[pid][0],
                    keys.GRAD_NORM: reports[pid][1],
                    keys.GRAD_NORM_SCALED: reports[pid][2],
                },
            )
            for pid in (2, 1, 0)
        ]
        strategy.aggregate_train(server_round, replies)

    first, second = strategy.rounds[1], strategy.rounds[2]
    assert first.gradient_slope["before"] == pytest.approx(0.5, abs=1e-12)
    assert first.gradient_slope["after"] == pytest.approx(0.0, abs=1e-12)
    assert first.gradient_profile["degree"] == [0.0, 3.0, 8.0, 15.0]
    assert first.gradient_profile["count"] == [2, 2, 1, 1]
    assert second.gradient_slope == first.gradient_slope
    assert second.gradient_profile is None


def test_a_tabular_run_keeps_no_degree_diagnostics(make_clients, fake_grid):
    clients = make_clients([100, 300])
    cfg = fedlr_config.resolve(overrides={"num-clients": 2, "noisy-clients": 0})
    strategy = build_strategy("fedavg", cfg, clients)
    messages = send(strategy, clients, fake_grid)
    report = power_law_report([0, 3, 8])
    lists = dict(
        zip((keys.GRAD_DEGREE, keys.GRAD_NORM, keys.GRAD_NORM_SCALED), report, strict=True)
    )
    strategy.aggregate_train(
        1, [reply(messages[pid], named_arrays(RECEIVED, BIAS_0), **lists) for pid in (0, 1)]
    )
    assert strategy.rounds[1].gradient_slope is None


# -- degree fairness from evaluate replies -------------------------------------------------------


def evaluate_reply(node_id: int, pid: int, degrees: list[int], correct: list[int]) -> Message:
    ask = Message(RecordDict(), dst_node_id=node_id, message_type=MessageType.EVALUATE)
    values = {
        keys.NUM_EXAMPLES: len(degrees),
        keys.PARTITION_ID: pid,
        keys.ACCURACY: sum(correct) / len(correct),
        keys.TEST_DEGREE: degrees,
        keys.TEST_CORRECT: correct,
    }
    return Message(RecordDict({keys.METRICS: MetricRecord(values)}), reply_to=ask)


def test_degree_fairness_pools_every_clients_test_nodes(make_clients):
    clients = make_clients([100, 300])
    strategy = build_strategy("fedavg", graph_cfg(), clients)
    # degrees 1..8 with correctness [0, 1, 1, 1, 0, 0, 1, 1], dealt out of order to two clients
    a_degrees, a_correct = [8, 1, 5, 3], [1, 0, 0, 1]
    b_degrees, b_correct = [2, 7, 4, 6], [1, 1, 1, 0]
    replies = [
        evaluate_reply(clients[1].node_id, 1, b_degrees, b_correct),
        evaluate_reply(clients[0].node_id, 0, a_degrees, a_correct),
    ]

    strategy.aggregate_evaluate(1, replies)

    fairness = strategy.rounds[1].degree_fairness
    expected = degree_bucket_fairness(b_correct + a_correct, b_degrees + a_degrees)
    assert fairness == {**expected, "accuracy": 5 / 8, "nodes": 8}
    assert fairness["bucket-accuracy"] == [0.5, 1.0, 0.0, 1.0]
    assert fairness["bucket-size"] == [2, 2, 2, 2]
    assert fairness["jain"] == pytest.approx(25 / 36)
    assert (fairness["worst"], fairness["gap"], fairness["low-high-gap"]) == (0.0, 1.0, -0.5)
    assert strategy.rounds[1].accuracy == {0: 0.5, 1: 0.75}


def test_degree_fairness_skips_a_reply_whose_lists_disagree(make_clients):
    clients = make_clients([100, 300])
    strategy = build_strategy("fedavg", graph_cfg(), clients)
    replies = [
        evaluate_reply(clients[0].node_id, 0, [1, 2, 3, 4], [0, 1, 1, 1]),
        evaluate_reply(clients[1].node_id, 1, [5, 6, 7], [0, 0, 1, 1]),
    ]

    strategy.aggregate_evaluate(1, replies)

    fairness = strategy.rounds[1].degree_fairness
    assert fairness == {
        **degree_bucket_fairness([0, 1, 1, 1], [1, 2, 3, 4]),
        "accuracy": 0.75,
        "nodes": 4,
    }
