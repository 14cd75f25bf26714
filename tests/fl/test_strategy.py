"""fedlr.fl.strategy without a simulation engine: a fake Grid and hand-made train replies.

Hand-worked numbers used below (lr = 0.1, rate-power 1, rate-low 0.25, rate-high 4,
noise-floor 0.05):

* noise (0.4, 0.1), examples (100, 300): factors ``ref / noise`` with
  ``0.25 * ref / 0.4 + 0.75 * ref / 0.1 = 1`` -> ref = 8/65 -> factors (4/13, 16/13).
* noise (0.0, 0.5), examples (100, 900): 0.0 is floored to 0.05, so ``ref / 0.05`` would be
  20 ref; unclipped ``0.1 * 20 ref + 0.9 * 2 ref = 1`` gives 20 ref = 5.26 > 4, so the first
  factor is clipped to 4 and ``0.1 * 4 + 0.9 * 2 ref = 1`` -> factors (4, 2/3).
* FedAvg of w0 = [1, 2] (100 examples) and w1 = [3, -2] (300 examples):
  (100 * w0 + 300 * w1) / 400 = [2.5, -1.0].
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedlr import config as fedlr_config
from fedlr.fl import keys
from flwr.app import ArrayRecord, ConfigRecord

from fedlr.fl.strategy import build_strategy

LR = 0.1
W0, W1 = [[1.0, 2.0]], [[3.0, -2.0]]
FEDAVG_W0_W1 = [2.5, -1.0]  # (100 * W0 + 300 * W1) / 400


def make_cfg(**overrides: object) -> dict:
    """The run config with the rule's numbers fixed (keys in snake_case -> kebab-case)."""
    values = {
        "lr": LR,
        "rate-power": 1.0,
        "rate-low": 0.25,
        "rate-high": 4.0,
        "noise-floor": 0.05,
        "ema-decay": 0.5,
        "rate-compensation": 0.0,  # the aggregates below are FedAvg's; compensation is tested apart
    }
    values.update({key.replace("_", "-"): value for key, value in overrides.items()})
    return fedlr_config.resolve(overrides=values)


def aggregate_of(result) -> list[np.ndarray]:
    arrays, _ = result
    assert arrays is not None
    return arrays.to_numpy_ndarrays()


# -- configure_train -----------------------------------------------------------------------------


def test_each_node_gets_its_own_config_and_warmup_rates_are_uniform(make_clients, run_round):
    cfg = make_cfg(warmup_rounds=2, seed=7)
    clients = make_clients([100, 300])
    strategy = build_strategy("noise-adaptive", cfg, clients)

    # Round 1 estimates (reversed) are ignored; those of round 2, the last warm-up round, count.
    for server_round, estimates in ((1, (0.1, 0.4)), (2, (0.4, 0.1))):
        messages, _, _ = run_round(
            strategy,
            server_round,
            {pid: {"weights": W0, "noise_estimate": estimates[pid]} for pid in (0, 1)},
        )
        assert {pid: m.metadata.dst_node_id for pid, m in messages.items()} == {
            0: clients[0].node_id,
            1: clients[1].node_id,
        }
        configs = [m.content[keys.CONFIG] for m in messages.values()]
        assert configs[0] is not configs[1]
        for config in configs:
            assert config[keys.LR] == LR
            assert config["seed"] == 7
            assert config[keys.SERVER_ROUND] == server_round
            assert config[keys.ESTIMATE_NOISE] is True
        assert strategy.rounds[server_round].lr == {0: LR, 1: LR}

    messages, _, _ = run_round(strategy, 3, {})
    assert messages[0].content[keys.CONFIG][keys.LR] == pytest.approx(LR * 4 / 13, rel=1e-9)
    assert messages[1].content[keys.CONFIG][keys.LR] == pytest.approx(LR * 16 / 13, rel=1e-9)


