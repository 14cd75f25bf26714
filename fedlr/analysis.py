"""The one summary of a run, computed from what ``rounds.jsonl`` recorded.

``rounds.jsonl`` is the record (written by :class:`fedlr.fl.recorder.RunRecorder`): one line per
strategy per round, and the strategy's events, each a line with an ``event`` key:

* ``start``: what the strategy is (``info``: its clients' sizes and truth, where its rates come
  from, its modifiers' settings, a stream's task arrivals), written before its first round;
* ``baseline``: the untrained model's accuracy per task (a stream; ``task_baseline``);
* ``ensemble``: the snapshot ensemble's accuracy per task (``task_ensemble``,
  ``ensemble_examples``), after its last round;
* ``done``: the seconds it took (``elapsed_s``), when it finished.

:func:`summarize` turns the lines into each strategy's ``results.json`` entry, through
:func:`summarize_strategy`. It is pure: the same lines give the same summary, for a finished run
(``results.json`` is written from it) and for a killed one (the report reads it back).

A client's value is its latest one, even if it missed the last round; the per-round columns are
each round's means over the clients that reported (in partition order, so a mean is the same
in every run).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedlr.config import split_list
from fedlr.metrics import continual
from fedlr.metrics.fairness import (
    clean_noisy_gap,
    fairness_summary,
    metric_fairness_summary,
    spearman_rho,
)

__all__ = [
    "EVENTS",
    "finite_or_none",
    "is_round",
    "json_safe",
    "read_log",
    "summarize",
    "summarize_strategy",
]

EVENTS = ("start", "baseline", "ensemble", "done")  # the kinds of event line, in their order


def finite_or_none(value: float | None) -> float | None:
    """``value`` as a float, or None when it is missing or not finite."""
    if value is None or not np.isfinite(value):
        return None
    return float(value)


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float as None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, set | frozenset):
        return [json_safe(v) for v in sorted(value, key=repr)]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, float | np.floating):
        return finite_or_none(float(value))
    if isinstance(value, np.generic):  # numpy ints and bools: their Python value
        return value.item()
    return value


def read_log(path: Path | str) -> list[dict[str, Any]]:
    """The lines of a ``rounds.jsonl``: JSON objects naming a strategy, in file order.

    A line cut short by a kill, or one not shaped as a round's line or an event, is skipped, not
    fatal; a missing file has none.
    """
    path = Path(path)
    if not path.is_file():
        return []
    lines = []
    with path.open(encoding="utf-8", errors="replace") as texts:
        for text in texts:
            try:
                line = json.loads(text)
            except json.JSONDecodeError:
                continue
            if _well_formed(line):
                lines.append(line)
    return lines


def _well_formed(line: Any) -> bool:
    """Whether a line is a round's line or an event of a named strategy.

    A round's line has an integer round and a list of client rows; a ``start`` event its
    ``info`` table. Anything else is skipped, as a cut line is.
    """
    if not isinstance(line, dict) or not isinstance(line.get("strategy"), str):
        return False
    if "event" in line:
        return line["event"] != "start" or isinstance(line.get("info"), dict)
    rows = line.get("clients")
    return (
        isinstance(line.get("round"), int)
        and isinstance(rows, list)
        and all(isinstance(row, dict) and "partition_id" in row for row in rows)
        and isinstance(line.get("observers", {}), dict)
    )


def is_round(line: Mapping[str, Any]) -> bool:
    """Whether a ``rounds.jsonl`` line is a round's (not an event)."""
    return "event" not in line and "round" in line


