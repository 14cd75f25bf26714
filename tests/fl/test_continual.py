"""Continual streams in fedlr.fl: schedules per round, tasks per client, R matrices (no engine).

Split digits, class-incremental, 2 tasks (classes 0-4, then 5-9), 10 rounds, 3 iid clients.
Together, task 1 arrives in round 6 everywhere; with ``task-stagger`` 1 (2) every client starts
task 0 in round 1 and client ``k`` gets task 1 ``k`` (``2k``) rounds later: starts
``[[1, 6], [1, 7], [1, 8]]`` (``[[1, 6], [1, 8], [1, 10]]``).

Hand-worked numbers:

* ``+phases`` with warm-up 2, floor 0.1, peak decay 0.5. Phase 0 (rounds 1-5, peak 1): warm-up
  0.1 + 0.9 * (1/2, 2/2) = 0.55, 1.0; then 0.1 + 0.45 * (1 + cos(pi * (0, 1, 2) / 3)) = 1.0,
  0.775, 0.325. Phase 1 (rounds 6-10, peak 0.5): 0.3, 0.5, 0.5, 0.4, 0.2. A client whose task 1
  arrives in round 7 has a 4-round phase 1: 0.3, 0.5, 0.5, 0.1 + 0.2 * (1 + cos(pi / 2)) = 0.3;
  in round 8, a 3-round one: 0.3, 0.5, 0.5.
* The recorder's R (stagger 2, so task ends (5, 10), (7, 10), (9, 10)); client 2 misses its
  round-9 evaluation, so its row 0 is round 8's. Test examples per task (10, 30), (20, 20),
  (10, 10); pooled column 0 weighs (10, 20, 10) / 40, column 1 (30, 20, 10) / 60:

  ==========  ================  ================  ================  =========================
  client      row 0 (end of 0)  row 1 (end of 1)  baseline          ensemble
  ==========  ================  ================  ================  =========================
  0           (0.9, 0.1) r5     (0.6, 0.8) r10    (0.1, 0.0)        (0.7, 0.9)
  1           (0.8, 0.2) r7     (0.7, 0.9) r10    (0.1, 0.3)        (0.8, 0.8)
  2           (1.0, 0.5) r8     (0.5, 1.0) r10    (0.1, 0.0)        (0.9, 1.0)
  pooled      (0.875, 0.2)      (0.625, 52/60)    (0.1, 0.1)        (0.8, 53/60)
  ==========  ================  ================  ================  =========================

  ACC = (0.625 + 52/60) / 2, BWT = 0.625 - 0.875 = -0.25, forgetting 0.25, FWT = 0.2 - 0.1 =
  0.1, ensemble ACC = (0.8 + 53/60) / 2.
"""

from __future__ import annotations

import json
from dataclasses import replace
import math

import numpy as np
import pytest
import torch
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)

from fedlr import config as fedlr_config
from fedlr.fl import client_app, keys
from fedlr.fl.recorder import RunRecorder
from fedlr.fl.strategy import RoundLog, build_strategy, schedule_params
from fedlr.metrics import continual
from fedlr.tasks import continual as continual_task
from fedlr.rates import schedules
from fedlr.tasks import streams, tabular

from .conftest import FakeGrid, InProcessGrid
from fedlr.analysis import is_round, read_log

LR = 0.1
ROUNDS = 10
STRATEGIES = "fedavg,fedavg+phases,fedavg+phases+replay,fedavg+cosine,noise-adaptive+phases"
PHASES = {"schedule_warmup": 2, "schedule_floor": 0.1, "schedule_peak_decay": 0.5}
PHASE_MULTIPLIERS = [0.55, 1.0, 1.0, 0.775, 0.325, 0.3, 0.5, 0.5, 0.4, 0.2]
EXAMPLES = 449  # train examples of each iid digits client of three


def make_cfg(**overrides: object) -> dict:
    """A small continual run config (keys in snake_case -> kebab-case)."""
    values = {
        "dataset": "digits",
        "num-clients": 3,
        "partitioner": "iid",
        "noisy-clients": 0,
        "hard-clean-clients": 0,
        "stream": "class-incremental",
        "num-tasks": 2,
        "num-server-rounds": ROUNDS,
        "lr": LR,
        "hidden": 16,
        "local-epochs": 1,
        "batch-size": 16,
        "strategies": STRATEGIES,
    }
    values.update({key.replace("_", "-"): value for key, value in overrides.items()})
    return fedlr_config.resolve(overrides=values)


@pytest.fixture(autouse=True, scope="module")
def restore_threads():
    """The ClientApp sets torch to one thread per process; give the rest of the session back."""
    saved = torch.get_num_threads()
    yield
    torch.set_num_threads(saved)


def sent(strategy, server_round):
    """configure_train's messages by partition id (every client connected)."""
    clients = list(strategy.clients.values())
    messages = strategy.configure_train(
        server_round,
        ArrayRecord([np.zeros(2)]),
        ConfigRecord(dict(strategy.cfg)),
        FakeGrid(c.node_id for c in clients),
    )
    return {strategy.clients[m.metadata.dst_node_id].partition_id: m for m in messages}


def rates_over_the_run(strategy) -> dict[int, list[float]]:
    """The rate each client is sent in rounds 1..ROUNDS."""
    out: dict[int, list[float]] = {pid: [] for pid in strategy.by_partition}
    for server_round in range(1, ROUNDS + 1):
        for pid, message in sent(strategy, server_round).items():
            out[pid].append(message.content[keys.CONFIG][keys.LR])
    return out


