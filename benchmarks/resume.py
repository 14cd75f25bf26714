"""What a kill costs: ``fedlr simulate`` killed between two checkpoints, then ``--resume``.

Side by side in one run, on the same config (``strategies = noise-adaptive``, checkpoint every
``K`` rounds), each ``fedlr simulate`` a fresh subprocess as the user runs it:

* ``whole``: the run never stopped;
* ``killed + resumed``: the same run SIGKILLed (its whole process group: Ray too) as soon as
  round ``K*m + K - 1`` is in ``rounds.jsonl`` -- the worst place, ``K - 1`` rounds after the
  last checkpoint -- then ``fedlr simulate --resume RUN_DIR``.

Reported per repeat (medians over ``--repeats``, runs interleaved):

* ``redone rounds``: rounds the resumed run computes again (kill round - checkpoint round);
* ``redone s``: their time in the resumed run (its per-round ``elapsed_s`` deltas); the first of
  them is a fresh engine's first round, which pays the workers' warm-up (as round 1 of any run);
* ``redone at steady s``: ``redone rounds`` x the median round time of ``whole``;
* ``interval s``: one checkpoint interval, ``K`` x the median round time of ``whole``;
* ``resume start-up s``: ``--resume`` start to its first round's end, minus that round's time
  (imports, Ray, the query round, reading the checkpoint);
* ``lost s``: (wall of killed + resumed) - wall of whole: all a kill cost, start-up included;
* whether ``results.json`` and ``rounds.jsonl`` (minus wall-clock fields) equal ``whole``'s.

The target (issue 3): a resume recomputes at most one interval: redone rounds < K, and
redone at steady s <= interval s (redone s adds the warm-up of the engine's first round).

    .venv/bin/python benchmarks/resume.py --quick
    .venv/bin/python benchmarks/resume.py --repeats 3 --json results/resume.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1")


def simulate(args: list[str]) -> list[str]:
    """The ``fedlr simulate`` command line."""
    return [sys.executable, "-m", "fedlr.cli", "simulate", *args]


def settings_args(settings: dict[str, Any]) -> list[str]:
    out = []
    for key, value in settings.items():
        out += ["--set", f"{key}={value}"]
    return out


def lines_of(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "rounds.jsonl"
    if not path.exists():
        return []
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.endswith("}")]
    return [x for x in lines if "event" not in x]  # the rounds (their events: tests/fl)


def without_timing(run_dir: Path) -> tuple[Any, Any]:
    results = json.loads((run_dir / "results.json").read_text())
    for entry in results["strategies"].values():
        entry.pop("elapsed_s", None)
    lines = lines_of(run_dir)
    for line in lines:
        line.pop("elapsed_s", None)
    return results, lines


def round_times(lines: list[dict[str, Any]]) -> dict[int, float]:
    """Seconds per round from consecutive ``elapsed_s`` (round 1: none, no previous line)."""
    out = {}
    for before, after in zip(lines, lines[1:], strict=False):
        out[after["round"]] = after["elapsed_s"] - before["elapsed_s"]
    return out


def run_whole(settings: dict[str, Any], work: Path) -> dict[str, Any]:
    out = work / "whole"
    start = time.perf_counter()
    done = subprocess.run(
        simulate([*settings_args(settings), "--out", str(out)]),
        cwd=work,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"fedlr simulate failed: {done.stderr[-2000:]}")
    (run_dir,) = out.iterdir()
    return {"wall": wall, "run_dir": run_dir, "round_s": round_times(lines_of(run_dir))}


def run_killed_and_resumed(settings: dict[str, Any], kill_round: int, work: Path) -> dict[str, Any]:
    out = work / "killed"
    start = time.perf_counter()
    victim = subprocess.Popen(
        simulate([*settings_args(settings), "--out", str(out)]),
        cwd=work,
        env=ENV,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    run_dir = None
    try:
        while victim.poll() is None:
            dirs = list(out.glob("*")) if out.exists() else []
            if dirs and any(x["round"] >= kill_round for x in lines_of(dirs[0])):
                run_dir = dirs[0]
                break
            time.sleep(0.02)
    finally:
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=60)
    killed_wall = time.perf_counter() - start
    if run_dir is None:
        raise RuntimeError("the run ended before the kill round")
    from fedlr.fl import checkpoint

    saved = checkpoint.load(run_dir)
    checkpoint_round = saved.round if saved is not None else 0
    killed_at = max(x["round"] for x in lines_of(run_dir))
    start = time.perf_counter()
    done = subprocess.run(
        simulate(["--resume", str(run_dir)]),
        cwd=work,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    resumed_wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"fedlr simulate --resume failed: {done.stderr[-2000:]}")
    lines = lines_of(run_dir)
    times = round_times(lines)
    # Round checkpoint+1 is timed against the checkpoint round's line: the resumed strategy's
    # clock starts from the elapsed time saved in the checkpoint.
    redone = range(checkpoint_round + 2, killed_at + 1)
    first_resumed = next(x for x in lines if x["round"] == checkpoint_round + 1)
    previous = [x for x in lines if x["round"] == checkpoint_round]
    resumed_first_elapsed = first_resumed["elapsed_s"] - (
        previous[0]["elapsed_s"] if previous else 0.0
    )
    return {
        "killed_wall": killed_wall,
        "resumed_wall": resumed_wall,
        "run_dir": run_dir,
        "checkpoint_round": checkpoint_round,
        "killed_at": killed_at,
        "redone_rounds": killed_at - checkpoint_round,
        "redone_s_later": sum(times[r] for r in redone),
        "first_resumed_round_s": resumed_first_elapsed,
    }


def main() -> None:
    """Run the comparison and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--every", type=int, default=5, help="checkpoint-every")
    parser.add_argument("--quick", action="store_true", help="1 repeat, 8 rounds, every 3")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.rounds, args.every = 1, 8, 3
    if args.every < 2 or args.rounds < 2 * args.every:
        parser.error("--every: expected >= 2 and --rounds >= 2 x --every")
    settings = {
        "strategies": "noise-adaptive",
        "num-server-rounds": args.rounds,
        "checkpoint-every": args.every,
    }
    # Worst case: K - 1 rounds after the last checkpoint before the end.
    kill_round = (args.rounds // args.every - 1) * args.every + args.every - 1
    rows = []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            whole = run_whole(settings, work)
            broken = run_killed_and_resumed(settings, kill_round, work)
            round_s = statistics.median(whole["round_s"].values())
            redone_s = broken["redone_s_later"] + broken["first_resumed_round_s"]
            row = {
                "repeat": repeat,
                "checkpoint_round": broken["checkpoint_round"],
                "killed_at": broken["killed_at"],
                "redone_rounds": broken["redone_rounds"],
                "redone_s": redone_s,
                "redone_at_steady_s": broken["redone_rounds"] * round_s,
                "interval_s": args.every * round_s,
                "round_s": round_s,
                "whole_wall_s": whole["wall"],
                "killed_plus_resumed_wall_s": broken["killed_wall"] + broken["resumed_wall"],
                "resume_wall_s": broken["resumed_wall"],
                "lost_s": broken["killed_wall"] + broken["resumed_wall"] - whole["wall"],
                "identical": without_timing(whole["run_dir"]) == without_timing(broken["run_dir"]),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    median = {
        key: statistics.median(r[key] for r in rows)
        for key in rows[0]
        if isinstance(rows[0][key], float | int) and not isinstance(rows[0][key], bool)
    }
    print()
    print(f"{'':<30}{'median':>10}")
    for key in (
        "redone_rounds",
        "redone_s",
        "redone_at_steady_s",
        "interval_s",
        "round_s",
        "whole_wall_s",
        "killed_plus_resumed_wall_s",
        "lost_s",
    ):
        print(f"{key:<30}{median[key]:>10.2f}")
    print(
        f"redone rounds {median['redone_rounds']:.0f} of an interval of {args.every}; "
        f"redone at steady / interval: {median['redone_at_steady_s'] / median['interval_s']:.2f}"
        f" (target <= 1); redone (first round's warm-up included) / interval: "
        f"{median['redone_s'] / median['interval_s']:.2f}"
    )
    print(f"identical results in every repeat: {all(r['identical'] for r in rows)}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"settings": settings, "kill_round": kill_round, "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
