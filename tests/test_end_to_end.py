"""`fedlr simulate` as a user runs it: Flower's simulation engine, 4 clients, 2 rounds."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .fl.test_server_app import without_timing
from fedlr.analysis import is_round, read_log

pytestmark = pytest.mark.slow

SETTINGS = [
    "num-clients=4",
    "noisy-clients=2",
    "hard-clean-clients=1",
    "noise-rate-min=0.3",
    "noise-rate-max=0.8",
    "num-server-rounds=2",
    "warmup-rounds=1",
    "estimator=oracle",  # the client reports its true noise: rates are then known by hand
    "strategies=fedavg,noise-adaptive",
]


def simulate(tmp_path: Path, *settings: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "fedlr.cli", "simulate", "--out", str(tmp_path / "runs")]
    for setting in settings:
        args += ["--set", setting]
    env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1")
    return subprocess.run(
        args, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env, check=False
    )


def finished_run(tmp_path_factory: pytest.TempPathFactory, prefix: str, *settings: str) -> Path:
    """The run directory of one successful `fedlr simulate --set ...` in a fresh temp dir."""
    tmp_path = tmp_path_factory.mktemp(prefix)
    done = simulate(tmp_path, *settings)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (path,) = (tmp_path / "runs").iterdir()
    return path


def round_lines(run_dir: Path) -> dict[tuple[str, int], dict]:
    """``rounds.jsonl`` by (strategy, round)."""
    rows = [x for x in read_log(run_dir / "rounds.jsonl") if is_round(x)]
    return {(line["strategy"], line["round"]): line for line in rows}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return finished_run(tmp_path_factory, "e2e", *SETTINGS)


def test_run_directory_is_complete(run_dir: Path) -> None:
    for name in (
        "config.toml",
        "rounds.jsonl",
        "results.json",
        "report.md",
        "results.csv",
        "accuracy_per_round.png",
        "client_accuracy_vs_noise.png",
        "rate_vs_noise.png",
    ):
        assert (run_dir / name).stat().st_size > 0, name
    lines = [x for x in read_log(run_dir / "rounds.jsonl") if is_round(x)]
    assert [(line["strategy"], line["round"]) for line in lines] == [
        ("fedavg", 1),
        ("fedavg", 2),
        ("noise-adaptive", 1),
        ("noise-adaptive", 2),
    ]
    results = json.loads((run_dir / "results.json").read_text())
    assert list(results["strategies"]) == ["fedavg", "noise-adaptive"]
    for entry in results["strategies"].values():
        assert set(entry["fairness"]) == {"mean", "variance", "worst10", "best10", "jain", "gini"}
        assert [c["partition_id"] for c in entry["clients"]] == [0, 1, 2, 3]
        assert all(0.0 <= c["accuracy"] <= 1.0 for c in entry["clients"])
    report = (run_dir / "report.md").read_text()
    assert "noise-adaptive" in report and "fedavg" in report


def test_noisier_client_gets_smaller_rate(run_dir: Path) -> None:
    lines = [x for x in read_log(run_dir / "rounds.jsonl") if is_round(x)]
    by_key = {(line["strategy"], line["round"]): line for line in lines}
    # Warm-up round: everyone at lr_0 = 0.1; fedavg always uniform.
    assert {c["lr"] for c in by_key["noise-adaptive", 1]["clients"]} == {0.1}
    assert {c["lr"] for c in by_key["fedavg", 2]["clients"]} == {0.1}
    clients = {c["partition_id"]: c for c in by_key["noise-adaptive", 2]["clients"]}
    # Partition 0 (rate 0.3) is less noisy than partition 1 (rate 0.8); 2 and 3 are clean.
    assert clients[0]["noise_true"] < clients[1]["noise_true"]
    assert clients[1]["lr"] < clients[0]["lr"] < clients[3]["lr"]
    # Both clean clients sit at the noise floor, so they get the same (largest) rate.
    assert clients[2]["lr"] == pytest.approx(clients[3]["lr"])
    assert 0.1 < clients[3]["lr"] <= 0.1 * 4.0  # rate-high bounds it
    results = json.loads((run_dir / "results.json").read_text())
    rows = results["strategies"]["noise-adaptive"]["clients"]
    weighted = sum(r["lr"] * r["num_examples"] for r in rows) / sum(r["num_examples"] for r in rows)
    assert weighted == pytest.approx(0.1, rel=1e-6)


def test_same_seed_replays_exactly(tmp_path: Path) -> None:
    # The real estimator (not the oracle): every estimate, rate and accuracy must replay bit for
    # bit, though replies arrive in whatever order the engine delivers them.
    settings = [
        *SETTINGS[:-2],
        "estimator=loss-margin",
        "num-server-rounds=3",
        "strategies=noise-adaptive,qfedavg",
    ]
    lines = []
    for attempt in ("a", "b"):
        (tmp_path / attempt).mkdir()
        done = simulate(tmp_path / attempt, *settings)
        assert done.returncode == 0, done.stderr[-3000:]
        (run,) = (tmp_path / attempt / "runs").iterdir()
        rows = [x for x in read_log(run / "rounds.jsonl") if is_round(x)]
        for row in rows:
            del row["elapsed_s"]
        lines.append(rows)
    assert lines[0] == lines[1]
    assert len(lines[0]) == 6


def test_killed_simulation_resumes_to_the_same_results(tmp_path: Path) -> None:
    """`fedlr simulate` SIGKILLed after round 3 of 4 (checkpoint every 2), then `--resume`."""
    import signal
    import time

    settings = [*SETTINGS, "num-server-rounds=4", "checkpoint-every=2"]
    (tmp_path / "whole").mkdir()
    done = simulate(tmp_path / "whole", *settings)
    assert done.returncode == 0, done.stderr[-3000:]
    (whole,) = (tmp_path / "whole" / "runs").iterdir()

    args = [sys.executable, "-m", "fedlr.cli", "simulate", "--out", str(tmp_path / "runs")]
    for setting in settings:
        args += ["--set", setting]
    env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1")
    victim = subprocess.Popen(
        args,
        cwd=tmp_path,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        rounds = None
        while time.monotonic() < deadline and victim.poll() is None:
            logs = list((tmp_path / "runs").glob("*/rounds.jsonl"))
            if logs:
                rounds = logs[0]
                lines = rounds.read_text().splitlines()
                if any('"strategy": "noise-adaptive", "round": 3' in x for x in lines):
                    break
            time.sleep(0.05)
    finally:
        os.killpg(victim.pid, signal.SIGKILL)  # the whole session: engine and Ray workers too
        victim.wait(timeout=30)
    assert rounds is not None, "the run never started"
    run = rounds.parent
    assert victim.returncode == -signal.SIGKILL  # killed mid-run, not finished

    def resume() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "fedlr.cli", "simulate", "--resume", str(run)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            check=False,
        )

    resumed = resume()
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout and "after round 2 of noise-adaptive" in resumed.stdout

    assert without_timing(run) == without_timing(whole)
    (run / "report.md").unlink()  # as if the kill had come between checkpoint and report
    again = resume()
    assert again.returncode == 0 and "already complete" in again.stdout, again.stderr[-2000:]
    assert (run / "report.md").exists()