def ask(node_id: int, message_type: str = MessageType.EVALUATE) -> Message:
    return Message(RecordDict(), dst_node_id=node_id, message_type=message_type)


def metrics_reply(msg: Message, values: dict) -> Message:
    return Message(RecordDict({keys.METRICS: MetricRecord(values)}), reply_to=msg)


# -- schedules -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("step", {"step_size": 5, "gamma": 0.5}),
        ("exponential", {"gamma": 0.5}),
        ("cosine", {"floor": 0.1}),
        ("warm-restarts", {"t_0": 5, "floor": 0.1}),
        ("cyclical", {"step_size_up": 2, "step_size_down": 3, "floor": 0.1}),
        ("one-cycle", {}),
        ("constant", {}),
        ("phases", {"starts": [1, 6], "warmup": 2, "floor": 0.1, "peak_decay": 0.5}),
    ],
)
def test_schedule_params_read_the_schedule_keys_with_one_period_per_task(name, expected):
    # schedule-period 0: num-server-rounds // num-tasks = 5 rounds per task
    cfg = make_cfg(schedule_gamma=0.5, **PHASES)
    assert schedule_params(name, cfg, np.array([1, 6])) == expected
    assert schedules.round_multipliers(name, ROUNDS, **expected)  # torch takes every one


def test_a_schedule_period_overrides_the_rounds_per_task():
    cfg = make_cfg(schedule_period=3)
    assert schedule_params("step", cfg, [1, 6])["step_size"] == 3
    assert schedule_params("cyclical", cfg, [1, 6])["step_size_up"] == 1


def test_phases_rate_is_the_base_rate_times_the_phase_multipliers(make_clients):
    strategy = build_strategy("fedavg+phases", make_cfg(**PHASES), make_clients([EXAMPLES] * 3))
    expected = schedules.round_multipliers(
        "phases", ROUNDS, starts=[1, 6], warmup=2, floor=0.1, peak_decay=0.5
    )
    assert expected == pytest.approx(PHASE_MULTIPLIERS, rel=1e-12)
    rates = rates_over_the_run(strategy)
    for pid in range(3):
        assert rates[pid] == pytest.approx([LR * m for m in expected], rel=1e-12)
        assert list(strategy.multipliers(pid)) == expected
    for server_round in range(1, ROUNDS + 1):
        factor = expected[server_round - 1]
        assert strategy.rounds[server_round].schedule_factor == {0: factor, 1: factor, 2: factor}
        assert strategy.rounds[server_round].lr == pytest.approx(
            dict.fromkeys(range(3), LR * factor)
        )


def test_staggered_phases_start_at_each_clients_own_arrival_rounds(make_clients):
    cfg = make_cfg(task_stagger=1, **PHASES)
    strategy = build_strategy("fedavg+phases", cfg, make_clients([EXAMPLES] * 3))
    starts = strategy.task_starts()
    assert starts.tolist() == [[1, 6], [1, 7], [1, 8]]
    rates = rates_over_the_run(strategy)  # every client, every round: no client is refused
    # phase 1 (task 1) re-warms at the client's own arrival round (see the module docstring)
    own_phase_1 = {0: [0.3, 0.5, 0.5, 0.4, 0.2], 1: [0.3, 0.5, 0.5, 0.3], 2: [0.3, 0.5, 0.5]}
    for pid, phase_1 in own_phase_1.items():
        arrival = int(starts[pid][1])
        assert rates[pid][arrival - 1 :] == pytest.approx([LR * m for m in phase_1], rel=1e-12)
        reference = schedules.round_multipliers(
            "phases", ROUNDS, starts=[1, arrival], warmup=2, floor=0.1, peak_decay=0.5
        )
        assert strategy.multipliers(pid)[arrival - 1 :] == pytest.approx(reference[arrival - 1 :])
        # before it, the client is still in its first phase: between the floor and the peak
        assert all(0.1 * LR <= lr <= LR for lr in rates[pid][: arrival - 1])
    assert rates[0][5] != rates[1][5]  # round 6: client 0 re-warms, client 1 is still decaying


def test_cosine_matches_torchs_cosine_annealing(make_clients):
    strategy = build_strategy(
        "fedavg+cosine", make_cfg(schedule_floor=0.1), make_clients([EXAMPLES] * 3)
    )
    weight = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([weight], lr=LR)
    annealing = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=ROUNDS - 1, eta_min=0.1 * LR
    )
    expected = []
    for _ in range(ROUNDS):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        annealing.step()
    assert expected[0] == LR and expected[-1] == pytest.approx(0.1 * LR)
    rates = rates_over_the_run(strategy)
    for pid in range(3):
        assert rates[pid] == pytest.approx(expected, rel=1e-12)


def test_a_constant_strategy_keeps_schedule_factor_one(make_clients):
    strategy = build_strategy("fedavg", make_cfg(**PHASES), make_clients([EXAMPLES] * 3))
    rates = rates_over_the_run(strategy)
    assert rates == {pid: [LR] * ROUNDS for pid in range(3)}
    for server_round in range(1, ROUNDS + 1):
        assert strategy.rounds[server_round].schedule_factor == {0: 1.0, 1: 1.0, 2: 1.0}
    assert strategy.schedule(ROUNDS + 5) == {pid: (1.0, 16) for pid in range(3)}


def test_a_round_past_the_run_keeps_the_last_multiplier(make_clients):
    strategy = build_strategy("fedavg+phases", make_cfg(**PHASES), make_clients([EXAMPLES] * 3))
    assert strategy.schedule(ROUNDS + 3)[0] == (pytest.approx(0.2), 16)
    assert strategy.schedule(ROUNDS)[0][0] == pytest.approx(0.2)


