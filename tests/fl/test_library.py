"""fedlr's strategies as plain Flower strategies: keyword arguments, no query round, no fedlr app.

Every test drives the strategy as a user's ServerApp would, with node ids a SuperLink could give
(beyond int64), and replies as a user's ClientApp would build them. :class:`FakeGrid` has no
``send_and_receive``: a strategy that tried fedlr's query round would fail here.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAdagrad, FedAdam, FedAvgM, FedYogi

from fedlr.fl import (
    NoiseAdaptiveFedAdam,
    NoiseAdaptiveFedAvg,
    NoiseAdaptiveFedAvgM,
    NoiseAdaptiveFedYogi,
    per_client,
)
from fedlr.fl.strategy import KNOBS

from .conftest import FakeGrid

NODES = [2**63 + 5, 17, 2**64 - 3]  # a SuperLink's node ids are unsigned 64-bit


def reply(msg: Message, weights, metrics) -> Message:
    """A user's train reply: one ArrayRecord, one MetricRecord, as Flower's template builds."""
    arrays = ArrayRecord([np.asarray(w, dtype=np.float64) for w in weights])
    return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics)}), reply_to=msg)


def one_round(strategy, server_round, answers, arrays=None):
    """configure_train then aggregate_train; ``answers`` maps node id -> (weights, metrics)."""
    arrays = arrays if arrays is not None else ArrayRecord([np.zeros(2)])
    sent = list(strategy.configure_train(server_round, arrays, ConfigRecord(), FakeGrid(NODES)))
    by_node = {m.metadata.dst_node_id: m for m in sent}
    replies = [reply(by_node[n], *answers[n]) for n in answers if n in by_node]
    return by_node, strategy.aggregate_train(server_round, replies)


def honest(estimates, counts=(100, 100, 100), extra=None):
    """Each node returns weights [1, 1] with its count and estimate (and ``extra`` metrics)."""
    return {
        node: ([[1.0, 1.0]], {"num-examples": n, "noise-estimate": e, **(extra or {})})
        for node, n, e in zip(NODES, counts, estimates, strict=True)
    }


def test_every_knob_has_a_default_and_needs_no_run_config():
    strategy = NoiseAdaptiveFedAvg()
    assert strategy.cfg["lr"] == 0.1 and strategy.rate_source == "estimate"
    assert strategy.clients == {} and strategy.open
    tuned = NoiseAdaptiveFedAvg(lr=0.05, warmup_rounds=1, rate_high=2.0, seed=3)
    assert (tuned.cfg["lr"], tuned.cfg["warmup-rounds"], tuned.cfg["rate-high"]) == (0.05, 1, 2.0)
    assert len(KNOBS) == 17


@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [
        ({"lr": -1.0}, ValueError, "lr"),
        ({"rate_guard": "sometimes"}, ValueError, "rate_guard"),
        ({"lr": 0.1, "cfg": {"lr": 0.1}}, TypeError, "not both"),
        ({"proximal_mu": 0.1}, TypeError, "proximal_mu"),  # not a FedAvg argument
        ({"rate_source": "oracle"}, ValueError, "oracle"),
    ],
)
def test_bad_keywords_are_refused_by_name(kwargs, error, text):
    with pytest.raises(error, match=text):
        NoiseAdaptiveFedAvg(**kwargs)


def test_first_round_needs_no_query_and_sends_each_node_the_uniform_rate():
    strategy = NoiseAdaptiveFedAvg(lr=0.1, fraction_evaluate=0.0)
    sent, (arrays, _) = one_round(strategy, 1, honest([0.1, 0.1, 0.1]))
    assert sorted(sent) == sorted(NODES)
    for msg in sent.values():
        config = msg.content["config"]
        assert config["lr"] == 0.1 and config["server-round"] == 1
        assert config["estimate-noise"] is True
        assert "client-batch-size" not in config and "degree-rule" not in config
    assert arrays is not None and np.allclose(arrays.to_numpy_ndarrays()[0], [1.0, 1.0])
    assert set(strategy.rounds[1].lr) == set(NODES)


def test_the_noisy_node_gets_the_smallest_rate_after_warmup():
    strategy = NoiseAdaptiveFedAvg(lr=0.1, fraction_evaluate=0.0)
    for server_round in (1, 2, 3, 4):
        sent, _ = one_round(strategy, server_round, honest([0.02, 0.03, 0.5]))
        rates = {n: float(m.content["config"]["lr"]) for n, m in sent.items()}
        if server_round <= 2:  # warm-up: uniform
            assert set(rates.values()) == {0.1}
        else:
            assert rates[NODES[2]] < min(rates[NODES[0]], rates[NODES[1]])


@pytest.mark.parametrize("bad", [None, float("nan"), -1.0, [0.1, 0.2]])
def test_a_missing_or_bad_estimate_gets_the_uniform_rate_and_one_log_line(bad, caplog):
    strategy = NoiseAdaptiveFedAvg(lr=0.1, fraction_evaluate=0.0)
    answers = honest([0.02, 0.03, 0.5])
    metrics = answers[NODES[2]][1]
    if bad is None:
        del metrics["noise-estimate"]
    else:
        metrics["noise-estimate"] = bad
    with caplog.at_level(logging.WARNING, logger="fedlr"):
        for server_round in (1, 2, 3, 4):
            sent, (arrays, _) = one_round(strategy, server_round, answers)
            assert arrays is not None  # the reply is still averaged in: only its rate is uniform
    lines = [r.getMessage() for r in caplog.records if "noise estimate" in r.getMessage()]
    assert len(lines) == 1 and str(NODES[2]) in lines[0]
    rates = {n: float(m.content["config"]["lr"]) for n, m in sent.items()}
    assert rates[NODES[2]] == pytest.approx(0.1 * strategy.factors()[NODES[2]])
    assert strategy.factors()[NODES[2]] == 1.0
    assert strategy.rounds[4].invalid_estimates[0]["partition_id"] == NODES[2]


def test_user_metrics_pass_through_to_the_aggregate_and_the_round_log():
    strategy = NoiseAdaptiveFedAvg(lr=0.1, fraction_evaluate=0.0)
    answers = honest([0.1, 0.1, 0.1], counts=(100, 300, 100))
    for node, accuracy in zip(NODES, (0.5, 0.9, 0.7), strict=True):
        answers[node][1]["train-accuracy"] = accuracy
    answers[NODES[0]][1]["only-mine"] = 1.0  # not sent by all: logged, not aggregated
    _, (_, metrics) = one_round(strategy, 1, answers)
    # weighted by examples, as Flower does: (0.5 * 100 + 0.9 * 300 + 0.7 * 100) / 500
    assert metrics["train-accuracy"] == pytest.approx(0.78)
    assert "only-mine" not in metrics and "noise-estimate" not in metrics
    log_ = strategy.rounds[1]
    assert log_.train_metrics[NODES[1]] == {"train-accuracy": 0.9}
    assert log_.train_metrics[NODES[0]] == {"only-mine": 1.0, "train-accuracy": 0.5}


@pytest.mark.parametrize("count", [None, -5, 2.5, float("inf"), [1, 2]])
def test_a_reply_without_a_usable_example_count_is_dropped_and_logged(count):
    strategy = NoiseAdaptiveFedAvg(lr=0.1, fraction_evaluate=0.0)
    answers = honest([0.1, 0.1, 0.1])
    answers[NODES[2]] = ([[100.0, 100.0]], {"noise-estimate": 0.1})
    if count is not None:
        answers[NODES[2]][1]["num-examples"] = count
    _, (arrays, _) = one_round(strategy, 1, answers)
    assert np.allclose(arrays.to_numpy_ndarrays()[0], [1.0, 1.0])  # never averaged in
    (error,) = strategy.rounds[1].errors
    assert error["partition_id"] == NODES[2] and "num-examples" in error["reason"]


def test_a_claimed_count_weighs_at_most_ten_median_clients():
    strategy = NoiseAdaptiveFedAvg(lr=0.1, fraction_evaluate=0.0)
    answers = honest([0.1, 0.1, 0.1], counts=(100, 100, 10**12))
    answers[NODES[2]] = ([[12.0, 12.0]], answers[NODES[2]][1])
    _, (arrays, _) = one_round(strategy, 1, answers)
    # cap 10 x median(100, 100, 1e12) = 1000: (1 * 100 + 1 * 100 + 12 * 1000) / 1200
    assert np.allclose(arrays.to_numpy_ndarrays()[0], 12200 / 1200)
    assert strategy.rounds[1].capped[0]["used"] == 1000


def test_fedadam_applies_its_server_step_over_the_per_client_layer():
    strategy = NoiseAdaptiveFedAdam(lr=0.1, fraction_evaluate=0.0, eta=0.1, beta_1=0.9)
    assert isinstance(strategy, FedAdam)
    _, (arrays, _) = one_round(strategy, 1, honest([0.1, 0.1, 0.1]))
    # delta = 1, m = 0.1, v = 0.01; eta_norm = 0.1 sqrt(1 - 0.99^2) / (1 - 0.9^2)
    eta_norm = 0.1 * math.sqrt(1 - 0.99**2) / (1 - 0.9**2)
    expected = eta_norm * 0.1 / (math.sqrt(0.01) + 1e-3)
    assert np.allclose(arrays.to_numpy_ndarrays()[0], expected)


@pytest.mark.parametrize(
    ("cls", "flower", "kwargs"),
    [
        (NoiseAdaptiveFedAdam, FedAdam, {}),
        (NoiseAdaptiveFedYogi, FedYogi, {}),
        (NoiseAdaptiveFedAvgM, FedAvgM, {"server_momentum": 0.9}),
        (per_client(FedAdagrad), FedAdagrad, {}),
    ],
)
def test_server_optimizers_compose_with_per_client_rates(cls, flower, kwargs):
    strategy = cls(lr=0.1, fraction_evaluate=0.0, **kwargs)
    assert isinstance(strategy, flower)
    arrays = ArrayRecord([np.zeros(2)])
    for server_round in (1, 2, 3):
        sent, (arrays, _) = one_round(strategy, server_round, honest([0.02, 0.03, 0.5]), arrays)
        assert arrays is not None and np.all(np.isfinite(arrays.to_numpy_ndarrays()[0]))
    rates = {n: float(m.content["config"]["lr"]) for n, m in sent.items()}
    assert rates[NODES[2]] < min(rates[NODES[0]], rates[NODES[1]])


def test_per_client_refuses_what_is_not_a_fedavg_family_strategy():
    with pytest.raises(TypeError, match="FedAvg-family"):
        per_client(dict)  # type: ignore[arg-type]


def test_the_docs_list_every_keyword_with_the_schemas_default_and_help():
    from pathlib import Path

    from fedlr.config import SCHEMA

    page = (Path(__file__).resolve().parents[2] / "docs" / "library.md").read_text()
    for name in KNOBS:
        key = SCHEMA[name.replace("_", "-")]
        row = f"| `{name}` | `{key.default!r}` | {key.help} ({key.allowed}) |"
        assert row in page, f"docs/library.md lacks or misstates {name}: expected {row}"


def test_a_users_rate_factor_and_observer_from_docs_extending():
    """examples/extending/custom_rates.py, as docs/extending.md shows it."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "extending"))
    try:
        from custom_rates import RampedFedAvg
    finally:
        sys.path.pop(0)
    strategy = RampedFedAvg(ramp_rounds=4, lr=0.1, fraction_evaluate=0.0)
    answers = honest([0.1, 0.1, 0.1])
    for node, loss in zip(NODES, (0.5, 2.0, 1.0), strict=True):
        answers[node][1]["train_loss"] = loss
    sent, _ = one_round(strategy, 1, answers)
    assert [float(m.content["config"]["lr"]) for m in sent.values()] == [pytest.approx(0.025)] * 3
    sent, _ = one_round(strategy, 2, answers)
    assert [float(m.content["config"]["lr"]) for m in sent.values()] == [pytest.approx(0.05)] * 3
    assert strategy.loss_spread.spread == {1: 1.5, 2: 1.5}
    assert [f.name for f in strategy.rates.factors] == ["schedule", "noise", "coupling", "ramp"]


