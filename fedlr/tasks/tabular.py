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
"""

from __future__ import annotations

import functools
import json
from dataclasses import replace
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

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
from fedlr.rates.noise import gradient_noise_ratio, loss_mixture_noise, mean_margin_noise
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
from fedlr.tasks.plugins import load_object

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
# Per-sample gradients of at most this many examples feed the gradient estimator.
GRADIENT_SAMPLE = 256
# A logit outside an example's task head (task-incremental streams): exp() of it is 0.
MASKED_LOGIT = -1e9


def pick_device(name: str = "auto") -> torch.device:
    """The device a client trains on: the run config's ``device`` key, resolved on this machine.

    ``auto`` is ``cuda`` when a GPU is visible (``torch.cuda.is_available()``), else ``cpu``;
    fedlr never assumes a GPU. ``cuda`` means the first visible GPU (Flower's simulation engine
    makes a client's share of GPUs visible through ``CUDA_VISIBLE_DEVICES``).

    Raises
    ------
    ValueError
        For ``cuda`` on a machine without a visible GPU, or an unknown name.
    """
    if name == "cpu":
        return torch.device("cpu")
    if name in ("auto", "cuda"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if name == "auto":
            return torch.device("cpu")
        raise ValueError(
            "device: expected auto or cpu on a machine without a visible GPU, got 'cuda'"
        )
    raise ValueError(f"device: expected auto, cpu or cuda, got {name!r}")


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s parameters (CPU for a model without parameters)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


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


class MLP(nn.Module):
    """Two-layer perceptron: ``Linear -> ReLU -> Linear``."""

    def __init__(self, num_features: int, num_classes: int, hidden: int) -> None:
        super().__init__()
        self.num_features, self.num_classes, self.hidden = num_features, num_classes, hidden
        self.net = nn.Sequential(
            nn.Linear(num_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(N, num_classes)``."""
        return self.net(x)


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


def _tensors(
    x: np.ndarray, y: np.ndarray, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    xt = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    yt = torch.from_numpy(np.ascontiguousarray(y, np.int64))
    return xt.to(device), yt.to(device)  # no copy when already there (the CPU default)


def train_local(
    model: nn.Module,
    data: ClientData,
    *,
    lr: float,
    epochs: int,
    batch_size: int,
    optimizer: str = "sgd",
    momentum: float = 0.0,
    proximal_mu: float = 0.0,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    weight_decay: float = 0.0,
    adam_betas: tuple[float, float] = (0.9, 0.999),
    adam_eps: float = 1e-8,
    logit_mask: np.ndarray | None = None,
) -> float:
    r"""Train ``model`` in place, on its device, on the client's (possibly noisy) train split.

    With ``proximal_mu > 0`` the FedProx term ``(mu / 2) * ||w - w_global||^2`` is added, with
    ``w_global`` the weights received (Li et al. 2020). Batches are shuffled by a
    ``torch.Generator`` seeded with ``seed``, so every strategy sees the same batches.

    With ``world_size = P > 1`` this is rank ``rank`` of a DistributedDataParallel job and
    ``model`` is the DDP-wrapped module. ``batch_size`` is then the *global* batch: every rank
    draws the same permutation as a single process would, and takes its contiguous share
    :math:`S_r` of each global batch :math:`S` (``torch.tensor_split``; the last, short batch
    too, so a rank may get none). Rank ``r`` back-propagates
    :math:`P \cdot \sum_{i \in S_r} \ell_i / |S|`; DDP averages the ranks' gradients, which gives
    :math:`\frac{1}{P} \sum_r P \sum_{i \in S_r} \nabla\ell_i / |S| = \frac{1}{|S|}
    \sum_{i \in S} \nabla \ell_i`, the single-process gradient of the mean loss over :math:`S`.
    The proximal term is added unscaled on every rank, so its gradient survives the average.

    ``weight_decay`` is SGD's and Adagrad's L2 term, and for Adam the decoupled decay of AdamW
    (``torch.optim.AdamW``): with zero gradient each step shrinks the weights by
    ``1 - lr * weight_decay`` (SGD without momentum, AdamW). ``adam_betas`` and ``adam_eps`` are
    Adam's (Malladi et al.'s square-root rule changes them with the batch size).

    ``logit_mask`` (``(N, C)`` booleans, one row per train example) keeps each example's own
    output head: masked logits are set to a large negative number before the loss, so only the
    classes of the example's task compete (task-incremental continual learning).

    Returns
    -------
    float
        Mean training loss over the local steps (without the proximal term). With
        ``world_size > 1``, this rank's share of it: the sum over ranks is the mean.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank: expected 0..{world_size - 1} (world_size), got {rank}")
    x, y = _tensors(data.x_train, data.y_train, model_device(model))
    params = model.parameters()
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            params, lr=lr, momentum=momentum, weight_decay=weight_decay
        )
    elif optimizer == "adam" and weight_decay > 0:
        opt = torch.optim.AdamW(
            params, lr=lr, betas=adam_betas, eps=adam_eps, weight_decay=weight_decay
        )
    elif optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr, betas=adam_betas, eps=adam_eps)
    elif optimizer == "adagrad":
        opt = torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay)
    else:
        raise ValueError(f"optimizer: expected sgd, adam or adagrad, got {optimizer!r}")
    global_params = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else []
    keep = None
    if logit_mask is not None:
        keep = torch.from_numpy(np.asarray(logit_mask, bool)).to(x.device)

    def forward(rows: torch.Tensor) -> torch.Tensor:
        return _masked(model(x[rows]), None if keep is None else keep[rows])

    generator = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    total, steps = 0.0, 0
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator).to(x.device)
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            opt.zero_grad()
            if world_size == 1:
                loss = loss_fn(forward(idx), y[idx])
                total, steps = total + float(loss.detach()), steps + 1
            else:
                mine = torch.tensor_split(idx, world_size)[rank]
                share = nn.functional.cross_entropy(forward(mine), y[mine], reduction="sum")
                share = share / len(idx)
                total, steps = total + float(share.detach()), steps + 1
                loss = world_size * share  # undoes DDP's average over ranks
            if proximal_mu > 0:
                pairs = zip(model.parameters(), global_params, strict=True)
                prox = sum(((p - g) ** 2).sum() for p, g in pairs)
                loss = loss + 0.5 * proximal_mu * prox
            loss.backward()
            opt.step()
    return total / max(steps, 1)


def local_steps(num_examples: int, batch_size: int, epochs: int) -> int:
    """Optimizer steps of :func:`train_local`: ``epochs * ceil(num_examples / batch_size)``.

    >>> local_steps(100, 16, 2)
    14
    """
    return epochs * -(-num_examples // batch_size)


def mean_gradient(model: nn.Module, data: ClientData, batch_size: int, seed: int) -> np.ndarray:
    """The gradient of the mean cross-entropy over one batch, at the model's current weights.

    The batch is ``min(batch_size, N)`` train examples drawn without replacement (seeded); the
    result is every parameter's gradient flattened into one float32 vector, in
    ``named_parameters`` order. It is what the server's noise-scale estimate reads
    (:func:`fedlr.rates.coupling.federated_terms`): one extra backward pass, no step.
    """
    generator = torch.Generator().manual_seed(seed)
    count = min(batch_size, data.num_train)
    pick = torch.randperm(data.num_train, generator=generator)[:count].sort().values.numpy()
    x, y = _tensors(data.x_train[pick], data.y_train[pick], model_device(model))
    model.zero_grad(set_to_none=True)
    model.train()
    nn.functional.cross_entropy(model(x), y).backward()
    flat = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
    model.zero_grad(set_to_none=True)
    return flat.detach().cpu().numpy().astype(np.float32)


@torch.no_grad()
def evaluate(
    model: nn.Module, x: np.ndarray, y: np.ndarray, head: np.ndarray | None = None
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``.

    ``head`` (``C`` booleans) restricts the prediction to those classes (a task's output head).
    """
    model.eval()
    xt, yt = _tensors(x, y, model_device(model))
    logits = _masked(model(xt), head)
    loss = float(nn.functional.cross_entropy(logits, yt))
    accuracy = float((logits.argmax(dim=1) == yt).float().mean())
    return loss, accuracy


class HeadMasked(nn.Module):
    """``model`` seen through one task's output head: logits outside ``head`` are masked.

    It shares ``model``'s parameters (same order), so a loss, noise estimate or gradient taken
    through it is one of ``model`` under task-incremental evaluation.
    """

    def __init__(self, model: nn.Module, head: np.ndarray) -> None:
        super().__init__()
        self.inner = model
        self.register_buffer("keep", torch.from_numpy(np.asarray(head, bool)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The inner model's logits, masked to the head."""
        return _masked(self.inner(x), self.get_buffer("keep"))


def _masked(logits: torch.Tensor, head: np.ndarray | torch.Tensor | None) -> torch.Tensor:
    """``logits`` with the entries outside ``head`` (booleans, ``(C,)`` or ``(N, C)``) masked."""
    if head is None:
        return logits
    keep = head if isinstance(head, torch.Tensor) else torch.from_numpy(np.asarray(head, bool))
    return logits.masked_fill(~keep.to(logits.device), MASKED_LOGIT)


@torch.no_grad()
def evaluate_ensemble(
    models: Sequence[nn.Module], x: np.ndarray, y: np.ndarray, head: np.ndarray | None = None
) -> tuple[float, float]:
    """Loss and accuracy of the average of ``models``' predicted probabilities on ``(x, y)``.

    A snapshot ensemble (Huang et al. 2017, "Snapshot Ensembles: Train 1, get M for free"):
    softmax outputs are averaged, then the argmax is taken; the loss is the negative log of the
    averaged probability of the true class. ``head`` as in :func:`evaluate`.
    """
    if not models:
        raise ValueError("models: expected at least one model")
    probs = None
    for model in models:
        model.eval()
        xt, yt = _tensors(x, y, model_device(model))
        p = torch.softmax(_masked(model(xt), head), dim=1)
        probs = p if probs is None else probs + p.to(probs.device)
    assert probs is not None
    probs = probs / len(models)
    yt = yt.to(probs.device)
    loss = float(-torch.log(probs.gather(1, yt[:, None]).clamp_min(1e-12)).mean())
    accuracy = float((probs.argmax(dim=1) == yt).float().mean())
    return loss, accuracy


@torch.no_grad()
def log_probs(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """Log-softmax outputs, shape ``(N, C)``."""
    model.eval()
    xt, _ = _tensors(x, np.zeros(len(x)), model_device(model))
    return torch.log_softmax(model(xt), dim=1).cpu().numpy()


def per_sample_gradients(
    model: nn.Module, x: np.ndarray, y: np.ndarray, *, max_samples: int, seed: int
) -> np.ndarray:
    """Per-sample gradients of the cross-entropy, flattened: shape ``(N, P)`` (torch.func)."""
    rng = np.random.default_rng(seed)
    if len(x) > max_samples:
        keep = np.sort(rng.choice(len(x), max_samples, replace=False))
        x, y = x[keep], y[keep]
    xt, yt = _tensors(x, y, model_device(model))
    params = {name: p.detach() for name, p in model.named_parameters()}

    def sample_loss(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor):
        logits = functional_call(model, p, (xi.unsqueeze(0),))
        return nn.functional.cross_entropy(logits, yi.unsqueeze(0))

    grads = vmap(grad(sample_loss), in_dims=(None, 0, 0))(params, xt, yt)
    return torch.cat([g.reshape(len(xt), -1) for g in grads.values()], dim=1).cpu().numpy()


def estimate_noise(
    model: nn.Module,
    data: ClientData,
    estimator: str,
    *,
    seed: int = 0,
    lr: float = 0.1,
    batch_size: int = 16,
    epochs: int = 2,
) -> float:
    """The client's noise estimate from the received global model, before local training.

    ``loss``: noisy fraction from a 2-component mixture on cross-entropy losses (FedCorr).
    ``loss-margin``: mean margin loss ``log p_max - log p_label`` (see
    :func:`fedlr.rates.noise.mean_margin_noise`). ``crossfit``: the same margin on held-out
    halves, each scored by a copy of the received model tuned on the other half
    (:func:`crossfit_noise`; ``lr``, ``batch_size`` and ``epochs`` are the tuning's).
    ``gradient``: per-sample gradient noise ratio ``tr(Sigma) / |G|^2``. ``oracle``: the
    fraction of train labels actually changed (simulation only).
    """
    if estimator == "crossfit":
        return crossfit_noise(model, data, seed=seed, lr=lr, batch_size=batch_size, epochs=epochs)
    if estimator == "oracle":
        if data.flip_fraction is None:
            raise ValueError("estimator: 'oracle' needs injected noise; this client has no truth")
        return float(data.flip_fraction)
    if estimator in ("loss", "loss-margin"):
        lp = log_probs(model, data.x_train)
        labels = np.asarray(data.y_train, dtype=int)
        if estimator == "loss-margin":
            return mean_margin_noise(lp, labels)
        return loss_mixture_noise(-lp[np.arange(len(labels)), labels], seed=seed)
    if estimator == "gradient":
        grads = per_sample_gradients(
            model, data.x_train, data.y_train, max_samples=GRADIENT_SAMPLE, seed=seed
        )
        return gradient_noise_ratio(grads)
    raise ValueError(
        f"estimator: expected loss, loss-margin, gradient or oracle, got {estimator!r}"
    )


def crossfit_noise(
    model: nn.Module,
    data: ClientData,
    *,
    seed: int = 0,
    lr: float = 0.1,
    batch_size: int = 16,
    epochs: int = 2,
) -> float:
    """Cross-fitted margin: label noise the site's own data cannot explain, less its shift.

    The train split is halved (seeded); a copy of the received model is tuned on each half
    (:func:`train_local`) and scores the other half's mean margin loss
    (:func:`fedlr.rates.noise.mean_margin_noise`); the estimate is the two halves' mean.
    Tuning adapts the global model to the site's own inputs and label prior, so misfit that
    comes from a different patient mix shrinks, while a flipped label stays unpredictable from
    the other half (cross-fitting as in Chernozhukov et al. 2018; confident learning scores
    out-of-sample predictions for the same reason, Northcutt et al., JAIR 2021). The received
    model is not changed.
    """
    import copy

    n = data.num_train
    if n < 4:
        return mean_margin_noise(log_probs(model, data.x_train), np.asarray(data.y_train))
    order = np.random.default_rng(seed).permutation(n)
    halves = (order[: n // 2], order[n // 2 :])
    x, y = np.asarray(data.x_train), np.asarray(data.y_train)
    margins = []
    for fit, score in (halves, halves[::-1]):
        tuned = copy.deepcopy(model)
        part = replace(data, x_train=x[fit], y_train=y[fit], y_train_clean=y[fit])
        train_local(tuned, part, lr=lr, epochs=epochs, batch_size=batch_size, seed=seed)
        lp = log_probs(tuned, x[score])
        margins.append(lp.max(axis=1) - lp[np.arange(len(score)), y[score]])
    values = np.concatenate(margins)
    return float(values.mean()) if np.all(np.isfinite(values)) else float("nan")


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
