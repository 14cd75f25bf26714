"""Noise estimators compared: ranking quality and the hard-but-clean trap.

Trains plain FedAvg (uniform rates, ``benchmarks/plain_loop.py``) on ``noisy_hospitals`` for R
rounds, then lets every client estimate its noise with the resulting global model. Prints, per
estimator, Spearman's rho against the fraction of labels actually flipped (mean and min over
seeds), and the estimate of the hard-but-clean client next to the mean of the noisy clients and
the clean client.

    python benchmarks/estimators.py [--rounds 5 15 30] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plain_loop import run_plain  # noqa: E402

from fedlr import config as fedlr_config  # noqa: E402
from fedlr.metrics.fairness import spearman_rho  # noqa: E402
from fedlr.rates.noise import loss_mixture_noise, margin_losses  # noqa: E402
from fedlr.tasks import tabular  # noqa: E402


def estimates(model, client) -> dict[str, float]:
    """Every estimator (fedlr's three plus a mixture on margins, for comparison)."""
    lp = tabular.log_probs(model, client.x_train)
    labels = np.asarray(client.y_train, dtype=int)
    return {
        "loss-margin": tabular.estimate_noise(model, client, "loss-margin"),
        "loss (mixture on CE)": tabular.estimate_noise(model, client, "loss"),
        "loss + BIC check": loss_mixture_noise(-lp[np.arange(len(labels)), labels], bic_check=True),
        "mixture on margins": loss_mixture_noise(margin_losses(lp, labels)),
        "gradient": tabular.estimate_noise(model, client, "gradient"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, nargs="+", default=[5, 15, 30])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    for rounds in args.rounds:
        table: dict[str, list[tuple[float, float, float, float]]] = {}
        for seed in args.seeds:
            cfg = fedlr_config.resolve(overrides={"seed": seed, "num-server-rounds": rounds})
            out = run_plain(cfg, "uniform")
            model = tabular.build_model(cfg)
            model.load_state_dict(out["state"])
            clients = tabular.federation(cfg).clients
            per_client = [estimates(model, c) for c in clients]
            truth = [c.flip_fraction for c in clients]
            roles = [c.role for c in clients]
            for name in per_client[0]:
                values = np.array([e[name] for e in per_client])
                table.setdefault(name, []).append(
                    (
                        spearman_rho(values, truth),
                        float(values[[r == "hard-clean" for r in roles]].mean()),
                        float(values[[r == "noisy" for r in roles]].mean()),
                        float(values[[r == "clean" for r in roles]].mean()),
                    )
                )
        print(f"\nafter {rounds} rounds of FedAvg, seeds {args.seeds}")
        print(
            f"  {'estimator':22s} {'rho mean':>8s} {'rho min':>8s} {'hard-clean':>11s} "
            f"{'noisy mean':>11s} {'clean':>8s}"
        )
        for name, rows in table.items():
            r = np.array(rows)
            print(
                f"  {name:22s} {r[:, 0].mean():8.2f} {r[:, 0].min():8.2f} {r[:, 1].mean():11.3f} "
                f"{r[:, 2].mean():11.3f} {r[:, 3].mean():8.3f}"
            )


if __name__ == "__main__":
    main()
