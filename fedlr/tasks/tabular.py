"""Tabular classification task: digits, LEAF Synthetic or users' files; a model; loops; estimates.

The model is the run's ``model``: a two-layer MLP, a linear layer (multinomial logistic
regression), or a user's ``package.module:function`` called with the number of features and
classes (:func:`make_model`).

A task supplies everything the one ClientApp needs: the client's data (built from the run config,
cached per process), a model, the local training loop, evaluation and the noise estimators.

Every loop runs on the device the model is on (inputs follow the model, results come back as
CPU floats and arrays); the ClientApp puts the model on :func:`pick_device` of the run's
``device`` key. The same loop also runs one rank of a DistributedDataParallel job
(:mod:`fedlr.tasks.ddp`): ``train_local(..., rank=r, world_size=P)``.

The pieces are re-exported here: :func:`pick_device` and :func:`model_device`
(:mod:`fedlr.tasks.devices`), the loops (:mod:`fedlr.tasks.tabular_loops`) and the noise
estimators (:mod:`fedlr.tasks.tabular_noise`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from fedlr.config import ConfigError, is_files
from fedlr.data import files
from fedlr.data.federated import (
    ClientData,
    Federation,
    build_federation,
    client_roles,
    make_client,
)
from fedlr.rates import coupling
from fedlr.tasks.base import (
    DATA_PATH,
    SITE_AGREEMENT,
    ArrayTask,
    ClientContext,
    RoundPlan,
    TrainReport,
    estimate_kwargs,
    train_kwargs,
)
from fedlr.tasks.devices import model_device, pick_device
from fedlr.tasks.mlp import MLP
from fedlr.tasks.plugins import load_object
from fedlr.tasks.tabular_loops import (
    MASKED_LOGIT,
    HeadMasked,
    evaluate,
    evaluate_ensemble,
    local_steps,
    log_probs,
    mean_gradient,
    train_local,
)
from fedlr.tasks.tabular_noise import (
    GRADIENT_SAMPLE,
    crossfit_noise,
    estimate_noise,
    per_sample_gradients,
)

__all__ = [
    "DATA_KEYS",
    "GRADIENT_SAMPLE",
    "MASKED_LOGIT",
    "MLP",
    "HeadMasked",
    "TabularTask",
    "build_model",
    "client_data",
    "crossfit_noise",
    "estimate_noise",
    "evaluate",
    "evaluate_ensemble",
    "federation",
    "local_steps",
    "log_probs",
    "make_model",
    "mean_gradient",
    "model_device",
    "per_sample_gradients",
    "pick_device",
    "train_local",
]

# Keys that change the data; everything else (rates, strategies, rounds) does not.
DATA_KEYS = (
    "dataset",
    "num-clients",
    "partitioner",
    "dirichlet-alpha",
    "size-skew-sigma",
    "test-fraction",
    "synthetic-alpha",
    "synthetic-beta",
    "label-noise",
    "noisy-clients",
    "noisy-client-ids",
    "noise-rate-min",
    "noise-rate-max",
    "hard-clean-clients",
    "hard-classes",
    "feature-noise-clients",
    "feature-noise-sigma",
    "seed",
    "data-files",
    "site-column",
    "label-column",
    "feature-columns",
    "categorical-columns",
    "standardize",
)


@functools.lru_cache(maxsize=4)
def _federation(data_key: str) -> Federation:
    return build_federation(json.loads(data_key))


def _data_key(cfg: Mapping[str, Any]) -> str:
    return json.dumps({k: cfg[k] for k in DATA_KEYS}, sort_keys=True)


def federation(cfg: Mapping[str, Any]) -> Federation:
    """The federation for a run config; built once per process and data-relevant config."""
    return _federation(_data_key(cfg))


@functools.lru_cache(maxsize=8)
def _site_client(data_key: str, partition_id: int, data_path: str, agreement: str) -> ClientData:
    cfg = json.loads(data_key)
    site = files.own_site(cfg, partition_id, data_path or None)
    split = files.encode_own_site(cfg, site, agreement)
    files.log_missing(site)
    num_classes = len(files.agreement_from_json(agreement)[1].classes)
    roles = client_roles(cfg)
    role = roles[partition_id] if partition_id < len(roles) else ("clean", 0.0, 0.0)
    return make_client(cfg, partition_id, split, num_classes, role, site.name)


def client_data(
    cfg: Mapping[str, Any],
    partition_id: int,
    *,
    data_path: str | None = None,
    agreement: str | None = None,
) -> ClientData:
    """One client's data; ``partition_id`` must be in ``[0, num-clients)``.

    Users' files with the sites' ``agreement`` (JSON, :func:`fedlr.data.files.agree_from_replies`,
    sent by the server after the query round): the client reads only its own site, the
    SuperNode's ``data_path`` or site ``partition_id`` of ``data-files``, and nobody else's rows.
    Otherwise the client's row of the seeded :func:`federation` (built once per process).
    """
    if is_files(cfg) and agreement is not None:
        return _site_client(_data_key(cfg), partition_id, data_path or "", agreement)
    clients = federation(cfg).clients
    if not 0 <= partition_id < len(clients):
        raise ValueError(
            f"partition-id: expected 0..{len(clients) - 1} (num-clients = {len(clients)}), "
            f"got {partition_id}"
        )
    return clients[partition_id]


def make_model(cfg: Mapping[str, Any], num_features: int, num_classes: int) -> nn.Module:
    """The run's ``model`` for inputs of ``num_features`` and ``num_classes`` outputs.

    ``mlp``: :class:`MLP` of width ``hidden``; ``linear``: one ``nn.Linear`` (multinomial
    logistic regression; with two classes, the logistic regression of FLamby's Fed-Heart-Disease
    up to a reparametrisation); ``package.module:function``: the user's function, called as
    ``function(num_features, num_classes)``.

    Raises
    ------
    ConfigError
        The user's function cannot be imported, fails, or returns no ``torch.nn.Module``.
    """
    name = str(cfg.get("model", "mlp"))
    if name == "mlp":
        return MLP(num_features, num_classes, cfg["hidden"])
    if name == "linear":
        return nn.Linear(num_features, num_classes)
    factory = load_object(name, "model")
    try:
        model = factory(num_features, num_classes)
    except Exception as error:  # noqa: BLE001  (the user's code: one line, not a traceback)
        raise ConfigError(
            f"model: {name}({num_features}, {num_classes}) raised {type(error).__name__}: {error}"
        ) from None
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"model: {name} returned {type(model).__name__}; expected a torch.nn.Module"
        )
    return model


def build_model(
    cfg: Mapping[str, Any], seed: int | None = None, agreement: str | None = None
) -> nn.Module:
    """The run's model; initial weights are a function of ``seed`` (default: the run seed).

    Its shape comes from the sites' ``agreement`` (users' files: the server holds no data and
    learns the number of features and classes from the query round), else from the data.
    """
    if agreement is not None:
        _, agreed = files.agreement_from_json(agreement)
        num_features, num_classes = agreed.num_features, len(agreed.classes)
    else:
        fed = federation(cfg)
        num_features, num_classes = fed.num_features, fed.num_classes
    with torch.random.fork_rng():  # seed locally; the caller's global RNG state is untouched
        torch.manual_seed(cfg["seed"] if seed is None else seed)
        return make_model(cfg, num_features, num_classes)


class TabularTask(ArrayTask):
    """The built-in tabular task (:class:`~fedlr.tasks.base.Task`): digits, synthetic, files.

    Data: the client's row of the seeded federation (digits, synthetic), or, for users' files,
    the client's own site encoded under the sites' agreement that the server sends
    (:data:`fedlr.fl.keys.SITE_AGREEMENT`), read from the SuperNode's ``data-path`` when it has
    one. Model: :func:`make_model`. Training: :class:`~fedlr.tasks.base.ArrayTask`'s, or across
    ``ddp-procs`` processes (:func:`fedlr.tasks.ddp.train_ddp`) at the rate scaled to their
    global batch.
    """

    def client_data(self, ctx: ClientContext) -> ClientData:
        """The client's data (see the class docstring)."""
        cfg = ctx.cfg
        if is_files(cfg):  # the client's own site, encoded as the sites agreed in the query round
            if SITE_AGREEMENT not in ctx.message:
                raise ValueError(f"config: expected {SITE_AGREEMENT!r} from the server")
            path = ctx.node_config.get(DATA_PATH)
            return client_data(
                cfg,
                ctx.partition_id,
                data_path=str(path) if path is not None and str(path).strip() else None,
                agreement=str(ctx.message[SITE_AGREEMENT]),
            )
        return client_data(cfg, ctx.partition_id)

    def build_model(self, ctx: ClientContext | None = None) -> nn.Module:
        """:func:`build_model`, shaped by the sites' agreement for users' files."""
        agreement = None
        if ctx is not None and SITE_AGREEMENT in ctx.message:
            agreement = str(ctx.message[SITE_AGREEMENT])
        return build_model(self.cfg if ctx is None else ctx.cfg, agreement=agreement)

    def train(self, model: nn.Module, data: ClientData, plan: RoundPlan) -> TrainReport:
        """:class:`~fedlr.tasks.base.ArrayTask`'s training, on ``ddp-procs`` processes if > 1."""
        procs = int(self.cfg.get("ddp-procs", 1))
        if procs == 1:
            return super().train(model, data, plan)
        gradient = None
        if plan.measure_noise_scale and data.num_train:
            gradient = mean_gradient(model, data, plan.batch_size, seed=plan.seed ^ 0x6E5)
        received_loss, _ = evaluate(model, data.x_train, data.y_train)
        estimate = -1.0
        if plan.estimate_noise:
            estimate = estimate_noise(model, data, plan.estimator, **estimate_kwargs(plan))
        # The server's rate is for one batch of batch-size B; P processes step on batches of P*B.
        rule = coupling.rule_for_optimizer(plan.optimizer)
        ddp_lr = coupling.scale_lr(plan.lr, procs * plan.batch_size, plan.batch_size, rule)
        settings = train_kwargs(plan)
        del settings["lr"]
        if self.cfg.get("weight-decay-coupling") == "fixed-shrink":  # keep lr * wd as sent
            settings["weight_decay"] = float(plan.weight_decay) * plan.lr / ddp_lr
        from fedlr.tasks import ddp  # its workers import this module

        assert isinstance(model, MLP), "config: DDP trains the built-in MLP (model = mlp)"
        ddp.train_ddp(
            model,
            data,
            procs=procs,
            lr=ddp_lr,
            device=model_device(model),
            timeout=float(self.cfg.get("round-timeout", 600.0)),
            **settings,
        )
        return TrainReport(
            metrics={
                "train_loss": received_loss,
                "noise-estimate": float(estimate),
                # DDP: P processes step on global batches of P * batch
                "steps": local_steps(data.num_train, procs * plan.batch_size, plan.epochs),
            },
            num_examples=data.num_train,
            gradient=gradient,
            gradient_batch=min(plan.batch_size, data.num_train) if gradient is not None else 0,
        )