# -- found by a hostile review ---------------------------------------------------------------


def test_integer_arrays_keep_their_dtype_so_the_next_round_is_accepted():
    """BatchNorm's counter is int64: its weighted mean must go back as int64."""
    strategy = NoiseAdaptiveFedAvg(lr=0.1, fraction_evaluate=0.0)
    arrays = ArrayRecord({"w": Array(np.zeros(2)), "count": Array(np.array(3, dtype=np.int64))})
    for server_round in (1, 2):
        sent = list(strategy.configure_train(server_round, arrays, ConfigRecord(), FakeGrid(NODES)))
        replies = []
        for msg in sent:
            back = ArrayRecord(
                {"w": Array(np.ones(2)), "count": Array(np.array(4, dtype=np.int64))}
            )
            metrics = MetricRecord({"num-examples": 10, "noise-estimate": 0.1})
            replies.append(Message(RecordDict({"arrays": back, "metrics": metrics}), reply_to=msg))
        arrays, _ = strategy.aggregate_train(server_round, replies)
        assert arrays is not None and strategy.rounds[server_round].errors == []
        assert arrays["count"].numpy().dtype == np.int64 and int(arrays["count"].numpy()) == 4


def test_a_strategy_restored_from_a_json_state_goes_on_with_its_nodes_and_counts():
    import json

    strategy = NoiseAdaptiveFedAvg(lr=0.1, fraction_evaluate=0.0, warmup_rounds=1)
    for server_round in (1, 2):
        one_round(strategy, server_round, honest([0.02, 0.03, 0.5], counts=(100, 200, 300)))
    state = json.loads(json.dumps(strategy.state_dict()))
    again = NoiseAdaptiveFedAvg(lr=0.1, fraction_evaluate=0.0, warmup_rounds=1)
    again.load_state_dict(state)
    assert {n: c.num_examples for n, c in again.clients.items()} == dict(
        zip(NODES, (100, 200, 300), strict=True)
    )
    sent, (arrays, _) = one_round(again, 3, honest([0.02, 0.03, 0.5]))
    expected, _ = one_round(strategy, 3, honest([0.02, 0.03, 0.5]))
    assert {n: m.content["config"]["lr"] for n, m in sent.items()} == {
        n: m.content["config"]["lr"] for n, m in expected.items()
    }


