"""Batch sizes, coupling and the noise scale in fedlr.fl.strategy (no engine: a fake Grid).

Hand-worked numbers (lr = 0.1, SGD, so coupling-rule auto is linear):

* batches (8, 32, 128), example counts 1000 each: the median batch is 32, the factors
  b / 32 = (0.25, 1, 4) and the rates (0.025, 0.1, 0.4); lr / B = 0.1 / 32 for all three.
* step schedule ``lr-decay-rounds = 2,3``, factor 0.5, batch 8, 20 examples: round 2 decays to
  (0.05, 8) or grows to (0.1, 16); round 3 decays to (0.025, 8) or grows to 32, capped at 20
  examples, with the rest taken as decay: 0.1 * 0.25 * 20 / 8 = 0.0625. Both give
  lr / B = 0.003125.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fedlr import config as fedlr_config
from fedlr.fl import keys
from fedlr.fl.strategy import RoundLog, build_strategy
from fedlr.rates import coupling

LR = 0.1


def make_cfg(**overrides: object) -> dict:
    values = {"lr": LR, "num-clients": 3, "noisy-clients": 0, "hard-clean-clients": 0}
    values.update({key.replace("_", "-"): value for key, value in overrides.items()})
    return fedlr_config.resolve(overrides=values)


def with_batches(clients, batches):
    return [replace(c, batch_size=b) for c, b in zip(clients, batches, strict=True)]


def sent(strategy, server_round, fake_grid):
    """configure_train's messages by partition id."""
    clients = list(strategy.clients.values())
    messages = strategy.configure_train(
        server_round,
        ArrayRecord([np.zeros(2)]),
        fedlr_config_record(strategy),
        fake_grid(clients),
    )
    return {strategy.clients[m.metadata.dst_node_id].partition_id: m for m in messages}


def fedlr_config_record(strategy):
    return ConfigRecord(dict(strategy.cfg))


def reply(msg, weights, pid, num_examples, gradient=None, batch=None, steps=None):
    metrics: dict = {keys.NUM_EXAMPLES: num_examples, keys.PARTITION_ID: pid, keys.TRAIN_LOSS: 1.0}
    if steps is not None:
        metrics[keys.STEPS] = steps
    content = RecordDict(
        {
            keys.ARRAYS: ArrayRecord([np.asarray(weights, dtype=np.float64)]),
            keys.METRICS: MetricRecord(metrics),
        }
    )
    if gradient is not None:
        metrics[keys.GRADIENT_BATCH] = batch
        content[keys.METRICS] = MetricRecord(metrics)
        content[keys.GRADIENT] = ArrayRecord({"flat": Array(np.asarray(gradient, np.float32))})
    return Message(content, reply_to=msg)


def config_of(messages, key):
    return {pid: m.content[keys.CONFIG].get(key) for pid, m in messages.items()}


# -- coupling --------------------------------------------------------------------------------


def test_coupled_rates_follow_the_batch_and_keep_lr_over_b_equal(make_clients, fake_grid):
    clients = with_batches(make_clients([1000, 1000, 1000]), [8, 32, 128])
    strategy = build_strategy("fedavg+coupled", make_cfg(), clients)
    messages = sent(strategy, 1, fake_grid)
    rates = config_of(messages, keys.LR)
    assert rates == pytest.approx({0: 0.025, 1: 0.1, 2: 0.4}, rel=1e-12)
    assert config_of(messages, keys.CLIENT_BATCH_SIZE) == {0: 8, 1: 32, 2: 128}
    assert strategy.rounds[1].coupling_factor == pytest.approx({0: 0.25, 1: 1.0, 2: 4.0})
    ratios = {pid: rates[pid] / b for pid, b in zip(range(3), (8, 32, 128), strict=True)}
    assert max(ratios.values()) == pytest.approx(min(ratios.values()), rel=1e-12)


def test_a_shared_rate_sends_each_client_its_own_batch_at_one_rate(make_clients, fake_grid):
    clients = with_batches(make_clients([1000, 1000, 1000]), [8, 32, 128])
    messages = sent(build_strategy("fedavg", make_cfg(), clients), 1, fake_grid)
    assert config_of(messages, keys.LR) == {0: LR, 1: LR, 2: LR}
    assert config_of(messages, keys.CLIENT_BATCH_SIZE) == {0: 8, 1: 32, 2: 128}


