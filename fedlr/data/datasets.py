"""Datasets that need no download: scikit-learn's digits and LEAF's Synthetic(alpha, beta)."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Load scikit-learn's handwritten digits (shipped with scikit-learn, no download).

    Reads the file ``sklearn.datasets.load_digits`` reads (``sklearn/datasets/data/digits.csv.gz``)
    without importing ``sklearn.datasets``, which costs ~1-2 s in every fresh process, and a
    deployed ClientApp is a fresh process per message; falls back to ``load_digits`` if the file
    is not where it is expected. Both give the same arrays (tested).

    Returns
    -------
    x : np.ndarray
        Shape ``(1797, 64)``, float32, the 8x8 pixel counts divided by 16, so in ``[0, 1]``.
    y : np.ndarray
        Shape ``(1797,)``, int64, the digit ``0..9``.
    """
    path = _sklearn_digits_file()
    if path is not None:
        table = np.loadtxt(path, delimiter=",")
        data, target = table[:, :-1], table[:, -1]
    else:  # pragma: no cover  (a scikit-learn that moved its data file)
        from sklearn.datasets import load_digits

        digits = load_digits()
        data, target = digits.data, digits.target
    x = (np.asarray(data, dtype=np.float32) / np.float32(16.0)).astype(np.float32)
    y = np.asarray(target, dtype=np.int64)
    return x, y


