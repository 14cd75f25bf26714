r"""A graph dealt out to federated clients: each keeps its induced subgraph.

:func:`split_graph` deals the nodes out to clients (Louvain communities or a random balanced
assignment) and gives each client its induced subgraph; edges between clients are dropped, as in
federated subgraph learning (FedSage+, Zhang et al. 2021). Each client keeps both its *local*
degrees (in its subgraph) and the *global* degrees of its nodes (in the whole graph).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

with warnings.catch_warnings():  # PyG 2.8 calls torch.jit.script at import; torch 2.13 warns
    warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", DeprecationWarning)
    from torch_geometric.data import Data
    from torch_geometric.utils import degree, is_undirected

from fedlr.data.graph_loaders import _check_seed

SPLIT_METHODS = ("louvain", "random")


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