def test_coupling_reads_the_batch_a_client_can_take_and_is_bounded(make_clients, fake_grid):
    # 256 with only 64 examples trains on batches of 64; coupling-high 1.5 bounds 64 / 16 = 4
    clients = with_batches(make_clients([1000, 1000, 64]), [8, 16, 256])
    strategy = build_strategy("fedavg+coupled", make_cfg(coupling_high=1.5), clients)
    messages = sent(strategy, 1, fake_grid)
    assert config_of(messages, keys.CLIENT_BATCH_SIZE) == {0: 8, 1: 16, 2: 64}
    assert config_of(messages, keys.LR) == pytest.approx({0: 0.05, 1: 0.1, 2: 0.15})


def test_coupling_warmup_ramps_each_factor_from_one(make_clients, fake_grid):
    clients = with_batches(make_clients([1000, 1000, 1000]), [8, 32, 128])
    strategy = build_strategy("fedavg+coupled", make_cfg(coupling_warmup_rounds=2), clients)
    expected = {1: (1.0, 1.0, 1.0), 2: (0.625, 1.0, 2.5), 3: (0.25, 1.0, 4.0), 4: (0.25, 1, 4)}
    for server_round, factors in expected.items():
        sent(strategy, server_round, fake_grid)
        got = strategy.rounds[server_round].coupling_factor
        assert [got[p] for p in range(3)] == pytest.approx(factors)


def test_adam_coupling_moves_betas_and_epsilon_by_malladis_rule(make_clients, fake_grid):
    clients = with_batches(make_clients([1000, 1000, 1000]), [8, 32, 128])
    strategy = build_strategy("fedavg+adam+coupled", make_cfg(), clients)
    messages = sent(strategy, 1, fake_grid)
    # sqrt rule: kappa = 128 / 32 = 4 -> rate x2, 1 - beta x4, eps / 2
    assert messages[2].content[keys.CONFIG][keys.LR] == pytest.approx(0.01 * 2)
    assert messages[2].content[keys.CONFIG][keys.ADAM_BETA1] == pytest.approx(0.6)
    assert messages[2].content[keys.CONFIG][keys.ADAM_BETA2] == pytest.approx(0.996)
    assert messages[2].content[keys.CONFIG][keys.ADAM_EPS] == pytest.approx(5e-9)
    # kappa = 1/4: 1 - beta / 4
    assert messages[0].content[keys.CONFIG][keys.ADAM_BETA1] == pytest.approx(0.975)
    assert messages[1].content[keys.CONFIG][keys.ADAM_BETA1] == pytest.approx(0.9)


def test_adam_coupling_past_malladis_range_keeps_the_betas(make_clients, fake_grid, caplog):
    # kappa = 16: 16 * (1 - 0.9) >= 1, so beta1 would be <= 0: the rate is still scaled
    clients = with_batches(make_clients([1000, 1000, 1000]), [32, 32, 512])
    strategy = build_strategy("fedavg+adam+coupled", make_cfg(), clients)
    messages = sent(strategy, 1, fake_grid)
    assert keys.ADAM_BETA1 not in messages[2].content[keys.CONFIG]
    assert messages[2].content[keys.CONFIG][keys.LR] == pytest.approx(0.01 * 4)
    assert "keeps Adam's betas" in caplog.text


def test_coupling_composes_with_the_noise_factor(make_clients, fake_grid, run_round):
    clients = with_batches(make_clients([1000, 1000, 1000]), [8, 32, 128])
    cfg = make_cfg(warmup_rounds=1, estimator="oracle")
    plain = build_strategy("noise-adaptive", cfg, clients)
    coupled = build_strategy("noise-adaptive+coupled", cfg, clients)
    answers = {
        p: {"weights": [[0.0, 0.0]], "noise_estimate": n} for p, n in enumerate((0.1, 0.2, 0.4))
    }
    for strategy in (plain, coupled):
        run_round(strategy, 1, answers)
    a, b = sent(plain, 2, fake_grid), sent(coupled, 2, fake_grid)
    for pid, factor in enumerate((0.25, 1.0, 4.0)):
        assert b[pid].content[keys.CONFIG][keys.LR] == pytest.approx(
            a[pid].content[keys.CONFIG][keys.LR] * factor, rel=1e-12
        )
    assert len({round(m.content[keys.CONFIG][keys.LR], 9) for m in a.values()}) == 3


