"""examples/: a user's own task, model and Flower app, each run as its docstring or README says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
HEART = ROOT.parent / "shared" / "data" / "heart_disease"
ENV = dict(
    os.environ,
    FLWR_TELEMETRY_ENABLED="0",
    FLWR_DISABLE_UPDATE_CHECK="1",
    FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
    MPLBACKEND="Agg",
)


def simulate(folder: Path, out: Path, *settings: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "fedlr.cli", "simulate", "scenario.toml", "--out", str(out)]
    for setting in settings:
        args += ["--set", setting]
    return subprocess.run(
        args, cwd=folder, env=ENV, capture_output=True, text=True, timeout=300, check=False
    )


def results(out: Path) -> dict:
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    for name in ("config.toml", "rounds.jsonl", "results.json", "report.md"):
        assert (run_dir / name).stat().st_size > 0, name
    return json.loads((run_dir / "results.json").read_text())


@pytest.mark.slow
def test_a_users_cnn_task_on_digit_images(tmp_path: Path) -> None:
    done = simulate(EXAMPLES / "digits_cnn", tmp_path, "num-server-rounds=1")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    run = results(tmp_path)
    clients = run["strategies"]["noise-adaptive"]["clients"]
    assert [c["partition_id"] for c in clients] == [0, 1, 2, 3, 4]
    assert [c["role"] for c in clients] == ["noisy", "noisy", "clean", "clean", "clean"]
    assert all(0 <= c["accuracy"] <= 1 for c in clients)


@pytest.mark.slow
@pytest.mark.skipif(not HEART.is_dir(), reason="../shared/data/heart_disease is not here")
def test_a_users_logistic_regression_on_the_heart_disease_files(tmp_path: Path) -> None:
    done = simulate(EXAMPLES / "heart_logreg", tmp_path, "num-server-rounds=1", "strategies=fedavg")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    run = results(tmp_path)
    clients = run["strategies"]["fedavg"]["clients"]
    assert [c["num_examples"] for c in clients] == [227, 220, 92, 150]
    # real sites: no truth, so no role or true noise in their rows
    assert not any("role" in c or "noise_true" in c for c in clients)


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ("task:absent", "task: module 'task' has no attribute 'absent'"),
        ("no_such_module:make", "task: cannot import 'no_such_module'"),
        ("builtins:dict", "task: builtins:dict returned dict, which lacks client_data"),
    ],
)
def test_a_bad_task_is_one_line_and_exit_2(tmp_path: Path, task: str, message: str) -> None:
    done = simulate(EXAMPLES / "digits_cnn", tmp_path, f"task={task}")
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_users_own_flower_app_gives_the_noisy_client_the_smallest_rate() -> None:
    """The library program of docs/library.md, unchanged, on Flower's simulation engine (Ray)."""
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "flower_app" / "app.py")],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rounds = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [r["round"] for r in rounds] == [1, 2, 3, 4, 5, 6]
    # the user's own metrics reached fedlr's round log and Flower's aggregate
    hospital = {int(m["hospital"]): node for node, m in rounds[0]["train_metrics"].items()}
    assert sorted(hospital) == [0, 1, 2]
    assert all(0.0 <= m["train-accuracy"] <= 1.0 for m in rounds[-1]["train_metrics"].values())
    assert all(0.0 <= r["aggregated"]["train-accuracy"] <= 1.0 for r in rounds)
    noisy = hospital[2]
    for line in rounds:
        rates = line["lr"]
        assert sorted(rates) == sorted(hospital.values())
        if line["round"] <= 2:  # warm-up: uniform rates
            assert set(rates.values()) == {0.1}
        else:
            others = [rate for node, rate in rates.items() if node != noisy]
            assert rates[noisy] < min(others), line
            assert line["noise_estimate"][noisy] > max(
                v for node, v in line["noise_estimate"].items() if node != noisy
            )