def test_fedprox_config_carries_proximal_mu(make_clients, run_round):
    cfg = make_cfg(fedprox_mu=0.3, seed=5)
    strategy = build_strategy("fedprox", cfg, make_clients([100, 300]))

    messages, _, result = run_round(strategy, 1, {0: {"weights": W0}, 1: {"weights": W1}})

    for message in messages.values():
        config = message.content[keys.CONFIG]
        assert config[keys.PROXIMAL_MU] == 0.3
        assert config["seed"] == 5
        assert config[keys.LR] == LR
    np.testing.assert_allclose(aggregate_of(result)[0], FEDAVG_W0_W1, rtol=1e-12)


# -- rates from estimates ------------------------------------------------------------------------


def test_noisier_client_gets_smaller_rate_and_mean_rate_is_lr(make_clients, run_round):
    cfg = make_cfg(warmup_rounds=1)
    clients = make_clients([100, 300])
    strategy = build_strategy("noise-adaptive", cfg, clients)

    run_round(
        strategy,
        1,
        {0: {"weights": W0, "noise_estimate": 0.4}, 1: {"weights": W1, "noise_estimate": 0.1}},
    )
    messages, _, _ = run_round(strategy, 2, {})

    rates = {pid: m.content[keys.CONFIG][keys.LR] for pid, m in messages.items()}
    assert rates[0] == pytest.approx(LR * 4 / 13, rel=1e-9)
    assert rates[1] == pytest.approx(LR * 16 / 13, rel=1e-9)
    assert rates[0] < rates[1]
    assert all(0.25 * LR <= rate <= 4.0 * LR for rate in rates.values())
    mean_rate = (100 * rates[0] + 300 * rates[1]) / 400
    assert mean_rate == pytest.approx(LR, rel=1e-9)
    assert strategy.rounds[2].lr == rates


@settings(max_examples=40, deadline=None)
@given(
    estimates=st.lists(
        st.one_of(st.just(0.0), st.floats(0.0, 100.0, allow_nan=False)), min_size=3, max_size=3
    ),
    num_examples=st.lists(st.integers(1, 10_000), min_size=3, max_size=3),
)
def test_rates_stay_in_bounds_and_average_to_lr(make_clients, run_round, estimates, num_examples):
    strategy = build_strategy(
        "noise-adaptive", make_cfg(warmup_rounds=1), make_clients(num_examples)
    )
    run_round(
        strategy,
        1,
        {pid: {"weights": W0, "noise_estimate": estimates[pid]} for pid in range(3)},
    )
    messages, _, _ = run_round(strategy, 2, {})

    rates = [messages[pid].content[keys.CONFIG][keys.LR] for pid in range(3)]
    assert all(0.25 * LR * (1 - 1e-12) <= rate <= 4.0 * LR * (1 + 1e-12) for rate in rates)
    # weighted by the counts that count: at most 10x the median reported (fedlr.fl.checks)
    counted = [min(n, 10 * int(np.median(num_examples))) for n in num_examples]
    mean_rate = np.dot(counted, rates) / sum(counted)
    assert mean_rate == pytest.approx(LR, rel=1e-9)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0, None], ids=repr)