def test_robust_aggregation_is_available_to_the_library_but_not_under_qfedavg():
    from fedlr.fl import NoiseAdaptiveQFedAvg

    strategy = NoiseAdaptiveFedAvg(lr=0.1, fraction_evaluate=0.0, aggregation="median")
    answers = honest([0.1, 0.1, 0.1])
    answers[NODES[2]] = ([[100.0, 100.0]], answers[NODES[2]][1])
    _, (arrays, _) = one_round(strategy, 1, answers)
    assert np.allclose(arrays.to_numpy_ndarrays()[0], [1.0, 1.0])  # the median ignores 100
    with pytest.raises(ValueError, match="aggregation: expected mean with q-FedAvg"):
        NoiseAdaptiveQFedAvg(aggregation="median", client_learning_rate=0.1)


def test_refused_evaluate_values_never_reach_the_aggregate_and_counts_are_capped():
    strategy = NoiseAdaptiveFedAvg(lr=0.1)
    one_round(strategy, 1, honest([0.1, 0.1, 0.1]))  # learns the nodes and the cap (1000)
    sent = list(
        strategy.configure_evaluate(1, ArrayRecord([np.zeros(2)]), ConfigRecord(), FakeGrid(NODES))
    )
    values = {
        NODES[0]: {"num-examples": 100, "accuracy": 0.5, "auroc": 0.6},
        NODES[1]: {"num-examples": 100, "accuracy": 5.0, "auroc": 0.8},  # accuracy out of range
        NODES[2]: {"num-examples": 10**12, "accuracy": 0.7, "auroc": 0.9},  # count capped
    }
    replies = [
        Message(RecordDict({"metrics": MetricRecord(values[m.metadata.dst_node_id])}), reply_to=m)
        for m in sent
    ]
    aggregate = strategy.aggregate_evaluate(1, replies)
    assert "accuracy" not in aggregate  # not every reply has a valid one: left out
    # auroc weighted by the capped counts: (0.6 * 100 + 0.8 * 100 + 0.9 * 1000) / 1200
    assert aggregate["auroc"] == pytest.approx(1040 / 1200)
    assert strategy.rounds[1].accuracy == {NODES[0]: 0.5, NODES[2]: 0.7}