def test_noise_adaptive_phases_composes_the_phase_and_noise_factors(make_clients, run_round):
    cfg = make_cfg(warmup_rounds=1, **PHASES)
    clients = make_clients([EXAMPLES] * 3)
    plain = build_strategy("noise-adaptive", cfg, clients)
    phased = build_strategy("noise-adaptive+phases", cfg, clients)
    answers = {
        pid: {"weights": [[0.0, 0.0]], "noise_estimate": noise}
        for pid, noise in enumerate((0.1, 0.2, 0.4))
    }
    for strategy in (plain, phased):
        run_round(strategy, 1, answers)  # warm-up: uniform rates; the estimates seed the EMA
    assert phased.rounds[1].lr == pytest.approx(dict.fromkeys(range(3), LR * 0.55))
    noise = phased.factors()
    assert len({round(f, 9) for f in noise.values()}) == 3  # the noise factor is not trivial
    for server_round in range(2, ROUNDS + 1):
        a, b = sent(plain, server_round), sent(phased, server_round)
        multiplier = PHASE_MULTIPLIERS[server_round - 1]
        for pid in range(3):
            rate = b[pid].content[keys.CONFIG][keys.LR]
            assert rate == pytest.approx(LR * multiplier * noise[pid], rel=1e-12)
            assert rate == pytest.approx(a[pid].content[keys.CONFIG][keys.LR] * multiplier)
        assert phased.rounds[server_round].schedule_factor == pytest.approx(
            dict.fromkeys(range(3), multiplier)
        )


@pytest.mark.parametrize(
    ("name", "replay"),
    [("fedavg+phases+replay", True), ("fedavg+phases", False), ("fedavg", False)],
)
def test_only_a_replay_strategy_asks_its_clients_to_replay(make_clients, name, replay):
    strategy = build_strategy(name, make_cfg(), make_clients([EXAMPLES] * 3))
    assert strategy.replay is replay
    messages = sent(strategy, 6)
    assert [m.content[keys.CONFIG][keys.REPLAY] for m in messages.values()] == [replay] * 3


# -- tasks and snapshots ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "starts", "snapshots"),
    [
        ({}, [[1, 6]] * 3, [5, 10]),
        ({"task_stagger": 2}, [[1, 6], [1, 8], [1, 10]], [9, 10]),
        ({"num_tasks": 5}, [[1, 3, 5, 7, 9]] * 3, [2, 4, 6, 8, 10]),
        # no stream: num-tasks phases of +phases, the same at every client (no stagger)
        ({"stream": "none", "task_stagger": 2, "strategies": "fedavg"}, [[1, 6]] * 3, [5, 10]),
    ],
)
def test_task_starts_and_snapshot_rounds(make_clients, overrides, starts, snapshots):
    strategy = build_strategy("fedavg", make_cfg(**overrides), make_clients([EXAMPLES] * 3))
    assert strategy.task_starts().tolist() == starts
    assert strategy.snapshot_rounds() == snapshots


# -- the server reads tasks and task accuracies ----------------------------------------------


@pytest.mark.parametrize("bad", [-1, float("nan"), [1, 0]], ids=repr)
def test_aggregate_train_logs_the_task_each_client_trained_on(make_clients, bad):
    strategy = build_strategy("fedavg", make_cfg(task_stagger=2), make_clients([EXAMPLES] * 3))
    messages = sent(strategy, 7)
    replies = []
    for pid, task in ((0, 1), (1, 0), (2, bad)):  # round 7: client 0 is on task 1, client 1 on 0
        metrics = {keys.NUM_EXAMPLES: EXAMPLES, keys.TRAIN_LOSS: 1.0, keys.TASK: task}
        content = RecordDict(
            {keys.ARRAYS: ArrayRecord([np.zeros(2)]), keys.METRICS: MetricRecord(metrics)}
        )
        replies.append(Message(content, reply_to=messages[pid]))
    arrays, _ = strategy.aggregate_train(7, replies)
    assert arrays is not None
    assert strategy.rounds[7].task == {0: 1, 1: 0}
    assert sorted(strategy.rounds[7].train_loss) == [0, 1, 2]  # a bad task costs only the task


def evaluate_replies(clients, values_by_pid):
    return [
        metrics_reply(
            ask(clients[pid].node_id),
            {keys.NUM_EXAMPLES: 10, keys.ACCURACY: 0.5, keys.PARTITION_ID: pid, **values},
        )
        for pid, values in values_by_pid.items()
    ]


def test_aggregate_evaluate_keeps_each_clients_task_lists(make_clients):
    clients = make_clients([EXAMPLES] * 3)
    strategy = build_strategy("fedavg", make_cfg(), clients)
    replies = evaluate_replies(
        clients,
        {
            0: {keys.TASK_ACCURACY: [0.9, 0.1], keys.TASK_EXAMPLES: [10, 30]},
            1: {keys.TASK_ACCURACY: [-1.0, 1.0], keys.TASK_EXAMPLES: [0, 20]},  # no task-0 test
            2: {keys.TASK_ACCURACY: [0.0, 1.0], keys.TASK_EXAMPLES: [5, 5]},
        },
    )
    strategy.aggregate_evaluate(4, replies)
    log_ = strategy.rounds[4]
    assert log_.task_accuracy == {0: [0.9, 0.1], 1: [-1.0, 1.0], 2: [0.0, 1.0]}
    assert log_.task_examples == {0: [10, 30], 1: [0, 20], 2: [5, 5]}
    assert log_.accuracy == {0: 0.5, 1: 0.5, 2: 0.5}