def test_invalid_estimate_is_logged_and_gets_the_uniform_rate(make_clients, run_round, bad):
    cfg = make_cfg(warmup_rounds=1, noise_weighted_aggregation=True)
    strategy = build_strategy("noise-adaptive", cfg, make_clients([100, 300]))
    run_round(
        strategy,
        1,
        {0: {"weights": W0, "noise_estimate": 0.4}, 1: {"weights": W1, "noise_estimate": 0.1}},
    )

    # Partition 1 now reports garbage: its estimate is dropped, its model is not. With one
    # usable estimate the rule gives partition 0 factor 1, partition 1 gets 1: plain FedAvg.
    _, _, result = run_round(
        strategy,
        2,
        {0: {"weights": W0, "noise_estimate": 0.4}, 1: {"weights": W1, "noise_estimate": bad}},
    )

    assert strategy.rounds[2].invalid_estimates == [{"partition_id": 1, "value": repr(bad)}]
    assert strategy.rounds[2].noise_estimate == {0: 0.4, 1: None}
    (aggregate,) = aggregate_of(result)
    assert np.all(np.isfinite(aggregate))
    np.testing.assert_allclose(aggregate, FEDAVG_W0_W1, rtol=1e-9)

    messages, _, _ = run_round(strategy, 3, {})
    assert messages[1].content[keys.CONFIG][keys.LR] == LR  # exactly, not the stale 16/13
    assert messages[0].content[keys.CONFIG][keys.LR] == pytest.approx(LR, rel=1e-9)


def test_zero_noise_client_rate_is_capped_at_rate_high(make_clients, run_round):
    cfg = make_cfg(warmup_rounds=1)
    strategy = build_strategy("noise-adaptive", cfg, make_clients([100, 900]))
    run_round(
        strategy,
        1,
        {0: {"weights": W0, "noise_estimate": 0.0}, 1: {"weights": W1, "noise_estimate": 0.5}},
    )

    messages, _, _ = run_round(strategy, 2, {})

    rates = {pid: m.content[keys.CONFIG][keys.LR] for pid, m in messages.items()}
    assert rates[0] <= 4.0 * LR
    assert rates[0] == pytest.approx(4.0 * LR, rel=1e-12)
    assert rates[1] == pytest.approx(LR * 2 / 3, rel=1e-9)


def test_zero_noise_client_weight_is_capped_under_inverse_noise_weights(make_clients, run_round):
    cfg = make_cfg(warmup_rounds=0)  # no warm-up: round 1's estimates weight round 1
    strategy = build_strategy("inverse-noise-weights", cfg, make_clients([100, 900]))

    messages, _, result = run_round(
        strategy,
        1,
        {0: {"weights": W0, "noise_estimate": 0.0}, 1: {"weights": W1, "noise_estimate": 0.5}},
    )

    # Weights 100 * 4 = 400 (the cap: rate-high * examples) and 900 * 2/3 = 600.
    expected = (400 * np.array(W0[0]) + 600 * np.array(W1[0])) / 1000  # [2.2, -0.4]
    np.testing.assert_allclose(aggregate_of(result)[0], expected, rtol=1e-9)
    np.testing.assert_allclose(expected, [2.2, -0.4])
    assert all(m.content[keys.CONFIG][keys.LR] == LR for m in messages.values())
    messages, _, _ = run_round(strategy, 2, {})
    assert all(m.content[keys.CONFIG][keys.LR] == LR for m in messages.values())


def test_inverse_noise_weights_are_uniform_during_warmup(make_clients, run_round):
    strategy = build_strategy(
        "inverse-noise-weights", make_cfg(warmup_rounds=1), make_clients([100, 900])
    )

    _, _, result = run_round(
        strategy,
        1,
        {0: {"weights": W0, "noise_estimate": 0.0}, 1: {"weights": W1, "noise_estimate": 0.5}},
    )

    # Warm-up round: plain example counts 100 and 900, whatever the estimates say.
    expected = (100 * np.array(W0[0]) + 900 * np.array(W1[0])) / 1000
    np.testing.assert_allclose(aggregate_of(result)[0], expected, rtol=1e-9)
    assert strategy.rounds[1].aggregation_weight == {0: 100.0, 1: 900.0}


# -- replies that must not poison the aggregate --------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_reply_with_non_finite_weights_is_dropped(make_clients, run_round, bad):
    strategy = build_strategy("fedavg", make_cfg(), make_clients([100, 300, 50]))

    _, _, result = run_round(
        strategy,
        1,
        {0: {"weights": W0}, 1: {"weights": W1}, 2: {"weights": [[bad, 1.0]]}},
    )

    assert strategy.rounds[1].errors == [{"partition_id": 2, "reason": "non-finite weights"}]
    np.testing.assert_allclose(aggregate_of(result)[0], FEDAVG_W0_W1, rtol=1e-12)