def test_fraction_train_samples_among_the_connected_nodes():
    strategy = NoiseAdaptiveFedAvg(lr=0.1, fraction_evaluate=0.0, fraction_train=0.5)
    strategy.learn_nodes([5, 6, 7, 8])
    for server_round in range(1, 30):
        sampled = strategy.sample(server_round, among=[7, 8])
        assert len(sampled) == 1 and sampled[0] in (7, 8)


def test_q_fedavg_drops_a_negative_loss_and_per_client_knows_it_needs_losses():
    from flwr.serverapp.strategy import QFedAvg

    from fedlr.fl import NoiseAdaptiveQFedAvg

    assert per_client(QFedAvg).needs_train_loss
    strategy = NoiseAdaptiveQFedAvg(lr=0.1, fraction_evaluate=0.0, client_learning_rate=0.1)
    answers = honest([0.1, 0.1, 0.1], extra={"train_loss": 1.0})
    answers[NODES[1]][1]["train_loss"] = -1.0
    _, (arrays, _) = one_round(strategy, 1, answers)
    assert arrays is not None and np.all(np.isfinite(arrays.to_numpy_ndarrays()[0]))
    (error,) = strategy.rounds[1].errors
    assert error["partition_id"] == NODES[1] and "loss" in error["reason"]


