"""The run directory: config, the event log appended as it happens, and results per strategy.

``rounds.jsonl`` is the record: one line per strategy per round and the strategy's events
(``start``, ``baseline``, ``ensemble``, ``done``; :mod:`fedlr.analysis`), each flushed at once.
``results.json`` is :func:`fedlr.analysis.summarize` of it, rewritten (write, then rename) each
time a strategy finishes, so a killed run keeps every round and every strategy it completed, and
the report summarises a strategy cut off mid-run the same way. A resumed run (``resume=True``)
first cuts both back to what its checkpoint covers, then appends as an uninterrupted run would.

A client's ``role`` and ``noise_true`` are written only where it knows them (simulated noise; a
real site has no truth); without them the truth-based numbers (``gap_clean_noisy``, the
estimator's ``spearman``) are null. When clients report metrics beyond accuracy and loss (the
run's ``metrics``, or a task's own), every client row gets a ``metrics`` table, name -> value:
that round's in ``rounds.jsonl``, each one's latest in ``results.json`` (there with ``loss``, the
latest ``eval_loss``, when ``metrics`` or ``fairness-metric`` names it). A strategy's
``fairness`` summarises the clients' accuracy or, with another ``fairness-metric``, that metric
(named in ``fairness_metric``; :func:`fedlr.metrics.fairness.metric_fairness_summary`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedlr.analysis import finite_or_none, is_round, json_safe, read_log, summarize
from fedlr.config import to_toml
from fedlr.fl.checkpoint import Checkpoint
from fedlr.fl.observers import FeatureObserver
from fedlr.fl.own_observers import round_records
from fedlr.fl.strategy import ClientInfo, PerClientRates
from fedlr.metrics.fairness import fairness_summary

RoundCallback = Callable[[str, int, dict[str, Any]], None]


def new_run_dir(out_dir: str | Path, name: str) -> Path:
    """A fresh ``<out_dir>/<YYYYmmdd-HHMMSS>-<name>`` (suffixed if it exists)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(out_dir) / f"{stamp}-{name}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    path.mkdir(parents=True, mode=0o700)  # every site's per-round results: owner-only
    return path


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_config(run_dir: Path, cfg: Mapping[str, Any]) -> None:
    """Write the resolved config as ``run_dir/config.toml`` (what ``--resume`` reads back)."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    _atomic_write(Path(run_dir) / "config.toml", to_toml(dict(cfg)))


def _finite_values(values: Mapping[int, float]) -> dict[int, float]:
    # A client can report a NaN (or non-numeric) accuracy, which the strategy logs as NaN.
    # In partition-id order, not reply order: a mean over them is then the same in every run.
    return {k: v for k, v in sorted(values.items()) if finite_or_none(v) is not None}


class RunRecorder:
    """Writes a run directory while the strategies run.

    With ``resume=True`` the directory already holds a run: ``rounds.jsonl`` keeps the strategies
    in ``checkpoint.done`` and the rounds of ``checkpoint.strategy`` up to ``checkpoint.round``
    (nothing when ``checkpoint`` is None), ``results.json`` keeps the strategies in
    ``checkpoint.done``; rounds done after the checkpoint are dropped, to be run again.
    """

    def __init__(
        self,
        run_dir: Path,
        cfg: Mapping[str, Any],
        clients: list[ClientInfo],
        on_round: RoundCallback | None = None,
        *,
        resume: bool = False,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.cfg = dict(cfg)
        self.clients = sorted(clients, key=lambda c: c.partition_id)
        self.on_round = on_round
        self.results: dict[str, Any] = {
            "name": cfg["name"],
            "seed": cfg["seed"],
            "num_rounds": cfg["num-server-rounds"],
            "estimator": cfg["estimator"],
            "strategies": {},
        }
        write_config(self.run_dir, self.cfg)
        self._written: dict[str, set[str]] = {}  # the events in rounds.jsonl, per strategy
        if resume:
            self._cut_back(checkpoint)
        self._rounds = open(self.run_dir / "rounds.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        self._started: dict[str, float] = {}

    def _cut_back(self, checkpoint: Checkpoint | None) -> None:
        done = checkpoint.done if checkpoint else []

        def covered(line: dict[str, Any]) -> bool:
            if line.get("strategy") in done:
                return True
            if checkpoint is None or line.get("strategy") != checkpoint.strategy:
                return False
            if is_round(line):
                return int(line["round"]) <= checkpoint.round
            # What the checkpoint's strategy state holds is written again from it (its ensemble,
            # when it has one); what it is and its untrained baseline stay.
            return line.get("event") in ("start", "baseline")

        kept = [line for line in read_log(self.run_dir / "rounds.jsonl") if covered(line)]
        for line in kept:
            if "event" in line:
                self._written.setdefault(line["strategy"], set()).add(line["event"])
        _atomic_write(self.run_dir / "rounds.jsonl", "".join(json.dumps(x) + "\n" for x in kept))
        results_path = self.run_dir / "results.json"
        if results_path.exists():
            saved = json.loads(results_path.read_text()).get("strategies", {})
            self.results["strategies"] = {n: saved[n] for n in done if n in saved}
            _atomic_write(results_path, json.dumps(self.results, indent=2))

    # -- events ------------------------------------------------------------------------------
    def _write(self, line: Mapping[str, Any]) -> None:
        self._rounds.write(json.dumps(line) + "\n")
        self._rounds.flush()

    def _event(self, name: str, kind: str, **data: Any) -> None:
        self._write({"strategy": name, "event": kind, **data})
        self._written.setdefault(name, set()).add(kind)

    def log_state(self, name: str, strategy: PerClientRates) -> None:
        """Write the events of what ``strategy`` knows and rounds.jsonl does not have yet."""
        written = self._written.setdefault(name, set())
        if "start" not in written:
            self._event(name, "start", info=strategy_info(strategy, self.clients))
        if strategy.stream == "none":
            return
        if "baseline" not in written and strategy.task_baseline:
            self._event(name, "baseline", task_baseline=strategy.task_baseline)
        if "ensemble" not in written and strategy.task_ensemble:
            self._event(
                name,
                "ensemble",
                task_ensemble=strategy.task_ensemble,
                ensemble_examples=strategy.ensemble_examples,
            )

    # -- per round -----------------------------------------------------------------------
    def start_strategy(
        self, name: str, strategy: PerClientRates | None = None, elapsed_s: float = 0.0
    ) -> None:
        """Note the start time of a strategy (``elapsed_s`` already spent on it before a resume).

        With ``strategy``, its ``start`` event is written now (else before its first round).
        """
        self._started[name] = time.perf_counter() - elapsed_s
        if strategy is not None:
            self.log_state(name, strategy)

    def elapsed(self, name: str) -> float:
        """Seconds spent on strategy ``name`` so far (across resumes)."""
        return time.perf_counter() - self._started.get(name, time.perf_counter())

    def round_done(self, name: str, strategy: PerClientRates, server_round: int) -> dict[str, Any]:
        """Append the round's line to ``rounds.jsonl`` and return it."""
        log_ = strategy.rounds.get(server_round)
        if log_ is None:
            return {}
        self.log_state(name, strategy)
        # fedlr's own observers' columns (a run's own go under "observers")
        columns = [
            o
            for o in strategy.observers
            if isinstance(o, FeatureObserver) and o not in strategy.own_observers
        ]
        rows: list[dict[str, Any]] = []
        for c in self.clients:
            pid = c.partition_id
            rows.append(
                {
                    "partition_id": pid,
                    "role": c.role,
                    "noise_true": c.noise_true,
                    "lr": log_.lr.get(pid),
                    "noise_estimate": finite_or_none(log_.noise_estimate.get(pid)),
                    "noise_smoothed": finite_or_none(log_.noise_smoothed.get(pid)),
                    "accuracy": finite_or_none(log_.accuracy.get(pid)),
                    "aggregation_weight": log_.aggregation_weight.get(pid),
                    "train_loss": finite_or_none(log_.train_loss.get(pid)),
                    "eval_loss": finite_or_none(log_.eval_loss.get(pid)),
                }
            )
            rows[-1]["schedule_factor"] = log_.schedule_factor.get(pid)
            for observer in columns:  # each feature's own columns
                rows[-1].update(observer.row(log_, pid))
            if log_.metrics:  # the run's metrics beyond accuracy and loss, a task's own
                rows[-1]["metrics"] = dict(log_.metrics.get(pid, {}))
            if log_.train_metrics:  # a task's own train metrics (a user's task)
                rows[-1]["train_metrics"] = dict(log_.train_metrics.get(pid, {}))
            _drop_unknown_truth(rows[-1])
        accuracies = [r["accuracy"] for r in rows if r["accuracy"] is not None]
        summary = fairness_summary(accuracies) if accuracies else None
        line = {
            "strategy": name,
            "round": server_round,
            "elapsed_s": round(time.perf_counter() - self._started.get(name, 0.0), 3),
            "accuracy_mean": summary["mean"] if summary else None,
            "accuracy_worst10": summary["worst10"] if summary else None,
            "clients": rows,
            "missing": [p for p in log_.sampled if p not in log_.train_loss],
            "invalid_estimates": log_.invalid_estimates,
            "errors": log_.errors,
        }
        if strategy.guarded:
            line["noisy_group"] = list(log_.noisy_group)
        if log_.capped:  # a q-FedAvg loss or an update norm bounded (fedlr.fl.checks)
            line["capped"] = json_safe(log_.capped)
        losses = [r["eval_loss"] for r in rows if r["eval_loss"] is not None]
        line["loss_mean"] = float(np.mean(losses)) if losses else None
        for observer in columns:
            line.update(observer.line(server_round, strategy.rounds))
        own = round_records(strategy.own_observers, server_round)  # the run's own observers
        if own:
            line["observers"] = json_safe(own)
        self._write(line)
        if self.on_round is not None:
            self.on_round(name, server_round, line)
        return line

    # -- per strategy --------------------------------------------------------------------
    def strategy_done(self, name: str, strategy: PerClientRates) -> dict[str, Any]:
        """Log the strategy's ``done`` event and write its summary into ``results.json``.

        The summary is :func:`fedlr.analysis.summarize` of ``rounds.jsonl``, read back: the file
        is the record. ``results.json`` is rewritten atomically.
        """
        self.log_state(name, strategy)
        elapsed = round(time.perf_counter() - self._started.get(name, 0.0), 3)
        self._event(name, "done", elapsed_s=elapsed)
        entry = summarize(
            [line for line in read_log(self.run_dir / "rounds.jsonl") if line["strategy"] == name],
            self.cfg,
        )[name]
        self.results["strategies"][name] = entry
        _atomic_write(self.run_dir / "results.json", json.dumps(self.results, indent=2))
        return entry

    def close(self) -> None:
        """Close the round log."""
        self._rounds.close()


