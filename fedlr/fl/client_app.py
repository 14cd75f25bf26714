"""The one ClientApp of fedlr: every task, every strategy.

The server sends the run config in every message's ConfigRecord (plus this client's ``lr``), so
the client holds no configuration of its own: its partition id comes from Flower's
``node_config`` (set by the simulation engine, or ``--node-config`` in a deployment), and on a
deployment over users' files its own file too (``data-path``).

The ClientApp talks to the run's task only, through the Task protocol
(:mod:`fedlr.tasks.base`; :func:`fedlr.tasks.load_task` picks the built-in tabular, continual
or graph task, or the user's ``task``): the client's data and model, ``describe`` for the query
round, ``train`` under the server's :class:`~fedlr.tasks.base.RoundPlan`, and ``evaluate``,
whose named metrics go back as they are.

The model lives on :func:`fedlr.tasks.tabular.pick_device` of the run's ``device`` (a GPU when
one is visible, else the CPU).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedlr.config import SCHEMA, client_batch_sizes, is_files
from fedlr.data import files
from fedlr.fl import keys
from fedlr.tasks import load_task
from fedlr.tasks.base import ClientContext, RoundPlan
from fedlr.tasks.tabular import pick_device

app = ClientApp()


def run_config(record: Mapping[str, Any]) -> dict[str, Any]:
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


def data_path(context: Context) -> str | None:
    """The SuperNode's own file (``--node-config "data-path='/srv/site.csv'"``), if any."""
    value = context.node_config.get(keys.DATA_PATH)
    if value is None or not str(value).strip():
        return None
    return str(value)


def client_context(msg: Message, context: Context) -> ClientContext:
    """The task's view of a message: run config, partition id, node config, snapshots."""
    config: Mapping[str, Any] = msg.content.config_records[keys.CONFIG]
    snapshots = tuple(
        msg.content.array_records[keys.SNAPSHOT.format(i)].to_torch_state_dict()
        for i in range(int(config.get(keys.SNAPSHOTS, 0)))
    )
    return ClientContext(
        cfg=run_config(config),
        partition_id=partition_id(context),
        node_config=dict(context.node_config),
        message=dict(config),
        snapshots=snapshots,
    )


def _setup(msg: Message, context: Context):
    torch.set_num_threads(1)  # simulated clients run side by side, one core each
    ctx = client_context(msg, context)
    task = load_task(ctx.cfg)
    data = task.client_data(ctx)
    model = task.build_model(ctx)
    if keys.ARRAYS in msg.content.array_records:
        model.load_state_dict(msg.content.array_records[keys.ARRAYS].to_torch_state_dict())
    model.to(pick_device(ctx.cfg.get("device", "auto")))
    return ctx, task, data, model