def evaluate_round(strategy, values):
    """configure_evaluate then aggregate_evaluate; ``values`` maps node id -> metrics or Error."""
    from flwr.app import Error

    sent = strategy.configure_evaluate(
        1, ArrayRecord([np.zeros(2)]), ConfigRecord(), FakeGrid(NODES)
    )
    replies = []
    for msg in sent:
        value = values[msg.metadata.dst_node_id]
        if isinstance(value, Error):
            replies.append(Message(value, reply_to=msg))
        else:
            replies.append(Message(RecordDict({"metrics": MetricRecord(value)}), reply_to=msg))
    return strategy.aggregate_evaluate(1, replies)


def test_a_failed_or_refused_evaluate_reply_is_recorded_and_logged_once(caplog):
    from flwr.app import Error

    strategy = NoiseAdaptiveFedAvg(lr=0.1)
    one_round(strategy, 1, honest([0.1, 0.1, 0.1]))
    values = {
        NODES[0]: {"num-examples": 100, "accuracy": 0.5},
        NODES[1]: Error(code=0, reason="evaluate crashed"),
        NODES[2]: {"num-examples": -1, "accuracy": 0.9},
    }
    with caplog.at_level(logging.WARNING, logger="fedlr"):
        aggregate = evaluate_round(strategy, values)
    assert aggregate["accuracy"] == 0.5  # only the good reply
    errors = sorted(strategy.rounds[1].errors, key=lambda e: e["reason"])  # in reply order
    assert errors == [
        {"partition_id": NODES[1], "reason": "evaluate crashed"},
        {"partition_id": NODES[2], "reason": "num-examples -1 is not a number >= 1"},
    ]
    lines = sorted(r.getMessage() for r in caplog.records if "evaluate reply" in r.getMessage())
    assert lines == [
        f"fedlr: node {NODES[1]}: evaluate reply dropped: evaluate crashed",
        f"fedlr: node {NODES[2]}: evaluate reply dropped: num-examples -1 is not a number >= 1",
    ]


def test_the_state_is_strict_json_and_a_nan_loss_comes_back_as_nan():
    import json

    strategy = NoiseAdaptiveFedAvg(lr=0.1, fraction_evaluate=0.0, warmup_rounds=1)
    answers = honest([0.02, 0.03, 0.5], extra={"train_loss": 1.0})
    answers[NODES[1]][1]["train_loss"] = float("nan")
    for server_round in (1, 2):
        one_round(strategy, server_round, answers)
    text = json.dumps(strategy.state_dict(), allow_nan=False)  # no NaN or Infinity tokens
    again = NoiseAdaptiveFedAvg(lr=0.1, fraction_evaluate=0.0, warmup_rounds=1)
    again.load_state_dict(json.loads(text))
    assert json.dumps(again.state_dict(), allow_nan=False) == text
    restored = again.rounds[2].train_loss
    assert restored[NODES[0]] == 1.0 and math.isnan(restored[NODES[1]])
    assert again.rounds[2].noise_estimate == strategy.rounds[2].noise_estimate
    sent, _ = one_round(again, 3, answers)
    expected, _ = one_round(strategy, 3, answers)
    assert {n: m.content["config"]["lr"] for n, m in sent.items()} == {
        n: m.content["config"]["lr"] for n, m in expected.items()
    }


