"""The run directory: config, per-round log appended as it happens, and results per strategy.

``rounds.jsonl`` gets one line per strategy per round, flushed at once; ``results.json`` is
rewritten (write, then rename) each time a strategy finishes, so a killed run keeps every round
and every strategy it completed. A resumed run (``resume=True``) first cuts both back to what its
checkpoint covers, then appends as an uninterrupted run would have.

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

from fedlr.config import split_list, to_toml
from fedlr.fl.checkpoint import Checkpoint
from fedlr.fl.strategy import ClientInfo, PerClientRates
from fedlr.metrics import continual
from fedlr.metrics.fairness import (
    clean_noisy_gap,
    fairness_summary,
    metric_fairness_summary,
    spearman_rho,
)

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


def _finite_or_none(value: float | None) -> float | None:
    if value is None or not np.isfinite(value):
        return None
    return float(value)


def _finite_values(values: Mapping[int, float]) -> dict[int, float]:
    # A client can report a NaN (or non-numeric) accuracy, which the strategy logs as NaN.
    # In partition-id order, not reply order: a mean over them is then the same in every run.
    return {k: v for k, v in sorted(values.items()) if _finite_or_none(v) is not None}


def _json_safe(value: Any) -> Any:
    """``value`` with every non-finite float as None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float | np.floating):
        return _finite_or_none(float(value))
    return value