def own_batch_size(cfg: dict[str, Any], pid: int, context: Context, task: Any = None) -> int:
    """The client's own local batch size.

    ``batch-size`` in its ``node_config`` (a SuperNode started with
    ``--node-config '... batch-size=64'``, e.g. for its hardware), else the run config's
    :func:`fedlr.config.client_batch_sizes`. Full-batch tasks (graphs) report 0.
    """
    if not (task if task is not None else load_task(cfg)).mini_batches:
        return 0
    if keys.BATCH_SIZE in context.node_config:
        value = context.node_config[keys.BATCH_SIZE]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"node_config: batch-size: expected an integer >= 1, got {value!r}")
        return int(value)
    sizes = client_batch_sizes(cfg)
    return sizes[pid] if pid < len(sizes) else int(cfg["batch-size"])


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Describe this client: partition id, size, batch; role and true noise where simulated.

    Users' files are asked twice. First, without the sites' agreement, the client reads its own
    site and replies with what it shares about it (:func:`fedlr.data.files.site_statistics`:
    label values, categories, per-column counts and sums; never rows). Then, with the agreement
    the server made of every site's, it answers as any client does.
    """
    config = msg.content.config_records[keys.CONFIG]
    cfg = run_config(config)
    if is_files(cfg) and not cfg["task"] and keys.SITE_AGREEMENT not in config:
        pid = partition_id(context)
        site = files.own_site(cfg, pid, data_path(context))
        statistics = files.site_statistics(site)
        shared = MetricRecord({keys.PARTITION_ID: pid, keys.NUM_EXAMPLES: statistics.num_train})
        site_record = ConfigRecord(
            {keys.SITE_STATISTICS: files.statistics_to_json(site, statistics)}
        )
        return Message(RecordDict({keys.METRICS: shared, keys.SITE: site_record}), reply_to=msg)
    ctx, task, data, _ = _setup(msg, context)
    described = task.describe(data)
    role = described.pop("role", None)
    values: dict[str, Any] = {
        keys.PARTITION_ID: ctx.partition_id,
        keys.NUM_EXAMPLES: int(described.pop(keys.NUM_EXAMPLES)),
        keys.BATCH_SIZE: own_batch_size(ctx.cfg, ctx.partition_id, context, task),
    }
    content = RecordDict()
    if "noise-true" in described:  # simulation metadata; a real site has no truth to send
        values["noise-true"] = float(described["noise-true"])
    if role is not None:
        content["info"] = ConfigRecord({"role": str(role)})
    content[keys.METRICS] = MetricRecord(values)
    return Message(content, reply_to=msg)


def round_plan(config: Mapping[str, Any], ctx: ClientContext, batch_size: int) -> RoundPlan:
    """The server's plan for this client and round, read from the message."""
    cfg = ctx.cfg
    server_round = int(config.get(keys.SERVER_ROUND, 0))
    # Same seed for every strategy: every strategy sees the same batches in the same round.
    seed = np.random.SeedSequence([cfg["seed"], ctx.partition_id, server_round])
    return RoundPlan(
        server_round=server_round,
        lr=float(config[keys.LR]),
        epochs=int(cfg["local-epochs"]),
        batch_size=batch_size,
        optimizer=str(cfg["optimizer"]),
        momentum=float(cfg["momentum"]),
        weight_decay=float(config.get(keys.CLIENT_WEIGHT_DECAY, cfg.get("weight-decay", 0.0))),
        adam_betas=(
            float(config.get(keys.ADAM_BETA1, 0.9)),
            float(config.get(keys.ADAM_BETA2, 0.999)),
        ),
        adam_eps=float(config.get(keys.ADAM_EPS, 1e-8)),
        proximal_mu=float(config.get(keys.PROXIMAL_MU, 0.0)),
        seed=int(seed.generate_state(1)[0]),
        estimate_noise=bool(config.get(keys.ESTIMATE_NOISE, False)),
        select_clean=bool(config.get(keys.SELECT_CLEAN, False)),
        estimator=str(cfg["estimator"]),
        measure_noise_scale=bool(config.get(keys.MEASURE_NOISE_SCALE, False)),
        degree_rule=bool(config.get(keys.DEGREE_RULE, False)),
        replay=bool(config.get(keys.REPLAY, False)),
    )


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Estimate noise with the received model, then train locally at the rate sent to us."""
    ctx, task, data, model = _setup(msg, context)
    config = ctx.message
    batch = 0
    if task.mini_batches:
        batch = int(
            config.get(keys.CLIENT_BATCH_SIZE, own_batch_size(ctx.cfg, ctx.partition_id, context))
        )
    report = task.train(model, data, round_plan(config, ctx, batch))
    metrics = dict(report.metrics)
    if report.gradient is not None:
        metrics[keys.GRADIENT_BATCH] = report.gradient_batch
    metrics.update({keys.NUM_EXAMPLES: report.num_examples, keys.PARTITION_ID: ctx.partition_id})
    arrays = ArrayRecord(model.cpu().state_dict())  # weights go back on the CPU
    content = RecordDict({keys.ARRAYS: arrays, keys.METRICS: MetricRecord(metrics)})
    if report.gradient is not None:
        content[keys.GRADIENT] = ArrayRecord({"flat": Array(report.gradient)})
    return Message(content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """The task's metrics of the received global model on this client's test split."""
    ctx, task, data, model = _setup(msg, context)
    values = dict(task.evaluate(model, data, ctx))
    values[keys.PARTITION_ID] = ctx.partition_id
    return Message(RecordDict({keys.METRICS: MetricRecord(values)}), reply_to=msg)
