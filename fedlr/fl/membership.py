"""Which nodes hold which partitions: fedlr's query round, restarts, and library use.

:class:`Membership` is the part of :class:`fedlr.fl.client_rates.PerClientRates` that keeps
``clients`` (node id -> :class:`~fedlr.fl.nodes.ClientInfo`) and ``by_partition`` current: a
restarted SuperNode takes its partition back (:meth:`adopt_restarted_nodes`); used as a library,
every new node is a client and its example count is what it reports (:meth:`learn_nodes`,
:meth:`learn_examples`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from flwr.serverapp import Grid

from fedlr.fl import checks
from fedlr.fl.aggregation import cap_message
from fedlr.fl.nodes import ClientInfo, query_nodes
from fedlr.fl.roundlog import RoundLog

log = logging.getLogger("fedlr")


class Membership:
    """Mixin: the strategy's clients, by node id and by partition id."""

    cfg: dict[str, Any]
    clients: dict[int, ClientInfo]
    by_partition: dict[int, ClientInfo]
    batch: dict[int, int]
    example_cap: int
    strangers: set[int]
    waiting: dict[int, ClientInfo]

    def learn_nodes(self, connected: Iterable[int]) -> list[int]:
        """Library use: take every connected node not seen before as a client; return their ids.

        Its id is its key in every log (``partition_id`` = node id); its example count is learnt
        from its first train reply; its rate is uniform until it sends a valid estimate.
        """
        new = sorted(set(connected) - set(self.clients))
        for node_id in new:
            info = ClientInfo(node_id, node_id, num_examples=0, noise_true=None, role=None)
            self.clients[node_id] = self.by_partition[node_id] = info
            self.batch[node_id] = int(self.cfg["batch-size"])
        if new:
            log.info("fedlr: %d new node(s): %s", len(new), ", ".join(map(str, new)))
        return new

    def learn_examples(self, log_: RoundLog, reported: Mapping[int, int]) -> None:
        """Library use: each client's example count is what its latest reply says, bounded.

        The bound is ``max-examples`` or 10x the median over all clients' counts
        (:func:`fedlr.fl.checks.example_cap`), so one client's claim cannot outweigh the rest.
        """
        for pid, count in reported.items():
            moved = replace(self.by_partition[pid], num_examples=count)
            self.by_partition[pid] = self.clients[moved.node_id] = moved
        counts = [c.num_examples for c in self.by_partition.values() if c.num_examples > 0]
        self.example_cap = checks.example_cap(counts, int(self.cfg["max-examples"]))
        over = {pid: n for pid, n in reported.items() if n > self.example_cap}
        for pid, count in over.items():
            used = self.example_cap
            log_.capped.append(
                {"partition_id": pid, "what": "num-examples", "reported": count, "used": used}
            )
        if over:
            log.warning(cap_message(over, self.example_cap))

    def adopt_restarted_nodes(self, grid: Grid, connected: Iterable[int]) -> list[int]:
        """Map partitions to the new node ids of restarted nodes; return the partitions moved.

        A SuperNode with authentication keeps its node id across restarts (the id belongs to
        its key); one without gets a new id. Connected nodes we do not know are asked, once, who
        they are (one that fails or does not answer is not asked again). One holding a partition
        of this run (same partition id and example count) takes that partition's place as soon
        as the partition's old node is gone (the SuperLink lists a dead node for up to two missed
        heartbeats); any other is left alone.
        """
        connected = set(connected)
        unknown = sorted(connected - set(self.clients) - self.strangers - set(self.waiting))
        if unknown:
            answers, _failed = query_nodes(
                grid, unknown, self.cfg, float(self.cfg["round-timeout"])
            )
            # A node that fails or does not answer is not asked again in this strategy.
            self.strangers.update(set(unknown) - {info.node_id for info in answers})
            for info in answers:
                old = self.by_partition.get(info.partition_id)
                if old is None or old.num_examples != info.num_examples:
                    self.strangers.add(info.node_id)
                    log.warning(
                        "fedlr: node %d (partition %d) holds no partition of this run; ignored",
                        info.node_id,
                        info.partition_id,
                    )
                else:
                    self.waiting[info.node_id] = info
        moved = []
        for node_id, info in sorted(self.waiting.items()):
            old = self.by_partition[info.partition_id]
            if node_id not in connected or old.node_id in connected:
                continue  # gone again, or its partition's node is still there
            del self.waiting[node_id]
            moved_to = replace(old, node_id=node_id)
            del self.clients[old.node_id]
            self.clients[node_id] = moved_to
            self.by_partition[info.partition_id] = moved_to
            moved.append(info.partition_id)
            log.info("fedlr: partition %d is back as node %d", info.partition_id, node_id)
        return moved
