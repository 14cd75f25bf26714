"""The one ClientApp of fedlr: every task, every strategy.

The server sends the run config in every message's ConfigRecord (plus this client's ``lr``), so
the client holds no configuration of its own: its partition id comes from Flower's
``node_config`` (set by the simulation engine, or ``--node-config`` in a deployment).

The model lives on :func:`fedlr.tasks.tabular.pick_device` of the run's ``device`` (a GPU when
one is visible, else the CPU); with ``ddp-procs`` P > 1 local training spans P processes
(:func:`fedlr.tasks.ddp.train_ddp`) at the rate scaled to their global batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedlr.config import SCHEMA
from fedlr.fl import keys
from fedlr.rates import coupling
from fedlr.tasks import ddp, tabular

app = ClientApp()


def run_config(record: ConfigRecord) -> dict[str, Any]:
    """The fedlr run config carried by a ConfigRecord."""
    return {key: record[key] for key in SCHEMA if key in record}


def partition_id(context: Context) -> int:
    """Return the partition id of this node, from ``node_config``."""
    if keys.NODE_PARTITION_ID not in context.node_config:
        raise ValueError(
            "node_config: expected 'partition-id' (start the SuperNode with "
            "--node-config 'partition-id=I num-partitions=N')"
        )
    return int(context.node_config[keys.NODE_PARTITION_ID])


def _setup(msg: Message, context: Context):
    torch.set_num_threads(1)  # simulated clients run side by side, one core each
    config = msg.content.config_records[keys.CONFIG]
    cfg = run_config(config)
    pid = partition_id(context)
    data = tabular.client_data(cfg, pid)
    model = tabular.build_model(cfg)
    if keys.ARRAYS in msg.content.array_records:
        model.load_state_dict(msg.content.array_records[keys.ARRAYS].to_torch_state_dict())
    model.to(tabular.pick_device(cfg.get("device", "auto")))
    return config, cfg, pid, data, model


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Describe this client: partition id, size, role and (simulation only) true noise."""
    _, cfg, pid, data, _ = _setup(msg, context)
    metrics = MetricRecord(
        {
            keys.PARTITION_ID: pid,
            keys.NUM_EXAMPLES: len(data.y_train),
            "noise-true": float(data.flip_fraction),
        }
    )
    info = ConfigRecord({"role": data.role})
    return Message(RecordDict({keys.METRICS: metrics, "info": info}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Estimate noise with the received model, then train locally at the rate sent to us."""
    config, cfg, pid, data, model = _setup(msg, context)
    server_round = int(config.get(keys.SERVER_ROUND, 0))
    # Same seed for every strategy: every strategy sees the same batches in the same round.
    seed = int(np.random.SeedSequence([cfg["seed"], pid, server_round]).generate_state(1)[0])
    # q-FFL's F_k: loss of the received global model on the client's data.
    received_loss, _ = tabular.evaluate(model, data.x_train, data.y_train)
    estimate = -1.0
    if bool(config.get(keys.ESTIMATE_NOISE, False)):
        estimate = tabular.estimate_noise(model, data, cfg["estimator"], seed=seed)
    procs = int(cfg.get("ddp-procs", 1))
    if procs == 1:
        tabular.train_local(
            model,
            data,
            lr=float(config[keys.LR]),
            epochs=cfg["local-epochs"],
            batch_size=cfg["batch-size"],
            optimizer=cfg["optimizer"],
            momentum=cfg["momentum"],
            proximal_mu=float(config.get(keys.PROXIMAL_MU, 0.0)),
            seed=seed,
        )
    else:
        # The server's rate is for one batch of batch-size B; P processes step on batches of P*B.
        ddp.train_ddp(
            model,
            data,
            procs=procs,
            lr=coupling.scale_lr(
                float(config[keys.LR]),
                procs * cfg["batch-size"],
                cfg["batch-size"],
                coupling.rule_for_optimizer(cfg["optimizer"]),
            ),
            epochs=cfg["local-epochs"],
            batch_size=cfg["batch-size"],
            optimizer=cfg["optimizer"],
            momentum=cfg["momentum"],
            proximal_mu=float(config.get(keys.PROXIMAL_MU, 0.0)),
            seed=seed,
            device=tabular.model_device(model),
            timeout=float(cfg.get("round-timeout", 600.0)),
        )
    metrics = MetricRecord(
        {
            keys.NUM_EXAMPLES: len(data.y_train),
            keys.PARTITION_ID: pid,
            keys.TRAIN_LOSS: received_loss,
            keys.NOISE_ESTIMATE: float(estimate),
        }
    )
    arrays = ArrayRecord(model.cpu().state_dict())  # weights go back on the CPU
    content = RecordDict({keys.ARRAYS: arrays, keys.METRICS: metrics})
    return Message(content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Accuracy of the received global model on this client's clean test split."""
    _, _, pid, data, model = _setup(msg, context)
    loss, accuracy = tabular.evaluate(model, data.x_test, data.y_test)
    metrics = MetricRecord(
        {
            keys.NUM_EXAMPLES: len(data.y_test),
            keys.PARTITION_ID: pid,
            keys.ACCURACY: accuracy,
            keys.EVAL_LOSS: loss,
        }
    )
    return Message(RecordDict({keys.METRICS: metrics}), reply_to=msg)