def summarize(lines: Sequence[Mapping[str, Any]], cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Each strategy's ``results.json`` entry from the lines of ``rounds.jsonl``.

    A strategy is summarised when its ``start`` event is there (a log written before fedlr
    recorded events has none: its strategies are left out). A later line wins over an earlier
    one of the same round or event (a resumed run appends what it ran again). A strategy cut off
    mid-run is summarised from the rounds it logged; its ``elapsed_s`` is its last round's.

    Parameters
    ----------
    lines : sequence of dict
        The lines of ``rounds.jsonl`` (:func:`read_log`), every strategy's.
    cfg : Mapping
        The run config.

    Returns
    -------
    dict
        Strategy name -> entry, in the order the strategies started.
    """
    rounds: dict[str, dict[int, Mapping[str, Any]]] = {}
    events: dict[str, dict[str, Mapping[str, Any]]] = {}
    for line in lines:
        name = line["strategy"]
        if line.get("event") in EVENTS:
            events.setdefault(name, {})[line["event"]] = line
        elif is_round(line):
            rounds.setdefault(name, {})[int(line["round"])] = line
    entries = {}
    for name, seen in events.items():
        if "start" not in seen:
            continue
        own = [rounds.get(name, {})[r] for r in sorted(rounds.get(name, {}))]
        info = copy.deepcopy(dict(seen["start"]["info"]))
        if info.get("continual") is not None:
            for kind, keys in (
                ("baseline", ("task_baseline",)),
                ("ensemble", ("task_ensemble", "ensemble_examples")),
            ):
                for key in keys:
                    info["continual"][key] = dict(seen.get(kind, {}).get(key) or {})
        done = seen.get("done")
        last = own[-1] if own else {}
        info["elapsed_s"] = done.get("elapsed_s") if done is not None else last.get("elapsed_s")
        entries[name] = summarize_strategy(own, info, cfg)
    return entries


def _latest(lines: Sequence[Mapping[str, Any]], field: str) -> dict[int, Any]:
    """Each client's latest non-null ``field`` over the rounds."""
    out: dict[int, Any] = {}
    for line in lines:
        for row in line["clients"]:
            if row.get(field) is not None:
                out[row["partition_id"]] = row[field]
    return out


def _mean_of(line: Mapping[str, Any], field: str) -> float | None:
    """The mean over clients of a round's ``field`` (partition order), None when nobody has one."""
    values = [row[field] for row in line["clients"] if row.get(field) is not None]
    return float(np.mean(values)) if values else None


def summarize_strategy(
    lines: Sequence[Mapping[str, Any]], info: Mapping[str, Any], cfg: Mapping[str, Any]
) -> dict[str, Any]:
    """A strategy's ``results.json`` entry from its round lines and :func:`strategy_info`.

    Parameters
    ----------
    lines : sequence of dict
        The strategy's lines of ``rounds.jsonl``, one per round.
    info : dict
        What the strategy is (see :func:`fedlr.fl.recorder.strategy_info`).
    cfg : Mapping
        The run config.
    """
    lines = sorted(lines, key=lambda line: line["round"])
    last_metrics: dict[int, dict[str, float]] = {}
    for line in lines:
        for row in line["clients"]:
            if row.get("metrics"):
                last_metrics.setdefault(row["partition_id"], {}).update(row["metrics"])
    fairness_metric = str(cfg.get("fairness-metric", "accuracy"))
    if fairness_metric == "loss" or "loss" in split_list(cfg.get("metrics", "")):
        for pid, loss in _latest(lines, "eval_loss").items():  # the loss joins the metrics
            last_metrics.setdefault(pid, {})["loss"] = loss
    last_acc, last_lr = _latest(lines, "accuracy"), _latest(lines, "lr")
    last_batch, last_coupling = _latest(lines, "batch_size"), _latest(lines, "coupling_factor")
    smoothed = _latest(lines, "noise_smoothed") if info["uses_estimates"] else {}
    rows: list[dict[str, Any]] = []
    for client in info["clients"]:
        pid = client["partition_id"]
        estimate = smoothed.get(pid)
        if info["rate_source"] == "oracle":
            estimate = client.get("noise_true")
        rows.append(
            {
                "partition_id": pid,
                "role": client.get("role"),
                "noise_true": client.get("noise_true"),
                "noise_estimate": finite_or_none(estimate),
                "lr": last_lr.get(pid),
                "accuracy": last_acc.get(pid),
                "num_examples": client["num_examples"],
            }
        )
        if not info["graph"]:
            rows[-1].update(
                batch_size=last_batch.get(pid),
                own_batch_size=client["own_batch_size"],
                coupling_factor=last_coupling.get(pid),
            )
        if last_metrics:
            rows[-1]["metrics"] = dict(last_metrics.get(pid, {}))
        for key in ("role", "noise_true"):  # no truth (a real site): left out
            if rows[-1].get(key) is None:
                rows[-1].pop(key, None)
    scored = [r for r in rows if r["accuracy"] is not None]
    acc = [r["accuracy"] for r in scored]
    # Truth-based numbers over the clients that know their truth (none on real sites).
    truthful = [r for r in scored if r.get("noise_true") is not None]
    est = [r for r in rows if r["noise_estimate"] is not None and r.get("noise_true") is not None]
    rho = (
        spearman_rho([r["noise_estimate"] for r in est], [r["noise_true"] for r in est])
        if len(est) >= 2 and info["rate_source"] != "oracle"
        else None
    )
    entry: dict[str, Any] = {
        "fairness": fairness_summary(acc) if acc else None,
        "gap_clean_noisy": finite_or_none(
            clean_noisy_gap([r["accuracy"] for r in truthful], [r["noise_true"] for r in truthful])
        )
        if truthful
        else None,
        "estimator": {
            "name": cfg.get("estimator") if info["uses_estimates"] else None,
            "spearman": finite_or_none(rho),
        },
        "clients": rows,
        "optimizer": info["optimizer"],
        "base_lr": info["base_lr"],
        "accuracy_per_round": [_mean_of(line, "accuracy") for line in lines],
        "elapsed_s": info["elapsed_s"],
    }
    if fairness_metric != "accuracy":  # the summary of the run's fairness-metric instead
        values = [
            r["metrics"][fairness_metric] for r in rows if fairness_metric in r.get("metrics", {})
        ]
        entry["fairness"] = metric_fairness_summary(values, fairness_metric) if values else None
        entry["fairness_metric"] = fairness_metric
    own = [line.get("observers") or {} for line in lines]  # the run's own observers
    for name in dict.fromkeys(n for records in own for n in records):
        entry.setdefault("observers", {})[name] = [records.get(name) for records in own]
    if info["graph"]:
        entry["degree"] = _degree_summary(lines, info)
    else:
        entry["batches"] = _batch_summary(lines, info)
    if info.get("continual") is not None:
        entry["continual"] = _continual_summary(lines, info)
    return entry


def _batch_summary(lines: Sequence[Mapping[str, Any]], info: Mapping[str, Any]) -> dict[str, Any]:
    """A tabular strategy's batch sizes, coupling, optimizer steps and noise scale per round."""
    steps = [line.get("steps_mean") for line in lines]
    losses = [line.get("loss_mean") for line in lines]
    noise = [line.get("noise_scale") or {} for line in lines]
    return json_safe(
        {
            **info["batches"],
            "steps_per_round": steps,
            "steps_total": float(sum(s for s in steps if s is not None)),
            "loss_per_round": losses,
            "final_loss": next((v for v in reversed(losses) if v is not None), None),
            "b_simple": [n.get("b_simple") for n in noise],
            "b_simple_round": [n.get("b_simple_round") for n in noise],
        }
    )


def _degree_summary(lines: Sequence[Mapping[str, Any]], info: Mapping[str, Any]) -> dict[str, Any]:
    """A graph strategy's degree fairness (last evaluated round) and gradient diagnostic."""
    fairness = [line.get("degree_fairness") for line in lines]
    slopes = [line.get("gradient_slope") or {} for line in lines]
    profiles = [line.get("gradient_profile") for line in lines]
    return json_safe(
        {
            **info["degree"],
            "fairness": next((f for f in reversed(fairness) if f is not None), None),
            "lowest_quartile_per_round": [
                f["bucket-accuracy"][0] if f is not None else None for f in fairness
            ],
            "gradient_slope": {
                "before": [s.get("before") for s in slopes],
                "after": [s.get("after") for s in slopes],
            },
            "gradient_profile": next((p for p in profiles if p), None),
        }
    )


def _pooled_rows(
    rows: Mapping[int, Sequence[float]], examples: Mapping[int, Sequence[int]], pids: Sequence[int]
) -> np.ndarray | None:
    """Per-task accuracy rows of the clients that have one, pooled by their test examples."""
    have = [pid for pid in pids if pid in rows]
    if not have:
        return None
    return continual.pooled(
        [[np.nan if a < 0 else a for a in rows[pid]] for pid in have],
        [examples[pid] for pid in have],
    )


def _continual_summary(
    lines: Sequence[Mapping[str, Any]], info: Mapping[str, Any]
) -> dict[str, Any]:
    """A continual strategy's accuracy matrices, GEM / Chaudhry metrics and snapshot ensemble.

    Client ``k``'s matrix takes row ``i`` from its evaluation at the end of its own task ``i``
    (:func:`fedlr.tasks.streams.task_ends`); the pooled matrix weights each client's column
    ``j`` by its test examples of task ``j`` (:func:`fedlr.metrics.continual.pooled`). The last
    row is the final model. ``ensemble`` is the snapshot ensemble on every task, pooled the same
    way, next to the final model's row.
    """
    stream = info["continual"]
    tasks = int(stream["num_tasks"])
    starts, ends = stream["task_starts"], stream["task_ends"]
    pids = [client["partition_id"] for client in info["clients"]]
    baseline_rows = {int(k): v for k, v in stream["task_baseline"].items()}
    matrices, examples, clients = [], {}, []
    last_round = lines[-1]["round"] if lines else 0
    rows_by_round = [
        (line["round"], {r["partition_id"]: r for r in line["clients"]}) for line in lines
    ]
    for pid in pids:
        own_rows = [(r, rows[pid]) for r, rows in rows_by_round if pid in rows]
        history = {
            r: row["task_accuracy"] for r, row in own_rows if row.get("task_accuracy") is not None
        }
        seen = [row["task_examples"] for _, row in own_rows if row.get("task_examples") is not None]
        examples[pid] = seen[-1] if seen else [0] * tasks
        matrix = continual.matrix_at(history, ends[pid], starts[pid])
        matrix[np.asarray(ends[pid]) > last_round] = np.nan  # a task not ended yet (run cut off)
        matrices.append(matrix)
        own = baseline_rows.get(pid)
        complete = bool(np.all(np.isfinite(matrix)))
        base_ok = own is not None and all(0 <= b <= 1 for b in own)
        clients.append(
            {
                "partition_id": pid,
                "task_ends": list(ends[pid]),
                "R": json_safe(matrix.tolist()),
                **(continual.summary(matrix, own if base_ok else None) if complete else {}),
            }
        )
    R = continual.pooled(matrices, [examples[pid] for pid in pids])
    baseline = _pooled_rows(baseline_rows, examples, pids)
    ensemble_rows = {int(k): v for k, v in stream["task_ensemble"].items()}
    ensemble_examples = {int(k): v for k, v in stream["ensemble_examples"].items()}
    ensemble = _pooled_rows(
        ensemble_rows, {pid: ensemble_examples.get(pid, [0] * tasks) for pid in pids}, pids
    )
    complete = bool(np.all(np.isfinite(R)))
    usable_base = baseline is not None and bool(np.all(np.isfinite(baseline)))
    return json_safe(
        {
            "stream": stream["stream"],
            "num_tasks": tasks,
            "schedule": stream["schedule"],
            "replay": stream["replay"],
            "task_starts": starts,
            "snapshot_rounds": stream["snapshot_rounds"],
            "R": R.tolist(),
            "baseline": baseline.tolist() if baseline is not None else None,
            **(continual.summary(R, baseline if usable_base else None) if complete else {}),
            "final_task_accuracy": R[-1].tolist(),
            "final_acc": float(np.mean(R[-1])) if complete else None,
            "ensemble_task_accuracy": ensemble.tolist() if ensemble is not None else None,
            "ensemble_acc": float(np.mean(ensemble))
            if ensemble is not None and np.all(np.isfinite(ensemble))
            else None,
            "lr_mean_per_round": [_mean_of(line, "lr") for line in lines],
            "multipliers": stream["multipliers"],
            "clients": clients,
        }
    )