@pytest.mark.parametrize(
    "values",
    [
        {keys.TASK_ACCURACY: [0.9, 0.1, 0.5], keys.TASK_EXAMPLES: [10, 30, 5]},  # 3 of 2 tasks
        {keys.TASK_ACCURACY: [0.9], keys.TASK_EXAMPLES: [10, 30]},  # lengths differ
        {keys.TASK_ACCURACY: [1.5, 0.1], keys.TASK_EXAMPLES: [10, 30]},  # out of range
        {keys.TASK_ACCURACY: [-0.5, 0.1], keys.TASK_EXAMPLES: [10, 30]},  # negative, not -1
        {keys.TASK_ACCURACY: [0.9, 0.1], keys.TASK_EXAMPLES: [-1, 30]},  # negative examples
        {keys.TASK_ACCURACY: [0.9, 0.1], keys.TASK_EXAMPLES: [10.0, 30.0]},  # float examples
        {keys.TASK_ACCURACY: 0.9, keys.TASK_EXAMPLES: 10},  # not lists
        {keys.TASK_ACCURACY: [0.9, 0.1]},  # no examples
        {},
    ],
)
def test_aggregate_evaluate_ignores_malformed_task_lists(make_clients, values):
    clients = make_clients([EXAMPLES] * 3)
    strategy = build_strategy("fedavg", make_cfg(), clients)
    strategy.aggregate_evaluate(2, evaluate_replies(clients, {1: values}))
    assert strategy.rounds[2].task_accuracy == {}
    assert strategy.rounds[2].task_examples == {}
    assert strategy.rounds[2].accuracy == {1: 0.5}  # the accuracy itself is kept


def test_without_a_stream_task_lists_are_not_logged(make_clients):
    clients = make_clients([EXAMPLES] * 3)
    strategy = build_strategy("fedavg", make_cfg(stream="none", strategies="fedavg"), clients)
    good = {keys.TASK_ACCURACY: [0.6, 0.8], keys.TASK_EXAMPLES: [10, 30]}
    strategy.aggregate_evaluate(2, evaluate_replies(clients, {0: good}))
    assert strategy.rounds[2].task_accuracy == {} and strategy.rounds[2].accuracy == {0: 0.5}


# -- evaluate_tasks: every task of every client, outside the round loop ----------------------


class RecordingGrid(InProcessGrid):
    """fedlr's real ClientApp in this process; keeps the messages it was asked to send."""

    def __init__(self, num_nodes: int) -> None:
        super().__init__(num_nodes)
        self.sent: list[Message] = []

    def send_and_receive(self, messages, *, timeout=None):
        self.sent = list(messages)
        return super().send_and_receive(self.sent, timeout=timeout)


class ScriptedGrid(FakeGrid):
    """A Grid whose nodes answer with ``answer(message)`` (None: no reply)."""

    def __init__(self, node_ids, answer) -> None:
        super().__init__(node_ids)
        self.answer = answer
        self.sent: list[Message] = []

    def send_and_receive(self, messages, *, timeout=None):
        self.sent = list(messages)
        return [r for r in (self.answer(m) for m in self.sent) if r is not None]


def in_process_clients(make_clients):
    """Partition ``pid`` on node ``2000 + 7 * pid``, as :class:`InProcessGrid` holds them."""
    return make_clients([EXAMPLES] * 3, node_ids=[2000, 2007, 2014])


def task_accuracies(cfg, pid, model) -> tuple[list[float], list[int]]:
    """Accuracy of ``model`` on each task's test split of client ``pid``, and the split sizes."""
    tasks, _ = continual_task.client_stream(cfg, tabular.client_data(cfg, pid), pid)
    return (
        [tabular.evaluate(model, t.x_test, t.y_test)[1] for t in tasks],
        [len(t.y_test) for t in tasks],
    )


def test_evaluate_tasks_asks_every_client_for_every_task(make_clients):
    cfg = make_cfg()
    strategy = build_strategy("fedavg", cfg, in_process_clients(make_clients))
    model = tabular.build_model(cfg, seed=11)
    grid = RecordingGrid(3)
    out = strategy.evaluate_tasks(grid, ArrayRecord(model.state_dict()))

    assert sorted(out) == [0, 1, 2]
    assert len(grid.sent) == 3
    for message in grid.sent:
        assert message.metadata.message_type == MessageType.EVALUATE
        assert message.content[keys.CONFIG][keys.SNAPSHOTS] == 0
        assert list(message.content.array_records) == [keys.ARRAYS]
    for pid, (accuracy, examples, ensemble) in out.items():
        expected, counts = task_accuracies(cfg, pid, model)
        assert accuracy == pytest.approx(expected)
        assert examples == counts and sum(counts) == tabular.client_data(cfg, pid).num_test
        assert ensemble is None


def test_evaluate_tasks_sends_the_snapshots_and_reads_the_ensemble(make_clients):
    cfg = make_cfg()
    strategy = build_strategy("fedavg", cfg, in_process_clients(make_clients))
    model, other = tabular.build_model(cfg, seed=11), tabular.build_model(cfg, seed=5)
    arrays, snapshot = ArrayRecord(model.state_dict()), ArrayRecord(other.state_dict())
    grid = RecordingGrid(3)
    out = strategy.evaluate_tasks(grid, arrays, [snapshot, arrays])

    for message in grid.sent:
        assert message.content[keys.CONFIG][keys.SNAPSHOTS] == 2
        assert set(message.content.array_records) == {
            keys.ARRAYS,
            keys.SNAPSHOT.format(0),
            keys.SNAPSHOT.format(1),
        }
    for pid, (accuracy, _, ensemble) in out.items():
        tasks, _ = continual_task.client_stream(cfg, tabular.client_data(cfg, pid), pid)
        expected = [tabular.evaluate_ensemble([other, model], t.x_test, t.y_test)[1] for t in tasks]
        assert ensemble == pytest.approx(expected)
        assert accuracy == pytest.approx(task_accuracies(cfg, pid, model)[0])


