"""Batch-size coupling as a user runs it: `fedlr simulate` on Flower's engine, 4 clients, 3 rounds.

Clients train on batches 8, 16, 32 and 64 (median 24). ``noise-adaptive+coupled`` composes the
noise-inverse rate with the linear coupling b / 24; ``fedavg+grow-batch`` turns the decay of round
3 (x 0.2) into batches x 5. The server measures the gradient noise scale every round.
"""

import json
import math
from pathlib import Path

import pytest

from .test_end_to_end import finished_run, round_lines

pytestmark = pytest.mark.slow

BATCHES = [8, 16, 32, 64]
SETTINGS = [
    "num-clients=4",
    "noisy-clients=2",
    "hard-clean-clients=0",
    "num-server-rounds=3",
    "warmup-rounds=1",
    "local-epochs=1",
    "estimator=oracle",
    "client-batch-sizes=8,16,32,64",
    "lr-decay-rounds=3",
    "measure-noise-scale=true",
    "strategies=fedavg+grow-batch,noise-adaptive+coupled",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return finished_run(tmp_path_factory, "e2e-coupling", *SETTINGS)


@pytest.fixture(scope="module")
def lines(run_dir: Path) -> dict[tuple[str, int], dict]:
    return round_lines(run_dir)


def test_coupled_rates_follow_each_clients_batch(lines) -> None:
    for server_round in (1, 2, 3):
        clients = lines["noise-adaptive+coupled", server_round]["clients"]
        assert [c["batch_size"] for c in clients] == BATCHES
        assert [c["coupling_factor"] for c in clients] == pytest.approx([b / 24 for b in BATCHES])
    # round 1 is a warm-up round (uniform noise factor): lr = 0.1 * b / 24
    warm = lines["noise-adaptive+coupled", 1]["clients"]
    assert [c["lr"] for c in warm] == pytest.approx([0.1 * b / 24 for b in BATCHES])
    # round 2: the noise factor multiplies in; the noisier of the two noisy clients gets less
    later = lines["noise-adaptive+coupled", 2]["clients"]
    noise_part = [c["lr"] / (0.1 * c["coupling_factor"]) for c in later]
    noisy = [i for i, c in enumerate(later) if c["noise_true"] > 0]
    clean = [i for i, c in enumerate(later) if c["noise_true"] == 0]
    assert noise_part[clean[0]] == pytest.approx(noise_part[clean[1]])
    assert max(noise_part[i] for i in noisy) < noise_part[clean[0]]


def test_grow_batch_multiplies_batches_instead_of_decaying_the_rate(lines, run_dir) -> None:
    results = json.loads((run_dir / "results.json").read_text())
    sizes = {
        c["partition_id"]: c["num_examples"]
        for c in results["strategies"]["fedavg+grow-batch"]["clients"]
    }
    before = lines["fedavg+grow-batch", 2]["clients"]
    after = lines["fedavg+grow-batch", 3]["clients"]
    assert [c["batch_size"] for c in before] == BATCHES
    assert [c["batch_size"] for c in after] == [
        min(5 * b, sizes[c["partition_id"]]) for b, c in zip(BATCHES, after, strict=True)
    ]
    for c in after:  # lr / B is the decay schedule's: 0.1 * 0.2 / b
        b = BATCHES[c["partition_id"]]
        assert c["lr"] / c["batch_size"] == pytest.approx(0.1 * 0.2 / b)
        # one epoch of the client's batches: the steps the client reported
        assert c["steps"] == math.ceil(sizes[c["partition_id"]] / c["batch_size"])
    assert lines["fedavg+grow-batch", 3]["steps_mean"] < lines["fedavg+grow-batch", 2]["steps_mean"]


def test_the_server_measures_the_noise_scale_every_round(lines) -> None:
    for line in lines.values():
        noise = line["noise_scale"]
        # each client's gradient is taken on one batch of the size it trains on this round
        assert noise["clients"] == 4
        assert noise["examples"] == sum(c["batch_size"] for c in line["clients"])
        assert math.isfinite(noise["g2"]) and math.isfinite(noise["trace"])
        assert noise["trace"] > 0  # four different batches of one model never agree exactly


def test_the_report_shows_batches_and_noise_scale(run_dir: Path) -> None:
    report = (run_dir / "report.md").read_text()
    assert "## Batch size and noise scale" in report
    for name in ("noise_scale.png", "loss_vs_steps.png", "rate_vs_batch.png"):
        assert (run_dir / name).stat().st_size > 0, name
