"""The Task seam costs nothing: the default scenario before and after it, side by side.

Checks out ``--base`` (the commit before the seam) into a temporary git worktree, then runs
``fedlr simulate`` of the default scenario (``--set`` overrides allowed) alternately with the base
code and the current code, ``--repeats`` times each, interleaved (base, current, base, ...) so
that both share the machine's noise. Prints each run's wall time, the medians and their ratio,
and whether every run's ``results.json`` and ``rounds.jsonl`` are identical to the base's
(wall-clock fields aside). Target: ratio <= 1.02, identical results.

    .venv/bin/python benchmarks/seam.py --base 05bab34 --repeats 3 --json results/seam.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1")
TIMING = {"elapsed_s", "wall_s"}


def without_timing(value: Any) -> Any:
    """``value`` with every wall-clock field removed, recursively."""
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def run(code: Path, out: Path, sets: list[str]) -> tuple[float, Any]:
    """One ``fedlr simulate`` with the package in ``code``; wall seconds and its record."""
    out.mkdir(parents=True)
    args = [sys.executable, "-m", "fedlr.cli", "simulate", "--out", str(out)]
    for item in sets:
        args += ["--set", item]
    env = dict(ENV, PYTHONPATH=str(code))
    started = time.perf_counter()
    done = subprocess.run(args, cwd=code, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{code}: failed\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    record = {
        "results": json.loads((run_dir / "results.json").read_text()),
        # round lines: an older base logs no events
        "rounds": [
            line
            for line in map(json.loads, (run_dir / "rounds.jsonl").read_text().splitlines())
            if "event" not in line
        ],
    }
    return wall, without_timing(record)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the commit before the seam")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--set", dest="sets", action="append", default=[], help="key=value")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    walls: dict[str, list[float]] = {"base": [], "current": []}
    identical = True
    with tempfile.TemporaryDirectory(prefix="fedlr-seam-") as tmp:
        base = Path(tmp) / "base"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(base), args.base],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        try:
            reference = None
            for i in range(args.repeats):
                for name, code in (("base", base), ("current", ROOT)):
                    wall, record = run(code, Path(tmp) / f"{name}-{i}", args.sets)
                    walls[name].append(wall)
                    reference = record if reference is None else reference
                    same = record == reference
                    identical &= same
                    print(f"{name:<8} run {i}: {wall:6.1f} s, identical: {same}", flush=True)
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False
            )
    medians = {name: statistics.median(values) for name, values in walls.items()}
    ratio = medians["current"] / medians["base"]
    print(
        f"median wall: base {medians['base']:.1f} s, current {medians['current']:.1f} s, "
        f"ratio {ratio:.3f} (target <= 1.02: {'met' if ratio <= 1.02 else 'NOT met'}); "
        f"results identical in every run: {identical}"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "command": "benchmarks/seam.py " + " ".join(sys.argv[1:]),
                    "base": args.base,
                    "wall_s": walls,
                    "median_s": medians,
                    "ratio": ratio,
                    "identical": identical,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
