"""fedlr.fl.strategy, evaluation side: per-client metrics kept and checked; truth optional.

Two clients (partition 0 on node 10, partition 1 on node 11), 10 test examples each. Flower's
aggregate of accuracies 0.5 and 0.7 is their unweighted mean, 0.6.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from fedlr import config as fedlr_config
from fedlr.fl import keys
from fedlr.fl.strategy import build_strategy, query_nodes

NODES = {0: 10, 1: 11}
CLIENTS_2 = {"num-clients": 2, "noisy-clients": 1, "hard-clean-clients": 0}


@pytest.fixture
def strategy(make_clients):
    cfg = fedlr_config.resolve(overrides=CLIENTS_2 | {"metrics": "accuracy,auroc,f1"})
    return build_strategy("fedavg", cfg, make_clients([100, 100], [0.5, 0.0], list(NODES.values())))


def evaluate(strategy, extra_by_pid, accuracy=(0.5, 0.7), server_round=1):
    """Send each partition's evaluate reply (accuracy, loss, plus ``extra_by_pid[pid]``)."""
    replies = []
    for pid, extra in extra_by_pid.items():
        ask = Message(RecordDict(), dst_node_id=NODES[pid], message_type=MessageType.EVALUATE)
        values = {
            keys.NUM_EXAMPLES: 10,
            keys.PARTITION_ID: pid,
            keys.ACCURACY: accuracy[pid],
            keys.EVAL_LOSS: 0.4,
            **extra,
        }
        replies.append(Message(RecordDict({keys.METRICS: MetricRecord(values)}), reply_to=ask))
    aggregate = strategy.aggregate_evaluate(server_round, replies)
    return strategy.rounds[server_round], aggregate


def test_accuracy_and_loss_only_add_no_metric_and_no_error(strategy):
    log_, aggregate = evaluate(strategy, {0: {}, 1: {}})
    assert log_.metrics == {} and log_.errors == []
    assert dict(aggregate) == {keys.ACCURACY: pytest.approx(0.6), keys.EVAL_LOSS: 0.4}


def test_each_clients_metrics_are_kept(strategy):
    log_, _ = evaluate(
        strategy,
        {0: {"auroc": 0.75, "f1": 0.5, "sensitivity": 0.8}, 1: {"auroc": 1.0, "f1": 0.0}},
    )
    assert log_.metrics == {
        0: {"auroc": 0.75, "f1": 0.5, "sensitivity": 0.8},
        1: {"auroc": 1.0, "f1": 0.0},
    }
    assert log_.errors == []
    assert log_.accuracy == {0: 0.5, 1: 0.7} and log_.eval_loss == {0: 0.4, 1: 0.4}


def test_a_bad_value_drops_that_metric_for_that_client_and_is_logged(strategy):
    log_, aggregate = evaluate(
        strategy, {0: {"auroc": 0.75, "f1": 0.5}, 1: {"auroc": 1.5, "f1": float("nan")}}
    )
    assert log_.metrics == {0: {"auroc": 0.75, "f1": 0.5}}
    assert log_.errors == [
        {"partition_id": 1, "reason": "dropped metrics: 'auroc' (1.5 outside [0, 1]); 'f1' (nan "
         "not finite)"}
    ]  # fmt: skip
    assert log_.accuracy == {0: 0.5, 1: 0.7}  # the rest of the reply still counts
    assert aggregate[keys.ACCURACY] == pytest.approx(0.6)


def test_a_metric_only_some_clients_send_does_not_stop_the_round(strategy):
    # Flower refuses MetricRecords with different keys (and would end the run)
    hostile = {f"k{i:04d}": float(i) for i in range(500)}
    log_, aggregate = evaluate(strategy, {0: {"sensitivity": 0.8}, 1: hostile})
    assert log_.metrics[0] == {"sensitivity": 0.8}
    assert list(log_.metrics[1]) == [f"k{i:04d}" for i in range(32)]
    assert log_.errors == [{"partition_id": 1, "reason": "dropped metrics: 468 names over the "
                            "limit of 32"}]  # fmt: skip
    assert dict(aggregate) == {keys.ACCURACY: pytest.approx(0.6), keys.EVAL_LOSS: 0.4}


def test_a_negative_loss_is_logged_not_recorded(strategy):
    log_, _ = evaluate(strategy, {0: {keys.EVAL_LOSS: -0.5}, 1: {}})
    assert log_.eval_loss == {1: 0.4}
    assert log_.errors == [{"partition_id": 0, "reason": "invalid eval-loss -0.5"}]


def test_metrics_survive_a_checkpoint(strategy, make_clients, tmp_path):
    import torch

    evaluate(strategy, {0: {"auroc": 0.75}, 1: {"sensitivity": 2.0}})
    torch.save(strategy.state_dict(), tmp_path / "state.pt")
    restored = build_strategy("fedavg", strategy.cfg, list(strategy.by_partition.values()))
    restored.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert restored.rounds[1].metrics == {0: {"auroc": 0.75}, 1: {"sensitivity": 2.0}}


def test_a_checkpoint_from_before_metrics_loads(strategy):
    evaluate(strategy, {0: {}, 1: {}})
    state = strategy.state_dict()
    for log_ in state["rounds"].values():
        del log_["metrics"]
    strategy.load_state_dict(state)
    assert strategy.rounds[1].metrics == {}


# -- query round: the truth is optional ---------------------------------------------------------


class QueryGrid:
    """Answers each query with ``answers[node_id]``: (metrics, ConfigRecord "info" or None)."""

    def __init__(self, answers):
        self.answers = answers

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for msg in messages:
            metrics, info = self.answers[msg.metadata.dst_node_id]
            content = RecordDict({keys.METRICS: MetricRecord(metrics)})
            if info is not None:
                content["info"] = info
            replies.append(Message(content, reply_to=msg))
        return replies


def ask_nodes(answers):
    cfg = fedlr_config.resolve(overrides=CLIENTS_2)
    clients, failed = query_nodes(QueryGrid(answers), list(answers), cfg, timeout=1.0)
    assert failed == []
    return {c.partition_id: c for c in clients}


def test_a_site_without_truth_has_no_role_and_no_true_noise():
    sized = {keys.PARTITION_ID: 0, keys.NUM_EXAMPLES: 50, keys.BATCH_SIZE: 8}
    clients = ask_nodes({10: (sized, None), 11: ({**sized, keys.PARTITION_ID: 1}, ConfigRecord())})
    assert [(c.noise_true, c.role, c.num_examples) for c in clients.values()] == [
        (None, None, 50),
        (None, None, 50),
    ]


def test_simulated_truth_is_read():
    metrics = {keys.PARTITION_ID: 0, keys.NUM_EXAMPLES: 50, "noise-true": 0.25}
    (client,) = ask_nodes({10: (metrics, ConfigRecord({"role": "noisy"}))}).values()
    assert (client.noise_true, client.role) == (0.25, "noisy")


@pytest.mark.parametrize(
    ("noise", "role"), [(math.nan, ["noisy"]), (1.5, "x" * 65), (-0.1, ""), ([0.2], b"noisy")]
)
def test_malformed_truth_is_ignored_not_fatal(noise, role):
    metrics = {keys.PARTITION_ID: 0, keys.NUM_EXAMPLES: 50, "noise-true": noise}
    (client,) = ask_nodes({10: (metrics, ConfigRecord({"role": role}))}).values()
    assert (client.noise_true, client.role) == (None, None)
    assert np.isfinite(client.num_examples)
