"""One faulty or hostile client cannot corrupt, stop or take over the aggregate.

Each case is a reply fedlr's ClientApp would never send. It is dropped and logged under the
round's ``errors`` with the reason (or, for a count or a loss, bounded and logged), never raised
out of the strategy, and the aggregate is what the honest replies give.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MetricRecord,
    RecordDict,
)

from fedlr.fl import keys
from fedlr.fl.strategy import build_strategy, query_nodes
from tests.fl.test_strategy import FEDAVG_W0_W1, W0, W1, aggregate_of, make_cfg

SENT = ArrayRecord([np.zeros(2)])  # what run_round sends: one float64 array of shape (2,)


def reply_with(msg: Message, arrays: ArrayRecord, *, extra: dict | None = None) -> Message:
    metrics = MetricRecord({keys.NUM_EXAMPLES: 100, keys.TRAIN_LOSS: 1.0})
    content = RecordDict({keys.ARRAYS: arrays, keys.METRICS: metrics, **(extra or {})})
    return Message(content, reply_to=msg)


def one_round(strategy, fake_grid, train_reply, bad):
    """Round 1: partitions 0 and 1 reply honestly (W0, W1), partition 2 replies ``bad(msg)``."""
    clients = list(strategy.clients.values())
    sent = strategy.configure_train(1, SENT, ConfigRecord(dict(strategy.cfg)), fake_grid(clients))
    messages = {strategy.clients[m.metadata.dst_node_id].partition_id: m for m in sent}
    replies = [
        train_reply(messages[0], W0, num_examples=100, partition_id=0),
        train_reply(messages[1], W1, num_examples=300, partition_id=1),
        bad(messages[2]),
    ]
    return strategy.aggregate_train(1, replies)


@pytest.mark.parametrize(
    ("arrays", "reason"),
    [
        (ArrayRecord([np.ones(1)]), "array '0': expected shape (2,), got (1,)"),
        (ArrayRecord([np.ones(5)]), "array '0': expected shape (2,), got (5,)"),
        (ArrayRecord([np.ones(0)]), "array '0': expected shape (2,), got (0,)"),
        (
            ArrayRecord([np.ones(2, np.complex128)]),
            "array '0': expected dtype float64, got complex128",
        ),
        (ArrayRecord([np.ones(2), np.ones(2)]), "unexpected arrays: '1'"),
        (ArrayRecord({"w": Array(np.ones(2))}), "missing arrays: '0'"),
        (ArrayRecord([np.array([1.0, math.nan])]), "non-finite weights"),
    ],
    ids=["smaller", "larger", "empty", "complex", "extra-key", "other-key", "nan"],
)
def test_a_wrong_array_is_dropped_with_its_reason(
    make_clients, fake_grid, train_reply, arrays, reason
):
    strategy = build_strategy("fedavg", make_cfg(), make_clients([100, 300, 100]))

    result = one_round(strategy, fake_grid, train_reply, lambda msg: reply_with(msg, arrays))

    assert strategy.rounds[1].errors == [{"partition_id": 2, "reason": reason}]
    np.testing.assert_allclose(aggregate_of(result)[0], FEDAVG_W0_W1, rtol=1e-12)


def test_records_beyond_the_contract_are_ignored(make_clients, fake_grid, train_reply):
    strategy = build_strategy("fedavg", make_cfg(), make_clients([100, 300, 100]))
    extra = {
        "more": ArrayRecord([np.full(2, 1e6)]),
        "junk": MetricRecord({"x": 1.0}),
        "cfg": ConfigRecord({"y": "z"}),
    }

    result = one_round(
        strategy,
        fake_grid,
        train_reply,
        lambda msg: reply_with(msg, ArrayRecord([np.array([1.0, 2.0])]), extra=extra),
    )

    assert strategy.rounds[1].errors == []
    expected = (
        100 * np.array([1.0, 2.0]) + 300 * np.array([3.0, -2.0]) + 100 * np.array([1.0, 2.0])
    ) / 500
    np.testing.assert_allclose(aggregate_of(result)[0], expected, rtol=1e-12)


def test_an_evaluate_reply_with_extra_records_is_kept_not_fatal(make_clients):
    strategy = build_strategy("fedavg", make_cfg(), make_clients([100, 300]))
    replies = []
    for pid in (0, 1):
        ins = Message(RecordDict({}), dst_node_id=1000 + 7 * pid, message_type="evaluate")
        metrics = MetricRecord({keys.ACCURACY: 0.5 + pid / 4, keys.NUM_EXAMPLES: 50})
        content = RecordDict({keys.METRICS: metrics})
        if pid == 1:
            content["other"] = MetricRecord({"z": 1.0})
            content["arrays"] = ArrayRecord([np.ones(3)])
        replies.append(Message(content, reply_to=ins))

    aggregated = strategy.aggregate_evaluate(1, replies)

    assert strategy.rounds[1].accuracy == {0: 0.5, 1: 0.75}
    assert aggregated[keys.ACCURACY] == pytest.approx(0.625)


def test_a_failed_evaluate_reply_is_recorded_and_logged_never_fatal(make_clients, caplog):
    from flwr.app import Error

    strategy = build_strategy("fedavg", make_cfg(), make_clients([100, 300]))
    ok = Message(RecordDict({}), dst_node_id=1000, message_type="evaluate")
    crashed = Message(RecordDict({}), dst_node_id=1007, message_type="evaluate")
    metrics = MetricRecord({keys.ACCURACY: 0.5, keys.NUM_EXAMPLES: 50})
    replies = [
        Message(RecordDict({keys.METRICS: metrics}), reply_to=ok),
        Message(Error(code=0, reason="out of memory"), reply_to=crashed),
    ]
    with caplog.at_level("WARNING", logger="fedlr"):
        aggregated = strategy.aggregate_evaluate(1, replies)

    assert aggregated[keys.ACCURACY] == 0.5
    assert strategy.rounds[1].errors == [{"partition_id": 1, "reason": "out of memory"}]
    assert [r.getMessage() for r in caplog.records if r.name == "fedlr"] == [
        "fedlr: node 1007 (partition 1): evaluate reply dropped: out of memory"
    ]


def test_reported_numbers_beyond_float_or_int64_range_are_refused_not_raised():
    from fedlr.fl.client_metrics import evaluate_metrics
    from fedlr.fl.nodes import float_list, int_list, scalar, shown

    assert scalar(10**400) == math.inf and scalar(-(10**400)) == -math.inf
    assert float_list([1, 10**400]) == [1.0, math.inf]
    assert int_list([1, 2**63]) is None and int_list([1, 2**63 - 1]) == [1, 2**63 - 1]
    assert evaluate_metrics({"auroc": 10**400}) == ({}, "dropped metrics: 'auroc' (inf not finite)")
    assert shown(10**5000) == "<int too long to show>"  # repr itself raises past 4300 digits
    assert shown(10**400) == repr(10**400)[:64] + "..."


class QueryGrid:
    """Answers the query round with the given example counts (a value per node)."""

    def __init__(self, counts):
        self.counts = dict(enumerate(counts))

    def send_and_receive(self, messages, *, timeout=None):
        out = []
        for msg in messages:
            pid = msg.metadata.dst_node_id - 1000
            metrics = {keys.PARTITION_ID: pid, keys.NUM_EXAMPLES: self.counts[pid]}
            out.append(Message(RecordDict({keys.METRICS: MetricRecord(metrics)}), reply_to=msg))
        return out


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_the_query_round_survives_a_count_that_is_no_integer(bad):
    grid = QueryGrid([135, 135, bad])
    clients, failed = query_nodes(grid, [1000, 1001, 1002], make_cfg(), timeout=1.0)

    assert [c.partition_id for c in clients] == [0, 1]
    assert [node for node, _ in failed] == [1002]
    assert failed[0][1].startswith("malformed query reply")


@pytest.mark.parametrize("claimed", [1_350, 10**6, 10**12])
def test_a_claimed_count_weighs_at_most_ten_median_clients(make_clients, run_round, claimed):
    strategy = build_strategy("fedavg", make_cfg(), make_clients([135] * 9 + [claimed]))
    answers = {pid: {"weights": [[0.0, 0.0]]} for pid in range(9)}
    answers[9] = {"weights": [[1.0, 1.0]]}  # the claimant's update

    _, _, result = run_round(strategy, 1, answers)

    share = aggregate_of(result)[0][0]
    assert share == pytest.approx(1350 / (9 * 135 + 1350))  # 52.6%, never 99.9%
    assert strategy.rounds[1].aggregation_weight[9] == 1350


def test_max_examples_sets_the_cap(make_clients, run_round):
    strategy = build_strategy("fedavg", make_cfg(max_examples=200), make_clients([135, 10**12]))

    run_round(strategy, 1, {0: {"weights": W0}, 1: {"weights": W1}})

    assert strategy.rounds[1].aggregation_weight == {0: 135.0, 1: 200.0}


def test_a_huge_finite_qfedavg_loss_is_capped_and_logged(make_clients, run_round):
    strategy = build_strategy("qfedavg", make_cfg(qfedavg_q=1.0), make_clients([100, 100, 100]))

    _, _, result = run_round(
        strategy,
        1,
        {
            0: {"weights": [[-0.1, 0.0]], "train_loss": 1.0},
            1: {"weights": [[-0.1, 0.0]], "train_loss": 1.0},
            2: {"weights": [[0.0, -0.2]], "train_loss": 1e40},
        },
    )

    (capped,) = strategy.rounds[1].capped
    assert capped == {"partition_id": 2, "what": "train-loss", "reported": 1e40, "used": 10.0}
    aggregate = aggregate_of(result)[0]
    assert np.all(np.isfinite(aggregate))
    # client 2 weighs as a loss of 10: h = 4 + 100 and delta = 10 * [0, 2]; the others as above
    np.testing.assert_allclose(aggregate, [-2 / 126, -20 / 126], rtol=1e-8)


def test_a_non_finite_aggregate_is_rejected_and_the_model_kept(make_clients, run_round):
    # finite weights, but q-FedAvg's L * (w_global - w) overflows float64
    strategy = build_strategy("qfedavg", make_cfg(qfedavg_q=1.0), make_clients([100, 100]))

    _, _, result = run_round(
        strategy,
        1,
        {
            0: {"weights": [[-0.1, 0.0]], "train_loss": 1.0},
            1: {"weights": [[1e308, 1e308]], "train_loss": 1.0},
        },
    )

    assert result[0] is None
    assert strategy.rounds[1].errors == [
        {"partition_id": -1, "reason": "non-finite aggregate: the round's model is kept"}
    ]


# -- robust aggregation --------------------------------------------------------------------------

FIVE = [[[0.0, 1.0]], [[1.0, 2.0]], [[2.0, 4.0]], [[3.0, 8.0]], [[1000.0, -1000.0]]]


def five_replies(strategy, run_round):
    return run_round(strategy, 1, {pid: {"weights": FIVE[pid]} for pid in range(5)})


def test_median_is_flowers_coordinate_median(make_clients, run_round):
    strategy = build_strategy(
        "fedavg", make_cfg(aggregation="median", strategies="fedavg"), make_clients([100] * 5)
    )
    _, _, result = five_replies(strategy, run_round)
    np.testing.assert_allclose(aggregate_of(result)[0], [2.0, 2.0])


def test_trimmed_mean_cuts_each_end(make_clients, run_round):
    strategy = build_strategy(
        "fedavg",
        make_cfg(aggregation="trimmed-mean", trim_fraction=0.2, strategies="fedavg"),
        make_clients([100] * 5),
    )
    _, _, result = five_replies(strategy, run_round)
    # per coordinate, one value cut at each end: [1, 2, 3] and [1, 2, 4]
    np.testing.assert_allclose(aggregate_of(result)[0], [2.0, 7 / 3])


@pytest.mark.parametrize("name", ["krum", "multi-krum"])
def test_krum_leaves_the_outlier_out(make_clients, run_round, name):
    strategy = build_strategy(
        "fedavg", make_cfg(aggregation=name, strategies="fedavg"), make_clients([100] * 5)
    )
    _, _, result = five_replies(strategy, run_round)
    aggregate = aggregate_of(result)[0]
    assert np.all(np.abs(aggregate) <= 8.0)
    if name == "multi-krum":  # n - f = 4 selected, equal weights: the mean of the honest four
        np.testing.assert_allclose(aggregate, [1.5, 3.75])


def test_update_norm_clipping_bounds_one_update(make_clients, run_round):
    strategy = build_strategy("fedavg", make_cfg(clip_update_norm=2.0), make_clients([100] * 5))
    _, _, result = five_replies(strategy, run_round)

    norms = [np.linalg.norm(w[0]) for w in FIVE]
    cap = 2.0 * np.median(norms)
    (capped,) = strategy.rounds[1].capped
    assert capped["partition_id"] == 4 and capped["what"] == "update-norm"
    assert capped["used"] == pytest.approx(cap)
    clipped = np.array(FIVE[4][0]) * cap / norms[4]
    expected = (np.sum([w[0] for w in FIVE[:4]], axis=0) + clipped) / 5
    np.testing.assert_allclose(aggregate_of(result)[0], expected, rtol=1e-12)
