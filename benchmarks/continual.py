"""Continual federated learning: cosine phases, replay and snapshot ensembles (issue 6's targets).

Runs ``fedlr simulate simulations/continual_digits.toml --set seed=S --set stream=STREAM`` for
each seed and stream, as a user does (Flower's simulation engine, 5 sites, five tasks arriving
together every 5 rounds, the scenario's strategies side by side on the same sites, initial
weights and batches), reads each run's ``results.json`` and prints, per strategy, mean +- std
over seeds of the pooled accuracy matrix's

* ``ACC``: GEM average accuracy over the 5 tasks after the last one (the final model);
* ``LA``: learning accuracy (Riemer et al. 2019), the accuracy on each task just after
  training it (plasticity: a rate that stops learning forgets less but scores low here);
* ``BWT``: GEM backward transfer (negative: forgetting), in points;
* ``forgetting``: Chaudhry et al.'s max-based forgetting, in points;
* ``ensemble``: the snapshot ensemble's (the global models kept at each task's end, averaged
  predictions) average accuracy, and ``ens - final`` its gain over the final model.

Targets (split digits, seeds 0-2): ``fedavg+phases`` (a cosine phase per task) reduces forgetting
by at least 30% relative to ``fedavg`` (constant rate) with equal or better ACC; the snapshot
ensemble beats the final model on ACC. Both are checked per stream and printed as met / NOT met.

    .venv/bin/python benchmarks/continual.py --json results/continual.json
    .venv/bin/python benchmarks/continual.py --seeds 0 --streams class-incremental   # ~1 min
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from gnn_cora import ROOT, fmt, run_seed

TREATED, CONTROL = "fedavg+phases", "fedavg"
COLUMNS = ("acc", "learning_acc", "bwt", "forgetting", "final_acc", "ensemble_acc")


def row(entry: dict[str, Any]) -> dict[str, float | None]:
    """The benchmark's numbers for one strategy of one run."""
    block = entry["continual"]
    out = {key: block.get(key) for key in COLUMNS}
    final, ensemble = block.get("final_acc"), block.get("ensemble_acc")
    out["ensemble_gain"] = ensemble - final if final is not None and ensemble is not None else None
    return out


def table(rows: dict[str, list[dict[str, float | None]]]) -> list[str]:
    """Markdown table of mean +- std over seeds (ACC and ensemble in %, the rest in points)."""
    header = ["strategy", "ACC", "LA", "BWT", "forgetting", "ensemble", "ens - final"]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for strategy, per_seed in rows.items():
        cells = []
        for key in ("acc", "learning_acc", "bwt", "forgetting", "ensemble_acc", "ensemble_gain"):
            values = [r[key] for r in per_seed]
            cells.append("-" if any(v is None for v in values) else fmt(values))
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    return lines


def targets(rows: dict[str, list[dict[str, float | None]]], seeds: list[int]) -> dict[str, Any]:
    """The two targets, per seed and on the mean over seeds."""
    out: dict[str, Any] = {}
    if TREATED in rows and CONTROL in rows:
        pairs = list(zip(rows[TREATED], rows[CONTROL], strict=True))
        relative = [
            (t["forgetting"] - c["forgetting"]) / c["forgetting"]
            if t["forgetting"] is not None and c["forgetting"]
            else None
            for t, c in pairs
        ]
        d_acc = [t["acc"] - c["acc"] for t, c in pairs]
        mean_t = statistics.fmean(t["forgetting"] for t, _ in pairs)
        mean_c = statistics.fmean(c["forgetting"] for _, c in pairs)
        reduction = (mean_c - mean_t) / mean_c if mean_c else None
        out["phases_vs_constant"] = {
            "forgetting_relative_per_seed": dict(zip(seeds, relative, strict=True)),
            "acc_difference_per_seed": dict(zip(seeds, d_acc, strict=True)),
            "forgetting_reduction_of_means": reduction,
            "acc_difference_mean": statistics.fmean(d_acc),
            "met": reduction is not None and reduction >= 0.30 and statistics.fmean(d_acc) >= 0.0,
        }
    out["ensemble_vs_final"] = {
        strategy: {
            "gain_per_seed": dict(zip(seeds, [r["ensemble_gain"] for r in per_seed], strict=True)),
            "met": all(r["ensemble_gain"] is not None and r["ensemble_gain"] > 0 for r in per_seed),
        }
        for strategy, per_seed in rows.items()
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--config", type=Path, default=ROOT / "simulations" / "continual_digits.toml"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--streams",
        nargs="+",
        default=["class-incremental", "task-incremental", "permuted"],
        help="streams to run (the targets are on the split streams)",
    )
    parser.add_argument("--set", action="append", default=[], help="extra key=value overrides")
    parser.add_argument("--json", type=Path, help="write every number here")
    args = parser.parse_args()
    extra = [arg for kv in args.set for arg in ("--set", kv)]

    payload: dict[str, Any] = {
        "config": str(args.config.relative_to(ROOT))
        if args.config.is_absolute()
        else str(args.config),
        "overrides": args.set,
        "seeds": args.seeds,
        "streams": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for stream in args.streams:
            runs: dict[int, dict[str, Any]] = {}
            for seed in args.seeds:
                out = Path(tmp) / f"{stream}-seed{seed}"
                runs[seed] = run_seed(args.config, seed, out, [*extra, "--set", f"stream={stream}"])
                print(f"{stream} seed {seed}: {runs[seed]['wall_s']:.0f} s", flush=True)
            strategies = list(runs[args.seeds[0]]["strategies"])
            rows = {
                s: [row(runs[seed]["strategies"][s]) for seed in args.seeds] for s in strategies
            }
            found = targets(rows, args.seeds)
            print(f"\n{stream}, seeds {', '.join(map(str, args.seeds))}: mean +- std, ACC in %")
            print("\n".join(table(rows)))
            phases = found.get("phases_vs_constant")
            if phases is not None:
                reduction = phases["forgetting_reduction_of_means"]
                print(
                    f"\n{TREATED} vs {CONTROL}: forgetting "
                    f"{-100 * reduction if reduction is not None else float('nan'):+.1f}% "
                    f"(relative, of the means), ACC {100 * phases['acc_difference_mean']:+.1f} "
                    f"points; target (forgetting -30% or more, ACC >= 0): "
                    f"{'met' if phases['met'] else 'NOT met'}"
                )
            beaten = [s for s, v in found["ensemble_vs_final"].items() if v["met"]]
            print(
                f"snapshot ensemble beats the final model on every seed for {len(beaten)} of "
                f"{len(strategies)} strategies: {', '.join(beaten) or '-'}"
            )
            payload["streams"][stream] = {
                "rows": rows,
                "targets": found,
                "wall_s": {seed: runs[seed]["wall_s"] for seed in args.seeds},
            }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
