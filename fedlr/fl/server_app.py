"""The ServerApp: query the clients once, then run every configured strategy side by side.

All strategies run in one ServerApp on the same nodes, partitions, initial weights and seeds; only
the strategy differs. ``flwr run .`` uses the module-level :data:`app` (config from the run
config); ``fedlr simulate`` builds its own with :func:`make_server_app`.

A checkpoint (:mod:`fedlr.fl.checkpoint`) is saved every ``checkpoint-every`` rounds and when a
strategy ends; ``run_federation(..., resume=True)`` continues a killed run from it.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedlr import config as fedlr_config
from fedlr.config import is_files
from fedlr.data import files
from fedlr.fl import checkpoint as ckpt
from fedlr.fl import keys
from fedlr.fl.recorder import RoundCallback, RunRecorder, new_run_dir, write_config
from fedlr.fl.strategy import ClientInfo, PerClientRates, build_strategy, query_nodes
from fedlr.tasks import load_task
from fedlr.tasks.base import ClientContext

log = logging.getLogger("fedlr")


def wait_for_nodes(grid: Grid, cfg: Mapping[str, Any], timeout: float = 300.0) -> list[int]:
    """The node ids of the grid once ``num-clients`` nodes are connected."""
    expected = cfg["num-clients"]
    deadline = time.monotonic() + timeout
    while len(node_ids := list(grid.get_node_ids())) < expected:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"only {len(node_ids)} of num-clients={expected} nodes connected "
                f"after {timeout:.0f} s"
            )
        time.sleep(0.5)
    return node_ids


def agree_on_sites(
    grid: Grid, node_ids: list[int], cfg: Mapping[str, Any], timeout: float = 300.0
) -> tuple[dict[str, Any], dict[int, int], list[dict[str, Any]]]:
    """Users' files: ask every node for its site's statistics; return the config to send on.

    Returns the config (``cfg`` plus the sites' agreement, :data:`keys.SITE_AGREEMENT`, from
    :func:`fedlr.data.files.agree_from_replies`, which every later message carries), the
    partition id of each node kept, by node id, and the errors. A node whose file is bad (its
    ClientApp raised), whose reply is malformed, whose partition id is out of range or taken, or
    whose statistics are not valid is left out of the run and reported in the errors,
    ``{"node_id", "partition_id", "reason"}`` each (sorted by node id); the run goes on with the
    others.

    Raises
    ------
    RuntimeError
        Fewer than 2 sites answered with usable statistics.
    """
    content = RecordDict({keys.CONFIG: ConfigRecord(dict(cfg))})
    messages = [Message(content, dst_node_id=n, message_type=MessageType.QUERY) for n in node_ids]
    shared: dict[int, str] = {}
    node_of: dict[int, int] = {}
    errors: list[dict[str, Any]] = []
    for reply in grid.send_and_receive(messages, timeout=timeout):
        node_id = reply.metadata.src_node_id
        if reply.has_error():
            reason = str(reply.error.reason)[:500]
            errors.append({"node_id": node_id, "partition_id": None, "reason": reason})
            continue
        try:
            pid = _partition(reply.content.metric_records[keys.METRICS][keys.PARTITION_ID], cfg)
            text = str(reply.content.config_records[keys.SITE][keys.SITE_STATISTICS])
        except (KeyError, TypeError, ValueError, OverflowError) as error:
            reason = f"malformed query reply ({type(error).__name__}: {str(error)[:200]})"
            errors.append({"node_id": node_id, "partition_id": None, "reason": reason})
            continue
        if pid in shared:
            errors.append({"node_id": node_id, "partition_id": pid, "reason": "repeated partition"})
            continue
        shared[pid], node_of[pid] = text, node_id
    answered = set(node_of.values())
    for node_id in sorted(set(node_ids) - answered - {e["node_id"] for e in errors}):
        errors.append({"node_id": node_id, "partition_id": None, "reason": "no reply"})
    try:
        agreement, left_out = files.agree_from_replies(shared)
    except ValueError as error:
        raise RuntimeError(f"{error}; errors: {errors}") from None
    errors += [
        {"node_id": node_of[pid], "partition_id": pid, "reason": reason}
        for pid, reason in left_out.items()
    ]
    errors.sort(key=lambda e: e["node_id"])
    for entry in errors:
        log.warning(
            "fedlr: node %s (partition %s) left out of the run: %s",
            entry["node_id"],
            entry["partition_id"],
            entry["reason"],
        )
    kept = {node_of[pid]: pid for pid in shared if pid not in left_out}
    return {**cfg, keys.SITE_AGREEMENT: agreement}, kept, errors


def _partition(value: Any, cfg: Mapping[str, Any]) -> int:
    """A reported partition id, checked: a whole number in ``0..num-clients - 1``."""
    number = float(value)  # TypeError for lists, ValueError for text
    if not number.is_integer() or not 0 <= number < int(cfg["num-clients"]):
        raise ValueError(f"partition-id {value!r} is not in 0..{int(cfg['num-clients']) - 1}")
    return int(number)


def query_sites(
    grid: Grid, kept: Mapping[int, int], cfg: Mapping[str, Any], errors: list[dict[str, Any]]
) -> list[ClientInfo]:
    """Users' files: the usual query of the nodes :func:`agree_on_sites` kept, checked again.

    A node that now answers with another partition id than it sent its statistics under, with
    no training examples, or not at all, joins ``errors`` and is left out.

    Raises
    ------
    RuntimeError
        Fewer than 2 nodes are left.
    """
    answers, failed = query_nodes(grid, list(kept), cfg, float(cfg["round-timeout"]))
    clients = []
    for info in answers:
        claimed = kept.get(info.node_id)
        if claimed != info.partition_id:
            reason = f"answered as partition {info.partition_id}, after statistics as {claimed}"
        elif info.num_examples <= 0:
            reason = f"reports {info.num_examples} training examples"
        else:
            clients.append(info)
            continue
        errors.append({"node_id": info.node_id, "partition_id": claimed, "reason": reason})
    for node_id, reason in failed:
        errors.append({"node_id": node_id, "partition_id": kept.get(node_id), "reason": reason})
    answered = {c.node_id for c in answers} | {n for n, _ in failed}
    for node_id in sorted(set(kept) - answered):
        errors.append({"node_id": node_id, "partition_id": kept[node_id], "reason": "no reply"})
    errors.sort(key=lambda e: e["node_id"])
    if len(clients) < 2:
        raise RuntimeError(f"{len(clients)} site(s) left after the query round; errors: {errors}")
    return sorted(clients, key=lambda c: c.partition_id)


def query_clients(grid: Grid, cfg: Mapping[str, Any], timeout: float = 300.0) -> list[ClientInfo]:
    """Wait for ``num-clients`` nodes, ask each for its partition id, size and role."""
    expected = cfg["num-clients"]
    node_ids = wait_for_nodes(grid, cfg, timeout)
    clients, failed = query_nodes(grid, node_ids, cfg, timeout)
    pids = sorted(c.partition_id for c in clients)
    if failed and pids != list(range(expected)):
        # Failures are fine while the others cover every partition (a dead node not yet dropped
        # by the SuperLink, next to its restarted successor); otherwise they are the reason.
        node_id, reason = failed[0]
        raise RuntimeError(f"node {node_id} failed the query round: {reason}")
    empty = [c.partition_id for c in clients if c.num_examples <= 0]
    if empty:
        raise RuntimeError(f"partitions {empty} report no training examples (num-examples <= 0)")
    if pids != list(range(expected)):
        raise RuntimeError(
            f"partition ids {pids} do not cover 0..{expected - 1}: start one "
            f"SuperNode per partition (num-supernodes = num-clients = {expected})"
        )
    return clients


def run_federation(
    grid: Grid,
    cfg: Mapping[str, Any],
    run_dir: Path,
    on_round: RoundCallback | None = None,
    *,
    resume: bool = False,
) -> Path:
    """Run every strategy of ``cfg`` on ``grid``; write the run directory; return its path.

    With ``resume=True``, ``run_dir`` holds a run that was stopped: its checkpoint is loaded,
    finished strategies are kept, and the current one goes on from the round after the
    checkpoint, on the same model and strategy state (from the start if there is no checkpoint).
    """
    from fedlr.report import render_report

    if not resume:  # a run killed even in the query round can be resumed
        write_config(run_dir, cfg)
    task = load_task(cfg)
    saved = ckpt.load(run_dir) if resume else None
    run_cfg: Mapping[str, Any] = cfg
    errors: list[dict[str, Any]] = []
    if is_files(cfg) and not cfg["task"]:  # no data here: the model's shape is the sites'
        node_ids = wait_for_nodes(grid, cfg)
        run_cfg, kept, errors = agree_on_sites(grid, node_ids, cfg)
        clients = query_sites(grid, kept, run_cfg, errors)
        agreed = ClientContext(cfg, -1, message={keys.SITE_AGREEMENT: run_cfg[keys.SITE_AGREEMENT]})
        initial = ArrayRecord(task.build_model(agreed).state_dict())
    else:
        # Built first: the data split and model take ~1 s, while the simulated nodes are still
        # starting (for Cora this also fills PyG's processed cache before any client reads it).
        initial = ArrayRecord(task.build_model().state_dict())
        clients = query_clients(grid, cfg)
    if saved is not None:
        ckpt.check_same_federation(saved, clients)
        log.info("fedlr: resuming %s after round %d of %s", run_dir, saved.round, saved.strategy)
    recorder = RunRecorder(
        run_dir, cfg, clients, on_round=on_round, resume=resume, checkpoint=saved
    )
    if errors:  # nodes left out in the query round (users' files): kept with the results
        recorder.results["errors"] = errors
    done = list(saved.done) if saved is not None else []
    # Flower's aggregation calls gc.collect() per reply (ArrayRecord.to_numpy_ndarrays with
    # keep_input=False); with torch and Ray loaded that costs ~0.16 s a call. Objects alive now
    # (modules, the engine) live for the whole run: freeze them out of the collector's scans.
    gc.collect()
    gc.freeze()
    try:
        for name in fedlr_config.split_list(cfg["strategies"]):
            if name in done:
                continue
            resumed = saved if saved is not None and saved.strategy == name else None
            run_strategy(grid, run_cfg, name, initial, clients, recorder, done, resumed)
            done.append(name)
    finally:
        recorder.close()
        try:  # also after a failure: report what was computed
            render_report(run_dir)
        except Exception as error:  # noqa: BLE001  (never mask the run's own error)
            log.warning("fedlr: no report for %s: %s", run_dir, error)
    return run_dir


def run_strategy(
    grid: Grid,
    cfg: Mapping[str, Any],
    name: str,
    initial: ArrayRecord,
    clients: list[ClientInfo],
    recorder: RunRecorder,
    done: list[str],
    resumed: ckpt.Checkpoint | None = None,
) -> PerClientRates:
    """Run strategy ``name`` from ``initial`` (or ``resumed``) to its last round; checkpoint it."""
    strategy = build_strategy(name, cfg, clients)
    arrays, first_round = initial, 1
    if resumed is not None:
        strategy.load_state_dict(resumed.strategy_state)
        arrays, first_round = resumed.array_record(), resumed.round + 1
    recorder.start_strategy(name, strategy, elapsed_s=resumed.elapsed_s if resumed else 0.0)
    latest: dict[str, Any] = {"round": first_round - 1, "arrays": arrays}
    every = cfg["checkpoint-every"]
    continual = cfg["stream"] != "none"
    keep = set(strategy.snapshot_rounds()) if continual else set()
    if continual and not strategy.task_baseline:  # forward transfer's b_j: the untrained model
        baseline = strategy.evaluate_tasks(grid, initial)
        strategy.task_baseline = {pid: acc for pid, (acc, _, _) in baseline.items()}
        recorder.log_state(name, strategy)  # a kill in round 1 keeps it

    def save(finished: bool) -> None:
        ckpt.save(
            recorder.run_dir,
            ckpt.Checkpoint(
                seed=cfg["seed"],
                done=[*done, name] if finished else list(done),
                strategy=name,
                round=latest["round"],
                arrays=latest["arrays"].to_torch_state_dict(),
                strategy_state=strategy.state_dict(),
                elapsed_s=recorder.elapsed(name),
                clients=ckpt.client_table(clients),
            ),
        )

    def after_round(server_round: int, arrays: ArrayRecord) -> None:
        if server_round > 0:
            latest.update(round=server_round, arrays=arrays)
            if server_round in keep:  # before the round's line: a kill never loses a snapshot
                ckpt.save_snapshot(recorder.run_dir, name, server_round, arrays)
            recorder.round_done(name, strategy, server_round)
            if every and server_round % every == 0:
                save(finished=False)
        return None

    if first_round <= cfg["num-server-rounds"]:
        strategy.start(
            grid,
            arrays,
            num_rounds=cfg["num-server-rounds"],
            timeout=cfg["round-timeout"],
            train_config=ConfigRecord(dict(strategy.cfg)),  # its optimizer and base rate
            evaluate_config=ConfigRecord(dict(strategy.cfg)),
            evaluate_fn=after_round,
            first_round=first_round,
        )
    if continual and not strategy.task_ensemble:
        snapshots = [ckpt.load_snapshot(recorder.run_dir, name, r) for r in sorted(keep)]
        if any(snapshot is None for snapshot in snapshots):
            log.warning("fedlr: %s: a snapshot is missing; the ensemble has the others", name)
        kept = [snapshot for snapshot in snapshots if snapshot is not None]
        final = strategy.evaluate_tasks(grid, latest["arrays"], kept)
        strategy.task_ensemble = {pid: ens for pid, (_, _, ens) in final.items() if ens}
        strategy.ensemble_examples = {pid: n for pid, (_, n, _) in final.items()}
    recorder.strategy_done(name, strategy)
    save(finished=True)
    return strategy


def resume_config(run_dir: Path) -> dict[str, Any]:
    """The resolved config of the run in ``run_dir`` (its ``config.toml``), to resume it.

    Raises
    ------
    ConfigError
        ``run_dir`` is not a run directory, or its config is not valid.
    """
    path = Path(run_dir) / "config.toml"
    if not path.is_file():
        raise fedlr_config.ConfigError(
            f"resume: {run_dir} has no config.toml (expected a run directory written by fedlr)"
        )
    cfg = fedlr_config.resolve(path)
    cfg["resume"] = ""  # the saved config is the run's own; never resume recursively
    return cfg


def make_server_app(
    cfg: Mapping[str, Any],
    run_dir: Path,
    on_round: RoundCallback | None = None,
    failures: list[BaseException] | None = None,
    *,
    resume: bool = False,
) -> ServerApp:
    """A ServerApp bound to a resolved config (for ``fedlr simulate``).

    The simulation engine runs the ServerApp in its own thread; an exception raised there is
    appended to ``failures`` (when given) so the caller can report it.
    """
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            run_federation(grid, cfg, run_dir, on_round, resume=resume)
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
    if cfg["resume"]:
        run_dir = Path(cfg["resume"])
        cfg = resume_config(run_dir)
        log.warning("fedlr: resuming %s", run_dir.resolve())
        run_federation(grid, cfg, run_dir, resume=True)
        return
    run_dir = new_run_dir(cfg["out-dir"], cfg["name"])
    write_config(run_dir, cfg)  # from now on the run can be resumed, whenever it dies
    log.warning("fedlr: writing %s", run_dir.resolve())
    run_federation(grid, cfg, run_dir)
