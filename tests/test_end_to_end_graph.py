"""A federated GNN as a user runs it: `fedlr simulate` on Flower's engine, karate club, 2 rounds."""

import json
from pathlib import Path

import pytest

from fedlr.config import resolve
from fedlr.tasks import graph

from .test_end_to_end import simulate
from fedlr.analysis import is_round, read_log

pytestmark = pytest.mark.slow

STRATEGIES = [
    "fedavg",
    "fedavg+degree",
    "fedavg+adam",
    "fedavg+adagrad",
    "fedavg+adam+degree",
    "noise-adaptive+degree",
]
SETTINGS = {
    "dataset": "karate",
    "num-clients": 2,
    "noisy-clients": 1,
    "hard-clean-clients": 0,
    "noise-rate-min": 0.5,
    "noise-rate-max": 0.5,
    "estimator": "oracle",  # the noisy client's rate is then known by hand
    "warmup-rounds": 1,
    "num-server-rounds": 2,
    "local-epochs": 3,
    "embedding-dim": 4,
    "strategies": ",".join(STRATEGIES),
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp_path = tmp_path_factory.mktemp("e2e-graph")
    done = simulate(tmp_path, *(f"{key}={value}" for key, value in SETTINGS.items()))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (path,) = (tmp_path / "runs").iterdir()
    return path


def test_every_strategy_runs_both_rounds(run_dir: Path) -> None:
    lines = [x for x in read_log(run_dir / "rounds.jsonl") if is_round(x)]
    assert [(line["strategy"], line["round"]) for line in lines] == [
        (name, r) for name in STRATEGIES for r in (1, 2)
    ]
    results = json.loads((run_dir / "results.json").read_text())
    assert list(results["strategies"]) == STRATEGIES
    optimizers = {name: entry["optimizer"] for name, entry in results["strategies"].items()}
    assert optimizers == {
        "fedavg": "sgd",
        "fedavg+degree": "sgd",
        "fedavg+adam": "adam",
        "fedavg+adagrad": "adagrad",
        "fedavg+adam+degree": "adam",
        "noise-adaptive+degree": "sgd",
    }
    rules = {name: entry["degree"]["degree_rule"] for name, entry in results["strategies"].items()}
    assert rules == {name: "degree" in name for name in STRATEGIES}


def test_degree_quartiles_cover_every_test_node(run_dir: Path) -> None:
    cfg = resolve(overrides=SETTINGS)
    clients = graph.graph_run(cfg).clients
    test_nodes = sum(c.num_test for c in clients)
    assert test_nodes == 9  # ceil(0.25 * 34)
    for line in [x for x in read_log(run_dir / "rounds.jsonl") if is_round(x)]:
        fairness = line["degree_fairness"]
        assert fairness["nodes"] == test_nodes
        assert sum(fairness["bucket-size"]) == test_nodes
        # Pooled accuracy over nodes = the clients' accuracies weighted by their test nodes.
        clients_acc = {c["partition_id"]: c["accuracy"] for c in line["clients"]}
        pooled = sum(clients_acc[c.partition_id] * c.num_test for c in clients) / test_nodes
        assert fairness["accuracy"] == pytest.approx(pooled)


def test_noise_rates_compose_with_the_degree_rule(run_dir: Path) -> None:
    lines = [x for x in read_log(run_dir / "rounds.jsonl") if is_round(x)]
    last = next(x for x in lines if (x["strategy"], x["round"]) == ("noise-adaptive+degree", 2))
    lr = {c["partition_id"]: c["lr"] for c in last["clients"]}
    assert lr[0] < lr[1]  # partition 0 is the noisy one: a smaller rate after the warm-up
    uniform = next(x for x in lines if (x["strategy"], x["round"]) == ("fedavg+degree", 2))
    assert {c["lr"] for c in uniform["clients"]} == {0.1}


def test_gradient_diagnostic_before_and_after_scaling(run_dir: Path) -> None:
    results = json.loads((run_dir / "results.json").read_text())
    for entry in results["strategies"].values():
        slope = entry["degree"]["gradient_slope"]
        assert len(slope["before"]) == len(slope["after"]) == 2
        assert all(isinstance(value, float) for value in slope["before"] + slope["after"])
        profile = entry["degree"]["gradient_profile"]
        assert len(profile["degree"]) == len(profile["before"]) == len(profile["after"])
    # Round 1 runs at the same initial weights for every strategy: the same diagnostic.
    firsts = {
        entry["degree"]["gradient_slope"]["before"][0] for entry in results["strategies"].values()
    }
    assert len(firsts) == 1
