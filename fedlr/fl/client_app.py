"""The one ClientApp of fedlr: every task, every strategy.

The server sends the run config in every message's ConfigRecord (plus this client's ``lr``), so
the client holds no configuration of its own: its partition id comes from Flower's
``node_config`` (set by the simulation engine, or ``--node-config`` in a deployment).

The run's ``dataset`` picks the task that supplies data, model and loops: tabular
(:mod:`fedlr.tasks.tabular`: digits, synthetic) or graph (:mod:`fedlr.tasks.graph`: cora,
karate, ba; a client holds one subgraph). Graph clients also report, per node, what the server
needs for degree fairness: the global degree and correctness of each test node (evaluate), and
the gradient norm at each node's input row before training (train).

The model lives on :func:`fedlr.tasks.tabular.pick_device` of the run's ``device`` (a GPU when
one is visible, else the CPU); with ``ddp-procs`` P > 1 local training spans P processes
(:func:`fedlr.tasks.ddp.train_ddp`) at the rate scaled to their global batch.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedlr.config import SCHEMA, client_batch_sizes, is_files, is_graph
from fedlr.data import files
from fedlr.fl import keys
from fedlr.rates import coupling
from fedlr.tasks import ddp, streams, tabular, task_for

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
    task = task_for(cfg)
    if is_files(cfg):  # the client's own site, encoded as the sites agreed in the query round
        if keys.SITE_AGREEMENT not in config:
            raise ValueError(f"config: expected {keys.SITE_AGREEMENT!r} from the server")
        agreement = str(config[keys.SITE_AGREEMENT])
        data = task.client_data(cfg, pid, data_path=data_path(context), agreement=agreement)
        model = task.build_model(cfg, agreement=agreement)
    else:
        data = task.client_data(cfg, pid)
        model = task.build_model(cfg)
    if keys.ARRAYS in msg.content.array_records:
        model.load_state_dict(msg.content.array_records[keys.ARRAYS].to_torch_state_dict())
    model.to(tabular.pick_device(cfg.get("device", "auto")))
    return config, cfg, pid, data, model


def data_path(context: Context) -> str | None:
    """The SuperNode's own file (``--node-config "data-path='/srv/site.csv'"``), if any."""
    value = context.node_config.get(keys.DATA_PATH)
    if value is None or not str(value).strip():
        return None
    return str(value)


