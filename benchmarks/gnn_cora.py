"""Degree fairness on Cora federated over community subgraphs (issue 4's target).

Runs ``fedlr simulate simulations/gnn_cora.toml --set seed=S`` for each seed, as a user does
(Flower's simulation engine, 5 Louvain subgraphs, the strategies of the scenario side by side on
the same split, initial weights and seeds), then reads each run's ``results.json`` and prints,
per strategy, mean +- std over seeds of:

* ``overall``: accuracy over all clients' test nodes (final global model);
* ``Q1`` .. ``Q4``: accuracy per quartile of *global* degree over those nodes (Q1 lowest);
* ``jain`` / ``worst``: Jain's index and the worst accuracy across the four quartiles;
* ``slope0`` / ``slope0 scaled``: log-log slope of gradient norm vs degree at the initial
  weights, before and after the degree scales.

and the target's differences, per seed then mean +- std: ``dQ1`` and ``doverall`` of
``fedavg+degree`` (degree-aware SGD) minus ``fedavg`` (uniform SGD), and the same for
``fedavg+adam+degree`` vs ``fedavg+adam``. Target: dQ1 >= +3 points with doverall >= 0.

    .venv/bin/python benchmarks/gnn_cora.py --seeds 0 1 2 --json results/gnn_cora.json
    .venv/bin/python benchmarks/gnn_cora.py --quick       # one seed, 10 rounds
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
PAIRS = (("fedavg+degree", "fedavg"), ("fedavg+adam+degree", "fedavg+adam"))


def run_seed(config: Path, seed: int, out: Path, extra: list[str]) -> dict[str, Any]:
    """One ``fedlr simulate`` run; its ``results.json``."""
    out.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "fedlr.cli", "simulate", str(config), "--out", str(out)]
    args += ["--set", f"seed={seed}", *extra]
    started = time.perf_counter()
    done = subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"seed {seed} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    results = json.loads((run_dir / "results.json").read_text())
    results["wall_s"] = time.perf_counter() - started
    results["run_dir"] = str(run_dir)
    return results


def row(entry: dict[str, Any]) -> dict[str, float | None]:
    """The benchmark's numbers for one strategy of one run."""
    degree = entry["degree"]
    fairness = degree["fairness"]
    slopes = degree["gradient_slope"]
    return {
        "overall": fairness["accuracy"],
        **{f"Q{i + 1}": acc for i, acc in enumerate(fairness["bucket-accuracy"])},
        "jain": fairness["jain"],
        "worst": fairness["worst"],
        "slope0": slopes["before"][0],
        "slope0 scaled": slopes["after"][0],
    }


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def fmt(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    mean, std = mean_std(values)
    return f"{mean * scale:.{digits}f} +- {std * scale:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "simulations" / "gnn_cora.toml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="one seed, 10 rounds")
    parser.add_argument("--set", action="append", default=[], help="extra key=value overrides")
    parser.add_argument("--json", type=Path, help="write every number here")
    args = parser.parse_args()
    seeds = [0] if args.quick else args.seeds
    extra = [arg for kv in args.set for arg in ("--set", kv)]
    if args.quick:
        extra += ["--set", "num-server-rounds=10"]

    runs: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            runs[seed] = run_seed(args.config, seed, Path(tmp) / f"seed{seed}", extra)
            print(f"seed {seed}: {runs[seed]['wall_s']:.0f} s", flush=True)

    strategies = list(runs[seeds[0]]["strategies"])
    rows = {s: [row(runs[seed]["strategies"][s]) for seed in seeds] for s in strategies}
    columns = ["overall", "Q1", "Q2", "Q3", "Q4", "jain", "worst", "slope0", "slope0 scaled"]
    print(f"\nCora, {len(seeds)} seeds ({', '.join(map(str, seeds))}), mean +- std; accuracy in %")
    print("| strategy | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for strategy in strategies:
        cells = []
        for column in columns:
            values = [r[column] for r in rows[strategy]]
            if any(v is None for v in values):
                cells.append("-")
            elif column in ("jain", "slope0", "slope0 scaled"):
                cells.append(fmt(values, scale=1.0, digits=3))
            else:
                cells.append(fmt(values))
        print(f"| {strategy} | " + " | ".join(cells) + " |")

    differences: dict[str, Any] = {}
    for treated, control in PAIRS:
        if treated not in rows or control not in rows:
            continue
        d_q1 = [t["Q1"] - c["Q1"] for t, c in zip(rows[treated], rows[control], strict=True)]
        d_all = [
            t["overall"] - c["overall"] for t, c in zip(rows[treated], rows[control], strict=True)
        ]
        differences[f"{treated} - {control}"] = {"Q1": d_q1, "overall": d_all}
        per_seed = ", ".join(
            f"seed {s}: {q * 100:+.1f} / {a * 100:+.1f}"
            for s, q, a in zip(seeds, d_q1, d_all, strict=True)
        )
        met = statistics.fmean(d_q1) >= 0.03 and statistics.fmean(d_all) >= 0.0
        print(
            f"\n{treated} - {control}: dQ1 {fmt(d_q1)} points, doverall {fmt(d_all)} points "
            f"({per_seed}); target dQ1 >= +3 with doverall >= 0: {'met' if met else 'NOT met'}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "config": str(args.config.relative_to(ROOT))
            if args.config.is_absolute()
            else str(args.config),
            "overrides": args.set + (["num-server-rounds=10"] if args.quick else []),
            "seeds": seeds,
            "rows": rows,
            "differences": differences,
            "wall_s": {seed: runs[seed]["wall_s"] for seed in seeds},
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
