"""Batch-size / learning-rate coupling on digits (issue 5's federated targets).

Every number comes from ``fedlr simulate`` runs, as a user starts them (Flower's simulation
engine, the scenario's strategies side by side on the same split, initial weights and seeds).

``grow``: ``simulations/coupling_grow.toml``. "Decay the rate" (``fedavg``: the rate x 1/5 in
rounds 10 and 20) against "grow the batch" (``fedavg+grow-batch``: each client's batch x 5
instead, up to its example count). Per seed: final clean test loss (mean over clients) and
optimizer steps (mean per client, summed over rounds). Target: grow reaches the same final test
loss (within 2%, or lower) with at least 2x fewer optimizer steps.

``batches``: ``simulations/coupling_batches.toml`` (12 clients, batches 8..256). First the
shared rate is tuned for the median batch: a federation where every client uses the median batch
(48), ``fedavg`` at each rate of ``--grid``, on the tuning seed; the rate with the best final mean
accuracy is "one shared rate tuned for the median batch". Then, on other seeds, the spread
federation runs ``fedavg`` (that shared rate for every client) against ``fedavg+coupled`` (the
same base rate moved to each client's batch by the linear rule). Target: coupled reaches higher
mean and worst-10% accuracy. The same seeds also run two other couplings of that base rate:
``coupling-rule = optimal`` (McCandlish's lr_max / (1 + B_noise / B) with the measured noise
scale) and the linear rule with ``coupling-high = 1`` (small batches slow down, no client goes
above the tuned rate). For reference it also tunes the shared rate on the spread federation
itself (a baseline the issue does not ask for, reported beside).

    .venv/bin/python benchmarks/coupling.py --json results/coupling.json   # seeds 1..6
    .venv/bin/python benchmarks/coupling.py --part grow --seeds 0
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from gnn_cora import run_seed  # the same `fedlr simulate` subprocess, run as a user runs it

ROOT = Path(__file__).resolve().parents[1]
GROW = ROOT / "simulations" / "coupling_grow.toml"
BATCHES = ROOT / "simulations" / "coupling_batches.toml"
# other couplings of the same tuned base rate, run on the same seeds
VARIANTS = {"optimal": {"coupling-rule": "optimal"}, "capped": {"coupling-high": 1.0}}


def simulate(config: Path, out: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """One ``fedlr simulate`` run with ``overrides``; its ``results.json`` (plus wall time)."""
    settings = dict(overrides)
    seed = int(settings.pop("seed"))
    extra = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    return run_seed(config, seed, out, extra)


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4g} +- {std:.2g}"


def part_grow(seeds: list[int], tmp: Path, extra: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for seed in seeds:
        results = simulate(GROW, tmp / f"grow{seed}", {"seed": seed, **extra})
        decay = results["strategies"]["fedavg"]["batches"]
        grow = results["strategies"]["fedavg+grow-batch"]["batches"]
        row = {
            "seed": seed,
            "loss_decay": decay["final_loss"],
            "loss_grow": grow["final_loss"],
            "loss_ratio": grow["final_loss"] / decay["final_loss"],
            "steps_decay": decay["steps_total"],
            "steps_grow": grow["steps_total"],
            "steps_ratio": decay["steps_total"] / grow["steps_total"],
            "accuracy_decay": results["strategies"]["fedavg"]["fairness"]["mean"],
            "accuracy_grow": results["strategies"]["fedavg+grow-batch"]["fairness"]["mean"],
            "wall_s": results["wall_s"],
        }
        rows.append(row)
        print(
            f"grow seed {seed}: loss decay {row['loss_decay']:.4f} grow {row['loss_grow']:.4f} "
            f"(ratio {row['loss_ratio']:.3f}); steps decay {row['steps_decay']:.0f} grow "
            f"{row['steps_grow']:.0f} ({row['steps_ratio']:.2f}x fewer); {row['wall_s']:.0f} s",
            flush=True,
        )
    ratios = [r["loss_ratio"] for r in rows]
    fewer = [r["steps_ratio"] for r in rows]
    met = all(r <= 1.02 for r in ratios) and all(f >= 2.0 for f in fewer)
    print(
        f"\ngrow vs decay, {len(seeds)} seeds: final-loss ratio grow/decay {mean_std(ratios)}, "
        f"steps decay/grow {mean_std(fewer)}; target (loss ratio <= 1.02 and >= 2x fewer steps, "
        f"every seed): {'met' if met else 'NOT met'}"
    )
    return {"rows": rows, "target_met": met}


def fairness(results: dict[str, Any], strategy: str) -> tuple[float, float]:
    summary = results["strategies"][strategy]["fairness"]
    return summary["mean"], summary["worst10"]


def part_batches(
    seeds: list[int], tune_seed: int, grid: list[float], tmp: Path, extra: dict[str, Any]
) -> dict[str, Any]:
    # The median of the clients' own batches (8..256 dealt over 12 clients: 32 and 64 -> 48).
    from fedlr.config import client_batch_sizes, resolve

    cfg = resolve(BATCHES, {**extra, "seed": tune_seed})
    median = int(statistics.median(client_batch_sizes(cfg)))
    tuning: dict[str, dict[str, float]] = {"median": {}, "spread": {}}
    for lr in grid:
        homogeneous = simulate(
            BATCHES,
            tmp / f"tune-median-{lr}",
            {
                **extra,
                "seed": tune_seed,
                "strategies": "fedavg",
                "client-batch-sizes": "",
                "batch-size": median,
                "measure-noise-scale": "false",
                "lr": lr,
            },
        )
        spread = simulate(
            BATCHES,
            tmp / f"tune-spread-{lr}",
            {**extra, "seed": tune_seed, "strategies": "fedavg", "lr": lr},
        )
        tuning["median"][str(lr)] = fairness(homogeneous, "fedavg")[0]
        tuning["spread"][str(lr)] = fairness(spread, "fedavg")[0]
        print(
            f"tune lr {lr}: all clients at batch {median}: {tuning['median'][str(lr)]:.3f}; "
            f"spread 8..256: {tuning['spread'][str(lr)]:.3f} (seed {tune_seed})",
            flush=True,
        )
    lr_median = float(max(tuning["median"], key=lambda k: tuning["median"][k]))
    lr_spread = float(max(tuning["spread"], key=lambda k: tuning["spread"][k]))
    print(f"shared rate tuned for the median batch: {lr_median}; tuned on the spread: {lr_spread}")

    rows = []
    for seed in seeds:
        results = simulate(
            BATCHES, tmp / f"batches{seed}", {**extra, "seed": seed, "lr": lr_median}
        )
        shared, coupled = fairness(results, "fedavg"), fairness(results, "fedavg+coupled")
        row = {
            "seed": seed,
            "shared_mean": shared[0],
            "shared_worst10": shared[1],
            "coupled_mean": coupled[0],
            "coupled_worst10": coupled[1],
            "b_simple_last": results["strategies"]["fedavg"]["batches"]["b_simple"][-1],
            "wall_s": results["wall_s"],
        }
        if lr_spread != lr_median:
            other = simulate(
                BATCHES,
                tmp / f"spread-tuned{seed}",
                {**extra, "seed": seed, "lr": lr_spread, "strategies": "fedavg"},
            )
            row["spread_tuned_mean"], row["spread_tuned_worst10"] = fairness(other, "fedavg")
        else:
            row["spread_tuned_mean"], row["spread_tuned_worst10"] = shared
        for label, overrides in VARIANTS.items():
            variant = simulate(
                BATCHES,
                tmp / f"{label}{seed}",
                {
                    **extra,
                    "seed": seed,
                    "lr": lr_median,
                    "strategies": "fedavg+coupled",
                    **overrides,
                },
            )
            row[f"{label}_mean"], row[f"{label}_worst10"] = fairness(variant, "fedavg+coupled")
            print(
                f"batches seed {seed}: coupled ({label}) {row[f'{label}_mean']:.3f} / "
                f"{row[f'{label}_worst10']:.3f}",
                flush=True,
            )
        rows.append(row)
        print(
            f"batches seed {seed}: shared {shared[0]:.3f} / worst-10% {shared[1]:.3f}; coupled "
            f"{coupled[0]:.3f} / {coupled[1]:.3f}; shared tuned on the spread "
            f"{row['spread_tuned_mean']:.3f} / {row['spread_tuned_worst10']:.3f}",
            flush=True,
        )
    d_mean = [r["coupled_mean"] - r["shared_mean"] for r in rows]
    d_worst = [r["coupled_worst10"] - r["shared_worst10"] for r in rows]
    met = statistics.fmean(d_mean) > 0 and statistics.fmean(d_worst) > 0
    for label in VARIANTS:
        v_mean = [100 * (r[f"{label}_mean"] - r["shared_mean"]) for r in rows]
        v_worst = [100 * (r[f"{label}_worst10"] - r["shared_worst10"]) for r in rows]
        higher = statistics.fmean(v_mean) > 0 and statistics.fmean(v_worst) > 0
        print(
            f"coupled ({label}) - shared: mean {mean_std(v_mean)} points, worst-10% "
            f"{mean_std(v_worst)} points; both higher: {'yes' if higher else 'no'}"
        )
    print(
        f"\ncoupled - shared (tuned for batch {median}), {len(seeds)} seeds: mean "
        f"{mean_std([100 * d for d in d_mean])} points, worst-10% "
        f"{mean_std([100 * d for d in d_worst])} points; target (both higher): "
        f"{'met' if met else 'NOT met'}"
    )
    return {
        "median_batch": median,
        "grid": grid,
        "tune_seed": tune_seed,
        "tuning": tuning,
        "lr_median": lr_median,
        "lr_spread": lr_spread,
        "variants": VARIANTS,
        "rows": rows,
        "target_met": met,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("all", "grow", "batches"), default="all")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    parser.add_argument("--tune-seed", type=int, default=0)
    parser.add_argument("--grid", type=float, nargs="+", default=[0.1, 0.3, 1.0, 3.0])
    parser.add_argument("--set", action="append", default=[], help="extra key=value overrides")
    parser.add_argument("--json", type=Path, help="write every number here")
    args = parser.parse_args()
    extra = dict(kv.split("=", 1) for kv in args.set)

    payload: dict[str, Any] = {"overrides": args.set, "seeds": args.seeds}
    with tempfile.TemporaryDirectory() as tmp:
        if args.part in ("all", "grow"):
            payload["grow"] = part_grow(args.seeds, Path(tmp), extra)
        if args.part in ("all", "batches"):
            payload["batches"] = part_batches(
                args.seeds, args.tune_seed, args.grid, Path(tmp), extra
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