def own_batch_size(cfg: dict[str, Any], pid: int, context: Context) -> int:
    """The client's own local batch size.

    ``batch-size`` in its ``node_config`` (a SuperNode started with
    ``--node-config '... batch-size=64'``, e.g. for its hardware), else the run config's
    :func:`fedlr.config.client_batch_sizes`. Graph tasks train full-batch and report 0.
    """
    if is_graph(cfg):
        return 0
    if keys.BATCH_SIZE in context.node_config:
        value = context.node_config[keys.BATCH_SIZE]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"node_config: batch-size: expected an integer >= 1, got {value!r}")
        return int(value)
    return client_batch_sizes(cfg)[pid]


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
    if is_files(cfg) and keys.SITE_AGREEMENT not in config:
        pid = partition_id(context)
        site = files.own_site(cfg, pid, data_path(context))
        statistics = files.site_statistics(site)
        shared = MetricRecord({keys.PARTITION_ID: pid, keys.NUM_EXAMPLES: statistics.num_train})
        site_record = ConfigRecord(
            {keys.SITE_STATISTICS: files.statistics_to_json(site, statistics)}
        )
        return Message(RecordDict({keys.METRICS: shared, keys.SITE: site_record}), reply_to=msg)
    _, cfg, pid, data, _ = _setup(msg, context)
    values: dict[str, Any] = {
        keys.PARTITION_ID: pid,
        keys.NUM_EXAMPLES: data.num_train,
        keys.BATCH_SIZE: own_batch_size(cfg, pid, context),
    }
    content = RecordDict()
    if data.flip_fraction is not None:  # simulation metadata; a real site has no truth to send
        values["noise-true"] = float(data.flip_fraction)
    if data.role is not None:
        content["info"] = ConfigRecord({"role": data.role})
    content[keys.METRICS] = MetricRecord(values)
    return Message(content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Estimate noise with the received model, then train locally at the rate sent to us."""
    config, cfg, pid, data, model = _setup(msg, context)
    server_round = int(config.get(keys.SERVER_ROUND, 0))
    # Same seed for every strategy: every strategy sees the same batches in the same round.
    seed = int(np.random.SeedSequence([cfg["seed"], pid, server_round]).generate_state(1)[0])
    lr = float(config[keys.LR])
    proximal_mu = float(config.get(keys.PROXIMAL_MU, 0.0))
    gradient = None
    if is_graph(cfg):
        metrics = _train_graph(config, cfg, data, model, lr, proximal_mu, seed)
    else:
        batch = int(config.get(keys.CLIENT_BATCH_SIZE, own_batch_size(cfg, pid, context)))
        heads, probe = None, (model, data)
        if cfg["stream"] != "none":  # continual: this round's task (+ replay of earlier ones)
            task, data, heads, probe = _task_view(config, cfg, pid, data, model, server_round)
            if probe[1].num_train == 0:  # no example of the task's own: read the replay
                probe = (model, data)
        if bool(config.get(keys.MEASURE_NOISE_SCALE, False)) and data.num_train:
            # at the received weights, before any step; its own seed: training batches unchanged
            gradient = tabular.mean_gradient(*probe, batch, seed=seed ^ 0x6E5)
        metrics = _train_tabular(
            config, cfg, data, model, lr, proximal_mu, seed, batch, heads, probe
        )
        if cfg["stream"] != "none":
            metrics[keys.TASK] = task
        if gradient is not None:
            metrics[keys.GRADIENT_BATCH] = min(batch, data.num_train)
    metrics.update({keys.NUM_EXAMPLES: data.num_train, keys.PARTITION_ID: pid})
    arrays = ArrayRecord(model.cpu().state_dict())  # weights go back on the CPU
    content = RecordDict({keys.ARRAYS: arrays, keys.METRICS: MetricRecord(metrics)})
    if gradient is not None:
        content[keys.GRADIENT] = ArrayRecord({"flat": Array(gradient)})
    return Message(content, reply_to=msg)


@functools.lru_cache(maxsize=16)
def _stream(data: Any, kind: str, num_tasks: int, seed: int, max_angle: float) -> list[Any]:
    # ``data`` is the task module's cached ClientData (hashed by identity): built once per process
    return streams.build_stream(
        kind,
        data.x_train,
        data.y_train,
        data.x_test,
        data.y_test,
        num_tasks=num_tasks,
        seed=seed,
        max_angle=max_angle,
    )


def client_stream(cfg: dict[str, Any], data: Any, pid: int) -> tuple[list[Any], np.ndarray]:
    """A client's tasks (:func:`fedlr.tasks.streams.build_stream`) and their arrival rounds."""
    tasks = _stream(data, cfg["stream"], cfg["num-tasks"], cfg["seed"], cfg["rotation-max"])
    starts = streams.arrival_rounds(
        cfg["num-server-rounds"], cfg["num-tasks"], cfg["num-clients"], cfg["task-stagger"]
    )[pid]
    return tasks, starts


def _task_view(config, cfg, pid, data, model, server_round):
    """A continual client's round: ``(task, data, per-example heads or None, probe)``.

    ``data`` is the task's train split plus the replay sample. ``probe`` is the ``(model,
    data)`` the received loss, the noise estimate and the noise-scale gradient read: with
    task-incremental heads, the model through the task's head on the task's own examples (the
    replayed ones belong to other heads); otherwise the model and ``data``.
    """
    tasks, starts = client_stream(cfg, data, pid)
    task = streams.current_task(starts, server_round)
    replay = int(cfg["replay-size"]) if bool(config.get(keys.REPLAY, False)) else 0
    replay_seed = int(np.random.SeedSequence([cfg["seed"], pid]).generate_state(1)[0])
    view, owner = streams.training_view(data, tasks, task, replay, replay_seed)
    if cfg["stream"] != "task-incremental":
        return task, view, None, (model, view)
    own, _ = streams.training_view(data, tasks, task, 0, replay_seed)
    head = streams.task_mask(tasks[task].classes)
    masked = tabular.HeadMasked(model, head).to(tabular.model_device(model))
    return task, view, streams.logit_masks(tasks, owner), (masked, own)


def _train_tabular(
    config, cfg, data, model, lr, proximal_mu, seed, batch, heads=None, probe=None
) -> dict[str, Any]:
    if data.num_train == 0:  # a continual task this client holds no example of
        return {keys.TRAIN_LOSS: float("nan"), keys.NOISE_ESTIMATE: -1.0, keys.STEPS: 0}
    probe_model, probe_data = probe or (model, data)
    # q-FFL's F_k: loss of the received global model on the client's data.
    received_loss, _ = tabular.evaluate(probe_model, probe_data.x_train, probe_data.y_train)
    estimate = -1.0
    if bool(config.get(keys.ESTIMATE_NOISE, False)):
        estimate = tabular.estimate_noise(probe_model, probe_data, cfg["estimator"], seed=seed)
    procs = int(cfg.get("ddp-procs", 1))
    common = {
        "epochs": cfg["local-epochs"],
        "batch_size": batch,
        "optimizer": cfg["optimizer"],
        "momentum": cfg["momentum"],
        "proximal_mu": proximal_mu,
        "seed": seed,
        "weight_decay": float(config.get(keys.CLIENT_WEIGHT_DECAY, cfg.get("weight-decay", 0.0))),
        "adam_betas": (
            float(config.get(keys.ADAM_BETA1, 0.9)),
            float(config.get(keys.ADAM_BETA2, 0.999)),
        ),
        "adam_eps": float(config.get(keys.ADAM_EPS, 1e-8)),
    }
    if procs == 1:
        tabular.train_local(model, data, lr=lr, logit_mask=heads, **common)
    else:
        # The server's rate is for one batch of batch-size B; P processes step on batches of P*B.
        rule = coupling.rule_for_optimizer(cfg["optimizer"])
        ddp_lr = coupling.scale_lr(lr, procs * batch, batch, rule)
        if cfg.get("weight-decay-coupling") == "fixed-shrink":  # keep lr * wd as the server set it
            common["weight_decay"] = float(common["weight_decay"]) * lr / ddp_lr
        ddp.train_ddp(
            model,
            data,
            procs=procs,
            lr=ddp_lr,
            device=tabular.model_device(model),
            timeout=float(cfg.get("round-timeout", 600.0)),
            **common,
        )
    # DDP: P processes step on global batches of P * batch
    steps = tabular.local_steps(data.num_train, procs * batch, cfg["local-epochs"])
    return {
        keys.TRAIN_LOSS: received_loss,
        keys.NOISE_ESTIMATE: float(estimate),
        keys.STEPS: steps,
    }


def _train_graph(config, cfg, data, model, lr, proximal_mu, seed) -> dict[str, Any]:
    graph = task_for(cfg)  # imported on first use: tabular runs never load PyG
    received_loss = graph.received_loss(model, data)
    estimate = -1.0
    if bool(config.get(keys.ESTIMATE_NOISE, False)):
        estimate = graph.estimate_noise(model, data, cfg["estimator"], seed=seed)
    diagnostic = graph.train_client(
        model,
        data,
        cfg,
        lr=lr,
        degree_rule=bool(config.get(keys.DEGREE_RULE, False)),
        proximal_mu=proximal_mu,
        seed=seed,
    )
    return {
        keys.TRAIN_LOSS: received_loss,
        keys.NOISE_ESTIMATE: float(estimate),
        keys.GRAD_DEGREE: diagnostic["degree"],
        keys.GRAD_NORM: diagnostic["norm"],
        keys.GRAD_NORM_SCALED: diagnostic["norm-scaled"],
    }


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Accuracy of the received global model on this client's clean test split."""
    _, cfg, pid, data, model = _setup(msg, context)
    values: dict[str, Any] = {keys.NUM_EXAMPLES: data.num_test, keys.PARTITION_ID: pid}
    if is_graph(cfg):
        loss, accuracy, test_degree, test_correct = task_for(cfg).evaluate_client(model, data)
        values.update({keys.TEST_DEGREE: test_degree, keys.TEST_CORRECT: test_correct})
    elif cfg["stream"] != "none":
        loss, accuracy = _evaluate_stream(msg, cfg, pid, data, model, values)
    else:
        loss, accuracy = tabular.evaluate(model, data.x_test, data.y_test)
    values.update({keys.ACCURACY: accuracy, keys.EVAL_LOSS: loss})
    metrics = MetricRecord(values)
    return Message(RecordDict({keys.METRICS: metrics}), reply_to=msg)


def _evaluate_stream(msg, cfg, pid, data, model, values) -> tuple[float, float]:
    """Loss and accuracy over all tasks' test examples; per task into ``values``.

    Per task: accuracy on its test split (a row of the accuracy matrix, -1 where the client holds
    none) and, for a message carrying snapshots, the snapshot ensemble's accuracy.
    """
    tasks, _ = client_stream(cfg, data, pid)
    heads = [
        streams.task_mask(t.classes) if cfg["stream"] == "task-incremental" else None for t in tasks
    ]
    counts = [len(t.y_test) for t in tasks]
    scored = [
        tabular.evaluate(model, t.x_test, t.y_test, head) if n else (0.0, -1.0)
        for t, head, n in zip(tasks, heads, counts, strict=True)
    ]
    values[keys.TASK_ACCURACY] = [float(acc) for _, acc in scored]
    values[keys.TASK_EXAMPLES] = counts
    values[keys.NUM_EXAMPLES] = int(sum(counts))
    config = msg.content.config_records[keys.CONFIG]
    snapshots = int(config.get(keys.SNAPSHOTS, 0))
    if snapshots > 0:
        device = tabular.model_device(model)
        members = []
        for i in range(snapshots):
            member = tabular.build_model(cfg)
            record = msg.content.array_records[keys.SNAPSHOT.format(i)]
            member.load_state_dict(record.to_torch_state_dict())
            members.append(member.to(device))
        values[keys.ENSEMBLE_TASK_ACCURACY] = [
            float(tabular.evaluate_ensemble(members, t.x_test, t.y_test, head)[1]) if n else -1.0
            for t, head, n in zip(tasks, heads, counts, strict=True)
        ]
    total = max(1, sum(counts))
    loss = sum(n * s[0] for s, n in zip(scored, counts, strict=True)) / total
    accuracy = sum(n * s[1] for s, n in zip(scored, counts, strict=True)) / total
    return float(loss), float(accuracy)
