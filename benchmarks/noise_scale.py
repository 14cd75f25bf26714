"""Federated gradient-noise-scale estimator against the closed form, on linear regression.

Issue target: "Noise-scale estimate within 2% of the closed form with 8 or more clients
(federated estimator) on the linear-regression case; report the bias with 2 clients."

The case: per-example loss 0.5 (x.w - y)^2, x ~ N(0, I_d), y = x.w* + eps, eps ~ N(0, s^2). At
weights w with delta = w - w*, the per-example gradient is x (x.delta - eps), so G = delta and
Sigma = (|delta|^2 + s^2) I + delta delta^T (Isserlis), and

    B_simple = tr Sigma / |G|^2 = d (1 + s^2 / |delta|^2) + 1      (>= d + 1).

With d = 500, |delta| = 1 and s = 0.5 it is 626. In every round each of K clients reports its
mean gradient over b_k fresh examples at the same weights; ``fedlr.rates.coupling.
federated_terms`` turns the round into estimates of |G|^2 and tr Sigma. Per row the script
prints

* ``ratio of means``: mean(tr Sigma estimates) / mean(|G|^2 estimates) over all rounds (what
  ``NoiseScaleEMA`` converges to), its relative error and that error's standard error (delta
  method);
* ``median ratio``: the median over rounds of the per-round ratio, the biased way;
* ``EMA 0.99``: ``NoiseScaleEMA(0.99)`` as a run would use it (gpt-neox's beta): the median of
  its running value after the first 500 rounds and its 10-90% band, as relative errors.

Sampling: the estimator only sees norms and inner products of the gradients, which do not change
under a rotation, so delta can lie along e_1. Then client k's mean gradient is
(1/b) sum_i x_i r_i with r_i = |delta| x_i1 - eps_i; its first coordinate is computed from the
draws, and given r the other d - 1 coordinates are exactly N(0, |r|^2 I) / b. This draws 2 b + d
numbers per client instead of b d; ``--direct`` draws every x_i instead (slow; for
cross-checking).

    .venv/bin/python benchmarks/noise_scale.py --json results/noise_scale.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from fedlr.rates.coupling import NoiseScaleEMA, federated_terms

TARGET_REL_ERROR = 0.02
TARGET_MIN_CLIENTS = 8
EMA_WARMUP_ROUNDS = 500


def true_terms(dim: int, offset_norm: float, label_noise_sd: float) -> tuple[float, float]:
    """Closed-form (|G|^2, tr Sigma) of the regression case."""
    g2 = offset_norm**2
    return g2, dim * (g2 + label_noise_sd**2) + g2


def client_gradients(
    rng: np.random.Generator,
    batch_sizes: list[int],
    rounds: int,
    dim: int,
    offset_norm: float,
    label_noise_sd: float,
    direct: bool,
) -> np.ndarray:
    """(rounds, K, dim): client k's mean gradient over b_k fresh examples, delta = |delta| e_1."""
    out = np.empty((rounds, len(batch_sizes), dim))
    for k, batch in enumerate(batch_sizes):
        eps = rng.normal(scale=label_noise_sd, size=(rounds, batch))
        if direct:
            x = rng.normal(size=(rounds, batch, dim))
            residual = offset_norm * x[:, :, 0] - eps
            out[:, k] = np.einsum("rbd,rb->rd", x, residual) / batch
            continue
        first = rng.normal(size=(rounds, batch))
        residual = offset_norm * first - eps
        out[:, k, 0] = np.sum(first * residual, axis=1) / batch
        residual_norm = np.sqrt(np.sum(residual**2, axis=1))
        out[:, k, 1:] = rng.normal(size=(rounds, dim - 1)) * (residual_norm / batch)[:, None]
    return out


def measure(batch_sizes: list[int], args: argparse.Namespace, seed: int) -> dict:
    """Run the federated estimator for ``args.rounds`` rounds; summarise against the truth."""
    g2_true, trace_true = true_terms(args.dim, args.offset_norm, args.label_noise_sd)
    truth = trace_true / g2_true
    rng = np.random.default_rng(seed)
    terms = np.empty((args.rounds, 2))
    done = 0
    while done < args.rounds:
        chunk = min(args.chunk, args.rounds - done)
        grads = client_gradients(
            rng,
            batch_sizes,
            chunk,
            args.dim,
            args.offset_norm,
            args.label_noise_sd,
            args.direct,
        )
        for i in range(chunk):
            terms[done + i] = federated_terms(grads[i], batch_sizes)
        done += chunk
    g2_mean, trace_mean = terms.mean(axis=0)
    ratio_of_means = trace_mean / g2_mean
    # Delta method: var(T/G) ~ var(T - ratio * G) / (n G^2).
    standard_error = float(
        np.std(terms[:, 1] - ratio_of_means * terms[:, 0], ddof=1)
        / (math.sqrt(args.rounds) * g2_mean)
    )
    per_round = terms[:, 1] / terms[:, 0]
    ema = NoiseScaleEMA(decay=args.decay)
    running = np.array([ema.update(g2, trace) for g2, trace in terms])[EMA_WARMUP_ROUNDS:]
    running_rel = running / truth - 1
    return {
        "clients": len(batch_sizes),
        "batch_sizes": batch_sizes,
        "true_b_simple": truth,
        "mean_g2": float(g2_mean),
        "mean_trace": float(trace_mean),
        "true_g2": g2_true,
        "true_trace": trace_true,
        "ratio_of_means": float(ratio_of_means),
        "ratio_of_means_rel_error": float(ratio_of_means / truth - 1),
        "ratio_of_means_rel_se": standard_error / truth,
        "median_per_round_ratio": float(np.median(per_round)),
        "median_per_round_rel_error": float(np.median(per_round) / truth - 1),
        "share_rounds_g2_not_positive": float(np.mean(terms[:, 0] <= 0)),
        "ema_median_rel_error": float(np.nanmedian(running_rel)),
        "ema_p10_rel_error": float(np.nanpercentile(running_rel, 10)),
        "ema_p90_rel_error": float(np.nanpercentile(running_rel, 90)),
    }


