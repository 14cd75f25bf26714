"""The same federated computation as ``fedlr simulate``, as one plain PyTorch loop (no Flower).

Used by ``benchmarks/overhead.py`` as the reference for framework overhead, and handy to check
that the Flower path computes what the arithmetic says. Same data, same initial weights, same
batches (seeded by seed, partition id and round), FedAvg weighted by example counts.

    python benchmarks/plain_loop.py --set num-server-rounds=30 --rates oracle
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from fedlr import config as fedlr_config
from fedlr.rates.noise import NoiseEMA, inverse_noise_rule
from fedlr.tasks import tabular


def run_plain(
    cfg: Mapping[str, Any], rates: str = "uniform", *, trace: bool = False
) -> dict[str, Any]:
    """Run FedAvg with ``rates`` in {"uniform", "oracle", "estimate"} and return the results."""
    torch.set_num_threads(1)
    fed = tabular.federation(cfg)
    model = tabular.build_model(cfg)
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    sizes = np.array([len(c.y_train) for c in fed.clients], dtype=float)
    rule = inverse_noise_rule(
        power=cfg["rate-power"],
        low=cfg["rate-low"],
        high=cfg["rate-high"],
        floor=cfg["noise-floor"],
    )
    ema = NoiseEMA(decay=cfg["ema-decay"])
    history = []
    for server_round in range(1, cfg["num-server-rounds"] + 1):
        factors = np.ones(len(fed.clients))
        if rates == "oracle":
            factors = rule(np.array([c.flip_fraction for c in fed.clients]), sizes)
        elif rates == "estimate" and server_round > cfg["warmup-rounds"] and ema.values:
            factors = rule(np.array([ema.values[c.partition_id] for c in fed.clients]), sizes)
        states, estimates = [], []
        for client in fed.clients:
            model.load_state_dict(global_state)
            seed = int(
                np.random.SeedSequence(
                    [cfg["seed"], client.partition_id, server_round]
                ).generate_state(1)[0]
            )
            if rates == "estimate":
                estimates.append(tabular.estimate_noise(model, client, cfg["estimator"], seed=seed))
            tabular.train_local(
                model,
                client,
                lr=cfg["lr"] * factors[client.partition_id],
                epochs=cfg["local-epochs"],
                batch_size=cfg["batch-size"],
                optimizer=cfg["optimizer"],
                momentum=cfg["momentum"],
                seed=seed,
            )
            states.append({k: v.clone() for k, v in model.state_dict().items()})
        if rates == "estimate" and server_round >= cfg["warmup-rounds"]:
            for client, value in zip(fed.clients, estimates, strict=True):
                ema.update(client.partition_id, value)
        weights = sizes / sizes.sum()
        global_state = {
            k: sum(float(w) * s[k] for w, s in zip(weights, states, strict=True))
            for k in global_state
        }
        if trace or server_round == cfg["num-server-rounds"]:
            model.load_state_dict(global_state)
            acc = [tabular.evaluate(model, c.x_test, c.y_test)[1] for c in fed.clients]
            history.append(acc)
    return {
        "accuracy": history[-1],
        "history": history,
        "estimates": dict(ema.values),
        "noise_true": [c.flip_fraction for c in fed.clients],
        "lr": (cfg["lr"] * factors).tolist(),
        "state": global_state,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--set", action="append", default=[], help="key=value config override")
    parser.add_argument("--rates", default="uniform", choices=["uniform", "oracle", "estimate"])
    args = parser.parse_args()
    cfg = fedlr_config.resolve(overrides=dict(fedlr_config.parse_override(s) for s in args.set))
    start = time.perf_counter()
    out = run_plain(cfg, args.rates)
    acc = np.array(out["accuracy"])
    print(
        f"{args.rates}: mean {100 * acc.mean():.1f}  worst-10% {100 * np.sort(acc)[0]:.1f}  "
        f"variance {1e4 * acc.var():.1f}  ({time.perf_counter() - start:.1f} s)"
    )


if __name__ == "__main__":
    main()