def test_evaluate_tasks_leaves_out_failed_and_malformed_replies(make_clients, caplog):
    clients = make_clients([EXAMPLES] * 4)
    strategy = build_strategy("fedavg", make_cfg(num_clients=4), clients)
    answers = {
        0: {keys.TASK_ACCURACY: [0.9, -1.0], keys.TASK_EXAMPLES: [10, 0]},
        1: {keys.TASK_ACCURACY: [0.9, 0.1, 0.2], keys.TASK_EXAMPLES: [10, 3, 4]},  # 3 tasks
        2: None,  # the node failed
    }
    by_node = {c.node_id: c.partition_id for c in clients}

    def answer(message):
        values = answers[by_node[message.metadata.dst_node_id]]
        if values is None:
            return Message(error=Error(0, "node crashed"), reply_to=message)
        return metrics_reply(message, values)

    grid = ScriptedGrid([c.node_id for c in clients[:3]], answer)  # client 3 is gone
    out = strategy.evaluate_tasks(grid, ArrayRecord([np.zeros(2)]))
    assert out == {0: ([0.9, -1.0], [10, 0], None)}
    assert sorted(by_node[m.metadata.dst_node_id] for m in grid.sent) == [0, 1, 2]
    assert "node crashed" in caplog.text and "partition 1 sent no usable" in caplog.text

    # with snapshots, a reply without the ensemble's accuracies is left out as well
    answers[1] = {
        keys.TASK_ACCURACY: [0.5, 0.5],
        keys.TASK_EXAMPLES: [10, 10],
        keys.ENSEMBLE_TASK_ACCURACY: [0.6, 0.7],
    }
    out = strategy.evaluate_tasks(grid, ArrayRecord([np.zeros(2)]), [ArrayRecord([np.ones(2)])])
    assert out == {1: ([0.5, 0.5], [10, 10], [0.6, 0.7])}


# -- the client: its current task, replay, every task evaluated ------------------------------


def client_context(pid: int) -> Context:
    return Context(
        run_id=1,
        node_id=1000 + 7 * pid,
        node_config={keys.NODE_PARTITION_ID: pid, keys.NODE_NUM_PARTITIONS: 3},
        state=RecordDict(),
        run_config={},
    )


def client_message(cfg, message_type: str, model=None, **config: object) -> Message:
    model = model if model is not None else tabular.build_model(cfg, seed=11)
    content = RecordDict(
        {
            keys.CONFIG: ConfigRecord({**cfg, **config}),
            keys.ARRAYS: ArrayRecord(model.state_dict()),
        }
    )
    return Message(content, dst_node_id=1000, message_type=message_type)


def train(cfg, pid: int, server_round: int, replay: bool = False) -> Message:
    msg = client_message(
        cfg,
        MessageType.TRAIN,
        **{
            keys.LR: 0.05,
            keys.SERVER_ROUND: server_round,
            keys.CLIENT_BATCH_SIZE: 16,
            keys.REPLAY: replay,
        },
    )
    return client_app.train(msg, client_context(pid))


@pytest.mark.parametrize(
    ("stagger", "pid", "server_round", "task"),
    [(0, 0, 5, 0), (0, 0, 6, 1), (0, 2, 6, 1), (2, 1, 7, 0), (2, 1, 8, 1), (2, 2, 9, 0)],
)
def test_a_continual_client_trains_on_its_current_task(stagger, pid, server_round, task):
    cfg = make_cfg(task_stagger=stagger)
    starts = streams.arrival_rounds(ROUNDS, 2, 3, stagger)[pid]
    assert streams.current_task(starts, server_round) == task
    tasks, _ = continual_task.client_stream(cfg, tabular.client_data(cfg, pid), pid)
    metrics = train(cfg, pid, server_round).content.metric_records[keys.METRICS]
    n = len(tasks[task].y_train)
    assert set(np.unique(tasks[task].y_train)) == set(range(5 * task, 5 * task + 5))
    assert metrics[keys.TASK] == task
    assert metrics[keys.NUM_EXAMPLES] == n
    assert metrics[keys.STEPS] == math.ceil(n / 16)  # one epoch of batches of 16


def test_replay_grows_the_training_set_after_the_first_task():
    cfg = make_cfg(replay_size=20)
    tasks, _ = continual_task.client_stream(cfg, tabular.client_data(cfg, 1), 1)
    first, second = len(tasks[0].y_train), len(tasks[1].y_train)
    assert first > 20
    counted = {}
    for server_round, replay in ((3, False), (3, True), (6, False), (6, True)):
        reply = train(cfg, 1, server_round, replay)
        metrics = reply.content.metric_records[keys.METRICS]
        counted[server_round, replay] = (metrics[keys.NUM_EXAMPLES], metrics[keys.STEPS])
        counted[server_round, replay, "arrays"] = reply.content.array_records[keys.ARRAYS]
    # task 0 has no earlier task to replay
    assert counted[3, False] == counted[3, True] == (first, math.ceil(first / 16))
    assert counted[6, False] == (second, math.ceil(second / 16))
    assert counted[6, True] == (second + 20, math.ceil((second + 20) / 16))
    plain, replayed = (counted[6, r, "arrays"].to_numpy_ndarrays() for r in (False, True))
    assert any(not np.array_equal(a, b) for a, b in zip(plain, replayed, strict=True))