def describe(batch_sizes: list[int]) -> str:
    if len(set(batch_sizes)) == 1:
        return f"{len(batch_sizes)} x {batch_sizes[0]}"
    return f"{min(batch_sizes)}..{max(batch_sizes)} ({sum(batch_sizes)})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dim", type=int, default=500)
    parser.add_argument("--offset-norm", type=float, default=1.0, help="|w - w*|")
    parser.add_argument("--label-noise-sd", type=float, default=0.5, help="s")
    parser.add_argument("--clients", type=int, nargs="+", default=[2, 4, 8, 16, 32])
    parser.add_argument("--batch", type=int, default=32, help="each client's batch (equal rows)")
    parser.add_argument(
        "--unequal",
        type=int,
        nargs="*",
        default=[int(b) for b in np.geomspace(8, 256, 8).round()],
        help="batch sizes of the unequal row (8 clients, 8..256 by default); none: no such row",
    )
    parser.add_argument("--rounds", type=int, default=20_000)
    parser.add_argument("--decay", type=float, default=0.99, help="NoiseScaleEMA decay")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk", type=int, default=500, help="rounds sampled at once")
    parser.add_argument("--direct", action="store_true", help="sample every x_i (slow)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.rounds <= EMA_WARMUP_ROUNDS:
        parser.error(f"--rounds: expected more than {EMA_WARMUP_ROUNDS}")

    configs = [[args.batch] * k for k in args.clients]
    if args.unequal:
        configs.append(list(args.unequal))
    start = time.perf_counter()
    rows = [measure(sizes, args, args.seed + i) for i, sizes in enumerate(configs)]
    elapsed = time.perf_counter() - start

    truth = rows[0]["true_b_simple"]
    print(
        f"linear regression, d = {args.dim}, |delta| = {args.offset_norm}, "
        f"s = {args.label_noise_sd}: true B_simple = {truth:.1f}; "
        f"{args.rounds} rounds per row, seed {args.seed}"
    )
    print(
        f"{'clients x batch':>22s} {'ratio of means':>15s} {'rel err':>8s} {'+- s.e.':>8s} "
        f"{'median ratio':>13s} {'rel err':>8s} {'G2<=0':>6s} {'EMA 0.99 med':>13s} "
        f"{'10-90% band':>16s}"
    )
    for row in rows:
        print(
            f"{describe(row['batch_sizes']):>22s} {row['ratio_of_means']:15.1f} "
            f"{100 * row['ratio_of_means_rel_error']:+7.2f}% "
            f"{100 * row['ratio_of_means_rel_se']:7.2f}% "
            f"{row['median_per_round_ratio']:13.1f} "
            f"{100 * row['median_per_round_rel_error']:+7.1f}% "
            f"{100 * row['share_rounds_g2_not_positive']:5.1f}% "
            f"{100 * row['ema_median_rel_error']:+12.2f}% "
            f"{100 * row['ema_p10_rel_error']:+7.1f}..{100 * row['ema_p90_rel_error']:+.1f}%"
        )
    judged = [r for r in rows if r["clients"] >= TARGET_MIN_CLIENTS]
    worst = max(abs(r["ratio_of_means_rel_error"]) for r in judged)
    met = worst <= TARGET_REL_ERROR
    two = [r for r in rows if r["clients"] == 2]
    print(
        f"\ntarget (ratio of means within {100 * TARGET_REL_ERROR:.0f}% with >= "
        f"{TARGET_MIN_CLIENTS} clients): {'MET' if met else 'NOT MET'} "
        f"(worst |rel err| {100 * worst:.2f}% over {len(judged)} rows)"
    )
    for row in two:
        print(
            f"2 clients of {row['batch_sizes'][0]}: ratio of means "
            f"{100 * row['ratio_of_means_rel_error']:+.2f}% "
            f"(+- {100 * row['ratio_of_means_rel_se']:.2f}% s.e.), median per-round ratio "
            f"{100 * row['median_per_round_rel_error']:+.1f}%, |G|^2 estimate <= 0 in "
            f"{100 * row['share_rounds_g2_not_positive']:.1f}% of rounds"
        )
    print(f"({elapsed:.1f} s)")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        result = {
            "settings": vars(args) | {"json": None},
            "true_b_simple": truth,
            "target": {
                "rel_error": TARGET_REL_ERROR,
                "min_clients": TARGET_MIN_CLIENTS,
                "worst_rel_error": worst,
                "met": met,
            },
            "seconds": elapsed,
            "rows": rows,
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