@pytest.mark.parametrize(
    ("convention", "expected"),
    [("lr-proportional", (1e-3,) * 3), ("fixed-shrink", (4e-3, 1e-3, 2.5e-4))],
)
def test_weight_decay_follows_the_chosen_convention(make_clients, fake_grid, convention, expected):
    clients = with_batches(make_clients([1000, 1000, 1000]), [8, 32, 128])
    cfg = make_cfg(weight_decay=1e-3, weight_decay_coupling=convention)
    messages = sent(build_strategy("fedavg+coupled", cfg, clients), 1, fake_grid)
    decay = config_of(messages, keys.CLIENT_WEIGHT_DECAY)
    assert [decay[p] for p in range(3)] == pytest.approx(expected)
    if convention == "fixed-shrink":  # the shrink per step, lr * wd, is the base rate's
        rates = config_of(messages, keys.LR)
        assert [rates[p] * decay[p] for p in range(3)] == pytest.approx([LR * 1e-3] * 3)


# -- decay the rate or grow the batch --------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("fedavg", {1: (0.1, 8), 2: (0.05, 8), 3: (0.025, 8)}),
        ("fedavg+grow-batch", {1: (0.1, 8), 2: (0.1, 16), 3: (0.0625, 20)}),
    ],
)
def test_step_decay_or_batch_growth(make_clients, fake_grid, name, expected):
    clients = with_batches(make_clients([20, 20, 20]), [8, 8, 8])
    cfg = make_cfg(num_server_rounds=3, lr_decay_rounds="2,3", lr_decay_factor=0.5, strategies=name)
    strategy = build_strategy(name, cfg, clients)
    for server_round, (lr, batch) in expected.items():
        messages = sent(strategy, server_round, fake_grid)
        assert config_of(messages, keys.LR)[0] == pytest.approx(lr, rel=1e-12)
        assert config_of(messages, keys.CLIENT_BATCH_SIZE)[0] == batch
        assert lr / batch == pytest.approx(0.1 * 0.5 ** (server_round - 1) / 8, rel=1e-12)


# -- the noise scale -------------------------------------------------------------------------


def gradients_round(strategy, server_round, fake_grid, grads, batches, weights=None):
    messages = sent(strategy, server_round, fake_grid)
    replies = [
        reply(
            messages[pid],
            (weights or {}).get(pid, [1.0, 2.0]),
            pid,
            strategy.by_partition[pid].num_examples,
            gradient=grads[pid],
            batch=batches[pid],
            steps=5,
        )
        for pid in sorted(messages)
    ]
    return strategy.aggregate_train(server_round, replies)


def test_the_server_estimates_the_noise_scale_from_the_clients_gradients(make_clients, fake_grid):
    clients = with_batches(make_clients([100, 100, 100]), [4, 8, 16])
    strategy = build_strategy("fedavg", make_cfg(measure_noise_scale=True), clients)
    rng = np.random.default_rng(0)
    grads = rng.normal(size=(3, 50))
    arrays, _ = gradients_round(
        strategy,
        1,
        fake_grid,
        grads,
        [4, 8, 16],
        weights={0: [1.0, 2.0], 1: [3.0, -2.0], 2: [3.0, -2.0]},
    )
    messages = sent(strategy, 2, fake_grid)
    assert all(m.content[keys.CONFIG][keys.MEASURE_NOISE_SCALE] for m in messages.values())
    g2, trace = coupling.federated_terms(grads.astype(np.float32).astype(np.float64), [4, 8, 16])
    logged = strategy.rounds[1].noise_scale
    assert logged["clients"] == 3 and logged["examples"] == 28
    assert logged["g2"] == pytest.approx(g2, rel=1e-12)
    assert logged["trace"] == pytest.approx(trace, rel=1e-12)
    assert logged["b_simple_round"] == pytest.approx(coupling.b_simple(g2, trace))
    assert strategy.rounds[1].steps == {0: 5, 1: 5, 2: 5}
    # the gradient never reaches the aggregate: FedAvg of the weights alone
    np.testing.assert_allclose(arrays.to_numpy_ndarrays()[0], [7 / 3, -2 / 3], rtol=1e-12)


