"""Quality targets of the core issue: `noisy_hospitals` over seeds 0, 1, 2, mean ± std.

Runs ``fedlr simulate simulations/noisy_hospitals.toml --set seed=S`` once per seed (all
strategies side by side in each run), then prints per strategy the mean ± std over seeds of the
fairness summary and Spearman's rho, and checks the targets against ``fedavg``:

* noise-adaptive: >= +4 points mean client accuracy, >= +5 points worst-10%, >= 30% lower variance;
* noise-adaptive reaches >= 90% of oracle-noise-rates' gain in mean accuracy;
* noise-adaptive ahead of inverse-noise-weights, qfedavg and fedprox on mean and worst-10%;
* Spearman rho of the estimate >= 0.9.

    python benchmarks/quality.py [--seeds 0 1 2] [--json results/quality.json] [--runs DIR]
        [--set KEY=VALUE ...]

The README's 3-seed table was measured with the plain rule (before issue 14's guard);
``--set rate-guard=none --set rate-compensation=0`` gives it back.

``--runs DIR`` re-reads existing run directories (one per seed) instead of simulating.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "simulations" / "noisy_hospitals.toml"
KEYS = ("mean", "worst10", "variance", "jain", "gini")


def simulate(seed: int, out: Path, sets: list[str] | None = None) -> Path:
    before = set(out.glob("*")) if out.exists() else set()
    env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1")
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "fedlr.cli",
            "simulate",
            str(SCENARIO),
            "--set",
            f"seed={seed}",
            "--out",
            str(out),
            *[arg for item in sets or [] for arg in ("--set", item)],
        ],
        check=True,
        env=env,
    )
    (run_dir,) = set(out.glob("*")) - before
    print(f"seed {seed}: {time.perf_counter() - start:.0f} s -> {run_dir}", flush=True)
    return run_dir


def summarise(run_dirs: list[Path]) -> dict[str, dict[str, list[float]]]:
    per_strategy: dict[str, dict[str, list[float]]] = {}
    for run_dir in run_dirs:
        results = json.loads((run_dir / "results.json").read_text())
        for name, entry in results["strategies"].items():
            row = per_strategy.setdefault(name, {k: [] for k in (*KEYS, "spearman", "seconds")})
            for key in KEYS:
                row[key].append(entry["fairness"][key])
            rho = entry["estimator"]["spearman"]
            row["spearman"].append(np.nan if rho is None else rho)
            row["seconds"].append(entry["elapsed_s"])
    return per_strategy


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "quality")
    parser.add_argument("--runs", type=Path, nargs="+", help="existing run directories")
    parser.add_argument("--json", type=Path, help="write the summary here")
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE for every run")
    args = parser.parse_args()
    run_dirs = args.runs or [simulate(seed, args.out, args.set) for seed in args.seeds]
    stats = summarise(run_dirs)

    def ms(name: str, key: str, scale: float = 100.0, digits: int = 1) -> str:
        values = scale * np.asarray(stats[name][key], dtype=float)
        values = values[np.isfinite(values)]
        if values.size == 0:
            return f"{'-':>13s}"
        return f"{values.mean():6.{digits}f} ± {values.std():4.{digits}f}"

    print(f"\n{len(run_dirs)} seeds; accuracy in %, variance in %^2, mean ± std over seeds")
    print(
        f"{'strategy':24s} {'mean':>13s} {'worst-10%':>13s} {'variance':>13s} "
        f"{'Jain':>13s} {'rho':>13s} {'seconds':>9s}"
    )
    for name in stats:
        print(
            f"{name:24s} {ms(name, 'mean')} {ms(name, 'worst10')} "
            f"{ms(name, 'variance', 1e4)} {ms(name, 'jain', 1.0, 3)} "
            f"{ms(name, 'spearman', 1.0, 2)} {np.median(stats[name]['seconds']):9.1f}"
        )

    def avg(name: str, key: str) -> float:
        return float(np.nanmean(stats[name][key]))

    checks: list[tuple[str, float, str, bool]] = []
    if "fedavg" in stats and "noise-adaptive" in stats:
        gain = 100 * (avg("noise-adaptive", "mean") - avg("fedavg", "mean"))
        worst = 100 * (avg("noise-adaptive", "worst10") - avg("fedavg", "worst10"))
        var = 1 - avg("noise-adaptive", "variance") / avg("fedavg", "variance")
        checks += [
            ("mean accuracy vs fedavg (points)", gain, ">= +4", gain >= 4),
            ("worst-10% vs fedavg (points)", worst, ">= +5", worst >= 5),
            ("variance reduction vs fedavg", 100 * var, ">= 30%", var >= 0.30),
        ]
        if "oracle-noise-rates" in stats:
            oracle = 100 * (avg("oracle-noise-rates", "mean") - avg("fedavg", "mean"))
            share = gain / oracle if oracle > 0 else float("nan")
            checks.append(("share of oracle gain (mean)", 100 * share, ">= 90%", share >= 0.9))
        for other in ("inverse-noise-weights", "qfedavg", "fedprox"):
            if other in stats:
                d_mean = 100 * (avg("noise-adaptive", "mean") - avg(other, "mean"))
                d_worst = 100 * (avg("noise-adaptive", "worst10") - avg(other, "worst10"))
                checks.append(
                    (
                        f"ahead of {other} (mean / worst-10%)",
                        d_mean,
                        f"> 0 / > 0 (worst {d_worst:+.1f})",
                        d_mean > 0 and d_worst > 0,
                    )
                )
        rho = avg("noise-adaptive", "spearman")
        checks.append(("Spearman rho of the estimate", rho, ">= 0.9", rho >= 0.9))
    print("\ntarget                                      measured    wanted")
    for label, value, wanted, ok in checks:
        print(f"{label:42s} {value:+9.2f}    {wanted:28s} {'met' if ok else 'NOT met'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "runs": [str(p) for p in run_dirs],
                    "stats": stats,
                    "checks": [
                        {"target": c[0], "measured": c[1], "wanted": c[2], "met": c[3]}
                        for c in checks
                    ],
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