def _read_lines(path: Path) -> list[dict[str, Any]]:
    """The complete JSON lines of ``path`` (a line cut short by a kill is dropped)."""
    if not path.exists():
        return []
    lines = []
    for text in path.read_text(encoding="utf-8").splitlines():
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError:
            continue
    return lines


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
        if resume:
            self._cut_back(checkpoint)
        self._rounds = open(self.run_dir / "rounds.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        self._started: dict[str, float] = {}

    def _cut_back(self, checkpoint: Checkpoint | None) -> None:
        done = checkpoint.done if checkpoint else []

        def covered(line: dict[str, Any]) -> bool:
            if line.get("strategy") in done:
                return True
            return (
                checkpoint is not None
                and line.get("strategy") == checkpoint.strategy
                and int(line.get("round", 0)) <= checkpoint.round
            )

        kept = [line for line in _read_lines(self.run_dir / "rounds.jsonl") if covered(line)]
        _atomic_write(self.run_dir / "rounds.jsonl", "".join(json.dumps(x) + "\n" for x in kept))
        results_path = self.run_dir / "results.json"
        if results_path.exists():
            saved = json.loads(results_path.read_text()).get("strategies", {})
            self.results["strategies"] = {n: saved[n] for n in done if n in saved}
            _atomic_write(results_path, json.dumps(self.results, indent=2))

    # -- per round -----------------------------------------------------------------------
    def start_strategy(self, name: str, elapsed_s: float = 0.0) -> None:
        """Note the start time of a strategy (``elapsed_s`` already spent on it before a resume)."""
        self._started[name] = time.perf_counter() - elapsed_s

    def elapsed(self, name: str) -> float:
        """Seconds spent on strategy ``name`` so far (across resumes)."""
        return time.perf_counter() - self._started.get(name, time.perf_counter())

    def round_done(self, name: str, strategy: PerClientRates, server_round: int) -> dict[str, Any]:
        """Append the round's line to ``rounds.jsonl`` and return it."""
        log_ = strategy.rounds.get(server_round)
        if log_ is None:
            return {}
        rows: list[dict[str, Any]] = []
        for c in self.clients:
            pid = c.partition_id
            rows.append(
                {
                    "partition_id": pid,
                    "role": c.role,
                    "noise_true": c.noise_true,
                    "lr": log_.lr.get(pid),
                    "noise_estimate": _finite_or_none(log_.noise_estimate.get(pid)),
                    "noise_smoothed": _finite_or_none(log_.noise_smoothed.get(pid)),
                    "accuracy": _finite_or_none(log_.accuracy.get(pid)),
                    "aggregation_weight": log_.aggregation_weight.get(pid),
                    "train_loss": _finite_or_none(log_.train_loss.get(pid)),
                    "eval_loss": _finite_or_none(log_.eval_loss.get(pid)),
                }
            )
            rows[-1]["schedule_factor"] = log_.schedule_factor.get(pid)
            if not strategy.graph:
                rows[-1].update(
                    batch_size=log_.batch_size.get(pid),
                    coupling_factor=log_.coupling_factor.get(pid),
                    steps=log_.steps.get(pid),
                )
            if strategy.stream != "none":
                rows[-1].update(
                    task=log_.task.get(pid),
                    task_accuracy=_task_row(log_.task_accuracy.get(pid)),
                )
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
            line["capped"] = _json_safe(log_.capped)
        losses = [r["eval_loss"] for r in rows if r["eval_loss"] is not None]
        line["loss_mean"] = float(np.mean(losses)) if losses else None
        if strategy.graph:
            line["degree_fairness"] = _json_safe(log_.degree_fairness)
            line["gradient_slope"] = _json_safe(log_.gradient_slope)
        else:
            line["steps_mean"] = _steps_mean(log_)
            line["steps_total"] = sum(
                _steps_mean(strategy.rounds[r]) or 0.0 for r in strategy.rounds if r <= server_round
            )
            line["noise_scale"] = _json_safe(log_.noise_scale)
        self._rounds.write(json.dumps(line) + "\n")
        self._rounds.flush()
        if self.on_round is not None:
            self.on_round(name, server_round, line)
        return line

    # -- per strategy --------------------------------------------------------------------
    def strategy_done(self, name: str, strategy: PerClientRates) -> dict[str, Any]:
        """Summarise a finished strategy into ``results.json`` (rewritten atomically)."""
        rounds = sorted(strategy.rounds)
        last_acc: dict[int, float] = {}
        last_lr: dict[int, float] = {}
        last_batch: dict[int, int] = {}
        last_coupling: dict[int, float] = {}
        last_metrics: dict[int, dict[str, float]] = {}
        for r in rounds:  # a client's latest value, even if it missed the last round
            last_acc.update(_finite_values(strategy.rounds[r].accuracy))
            last_lr.update(strategy.rounds[r].lr)
            last_batch.update(strategy.rounds[r].batch_size)
            last_coupling.update(strategy.rounds[r].coupling_factor)
            for pid, reported in strategy.rounds[r].metrics.items():
                last_metrics.setdefault(pid, {}).update(reported)
        fairness_metric = str(self.cfg.get("fairness-metric", "accuracy"))
        if fairness_metric == "loss" or "loss" in split_list(self.cfg.get("metrics", "")):
            for r in rounds:  # the loss is logged as eval_loss; per client it joins the metrics
                for pid, loss in _finite_values(strategy.rounds[r].eval_loss).items():
                    last_metrics.setdefault(pid, {})["loss"] = loss
        smoothed = strategy.ema.values if strategy.uses_estimates else {}
        rows: list[dict[str, Any]] = []
        for c in self.clients:
            estimate = smoothed.get(c.partition_id)
            if strategy.rate_source == "oracle":
                estimate = c.noise_true
            rows.append(
                {
                    "partition_id": c.partition_id,
                    "role": c.role,
                    "noise_true": c.noise_true,
                    "noise_estimate": _finite_or_none(estimate),
                    "lr": last_lr.get(c.partition_id),
                    "accuracy": last_acc.get(c.partition_id),
                    "num_examples": c.num_examples,
                }
            )
            if not strategy.graph:
                rows[-1].update(
                    batch_size=last_batch.get(c.partition_id),
                    own_batch_size=strategy.batch[c.partition_id],
                    coupling_factor=last_coupling.get(c.partition_id),
                )
            if last_metrics:
                rows[-1]["metrics"] = dict(last_metrics.get(c.partition_id, {}))
            _drop_unknown_truth(rows[-1])
        scored = [r for r in rows if r["accuracy"] is not None]
        acc = [r["accuracy"] for r in scored]
        # Truth-based numbers over the clients that know their truth (none on real sites).
        truthful = [r for r in scored if r.get("noise_true") is not None]
        est = [
            r for r in rows if r["noise_estimate"] is not None and r.get("noise_true") is not None
        ]
        rho = (
            spearman_rho([r["noise_estimate"] for r in est], [r["noise_true"] for r in est])
            if len(est) >= 2 and strategy.rate_source != "oracle"
            else None
        )
        per_round = [
            float(np.mean(list(finite.values()))) if finite else None
            for finite in (_finite_values(strategy.rounds[r].accuracy) for r in rounds)
        ]
        self.results["strategies"][name] = {
            "fairness": fairness_summary(acc) if acc else None,
            "gap_clean_noisy": _finite_or_none(
                clean_noisy_gap(
                    [r["accuracy"] for r in truthful], [r["noise_true"] for r in truthful]
                )
            )
            if truthful
            else None,
            "estimator": {
                "name": self.cfg["estimator"] if strategy.uses_estimates else None,
                "spearman": _finite_or_none(rho),
            },
            "clients": rows,
            "optimizer": strategy.cfg["optimizer"],
            "base_lr": strategy.base_lr,
            "accuracy_per_round": per_round,
            "elapsed_s": round(time.perf_counter() - self._started.get(name, 0.0), 3),
        }
        if fairness_metric != "accuracy":  # the summary of the run's fairness-metric instead
            values = [
                r["metrics"][fairness_metric]
                for r in rows
                if fairness_metric in r.get("metrics", {})
            ]
            entry = self.results["strategies"][name]
            entry["fairness"] = metric_fairness_summary(values, fairness_metric) if values else None
            entry["fairness_metric"] = fairness_metric
        if strategy.graph:
            self.results["strategies"][name]["degree"] = _degree_summary(strategy, rounds)
        else:
            self.results["strategies"][name]["batches"] = _batch_summary(strategy, rounds)
        if strategy.stream != "none":
            self.results["strategies"][name]["continual"] = _continual_summary(strategy, rounds)
        _atomic_write(self.run_dir / "results.json", json.dumps(self.results, indent=2))
        return self.results["strategies"][name]

    def close(self) -> None:
        """Close the round log."""
        self._rounds.close()


def _drop_unknown_truth(row: dict[str, Any]) -> None:
    """Leave a client's role and true noise out of its row where it has none (a real site)."""
    for key in ("role", "noise_true"):
        if row.get(key) is None:
            row.pop(key, None)


def _task_row(values: list[float] | None) -> list[float | None] | None:
    """A client's accuracy per task for ``rounds.jsonl``: null where it has no test example."""
    if values is None:
        return None
    return [None if v < 0 else _finite_or_none(v) for v in values]


def _steps_mean(log_: Any) -> float | None:
    """Mean local optimizer steps over the clients that trained in a round."""
    return float(np.mean(list(log_.steps.values()))) if log_.steps else None


def _batch_summary(strategy: PerClientRates, rounds: list[int]) -> dict[str, Any]:
    """A tabular strategy's batch sizes, coupling, optimizer steps and noise scale per round."""
    logs = [strategy.rounds[r] for r in rounds]
    steps = [_steps_mean(log_) for log_ in logs]
    losses = [
        float(np.mean(list(_finite_values(log_.eval_loss).values())))
        if _finite_values(log_.eval_loss)
        else None
        for log_ in logs
    ]
    noise = [log_.noise_scale or {} for log_ in logs]
    return _json_safe(
        {
            "coupled": strategy.coupled,
            "coupling_rule": strategy.coupling_rule if strategy.coupled else None,
            "reference_batch": strategy.reference_batch,
            "grow_batch": strategy.grow_batch,
            "lr_decay_rounds": strategy.milestones,
            "steps_per_round": steps,
            "steps_total": float(sum(s for s in steps if s is not None)),
            "loss_per_round": losses,
            "final_loss": next((v for v in reversed(losses) if v is not None), None),
            "b_simple": [n.get("b_simple") for n in noise],
            "b_simple_round": [n.get("b_simple_round") for n in noise],
        }
    )


def _degree_summary(strategy: PerClientRates, rounds: list[int]) -> dict[str, Any]:
    """A graph strategy's degree fairness (last evaluated round) and gradient diagnostic."""
    fairness = [strategy.rounds[r].degree_fairness for r in rounds]
    last = next((f for f in reversed(fairness) if f is not None), None)
    slopes = [strategy.rounds[r].gradient_slope or {} for r in rounds]
    profiles = [strategy.rounds[r].gradient_profile for r in rounds]
    profile = next((p for p in profiles if p), None)
    return _json_safe(
        {
            "degree_rule": strategy.degree_rule,
            "gamma": strategy.cfg["degree-gamma"] if strategy.degree_rule else 0.0,
            "fairness": last,
            "lowest_quartile_per_round": [
                f["bucket-accuracy"][0] if f is not None else None for f in fairness
            ],
            "gradient_slope": {
                "before": [s.get("before") for s in slopes],
                "after": [s.get("after") for s in slopes],
            },
            "gradient_profile": profile,
        }
    )


def _continual_summary(strategy: PerClientRates, rounds: list[int]) -> dict[str, Any]:
    """A continual strategy's accuracy matrices, GEM / Chaudhry metrics and snapshot ensemble.

    Client ``k``'s matrix takes row ``i`` from its evaluation at the end of its own task ``i``
    (:func:`fedlr.tasks.streams.task_ends`); the pooled matrix weights each client's column
    ``j`` by its test examples of task ``j`` (:func:`fedlr.metrics.continual.pooled`). The last
    row is the final model. ``ensemble`` is the snapshot ensemble on every task, pooled the same
    way, next to the final model's row.
    """
    from fedlr.tasks import streams

    cfg = strategy.cfg
    tasks = int(cfg["num-tasks"])
    starts = strategy.task_starts()
    ends = streams.task_ends(starts, cfg["num-server-rounds"])
    pids = sorted(strategy.by_partition)
    matrices, examples, clients = [], [], []
    logs = {r: strategy.rounds[r] for r in rounds}
    for pid in pids:
        history = {r: g.task_accuracy[pid] for r, g in logs.items() if pid in g.task_accuracy}
        seen = [g.task_examples[pid] for g in logs.values() if pid in g.task_examples]
        counts = seen[-1] if seen else [0] * tasks
        matrix = continual.matrix_at(
            history, [int(e) for e in ends[pid]], [int(s) for s in starts[pid]]
        )
        matrices.append(matrix)
        examples.append(counts)
        own = strategy.task_baseline.get(pid)
        complete = bool(np.all(np.isfinite(matrix)))
        base_ok = own is not None and all(0 <= b <= 1 for b in own)
        clients.append(
            {
                "partition_id": pid,
                "task_ends": [int(e) for e in ends[pid]],
                "R": _json_safe(matrix.tolist()),
                **(continual.summary(matrix, own if base_ok else None) if complete else {}),
            }
        )
    R = continual.pooled(matrices, examples)
    base_rows = [strategy.task_baseline.get(pid) for pid in pids]
    baseline = (
        continual.pooled(
            [[np.nan if b < 0 else b for b in row] for row in base_rows if row is not None],
            [examples[i] for i, row in enumerate(base_rows) if row is not None],
        )
        if any(row is not None for row in base_rows)
        else None
    )
    ens_pids = [pid for pid in pids if pid in strategy.task_ensemble]
    ensemble = (
        continual.pooled(
            [[np.nan if a < 0 else a for a in strategy.task_ensemble[pid]] for pid in ens_pids],
            [strategy.ensemble_examples.get(pid, [0] * tasks) for pid in ens_pids],
        )
        if ens_pids
        else None
    )
    complete = bool(np.all(np.isfinite(R)))
    usable_base = baseline is not None and bool(np.all(np.isfinite(baseline)))
    lr_mean = [
        float(np.mean(list(strategy.rounds[r].lr.values()))) if strategy.rounds[r].lr else None
        for r in rounds
    ]
    return _json_safe(
        {
            "stream": strategy.stream,
            "num_tasks": tasks,
            "schedule": strategy.schedule_name,
            "replay": strategy.replay,
            "task_starts": starts.tolist(),
            "snapshot_rounds": strategy.snapshot_rounds(),
            "R": R.tolist(),
            "baseline": baseline.tolist() if baseline is not None else None,
            **(continual.summary(R, baseline if usable_base else None) if complete else {}),
            "final_task_accuracy": R[-1].tolist(),
            "final_acc": float(np.mean(R[-1])) if complete else None,
            "ensemble_task_accuracy": ensemble.tolist() if ensemble is not None else None,
            "ensemble_acc": float(np.mean(ensemble))
            if ensemble is not None and np.all(np.isfinite(ensemble))
            else None,
            "lr_mean_per_round": lr_mean,
            "multipliers": list(strategy.multipliers(pids[0])) if pids else [],
            "clients": clients,
        }
    )
