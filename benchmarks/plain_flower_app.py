"""A plain Flower app doing fedlr's local work: the reference for fedlr's own overhead.

What a Flower user would write for this task, on Flower's stock ``FedAvg``: one ClientApp
(``@app.train()``, ``@app.evaluate()``) and one ServerApp that calls ``FedAvg.start``. No query
round, no per-client configs, no run directory, no report. The fedlr run config (all scalars)
travels in the message ConfigRecord, so the ClientApp holds no configuration of its own.

Same compute as fedlr's ClientApp, on purpose, so that ``benchmarks/overhead.py`` compares
frameworks and not work: per train message the loss of the received model on the train split
(fedlr sends it as q-FFL's ``train_loss``), the noise estimate of the configured ``estimator``
(fedlr's noise-adaptive asks for it every round), then ``train_local`` with the same epochs, batch
size and seed (``SeedSequence([seed, partition id, round])``); per evaluate message the loss and
accuracy on the client's test split. The only difference in work: every client gets the base
``lr`` (fedlr's rates change the step size, not the number of steps).

Deliberately plain: no ``gc.freeze()`` (fedlr's ServerApp freezes the heap after start-up, which
also spares it ~1 s of garbage collection at interpreter exit on this machine).

    python benchmarks/plain_flower_app.py --set num-clients=10 --set num-server-rounds=3
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from fedlr import config as fedlr_config
from fedlr.tasks import tabular

app = ClientApp()


def _load(msg: Message, context: Context) -> tuple[dict[str, Any], int, Any, torch.nn.Module]:
    torch.set_num_threads(1)  # one core per simulated client, as fedlr's ClientApp
    cfg = dict(msg.content["config"])
    pid = int(context.node_config["partition-id"])
    data = tabular.client_data(cfg, pid)
    model = tabular.build_model(cfg)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    return cfg, pid, data, model


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Loss of the received model, a noise estimate, then local SGD (fedlr's forward passes)."""
    cfg, pid, data, model = _load(msg, context)
    server_round = int(cfg["server-round"])
    seed = int(np.random.SeedSequence([cfg["seed"], pid, server_round]).generate_state(1)[0])
    received_loss, _ = tabular.evaluate(model, data.x_train, data.y_train)
    estimate = tabular.estimate_noise(model, data, cfg["estimator"], seed=seed)
    tabular.train_local(
        model,
        data,
        lr=cfg["lr"],
        epochs=cfg["local-epochs"],
        batch_size=cfg["batch-size"],
        optimizer=cfg["optimizer"],
        momentum=cfg["momentum"],
        seed=seed,
    )
    metrics = MetricRecord(
        {
            "num-examples": len(data.y_train),
            "train_loss": received_loss,
            "noise-estimate": float(estimate),
        }
    )
    content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics})
    return Message(content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Loss and accuracy of the received global model on the client's test split."""
    _, _, data, model = _load(msg, context)
    loss, accuracy = tabular.evaluate(model, data.x_test, data.y_test)
    metrics = MetricRecord({"num-examples": len(data.y_test), "accuracy": accuracy, "loss": loss})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


def make_server_app(
    cfg: Mapping[str, Any], events: Path | None = None, results: dict[str, Any] | None = None
) -> ServerApp:
    """A ServerApp running Flower's ``FedAvg`` on all ``num-clients`` nodes for the run's rounds.

    ``events`` (JSON lines) gets ``{"round": r, "t": <unix time>}`` after each round (from
    ``evaluate_fn``, round 0 = before training); ``results`` gets Flower's ``Result``.
    """
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        k = cfg["num-clients"]
        strategy = FedAvg(
            fraction_train=1.0,
            fraction_evaluate=1.0,
            min_train_nodes=k,
            min_evaluate_nodes=k,
            min_available_nodes=k,
        )
        log = open(events, "a", encoding="utf-8") if events else None  # noqa: SIM115

        def evaluate_fn(server_round: int, _arrays: ArrayRecord) -> None:
            if log is not None:
                log.write(json.dumps({"round": server_round, "t": time.time()}) + "\n")
                log.flush()

        try:
            result = strategy.start(
                grid=grid,
                initial_arrays=ArrayRecord(tabular.build_model(cfg).state_dict()),
                num_rounds=cfg["num-server-rounds"],
                train_config=ConfigRecord(dict(cfg)),
                evaluate_config=ConfigRecord(dict(cfg)),
                evaluate_fn=evaluate_fn,
            )
        finally:
            if log is not None:
                log.close()
        if results is not None:
            results["result"] = result

    return server_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", action="append", default=[], help="fedlr config key=value")
    parser.add_argument("--events", type=Path, help="append one JSON line per round here")
    parser.add_argument("--verbose", action="store_true", help="show Flower's and Ray's logs")
    args = parser.parse_args()
    cfg = fedlr_config.resolve(overrides=dict(fedlr_config.parse_override(s) for s in args.set))

    # The same quiet engine as `fedlr simulate`, so that logging is not what is compared.
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    if not args.verbose:
        os.environ.setdefault("RAY_LOG_TO_STDERR", "0")
        import warnings

        warnings.filterwarnings("ignore")
    from flwr.simulation import run_simulation

    if not args.verbose:
        logging.getLogger("flwr").setLevel(logging.ERROR)

    # Import ourselves by module name (not __main__), so the ClientApp pickles by reference; Ray
    # workers find this folder because Flower's Ray backend exports the driver's sys.path.
    import plain_flower_app as this

    results: dict[str, Any] = {}
    start = time.perf_counter()
    run_simulation(
        server_app=this.make_server_app(cfg, args.events, results),
        client_app=this.app,
        num_supernodes=cfg["num-clients"],
        backend_config={
            "client_resources": {"num_cpus": cfg["client-cpus"], "num_gpus": 0.0},
            "init_args": {"logging_level": "ERROR", "log_to_driver": args.verbose},
        },
        verbose_logging=args.verbose,
    )
    if "result" not in results:
        sys.exit("plain-flower: the ServerApp did not finish (rerun with --verbose)")
    final = results["result"].evaluate_metrics_clientapp.get(cfg["num-server-rounds"], {})
    accuracy = final.get("accuracy") if final else None
    shown = f"{100 * accuracy:.1f}%" if accuracy is not None else "n/a"
    print(
        f"plain-flower FedAvg: {cfg['num-clients']} clients x {cfg['num-server-rounds']} rounds, "
        f"final accuracy (weighted) {shown}, {time.perf_counter() - start:.1f} s"
    )


if __name__ == "__main__":
    main()
