"""Build the federation a run trains on: per-client train/test arrays, roles and injected noise.

Roles are fixed by partition id so that a run replays exactly and the oracle noise rates are
known:

==========================================  ===========================================
partition ids                               role
==========================================  ===========================================
``0 .. noisy-clients - 1``                  ``"noisy"``, label-noise rates
(or the ids of ``noisy-client-ids``)        ``linspace(noise-rate-min, noise-rate-max)``
next ``hard-clean-clients`` other ids       ``"hard-clean"``: only ``hard-classes``, clean
the rest                                    ``"clean"``
the last ``feature-noise-clients`` ids      also Gaussian input noise (train and test),
                                            whatever their role
==========================================  ===========================================

Each client's data is split into train/test first; label noise is then injected into the
train split only, so test labels are always clean.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedlr.config import ConfigError, is_files, split_list
from fedlr.data import files
from fedlr.data.datasets import load_digits_arrays, synthetic_federated
from fedlr.data.noise import gaussian_feature_noise, pair_flip_label_noise, symmetric_label_noise
from fedlr.data.partition import partition_indices

ROLE_NOISY = "noisy"
ROLE_HARD_CLEAN = "hard-clean"
ROLE_CLEAN = "clean"

# Stream tags: every random choice draws from default_rng([seed, ...tag]) so that changing one
# (e.g. the label-noise model) leaves the others' draws unchanged.
_TAG_HARD_CLEAN = 1
_TAG_SPLIT = 2
_TAG_LABEL_NOISE = 3
TAG_FEATURE_NOISE = 4

_LABEL_NOISE = {"symmetric": symmetric_label_noise, "pair-flip": pair_flip_label_noise}


def client_label_noise(
    cfg: Mapping[str, Any], partition_id: int, rate: float, y: np.ndarray, num_classes: int
) -> tuple[np.ndarray, float]:
    """Client ``partition_id``'s train labels ``y`` after ``label-noise`` at ``rate``.

    Draws from the client's own stream ``default_rng([seed, partition_id, 3])`` (tabular and
    graph tasks alike); returns the labels and the fraction actually changed (0 at rate 0).
    """
    name = str(cfg["label-noise"])
    if name not in _LABEL_NOISE:
        raise ValueError(f"label-noise: expected {' or '.join(_LABEL_NOISE)}, got {name!r}")
    if rate <= 0:
        return np.asarray(y).copy(), 0.0
    rng = np.random.default_rng([int(cfg["seed"]), partition_id, _TAG_LABEL_NOISE])
    noisy, changed = _LABEL_NOISE[name](y, rate, num_classes, rng)
    return noisy, float(changed.mean())


@dataclass(frozen=True, eq=False)
class ClientData:
    """One client's data and the truth about it.

    Attributes
    ----------
    partition_id : int
        The client's partition id (its Flower ``partition-id``).
    role : str or None
        ``"noisy"``, ``"hard-clean"`` or ``"clean"``; None for users' files into which nothing
        is injected (a real site's noise is unknown).
    noise_rate : float
        Configured label-noise rate, 0.0 for clean clients: the oracle truth.
    flip_fraction : float or None
        Fraction of train labels actually changed (for symmetric noise about
        ``noise_rate * (1 - 1/C)``); None where the truth is unknown (``role`` None).
    feature_sigma : float
        Std of the Gaussian input noise added to train and test inputs, 0.0 if none.
    x_train, y_train : np.ndarray
        Train inputs (float32, ``(n_train, d)``) and labels (int64), possibly noisy.
    y_train_clean : np.ndarray
        The train labels before label noise.
    x_test, y_test : np.ndarray
        Test inputs and labels; test labels are always clean.
    """

    partition_id: int
    role: str | None
    noise_rate: float
    flip_fraction: float | None
    feature_sigma: float
    x_train: np.ndarray
    y_train: np.ndarray
    y_train_clean: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    site: str = ""

    @property
    def num_train(self) -> int:
        """Train examples."""
        return len(self.y_train)

    @property
    def num_test(self) -> int:
        """Test examples."""
        return len(self.y_test)


@dataclass(frozen=True, eq=False)
class Federation:
    """All clients, ordered by partition id, and the shape of the task.

    Attributes
    ----------
    clients : list of ClientData
        ``clients[i].partition_id == i``.
    num_classes : int
        Number of classes.
    num_features : int
        Input dimension.
    classes : tuple
        Users' files: the label values, in class-index order (empty for built-in data).
    """

    clients: list[ClientData]
    num_classes: int
    num_features: int
    classes: tuple[Any, ...] = ()


def client_roles(cfg: Mapping[str, Any]) -> list[tuple[str, float, float]]:
    """Give each partition id its ``(role, noise_rate, feature_sigma)`` from the config.

    Parameters
    ----------
    cfg : Mapping
        A resolved config (``fedlr.config.resolve()``).

    Returns
    -------
    list of tuple
        One ``(role, noise_rate, feature_sigma)`` per partition id.

    Examples
    --------
    >>> from fedlr.config import resolve
    >>> roles = client_roles(resolve(overrides={"num-clients": 4, "noisy-clients": 2,
    ...     "noise-rate-min": 0.2, "noise-rate-max": 0.4, "feature-noise-clients": 1,
    ...     "feature-noise-sigma": 0.5}))
    >>> roles
    [('noisy', 0.2, 0.0), ('noisy', 0.4, 0.0), ('hard-clean', 0.0, 0.0), ('clean', 0.0, 0.5)]
    """
    num_clients = int(cfg["num-clients"])
    num_noisy = int(cfg["noisy-clients"])
    num_hard = int(cfg["hard-clean-clients"])
    num_feature = int(cfg["feature-noise-clients"])
    rates = np.linspace(cfg["noise-rate-min"], cfg["noise-rate-max"], num_noisy)
    chosen = [int(v) for v in split_list(cfg.get("noisy-client-ids", ""))] or list(range(num_noisy))
    rank = {pid: i for i, pid in enumerate(chosen)}
    hard = [pid for pid in range(num_clients) if pid not in rank][:num_hard]
    roles = []
    for pid in range(num_clients):
        if pid in rank:
            # rounded so that linspace's 0.7999999999999999 reads as the configured 0.8
            role, rate = ROLE_NOISY, round(float(rates[rank[pid]]), 12)
        elif pid in hard:
            role, rate = ROLE_HARD_CLEAN, 0.0
        else:
            role, rate = ROLE_CLEAN, 0.0
        sigma = float(cfg["feature-noise-sigma"]) if pid >= num_clients - num_feature else 0.0
        roles.append((role, rate, sigma))
    return roles


def _digits_client_indices(
    labels: np.ndarray, cfg: Mapping[str, Any], hard_ids: list[int], hard_classes: list[int]
) -> list[np.ndarray]:
    """Hard-clean clients first draw from the hard classes; the rest is partitioned."""
    num_clients = int(cfg["num-clients"])
    seed = int(cfg["seed"])
    indices: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * num_clients
    taken = np.empty(0, dtype=np.int64)
    if labels.size // num_clients < 10:
        raise ValueError(
            f"num-clients: digits has {labels.size} samples, too few for {num_clients} clients "
            f"(at most {labels.size // 10}, so that each client gets 10 or more)"
        )
    if hard_ids:
        pool = np.flatnonzero(np.isin(labels, hard_classes))
        per_client = min(labels.size // num_clients, pool.size // len(hard_ids))
        if per_client < 2:
            raise ValueError(
                f"hard-clean-clients: {len(hard_ids)} clients cannot each get 2 samples of "
                f"hard-classes ({pool.size} available)"
            )
        drawn = np.random.default_rng([seed, _TAG_HARD_CLEAN]).permutation(pool)
        for i, pid in enumerate(hard_ids):
            indices[pid] = np.sort(drawn[i * per_client : (i + 1) * per_client])
        taken = drawn[: len(hard_ids) * per_client]
    other_ids = [pid for pid in range(num_clients) if pid not in hard_ids]
    if other_ids:
        remaining = np.setdiff1d(np.arange(labels.size), taken)
        parts = partition_indices(
            labels[remaining],
            len(other_ids),
            str(cfg["partitioner"]),
            alpha=float(cfg["dirichlet-alpha"]),
            size_sigma=float(cfg["size-skew-sigma"]),
            seed=seed,
        )
        for pid, part in zip(other_ids, parts, strict=True):
            indices[pid] = remaining[part]
    return indices


def _train_test_split(
    n: int, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split; ``ceil(test_fraction * n)`` test samples, at least one of each."""
    if n < 2:
        raise ValueError(f"test-fraction: a client with {n} sample(s) cannot be split")
    # rounded first: 0.07 * 100 is 7.000000000000001 in floating point, not 8 test samples
    n_test = min(max(math.ceil(round(test_fraction * n, 9)), 1), n - 1)
    order = rng.permutation(n)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def has_truth(cfg: Mapping[str, Any]) -> bool:
    """Whether clients know their true noise.

    Always for built-in data; for users' files only when noise is injected into them (a real
    site's own noise is unknown).
    """
    return not is_files(cfg) or bool(cfg["noisy-clients"] or cfg["feature-noise-clients"])


def make_client(
    cfg: Mapping[str, Any],
    partition_id: int,
    split: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    num_classes: int,
    role: tuple[str, float, float],
    site: str = "",
) -> ClientData:
    """Client ``partition_id`` from its clean ``(x_train, y_train, x_test, y_test)``.

    Injects its label noise (train labels only) and feature noise (train and test inputs) as
    :func:`client_roles` assigns them (``role`` is its ``(role, noise_rate, feature_sigma)``);
    each from the client's own seeded stream, so one client is built alike alone or with all.
    """
    x_train, y_train_clean, x_test, y_test = split
    name, rate, sigma = role
    y_train, flip_fraction = client_label_noise(cfg, partition_id, rate, y_train_clean, num_classes)
    if sigma > 0:
        feature_rng = np.random.default_rng([int(cfg["seed"]), partition_id, TAG_FEATURE_NOISE])
        x_train = gaussian_feature_noise(x_train, sigma, feature_rng)
        x_test = gaussian_feature_noise(x_test, sigma, feature_rng)
    truth = has_truth(cfg)
    return ClientData(
        partition_id=partition_id,
        role=name if truth else None,
        noise_rate=rate,
        flip_fraction=flip_fraction if truth else None,
        feature_sigma=sigma,
        x_train=x_train,
        y_train=y_train,
        y_train_clean=y_train_clean,
        x_test=x_test,
        y_test=y_test,
        site=site,
    )


def build_federation(cfg: Mapping[str, Any]) -> Federation:
    """Build every client's train/test data, roles and noise from a resolved config.

    Digits (scikit-learn, 1797 samples, 64 features): each hard-clean client first draws
    ``len(data) // num-clients`` samples (without replacement) from the ``hard-classes`` only;
    the remaining samples are split among the other clients by
    :func:`~fedlr.data.partition.partition_indices` with ``partitioner``. Synthetic: LEAF's
    Synthetic(alpha, beta), each client its own generated data (``partitioner`` is not used);
    a hard-clean client's labels are restricted to ``hard-classes`` (see
    :func:`~fedlr.data.datasets.synthetic_federated`).

    Each client's data is then split into train/test (``test-fraction``), label noise
    (``label-noise``, at the client's rate) is injected into the train labels only, and the last
    ``feature-noise-clients`` ids get Gaussian noise (``feature-noise-sigma``) on train and test
    inputs. Every random choice draws from ``np.random.default_rng([seed, ...])``; the same
    config gives identical arrays.

    Parameters
    ----------
    cfg : Mapping
        A resolved config (``fedlr.config.resolve()``).

    Returns
    -------
    Federation
        Clients ordered by partition id.

    Raises
    ------
    ValueError
        The data cannot satisfy the config (e.g. a hard class the dataset lacks).
    """
    seed = int(cfg["seed"])
    num_clients = int(cfg["num-clients"])
    roles = client_roles(cfg)
    hard_ids = [pid for pid, (role, _, _) in enumerate(roles) if role == ROLE_HARD_CLEAN]
    hard_classes = sorted({int(c) for c in split_list(cfg["hard-classes"])})
    num_classes = 10
    if hard_ids and (not hard_classes or max(hard_classes) >= num_classes):
        raise ValueError(
            f"hard-classes: expected class indices in 0..{num_classes - 1}, "
            f"got {cfg['hard-classes']!r}"
        )
    if str(cfg["label-noise"]) not in _LABEL_NOISE:
        raise ValueError(
            f"label-noise: expected {' or '.join(_LABEL_NOISE)}, got {cfg['label-noise']!r}"
        )

    names = [""] * num_clients
    classes: tuple[Any, ...] = ()
    if is_files(cfg):
        # every site here, through the same statistics -> agreement -> encoding as the query round
        sites = [
            files.split_site(name, frame, cfg, pid)
            for pid, (name, frame) in enumerate(files.site_frames(cfg))
        ]
        if len(sites) != num_clients:
            raise ValueError(
                f"num-clients: expected the number of sites in data-files ({len(sites)}), "
                f"got {num_clients}"
            )
        first = sites[0]
        for site in sites[1:]:
            if site.features != first.features:
                raise ConfigError(
                    f"feature-columns: site {site.name} has features {', '.join(site.features)}, "
                    f"but {first.name} has {', '.join(first.features)}; expected the same "
                    "columns at every site (or list them in feature-columns)"
                )
        shared = {
            pid: files.statistics_to_json(site, files.site_statistics(site))
            for pid, site in enumerate(sites)
        }
        try:
            agreement_json, left_out = files.agree_from_replies(shared)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        if left_out:  # the user's own files: say which site and why, never train without it
            pid, reason = next(iter(left_out.items()))
            raise ConfigError(f"data-files: site {sites[pid].name}: {reason}")
        splits = [files.encode_own_site(cfg, site, agreement_json) for site in sites]
        names = [site.name for site in sites]
        for site in sites:
            files.log_missing(site)
        classes = tuple(files.agreement_from_json(agreement_json)[1].classes)
        num_classes = len(classes)
    else:
        if cfg["dataset"] == "digits":
            x_all, y_all = load_digits_arrays()
            per_client = _digits_client_indices(y_all, cfg, hard_ids, hard_classes)
            raw = [(x_all[idx], y_all[idx]) for idx in per_client]
        elif cfg["dataset"] == "synthetic":
            raw = synthetic_federated(
                num_clients,
                float(cfg["synthetic-alpha"]),
                float(cfg["synthetic-beta"]),
                seed=seed,
                num_classes=num_classes,
                client_classes={pid: hard_classes for pid in hard_ids},
            )
        else:
            raise ValueError(
                f"dataset: expected digits, synthetic, csv or parquet, got {cfg['dataset']!r}"
            )
        splits = []
        for pid, (x, y) in enumerate(raw):
            train, test = _train_test_split(
                y.size, float(cfg["test-fraction"]), np.random.default_rng([seed, pid, _TAG_SPLIT])
            )
            splits.append((x[train], y[train], x[test], y[test]))
    clients = [
        make_client(cfg, pid, split, num_classes, roles[pid], names[pid])
        for pid, split in enumerate(splits)
    ]
    return Federation(
        clients=clients,
        num_classes=num_classes,
        num_features=splits[0][0].shape[1],
        classes=classes,
    )


def describe(federation: Federation) -> list[dict[str, Any]]:
    """Summarise each client as a JSON-ready row.

    Parameters
    ----------
    federation : Federation
        As built by :func:`build_federation`.

    Returns
    -------
    list of dict
        Per client: ``partition_id``, ``role``, ``noise_rate``, ``flip_fraction``,
        ``feature_sigma``, ``n_train``, ``n_test`` and ``classes`` (sorted classes present in
        the clean train and test labels).
    """
    return [
        {
            "partition_id": client.partition_id,
            "role": client.role,
            "noise_rate": client.noise_rate,
            "flip_fraction": client.flip_fraction,
            "feature_sigma": client.feature_sigma,
            "n_train": int(client.y_train.size),
            "n_test": int(client.y_test.size),
            "classes": sorted(
                int(c) for c in np.unique(np.concatenate([client.y_train_clean, client.y_test]))
            ),
        }
        for client in federation.clients
    ]
