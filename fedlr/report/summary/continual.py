"""Accuracy matrix, transfer metrics and rates per round of a continual run (a stream).

From ``results.json`` (``continual``) or, for a strategy cut off, from the rows' ``lr`` and
``task_accuracy`` at the task ends (``num-tasks``, ``task-stagger``), each client weighing the
same; its schedule and replay from its name (``fedavg+phases+replay``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedlr.config import ConfigError, schedule_of, uses_modifier
from fedlr.metrics import continual
from fedlr.report.values import mean, num
from fedlr.tasks.streams import arrival_rounds, task_ends


def _square_matrix(raw: Any) -> np.ndarray | None:
    """A ``T x T`` accuracy matrix as floats, null and NaN entries as NaN (None if not square)."""
    if not isinstance(raw, list) or not raw:
        return None
    rows = [row for row in raw if isinstance(row, list) and len(row) == len(raw)]
    if len(rows) != len(raw):
        return None
    return np.array([[num(v) for v in row] for row in rows], dtype=float)  # None: NaN


def _schedule_from_name(strategy: str) -> tuple[str, bool]:
    """Schedule (``constant`` without a schedule modifier) and replay implied by the name."""
    try:
        return schedule_of(strategy), uses_modifier(strategy, "replay")
    except ConfigError:  # a name this version does not know: no schedule, no replay
        return "constant", False


def continual_from_results(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The continual block of each finished strategy that has one."""
    blocks = {}
    for strategy, entry in results["strategies"].items():
        raw = entry.get("continual")
        if not isinstance(raw, dict):
            continue
        schedule, replay = _schedule_from_name(strategy)
        rates = [(i + 1, num(v)) for i, v in enumerate(raw.get("lr_mean_per_round") or [])]
        blocks[strategy] = {
            "stream": raw.get("stream"),
            "num_tasks": raw.get("num_tasks"),
            "schedule": str(raw.get("schedule") or schedule),
            "replay": bool(raw.get("replay", replay)),
            "starts": [list(row) for row in raw.get("task_starts") or [] if isinstance(row, list)],
            "R": _square_matrix(raw.get("R")),
            # ACC, BWT, FWT and forgetting are written only when R is complete.
            "acc": num(raw.get("acc")),
            "learning_acc": num(raw.get("learning_acc")),
            "bwt": num(raw.get("bwt")),
            "fwt": num(raw.get("fwt")),
            "forgetting": num(raw.get("forgetting")),
            "ensemble_acc": num(raw.get("ensemble_acc")),
            # (round, mean rate sent to the clients), rounds 1, 2, ...
            "rates": [(r, v) for r, v in rates if v is not None],
            "from_rounds": False,
        }
    return blocks


def _config_int(config: dict[str, Any], key: str, default: int) -> int:
    """An integer key of ``config.toml`` (``default`` when missing or not an integer)."""
    value = config.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _pooled_from_rounds(
    histories: dict[Any, dict[int, list[float | None]]],
    config: dict[str, Any],
    tasks: int,
    last_round: int,
) -> tuple[np.ndarray | None, list[list[int]]]:
    """Pooled accuracy matrix (each client weighs 1) and task starts, from ``task_accuracy``.

    Task ends are the rounds before the next task arrives (``num-tasks``, ``task-stagger`` of
    ``config.toml``); a task that ends after ``last_round`` (the run was killed first) leaves
    its row NaN.
    """
    num_rounds = _config_int(config, "num-server-rounds", last_round)
    partition_ids = [pid for pid in histories if isinstance(pid, int) and pid >= 0]
    clients = _config_int(config, "num-clients", max(partition_ids, default=-1) + 1)
    try:
        starts = arrival_rounds(
            num_rounds, tasks, max(clients, 1), _config_int(config, "task-stagger", 0)
        )
    except ValueError:
        return None, []
    ends = task_ends(starts, num_rounds)
    matrices = []
    for pid in partition_ids:
        if pid >= len(ends):
            continue
        history = {r: row for r, row in histories[pid].items() if len(row) == tasks}
        # matrix_at reads a negative accuracy as "no test example", like None.
        matrix = continual.matrix_at(
            history, [int(end) for end in ends[pid]], [int(s) for s in starts[pid]]
        )
        matrix[ends[pid] > last_round] = np.nan
        matrices.append(matrix)
    if not matrices:
        return None, starts.tolist()
    return continual.pooled(matrices, [[1] * tasks] * len(matrices)), starts.tolist()


def continual_from_rounds(
    rounds: list[dict[str, Any]], config: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """The same block from rounds.jsonl, for each strategy with continual lines."""
    by_strategy: dict[str, dict[float, dict[str, Any]]] = {}
    for record in rounds:
        round_number = num(record.get("round"))
        clients = record.get("clients") or []
        if round_number is None or not any(
            isinstance(c.get("task_accuracy"), list) for c in clients
        ):  # continual lines only
            continue
        by_strategy.setdefault(record["strategy"], {})[round_number] = record
    blocks = {}
    for strategy, by_round in by_strategy.items():
        records = [record for _, record in sorted(by_round.items())]
        histories: dict[Any, dict[int, list[float | None]]] = {}
        rates = []
        for record in records:
            round_number = int(record["round"])
            for client in record.get("clients") or []:
                accuracy = client.get("task_accuracy")
                if isinstance(accuracy, list):
                    history = histories.setdefault(client.get("partition_id"), {})
                    history[round_number] = [num(a) for a in accuracy]
            rate = mean([num(c.get("lr")) for c in record.get("clients") or []])
            if rate is not None:
                rates.append((round_number, rate))
        lengths = [len(row) for history in histories.values() for row in history.values()]
        tasks = _config_int(config, "num-tasks", max(lengths, default=0))
        R, starts = (
            _pooled_from_rounds(histories, config, tasks, int(records[-1]["round"]))
            if tasks >= 1
            else (None, [])
        )
        complete = R is not None and bool(np.all(np.isfinite(R)))
        # No baseline in the rows: FWT stays unknown.
        metrics = continual.summary(R) if complete else {}
        schedule, replay = _schedule_from_name(strategy)
        blocks[strategy] = {
            "stream": config.get("stream"),
            "num_tasks": tasks or None,
            "schedule": schedule,
            "replay": replay,
            "starts": starts,
            "R": R,
            "acc": num(metrics.get("acc")),
            "learning_acc": num(metrics.get("learning_acc")),
            "bwt": num(metrics.get("bwt")),
            "fwt": None,
            "forgetting": num(metrics.get("forgetting")),
            "ensemble_acc": None,  # evaluated by the server at the end only
            "rates": rates,
            "from_rounds": True,
        }
    return blocks