def test_a_malformed_gradient_is_logged_and_left_out(make_clients, fake_grid):
    clients = with_batches(make_clients([100, 100, 100]), [8, 8, 8])
    strategy = build_strategy("fedavg", make_cfg(measure_noise_scale=True), clients)
    grads = np.ones((3, 4))
    grads[2, 1] = np.nan
    gradients_round(strategy, 1, fake_grid, grads, [8, 8, 8])
    assert strategy.rounds[1].errors == [{"partition_id": 2, "reason": "malformed gradient"}]
    assert strategy.rounds[1].noise_scale["clients"] == 2


def test_one_gradient_gives_no_estimate(make_clients, fake_grid):
    clients = with_batches(make_clients([100, 100, 100]), [8, 8, 8])
    strategy = build_strategy("fedavg", make_cfg(measure_noise_scale=True), clients)
    grads = np.ones((3, 4))
    grads[1:] = np.nan
    gradients_round(strategy, 1, fake_grid, grads, [8, 8, 8])
    assert strategy.rounds[1].noise_scale == {"clients": 1, "b_simple": None}


def equal_gradients(b_simple: float) -> np.ndarray:
    """Three gradients of batch 8 whose federated estimate is exactly ``b_simple``.

    With equal batches b = 8 and K = 3, g2 = (K |gbar|^2 - Sbar) / (K - 1) and
    trace = b K (Sbar - |gbar|^2) / (K - 1). Gradients m + d, m - d, m with |m| = 1, d _|_ m and
    x = |d|^2 give |gbar|^2 = 1, Sbar = 1 + 2x / 3, so g2 = 1 - x / 3 and trace = 8x; their
    ratio is b_simple for x = b_simple / (8 + b_simple / 3).
    """
    mean = np.array([1.0, 0.0])
    d = np.array([0.0, np.sqrt(b_simple / (8.0 + b_simple / 3.0))])
    return np.stack([mean + d, mean - d, mean])


def test_equal_gradients_helper_gives_the_intended_noise_scale():
    g2, trace = coupling.federated_terms(equal_gradients(40.0), [8, 8, 8])
    assert coupling.b_simple(g2, trace) == pytest.approx(40.0, rel=1e-6)


def test_batches_grow_with_the_noise_scale_within_the_bound(make_clients, fake_grid):
    clients = with_batches(make_clients([1000, 1000, 1000]), [8, 8, 8])
    cfg = make_cfg(
        measure_noise_scale=True,
        noise_scale_ema=0.0,
        noise_scale_growth="batch",
        noise_scale_growth_max=3.0,
    )
    strategy = build_strategy("fedavg", cfg, clients)
    for server_round, b_simple, batch_after in ((1, 40.0, 8), (2, 80.0, 16), (3, 400.0, 24)):
        gradients_round(strategy, server_round, fake_grid, equal_gradients(b_simple), [8, 8, 8])
        messages = sent(strategy, server_round + 1, fake_grid)
        assert set(config_of(messages, keys.CLIENT_BATCH_SIZE).values()) == {batch_after}
        assert set(config_of(messages, keys.LR).values()) == {LR}  # the rate is kept


def test_clients_per_round_grow_with_the_noise_scale(make_clients, fake_grid):
    clients = with_batches(make_clients([1000] * 8), [8] * 8)
    cfg = make_cfg(
        num_clients=8,
        measure_noise_scale=True,
        noise_scale_ema=0.0,
        noise_scale_growth="clients",
        fraction_train=0.25,  # two clients of eight
    )
    strategy = build_strategy("fedavg", cfg, clients)
    assert len(strategy.sample(1)) == 2
    log_ = strategy.rounds.setdefault(1, RoundLog())
    strategy.noise_scale_observer.measure(
        log_, {p: (g, 8) for p, g in enumerate(equal_gradients(40.0))}
    )
    strategy.noise_scale_observer.measure(
        strategy.rounds[1], {p: (g, 8) for p, g in enumerate(equal_gradients(100.0))}
    )
    assert strategy.growth == pytest.approx(2.5)
    assert len(strategy.sample(2)) == 5  # round(2 * 2.5) = 5