def _drop_unknown_truth(row: dict[str, Any]) -> None:
    """Leave a client's role and true noise out of its row where it has none (a real site)."""
    for key in ("role", "noise_true"):
        if row.get(key) is None:
            row.pop(key, None)


def strategy_info(strategy: PerClientRates, clients: list[ClientInfo]) -> dict[str, Any]:
    """What a strategy is, as plain data: its ``start`` event's ``info``.

    Its clients (size, own batch, truth where known), where its rates come from, its modifiers'
    settings, a stream's task arrivals and ends and its rate multipliers. (The untrained model's
    and the snapshot ensemble's accuracy per task come in their own events.)
    """
    info: dict[str, Any] = {
        "clients": [
            {
                "partition_id": c.partition_id,
                "role": c.role,
                "noise_true": c.noise_true,
                "num_examples": c.num_examples,
                "own_batch_size": strategy.batch[c.partition_id],
            }
            for c in clients
        ],
        "rate_source": strategy.rate_source,
        "uses_estimates": strategy.uses_estimates,
        "optimizer": strategy.cfg["optimizer"],
        "base_lr": strategy.base_lr,
        "graph": strategy.graph,
        "batches": {
            "coupled": strategy.coupled,
            "coupling_rule": strategy.coupling_rule if strategy.coupled else None,
            "reference_batch": strategy.reference_batch,
            "grow_batch": strategy.grow_batch,
            "lr_decay_rounds": strategy.milestones,
        },
        "degree": {
            "degree_rule": strategy.degree_rule,
            "gamma": strategy.cfg["degree-gamma"] if strategy.degree_rule else 0.0,
        },
        "continual": None,
    }
    if strategy.stream != "none":
        from fedlr.tasks import streams

        starts = strategy.task_starts()
        ends = streams.task_ends(starts, strategy.cfg["num-server-rounds"])
        pids = sorted(strategy.by_partition)
        info["continual"] = {
            "stream": strategy.stream,
            "num_tasks": int(strategy.cfg["num-tasks"]),
            "schedule": strategy.schedule_name,
            "replay": strategy.replay,
            "task_starts": starts.tolist(),
            "task_ends": [[int(e) for e in row] for row in ends],
            "snapshot_rounds": strategy.snapshot_rounds(),
            "multipliers": list(strategy.multipliers(pids[0])) if pids else [],
        }
    return info
