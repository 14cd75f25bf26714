"""Do noise-adaptive rates hold? Scenarios x strategies x seeds, paired against FedAvg.

Every run is fedlr's real ServerApp and ClientApp (``fedlr.fl.inprocess``: the same strategies,
messages and checks as ``fedlr simulate``, in one process without Ray). For each scenario and
seed, FedAvg and each variant run on the same data and initial model; the script prints, per
variant, the paired differences to FedAvg (median, mean ± std, wins) of the mean client accuracy
and of the worst-10% (the worst site where there are fewer than 10), Spearman's rho of the
estimate against the injected noise, and the issue's targets, met or not. It writes
``results/robustness.json`` and a plot of the per-seed differences, ``results/robustness.png``.

    python benchmarks/robustness.py                     # the README's table (about 40 min)
    python benchmarks/robustness.py --scenarios noisy_hospitals --seeds 10 11 12 13 14
    python benchmarks/robustness.py --variants noise-adaptive noise-adaptive-legacy

Scenarios:

* ``noisy_hospitals``: the default scenario (seeds 0-9);
* ``pair_flip``: the default with pair-flip noise at rates 0.2-0.45 (seeds 0-9);
* ``pair_flip_high``: pair-flip at the default rates 0.6-0.95, where most clients' labels are a
  relabelling (measured, no target);
* ``heart_clean``: the four real hospitals, nothing injected (seeds 0-9);
* ``heart_noisy``: symmetric label noise 0.3 and 0.4 injected on each of the 6 pairs of sites
  (seeds 0-4 per pair), with logistic regression; ``heart_noisy_mlp`` the same with an MLP.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIM = ROOT / "simulations"

# Keys that give back the plain rule, fedlr before issue 14 (the README's earlier figures).
LEGACY = {"rate-guard": "none", "rate-compensation": 0.0, "noise-response": "none"}
# The variants compared with FedAvg: (strategy, config overrides).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "noise-adaptive": ("noise-adaptive", {}),
    "noise-adaptive-legacy": ("noise-adaptive", LEGACY),
    "oracle-noise-rates": ("oracle-noise-rates", {}),
    "noise-adaptive-crossfit": ("noise-adaptive", {"estimator": "crossfit"}),
    "noise-adaptive-small-loss": ("noise-adaptive", {"noise-response": "small-loss"}),
    "fedprox": ("fedprox", {}),
    "qfedavg": ("qfedavg", {}),
    "fedcorr-prox": ("fedcorr-prox", {}),
}
# Scenarios that are measured for one question only run these variants.
FEW = ["noise-adaptive", "noise-adaptive-legacy", "oracle-noise-rates"]
PAIR_FLIP = {"label-noise": "pair-flip", "noise-rate-min": 0.2, "noise-rate-max": 0.45}
HEART_PAIRS = list(itertools.combinations(range(4), 2))


def heart_noise(pair: tuple[int, int]) -> dict[str, Any]:
    """Symmetric noise 0.3 on the first site of ``pair`` and 0.4 on the second."""
    return {
        "noisy-clients": 2,
        "noisy-client-ids": f"{pair[0]},{pair[1]}",
        "label-noise": "symmetric",
        "noise-rate-min": 0.3,
        "noise-rate-max": 0.4,
    }


# name -> (toml, [(case label, overrides)], default seeds, truth known); ONLY limits variants
SCENARIOS: dict[str, tuple[str, list[tuple[str, dict[str, Any]]], list[int], bool]] = {
    "noisy_hospitals": ("noisy_hospitals.toml", [("", {})], list(range(10)), True),
    "pair_flip": ("noisy_hospitals.toml", [("", PAIR_FLIP)], list(range(10)), True),
    "pair_flip_high": (
        "noisy_hospitals.toml",
        [("", {"label-noise": "pair-flip"})],
        list(range(10)),
        True,
    ),
    "heart_clean": ("heart_disease.toml", [("", {})], list(range(10)), False),
    "heart_noisy": (
        "heart_disease.toml",
        [(f"sites {a},{b}", heart_noise((a, b))) for a, b in HEART_PAIRS],
        list(range(5)),
        True,
    ),
    "heart_noisy_mlp": (
        "heart_disease.toml",
        [(f"sites {a},{b}", {**heart_noise((a, b)), "model": "mlp"}) for a, b in HEART_PAIRS],
        list(range(5)),
        True,
    ),
}
ONLY = {"pair_flip_high": FEW, "heart_noisy_mlp": FEW}
TARGETS = {
    "noisy_hospitals": "median dmean > 0, median dworst10 > 0, dworst10 < -2 on <= 2 seeds",
    "pair_flip": "median dmean > 0, rho >= 0.8",
    "heart_clean": "|median dmean| <= 0.5, median dworst >= -0.5",
    "heart_noisy": "mean over pairs: dmean >= +1, dworst >= 0; rho >= 0.8",
    "heart_noisy_mlp": "rho >= 0.8",
}


def one_run(job: tuple[str, str, dict[str, Any], int]) -> dict[str, Any]:
    """Run one strategy on one scenario case and seed; return its per-client figures."""
    logging.disable(logging.WARNING)  # Flower logs every round at INFO
    os.environ.setdefault("FEDLR_DATA_DIR", str(ROOT.parent / "shared" / "data"))
    import torch

    from fedlr import config as fedlr_config
    from fedlr.fl.inprocess import run_in_process
    from fedlr.metrics.fairness import fairness_summary

    torch.set_num_threads(1)
    toml, strategy, overrides, seed = job
    cfg = fedlr_config.resolve(SIM / toml, {**overrides, "strategies": strategy, "seed": seed})
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = run_in_process(cfg, Path(tmp) / "run")
        result = json.loads((run_dir / "results.json").read_text())["strategies"][strategy]
    clients = result["clients"]
    accuracy = [c["accuracy"] for c in clients]
    summary = fairness_summary(accuracy)
    return {
        "mean": summary["mean"],
        "worst10": summary["worst10"],
        "accuracy": accuracy,
        "noise_true": [c.get("noise_true") for c in clients],
        "noise_estimate": [c.get("noise_estimate") for c in clients],
        "rho": (result.get("estimator") or {}).get("spearman"),
        "seconds": time.perf_counter() - start,
    }


def paired(variant: list[float], base: list[float]) -> dict[str, Any]:
    """Paired differences in points: median, mean, std, wins (> 0), and each seed's value."""
    diff = 100 * (np.asarray(variant) - np.asarray(base))
    return {
        "median": float(np.median(diff)),
        "mean": float(diff.mean()),
        "std": float(diff.std(ddof=1)) if diff.size > 1 else 0.0,
        "wins": int((diff > 0).sum()),
        "losses_over_2": int((diff < -2).sum()),
        "n": int(diff.size),
        "per_seed": [round(float(d), 3) for d in diff],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--seeds", type=int, nargs="+", help="instead of each scenario's own")
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE for every run")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--json", type=Path, default=ROOT / "results" / "robustness.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "results" / "robustness.png")
    args = parser.parse_args()
    from fedlr.config import parse_override

    extra = dict(parse_override(item) for item in args.set)

    jobs: dict[tuple[str, str, int, str], tuple[str, str, dict[str, Any], int]] = {}
    for name in args.scenarios:
        toml, cases, seeds, truth = SCENARIOS[name]
        for (label, overrides), seed in itertools.product(cases, args.seeds or seeds):
            names = ["fedavg", *[v for v in args.variants if v in ONLY.get(name, VARIANTS)]]
            for variant in names:
                strategy, keys = VARIANTS.get(variant, ("fedavg", {}))
                if strategy == "oracle-noise-rates" and not truth:
                    continue
                jobs[(name, label, seed, variant)] = (
                    toml,
                    strategy,
                    {**overrides, **keys, **extra},
                    seed,
                )
    print(f"{len(jobs)} runs on {args.workers} workers", flush=True)
    start = time.perf_counter()
    results: dict[tuple[str, str, int, str], dict[str, Any]] = {}
    with ProcessPoolExecutor(args.workers) as pool:
        futures = {key: pool.submit(one_run, job) for key, job in jobs.items()}
        for i, (key, future) in enumerate(futures.items(), 1):
            results[key] = future.result()
            if i % 10 == 0 or i == len(futures):
                print(f"  {i}/{len(futures)} runs, {time.perf_counter() - start:.0f} s", flush=True)

    report: dict[str, Any] = {
        "command": "python benchmarks/robustness.py " + " ".join(sys.argv[1:]),
        "scenarios": {},
    }
    for name in args.scenarios:
        _, cases, seeds, _truth = SCENARIOS[name]
        seeds = args.seeds or seeds
        out: dict[str, Any] = {"target": TARGETS.get(name, "measured, no target"), "variants": {}}
        base_runs = [results[(name, label, s, "fedavg")] for (label, _), s in _cases(cases, seeds)]
        out["fedavg"] = {
            "mean": float(np.mean([r["mean"] for r in base_runs])),
            "worst10": float(np.mean([r["worst10"] for r in base_runs])),
        }
        for variant in args.variants:
            keys_ = [(name, label, s, variant) for (label, _), s in _cases(cases, seeds)]
            if any(k not in results for k in keys_):
                continue
            runs = [results[k] for k in keys_]
            rhos = [r["rho"] for r in runs if r["rho"] is not None]
            entry = {
                "dmean": paired([r["mean"] for r in runs], [r["mean"] for r in base_runs]),
                "dworst10": paired([r["worst10"] for r in runs], [r["worst10"] for r in base_runs]),
                "rho_median": float(np.median(rhos)) if rhos else None,
                "rho_mean": float(np.mean(rhos)) if rhos else None,
                "seconds_median": float(np.median([r["seconds"] for r in runs])),
            }
            if len(cases) > 1:  # per case (pair of sites): means over its seeds
                entry["cases"] = {
                    label: {
                        "dmean": float(
                            100
                            * np.mean(
                                [
                                    results[(name, label, s, variant)]["mean"]
                                    - results[(name, label, s, "fedavg")]["mean"]
                                    for s in seeds
                                ]
                            )
                        ),
                        "dworst10": float(
                            100
                            * np.mean(
                                [
                                    results[(name, label, s, variant)]["worst10"]
                                    - results[(name, label, s, "fedavg")]["worst10"]
                                    for s in seeds
                                ]
                            )
                        ),
                    }
                    for label, _ in cases
                }
            entry["targets"] = [
                {"target": what, "measured": value, "met": met}
                for what, value, met in check_targets(name, entry)
            ]
            out["variants"][variant] = entry
        out["seeds"] = seeds
        out["runs"] = {
            f"{label or 'default'}|{s}|{v}": results[(name, label, s, v)]
            for (label, _), s in _cases(cases, seeds)
            for v in ["fedavg", *args.variants]
            if (name, label, s, v) in results
        }
        report["scenarios"][name] = out
        _print(name, out)
    report["seconds"] = time.perf_counter() - start
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    _plot(report, args.plot)
    print(f"wrote {args.json} and {args.plot} ({report['seconds']:.0f} s)")


def _cases(cases: list[tuple[str, dict[str, Any]]], seeds: list[int]):
    return list(itertools.product(cases, seeds))


def check_targets(name: str, entry: dict[str, Any]) -> list[tuple[str, float, bool]]:
    """The issue's targets for one variant of scenario ``name``: (what, measured, met)."""
    m, w, rho = entry["dmean"], entry["dworst10"], entry["rho_mean"]
    rho = float("nan") if rho is None else rho
    if name == "noisy_hospitals":
        return [
            ("median dmean > 0", m["median"], m["median"] > 0),
            ("median dworst10 > 0", w["median"], w["median"] > 0),
            ("seeds with dworst10 < -2 <= 2", w["losses_over_2"], w["losses_over_2"] <= 2),
            ("stretch: mean dmean >= +3", m["mean"], m["mean"] >= 3),
        ]
    if name == "pair_flip":
        return [
            ("median dmean > 0", m["median"], m["median"] > 0),
            ("rho >= 0.8", rho, rho >= 0.8),
        ]
    if name == "heart_clean":
        return [
            ("|median dmean| <= 0.5", m["median"], abs(m["median"]) <= 0.5),
            ("median dworst >= -0.5", w["median"], w["median"] >= -0.5),
        ]
    if name == "heart_noisy":  # every pair has the same seeds: the mean over runs is over pairs
        return [
            ("mean over pairs dmean >= +1", m["mean"], m["mean"] >= 1),
            ("mean over pairs dworst >= 0", w["mean"], w["mean"] >= 0),
            ("rho >= 0.8 (logistic regression)", rho, rho >= 0.8),
        ]
    if name == "heart_noisy_mlp":
        return [("rho >= 0.8 (MLP)", rho, rho >= 0.8)]
    return []


def _print(name: str, out: dict[str, Any]) -> None:
    print(
        f"\n== {name}: FedAvg mean {100 * out['fedavg']['mean']:.1f}, worst "
        f"{100 * out['fedavg']['worst10']:.1f}; target: {out['target']}"
    )
    print(
        f"{'variant':24s} {'dmean med':>9s} {'mean±std':>12s} {'wins':>6s} "
        f"{'dworst med':>10s} {'mean±std':>12s} {'wins':>6s} {'<-2':>4s} {'rho':>6s}"
    )
    for variant, e in out["variants"].items():
        m, w = e["dmean"], e["dworst10"]
        rho = "" if e["rho_median"] is None else f"{e['rho_median']:.2f}"
        print(
            f"{variant:24s} {m['median']:+9.2f} {m['mean']:+6.2f}±{m['std']:<5.2f} "
            f"{m['wins']:>3d}/{m['n']:<2d} {w['median']:+10.2f} {w['mean']:+6.2f}±{w['std']:<5.2f} "
            f"{w['wins']:>3d}/{w['n']:<2d} {w['losses_over_2']:>4d} {rho:>6s}"
        )
    for variant in ("noise-adaptive",):
        for t in out["variants"].get(variant, {}).get("targets", []):
            verdict = "met" if t["met"] else "NOT met"
            print(f"  {variant}: {t['target']}: {t['measured']:+.2f} -> {verdict}")


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["scenarios"])
    fig, axes = plt.subplots(2, len(names), figsize=(3.6 * len(names), 6.5), squeeze=False)
    for col, name in enumerate(names):
        variants = report["scenarios"][name]["variants"]
        for row, metric in enumerate(("dmean", "dworst10")):
            ax = axes[row][col]
            labels = list(variants)
            for i, variant in enumerate(labels):
                values = variants[variant][metric]["per_seed"]
                jitter = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else [0.0]
                ax.scatter(i + np.asarray(jitter), values, s=12, alpha=0.7)
                ax.hlines(np.median(values), i - 0.3, i + 0.3, color="k")
            ax.axhline(0, color="grey", lw=0.8, ls="--")
            ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
            ax.set_title(f"{name}: {'mean' if row == 0 else 'worst-10%'}", fontsize=9)
            if col == 0:
                ax.set_ylabel("points vs FedAvg (per seed)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
