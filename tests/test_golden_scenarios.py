"""Every built-in scenario, reduced, gives the results.json it gave before (timings aside).

A refactor keeps behaviour: each ``simulations/*.toml`` runs through `fedlr simulate` on Flower's
engine with the few ``--set`` overrides in :data:`REDUCED` (fewer rounds, the scenario's own
strategies, data, noise and modifiers), and its ``results.json`` minus the wall-clock fields must
equal ``tests/golden/<scenario>.json`` value for value, floats bit for bit.

Goldens change only with a behaviour change that the commit message names; then
``python tests/golden/regenerate.py SCENARIO ...`` (or ``--all``) rewrites them from the code of
this checkout. A new scenario needs an entry in :data:`REDUCED` and its golden the same way.
Scenarios whose data is not on this machine (Cora's raw files, the heart-disease CSVs) are skipped.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SIMULATIONS = ROOT / "simulations"
GOLDEN = Path(__file__).resolve().parent / "golden"

# Per scenario: the overrides of its reduced run, chosen so that what makes the scenario
# distinctive still happens within a few rounds (about 17-30 s each on 2 cores, mostly Ray).
REDUCED: dict[str, list[str]] = {
    # All six strategies; estimates steer rates and weights from round 2.
    "noisy_hospitals": ["num-server-rounds=2", "warmup-rounds=1"],
    # Same, on LEAF Synthetic with pair-flip label noise and Gaussian input noise.
    "synthetic_equipment": ["num-server-rounds=2", "warmup-rounds=1"],
    # Twelve batch sizes, +coupled, the measured noise scale B_simple.
    "coupling_batches": ["num-server-rounds=2"],
    # Rate decay vs batch growth at rounds 2 and 3; growth hits the sites' example counts.
    "coupling_grow": ["num-server-rounds=3", "lr-decay-rounds=2,3"],
    # Two tasks of three rounds: re-warm per task, replay, snapshots and the ensemble at task ends.
    "continual_digits": ["num-server-rounds=6", "num-tasks=2"],
    # Cora, Louvain split, SGD/Adam/Adagrad with and without the degree rule.
    "gnn_cora": ["num-server-rounds=2"],
    # Four real hospitals' CSVs; estimates steer rates and weights from round 2.
    "heart_disease": ["num-server-rounds=2", "warmup-rounds=1"],
}

TIMING_KEYS = frozenset({"elapsed_s"})  # wall-clock seconds: the only fields left out


def scenarios() -> list[str]:
    """The built-in scenarios: the stems of ``simulations/*.toml``."""
    return sorted(path.stem for path in SIMULATIONS.glob("*.toml"))


def without_timing(value: Any) -> Any:
    """``value`` with every :data:`TIMING_KEYS` entry removed, at any depth."""
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def missing_data(scenario: str) -> str | None:
    """Why ``scenario`` cannot run on this machine (its data is absent), or None."""
    if scenario == "gnn_cora":  # the rule of tests/data/test_graphs.py, plus the env override
        from fedlr.data.graphs import CORA_RAW_FILES, DEFAULT_PLANETOID_DIR, PLANETOID_ENV

        roots = [Path(p) for p in [os.environ.get(PLANETOID_ENV)] if p] + [DEFAULT_PLANETOID_DIR]
        if not any(all((r / "Cora" / "raw" / f).is_file() for f in CORA_RAW_FILES) for r in roots):
            return "no raw Cora files at $FEDLR_PLANETOID_DIR or the default"
    if scenario == "heart_disease":  # the rule of tests/data/test_files.py
        from fedlr.data import files

        if not (files.data_dir() / "heart_disease").is_dir():
            return "../shared/data/heart_disease is not here"
    return None


def run_reduced(scenario: str, workdir: Path) -> dict[str, Any]:
    """Run ``scenario``'s reduced run with this checkout's code; its results.json, untimed."""
    args = [sys.executable, "-m", "fedlr.cli", "simulate", str(SIMULATIONS / f"{scenario}.toml")]
    for setting in REDUCED[scenario]:
        args += ["--set", setting]
    args += ["--out", str(workdir / "runs")]
    # The code next to this file, not whichever checkout is installed (Ray's workers inherit it).
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = dict(
        os.environ, FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1", PYTHONPATH=pythonpath
    )
    done = subprocess.run(
        args, cwd=workdir, capture_output=True, text=True, timeout=600, env=env, check=False
    )
    if done.returncode != 0:
        raise AssertionError(
            f"{scenario}: fedlr simulate exited {done.returncode}\n"
            + done.stdout[-3000:]
            + done.stderr[-3000:]
        )
    (run_dir,) = (workdir / "runs").iterdir()
    return without_timing(json.loads((run_dir / "results.json").read_text()))


def _same_float(path: str, expected: float, got: float) -> bool:
    if math.isnan(expected) and math.isnan(got):
        return True
    return expected == got


def differences(expected: Any, got: Any, path: str = "") -> Iterator[str]:
    """One line per differing leaf: ``path: golden ... != got ...`` (floats compared exactly)."""
    if isinstance(expected, dict) and isinstance(got, dict):
        for key in [*expected, *(k for k in got if k not in expected)]:  # the golden's order
            here = f"{path}/{key}"
            if key not in got:
                yield f"{here}: missing (golden {expected[key]!r})"
            elif key not in expected:
                yield f"{here}: new (got {got[key]!r})"
            else:
                yield from differences(expected[key], got[key], here)
    elif isinstance(expected, list) and isinstance(got, list):
        if len(expected) != len(got):
            yield f"{path}: length {len(expected)} in the golden, {len(got)} now"
        for i, (a, b) in enumerate(zip(expected, got, strict=False)):
            yield from differences(a, b, f"{path}[{i}]")
    elif isinstance(expected, float) and isinstance(got, float):
        if not _same_float(path, expected, got):
            yield f"{path}: golden {expected!r} != got {got!r}"
    elif type(expected) is not type(got) or expected != got:
        yield f"{path}: golden {expected!r} != got {got!r}"


@pytest.mark.slow
@pytest.mark.parametrize("scenario", scenarios())
def test_reduced_scenario_matches_its_golden(scenario: str, tmp_path: Path) -> None:
    assert scenario in REDUCED, (
        f"{scenario}: a new scenario; add its reduced run to REDUCED in {Path(__file__).name} and "
        f"write its golden: python tests/golden/regenerate.py {scenario}"
    )
    golden = GOLDEN / f"{scenario}.json"
    assert golden.is_file(), (
        f"{scenario}: no golden {golden.relative_to(ROOT)}; "
        f"python tests/golden/regenerate.py {scenario} (and name it in the commit message)"
    )
    reason = missing_data(scenario)
    if reason:
        pytest.skip(reason)
    got = run_reduced(scenario, tmp_path)
    found = list(differences(json.loads(golden.read_text()), got))
    assert not found, (
        f"{scenario}: results.json differs from {golden.relative_to(ROOT)} "
        f"(settings {' '.join(REDUCED[scenario])}) at {len(found)} paths; the first:\n  "
        + "\n  ".join(found[:15])
    )


def test_every_golden_belongs_to_a_scenario() -> None:
    stale = sorted({p.stem for p in GOLDEN.glob("*.json")} - set(scenarios()))
    assert not stale, f"goldens without a simulations/*.toml: {stale}"


def test_differences_name_the_paths() -> None:
    golden = {"a": [1.0, 0.5], "b": {"c": "x"}, "accuracy_per_round": [0.1 + 0.2]}
    got = {"a": [1.0, 0.5000000000000001], "b": {"c": "y", "d": 1}, "accuracy_per_round": [0.3]}
    assert list(differences(golden, got)) == [
        "/a[1]: golden 0.5 != got 0.5000000000000001",
        "/b/c: golden 'x' != got 'y'",
        "/b/d: new (got 1)",
        "/accuracy_per_round[0]: golden 0.30000000000000004 != got 0.3",  # exact, too
    ]
    assert list(differences({"n": 1}, {"n": 1.0})) == ["/n: golden 1 != got 1.0"]
    timed = {"elapsed_s": 2.0, "t": [{"elapsed_s": 3.0, "lr": 0.1}]}
    assert without_timing(timed) == {"t": [{"lr": 0.1}]}
