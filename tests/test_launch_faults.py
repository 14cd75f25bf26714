"""Faults on the real deployment runtime: a ClientApp that raises, a SuperNode that restarts.

Same set-up as tests/test_launch.py (SuperLink + SuperNodes started by launch/ on 127.0.0.1,
TLS and node auth on, every PID stopped by launch/stop.sh).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import tomli_w

from fedlr.config import DEFAULTS

from .test_launch import BIN, ROOT, Cluster, alive, env, pytestmark, rounds_of  # noqa: F401


def faulty_app(tmp_path: Path) -> Path:
    """A Flower App: fedlr's ServerApp, and a ClientApp whose training raises on partition 1.

    fedlr comes from the installed package; the app's config keys are fedlr's (Flower accepts
    ``--run-config`` keys only if the app declares them).
    """
    app = tmp_path / "faulty-app"
    app.mkdir()
    shutil.copy(ROOT / "tests" / "apps" / "faulty_client.py", app)
    project = {
        "build-system": {"requires": ["setuptools>=68"], "build-backend": "setuptools.build_meta"},
        "project": {
            "name": "faulty",
            "version": "0.1.0",
            "description": "fedlr with a faulty ClientApp",
            "license": "Apache-2.0",
            "dependencies": ["fedlr"],
        },
        "tool": {
            "flwr": {
                "app": {
                    "publisher": "fedlr-tests",
                    "components": {
                        "serverapp": "fedlr.fl.server_app:app",
                        "clientapp": "faulty_client:app",
                    },
                    "config": DEFAULTS,
                }
            }
        },
    }
    (app / "pyproject.toml").write_text(tomli_w.dumps(project))
    return app


def flwr_run(tmp_path: Path, app: Path, config: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [f"{BIN}/flwr", "run", str(app), "t", "--stream", "--run-config", config],
        env=env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_client_that_raises_is_an_error_reply_not_a_hang(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, nodes=3)
    out = tmp_path / "runs"
    run = None
    try:
        cluster.start()
        for pid in range(3):
            cluster.add_node(pid)
        config = (
            "num-clients=3 noisy-clients=1 hard-clean-clients=0 num-server-rounds=1 "
            f"strategies='fedavg' round-timeout=600 out-dir='{out}'"
        )
        run = flwr_run(tmp_path, faulty_app(tmp_path), config)
        output, _ = run.communicate(timeout=400)  # a hang would wait out the 600 s round
    finally:
        if run is not None and run.poll() is None:
            run.kill()
        cluster.stop()
    rounds = rounds_of(out)
    assert [r["round"] for r in rounds] == [1], output[-3000:]
    (line,) = rounds
    assert line["missing"] == [1]
    (error,) = line["errors"]
    assert error["partition_id"] == 1 and "training failed on partition 1" in error["reason"]
    assert line["elapsed_s"] < 300  # the round did not wait for its timeout
    (run_dir,) = out.iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    # Partition 1 still evaluates the global model; it just contributes nothing to it.
    assert [c["partition_id"] for c in results["strategies"]["fedavg"]["clients"]] == [0, 1, 2]


def test_a_stopped_deployment_resumes_to_the_uninterrupted_results(tmp_path: Path) -> None:
    import sys
    import time

    from fedlr.fl import checkpoint

    from .fl.test_server_app import without_timing

    settings = {
        "num-clients": 2,
        "noisy-clients": 1,
        "hard-clean-clients": 0,
        "num-server-rounds": 3,
        "checkpoint-every": 1,
        "strategies": "fedavg",
    }
    cluster = Cluster(tmp_path, nodes=2)
    out = tmp_path / "runs"
    config = " ".join(
        f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in settings.items()
    )
    first = resumed = None
    try:
        cluster.start()
        for pid in range(2):
            cluster.add_node(pid)
        first = flwr_run(tmp_path, ROOT, f"{config} out-dir='{out}'")
        deadline = time.monotonic() + 240
        while len(rounds_of(out)) < 2:
            assert time.monotonic() < deadline and first.poll() is None, "no round 2"
            time.sleep(0.2)
        listed = cluster.flwr("ls", "t", "--format", "json")
        (run,) = json.loads(listed.stdout)["runs"]
        stopped = cluster.flwr("stop", str(run["run-id"]), "t")  # the server side stops mid-run
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        first.communicate(timeout=60)
        (run_dir,) = out.iterdir()
        assert not (run_dir / "results.json").exists()
        saved = checkpoint.load(run_dir)
        assert saved is not None and saved.round >= 1  # so the resume starts part-way
        resumed = flwr_run(tmp_path, ROOT, f"resume='{run_dir}'")
        output, _ = resumed.communicate(timeout=300)
    finally:
        for process in (first, resumed):
            if process is not None and process.poll() is None:
                process.kill()
        cluster.stop()
    assert "resuming" in output, output[-3000:]
    # The same run, never stopped, on the simulation engine: the same clients and seeds.
    reference = tmp_path / "reference"
    sets = [arg for k, v in settings.items() for arg in ("--set", f"{k}={v}")]
    simulated = subprocess.run(
        [sys.executable, "-m", "fedlr.cli", "simulate", *sets, "--out", str(reference)],
        env=env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert simulated.returncode == 0, simulated.stderr[-3000:]
    (reference_dir,) = reference.iterdir()
    assert without_timing(run_dir) == without_timing(reference_dir)