def trained_model(cfg):
    """The model after one round of client 0 on task 0 (so some task accuracy is above 0)."""
    reply = train(cfg, 0, 1)
    model = tabular.build_model(cfg)
    model.load_state_dict(reply.content.array_records[keys.ARRAYS].to_torch_state_dict())
    return model


def test_continual_evaluate_reports_every_task_and_their_weighted_mean():
    cfg = make_cfg()
    model = trained_model(cfg)
    reply = client_app.evaluate(client_message(cfg, MessageType.EVALUATE, model), client_context(1))
    metrics = reply.content.metric_records[keys.METRICS]
    expected, counts = task_accuracies(cfg, 1, model)
    assert len(metrics[keys.TASK_ACCURACY]) == len(metrics[keys.TASK_EXAMPLES]) == 2
    assert metrics[keys.TASK_ACCURACY] == pytest.approx(expected)
    assert metrics[keys.TASK_EXAMPLES] == counts
    assert metrics[keys.NUM_EXAMPLES] == sum(counts)
    weighted = sum(a * n for a, n in zip(expected, counts, strict=True)) / sum(counts)
    assert metrics[keys.ACCURACY] == pytest.approx(weighted)
    assert metrics[keys.TASK_ACCURACY][0] > 0.0  # trained on task 0: the lists are not all zero
    assert keys.ENSEMBLE_TASK_ACCURACY not in metrics


def test_an_ensemble_of_the_model_itself_gives_its_task_accuracies():
    cfg = make_cfg()
    model, untrained = trained_model(cfg), tabular.build_model(cfg, seed=11)
    msg = client_message(cfg, MessageType.EVALUATE, model, **{keys.SNAPSHOTS: 1})
    msg.content[keys.SNAPSHOT.format(0)] = ArrayRecord(model.state_dict())
    metrics = client_app.evaluate(msg, client_context(1)).content.metric_records[keys.METRICS]
    assert metrics[keys.ENSEMBLE_TASK_ACCURACY] == pytest.approx(metrics[keys.TASK_ACCURACY])

    # the ensemble is the snapshots', not the model's: one untrained snapshot scores as it does
    msg = client_message(cfg, MessageType.EVALUATE, model, **{keys.SNAPSHOTS: 1})
    msg.content[keys.SNAPSHOT.format(0)] = ArrayRecord(untrained.state_dict())
    metrics = client_app.evaluate(msg, client_context(1)).content.metric_records[keys.METRICS]
    assert metrics[keys.ENSEMBLE_TASK_ACCURACY] == pytest.approx(
        task_accuracies(cfg, 1, untrained)[0]
    )
    assert metrics[keys.TASK_ACCURACY] == pytest.approx(task_accuracies(cfg, 1, model)[0])
    assert metrics[keys.ENSEMBLE_TASK_ACCURACY] != pytest.approx(metrics[keys.TASK_ACCURACY])


def test_task_incremental_evaluation_predicts_within_each_tasks_classes():
    cfg = make_cfg(stream="task-incremental")
    model = tabular.build_model(cfg, seed=11)
    reply = client_app.evaluate(client_message(cfg, MessageType.EVALUATE, model), client_context(2))
    tasks, _ = continual_task.client_stream(cfg, tabular.client_data(cfg, 2), 2)
    heads = [
        tabular.evaluate(model, t.x_test, t.y_test, streams.task_mask(t.classes))[1] for t in tasks
    ]
    assert reply.content.metric_records[keys.METRICS][keys.TASK_ACCURACY] == pytest.approx(heads)
    assert min(heads) > 0.0  # five classes to choose from, not ten


# -- the recorder: R from each client's own task ends ----------------------------------------

HISTORY = {  # partition id -> {round: accuracy per task}; any other round: (0.5, 0.5)
    0: {5: [0.9, 0.1], 10: [0.6, 0.8]},
    1: {7: [0.8, 0.2], 10: [0.7, 0.9]},
    2: {8: [1.0, 0.5], 10: [0.5, 1.0]},  # round 9 missed: row 0 is round 8's
}
TEST_EXAMPLES = {0: [10, 30], 1: [20, 20], 2: [10, 10]}
POOLED_R = [[0.875, 0.2], [0.625, 52 / 60]]


@pytest.fixture
def continual_run(tmp_path, make_clients):
    """A fedavg strategy of a staggered stream whose rounds are filled by hand, and a recorder."""
    cfg = make_cfg(task_stagger=2, name="unit")
    clients = make_clients([EXAMPLES] * 3)
    strategy = build_strategy("fedavg", cfg, clients)
    for server_round in range(1, ROUNDS + 1):
        log_ = RoundLog(lr=dict.fromkeys(range(3), LR), sampled=[0, 1, 2])
        for pid in range(3):
            if (pid, server_round) == (2, 9):
                continue
            log_.task_accuracy[pid] = HISTORY[pid].get(server_round, [0.5, 0.5])
            log_.task_examples[pid] = TEST_EXAMPLES[pid]
            log_.task[pid] = streams.current_task(strategy.task_starts()[pid], server_round)
        strategy.rounds[server_round] = log_
    strategy.task_baseline = {0: [0.1, 0.0], 1: [0.1, 0.3], 2: [0.1, 0.0]}
    strategy.task_ensemble = {0: [0.7, 0.9], 1: [0.8, 0.8], 2: [0.9, 1.0]}
    strategy.ensemble_examples = dict(TEST_EXAMPLES)
    recorder = RunRecorder(tmp_path / "run", cfg, clients)
    yield strategy, recorder
    recorder.close()