def test_no_usable_reply_aggregates_to_nothing(make_clients, run_round):
    strategy = build_strategy("fedavg", make_cfg(), make_clients([100, 300]))

    _, _, result = run_round(
        strategy, 1, {0: {"weights": [[math.nan, 0.0]]}, 1: {"weights": [[0.0, math.inf]]}}
    )

    assert result == (None, None)
    assert len(strategy.rounds[1].errors) == 2


# -- oracle, constant rules, order ---------------------------------------------------------------


def test_oracle_uses_true_noise_from_round_one(make_clients, run_round):
    cfg = make_cfg(warmup_rounds=2)
    strategy = build_strategy("oracle-noise-rates", cfg, make_clients([100, 300], [0.4, 0.1]))

    messages, _, _ = run_round(strategy, 1, {})

    assert messages[0].content[keys.CONFIG][keys.LR] == pytest.approx(LR * 4 / 13, rel=1e-9)
    assert messages[1].content[keys.CONFIG][keys.LR] == pytest.approx(LR * 16 / 13, rel=1e-9)
    assert all(m.content[keys.CONFIG][keys.ESTIMATE_NOISE] is False for m in messages.values())


def test_fedavg_rates_are_uniform_whatever_is_reported(make_clients, run_round):
    strategy = build_strategy("fedavg", make_cfg(warmup_rounds=0), make_clients([100, 300]))
    answers = {0: {"weights": W0, "noise_estimate": 0.9}, 1: {"weights": W1}}

    for server_round in (1, 2, 3):
        messages, _, result = run_round(strategy, server_round, answers)
        assert all(m.content[keys.CONFIG][keys.LR] == LR for m in messages.values())
        assert all(m.content[keys.CONFIG][keys.ESTIMATE_NOISE] is False for m in messages.values())
        np.testing.assert_allclose(aggregate_of(result)[0], FEDAVG_W0_W1, rtol=1e-12)


def test_equal_noise_is_no_rule(make_clients, run_round):
    """A constant rule equals no rule: equal estimates give lr everywhere and FedAvg's mean."""
    cfg = make_cfg(warmup_rounds=1, noise_weighted_aggregation=True)
    clients = make_clients([100, 300, 50])
    answers = {
        0: {"weights": W0, "noise_estimate": 0.3},
        1: {"weights": W1, "noise_estimate": 0.3},
        2: {"weights": [[-4.0, 8.0]], "noise_estimate": 0.3},
    }
    adaptive = build_strategy("noise-adaptive", cfg, clients)
    fedavg = build_strategy("fedavg", cfg, clients)

    _, _, adaptive_result = run_round(adaptive, 1, answers)
    _, _, fedavg_result = run_round(fedavg, 1, answers)

    # (100 * [1, 2] + 300 * [3, -2] + 50 * [-4, 8]) / 450 = [800, -0] / 450
    np.testing.assert_allclose(aggregate_of(fedavg_result)[0], [800 / 450, 0.0], atol=1e-12)
    np.testing.assert_allclose(
        aggregate_of(adaptive_result)[0], aggregate_of(fedavg_result)[0], rtol=1e-9, atol=1e-12
    )
    messages, _, _ = run_round(adaptive, 2, {})
    for message in messages.values():
        assert message.content[keys.CONFIG][keys.LR] == pytest.approx(LR, rel=1e-9)


