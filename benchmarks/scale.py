"""Scale: `fedlr simulate` with many clients, its wall time and peak memory over all processes.

Runs the command users run (``fedlr simulate`` on Flower's simulation engine, Ray included) on
the synthetic dataset, once per client count, and samples the whole process tree (the fedlr
process, Ray's GCS, raylet and workers) every half second. Memory is the sum of the processes'
PSS (proportional set size: a page shared by k processes counts 1/k in each), so shared
libraries and Ray's object store are not counted twice. Prints, per client count, wall time,
peak memory and the ratios to the smallest count, and writes ``results/scale.json``.

    python benchmarks/scale.py                              # 100 and 1000 clients, 10 rounds
    python benchmarks/scale.py --clients 1000 --strategies fedavg,noise-adaptive

Targets (issue 15): 1,000 clients, 10% sampled per round, 10 rounds, under 10 minutes and under
8 GB on a 2-core, 24 GB machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from fedlr.analysis import is_round, read_log

ROOT = Path(__file__).resolve().parents[1]
TARGET_S, TARGET_GB = 600.0, 8.0


def tree_pss(root: psutil.Process) -> int:
    """Bytes of PSS summed over ``root`` and all its descendants (gone processes count 0)."""
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return total


def measure(clients: int, rounds: int, strategies: str, fraction: float, seed: int) -> dict:
    """One ``fedlr simulate`` run: wall seconds, peak PSS, processes seen, the run's results."""
    with tempfile.TemporaryDirectory(prefix="fedlr-scale-") as out:
        command = [
            sys.executable, "-m", "fedlr", "simulate",
            "--set", "dataset=synthetic",
            "--set", f"num-clients={clients}",
            "--set", f"fraction-train={fraction}",
            "--set", f"num-server-rounds={rounds}",
            "--set", f"strategies={strategies}",
            "--set", f"seed={seed}",
            "--set", f"name=scale-{clients}",
            "--out", out,
        ]  # fmt: skip
        start = time.perf_counter()
        proc = psutil.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        peak, most_procs = 0, 0
        output: list[str] = []
        reader = threading.Thread(target=lambda: output.extend(proc.stdout or []), daemon=True)
        reader.start()
        while proc.poll() is None:
            peak = max(peak, tree_pss(proc))
            most_procs = max(most_procs, 1 + len(proc.children(recursive=True)))
            time.sleep(0.5)
        wall = time.perf_counter() - start
        reader.join(timeout=10)
        if proc.returncode != 0:
            tail = "".join(output)[-3000:]
            sys.exit(f"scale: {clients} clients failed (exit {proc.returncode}):\n{tail}")
        (run_dir,) = Path(out).iterdir()
        results = json.loads((run_dir / "results.json").read_text())
        rounds_lines = [x for x in read_log(run_dir / "rounds.jsonl") if is_round(x)]
    per_strategy = {
        name: {
            "accuracy_mean": entry["fairness"]["mean"],
            "worst10": entry["fairness"]["worst10"],
            "clients_evaluated": sum(c["accuracy"] is not None for c in entry["clients"]),
        }
        for name, entry in results["strategies"].items()
    }
    return {
        "clients": clients,
        "wall_s": round(wall, 1),
        "peak_pss_gb": round(peak / 2**30, 3),
        "max_processes": most_procs,
        "rounds_jsonl_lines": len(rounds_lines),
        "strategies": per_strategy,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="100,1000", help="comma list of client counts")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--fraction-train", type=float, default=0.1)
    parser.add_argument("--strategies", default="fedavg,noise-adaptive")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=ROOT / "results" / "scale.json")
    args = parser.parse_args()
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
    counts = [int(c) for c in args.clients.split(",")]
    rows: list[dict[str, Any]] = []
    for clients in counts:
        print(f"scale: {clients} clients ...", flush=True)
        rows.append(measure(clients, args.rounds, args.strategies, args.fraction_train, args.seed))
    base = rows[0]
    print(f"\n{'clients':>8} {'wall s':>8} {'peak GB':>8} {'procs':>6} {'x wall':>7} {'x mem':>6}")
    for row in rows:
        print(
            f"{row['clients']:>8} {row['wall_s']:>8.1f} {row['peak_pss_gb']:>8.2f} "
            f"{row['max_processes']:>6} {row['wall_s'] / base['wall_s']:>7.2f} "
            f"{row['peak_pss_gb'] / base['peak_pss_gb']:>6.2f}"
        )
    biggest = rows[-1]
    met = biggest["wall_s"] < TARGET_S and biggest["peak_pss_gb"] < TARGET_GB
    print(
        f"\n{biggest['clients']} clients: {biggest['wall_s']:.0f} s (target < {TARGET_S:.0f}), "
        f"{biggest['peak_pss_gb']:.2f} GB (target < {TARGET_GB:.0f}): "
        + ("met" if met else "NOT met")
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "command": "python benchmarks/scale.py " + " ".join(sys.argv[1:]),
                "rounds": args.rounds,
                "fraction_train": args.fraction_train,
                "strategies": args.strategies,
                "cpus": os.cpu_count(),
                "runs": rows,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