def strict_loads(text: str):
    """``json.loads`` that refuses NaN and Infinity (not JSON)."""

    def refuse(constant: str):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_results_pool_each_clients_evaluation_at_its_own_task_ends(continual_run):
    strategy, recorder = continual_run
    for server_round in sorted(strategy.rounds):  # the record a finished run holds
        recorder.round_done("fedavg", strategy, server_round)
    recorder.strategy_done("fedavg", strategy)
    results = strict_loads((recorder.run_dir / "results.json").read_text())
    block = results["strategies"]["fedavg"]["continual"]

    assert block["stream"] == "class-incremental" and block["num_tasks"] == 2
    assert block["task_starts"] == [[1, 6], [1, 8], [1, 10]]
    assert block["snapshot_rounds"] == [9, 10]
    assert block["schedule"] == "constant" and block["replay"] is False
    np.testing.assert_allclose(block["R"], POOLED_R, rtol=1e-12)
    np.testing.assert_allclose(block["baseline"], [0.1, 0.1], rtol=1e-12)
    expected = continual.summary(POOLED_R, [0.1, 0.1])
    for key in ("acc", "bwt", "fwt", "forgetting"):
        assert block[key] == pytest.approx(expected[key], abs=1e-12)
    assert block["acc"] == pytest.approx((0.625 + 52 / 60) / 2)
    assert block["bwt"] == pytest.approx(-0.25)
    assert block["forgetting"] == pytest.approx(0.25)
    assert block["forgetting_per_task"] == pytest.approx([0.25])
    assert block["fwt"] == pytest.approx(0.1)
    assert block["final_task_accuracy"] == pytest.approx(POOLED_R[1])
    assert block["final_acc"] == pytest.approx(block["acc"])
    assert block["ensemble_task_accuracy"] == pytest.approx([0.8, 53 / 60])
    assert block["ensemble_acc"] == pytest.approx((0.8 + 53 / 60) / 2)
    assert block["lr_mean_per_round"] == pytest.approx([LR] * ROUNDS)
    assert block["multipliers"] == [1.0] * ROUNDS

    rows = block["clients"]
    assert [row["partition_id"] for row in rows] == [0, 1, 2]
    assert [row["task_ends"] for row in rows] == [[5, 10], [7, 10], [9, 10]]
    own = {pid: [HISTORY[pid][r] for r in sorted(HISTORY[pid])] for pid in range(3)}
    for row in rows:
        pid = row["partition_id"]
        assert row["R"] == own[pid]
        summary = continual.summary(own[pid], strategy.task_baseline[pid])
        assert row["acc"] == pytest.approx(summary["acc"])
        assert row["bwt"] == pytest.approx(summary["bwt"])
        assert row["fwt"] == pytest.approx(summary["fwt"])
        assert row["forgetting"] == pytest.approx(summary["forgetting"])
    assert rows[2]["bwt"] == pytest.approx(0.5 - 1.0)  # row 0 from round 8, not the filler


def test_round_lines_carry_the_task_and_the_task_accuracies(continual_run):
    strategy, recorder = continual_run
    recorder.start_strategy("fedavg")
    line = recorder.round_done("fedavg", strategy, 7)
    written = [x for x in read_log(recorder.run_dir / "rounds.jsonl") if is_round(x)][0]
    assert written == line
    rows = {row["partition_id"]: row for row in line["clients"]}
    assert {pid: row["task"] for pid, row in rows.items()} == {0: 1, 1: 0, 2: 0}
    assert rows[1]["task_accuracy"] == [0.8, 0.2]
    assert rows[0]["task_accuracy"] == [0.5, 0.5]
    missed = recorder.round_done("fedavg", strategy, 9)["clients"][2]
    assert missed["task"] is None and missed["task_accuracy"] is None


# -- state -----------------------------------------------------------------------------------


def test_state_dict_keeps_the_continual_fields_through_json(make_clients):
    cfg = make_cfg(**PHASES)
    clients = make_clients([EXAMPLES] * 3)
    strategy = build_strategy("fedavg+phases", cfg, clients)
    sent(strategy, 6)
    strategy.rounds[6].task = {0: 1, 2: 1}
    strategy.rounds[6].task_accuracy = {0: [0.6, 0.8], 2: [-1.0, 0.5]}
    strategy.rounds[6].task_examples = {0: [10, 30], 2: [0, 10]}
    strategy.task_baseline = {0: [0.1, 0.0], 2: [0.2, 0.3]}
    strategy.task_ensemble = {1: [0.7, 0.9]}
    strategy.ensemble_examples = {1: [20, 20]}

    state = json.loads(json.dumps(strategy.state_dict()))  # keys become strings
    again = build_strategy("fedavg+phases", cfg, clients)
    again.load_state_dict(state)

    assert list(again.rounds) == [6]
    assert again.rounds[6].task == {0: 1, 2: 1}
    assert again.rounds[6].task_accuracy == {0: [0.6, 0.8], 2: [-1.0, 0.5]}
    assert again.rounds[6].schedule_factor == pytest.approx(dict.fromkeys(range(3), 0.3))
    assert again.rounds[6].lr == strategy.rounds[6].lr  # older per-client logs: int keys too
    assert list(again.rounds[6].lr) == [0, 1, 2]
    assert again.task_baseline == {0: [0.1, 0.0], 2: [0.2, 0.3]}
    assert again.task_ensemble == {1: [0.7, 0.9]}
    assert again.ensemble_examples == {1: [20, 20]}
    assert again.schedule(7) == strategy.schedule(7)