@pytest.mark.parametrize("key", ["num-examples", "noise-estimate", "train_loss", "mine"])
def test_an_integer_beyond_float_range_is_refused_not_raised(key, caplog):
    strategy = NoiseAdaptiveFedAvg(lr=0.1, fraction_evaluate=0.0)
    answers = honest([0.1, 0.1, 0.1])
    answers[NODES[2]][1][key] = 10**400
    with caplog.at_level(logging.WARNING, logger="fedlr"):
        _, (arrays, _) = one_round(strategy, 1, answers)
    assert arrays is not None and np.allclose(arrays.to_numpy_ndarrays()[0], [1.0, 1.0])
    log_ = strategy.rounds[1]
    if key == "num-examples":  # the reply's weight: the reply is dropped
        assert log_.errors[0]["partition_id"] == NODES[2]
        assert "is not an integer >= 1" in log_.errors[0]["reason"]
        assert NODES[2] not in log_.aggregation_weight
    elif key == "noise-estimate":  # the node keeps the uniform rate
        assert log_.invalid_estimates[0]["partition_id"] == NODES[2]
    elif key == "train_loss":  # as an Inf loss: kept, never averaged in (not every loss finite)
        assert log_.train_loss[NODES[2]] == math.inf
    else:  # a user's own metric: dropped and named
        assert log_.errors == [
            {"partition_id": NODES[2], "reason": "dropped metrics: 'mine' (not a finite number)"}
        ]
    lines = [r.getMessage() for r in caplog.records if r.name == "fedlr"]
    if key != "train_loss":
        assert len(lines) == 1 and str(NODES[2]) in lines[0]


def test_an_evaluate_value_beyond_float_range_is_refused_not_raised():
    strategy = NoiseAdaptiveFedAvg(lr=0.1)
    one_round(strategy, 1, honest([0.1, 0.1, 0.1]))
    values = {node: {"num-examples": 100, "accuracy": 0.5} for node in NODES}
    values[NODES[1]] = {"num-examples": 10**400, "accuracy": 0.9}
    values[NODES[2]] = {"num-examples": 100, "accuracy": 10**400}
    evaluate_round(strategy, values)
    assert strategy.rounds[1].accuracy == {NODES[0]: 0.5}
    assert {e["partition_id"] for e in strategy.rounds[1].errors} == {NODES[1], NODES[2]}


@pytest.mark.parametrize("aggregation", ["mean", "median"])
def test_flowers_record_keys_are_used_for_what_is_sent_and_read(aggregation):
    strategy = NoiseAdaptiveFedAvg(
        lr=0.1,
        fraction_evaluate=0.0,
        aggregation=aggregation,
        arrayrecord_key="weights",
        configrecord_key="settings",
    )
    arrays = ArrayRecord([np.zeros(2)])
    sent = list(strategy.configure_train(1, arrays, ConfigRecord(), FakeGrid(NODES)))
    assert {tuple(sorted(m.content.keys())) for m in sent} == {("settings", "weights")}
    assert {m.content["settings"]["lr"] for m in sent} == {0.1}
    replies = []
    for msg, key in zip(sent, ("weights", "weights", "arrays"), strict=True):
        back = ArrayRecord([np.ones(2)])
        metrics = MetricRecord({"num-examples": 10, "noise-estimate": 0.1})
        replies.append(Message(RecordDict({key: back, "metrics": metrics}), reply_to=msg))
    result, _ = strategy.aggregate_train(1, replies)
    assert np.allclose(result.to_numpy_ndarrays()[0], [1.0, 1.0])
    (error,) = strategy.rounds[1].errors  # the reply under Flower's default key is not read
    assert error["reason"] == "unknown node or no arrays"


def test_a_node_that_left_no_longer_steers_the_rates_of_those_still_here():
    """Rates are planned over the connected nodes: a departed noisy node's estimate is not used."""

    def rates(strategy, server_round, nodes, estimates):
        grid = FakeGrid(nodes)
        sent = list(
            strategy.configure_train(server_round, ArrayRecord([np.zeros(2)]), ConfigRecord(), grid)
        )
        answers = {
            n: ([[1.0, 1.0]], {"num-examples": 100, "noise-estimate": estimates[n]}) for n in nodes
        }
        strategy.aggregate_train(
            server_round, [reply(m, *answers[m.metadata.dst_node_id]) for m in sent]
        )
        return {m.metadata.dst_node_id: float(m.content["config"]["lr"]) for m in sent}

    estimates = dict(zip(NODES, [0.02, 0.2, 0.9], strict=True))
    left = NoiseAdaptiveFedAvg(lr=0.1, fraction_evaluate=0.0)
    alone = NoiseAdaptiveFedAvg(lr=0.1, fraction_evaluate=0.0)
    for server_round in (1, 2, 3, 4):
        rates(left, server_round, NODES, estimates)
        rates(alone, server_round, NODES[:2], estimates)
    assert rates(left, 5, NODES[:2], estimates) == rates(alone, 5, NODES[:2], estimates)
