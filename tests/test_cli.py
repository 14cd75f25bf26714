"""Tests for fedlr/cli.py: bad input fails in a real process, before any simulation starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def run_fedlr(*args: str, cwd) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "fedlr.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "mention"),
    [
        (("simulate", "--set", "no-such-key=1"), "no-such-key"),
        (("simulate", "--set", "lr=0"), "lr"),
        (("simulate", "--set", "noise-rate-max=1.5"), "noise-rate-max"),
        (("simulate", "--set", "noisy-clients=11"), "noisy-clients"),
        (("simulate", "--set", "seed"), "seed"),
        (("simulate", "missing.toml"), "missing.toml"),
        (("simulate", "missing.toml", "--set", "lr=0"), "missing.toml"),
        (("report", "no-such-run"), "no-such-run"),
        (("simulate", "--set", "name=../../x"), "name"),
        (("simulate", "--set", "name=a/b"), "name"),
        (("simulate", "--set", "name=\x1b[2J"), "name"),
        (("simulate", "--set", f"seed={2**64}"), "seed"),
        (("simulate", "--set", f"num-server-rounds={10**30}"), "num-server-rounds"),
        (("simulate", "--set", "resume=runs/x"), "--resume"),
        (("simulate", "/dev/zero"), "regular file"),
        (("simulate", "--set", "observers=no_such_module:X"), "observers"),
        (("simulate", "--set", "observers=json:dumps"), "observers"),  # not an observer
        (("gate", "--listen", "9092", "--insecure"), "--listen"),
        (("gate", "--listen", "0.0.0.0:99999", "--insecure"), "--listen"),
        (("gate", "--listen", "127.0.0.1:9092", "--superlink", "x", "--insecure"), "--superlink"),
        (("gate", "--listen", "127.0.0.1:9092"), "--certs DIR"),
        (("gate", "--listen", "127.0.0.1:9092", "--certs", "nowhere"), "ca.crt"),
    ],
    ids=[
        "unknown-key",
        "lr-zero",
        "noise-rate-max",
        "noisy-clients",
        "set-without-value",
        "missing-config",
        "missing-config-first",
        "report-missing-dir",
        "name-leaves-out",
        "name-with-slash",
        "name-unprintable",
        "seed-too-large",
        "rounds-too-many",
        "resume-in-set",
        "config-not-a-file",
        "observer-not-importable",
        "observer-without-hooks",
        "gate-listen-no-port",
        "gate-listen-port-range",
        "gate-superlink",
        "gate-neither-certs-nor-insecure",
        "gate-certs-missing",
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, mention):
    result = run_fedlr(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].strip(), result.stderr
    assert mention in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "runs").exists()  # no run directory: no simulation started


def test_report_on_a_dir_without_rounds(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_fedlr("report", "empty", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "rounds.jsonl" in lines[0]
    assert "Traceback" not in result.stdout + result.stderr


def assert_one_line_exit_2(result: subprocess.CompletedProcess[str], mention: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and mention in lines[0], result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_config_that_is_a_directory_is_one_line(tmp_path):
    assert_one_line_exit_2(run_fedlr("simulate", ".", cwd=tmp_path), "config file")


def test_report_with_corrupt_results_is_one_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "rounds.jsonl").write_text("")
    (run / "results.json").write_text("{")
    assert_one_line_exit_2(run_fedlr("report", "run", cwd=tmp_path), "results.json")


@pytest.mark.parametrize(
    ("args", "mention"),
    [
        (("simulate", "--set", "client-cpus=64"), "client-cpus"),
        (("simulate", "--set", "hard-classes="), "hard-classes"),
        (("simulate", "--set", "strategies=fedavg,fedavg"), "strategies"),
        (("simulate", "--set", "dataset=synthetic", "--set", "hard-classes=12"), "hard-classes"),
        (("simulate", "--out", "/dev/null/runs"), "out-dir"),
        (("simulate", "--set", "num-clients=1000"), "num-clients"),
    ],
    ids=[
        "too-many-cpus",
        "empty-hard-classes",
        "repeated-strategy",
        "synthetic-hard-classes",
        "unwritable-out",
        "too-many-clients",
    ],
)
def test_checks_before_the_engine_starts(tmp_path, args, mention):
    assert_one_line_exit_2(run_fedlr(*args, cwd=tmp_path), mention)
    assert not (tmp_path / "runs").exists()


def test_a_config_file_over_the_bound_is_one_line(tmp_path):
    big = tmp_path / "big.toml"
    big.write_text("# padding\n" * 200_000)  # 2 MB of comments
    assert_one_line_exit_2(run_fedlr("simulate", str(big), cwd=tmp_path), "at most")
    assert not (tmp_path / "runs").exists()


def test_device_cuda_without_a_gpu_is_one_line_before_the_engine(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    result = run_fedlr("simulate", "--set", "device=cuda", cwd=tmp_path)
    assert_one_line_exit_2(result, "device")
    assert "no GPU" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_client_gpus_without_a_gpu_is_one_line(tmp_path, monkeypatch):
    # hide any GPU so the test means the same on every machine (Ray could never place a client)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    result = run_fedlr("simulate", "--set", "client-gpus=0.25", cwd=tmp_path)
    assert_one_line_exit_2(result, "client-gpus")
    assert "no GPU" in result.stderr
    assert not (tmp_path / "runs").exists()


def _stopped_run(path):
    """A run directory as a run killed before its first checkpoint leaves it."""
    from fedlr.config import resolve
    from fedlr.fl.recorder import write_config

    path.mkdir()
    write_config(path, resolve(overrides={"num-clients": 4, "noisy-clients": 2}))
    return path


@pytest.mark.parametrize(
    ("setup", "args", "mention"),
    [
        (None, ("--resume", "nowhere"), "nowhere is not a directory"),
        ("empty", ("--resume", "run"), "has no config.toml"),
        ("stopped", ("--resume", "run", "--set", "lr=0.2"), "drop CONFIG, --set and --out"),
        ("stopped", ("--resume", "run", "other.toml"), "drop CONFIG, --set and --out"),
        ("corrupt", ("--resume", "run"), "not a readable fedlr checkpoint"),
    ],
    ids=["missing-dir", "not-a-run", "with-set", "with-config", "corrupt-checkpoint"],
)
def test_bad_resume_is_one_line_and_exit_2(tmp_path, setup, args, mention):
    if setup == "empty":
        (tmp_path / "run").mkdir()
    elif setup in ("stopped", "corrupt"):
        _stopped_run(tmp_path / "run")
    if setup == "corrupt":
        (tmp_path / "run" / "checkpoint.pt").write_bytes(b"\x00" * 10)
    result = run_fedlr("simulate", *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and mention in lines[0], result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_a_setting_that_does_nothing_warns_in_one_line_before_the_error(tmp_path):
    # the engine's warnings are silenced, the config's own are shown: one line each
    result = run_fedlr(
        "simulate", "--set", "task-stagger=1", "--set", "dataset=karate", cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0] == "warning: task-stagger is ignored without a stream (stream = 'none')"
    assert len(lines) == 2 and lines[1].startswith("error: hard-clean-clients:")
    assert "Traceback" not in result.stdout + result.stderr


def test_ctrl_c_stops_the_engine_within_seconds_and_prints_the_resume_command(tmp_path):
    import signal
    import time

    import psutil

    from fedlr.analysis import is_round, read_log

    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    args = ["--set", "num-server-rounds=500", "--set", "strategies=fedavg", "--out", "runs"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedlr.cli", "simulate", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not any(
            is_round(line)
            for path in (tmp_path / "runs").glob("*/rounds.jsonl")
            for line in read_log(path)
        ):
            assert time.monotonic() < deadline and proc.poll() is None, "no round in 120 s"
            time.sleep(0.2)
        engine = psutil.Process(proc.pid).children(recursive=True)  # Ray's processes
        assert engine
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
        stopped_in = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert proc.returncode == 130, output[-2000:]
    assert stopped_in < 10, stopped_in
    assert f"fedlr simulate --resume {Path('runs') / run_dir.name}" in output, output[-2000:]
    time.sleep(0.5)
    assert not [p.pid for p in engine if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
