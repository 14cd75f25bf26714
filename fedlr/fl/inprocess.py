"""fedlr's real ServerApp and ClientApp in one process, without a simulation engine.

:class:`InProcessGrid` is a Flower ``Grid`` whose ``send_and_receive`` calls fedlr's ClientApp
directly, node by node. :func:`run_in_process` runs a whole resolved config on it: the same
strategies, messages, checks and results as ``fedlr simulate``, minus Ray, so a sweep over many
seeds (``benchmarks/robustness.py``) runs in seconds per run. Tests use it to drive a deployment
without processes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, cast

from flwr.app import Error, Message, RecordDict
from flwr.serverapp import Grid

from fedlr.fl import keys

SUPERLINK_NODE_ID = 1  # flwr.common.constant.SUPERLINK_NODE_ID


class Killed(Exception):
    """Stands for the run being killed (the process dies at this point)."""


class InProcessGrid:
    """A Grid that runs fedlr's real ClientApp in this process, no engine.

    Node ``base + 7 * pid`` holds partition ``pid``. Replies come back in reverse order, as a
    real grid may deliver them.

    ``kill_at=n`` raises :class:`Killed` in the n-th ``send_and_receive`` call (1-based), after
    the clients have trained but before the server sees their replies.
    """

    def __init__(
        self,
        num_nodes: int,
        *,
        base: int = 2000,
        kill_at: int | None = None,
        node_configs: dict[int, dict] | None = None,
    ) -> None:
        self.partitions = {base + 7 * pid: pid for pid in range(num_nodes)}
        self.num_nodes = num_nodes
        self.kill_at = kill_at
        self.calls = 0
        # per partition id: extra node_config (e.g. data-path); a ClientApp that raises then
        # replies with an error, as Flower's runtime does
        self.node_configs = node_configs or {}

    def get_node_ids(self) -> list[int]:
        """Every node, always connected."""
        return list(self.partitions)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None):
        """Run the ClientApp on each message; return the replies in reverse order."""
        from flwr.app import Context

        from fedlr.fl import client_app

        self.calls += 1
        replies = []
        for msg in messages:
            node_id = msg.metadata.dst_node_id
            pid = self.partitions[node_id]
            context = Context(
                run_id=1,
                node_id=node_id,
                node_config={
                    keys.NODE_PARTITION_ID: pid,
                    keys.NODE_NUM_PARTITIONS: self.num_nodes,
                    **self.node_configs.get(pid, {}),
                },
                state=RecordDict(),
                run_config={},
            )
            if pid not in self.node_configs:
                replies.append(client_app.app(msg, context))
                continue
            try:
                replies.append(client_app.app(msg, context))
            except Exception as error:  # noqa: BLE001  (what Flower's runtime sends back)
                replies.append(Message(Error(code=0, reason=repr(error)), reply_to=msg))
        if self.calls == self.kill_at:
            raise Killed(f"killed in call {self.calls}")
        return replies[::-1]


def run_in_process(cfg: Mapping[str, Any], run_dir: Path) -> Path:
    """Run ``cfg`` (every strategy) on an :class:`InProcessGrid`; return the run directory."""
    from flwr.supercore.task_identity import TaskIdentity

    from fedlr.fl.server_app import run_federation

    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    # Flower's runtime sets the process's identity before app code builds a Message
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID
    try:
        # duck-typed: run_federation calls only get_node_ids and send_and_receive
        grid = cast(Grid, InProcessGrid(int(cfg["num-clients"])))
        return run_federation(grid, cfg, Path(run_dir))
    finally:
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved
