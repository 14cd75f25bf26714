"""Continual learning as a user runs it: `fedlr simulate` on Flower's engine, 3 clients, 2 tasks.

Split digits, class-incremental: task 0 holds classes 0-4, task 1 classes 5-9; each task gets 3
rounds at every client. ``fedavg`` keeps the rate; ``fedavg+phases+replay`` runs a cosine phase
per task (``schedule-warmup`` 1: it starts at its peak, then a cosine to 0: 1.0, 1.0, 0.5 of the
base rate) and mixes 30
examples of task 0 into task 1's training. The global model is kept after rounds 3 and 6, and
the snapshot ensemble is evaluated next to the final model.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from fedlr.metrics import continual

from .test_end_to_end import finished_run, round_lines

pytestmark = pytest.mark.slow

STRATEGIES = ("fedavg", "fedavg+phases+replay")
SETTINGS = [
    "num-clients=3",
    "partitioner=iid",
    "noisy-clients=0",
    "hard-clean-clients=0",
    "num-server-rounds=6",
    "local-epochs=1",
    "stream=class-incremental",
    "num-tasks=2",
    "schedule-warmup=1",
    "replay-size=30",
    "strategies=" + ",".join(STRATEGIES),
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return finished_run(tmp_path_factory, "e2e-continual", *SETTINGS)


@pytest.fixture(scope="module")
def lines(run_dir: Path) -> dict[tuple[str, int], dict]:
    return round_lines(run_dir)


@pytest.fixture(scope="module")
def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def test_clients_train_on_the_task_of_the_round(lines) -> None:
    for name in STRATEGIES:
        for server_round in range(1, 7):
            tasks = [c["task"] for c in lines[name, server_round]["clients"]]
            assert tasks == [0 if server_round <= 3 else 1] * 3


def test_phases_rewarm_and_redecay_per_task(lines) -> None:
    rates = [lines["fedavg+phases+replay", r]["clients"][0]["lr"] for r in range(1, 7)]
    assert rates == pytest.approx([0.1, 0.1, 0.05, 0.1, 0.1, 0.05])
    constant = [lines["fedavg", r]["clients"][0]["lr"] for r in range(1, 7)]
    assert constant == pytest.approx([0.1] * 6)


def test_replay_adds_examples_of_the_first_task(lines) -> None:
    # one epoch at batch 16: the replay of 30 examples adds ceil-steps in task 1 only
    for server_round in (2, 5):
        plain = [c["steps"] for c in lines["fedavg", server_round]["clients"]]
        replayed = [c["steps"] for c in lines["fedavg+phases+replay", server_round]["clients"]]
        if server_round == 2:
            assert replayed == plain
        else:
            assert all(r > p for r, p in zip(replayed, plain, strict=True))


def test_accuracy_matrix_and_metrics(results, lines) -> None:
    for name in STRATEGIES:
        block = results["strategies"][name]["continual"]
        R = block["R"]
        assert len(R) == 2 and all(len(row) == 2 for row in R)
        # after task 0 the model has never seen classes 5-9: it is far better on task 0
        assert R[0][0] > 0.8 and R[0][1] < 0.2
        # the rows are the pooled evaluations of rounds 3 and 6 (iid clients: plain means of
        # each client's row weighted by its test examples)
        assert block["snapshot_rounds"] == [3, 6]
        expected = continual.summary(R, block["baseline"])
        for key in ("acc", "bwt", "fwt", "forgetting"):
            assert block[key] == pytest.approx(expected[key])
        assert block["final_acc"] == pytest.approx(sum(R[1]) / 2)
        assert block["ensemble_acc"] is not None and 0.0 <= block["ensemble_acc"] <= 1.0
        assert [c["partition_id"] for c in block["clients"]] == [0, 1, 2]
    # each client's R: its own evaluations after rounds 3 and 6 (the task ends), as logged in
    # rounds.jsonl; the pooled R lies between the clients' entries (a weighted mean)
    for name in STRATEGIES:
        block = results["strategies"][name]["continual"]
        for client in block["clients"]:
            pid = client["partition_id"]
            rows = [lines[name, r]["clients"][pid]["task_accuracy"] for r in (3, 6)]
            np.testing.assert_allclose(client["R"], rows)
        for i in range(2):
            for j in range(2):
                column = [c["R"][i][j] for c in block["clients"]]
                assert min(column) - 1e-9 <= block["R"][i][j] <= max(column) + 1e-9


def test_snapshots_are_kept_at_task_ends(run_dir) -> None:
    for name in STRATEGIES:
        kept = sorted(p.name for p in (run_dir / "snapshots" / name).iterdir())
        assert kept == ["round-0003.pt", "round-0006.pt"]