@pytest.mark.parametrize("name", ["fedavg", "inverse-noise-weights", "noise-adaptive"])
@settings(max_examples=20, deadline=None)
@given(order=st.permutations(range(4)))
def test_reply_order_does_not_change_the_aggregate(make_clients, run_round, name, order):
    cfg = make_cfg(warmup_rounds=1, noise_weighted_aggregation=True)
    clients = make_clients([100, 300, 50, 250])
    answers = {
        0: {"weights": W0, "noise_estimate": 0.4},
        1: {"weights": W1, "noise_estimate": 0.1},
        2: {"weights": [[-4.0, 8.0]], "noise_estimate": 0.0},
        3: {"weights": [[0.5, 0.25]], "noise_estimate": 2.0},
    }
    shuffled_answers = {pid: answers[pid] for pid in order}  # replies follow dict order

    _, _, expected = run_round(build_strategy(name, cfg, clients), 1, answers)
    _, shuffled_replies, result = run_round(build_strategy(name, cfg, clients), 1, shuffled_answers)

    assert [r.metadata.src_node_id for r in shuffled_replies] == [
        clients[pid].node_id for pid in order
    ]
    np.testing.assert_allclose(
        aggregate_of(result)[0], aggregate_of(expected)[0], rtol=1e-12, atol=1e-12
    )


# -- sampling ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "count"), [(4, 2), (10, 5)])
def test_seeded_sampling_by_partition_id(make_clients, run_round, k, count):
    cfg = make_cfg(fraction_train=0.5, seed=3, num_clients=k, noisy_clients=0, hard_clean_clients=0)
    clients_a = make_clients([100] * k)
    clients_b = make_clients([100] * k, node_ids=[9000 - 13 * pid for pid in range(k)])
    strategy_a = build_strategy("fedavg", cfg, clients_a)
    strategy_b = build_strategy("fedavg", cfg, clients_b)
    strategy_other_seed = build_strategy("fedavg", {**cfg, "seed": 4}, clients_a)

    differs = False
    for server_round in range(1, 11):
        messages_a, _, _ = run_round(strategy_a, server_round, {})
        messages_b, _, _ = run_round(strategy_b, server_round, {})
        messages_other, _, _ = run_round(strategy_other_seed, server_round, {})
        assert len(messages_a) == count == round(k * 0.5)
        assert sorted(messages_a) == sorted(messages_b) == strategy_a.rounds[server_round].sampled
        assert {m.metadata.dst_node_id for m in messages_a.values()} == {
            clients_a[pid].node_id for pid in messages_a
        }
        differs |= sorted(messages_a) != sorted(messages_other)
    assert differs


# -- baselines -----------------------------------------------------------------------------------


def test_qfedavg_aggregates_two_replies(make_clients, run_round):
    """q = 1, L = 1/lr = 10, global w = [0, 0].

    Client 0: w = [-0.1, 0], F = 1: g = L(w_glob - w) = [1, 0], delta = F g = [1, 0],
    h = q F^0 |g|^2 + L F = 1 + 10 = 11. Client 1: w = [0, -0.2], F = 2: g = [0, 2],
    delta = [0, 4], h = 4 + 20 = 24. New w = -(sum delta) / (sum h) = [-1/35, -4/35].
    """
    cfg = make_cfg(qfedavg_q=1.0)
    strategy = build_strategy("qfedavg", cfg, make_clients([100, 300]))

    messages, _, result = run_round(
        strategy,
        1,
        {
            0: {"weights": [[-0.1, 0.0]], "train_loss": 1.0},
            1: {"weights": [[0.0, -0.2]], "train_loss": 2.0},
        },
    )

    assert all(m.content[keys.CONFIG][keys.LR] == LR for m in messages.values())
    np.testing.assert_allclose(aggregate_of(result)[0], [-1 / 35, -4 / 35], rtol=1e-8)
    _, metrics = result
    assert metrics[keys.TRAIN_LOSS] == pytest.approx(1.5)