def test_a_continual_round_weighs_each_client_by_the_examples_it_trained_on(make_clients):
    # Client 0 trained on 30 examples of its task, client 1 on 10, client 2 on none (it holds
    # no example of the task): the average is (30 * 1 + 10 * 5) / 40 = 2 and client 2 is logged.
    strategy = build_strategy("fedavg", make_cfg(), make_clients([EXAMPLES] * 3))
    messages = sent(strategy, 1)
    replies = []
    for pid, (examples, value) in enumerate(((30, 1.0), (10, 5.0), (0, 100.0))):
        metrics = {keys.NUM_EXAMPLES: examples, keys.TRAIN_LOSS: 1.0, keys.TASK: 0}
        content = RecordDict(
            {
                keys.ARRAYS: ArrayRecord([np.full(2, value)]),
                keys.METRICS: MetricRecord(metrics),
            }
        )
        replies.append(Message(content, reply_to=messages[pid]))
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None
    np.testing.assert_allclose(arrays.to_numpy_ndarrays()[0], [2.0, 2.0])
    assert strategy.rounds[1].aggregation_weight == {0: 30.0, 1: 10.0}
    assert strategy.rounds[1].errors == [
        {"partition_id": 2, "reason": "no examples of its current task"}
    ]


def test_a_reported_task_size_is_capped_by_the_clients_examples_and_replay(make_clients):
    strategy = build_strategy(
        "fedavg+replay", make_cfg(replay_size=7), make_clients([EXAMPLES] * 3)
    )
    messages = sent(strategy, 1)
    replies = []
    for pid in range(3):
        metrics = {keys.NUM_EXAMPLES: 10**6, keys.TRAIN_LOSS: 1.0, keys.TASK: 0}
        content = RecordDict(
            {keys.ARRAYS: ArrayRecord([np.zeros(2)]), keys.METRICS: MetricRecord(metrics)}
        )
        replies.append(Message(content, reply_to=messages[pid]))
    strategy.aggregate_train(1, replies)
    assert strategy.rounds[1].aggregation_weight == dict.fromkeys(range(3), EXAMPLES + 7.0)


def test_rounds_jsonl_writes_null_for_a_task_without_test_examples(tmp_path, make_clients):
    clients = make_clients([EXAMPLES] * 3)
    cfg = make_cfg()
    strategy = build_strategy("fedavg", cfg, clients)
    strategy.rounds[1] = RoundLog(task_accuracy={0: [0.5, -1.0], 1: [0.25, 0.75]})
    recorder = RunRecorder(tmp_path, cfg, clients)
    line = recorder.round_done("fedavg", strategy, 1)
    recorder.close()
    rows = {row["partition_id"]: row["task_accuracy"] for row in line["clients"]}
    assert rows == {0: [0.5, None], 1: [0.25, 0.75], 2: None}


def test_task_incremental_probes_read_the_model_through_the_tasks_head():
    # The received loss (q-FFL's F_k) and the noise estimate look at the task's own examples
    # through its head: the replayed examples of task 0 and the logits of classes 0-4 are out.
    cfg = make_cfg(stream="task-incremental", replay_size=20, estimator="loss-margin")
    tasks, _ = continual_task.client_stream(cfg, tabular.client_data(cfg, 1), 1)
    received = tabular.build_model(cfg, seed=11)  # what client_message sends
    head = streams.task_mask(tasks[1].classes)
    expected_loss, _ = tabular.evaluate(received, tasks[1].x_train, tasks[1].y_train, head)
    unmasked_loss, _ = tabular.evaluate(received, tasks[1].x_train, tasks[1].y_train)
    assert expected_loss < unmasked_loss  # the head matters: 5 classes instead of 10
    msg = client_message(
        cfg,
        MessageType.TRAIN,
        **{
            keys.LR: 0.05,
            keys.SERVER_ROUND: 6,
            keys.CLIENT_BATCH_SIZE: 16,
            keys.REPLAY: True,
            keys.ESTIMATE_NOISE: True,
        },
    )
    metrics = client_app.train(msg, client_context(1)).content.metric_records[keys.METRICS]
    assert metrics[keys.TRAIN_LOSS] == pytest.approx(expected_loss, rel=1e-6)
    own = replace(
        tabular.client_data(cfg, 1),
        x_train=tasks[1].x_train,
        y_train=tasks[1].y_train,
        y_train_clean=tasks[1].y_train,
    )
    masked = tabular.HeadMasked(received, head)
    expected_estimate = tabular.estimate_noise(masked, own, "loss-margin")
    assert metrics[keys.NOISE_ESTIMATE] == pytest.approx(expected_estimate, rel=1e-6)
    assert metrics[keys.NUM_EXAMPLES] == len(tasks[1].y_train) + 20  # training has the replay


def test_a_clients_stream_is_built_once_per_process():
    cfg = make_cfg(stream="rotated")
    data = tabular.client_data(cfg, 0)
    first, _ = continual_task.client_stream(cfg, data, 0)
    again, _ = continual_task.client_stream(cfg, data, 0)
    assert again is first  # rotated images are not recomputed for every message
    other, _ = continual_task.client_stream(make_cfg(stream="rotated", rotation_max=45.0), data, 0)
    assert other is not first
    assert not np.array_equal(other[-1].x_train, first[-1].x_train)