def test_optimal_coupling_uses_the_measured_noise_scale(make_clients, fake_grid):
    clients = with_batches(make_clients([1000, 1000, 1000]), [8, 32, 128])
    cfg = make_cfg(
        coupling_rule="optimal",
        measure_noise_scale=True,
        noise_scale_ema=0.0,
        strategies="fedavg+coupled",
    )
    strategy = build_strategy("fedavg+coupled", cfg, clients)
    sent(strategy, 1, fake_grid)
    # nothing measured yet: the optimizer's rule (linear for SGD)
    assert strategy.rounds[1].coupling_factor == pytest.approx({0: 0.25, 1: 1.0, 2: 4.0})
    strategy.noise_scale_observer.measure(
        strategy.rounds[1], {p: (g, 8) for p, g in enumerate(equal_gradients(32.0))}
    )
    sent(strategy, 2, fake_grid)
    # (1 + 32 / 32) / (1 + 32 / b): b = 8 -> 2 / 5, b = 128 -> 2 / 1.25
    assert strategy.rounds[2].coupling_factor == pytest.approx({0: 0.4, 1: 1.0, 2: 1.6})


def test_state_dict_carries_the_noise_scale(make_clients, fake_grid):
    clients = with_batches(make_clients([100, 100, 100]), [8, 8, 8])
    cfg = make_cfg(measure_noise_scale=True, noise_scale_ema=0.0, noise_scale_growth="batch")
    strategy = build_strategy("fedavg", cfg, clients)
    gradients_round(strategy, 1, fake_grid, equal_gradients(40.0), [8, 8, 8])
    gradients_round(strategy, 2, fake_grid, equal_gradients(80.0), [8, 8, 8])
    state = json.loads(json.dumps(strategy.state_dict()))
    again = build_strategy("fedavg", cfg, clients)
    again.load_state_dict(state)
    assert again.noise_scale.b_simple == strategy.noise_scale.b_simple
    assert again.growth == strategy.growth > 1.0
    assert again.rounds[2].steps == {0: 5, 1: 5, 2: 5}
    assert again.schedule(3) == strategy.schedule(3)


@pytest.mark.parametrize("reported", [-5, 0, 2.5, float("nan"), "64", None])
def test_a_bad_reported_batch_size_falls_back_to_the_runs(reported, make_clients, fake_grid):
    from fedlr.fl.nodes import _batch_size

    assert _batch_size(reported) == 0
    clients = with_batches(make_clients([1000, 1000, 1000]), [8, _batch_size(reported), 128])
    strategy = build_strategy("fedavg+coupled", make_cfg(), clients)
    messages = sent(strategy, 1, fake_grid)  # no crash, whatever was reported
    assert config_of(messages, keys.CLIENT_BATCH_SIZE) == {0: 8, 1: 16, 2: 128}


def test_a_gradient_of_another_length_is_dropped_not_the_round(make_clients, fake_grid):
    clients = with_batches(make_clients([100, 100, 100]), [8, 8, 8])
    strategy = build_strategy("fedavg", make_cfg(measure_noise_scale=True), clients)
    grads = {0: np.ones(4), 1: np.ones(4) * 2, 2: np.ones(5)}
    strategy.noise_scale_observer.measure(
        strategy.rounds.setdefault(1, RoundLog()), {p: (g, 8) for p, g in grads.items()}
    )
    assert strategy.rounds[1].noise_scale["clients"] == 2
    assert strategy.rounds[1].errors == [
        {"partition_id": 2, "reason": "gradient of another length"}
    ]


def test_growth_waits_for_the_average_to_settle_and_never_shrinks(make_clients):
    clients = with_batches(make_clients([1000] * 3), [8, 8, 8])
    cfg = make_cfg(measure_noise_scale=True, noise_scale_ema=0.5, noise_scale_growth="batch")
    strategy = build_strategy("fedavg", cfg, clients)
    log_ = strategy.rounds.setdefault(1, RoundLog())
    strategy.noise_scale_observer.measure(
        log_, {p: (g, 8) for p, g in enumerate(equal_gradients(10.0))}
    )
    assert strategy.first_b_simple is None  # one round of a 0.5-average: not settled
    strategy.noise_scale_observer.measure(
        log_, {p: (g, 8) for p, g in enumerate(equal_gradients(30.0))}
    )
    first = strategy.first_b_simple
    assert first is not None and strategy.growth == 1.0
    strategy.noise_scale_observer.measure(
        log_, {p: (g, 8) for p, g in enumerate(equal_gradients(200.0))}
    )
    grown = strategy.growth
    assert grown > 1.0
    for _ in range(5):  # the noise scale falls again: the batches stay grown
        strategy.noise_scale_observer.measure(
            log_, {p: (g, 8) for p, g in enumerate(equal_gradients(5.0))}
        )
    assert strategy.growth == grown