@pytest.mark.parametrize("bad_loss", [None, math.nan, math.inf], ids=repr)
def test_qfedavg_drops_a_reply_without_a_finite_loss(make_clients, run_round, bad_loss):
    """q-FedAvg scales each update by its loss: a NaN loss must not reach the aggregate.

    Client 0 alone (as in the test above): new w = -[1, 0] / 11.
    """
    strategy = build_strategy("qfedavg", make_cfg(qfedavg_q=1.0), make_clients([100, 300]))

    _, _, result = run_round(
        strategy,
        1,
        {
            0: {"weights": [[-0.1, 0.0]], "train_loss": 1.0},
            1: {"weights": [[0.0, -0.2]], "train_loss": bad_loss},
        },
    )

    assert strategy.rounds[1].errors == [
        {"partition_id": 1, "reason": "missing or non-finite loss"}
    ]
    np.testing.assert_allclose(aggregate_of(result)[0], [-1 / 11, 0.0], rtol=1e-8, atol=1e-15)


def test_fedavg_keeps_a_reply_without_a_loss(make_clients, run_round):
    """FedAvg's weights do not depend on the loss, so a missing loss costs only the metric."""
    strategy = build_strategy("fedavg", make_cfg(), make_clients([100, 300]))

    _, _, result = run_round(
        strategy, 1, {0: {"weights": W0}, 1: {"weights": W1, "train_loss": None}}
    )

    assert strategy.rounds[1].errors == []
    np.testing.assert_allclose(aggregate_of(result)[0], FEDAVG_W0_W1, rtol=1e-12)


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan")])
def test_out_of_range_accuracy_is_logged_not_recorded(bad, make_clients):
    from flwr.app import Message, MessageType, MetricRecord, RecordDict

    cfg = fedlr_config.resolve(
        overrides={"num-clients": 2, "noisy-clients": 1, "hard-clean-clients": 0}
    )
    clients = make_clients([100, 100], [0.5, 0.0], [10, 11])
    strategy = build_strategy("fedavg", cfg, clients)
    replies = []
    for node, accuracy in ((10, 0.8), (11, bad)):
        ask = Message(RecordDict(), dst_node_id=node, message_type=MessageType.EVALUATE)
        values = {"num-examples": 10, "partition-id": node - 10, "accuracy": accuracy}
        replies.append(Message(RecordDict({"metrics": MetricRecord(values)}), reply_to=ask))
    strategy.aggregate_evaluate(1, replies)
    assert strategy.rounds[1].accuracy == {0: 0.8}
    assert strategy.rounds[1].errors[0]["partition_id"] == 1


def test_a_node_gone_from_the_grid_gets_no_message_and_is_missing(
    make_clients, fake_grid, train_reply
):
    cfg = make_cfg(min_clients=2)
    clients = make_clients([100, 300, 50])
    strategy = build_strategy("fedavg", cfg, clients)
    grid = fake_grid(c for c in clients if c.partition_id != 2)  # node 2 died
    sent = strategy.configure_train(1, ArrayRecord([np.zeros(2)]), ConfigRecord(dict(cfg)), grid)
    by_pid = {strategy.clients[m.metadata.dst_node_id].partition_id: m for m in sent}
    assert sorted(by_pid) == [0, 1]
    replies = [
        train_reply(by_pid[pid], weights, num_examples=clients[pid].num_examples, partition_id=pid)
        for pid, weights in ((0, W0), (1, W1))
    ]
    arrays, _ = strategy.aggregate_train(1, replies)
    expected = (100 * np.array(W0[0]) + 300 * np.array(W1[0])) / 400  # FedAvg of the two left
    np.testing.assert_allclose(arrays.to_numpy_ndarrays()[0], expected, rtol=1e-6)
    assert strategy.min_train_nodes == 2
    log_ = strategy.rounds[1]
    assert log_.sampled == [0, 1, 2]
    assert [p for p in log_.sampled if p not in log_.train_loss] == [2]  # recorded missing


# -- state and resume ----------------------------------------------------------------------------


