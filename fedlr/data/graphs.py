r"""Graphs with no download, and their split into federated client subgraphs.

Loaders return a :class:`torch_geometric.data.Data` with ``x`` (float32 node features), ``y``
(int64 classes), an undirected ``edge_index`` without self-loops (every edge stored in both
directions, as PyG does) and boolean ``train_mask``, ``val_mask`` and ``test_mask``:

- :func:`load_cora`: Cora (Sen et al. 2008; Planetoid split of Yang et al. 2016), read by PyG's
  ``Planetoid`` from raw files copied from a local directory (nothing is downloaded);
- :func:`load_karate`: Zachary's karate club, shipped inside PyG, with a seeded split;
- :func:`barabasi_albert_graph`: a heavy-tailed, homophilous synthetic graph (preferential
  attachment with class homophily, Karimi et al. 2018).

:func:`split_graph` deals the nodes out to clients (Louvain communities or a random balanced
assignment) and gives each client its induced subgraph; edges between clients are dropped, as in
federated subgraph learning (FedSage+, Zhang et al. 2021). Each client keeps both its *local*
degrees (in its subgraph) and the *global* degrees of its nodes (in the whole graph).
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import warnings

import numpy as np
import torch

with warnings.catch_warnings():  # PyG 2.8 calls torch.jit.script at import; torch 2.13 warns
    warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", DeprecationWarning)
    from torch_geometric.data import Data
    from torch_geometric.utils import degree, is_undirected

from fedlr.data.noise import gaussian_feature_noise

PLANETOID_ENV = "FEDLR_PLANETOID_DIR"
"""Environment variable naming the directory of raw Planetoid files (see :func:`load_cora`)."""

DEFAULT_PLANETOID_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "planetoid"
"""``../shared/data/planetoid`` next to the repository, where this project keeps raw Cora files."""

CORA_RAW_FILES = tuple(
    f"ind.cora.{name}" for name in ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
)
"""The eight files ``Planetoid(root, "Cora")`` checks under ``root/Cora/raw`` before downloading."""

SPLIT_METHODS = ("louvain", "random")


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


@dataclass(frozen=True)
class ClientGraph:
    """One client's induced subgraph.

    Attributes
    ----------
    data : Data
        The subgraph, nodes relabelled ``0..n_k-1``, with every node attribute of the whole
        graph (``x``, ``y``, masks) restricted to its nodes.
    global_ids : torch.Tensor
        Shape ``(n_k,)``, sorted int64: local node ``i`` is node ``global_ids[i]`` of the graph.
    local_degree : torch.Tensor
        Shape ``(n_k,)``, int64: degree in the client's subgraph.
    global_degree : torch.Tensor
        Shape ``(n_k,)``, int64: degree in the whole graph, at least ``local_degree``.
    dropped_edges : int
        Undirected edges with one end here and the other at another client,
        ``int((global_degree - local_degree).sum())``.
    """

    data: Data
    global_ids: torch.Tensor
    local_degree: torch.Tensor
    global_degree: torch.Tensor
    dropped_edges: int

    @property
    def num_nodes(self) -> int:
        """Number of nodes of this client."""
        return int(self.global_ids.numel())


@dataclass(frozen=True)
class GraphFederation:
    """A graph dealt out to clients.

    Attributes
    ----------
    clients : list of ClientGraph
        One per client, in client order; together they hold every node exactly once.
    assignment : torch.Tensor
        Shape ``(num_nodes,)``, int64: the client of every node.
    dropped_edges : int
        Undirected edges between clients, each counted once; half the sum of the clients'
        ``dropped_edges`` (an edge is dropped at both its ends).
    num_nodes : int
        Nodes of the whole graph.
    method : str
        ``"louvain"`` or ``"random"``.
    """

    clients: list[ClientGraph]
    assignment: torch.Tensor
    dropped_edges: int
    num_nodes: int
    method: str


def _louvain_groups(edge_index: torch.Tensor, num_nodes: int, seed: int) -> list[list[int]]:
    import networkx as nx

    graph = nx.Graph()
    graph.add_nodes_from(range(num_nodes))
    graph.add_edges_from(edge_index.t().tolist())
    communities = nx.community.louvain_communities(graph, seed=seed)
    return [sorted(community) for community in communities]


def _pack(groups: list[list[int]], num_clients: int) -> list[list[int]]:
    groups = sorted(groups, key=lambda group: (-len(group), group[0]))
    while len(groups) < num_clients:  # too few communities: halve the largest
        largest = groups.pop(0)
        half = len(largest) // 2
        groups = sorted(
            [*groups, largest[:half], largest[half:]], key=lambda group: (-len(group), group[0])
        )
    clients: list[list[int]] = [[] for _ in range(num_clients)]
    for group in groups:
        smallest = min(range(num_clients), key=lambda k: (len(clients[k]), k))
        clients[smallest].extend(group)
    return clients


def split_graph(data: Data, num_clients: int, method: str, seed: int) -> GraphFederation:
    r"""Deal the nodes of a graph out to clients; each client keeps its induced subgraph.

    - ``"louvain"``: communities from networkx's ``louvain_communities(seed=seed)`` (Blondel
      et al. 2008, "Fast unfolding of communities in large networks"), packed greedily into
      clients of balanced sizes: largest community first (ties: lowest node id), each into the
      client with the fewest nodes so far (ties: lowest client). If there are fewer communities
      than clients, the largest is halved (by node id) until there are enough. This is the
      split of FedSage+ (Zhang et al. 2021, "Subgraph Federated Learning with Missing Neighbor
      Generation").
    - ``"random"``: a seeded permutation of the nodes cut into ``num_clients`` contiguous blocks
      (``np.array_split``), i.e. a uniformly random assignment with sizes differing by at most
      one.

    Every node goes to exactly one client, and every client gets at least one node. Client
    :math:`k` with node set :math:`V_k` gets the induced subgraph :math:`G[V_k]`
    (``Data.subgraph``, which calls ``utils.subgraph(..., relabel_nodes=True)``); an edge
    :math:`\{u, v\}` with :math:`u \in V_k, v \notin V_k` is dropped. Counts are of undirected
    edges: with :math:`d_i` the global and :math:`d_i^{(k)}` the local degree (``utils.degree``
    of ``edge_index[0]``), client :math:`k` drops :math:`\sum_{i \in V_k} (d_i - d_i^{(k)})`
    edges, and the federation drops half the sum of those.

    Parameters
    ----------
    data : Data
        A graph whose ``edge_index`` is undirected (both directions stored); self-loops, if
        any, are kept (they never cross clients).
    num_clients : int
        Number of clients, in ``[1, data.num_nodes]``.
    method : str
        ``"louvain"`` or ``"random"``.
    seed : int
        Seed (>= 0) of Louvain or of the permutation; the same seed gives the same split.

    Returns
    -------
    GraphFederation

    Raises
    ------
    ValueError
        An argument is out of range or the graph is directed; the message names it.

    Examples
    --------
    Two triangles joined by the edge 2-3:

    >>> edges = [(0, 1), (1, 2), (0, 2), (2, 3), (3, 4), (4, 5), (3, 5)]
    >>> edge_index = torch.tensor(edges + [(v, u) for u, v in edges]).t()
    >>> federation = split_graph(Data(edge_index=edge_index, num_nodes=6), 2, "louvain", seed=0)
    >>> [client.global_ids.tolist() for client in federation.clients], federation.dropped_edges
    ([[0, 1, 2], [3, 4, 5]], 1)
    >>> federation.clients[0].local_degree.tolist(), federation.clients[0].global_degree.tolist()
    ([2, 2, 2], [2, 2, 3])
    """
    num_nodes = data.num_nodes
    if num_nodes is None or num_nodes < 1:
        raise ValueError(f"data: expected a graph with at least one node, got {num_nodes!r}")
    if method not in SPLIT_METHODS:
        raise ValueError(f"method: expected one of {', '.join(SPLIT_METHODS)}, got {method!r}")
    if isinstance(num_clients, bool) or not 1 <= num_clients <= num_nodes:
        raise ValueError(
            f"num_clients: expected an integer in [1, {num_nodes}] (the number of nodes), "
            f"got {num_clients!r}"
        )
    _check_seed(seed)
    edge_index = data.edge_index
    if edge_index is None:
        raise ValueError("data: expected an edge_index")
    if not is_undirected(edge_index, num_nodes=num_nodes):
        raise ValueError("data: expected an undirected edge_index (every edge in both directions)")

    if method == "louvain":
        groups = _pack(_louvain_groups(edge_index, num_nodes, int(seed)), num_clients)
    else:
        order = np.random.default_rng(seed).permutation(num_nodes)
        groups = [block.tolist() for block in np.array_split(order, num_clients)]

    assignment = torch.empty(num_nodes, dtype=torch.long)
    for client, group in enumerate(groups):
        assignment[torch.tensor(group, dtype=torch.long)] = client
    global_degree = degree(edge_index[0], num_nodes, dtype=torch.long)
    clients = []
    for client in range(num_clients):
        global_ids = (assignment == client).nonzero().view(-1)
        subgraph = data.subgraph(global_ids)
        local = degree(subgraph.edge_index[0], global_ids.numel(), dtype=torch.long)
        client_global = global_degree[global_ids]
        clients.append(
            ClientGraph(
                data=subgraph,
                global_ids=global_ids,
                local_degree=local,
                global_degree=client_global,
                dropped_edges=int((client_global - local).sum()),
            )
        )
    crossing = int((assignment[edge_index[0]] != assignment[edge_index[1]]).sum())
    return GraphFederation(
        clients=clients,
        assignment=assignment,
        dropped_edges=crossing // 2,
        num_nodes=num_nodes,
        method=method,
    )


# -- a run's graph federation (from a resolved config) -------------------------------------------

BA_FEATURES = 8
"""Node-feature width of the run config's ``ba`` graph."""

BA_CLASSES = 4
"""Classes of the run config's ``ba`` graph."""

_TAG_GRAPH_LABELS = 5  # stream tag of the label split (fedlr.data.federated uses 1..4)


@dataclass(frozen=True, eq=False)
class GraphClientData:
    """One client of a graph run: its subgraph, role and the truth about its noise.

    Attributes
    ----------
    partition_id, role, noise_rate, flip_fraction, feature_sigma
        As in :class:`fedlr.data.federated.ClientData`.
    data : Data
        The client's induced subgraph: ``x`` (with feature noise, if any), ``y`` (train nodes'
        labels possibly noisy, test nodes' always clean), ``edge_index``, ``train_mask``,
        ``test_mask``, and ``n_id``, the global ids of its nodes (the rows of the federation's
        node-embedding table, see :meth:`fedlr.tasks.graph.GNN.node_inputs`).
    y_clean : torch.Tensor
        Labels before noise.
    local_degree, global_degree : torch.Tensor
        Degree of each node in the client's subgraph and in the whole graph.
    dropped_edges : int
        Edges to other clients' nodes, dropped.
    """

    partition_id: int
    role: str
    noise_rate: float
    flip_fraction: float
    feature_sigma: float
    data: Data
    y_clean: torch.Tensor
    local_degree: torch.Tensor
    global_degree: torch.Tensor
    dropped_edges: int

    @property
    def num_train(self) -> int:
        """Labelled nodes this client trains on."""
        return int(self.data.train_mask.sum())

    @property
    def num_test(self) -> int:
        """Nodes this client is scored on."""
        return int(self.data.test_mask.sum())


@dataclass(frozen=True, eq=False)
class GraphRun:
    """Every client of a graph run, ordered by partition id, and the shape of the task."""

    clients: list[GraphClientData]
    num_classes: int
    num_features: int
    num_nodes: int
    dropped_edges: int
    method: str


def default_data_dir() -> Path:
    """``$XDG_CACHE_HOME/fedlr`` (``~/.cache/fedlr``): where ``data-dir = ""`` caches datasets."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fedlr"


def load_graph(cfg: Any) -> Data:
    """The whole graph of a run config's ``dataset`` (``cora``, ``karate`` or ``ba``).

    Cora is read by :func:`load_cora` under ``data-dir/planetoid``; a file lock keeps processes
    that start together (simulated clients, SuperNodes of one machine) from writing PyG's
    processed cache at the same time. ``normalize-features`` applies PyG's
    ``NormalizeFeatures`` (shift to >= 0, rows sum to 1).
    """
    from filelock import FileLock

    dataset = cfg["dataset"]
    seed = int(cfg["seed"])
    if dataset == "cora":
        root = Path(cfg["data-dir"] or default_data_dir()) / "planetoid"
        root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(root / ".cora.lock")):
            data = load_cora(root)
    elif dataset == "karate":
        data = load_karate(seed)
    elif dataset == "ba":
        data = barabasi_albert_graph(
            int(cfg["ba-nodes"]), int(cfg["ba-m"]), BA_FEATURES, BA_CLASSES, seed
        )
    else:
        raise ValueError(f"dataset: expected cora, karate or ba, got {dataset!r}")
    if cfg["normalize-features"]:
        from torch_geometric.transforms import NormalizeFeatures

        data = NormalizeFeatures()(data)
    return data


def label_masks(data: Data, cfg: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and test masks of the whole graph for a run config's ``graph-labels``.

    ``random``: a seeded permutation of all nodes; the first ``ceil(test-fraction * N)`` are
    test nodes, the rest train (validation is not used). ``public``: the dataset's own
    ``train_mask`` and ``test_mask`` (Cora: Planetoid's 140 and 1000 nodes).
    """
    num_nodes = int(data.num_nodes)
    if cfg["graph-labels"] == "public":
        return data.train_mask.clone(), data.test_mask.clone()
    rng = np.random.default_rng([int(cfg["seed"]), _TAG_GRAPH_LABELS])
    order = torch.from_numpy(rng.permutation(num_nodes))
    wanted = math.ceil(round(float(cfg["test-fraction"]) * num_nodes, 9))  # 0.07 * 100 is 7.0..01
    num_test = min(max(wanted, 1), num_nodes - 1)
    test = torch.zeros(num_nodes, dtype=torch.bool)
    test[order[:num_test]] = True
    return ~test, test


def build_graph_run(cfg: Any) -> GraphRun:
    """Deal a run config's graph out to ``num-clients`` clients, with roles and noise.

    The graph (:func:`load_graph`) gets its label masks (:func:`label_masks`), is split by
    :func:`split_graph` (``graph-split``, seeded by ``seed``), and each client gets the role of
    its partition id (:func:`fedlr.data.federated.client_roles`): label noise (``label-noise``
    at the client's rate) on its *train* nodes' labels only, Gaussian feature noise on all its
    nodes' features for the last ``feature-noise-clients``. Draws use the same seeded streams
    as tabular data, so the same config gives the same clients.

    Raises
    ------
    ValueError
        A client would have no train or no test node (too many clients for the graph); the
        message names the partition and what to change.
    """
    from fedlr.data import federated as fed

    data = load_graph(cfg)
    data.train_mask, data.test_mask = label_masks(data, cfg)
    num_classes = int(data.y.max()) + 1
    num_clients = int(cfg["num-clients"])
    if num_clients > int(data.num_nodes):
        raise ValueError(
            f"num-clients: expected at most {data.num_nodes} (the nodes of {cfg['dataset']}), "
            f"got {num_clients}"
        )
    split = split_graph(data, num_clients, str(cfg["graph-split"]), int(cfg["seed"]))
    seed = int(cfg["seed"])
    clients = []
    for pid, (part, (role, rate, sigma)) in enumerate(
        zip(split.clients, fed.client_roles(cfg), strict=True)
    ):
        sub = part.data
        train, test = sub.train_mask, sub.test_mask
        if not bool(train.any()) or not bool(test.any()):
            raise ValueError(
                f"num-clients: partition {pid} of {cfg['dataset']} ({part.num_nodes} nodes) has "
                f"{int(train.sum())} train and {int(test.sum())} test nodes; expected at least "
                "one of each: use fewer clients"
                + (", or graph-labels=random" if cfg["graph-labels"] == "public" else "")
            )
        y_clean = sub.y.clone()
        y = y_clean.clone()
        noisy, flip_fraction = fed.client_label_noise(
            cfg, pid, rate, y_clean[train].numpy(), num_classes
        )
        y[train] = torch.from_numpy(noisy)
        x = sub.x
        if sigma > 0 and x is not None:
            rng = np.random.default_rng([seed, pid, fed.TAG_FEATURE_NOISE])
            x = torch.from_numpy(gaussian_feature_noise(x.numpy(), sigma, rng)).to(x.dtype)
        client_graph = Data(
            x=x,
            y=y,
            edge_index=sub.edge_index,
            train_mask=train,
            test_mask=test,
            n_id=part.global_ids,
            num_nodes=part.num_nodes,
        )
        clients.append(
            GraphClientData(
                partition_id=pid,
                role=role,
                noise_rate=rate,
                flip_fraction=flip_fraction,
                feature_sigma=sigma,
                data=client_graph,
                y_clean=y_clean,
                local_degree=part.local_degree,
                global_degree=part.global_degree,
                dropped_edges=part.dropped_edges,
            )
        )
    return GraphRun(
        clients=clients,
        num_classes=num_classes,
        num_features=int(data.num_features),
        num_nodes=int(data.num_nodes),
        dropped_edges=split.dropped_edges,
        method=split.method,
    )
