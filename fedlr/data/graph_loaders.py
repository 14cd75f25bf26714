r"""Graphs with no download: Cora, Zachary's karate club and a synthetic heavy-tailed graph.

Loaders return a :class:`torch_geometric.data.Data` with ``x`` (float32 node features), ``y``
(int64 classes), an undirected ``edge_index`` without self-loops (every edge stored in both
directions, as PyG does) and boolean ``train_mask``, ``val_mask`` and ``test_mask``:

- :func:`load_cora`: Cora (Sen et al. 2008; Planetoid split of Yang et al. 2016), read by PyG's
  ``Planetoid`` from raw files copied from a local directory (nothing is downloaded);
- :func:`load_karate`: Zachary's karate club, shipped inside PyG, with a seeded split;
- :func:`barabasi_albert_graph`: a heavy-tailed, homophilous synthetic graph (preferential
  attachment with class homophily, Karimi et al. 2018).
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

with warnings.catch_warnings():  # PyG 2.8 calls torch.jit.script at import; torch 2.13 warns
    warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", DeprecationWarning)
    from torch_geometric.data import Data

PLANETOID_ENV = "FEDLR_PLANETOID_DIR"
"""Environment variable naming the directory of raw Planetoid files (see :func:`load_cora`)."""

DEFAULT_PLANETOID_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "planetoid"
"""``../shared/data/planetoid`` next to the repository, where this project keeps raw Cora files."""

CORA_RAW_FILES = tuple(
    f"ind.cora.{name}" for name in ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
)
"""The eight files ``Planetoid(root, "Cora")`` checks under ``root/Cora/raw`` before downloading."""


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed: expected an integer >= 0, got {seed!r}")


def _has_cora_raw(directory: Path) -> bool:
    return all((directory / name).is_file() for name in CORA_RAW_FILES)


def _find_cora_raw(source: str | os.PathLike[str] | None) -> Path:
    if source is not None:
        where, how = Path(source), "the source argument"
    elif os.environ.get(PLANETOID_ENV):
        where, how = Path(os.environ[PLANETOID_ENV]), f"${PLANETOID_ENV}"
    else:
        where, how = DEFAULT_PLANETOID_DIR, "the default location"
    for candidate in (where / "Cora" / "raw", where):
        if _has_cora_raw(candidate):
            return candidate
    raise FileNotFoundError(
        f"source: Cora's raw Planetoid files ({', '.join(CORA_RAW_FILES)}) are not in "
        f"{where / 'Cora' / 'raw'} nor in {where} (from {how}); nothing is downloaded. Copy them "
        f"there, pass source=<directory holding Cora/raw>, or set ${PLANETOID_ENV}."
    )


def load_cora(root: str | os.PathLike[str], source: str | os.PathLike[str] | None = None) -> Data:
    r"""Load Cora with PyG's ``Planetoid(root, "Cora")``, offline.

    Cora (Sen et al. 2008, "Collective Classification in Network Data"): 2708 papers, 5278
    citation links (10556 ``edge_index`` entries, both directions), 1433 binary bag-of-words
    features (not normalised here; add ``T.NormalizeFeatures()`` if wanted), 7 classes, and the
    public split of Yang et al. 2016 ("Revisiting Semi-Supervised Learning with Graph
    Embeddings", used by Kipf & Welling 2017): 20 training nodes per class (140), 500 validation
    and 1000 test nodes.

    ``Planetoid`` downloads only when one of its eight raw files (:data:`CORA_RAW_FILES`) is
    missing from ``root/Cora/raw`` (``Dataset._download`` checks ``files_exist(self.raw_paths)``
    first). This function therefore copies the files into ``root/Cora/raw`` when they are not
    already there, and raises before constructing ``Planetoid`` if they cannot be found, so no
    network access is ever attempted. The processed tensors are cached in
    ``root/Cora/processed``.

    The raw files are taken from the first of these that holds them (either in ``Cora/raw``
    below it or directly in it): ``source``; the directory in ``$FEDLR_PLANETOID_DIR``;
    :data:`DEFAULT_PLANETOID_DIR` (``../shared/data/planetoid`` next to the repository).

    Parameters
    ----------
    root : str or path-like
        Dataset root for ``Planetoid``; created if missing.
    source : str or path-like, optional
        Directory holding ``Cora/raw/ind.cora.*`` (or the ``ind.cora.*`` files themselves).
        Not needed when ``root/Cora/raw`` already holds the files.

    Returns
    -------
    Data
        ``x`` (2708, 1433) float32, ``y`` (2708,) int64, ``edge_index`` (2, 10556) and the
        public ``train_mask``, ``val_mask``, ``test_mask``.

    Raises
    ------
    FileNotFoundError
        The raw files are neither under ``root/Cora/raw`` nor at the source; the message names
        the paths searched and how to provide them.
    """
    from torch_geometric.datasets import Planetoid

    raw_dir = Path(root) / "Cora" / "raw"
    if not _has_cora_raw(raw_dir):
        found = _find_cora_raw(source)
        raw_dir.mkdir(parents=True, exist_ok=True)
        for name in CORA_RAW_FILES:
            shutil.copyfile(found / name, raw_dir / name)
    dataset = Planetoid(str(root), "Cora", split="public")
    data = dataset[0]
    assert isinstance(data, Data)
    return data


def _split_masks(
    num_nodes: int, train_fraction: float, val_fraction: float, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if not (0 < train_fraction and 0 <= val_fraction and train_fraction + val_fraction <= 1):
        raise ValueError(
            "train_fraction, val_fraction: expected train_fraction > 0, val_fraction >= 0 and "
            f"train_fraction + val_fraction <= 1, got {train_fraction!r}, {val_fraction!r}"
        )
    order = torch.from_numpy(rng.permutation(num_nodes))
    num_train = int(round(train_fraction * num_nodes))
    num_val = int(round(val_fraction * num_nodes))
    masks = [torch.zeros(num_nodes, dtype=torch.bool) for _ in range(3)]
    masks[0][order[:num_train]] = True
    masks[1][order[num_train : num_train + num_val]] = True
    masks[2][order[num_train + num_val :]] = True
    return masks[0], masks[1], masks[2]


def load_karate(seed: int = 0, *, train_fraction: float = 0.5, val_fraction: float = 0.25) -> Data:
    r"""Load Zachary's karate club (shipped inside PyG's ``KarateClub``, no download).

    Zachary 1977, "An Information Flow Model for Conflict and Fission in Small Groups": 34
    members, 78 friendships (156 ``edge_index`` entries), one-hot identity features (34), and the
    4 classes PyG derives from modularity-based clustering (Brandes et al. 2008). PyG's own
    ``train_mask`` marks one node per class and there is no validation or test mask; here all
    three masks come from a seeded permutation instead: the first
    :math:`\mathrm{round}(34 \cdot f_{train})` nodes train, the next
    :math:`\mathrm{round}(34 \cdot f_{val})` validate, the rest test (17 / 8 / 9 by default).

    Parameters
    ----------
    seed : int, optional
        Seed (>= 0) of the split.
    train_fraction, val_fraction : float, optional
        Shares of the nodes for training and validation, the rest for testing.

    Returns
    -------
    Data
        ``x`` (34, 34), ``y`` (34,), ``edge_index`` (2, 156) and the three masks.
    """
    from torch_geometric.datasets import KarateClub

    _check_seed(seed)
    data = KarateClub()[0]
    assert isinstance(data, Data)
    rng = np.random.default_rng(seed)
    data.train_mask, data.val_mask, data.test_mask = _split_masks(
        data.num_nodes, train_fraction, val_fraction, rng
    )
    return data


def barabasi_albert_graph(
    num_nodes: int,
    m: int,
    num_features: int,
    num_classes: int,
    seed: int,
    *,
    homophily: float = 0.9,
    feature_noise: float = 1.0,
    train_fraction: float = 0.6,
    val_fraction: float = 0.2,
) -> Data:
    r"""Generate a heavy-tailed graph with homophilous labels: preferential attachment by class.

    The BA-homophily model of Karimi et al. 2018 ("Homophily influences ranking of minorities
    in social networks", Sci. Rep. 8, 11077), itself Barabási & Albert 1999 with a class bias.
    Every node :math:`i` draws a class :math:`c_i` uniformly from :math:`C` classes. The first
    :math:`m + 1` nodes form a clique; each later node :math:`i` links to :math:`m` distinct
    earlier nodes, drawn without replacement with probability

    .. math::

        P(i \to j) \propto h_{c_i c_j} \, k_j, \qquad
        h_{ab} = h \text{ if } a = b \text{ else } 1 - h,

    where :math:`k_j` is the current degree of :math:`j`. :math:`h = 1/2` is plain
    Barabási-Albert (degree tail :math:`P(k) \sim k^{-3}`); larger :math:`h` makes links
    within a class more likely. With balanced classes, roughly a fraction
    :math:`h / (h + (1 - h)(C - 1))` of the edges join nodes of one class (0.75 for
    :math:`h = 0.9, C = 4`).

    Features are class means plus noise, :math:`x_i = \mu_{c_i} + \sigma \varepsilon_i` with
    :math:`\mu_c, \varepsilon_i \sim N(0, I_d)`, so labels are learnable from features alone
    when :math:`\sigma` is small and need the neighbourhood when it is large. Masks come from a
    seeded permutation (60 / 20 / 20 by default). Everything is drawn from one
    ``np.random.default_rng(seed)``; unlike PyG's ``utils.barabasi_albert_graph`` (global
    torch/numpy RNG) the same seed gives the same graph.

    Parameters
    ----------
    num_nodes : int
        :math:`N`, greater than ``m``.
    m : int
        Edges added with each new node, at least 1.
    num_features : int
        :math:`d`, at least 1.
    num_classes : int
        :math:`C`, at least 1.
    seed : int
        Seed (>= 0) of every random choice.
    homophily : float, optional
        :math:`h` in ``[0, 1)``.
    feature_noise : float, optional
        :math:`\sigma`, at least 0.
    train_fraction, val_fraction : float, optional
        Shares of the nodes for training and validation, the rest for testing.

    Returns
    -------
    Data
        ``x`` (N, d) float32, ``y`` (N,) int64, an undirected ``edge_index`` with
        :math:`2 (m (m + 1) / 2 + (N - m - 1) m)` entries, and the three masks.

    Examples
    --------
    >>> data = barabasi_albert_graph(100, 2, 8, 3, seed=0)
    >>> data.num_nodes, data.num_edges, tuple(data.x.shape)
    (100, 394, (100, 8))
    """
    if m < 1:
        raise ValueError(f"m: expected an integer >= 1, got {m!r}")
    if num_nodes <= m:
        raise ValueError(f"num_nodes: expected an integer > m = {m}, got {num_nodes!r}")
    if num_features < 1:
        raise ValueError(f"num_features: expected an integer >= 1, got {num_features!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes: expected an integer >= 1, got {num_classes!r}")
    if not 0 <= homophily < 1:
        raise ValueError(f"homophily: expected a number in [0, 1), got {homophily!r}")
    if not feature_noise >= 0:
        raise ValueError(f"feature_noise: expected a number >= 0, got {feature_noise!r}")
    _check_seed(seed)
    rng = np.random.default_rng(seed)

    labels = rng.integers(num_classes, size=num_nodes)
    degrees = np.zeros(num_nodes, dtype=np.float64)
    core = np.arange(m + 1)
    sources, targets = np.triu_indices(m + 1, k=1)
    edges = [np.stack([core[sources], core[targets]])]
    degrees[: m + 1] = m
    affinity = np.array([1.0 - homophily, homophily])
    for node in range(m + 1, num_nodes):
        same = labels[:node] == labels[node]
        weights = degrees[:node] * affinity[same.astype(np.int64)]
        if np.count_nonzero(weights) < m:  # h = 0 and too few nodes of other classes
            weights = degrees[:node].copy()
        chosen = rng.choice(node, size=m, replace=False, p=weights / weights.sum())
        edges.append(np.stack([np.full(m, node), chosen]))
        degrees[chosen] += 1
        degrees[node] = m
    pairs = torch.from_numpy(np.concatenate(edges, axis=1).astype(np.int64))
    edge_index = torch.cat([pairs, pairs.flip(0)], dim=1)
    order = torch.argsort(edge_index[0] * num_nodes + edge_index[1])
    edge_index = edge_index[:, order]

    means = rng.standard_normal((num_classes, num_features))
    x = means[labels] + feature_noise * rng.standard_normal((num_nodes, num_features))
    train_mask, val_mask, test_mask = _split_masks(num_nodes, train_fraction, val_fraction, rng)
    return Data(
        x=torch.from_numpy(x.astype(np.float32)),
        y=torch.from_numpy(labels.astype(np.int64)),
        edge_index=edge_index,
        train_mask=train_mask,
        val_mask=val_mask,
        test_mask=test_mask,
    )