def test_state_dict_restores_rates_and_logs_through_a_checkpoint_file(
    make_clients, run_round, tmp_path
):
    import torch

    cfg = make_cfg(warmup_rounds=1)
    clients = make_clients([100, 300, 200])
    first = build_strategy("noise-adaptive", cfg, clients)
    for server_round, estimates in ((1, (0.4, 0.1, 0.1)), (2, (0.8, float("nan"), 0.1))):
        run_round(
            first,
            server_round,
            {pid: {"weights": W0, "noise_estimate": estimates[pid]} for pid in (0, 1, 2)},
        )
    torch.save(first.state_dict(), tmp_path / "state.pt")  # as the checkpoint stores it
    second = build_strategy("noise-adaptive", cfg, clients)
    second.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert second.ema.values == first.ema.values
    assert second.invalid_last == first.invalid_last == {1}
    assert second.rounds == first.rounds
    assert second.client_lr(3) == first.client_lr(3)
    assert second.client_lr(3)[0] < LR < second.client_lr(3)[2]  # the restored estimates count
    assert second.client_lr(3)[1] == LR  # its last estimate was invalid


def test_round_offset_gives_clients_and_logs_the_runs_round_number(make_clients, run_round):
    cfg = make_cfg(warmup_rounds=2)
    clients = make_clients([100, 300])
    strategy = build_strategy("noise-adaptive", cfg, clients)
    strategy.round_offset = 4  # resumed after round 4: Flower's round 1 is the run's round 5
    messages, _, _ = run_round(strategy, 1, {pid: {"weights": W0} for pid in (0, 1)})
    assert {m.content[keys.CONFIG][keys.SERVER_ROUND] for m in messages.values()} == {5}
    assert list(strategy.rounds) == [5]


@pytest.mark.parametrize("first_round", [0, 4])
def test_start_refuses_a_first_round_outside_the_run(make_clients, fake_grid, first_round):
    clients = make_clients([100, 300])
    strategy = build_strategy("fedavg", make_cfg(), clients)
    with pytest.raises(ValueError, match=r"first_round: expected 1\.\.3"):
        strategy.start(
            fake_grid(clients), ArrayRecord([np.zeros(2)]), num_rounds=3, first_round=first_round
        )


# -- the no-harm guard, share compensation, small-loss selection, FedCorr's proximal mu ------------


def test_guard_keeps_rates_uniform_while_estimates_do_not_separate(make_clients, run_round):
    cfg = make_cfg(warmup_rounds=1, rate_guard="gap", rate_guard_ratio=2.0)
    strategy = build_strategy("noise-adaptive", cfg, make_clients([100, 300]))
    # 0.3 / 0.2 is a ratio of 1.5 < 2: clean but different sites
    run_round(
        strategy,
        1,
        {0: {"weights": W0, "noise_estimate": 0.3}, 1: {"weights": W1, "noise_estimate": 0.2}},
    )
    messages, _, _ = run_round(strategy, 2, {})
    assert [m.content[keys.CONFIG][keys.LR] for m in messages.values()] == [LR, LR]
    assert strategy.rounds[2].noisy_group == []

    # 0.4 / 0.1 makes the smoothed 0.35 / 0.15, a ratio of 2.33: the rule applies, with
    # 0.25 * ref / 0.35 + 0.75 * ref / 0.15 = 1 -> ref = 0.175, factors 0.5 and 7/6
    run_round(
        strategy,
        2,
        {0: {"weights": W0, "noise_estimate": 0.4}, 1: {"weights": W1, "noise_estimate": 0.1}},
    )
    messages, _, _ = run_round(strategy, 3, {})
    assert strategy.rounds[3].noisy_group == [0]
    assert messages[0].content[keys.CONFIG][keys.LR] == pytest.approx(LR * 0.5, rel=1e-9)
    assert messages[1].content[keys.CONFIG][keys.LR] == pytest.approx(LR * 7 / 6, rel=1e-9)


