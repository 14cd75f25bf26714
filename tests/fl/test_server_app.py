"""fedlr.fl.server_app on an in-process grid: the real ClientApp, no engine.

The resume tests kill a run at many points (inside the query round, mid-round, right after a
checkpoint, in the last round), resume it in the same directory on a grid whose node ids are
new, and compare its ``results.json`` and ``rounds.jsonl`` with those of a run never stopped.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord

from fedlr.config import resolve
from fedlr.fl import checkpoint as ckpt
from fedlr.fl.server_app import query_clients, resume_config, run_federation
from fedlr.fl.strategy import build_strategy

from .conftest import InProcessGrid, Killed
from fedlr.analysis import is_round, read_log, summarize
from fedlr.report.summary import load_run

ROUNDS, EVERY = 4, 2
CFG = resolve(
    overrides={
        "num-clients": 4,
        "noisy-clients": 2,
        "hard-clean-clients": 1,
        "noise-rate-min": 0.3,
        "noise-rate-max": 0.8,
        "hidden": 16,
        "local-epochs": 1,
        "batch-size": 32,
        "warmup-rounds": 1,
        "num-server-rounds": ROUNDS,
        "checkpoint-every": EVERY,
        "strategies": "fedavg,noise-adaptive,qfedavg",
    }
)
# send_and_receive calls: 1 query, then (train, evaluate) per round, strategy after strategy.
CALLS = 1 + 2 * ROUNDS * 3


@pytest.fixture(autouse=True, scope="module")
def restore_threads():
    """The ClientApp sets torch to one thread per process; give the rest of the session back."""
    saved = torch.get_num_threads()
    yield
    torch.set_num_threads(saved)


def without_timing(run_dir: Path) -> tuple[dict, list[dict]]:
    """results.json and rounds.jsonl of a run, minus the wall-clock fields."""
    results = json.loads((run_dir / "results.json").read_text())
    for entry in results["strategies"].values():
        del entry["elapsed_s"]
    lines = read_log(run_dir / "rounds.jsonl")  # rounds and events
    for line in lines:
        line.pop("elapsed_s", None)  # a round's and the done event's
    return results, lines


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    run_federation(InProcessGrid(4), CFG, run_dir)
    return run_dir


def test_a_finished_run_leaves_its_final_checkpoint(uninterrupted: Path) -> None:
    saved = ckpt.load(uninterrupted)
    assert saved is not None
    assert saved.done == ["fedavg", "noise-adaptive", "qfedavg"]
    assert (saved.strategy, saved.round) == ("qfedavg", ROUNDS)
    assert [c["partition_id"] for c in saved.clients] == [0, 1, 2, 3]
    assert not (uninterrupted / "checkpoint.pt.tmp").exists()
    lines = without_timing(uninterrupted)[1]
    assert len([line for line in lines if is_round(line)]) == 3 * ROUNDS
    events = [(line["strategy"], line["event"]) for line in lines if "event" in line]
    assert events == [(s, kind) for s in saved.done for kind in ("start", "done")]


def test_results_json_is_the_summary_of_rounds_jsonl(uninterrupted: Path, tmp_path: Path) -> None:
    """One summary: results.json is summarize(rounds.jsonl); a killed run's log gives the same."""
    results = json.loads((uninterrupted / "results.json").read_text())["strategies"]
    lines = read_log(uninterrupted / "rounds.jsonl")
    assert json.loads(json.dumps(summarize(lines, CFG))) == results
    # Cut off after noise-adaptive's round 3: fedavg as before, noise-adaptive from 3 rounds.
    cut = next(
        i
        for i, line in enumerate(lines)
        if (line["strategy"], line.get("round")) == ("noise-adaptive", 3)
    )
    killed = summarize(lines[: cut + 1], CFG)
    assert list(killed) == ["fedavg", "noise-adaptive"]
    assert json.loads(json.dumps(killed["fedavg"])) == results["fedavg"]
    partial = killed["noise-adaptive"]
    assert len(partial["accuracy_per_round"]) == 3
    assert partial["accuracy_per_round"] == results["noise-adaptive"]["accuracy_per_round"][:3]
    assert partial["elapsed_s"] == lines[cut]["elapsed_s"]  # its last round's, no done event
    # The report of that killed run shows the same summary.
    (tmp_path / "rounds.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines[: cut + 1]))
    (tmp_path / "config.toml").write_text((uninterrupted / "config.toml").read_text())
    run = load_run(tmp_path)
    assert run["strategies"] == ["fedavg", "noise-adaptive"] and not run["finished"]
    assert run["summaries"]["noise-adaptive"]["round"] == 3
    assert run["summaries"]["fedavg"]["fairness"] == pytest.approx(results["fedavg"]["fairness"])


@pytest.mark.parametrize(
    "kill_at",
    [
        1,  # in the query round: nothing saved yet
        4,  # fedavg round 2, training: the checkpoint after round 2 not written yet
        6,  # fedavg round 3, training: right after the round-2 checkpoint
        9,  # fedavg round 4, evaluation: the last round, before the strategy's end
        13,  # noise-adaptive round 2, evaluation: EMA state and rates in play
        16,  # noise-adaptive round 4, training
        CALLS,  # qfedavg's very last call
    ],
)
def test_killed_then_resumed_equals_uninterrupted(
    tmp_path: Path, uninterrupted: Path, kill_at: int
) -> None:
    with pytest.raises(Killed):
        run_federation(InProcessGrid(4, kill_at=kill_at), CFG, tmp_path)
    # A restarted federation: the same partitions behind new node ids.
    resumed_grid = InProcessGrid(4, base=5000)
    run_federation(resumed_grid, resume_config(tmp_path), tmp_path, resume=True)
    assert without_timing(tmp_path) == without_timing(uninterrupted)
    # Round g (1..12, strategy after strategy) uses calls 2g and 2g + 1. The resumed run redoes
    # only what came after the last checkpoint: fewer than EVERY completed rounds are lost.
    completed = max(0, (kill_at - 2) // 2)
    checkpointed = completed - completed % EVERY
    assert (resumed_grid.calls - 1) // 2 == 3 * ROUNDS - checkpointed


def test_resume_refuses_other_data(tmp_path: Path) -> None:
    with pytest.raises(Killed):
        run_federation(InProcessGrid(4, kill_at=6), CFG, tmp_path)
    other = {**CFG, "seed": 1}  # another split: the clients now hold other partitions
    with pytest.raises(RuntimeError, match="do not hold the data the checkpoint was made with"):
        run_federation(InProcessGrid(4), other, tmp_path, resume=True)


def test_resume_config_needs_a_run_directory(tmp_path: Path) -> None:
    from fedlr.config import ConfigError

    with pytest.raises(ConfigError, match="has no config.toml"):
        resume_config(tmp_path)


class RestartingGrid(InProcessGrid):
    """Partition 2's SuperNode restarts (a new node id) after send_and_receive call ``at``."""

    def __init__(self, at: int) -> None:
        super().__init__(4)
        self.at = at

    def send_and_receive(self, messages, *, timeout=None):
        replies = super().send_and_receive(messages, timeout=timeout)
        if self.calls == self.at:
            (old,) = [n for n, pid in self.partitions.items() if pid == 2]
            self.partitions[9999] = self.partitions.pop(old)
        return replies


def test_a_node_restarted_with_a_new_id_rejoins(tmp_path: Path, uninterrupted: Path) -> None:
    # Restarted after fedavg's round 2 (call 5): the next round asks node 9999 who it is, finds
    # partition 2 and goes on with it; nothing is missed, so the run equals the one never stopped.
    grid = RestartingGrid(at=5)
    run_federation(grid, CFG, tmp_path)
    assert 9999 in grid.partitions
    results, lines = without_timing(tmp_path)
    assert all(line["missing"] == [] for line in lines if is_round(line))
    assert (results, lines) == without_timing(uninterrupted)
    # One query per strategy for the new node (each strategy started from the first node ids).
    assert grid.calls == CALLS + 3


def test_a_stranger_is_asked_once_and_ignored() -> None:
    grid = InProcessGrid(4)
    strategy = build_strategy("fedavg", CFG, query_clients(grid, CFG))
    grid.partitions[4242] = 1  # a node claims partition 1 with other data (another config)
    grid.num_nodes = 5
    calls = grid.calls
    strategy.cfg = {**CFG, "num-clients": 5}  # what the stranger is told; it holds other data
    assert strategy.adopt_restarted_nodes(grid, grid.get_node_ids()) == []
    assert strategy.adopt_restarted_nodes(grid, grid.get_node_ids()) == []
    assert grid.calls == calls + 1  # asked once, then left alone
    assert 4242 in strategy.strangers and strategy.by_partition[1].node_id != 4242
    sent = strategy.configure_evaluate(1, ArrayRecord(), ConfigRecord(dict(CFG)), grid)
    assert sorted(m.metadata.dst_node_id for m in sent) == sorted(strategy.clients)  # not 4242


class SilentGrid(InProcessGrid):
    """Node 4242 is listed as connected but never answers (dead, not yet marked offline)."""

    def get_node_ids(self) -> list[int]:
        return [*super().get_node_ids(), 4242]

    def send_and_receive(self, messages, *, timeout=None):
        return super().send_and_receive(
            [m for m in messages if m.metadata.dst_node_id != 4242], timeout=timeout
        )


def test_a_node_that_never_answers_is_asked_once() -> None:
    grid = SilentGrid(4)
    strategy = build_strategy("fedavg", CFG, query_clients(grid, CFG))
    calls = grid.calls
    for _ in range(2):
        assert strategy.adopt_restarted_nodes(grid, grid.get_node_ids()) == []
    assert grid.calls == calls + 1 and 4242 in strategy.strangers


def test_a_restarted_node_waits_until_its_old_node_is_gone() -> None:
    # Without node auth a restarted SuperNode has a new id, while the SuperLink still lists the
    # dead one for up to two missed heartbeats: the new node takes over once the old is gone.
    grid = InProcessGrid(4)
    strategy = build_strategy("fedavg", CFG, query_clients(grid, CFG))
    old = strategy.by_partition[1].node_id
    grid.partitions[4242] = 1
    calls = grid.calls
    assert strategy.adopt_restarted_nodes(grid, grid.get_node_ids()) == []  # old still listed
    del grid.partitions[old]
    assert strategy.adopt_restarted_nodes(grid, grid.get_node_ids()) == [1]
    assert grid.calls == calls + 1  # asked once
    assert strategy.by_partition[1].node_id == 4242 and old not in strategy.clients


def test_flwr_run_entry_point_resumes_from_the_run_config(tmp_path: Path, uninterrupted: Path):
    # `flwr run . --run-config "resume='RUN_DIR'"`: Flower calls `main` with that run config.
    from flwr.app import Context, RecordDict

    from fedlr.fl import server_app

    with pytest.raises(Killed):
        run_federation(InProcessGrid(4, kill_at=11), CFG, tmp_path)
    context = Context(
        run_id=1,
        node_id=1,
        node_config={},
        state=RecordDict(),
        run_config={"resume": str(tmp_path), "num-server-rounds": 1},  # other keys: ignored
    )
    server_app.main(InProcessGrid(4, base=7000), context)
    assert without_timing(tmp_path) == without_timing(uninterrupted)


class DeadNodeGrid(InProcessGrid):
    """Node 4242 is a dead node the SuperLink still lists: its query comes back as an error."""

    def get_node_ids(self) -> list[int]:
        return [*super().get_node_ids(), 4242]

    def send_and_receive(self, messages, *, timeout=None):
        from flwr.app import Error, Message

        messages = list(messages)
        dead = [m for m in messages if m.metadata.dst_node_id == 4242]
        replies = super().send_and_receive([m for m in messages if m not in dead], timeout=timeout)
        return [*replies, *(Message(error=Error(0, "node unavailable"), reply_to=m) for m in dead)]


def test_the_query_round_goes_ahead_when_the_others_cover_every_partition() -> None:
    clients = query_clients(DeadNodeGrid(4), CFG)
    assert sorted(c.partition_id for c in clients) == [0, 1, 2, 3]


def test_the_query_round_fails_when_a_partition_is_lost() -> None:
    grid = DeadNodeGrid(4)
    del grid.partitions[2000]  # partition 0's node is gone; only the dead one is left
    with pytest.raises(RuntimeError, match="node 4242 failed the query round: node unavailable"):
        query_clients(grid, {**CFG})


# A continual run: 2 permuted tasks over 4 rounds. Calls: 1 query, then per strategy 1 baseline
# evaluation, (train, evaluate) per round and 1 final evaluation with the snapshot ensemble.
CONTINUAL_CFG = resolve(
    overrides={
        **{k: CFG[k] for k in ("num-clients", "hidden", "local-epochs", "batch-size")},
        "noisy-clients": 0,
        "hard-clean-clients": 0,
        "partitioner": "iid",
        "num-server-rounds": ROUNDS,
        "checkpoint-every": EVERY,
        "stream": "permuted",
        "num-tasks": 2,
        "replay-size": 10,
        "strategies": "fedavg,fedavg+phases+replay",
    }
)
CONTINUAL_CALLS = 1 + 2 * (1 + 2 * ROUNDS + 1)


@pytest.fixture(scope="module")
def continual_uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("continual")
    run_federation(InProcessGrid(4), CONTINUAL_CFG, run_dir)
    return run_dir


@pytest.mark.parametrize(
    "kill_at",
    [
        2,  # fedavg's baseline evaluation
        7,  # fedavg round 3, training: after the round-2 checkpoint and snapshot
        11,  # fedavg's final evaluation with the snapshot ensemble
        12,  # the second strategy's baseline evaluation
        CONTINUAL_CALLS,  # the last ensemble evaluation
    ],
)
def test_a_continual_run_killed_then_resumed_equals_uninterrupted(
    tmp_path: Path, continual_uninterrupted: Path, kill_at: int
) -> None:
    with pytest.raises(Killed):
        run_federation(InProcessGrid(4, kill_at=kill_at), CONTINUAL_CFG, tmp_path)
    run_federation(InProcessGrid(4, base=5000), resume_config(tmp_path), tmp_path, resume=True)
    resumed, uninterrupted = without_timing(tmp_path), without_timing(continual_uninterrupted)
    assert resumed == uninterrupted
    block = resumed[0]["strategies"]["fedavg+phases+replay"]["continual"]
    assert block["snapshot_rounds"] == [2, 4] and block["ensemble_acc"] is not None
    for name in ("fedavg", "fedavg+phases+replay"):
        for server_round in (2, 4):
            kept = ckpt.load_snapshot(tmp_path, name, server_round)
            again = ckpt.load_snapshot(continual_uninterrupted, name, server_round)
            assert kept is not None and again is not None
            for key, array in again.items():
                assert kept[key].numpy().tobytes() == array.numpy().tobytes()


class HostileGrid(InProcessGrid):
    """Partition 3 answers every train message with a wrong-shaped array and extra records."""

    def send_and_receive(self, messages, *, timeout=None):
        import numpy as np
        from flwr.app import MetricRecord

        replies = super().send_and_receive(messages, timeout=timeout)
        for reply in replies:
            if self.partitions.get(reply.metadata.src_node_id) != 3 or reply.has_error():
                continue
            arrays = reply.content.array_records.get("arrays")
            if arrays is None:  # the query and evaluate replies stay honest
                continue
            first = next(iter(arrays))
            arrays[first] = type(arrays[first])(np.ones(1, np.float32))
            reply.content["more"] = ArrayRecord([np.full(3, 1e9, np.float32)])
            reply.content["junk"] = MetricRecord({"x": 1.0})
        return replies


def test_a_hostile_client_is_dropped_every_round_and_the_run_completes(tmp_path: Path) -> None:
    cfg = {**CFG, "strategies": "fedavg,noise-adaptive", "checkpoint-every": 0}
    run_federation(HostileGrid(4), cfg, tmp_path)

    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["strategies"]) == {"fedavg", "noise-adaptive"}
    lines = [x for x in read_log(tmp_path / "rounds.jsonl") if is_round(x)]
    assert len(lines) == 2 * ROUNDS
    for line in lines:
        (error,) = line["errors"]
        assert error["partition_id"] == 3
        assert "expected shape" in error["reason"], error
        assert all(c["accuracy"] is not None for c in line["clients"])  # evaluated as usual