def _sklearn_digits_file() -> Path | None:
    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return path
    return None


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def synthetic_federated(
    num_clients: int,
    alpha: float,
    beta: float,
    *,
    seed: int,
    num_features: int = 60,
    num_classes: int = 10,
    min_samples: int = 50,
    max_samples: int = 600,
    client_classes: Mapping[int, Sequence[int]] | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    r"""Generate LEAF's Synthetic(alpha, beta), one local dataset per client.

    Li et al. 2020, "Federated Optimization in Heterogeneous Networks" (FedProx), Sec. 5.1,
    following Shamir et al. 2014; code: ``litian96/FedProx`` ``data/synthetic_*/generate_*.py``
    and LEAF ``data/synthetic``. For client :math:`k` with :math:`d` features and :math:`C`
    classes:

    .. math::

        u_k &\sim N(0, \alpha), \quad W_k \in \mathbb{R}^{C \times d} \sim N(u_k, 1), \quad
        b_k \in \mathbb{R}^{C} \sim N(u_k, 1) \\
        B_k &\sim N(0, \beta), \quad v_k[j] \sim N(B_k, 1), \quad
        \Sigma = \mathrm{diag}(j^{-1.2}), \; j = 1..d \\
        x &\sim N(v_k, \Sigma), \quad y = \arg\max \mathrm{softmax}(W_k x + b_k)

    ``alpha`` controls how much the local models differ, ``beta`` how much the local inputs
    differ. As in the reference code, the second argument of :math:`N` is used as the standard
    deviation (``np.random.normal(0, alpha)``); :math:`\alpha = \beta = 0` gives identical
    distributions up to the unit-variance draws of :math:`W_k, b_k, v_k`.

    Client sizes are log-normal as in the reference code, ``int(lognormal(4, 2)) + 50``
    (median about 105), but capped at ``max_samples`` (600 by default) so that the heavy tail
    (``lognormal(4, 2)`` reaches tens of thousands) keeps the federation small enough for CPU
    simulation: :math:`n_k = \min(\lfloor \mathrm{LogNormal}(4, 2) \rfloor + 50, 600)`.

    A client listed in ``client_classes`` has a restricted label space: its samples are drawn
    from the same :math:`N(v_k, \Sigma)` and labelled by the most probable class *within* its
    classes, :math:`y = \arg\max_{c \in S_k} (W_k x + b_k)_c`. (Keeping only the samples whose
    unrestricted label falls in :math:`S_k` is often empty: one class tends to dominate a
    client's model, e.g. seed 0, client 8 draws no sample of classes 1, 3, 8, 9 in 63.)

    Parameters
    ----------
    num_clients : int
        Number of clients, at least 1.
    alpha : float
        Model heterogeneity, at least 0.
    beta : float
        Input heterogeneity, at least 0.
    seed : int
        Seed of ``np.random.default_rng``, the only source of randomness.
    num_features : int, optional
        :math:`d`, at least 1 (60 in the paper).
    num_classes : int, optional
        :math:`C`, at least 2 (10 in the paper).
    min_samples : int, optional
        The offset added to the log-normal draw (50 in the reference code), at least 1.
    max_samples : int, optional
        The cap on a client's size, at least ``min_samples``.
    client_classes : Mapping of int to Sequence of int, optional
        Client id -> the classes its labels are restricted to (each in ``0..num_classes-1``).
        Which clients are listed does not change the other clients' data.

    Returns
    -------
    list of tuple of np.ndarray
        ``(x, y)`` per client: ``x`` float32 of shape ``(n_k, num_features)``, ``y`` int64 of
        shape ``(n_k,)`` with values in ``0..num_classes-1``.

    Raises
    ------
    ValueError
        An argument is out of range; the message names it.

    Examples
    --------
    >>> clients = synthetic_federated(3, 1.0, 1.0, seed=0)
    >>> [(x.shape[1], x.dtype.name, y.dtype.name) for x, y in clients]
    [(60, 'float32', 'int64'), (60, 'float32', 'int64'), (60, 'float32', 'int64')]
    """
    if num_clients < 1:
        raise ValueError(f"num_clients: expected an integer >= 1, got {num_clients!r}")
    if alpha < 0:
        raise ValueError(f"alpha: expected a number >= 0, got {alpha!r}")
    if beta < 0:
        raise ValueError(f"beta: expected a number >= 0, got {beta!r}")
    if num_features < 1:
        raise ValueError(f"num_features: expected an integer >= 1, got {num_features!r}")
    if num_classes < 2:
        raise ValueError(f"num_classes: expected an integer >= 2, got {num_classes!r}")
    if min_samples < 1:
        raise ValueError(f"min_samples: expected an integer >= 1, got {min_samples!r}")
    if max_samples < min_samples:
        raise ValueError(
            f"max_samples: expected an integer >= min_samples ({min_samples}), got {max_samples!r}"
        )

    subsets = {
        int(k): np.unique(np.asarray(v, dtype=np.int64)) for k, v in (client_classes or {}).items()
    }
    for k, classes in subsets.items():
        if not 0 <= k < num_clients:
            raise ValueError(f"client_classes: client ids must be in 0..{num_clients - 1}, got {k}")
        if classes.size == 0 or classes.min() < 0 or classes.max() >= num_classes:
            raise ValueError(
                f"client_classes: classes of client {k} must be a non-empty subset of "
                f"0..{num_classes - 1}, got {classes.tolist()}"
            )

    rng = np.random.default_rng(seed)
    # lognormal(4, 2) can overflow int64 only for absurd draws; clip before the cast.
    raw_sizes = np.minimum(rng.lognormal(4.0, 2.0, num_clients), float(max_samples))
    sizes = np.minimum(raw_sizes.astype(np.int64) + min_samples, max_samples)
    model_means = rng.normal(0.0, alpha, num_clients)  # u_k, shared by W_k and b_k
    input_shifts = rng.normal(0.0, beta, num_clients)  # B_k
    input_std = np.power(np.arange(1, num_features + 1, dtype=np.float64), -1.2 / 2.0)

    clients: list[tuple[np.ndarray, np.ndarray]] = []
    for k in range(num_clients):
        weights = rng.normal(model_means[k], 1.0, (num_classes, num_features))
        bias = rng.normal(model_means[k], 1.0, num_classes)
        input_mean = rng.normal(input_shifts[k], 1.0, num_features)
        # Sigma is diagonal, so N(v_k, Sigma) is v_k + sqrt(diag Sigma) * N(0, I).
        x = input_mean + input_std * rng.standard_normal((int(sizes[k]), num_features))
        probabilities = _softmax(x @ weights.T + bias)
        if k in subsets:
            y = subsets[k][np.argmax(probabilities[:, subsets[k]], axis=1)]
        else:
            y = np.argmax(probabilities, axis=1)
        clients.append((x.astype(np.float32), y.astype(np.int64)))
    return clients