def test_guard_none_is_the_rule_on_any_spread(make_clients, run_round):
    cfg = make_cfg(warmup_rounds=1, rate_guard="none")
    strategy = build_strategy("noise-adaptive", cfg, make_clients([100, 300]))
    run_round(
        strategy,
        1,
        {0: {"weights": W0, "noise_estimate": 0.3}, 1: {"weights": W1, "noise_estimate": 0.2}},
    )
    messages, _, _ = run_round(strategy, 2, {})
    assert (
        messages[0].content[keys.CONFIG][keys.LR] < LR < messages[1].content[keys.CONFIG][keys.LR]
    )


@pytest.mark.parametrize("compensation", [0.0, 0.5, 1.0])
def test_rate_compensation_divides_each_update_by_its_factor(make_clients, run_round, compensation):
    cfg = make_cfg(warmup_rounds=1, rate_compensation=compensation)
    strategy = build_strategy("noise-adaptive", cfg, make_clients([100, 300]))
    run_round(
        strategy,
        1,
        {0: {"weights": W0, "noise_estimate": 0.4}, 1: {"weights": W1, "noise_estimate": 0.1}},
    )
    sent = ArrayRecord([np.array([1.0, 1.0])])
    _, _, result = run_round(
        strategy,
        2,
        {0: {"weights": W0, "noise_estimate": 0.4}, 1: {"weights": W1, "noise_estimate": 0.1}},
        arrays=sent,
    )
    # factors 4/13 and 16/13 (the module docstring); model = sent + update / factor^c
    f0, f1 = (4 / 13) ** compensation, (16 / 13) ** compensation
    w0 = 1.0 + (np.array(W0[0]) - 1.0) / f0
    w1 = 1.0 + (np.array(W1[0]) - 1.0) / f1
    (aggregate,) = aggregate_of(result)
    np.testing.assert_allclose(aggregate, (100 * w0 + 300 * w1) / 400, rtol=1e-9)


def test_small_loss_selection_is_asked_of_the_noisy_group_only(make_clients, run_round):
    cfg = make_cfg(warmup_rounds=1, noise_response="small-loss")
    strategy = build_strategy("noise-adaptive", cfg, make_clients([100, 300, 200]))
    answers = {pid: {"weights": W0, "noise_estimate": e} for pid, e in enumerate((0.9, 0.1, 0.12))}
    messages, _, _ = run_round(strategy, 1, answers)  # warm-up: nobody selects
    assert [m.content[keys.CONFIG][keys.SELECT_CLEAN] for m in messages.values()] == [False] * 3
    messages, _, _ = run_round(strategy, 2, answers)
    assert {p: m.content[keys.CONFIG][keys.SELECT_CLEAN] for p, m in messages.items()} == {
        0: True,
        1: False,
        2: False,
    }


def test_fedcorr_prox_scales_each_clients_mu_by_its_noise(make_clients, run_round):
    cfg = make_cfg(warmup_rounds=1, fedcorr_beta=2.0, fedprox_mu=0.01)
    strategy = build_strategy("fedcorr-prox", cfg, make_clients([100, 300]))
    answers = {0: {"weights": W0, "noise_estimate": 0.4}, 1: {"weights": W1, "noise_estimate": 0.1}}
    messages, _, _ = run_round(strategy, 1, answers)
    assert [m.content[keys.CONFIG][keys.PROXIMAL_MU] for m in messages.values()] == [0.01, 0.01]
    messages, _, _ = run_round(strategy, 2, answers)
    mu = {p: m.content[keys.CONFIG][keys.PROXIMAL_MU] for p, m in messages.items()}
    assert mu == {0: pytest.approx(2.0), 1: pytest.approx(0.5)}  # beta * (0.4, 0.1) / 0.4
    assert {m.content[keys.CONFIG][keys.LR] for m in messages.values()} == {LR}
