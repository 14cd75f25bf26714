"""Sweep the rate rule's exponent and upper bound with the true noise (oracle rates).

Runs ``benchmarks/plain_loop.py`` (the same computation as ``fedlr simulate``, without Flower) on
``noisy_hospitals`` for seeds 0-2: FedAvg with uniform rates once, then oracle rates for every
(rate-power, rate-high) pair, and prints the change in mean, worst-10% and variance.

    python benchmarks/rule_sweep.py [--powers 0.5 1 2 3] [--highs 3 4 6] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plain_loop import run_plain  # noqa: E402

from fedlr import config as fedlr_config  # noqa: E402
from fedlr.metrics.fairness import fairness_summary  # noqa: E402


def mean_summary(overrides: dict[str, Any], rates: str, seeds: list[int]) -> dict[str, float]:
    summaries = [
        fairness_summary(
            run_plain(fedlr_config.resolve(overrides={**overrides, "seed": s}), rates)["accuracy"]
        )
        for s in seeds
    ]
    return {k: float(np.mean([x[k] for x in summaries])) for k in ("mean", "worst10", "variance")}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--powers", type=float, nargs="+", default=[0.5, 1.0, 2.0, 3.0])
    parser.add_argument("--highs", type=float, nargs="+", default=[3.0, 4.0, 6.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    base = mean_summary({}, "uniform", args.seeds)
    print(
        f"fedavg: mean {100 * base['mean']:.1f}  worst-10% {100 * base['worst10']:.1f}  "
        f"variance {1e4 * base['variance']:.1f}  (seeds {args.seeds})"
    )
    print(f"{'rate-power':>10s} {'rate-high':>9s} {'d mean':>7s} {'d worst':>8s} {'d var':>6s}")
    for power in args.powers:
        for high in args.highs:
            o = mean_summary({"rate-power": power, "rate-high": high}, "oracle", args.seeds)
            print(
                f"{power:10.1f} {high:9.1f} {100 * (o['mean'] - base['mean']):+7.1f} "
                f"{100 * (o['worst10'] - base['worst10']):+8.1f} "
                f"{100 * (o['variance'] / base['variance'] - 1):+5.0f}%",
                flush=True,
            )


if __name__ == "__main__":
    main()
