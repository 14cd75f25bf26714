"""The ServerApp: query the clients once, then run every configured strategy side by side.

All strategies run in one ServerApp on the same nodes, partitions, initial weights and seeds; only
the strategy differs. ``flwr run .`` uses the module-level :data:`app` (config from the run
config); ``fedlr simulate`` builds its own with :func:`make_server_app`.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedlr import config as fedlr_config
from fedlr.fl import keys
from fedlr.fl.recorder import RoundCallback, RunRecorder, new_run_dir
from fedlr.fl.strategy import ClientInfo, build_strategy
from fedlr.tasks import tabular

log = logging.getLogger("fedlr")


def query_clients(grid: Grid, cfg: Mapping[str, Any], timeout: float = 300.0) -> list[ClientInfo]:
    """Wait for ``num-clients`` nodes, ask each for its partition id, size and role."""
    expected = cfg["num-clients"]
    deadline = time.monotonic() + timeout
    while len(node_ids := list(grid.get_node_ids())) < expected:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"only {len(node_ids)} of num-clients={expected} nodes connected "
                f"after {timeout:.0f} s"
            )
        time.sleep(0.5)
    content = RecordDict({keys.CONFIG: ConfigRecord(dict(cfg))})
    messages = [Message(content, dst_node_id=n, message_type=MessageType.QUERY) for n in node_ids]
    clients = []
    for reply in grid.send_and_receive(messages, timeout=timeout):
        if reply.has_error():
            raise RuntimeError(
                f"node {reply.metadata.src_node_id} failed the query round: {reply.error.reason}"
            )
        metrics = reply.content.metric_records[keys.METRICS]
        info = reply.content.config_records["info"]
        clients.append(
            ClientInfo(
                node_id=reply.metadata.src_node_id,
                partition_id=int(cast(int, metrics[keys.PARTITION_ID])),
                num_examples=int(cast(int, metrics[keys.NUM_EXAMPLES])),
                noise_true=float(cast(float, metrics["noise-true"])),
                role=str(info["role"]),
            )
        )
    empty = [c.partition_id for c in clients if c.num_examples <= 0]
    if empty:
        raise RuntimeError(f"partitions {empty} report no training examples (num-examples <= 0)")
    pids = sorted(c.partition_id for c in clients)
    if pids != list(range(expected)):
        raise RuntimeError(
            f"partition ids {pids} do not cover 0..{expected - 1}: start one "
            f"SuperNode per partition (num-supernodes = num-clients = {expected})"
        )
    return clients


def run_federation(
    grid: Grid, cfg: Mapping[str, Any], run_dir: Path, on_round: RoundCallback | None = None
) -> Path:
    """Run every strategy of ``cfg`` on ``grid``; write the run directory; return its path."""
    from fedlr.report import render_report

    # Built first: the data split and model take ~1 s, while the simulated nodes are still starting.
    initial = ArrayRecord(tabular.build_model(cfg).state_dict())
    clients = query_clients(grid, cfg)
    recorder = RunRecorder(run_dir, cfg, clients, on_round=on_round)
    # Flower's aggregation calls gc.collect() per reply (ArrayRecord.to_numpy_ndarrays with
    # keep_input=False); with torch and Ray loaded that costs ~0.16 s a call. Objects alive now
    # (modules, the engine) live for the whole run: freeze them out of the collector's scans.
    gc.collect()
    gc.freeze()
    try:
        for name in fedlr_config.split_list(cfg["strategies"]):
            strategy = build_strategy(name, cfg, clients)
            recorder.start_strategy(name)

            def after_round(server_round: int, _arrays: ArrayRecord, name=name, strategy=strategy):
                if server_round > 0:
                    recorder.round_done(name, strategy, server_round)
                return None

            strategy.start(
                grid,
                initial,
                num_rounds=cfg["num-server-rounds"],
                timeout=cfg["round-timeout"],
                train_config=ConfigRecord(dict(cfg)),
                evaluate_config=ConfigRecord(dict(cfg)),
                evaluate_fn=after_round,
            )
            recorder.strategy_done(name, strategy)
    finally:
        recorder.close()
        try:  # also after a failure: report what was computed
            render_report(run_dir)
        except Exception as error:  # noqa: BLE001  (never mask the run's own error)
            log.warning("fedlr: no report for %s: %s", run_dir, error)
    return run_dir


def make_server_app(
    cfg: Mapping[str, Any],
    run_dir: Path,
    on_round: RoundCallback | None = None,
    failures: list[BaseException] | None = None,
) -> ServerApp:
    """A ServerApp bound to a resolved config (for ``fedlr simulate``).

    The simulation engine runs the ServerApp in its own thread; an exception raised there is
    appended to ``failures`` (when given) so the caller can report it.
    """
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            run_federation(grid, cfg, run_dir, on_round)
        except BaseException as error:
            if failures is None:
                raise
            failures.append(error)

    return server_app


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point for ``flwr run .``: the run config is ``[tool.flwr.app.config]`` + overrides."""
    cfg = fedlr_config.from_run_config(context.run_config)
    run_dir = new_run_dir(cfg["out-dir"], cfg["name"])
    log.warning("fedlr: writing %s", run_dir.resolve())
    run_federation(grid, cfg, run_dir)
