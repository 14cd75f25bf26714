"""Split sample indices across clients with flwr-datasets' partitioners.

The partitioners work on a Hugging Face ``datasets.Dataset``; here it is a small in-memory one,
``{"label": labels, "index": 0..n-1}``, so any array of labels can be partitioned and the
result read back as index arrays into the caller's own arrays.
"""

from __future__ import annotations

import numpy as np

PARTITION_METHODS = ("iid", "dirichlet", "size-skew")


def _index_dataset(labels: np.ndarray, order: np.ndarray):
    from datasets import Dataset

    return Dataset.from_dict({"label": labels[order], "index": order})


def _read_partitions(partitioner, num_partitions: int) -> list[np.ndarray]:
    return [
        np.sort(np.asarray(partitioner.load_partition(pid)["index"], dtype=np.int64))
        for pid in range(num_partitions)
    ]


def log_normal_sizes(
    total: int, num_partitions: int, sigma: float, rng: np.random.Generator, *, minimum: int = 1
) -> list[int]:
    r"""Draw client sizes proportional to log-normal weights, summing exactly to ``total``.

    :math:`w_k \sim \mathrm{LogNormal}(0, \sigma)`, :math:`n_k = m + \mathrm{round}(w_k /
    \sum_j w_j \cdot (N - K m))`, rounded by largest remainder so that :math:`\sum_k n_k = N`.
    ``sigma`` near 0 gives equal sizes; ``sigma = 1`` gives a largest-to-smallest ratio of
    roughly 10-30 for 10 clients.

    Parameters
    ----------
    total : int
        :math:`N`, the number of samples to share out.
    num_partitions : int
        :math:`K`, at least 1 and at most ``total // minimum``.
    sigma : float
        Log-normal sigma, > 0.
    rng : np.random.Generator
        Source of the weights.
    minimum : int, optional
        :math:`m`, the smallest size, at least 1.

    Returns
    -------
    list of int
        :math:`n_0, \dots, n_{K-1}`, each at least ``minimum``, summing to ``total``.

    Raises
    ------
    ValueError
        An argument is out of range; the message names it.
    """
    if minimum < 1:
        raise ValueError(f"minimum: expected an integer >= 1, got {minimum!r}")
    if not 1 <= num_partitions <= total // minimum:
        raise ValueError(
            f"num_partitions: expected an integer in [1, {total // minimum}] "
            f"(total {total} // minimum {minimum}), got {num_partitions!r}"
        )
    if not sigma > 0:
        raise ValueError(f"sigma: expected a number > 0, got {sigma!r}")
    weights = rng.lognormal(0.0, sigma, num_partitions)
    shares = weights / weights.sum() * (total - minimum * num_partitions)
    sizes = np.floor(shares).astype(np.int64)
    left = total - minimum * num_partitions - int(sizes.sum())
    sizes[np.argsort(-(shares - sizes), kind="stable")[:left]] += 1
    return [int(minimum + size) for size in sizes]


def partition_indices(
    labels: np.ndarray,
    num_partitions: int,
    method: str,
    *,
    alpha: float = 1.0,
    size_sigma: float = 1.0,
    seed: int,
    min_partition_size: int = 10,
) -> list[np.ndarray]:
    r"""Split ``0..len(labels)-1`` into ``num_partitions`` disjoint, covering index sets.

    - ``"iid"``: a seeded permutation, then flwr-datasets' ``IidPartitioner`` (equal contiguous
      shards, sizes differ by at most one).
    - ``"dirichlet"``: flwr-datasets' ``DirichletPartitioner(partition_by="label", alpha=alpha,
      seed=seed, min_partition_size=...)`` (Hsu et al. 2019, "Measuring the Effects of
      Non-Identical Data Distribution"): for each class, proportions :math:`p \sim
      \mathrm{Dir}(\alpha)` over the partitions, resampled until every partition holds at least
      ``min_partition_size`` samples (at most 10 tries, then flwr-datasets raises).
    - ``"size-skew"``: sizes from :func:`log_normal_sizes` with ``size_sigma`` (labels ignored),
      each at least ``min_partition_size``, then flwr-datasets' ``SizePartitioner`` on a seeded
      permutation (it takes contiguous blocks, so the permutation makes them random subsets).

    ``min_partition_size`` is lowered to ``len(labels) // num_partitions`` where that is smaller.

    Parameters
    ----------
    labels : np.ndarray
        Shape ``(n,)``, the class of each sample (used by ``"dirichlet"`` only).
    num_partitions : int
        Number of partitions, in ``[1, n]``.
    method : str
        ``"iid"``, ``"dirichlet"`` or ``"size-skew"``.
    alpha : float, optional
        Dirichlet concentration, > 0; small means strong label skew.
    size_sigma : float, optional
        Log-normal sigma of the partition sizes, > 0.
    seed : int
        Seed (>= 0) of every random choice; the same seed gives the same partitions.
    min_partition_size : int, optional
        Smallest partition for ``"dirichlet"`` and ``"size-skew"``, at least 1.

    Returns
    -------
    list of np.ndarray
        ``num_partitions`` sorted int64 index arrays; every index appears in exactly one.

    Raises
    ------
    ValueError
        An argument is out of range; the message names it.

    Examples
    --------
    >>> parts = partition_indices(np.array([0, 0, 1, 1, 2, 2]), 3, "iid", seed=0)
    >>> sorted(np.concatenate(parts).tolist())
    [0, 1, 2, 3, 4, 5]
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels: expected a non-empty 1-D array, got shape {labels.shape}")
    n = labels.size
    if method not in PARTITION_METHODS:
        raise ValueError(f"method: expected one of {', '.join(PARTITION_METHODS)}, got {method!r}")
    if not 1 <= num_partitions <= n:
        raise ValueError(f"num_partitions: expected an integer in [1, {n}], got {num_partitions!r}")
    if not alpha > 0:
        raise ValueError(f"alpha: expected a number > 0, got {alpha!r}")
    if not size_sigma > 0:
        raise ValueError(f"size_sigma: expected a number > 0, got {size_sigma!r}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed: expected an integer >= 0, got {seed!r}")
    if min_partition_size < 1:
        raise ValueError(
            f"min_partition_size: expected an integer >= 1, got {min_partition_size!r}"
        )
    min_size = min(int(min_partition_size), n // num_partitions)
    rng = np.random.default_rng(seed)

    from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, SizePartitioner

    if method == "dirichlet":
        partitioner = DirichletPartitioner(
            num_partitions=num_partitions,
            partition_by="label",
            alpha=float(alpha),
            min_partition_size=min_size,
            shuffle=False,  # indices are sorted on return
            seed=int(seed),
        )
        partitioner.dataset = _index_dataset(labels, np.arange(n, dtype=np.int64))
    elif method == "iid":
        partitioner = IidPartitioner(num_partitions=num_partitions)
        partitioner.dataset = _index_dataset(labels, rng.permutation(n).astype(np.int64))
    else:
        sizes = log_normal_sizes(n, num_partitions, size_sigma, rng, minimum=min_size)
        partitioner = SizePartitioner(partition_sizes=sizes)
        partitioner.dataset = _index_dataset(labels, rng.permutation(n).astype(np.int64))
    return _read_partitions(partitioner, num_partitions)
