"""Tables and plots from a run directory: ``report.md``, ``results.csv`` and three PNGs.

A graph run (dataset cora, karate or ba) also gets a "Degree fairness" section and two more PNGs:
accuracy per global-degree quartile, and the gradient norm vs degree before and after the degree
scales.

A tabular run whose clients train with several batch sizes, or with a batch rule (``+coupled``,
``+grow-batch``, ``lr-decay-rounds``), or that measured the gradient noise scale, also gets a
"Batch size and noise scale" section and up to three more PNGs: ``B_simple`` per round (only when
measured), mean test loss vs cumulative optimizer steps, and each client's rate vs its own batch.

A continual run (``stream`` other than ``none``: each client learns ``num-tasks`` tasks in turn)
also gets a "Continual learning" section and two more PNGs: the accuracy matrix ``R`` of each
strategy as a heat-map, and the mean learning rate sent per round with the task starts marked.

A run directory (``runs/<time>-<name>/``) holds ``config.toml``, ``rounds.jsonl`` (one line per
strategy per round, appended as rounds finish) and ``results.json`` (rewritten each time a
strategy finishes). Everything here reads those files and writes next to them; nothing is kept
between calls.

The summary table's fairness columns (mean, variance, worst/best 10%, Jain, Gini) and the
per-client plot are of the run's ``fairness-metric`` (accuracy by default; for ``loss`` the
worst clients are those of highest loss, :func:`fedlr.metrics.fairness.metric_fairness_summary`),
and the per-client tables and ``results.csv`` hold every metric a client reported (the run's
``metrics``, a task's own). Roles, true noise and what is computed from them (the clean−noisy
gap, Spearman ρ against the true noise, the hard-but-clean section, the plot against true noise)
appear only where some client knows its truth: a real site has none.

A strategy missing from ``results.json`` (a run killed mid-way) is summarised from its last
recorded round in ``rounds.jsonl``, and the report says so at the top. Its degree data comes from
the same lines (``degree_fairness``, ``gradient_slope``), and its optimizer and degree rule from
its name and ``config.toml`` (``fedavg+adam+degree``: adam, ``degree-gamma``); likewise its
batch data (``batch_size``, ``steps_total``, ``loss_mean``, ``noise_scale``), with its coupling rule
and step schedule from its name and ``config.toml`` (``fedavg+coupled``: ``coupling-rule``).
A continual strategy's rates and accuracy matrix come from the rows' ``lr`` and ``task_accuracy``
at the task ends (``num-tasks``, ``task-stagger``), each client weighing the same; its schedule and
replay from its name (``fedavg+phases+replay``).

Examples
--------
>>> from pathlib import Path
>>> from fedlr.report import render_report
>>> render_report(Path("runs/2025-01-01T12-00-00-noisy_hospitals"))  # doctest: +SKIP
PosixPath('runs/2025-01-01T12-00-00-noisy_hospitals/report.md')
"""

from __future__ import annotations

import csv
import json
import math
import tomllib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter, MaxNLocator, PercentFormatter

from fedlr.config import (
    OPTIMIZER_MODIFIERS,
    ConfigError,
    schedule_of,
    split_list,
    uses_modifier,
)
from fedlr.metrics import continual
from fedlr.metrics.classification import NAMES as METRIC_NAMES
from fedlr.metrics.classification import higher_is_better
from fedlr.metrics.fairness import clean_noisy_gap, metric_fairness_summary, spearman_rho
from fedlr.rates.coupling import rule_for_optimizer
from fedlr.tasks.streams import arrival_rounds, task_ends

__all__ = ["load_config", "load_results", "load_rounds", "render_report", "write_csv"]

REPORT_FILE = "report.md"
CSV_FILE = "results.csv"
ACCURACY_PER_ROUND_PNG = "accuracy_per_round.png"
ACCURACY_VS_NOISE_PNG = "client_accuracy_vs_noise.png"
RATE_VS_NOISE_PNG = "rate_vs_noise.png"
DEGREE_QUARTILES_PNG = "degree_quartiles.png"  # graph runs only
DEGREE_GRADIENTS_PNG = "degree_gradients.png"  # graph runs only
NOISE_SCALE_PNG = "noise_scale.png"  # runs that measured the gradient noise scale only
LOSS_VS_STEPS_PNG = "loss_vs_steps.png"  # tabular runs with batch data to show only
RATE_VS_BATCH_PNG = "rate_vs_batch.png"  # tabular runs with batch data to show only
CONTINUAL_R_PNG = "continual_R.png"  # continual runs (a stream) only
RATE_PER_ROUND_PNG = "rate_per_round.png"  # continual runs (a stream) only

CSV_COLUMNS = (
    "strategy",
    "partition_id",
    "role",
    "noise_true",
    "noise_estimate",
    "lr",
    "accuracy",
    "num_examples",
)

_DPI = 120
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">")
_NOISY, _HARD_CLEAN = "noisy", "hard-clean"
# A black ring around a point marks a hard-but-clean client in every plot.
_RING: dict[str, Any] = {"facecolors": "none", "edgecolors": "black", "s": 170, "lw": 1.4}
_QUARTILES = 4  # degree buckets: global-degree quartiles Q1 (lowest) .. Q4


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------


def load_rounds(run_dir: Path | str) -> list[dict[str, Any]]:
    """Read ``rounds.jsonl``, skipping lines that are not a JSON object with a strategy.

    A run killed while writing leaves a truncated last line; such lines are skipped, not fatal.

    Parameters
    ----------
    run_dir : Path or str
        The run directory.

    Returns
    -------
    list of dict
        One record per readable line, in file order; empty if the file is missing.
    """
    path = Path(run_dir) / "rounds.jsonl"
    if not path.is_file():
        return []
    records = []
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get("strategy"), str):
                records.append(record)
    return records


def load_results(run_dir: Path | str) -> dict[str, Any] | None:
    """Read ``results.json``.

    Parameters
    ----------
    run_dir : Path or str
        The run directory.

    Returns
    -------
    dict or None
        The parsed file, or ``None`` when it is missing (the run has not finished).

    Raises
    ------
    ValueError
        If the file exists but is not a JSON object with a ``strategies`` table.
    """
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        return None
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(results, dict) or not isinstance(results.get("strategies"), dict):
        raise ValueError(f"{path}: expected an object with a 'strategies' table")
    return results


def load_config(run_dir: Path | str) -> dict[str, Any]:
    """Read the resolved ``config.toml`` of a run.

    Parameters
    ----------
    run_dir : Path or str
        The run directory.

    Returns
    -------
    dict
        The flat config table, or an empty dict when the file is missing or unreadable.
    """
    path = Path(run_dir) / "config.toml"
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}


# ------------------------------------------------------------------------------------------------
# One normalised view of a run, whether it finished or not
# ------------------------------------------------------------------------------------------------


def _num(value: Any) -> float | None:
    """Return ``value`` as a finite float, else ``None`` (null, NaN, strings, ...)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _fairness(values: Sequence[float | None], metric: str = "accuracy") -> dict[str, float | None]:
    """Fairness summary of per-client values of ``metric``, as results.json writes it."""
    present = [v for v in values if v is not None]
    if not present:
        return dict.fromkeys(("mean", "variance", "worst10", "best10", "jain", "gini"))
    return dict(metric_fairness_summary(present, metric))


def _metrics(raw: Any) -> dict[str, float]:
    """A client's ``metrics`` table (name -> finite value); empty when missing or malformed."""
    if not isinstance(raw, dict):
        return {}
    return {str(k): v for k, v in ((k, _num(v)) for k, v in raw.items()) if v is not None}


def _metric_value(client: dict[str, Any], metric: str) -> float | None:
    """A normalised client's value of ``metric`` (accuracy or one of its ``metrics``)."""
    return client["accuracy"] if metric == "accuracy" else client["metrics"].get(metric)


def _wants_loss(config: dict[str, Any]) -> bool:
    """Whether the run's ``metrics`` or ``fairness-metric`` names the loss (eval_loss)."""
    names = split_list(str(config.get("metrics", "")))
    return config.get("fairness-metric") == "loss" or "loss" in names


def _strategy_order(
    results: dict[str, Any] | None, rounds: list[dict[str, Any]], config: dict[str, Any]
) -> list[str]:
    """Order strategies as the run listed them, then any others in order of appearance."""
    order: list[str] = []
    if results is not None:
        order.extend(results["strategies"])
    order.extend(s.strip() for s in str(config.get("strategies", "")).split(",") if s.strip())
    order.extend(record["strategy"] for record in rounds)
    return list(dict.fromkeys(order))


def _last_rounds(rounds: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Return the record of the highest round of each strategy (the later line wins a tie)."""
    last: dict[str, dict[str, Any]] = {}
    for record in rounds:
        current = last.get(record["strategy"])
        round_number = _num(record.get("round")) or 0.0
        if current is None or round_number >= (_num(current.get("round")) or 0.0):
            last[record["strategy"]] = record
    return last


def _summaries_from_results(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    # A client's role and true noise are absent (None) where it has no truth (a real site).
    summaries = {}
    for strategy, entry in results["strategies"].items():
        fairness = entry.get("fairness") or {}
        estimator = entry.get("estimator") or {}
        clients = [
            {
                "partition_id": client.get("partition_id"),
                "role": client.get("role"),
                "noise_true": _num(client.get("noise_true")),
                "noise_estimate": _num(client.get("noise_estimate")),
                "lr": _num(client.get("lr")),
                "accuracy": _num(client.get("accuracy")),
                "num_examples": client.get("num_examples"),
                "metrics": _metrics(client.get("metrics")),
            }
            for client in entry.get("clients") or []
        ]
        summaries[strategy] = {
            "fairness": {key: _num(value) for key, value in fairness.items()},
            "gap_clean_noisy": _num(entry.get("gap_clean_noisy")),
            "spearman": _num(estimator.get("spearman")),
            "estimator": estimator.get("name"),
            "clients": clients,
            "round": None,
            "missing": [],
        }
    return summaries


def _summaries_from_rounds(
    rounds: list[dict[str, Any]], config: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    metric = str(config.get("fairness-metric", "accuracy"))
    summaries = {}
    for strategy, record in _last_rounds(rounds).items():
        clients = []
        for client in record.get("clients") or []:
            # The smoothed estimate is what the rate rule reads; fall back to the raw one.
            estimate = _num(client.get("noise_smoothed"))
            if estimate is None:
                estimate = _num(client.get("noise_estimate"))
            metrics = _metrics(client.get("metrics"))
            loss = _num(client.get("eval_loss"))
            if _wants_loss(config) and loss is not None:
                metrics["loss"] = loss
            clients.append(
                {
                    "partition_id": client.get("partition_id"),
                    "role": client.get("role"),
                    "noise_true": _num(client.get("noise_true")),
                    "noise_estimate": estimate,
                    "lr": _num(client.get("lr")),
                    "accuracy": _num(client.get("accuracy")),
                    "num_examples": None,
                    "metrics": metrics,
                }
            )
        fairness = _fairness([_metric_value(c, metric) for c in clients], metric)
        # Prefer what the run itself logged for the two numbers it logs (of accuracy).
        for key, logged in (("mean", "accuracy_mean"), ("worst10", "accuracy_worst10")):
            if metric == "accuracy" and _num(record.get(logged)) is not None:
                fairness[key] = _num(record.get(logged))
        scored = [c for c in clients if c["accuracy"] is not None and c["noise_true"] is not None]
        rated = [
            c for c in clients if c["noise_estimate"] is not None and c["noise_true"] is not None
        ]
        gap = (
            clean_noisy_gap([c["accuracy"] for c in scored], [c["noise_true"] for c in scored])
            if scored
            else None
        )
        rho = (
            spearman_rho([c["noise_estimate"] for c in rated], [c["noise_true"] for c in rated])
            if len(rated) >= 2
            else None
        )
        summaries[strategy] = {
            "fairness": fairness,
            "gap_clean_noisy": _num(gap),
            "spearman": _num(rho),
            "estimator": None,
            "clients": clients,
            "round": record.get("round"),
            "missing": list(record.get("missing") or []),
        }
    return summaries


def _degree_fairness(raw: Any) -> dict[str, Any] | None:
    """Normalise a ``degree_fairness`` dict (None when missing); buckets padded to four."""
    if not isinstance(raw, dict):
        return None

    def four(values: Any) -> list[float | None]:
        values = [_num(v) for v in values] if isinstance(values, list) else []
        return (values + [None] * _QUARTILES)[:_QUARTILES]

    edges = [_num(e) for e in raw.get("bucket-edges") or []]
    return {
        "accuracy": _num(raw.get("accuracy")),
        "buckets": four(raw.get("bucket-accuracy")),
        "sizes": [None if n is None else int(n) for n in four(raw.get("bucket-size"))],
        "edges": edges if len(edges) == _QUARTILES - 1 and None not in edges else None,
        "jain": _num(raw.get("jain")),
        "worst": _num(raw.get("worst")),
    }


def _settings_from_name(strategy: str, config: dict[str, Any]) -> tuple[Any, float | None]:
    """Optimizer and degree gamma (None: no degree rule) implied by ``RULE[+MODIFIER...]``."""
    _, *modifiers = (part.strip() for part in strategy.split("+"))
    optimizer = next((m for m in modifiers if m in OPTIMIZER_MODIFIERS), config.get("optimizer"))
    gamma = _num(config.get("degree-gamma")) if "degree" in modifiers else None
    return optimizer, gamma


def _degree_from_results(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    degree = {}
    for strategy, entry in results["strategies"].items():
        raw = entry.get("degree")
        if not isinstance(raw, dict):
            continue
        slope = raw.get("gradient_slope") or {}
        before, after = list(slope.get("before") or []), list(slope.get("after") or [])
        count = max(len(before), len(after))
        before, after = before + [None] * count, after + [None] * count
        profile = raw.get("gradient_profile")
        degree[strategy] = {
            "optimizer": entry.get("optimizer"),
            "gamma": _num(raw.get("gamma")) if raw.get("degree_rule") else None,
            "fairness": _degree_fairness(raw.get("fairness")),
            # One entry per recorded round, rounds 1, 2, ...
            "slopes": [(i + 1, _num(before[i]), _num(after[i])) for i in range(count)],
            "profile": profile if isinstance(profile, dict) else None,
        }
    return degree


def _degree_from_rounds(
    rounds: list[dict[str, Any]], config: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    by_strategy: dict[str, dict[float, dict[str, Any]]] = {}
    for record in rounds:
        round_number = _num(record.get("round"))
        if round_number is None or not ("degree_fairness" in record or "gradient_slope" in record):
            continue
        by_strategy.setdefault(record["strategy"], {})[round_number] = record
    degree = {}
    for strategy, by_round in by_strategy.items():
        records = [record for _, record in sorted(by_round.items())]
        optimizer, gamma = _settings_from_name(strategy, config)
        # As results.json does: the last round that evaluated degree fairness.
        fairness = [_degree_fairness(r.get("degree_fairness")) for r in records]
        slopes = []
        for record in records:
            slope = record.get("gradient_slope") or {}
            slopes.append((record["round"], _num(slope.get("before")), _num(slope.get("after"))))
        degree[strategy] = {
            "optimizer": optimizer,
            "gamma": gamma,
            "fairness": next((f for f in reversed(fairness) if f is not None), None),
            "slopes": slopes,
            "profile": None,  # written to results.json only
        }
    return degree


def _coupling_rule(config: dict[str, Any], optimizer: Any) -> str | None:
    """The rule a ``+coupled`` strategy used, resolved as the strategy does (auto: by optimizer)."""
    rule = config.get("coupling-rule")
    if rule == "auto":
        try:
            return rule_for_optimizer(str(optimizer))
        except ValueError:
            return "auto"
    return None if rule is None else str(rule)


def _decay_rounds(config: dict[str, Any]) -> list[int]:
    """``lr-decay-rounds`` of ``config.toml`` as round numbers (empty when unset or unreadable)."""
    try:
        return [int(item) for item in split_list(str(config.get("lr-decay-rounds", "")))]
    except ValueError:
        return []


def _last_value(values: Iterable[Any]) -> float | None:
    """The last finite number among ``values`` (None if there is none)."""
    numbers = [value for value in map(_num, values) if value is not None]
    return numbers[-1] if numbers else None


def _batches_from_results(
    results: dict[str, Any], config: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    batches = {}
    for strategy, entry in results["strategies"].items():
        raw = entry.get("batches")
        if not isinstance(raw, dict):
            continue
        own, rates = {}, {}
        for client in entry.get("clients") or []:
            partition_id = client.get("partition_id")
            batch, rate = _num(client.get("own_batch_size")), _num(client.get("lr"))
            if batch is None:  # written before own batches were: the last round's batch
                batch = _num(client.get("batch_size"))
            if batch is not None:
                own[partition_id] = batch
            if rate is not None:
                rates[partition_id] = rate
        # Rounds with no step count add none, as the recorder's steps_total does.
        steps = [_num(s) or 0.0 for s in raw.get("steps_per_round") or []]
        losses = [_num(v) for v in raw.get("loss_per_round") or []]
        cumulative = np.cumsum(steps).tolist()
        smoothed, per_round = list(raw.get("b_simple") or []), list(raw.get("b_simple_round") or [])
        count = max(len(smoothed), len(per_round))
        smoothed, per_round = smoothed + [None] * count, per_round + [None] * count
        batches[strategy] = {
            "own": own,
            "rates": rates,
            "coupled": bool(raw.get("coupled")),
            "rule": raw.get("coupling_rule"),
            "grow_batch": bool(raw.get("grow_batch")),
            "decay_rounds": [int(r) for r in raw.get("lr_decay_rounds") or []],
            "decay_factor": _num(config.get("lr-decay-factor")),
            # (cumulative steps, mean test loss) and (round, smoothed, per-round B_simple)
            "curve": [(t, v) for t, v in zip(cumulative, losses, strict=False) if v is not None],
            "noise": [(i + 1, _num(smoothed[i]), _num(per_round[i])) for i in range(count)],
            "steps_total": _num(raw.get("steps_total")),
            "final_loss": _num(raw.get("final_loss")),
        }
    return batches


def _batches_from_rounds(
    rounds: list[dict[str, Any]], config: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    by_strategy: dict[str, dict[float, dict[str, Any]]] = {}
    for record in rounds:
        round_number = _num(record.get("round"))
        if round_number is None or "steps_total" not in record:  # tabular lines only
            continue
        by_strategy.setdefault(record["strategy"], {})[round_number] = record
    batches = {}
    for strategy, by_round in by_strategy.items():
        records = [record for _, record in sorted(by_round.items())]
        own: dict[Any, float] = {}
        rates: dict[Any, float] = {}
        for record in records:
            for client in record.get("clients") or []:
                partition_id = client.get("partition_id")
                batch, rate = _num(client.get("batch_size")), _num(client.get("lr"))
                # Batches only grow during a run: the smallest one seen is the client's own.
                if batch is not None:
                    own[partition_id] = min(batch, own.get(partition_id, batch))
                if rate is not None:  # a client's latest rate, as results.json keeps it
                    rates[partition_id] = rate
        noise = []
        for record in records:
            scale = record.get("noise_scale")
            if isinstance(scale, dict):
                noise.append(
                    (
                        record["round"],
                        _num(scale.get("b_simple")),
                        _num(scale.get("b_simple_round")),
                    )
                )
        curve = [(_num(r.get("steps_total")), _num(r.get("loss_mean"))) for r in records]
        curve = [(t, v) for t, v in curve if t is not None and v is not None]
        _, *modifiers = (part.strip() for part in strategy.split("+"))
        optimizer, _ = _settings_from_name(strategy, config)
        coupled = "coupled" in modifiers
        batches[strategy] = {
            "own": own,
            "rates": rates,
            "coupled": coupled,
            "rule": _coupling_rule(config, optimizer) if coupled else None,
            "grow_batch": "grow-batch" in modifiers,
            "decay_rounds": _decay_rounds(config),
            "decay_factor": _num(config.get("lr-decay-factor")),
            "curve": curve,
            "noise": noise,
            "steps_total": _last_value(r.get("steps_total") for r in records),
            "final_loss": _last_value(r.get("loss_mean") for r in records),
        }
    return batches


def _shows_batches(batches: dict[str, dict[str, Any]]) -> bool:
    """Whether there is batch data to show: several batch sizes, a batch rule or a noise scale."""
    return any(
        len(set(data["own"].values())) > 1
        or data["coupled"]
        or data["grow_batch"]
        or data["decay_rounds"]
        or any(v is not None for point in data["noise"] for v in point[1:])
        for data in batches.values()
    )


def _square_matrix(raw: Any) -> np.ndarray | None:
    """A ``T x T`` accuracy matrix as floats, null and NaN entries as NaN (None if not square)."""
    if not isinstance(raw, list) or not raw:
        return None
    rows = [row for row in raw if isinstance(row, list) and len(row) == len(raw)]
    if len(rows) != len(raw):
        return None
    return np.array([[_num(v) for v in row] for row in rows], dtype=float)  # None: NaN


def _schedule_from_name(strategy: str) -> tuple[str, bool]:
    """Schedule (``constant`` without a schedule modifier) and replay implied by the name."""
    try:
        return schedule_of(strategy), uses_modifier(strategy, "replay")
    except ConfigError:  # a name this version does not know: no schedule, no replay
        return "constant", False


def _continual_from_results(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    blocks = {}
    for strategy, entry in results["strategies"].items():
        raw = entry.get("continual")
        if not isinstance(raw, dict):
            continue
        schedule, replay = _schedule_from_name(strategy)
        rates = [(i + 1, _num(v)) for i, v in enumerate(raw.get("lr_mean_per_round") or [])]
        blocks[strategy] = {
            "stream": raw.get("stream"),
            "num_tasks": raw.get("num_tasks"),
            "schedule": str(raw.get("schedule") or schedule),
            "replay": bool(raw.get("replay", replay)),
            "starts": [list(row) for row in raw.get("task_starts") or [] if isinstance(row, list)],
            "R": _square_matrix(raw.get("R")),
            # ACC, BWT, FWT and forgetting are written only when R is complete.
            "acc": _num(raw.get("acc")),
            "learning_acc": _num(raw.get("learning_acc")),
            "bwt": _num(raw.get("bwt")),
            "fwt": _num(raw.get("fwt")),
            "forgetting": _num(raw.get("forgetting")),
            "ensemble_acc": _num(raw.get("ensemble_acc")),
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


def _continual_from_rounds(
    rounds: list[dict[str, Any]], config: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    by_strategy: dict[str, dict[float, dict[str, Any]]] = {}
    for record in rounds:
        round_number = _num(record.get("round"))
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
                    history[round_number] = [_num(a) for a in accuracy]
            rate = _mean([_num(c.get("lr")) for c in record.get("clients") or []])
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
            "acc": _num(metrics.get("acc")),
            "learning_acc": _num(metrics.get("learning_acc")),
            "bwt": _num(metrics.get("bwt")),
            "fwt": None,
            "forgetting": _num(metrics.get("forgetting")),
            "ensemble_acc": None,  # evaluated by the server at the end only
            "rates": rates,
            "from_rounds": True,
        }
    return blocks


def _client_sort_key(client: dict[str, Any]) -> tuple[int, str]:
    partition_id = client.get("partition_id")
    if isinstance(partition_id, int):
        return (partition_id, "")
    return (1 << 30, str(partition_id))


def _load_run(run_dir: Path) -> dict[str, Any]:
    """Collect everything the report needs, in one shape for finished and unfinished runs."""
    config = load_config(run_dir)
    results = load_results(run_dir)
    rounds = load_rounds(run_dir)
    if results is None and not rounds:
        raise ValueError(
            f"{run_dir}: nothing to report (no results.json and no readable line in rounds.jsonl)"
        )
    # Finished strategies from results.json; a strategy cut off mid-run from its last round.
    summaries = _summaries_from_rounds(rounds, config)
    if results is not None:
        summaries.update(_summaries_from_results(results))
    for summary in summaries.values():
        summary["clients"].sort(key=_client_sort_key)
    order = [s for s in _strategy_order(results, rounds, config) if s in summaries]
    degree = _degree_from_rounds(rounds, config)
    batches = _batches_from_rounds(rounds, config)
    blocks = _continual_from_rounds(rounds, config)
    if results is not None:
        degree.update(_degree_from_results(results))
        batches.update(_batches_from_results(results, config))
        blocks.update(_continual_from_results(results))
    batches = {s: batches[s] for s in order if s in batches}
    source = results if results is not None else config
    clients = [c for s in order for c in summaries[s]["clients"]]
    return {
        "name": source.get("name") or config.get("name") or run_dir.name,
        "fairness_metric": _fairness_metric(config, results),
        # truth columns, plots and summaries only where some client knows its truth
        "has_truth": any(c["noise_true"] is not None for c in clients),
        "has_roles": any(c.get("role") is not None for c in clients),
        "metric_names": _metric_names(clients),
        "seed": source.get("seed", config.get("seed")),
        "num_rounds": source.get("num_rounds", config.get("num-server-rounds")),
        "base_lr": _num(config.get("lr")),
        "finished": results is not None and all(s in results["strategies"] for s in order),
        "strategies": order,
        "summaries": {s: summaries[s] for s in order},
        "rounds": rounds,
        "degree": {s: degree[s] for s in order if s in degree},  # empty unless a graph run
        # empty unless a tabular run with several batch sizes, a batch rule or a noise scale
        "batches": batches if _shows_batches(batches) else {},
        "continual": {s: blocks[s] for s in order if s in blocks},  # empty unless a stream
        "colours": _colours(_strategy_order(results, rounds, config)),
    }


def _fairness_metric(config: dict[str, Any], results: dict[str, Any] | None) -> str:
    """The run's ``fairness-metric``: config.toml's, else results.json's, else accuracy."""
    if config.get("fairness-metric"):
        return str(config["fairness-metric"])
    entries = (results or {}).get("strategies", {}).values()
    named = [e["fairness_metric"] for e in entries if e.get("fairness_metric")]
    return str(named[0]) if named else "accuracy"


def _metric_names(clients: list[dict[str, Any]]) -> list[str]:
    """Every metric some client reported besides accuracy: fedlr's in order, then the others."""
    seen = {name for c in clients for name in c["metrics"]}
    return [n for n in METRIC_NAMES if n in seen] + sorted(seen - set(METRIC_NAMES))


def _colours(strategies: list[str]) -> dict[str, tuple[str, str]]:
    """Give each strategy a fixed (colour, marker), the same in every plot."""
    return {
        strategy: (f"C{i % 10}", _MARKERS[i % len(_MARKERS)])
        for i, strategy in enumerate(strategies)
    }


# ------------------------------------------------------------------------------------------------
# CSV
# ------------------------------------------------------------------------------------------------


def write_csv(run_dir: Path | str) -> Path:
    """Write ``results.csv``: one row per strategy and client.

    Columns are ``CSV_COLUMNS`` (``role`` and ``noise_true`` only where some client knows its
    truth), then every metric some client reported besides accuracy; a missing value is an
    empty cell. An unfinished run (no ``results.json``) gives the clients of the last recorded
    round of each strategy.

    Parameters
    ----------
    run_dir : Path or str
        The run directory.

    Returns
    -------
    Path
        The path of the written file.
    """
    run_dir = Path(run_dir)
    return _write_csv(run_dir, _load_run(run_dir))


def _write_csv(run_dir: Path, run: dict[str, Any]) -> Path:
    path = run_dir / CSV_FILE
    columns = [c for c in CSV_COLUMNS if _shows_column(run, c)]
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(columns + run["metric_names"])
        for strategy in run["strategies"]:
            for client in run["summaries"][strategy]["clients"]:
                row = [strategy] + [client.get(column) for column in columns[1:]]
                row += [client["metrics"].get(name) for name in run["metric_names"]]
                writer.writerow(["" if value is None else value for value in row])
    return path


def _shows_column(run: dict[str, Any], column: str) -> bool:
    """Role and true noise only where some client knows them (a real site has no truth)."""
    return {"role": run["has_roles"], "noise_true": run["has_truth"]}.get(column, True)


# ------------------------------------------------------------------------------------------------
# Markdown
# ------------------------------------------------------------------------------------------------

NA = "n/a"


def _fmt(value: float | None, spec: str, scale: float = 1.0) -> str:
    return NA if value is None else format(value * scale, spec)


def _percent(value: float | None) -> str:
    return _fmt(value, ".1f", 100.0)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> list[str]:
    """Format a markdown table; ``align`` holds one of ``l``/``r`` per column."""
    rule = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return lines


# (header, value of a summary, format, which value is best: +1 highest, -1 lowest, 0 closest to 0)
_SUMMARY_COLUMNS: tuple[tuple[str, Callable[[dict], float | None], Callable, int], ...] = (
    ("Mean acc. (%)", lambda s: s["fairness"].get("mean"), _percent, 1),
    ("Variance (%²)", lambda s: s["fairness"].get("variance"), lambda v: _fmt(v, ".1f", 1e4), -1),
    ("Worst-10% (%)", lambda s: s["fairness"].get("worst10"), _percent, 1),
    ("Best-10% (%)", lambda s: s["fairness"].get("best10"), _percent, 1),
    ("Jain", lambda s: s["fairness"].get("jain"), lambda v: _fmt(v, ".3f"), 1),
    ("Gini", lambda s: s["fairness"].get("gini"), lambda v: _fmt(v, ".3f"), -1),
    ("Clean−noisy gap (pp)", lambda s: s["gap_clean_noisy"], _percent, 0),
    ("Spearman ρ", lambda s: s["spearman"], lambda v: _fmt(v, ".2f"), 1),
)


# The fairness-metric's name in text, and in the summary table's header.
_METRIC_TEXT = {"balanced-accuracy": "balanced accuracy", "auroc": "AUROC", "f1": "F1"}
_METRIC_SHORT = {"accuracy": "acc.", "balanced-accuracy": "bal. acc.", "auroc": "AUROC", "f1": "F1"}


def _metric_text(metric: str) -> str:
    return _METRIC_TEXT.get(metric, metric)


def _percent_scale(metric: str) -> bool:
    """Whether ``metric`` is a score in [0, 1], shown in percent (the loss is shown as it is)."""
    return metric in METRIC_NAMES and higher_is_better(metric)


def _summary_columns(run: dict[str, Any]) -> tuple[tuple[str, Callable, Callable, int], ...]:
    """The summary table's columns: the fairness-metric's, then the truth-based two if known."""
    metric = run["fairness_metric"]
    truth = _SUMMARY_COLUMNS[6:] if run["has_truth"] else ()
    if metric == "accuracy":
        return _SUMMARY_COLUMNS[:6] + truth
    if truth:  # the gap stays one of accuracy
        truth = (("Clean−noisy acc. gap (pp)", *truth[0][1:]), truth[1])
    short = _METRIC_SHORT.get(metric, metric)
    fairness = _SUMMARY_COLUMNS[:6]
    if _percent_scale(metric):
        return ((f"Mean {short} (%)", *fairness[0][1:]), *fairness[1:], *truth)
    three = lambda v: _fmt(v, ".3f")  # noqa: E731
    return (
        (f"Mean {short}", fairness[0][1], three, -1),
        ("Variance", fairness[1][1], lambda v: _fmt(v, ".4f"), -1),
        ("Worst-10% (highest)", fairness[2][1], three, -1),
        ("Best-10% (lowest)", fairness[3][1], three, -1),
        *fairness[4:],
        *truth,
    )


def _summary_note(run: dict[str, Any], rho: str) -> str:
    """What the summary table's numbers are (the words under it)."""
    metric = run["fairness_metric"]
    clean = "clean " if run["has_truth"] else ""
    if metric == "accuracy":
        words = f"Accuracies are on each client's {clean}test split, in percent"
    else:
        unit = ", in percent" if _percent_scale(metric) else ""
        words = f"Fairness columns are of each client's {_metric_text(metric)} on its {clean}test "
        words += f"split{unit}, each client counted once"
        if not higher_is_better(metric):
            words += (
                "; the worst 10% are the clients of highest loss; Jain and Gini measure how "
                "evenly the loss is spread (1 and 0: every client alike)"
            )
    if run["has_truth"]:
        kind = "" if metric == "accuracy" else " (of accuracy)"
        words += (
            f"; the gap{kind} is mean clean minus mean noisy accuracy in percentage points; "
            f"Spearman ρ{rho}"
        )
    return words + ". Best per column in bold."


def _summary_table(run: dict[str, Any]) -> list[str]:
    strategies = run["strategies"]
    columns = _summary_columns(run)
    cells: dict[str, list[str]] = {s: [] for s in strategies}
    for _, value_of, formatter, direction in columns:
        values = {s: _num(value_of(run["summaries"][s])) for s in strategies}
        present = {s: v for s, v in values.items() if v is not None}
        best_text = None
        if len(present) >= 2:
            score = {1: lambda v: v, -1: lambda v: -v, 0: lambda v: -abs(v)}[direction]
            best_text = formatter(max(present.values(), key=score))
        for s in strategies:
            text = formatter(values[s])
            # Ties at the shown precision are all best.
            cells[s].append(f"**{text}**" if values[s] is not None and text == best_text else text)
    header = ["Strategy"] + [column[0] for column in columns]
    rows = [[f"`{s}`"] + cells[s] for s in strategies]
    return _table(header, rows, "l" + "r" * len(columns))


TABLE_CLIENTS = 40  # a per-client table longer than this shows its two ends only
TABLE_EDGE = 10


def _table_clients(clients: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The clients a per-client table shows: all, or the two ends of a long list.

    More than ``TABLE_CLIENTS``: the ``TABLE_EDGE`` lowest and highest accuracies, lowest first
    (a client without an accuracy counts as lowest).
    """
    if len(clients) <= TABLE_CLIENTS:
        return clients
    ranked = sorted(
        clients,
        key=lambda c: (c["accuracy"] is not None, c["accuracy"] or 0.0, c["partition_id"]),
    )
    return ranked[:TABLE_EDGE] + ranked[-TABLE_EDGE:]


def _client_table(run: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    """One row per client: truth where known, estimate, rate, accuracy, every other metric."""
    names = run["metric_names"]
    rows = []
    for client in summary["clients"]:
        row = [str(client.get("partition_id"))]
        if run["has_roles"]:
            row.append(client.get("role") or NA)
        if run["has_truth"]:
            row.append(_fmt(client["noise_true"], ".2f"))
        row += [
            _fmt(client["noise_estimate"], ".2f"),
            _fmt(client["lr"], ".3g"),
            _percent(client["accuracy"]),
        ]
        row += [
            _fmt(client["metrics"].get(n), ".3f" if n in METRIC_NAMES else ".4g") for n in names
        ]
        rows.append(row)
    header = ["Partition"] + ["Role"] * run["has_roles"] + ["True noise"] * run["has_truth"]
    header += ["Estimate", "LR", "Accuracy (%)"] + names
    align = "r" + "l" * run["has_roles"] + "r" * run["has_truth"] + "rrr" + "r" * len(names)
    return _table(header, rows, align)


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _hard_clean_section(run: dict[str, Any]) -> list[str]:
    lines = ["## Hard-but-clean clients", ""]
    bullets = []
    for strategy in run["strategies"]:
        clients = run["summaries"][strategy]["clients"]
        hard = [c for c in clients if c.get("role") == _HARD_CLEAN]
        noisy = [c for c in clients if c.get("role") == _NOISY]
        if not hard:
            continue
        described = "; ".join(
            f"client {c['partition_id']}: estimate {_fmt(c['noise_estimate'], '.2f')}, "
            f"lr {_fmt(c['lr'], '.3g')}, accuracy {_percent(c['accuracy'])}%"
            for c in hard
        )
        noisy_text = (
            f"noisy clients (mean of {len(noisy)}): "
            f"estimate {_fmt(_mean([c['noise_estimate'] for c in noisy]), '.2f')}, "
            f"lr {_fmt(_mean([c['lr'] for c in noisy]), '.3g')}, "
            f"accuracy {_percent(_mean([c['accuracy'] for c in noisy]))}%"
            if noisy
            else "no noisy clients"
        )
        bullets.append(f"- `{strategy}`: {described} — vs {noisy_text}.")
    if not bullets:
        return lines + ["This run has no hard-but-clean client."]
    intro = (
        "A hard-but-clean client holds only the hardest classes: its loss is high although its "
        "labels are right. A good noise estimator gives it a low estimate and so a rate above "
        "the noisy clients' rate."
    )
    return lines + [intro, ""] + bullets


def _notes(run: dict[str, Any]) -> list[str]:
    """List missing replies and invalid estimates seen in rounds.jsonl, per strategy."""
    notes = []
    for strategy in run["strategies"]:
        records = [r for r in run["rounds"] if r["strategy"] == strategy]
        missing = sum(len(r.get("missing") or []) for r in records)
        invalid = sum(len(r.get("invalid_estimates") or []) for r in records)
        if missing or invalid:
            notes.append(
                f"- `{strategy}`: {missing} missing client replies, "
                f"{invalid} invalid noise estimates over {len(records)} rounds."
            )
    return ["## Run notes", ""] + notes + [""] if notes else []


def _quartile_ranges(edges: list[float] | None) -> list[str]:
    """Integer degrees in each quartile, from the three inner quantile edges.

    Quartile ``b`` holds the degrees ``e_b < d ≤ e_(b+1)`` (``fedlr.metrics.degree``: a degree
    equal to an edge goes to the lower quartile); coinciding edges leave a quartile empty.

    Examples
    --------
    >>> _quartile_ranges([2.0, 5.0, 6.0])
    ['≤ 2', '3–5', '6', '≥ 7']
    >>> _quartile_ranges([1.0, 1.0, 2.25])
    ['≤ 1', 'empty', '2', '≥ 3']
    """
    if edges is None:
        return [""] * _QUARTILES
    ranges = [f"≤ {math.floor(edges[0])}"]
    for low_edge, high_edge in zip(edges, edges[1:], strict=False):
        low, high = math.floor(low_edge) + 1, math.floor(high_edge)
        ranges.append("empty" if low > high else str(low) if low == high else f"{low}–{high}")
    return ranges + [f"≥ {math.floor(edges[-1]) + 1}"]


def _slopes_text(slope: tuple[Any, float | None, float | None] | None) -> str:
    if slope is None:
        return NA
    return f"{_fmt(slope[1], '.2f')} → {_fmt(slope[2], '.2f')}"


def _degree_section(run: dict[str, Any]) -> list[str]:
    degree = run["degree"]
    rows = []
    for strategy, data in degree.items():
        fairness = data["fairness"] or {}
        buckets = fairness.get("buckets") or [None] * _QUARTILES
        slopes = data["slopes"]
        rows.append(
            [
                f"`{strategy}`",
                str(data["optimizer"] or NA),
                "-" if data["gamma"] is None else f"γ = {data['gamma']:g}",
                _percent(fairness.get("accuracy")),
                *(_percent(b) for b in buckets),
                _fmt(fairness.get("jain"), ".3f"),
                _percent(fairness.get("worst")),
                _slopes_text(slopes[0] if slopes else None),
                _slopes_text(slopes[-1] if slopes else None),
            ]
        )
    header = [
        "Strategy",
        "Optimizer",
        "Degree rule",
        "Accuracy (%)",
        *(f"Q{q + 1} (%)" for q in range(_QUARTILES)),
        "Jain",
        "Worst Q (%)",
        "Grad. slope, round 1",
        "Grad. slope, last round",
    ]
    lines = ["## Degree fairness", ""]
    lines += _table(header, rows, "lll" + "r" * (len(header) - 3))
    # The quartiles come from the one global graph, so their edges are normally shared.
    described: dict[str, list[str]] = {}
    for strategy, data in degree.items():
        fairness = data["fairness"]
        if fairness is None or fairness["edges"] is None:
            continue
        ranges = ", ".join(
            f"Q{q + 1} {r}" for q, r in enumerate(_quartile_ranges(fairness["edges"]))
        )
        edges = ", ".join(f"{edge:g}" for edge in fairness["edges"])
        sizes = ", ".join(NA if n is None else str(n) for n in fairness["sizes"])
        text = f"{ranges} (quantile edges {edges}; test nodes per quartile: {sizes})"
        described.setdefault(text, []).append(strategy)
    lines.append("")
    for text, strategies in described.items():
        names = ", ".join(f"`{s}`" for s in strategies)
        scope = "" if len(described) == 1 else f" of {names}"
        lines += [f"Global-degree quartiles{scope}: {text}.", ""]
    lines += [
        "Quartiles Q1 (lowest degree) to Q4 split all clients' test nodes by their degree in the "
        "global graph; Jain's index and the worst quartile count each quartile once. A gradient "
        "slope is the log-log slope of the gradient norm vs degree + 1 at the received weights, "
        "before → after the degree scales.",
        "",
        f"![Accuracy per degree quartile]({DEGREE_QUARTILES_PNG})",
        "",
        f"![Gradient norm vs degree]({DEGREE_GRADIENTS_PNG})",
        "",
    ]
    return lines


def _batch_sizes_text(own: dict[Any, float]) -> str:
    """Min–median–max of the clients' own batch sizes (one number when they are all equal).

    Examples
    --------
    >>> _batch_sizes_text({0: 8.0, 1: 16.0, 2: 16.0, 3: 64.0})
    '8–16–64'
    >>> _batch_sizes_text({0: 32.0, 1: 32.0}), _batch_sizes_text({})
    ('32', 'n/a')
    """
    if not own:
        return NA
    sizes = sorted(own.values())
    if sizes[0] == sizes[-1]:
        return f"{sizes[0]:g}"
    return f"{sizes[0]:g}–{float(np.median(sizes)):g}–{sizes[-1]:g}"


def _batch_rule_text(data: dict[str, Any]) -> str:
    """The rate rule of a strategy, and its step schedule (rate decay or batch growth)."""
    text = str(data["rule"] or "coupled") if data["coupled"] else "shared rate"
    rounds = data["decay_rounds"]
    if rounds:
        factor = data["decay_factor"]
        if data["grow_batch"]:
            step = "batch grows" if factor is None else f"batch ×{1 / factor:g}"
        else:
            step = "rate decays" if factor is None else f"rate ×{factor:g}"
        at = ", ".join(str(r) for r in rounds)
        text += f"; {step} at round{'s' if len(rounds) > 1 else ''} {at}"
    elif data["grow_batch"]:
        text += "; grow batch"
    return text


def _last_b_simple(noise: list[tuple[Any, float | None, float | None]]) -> float | None:
    """The last smoothed B_simple; the last per-round one if none was smoothed."""
    smoothed = _last_value(point[1] for point in noise)
    return smoothed if smoothed is not None else _last_value(point[2] for point in noise)


def _measured_noise(run: dict[str, Any]) -> bool:
    """Whether some strategy recorded a B_simple value (of any sign)."""
    return any(
        value is not None
        for data in run["batches"].values()
        for point in data["noise"]
        for value in point[1:]
    )


def _batch_section(run: dict[str, Any]) -> list[str]:
    rows = [
        [
            f"`{strategy}`",
            _batch_sizes_text(data["own"]),
            _batch_rule_text(data),
            _fmt(data["steps_total"], ".0f"),
            _fmt(data["final_loss"], ".3f"),
            _fmt(_last_b_simple(data["noise"]), ".3g"),
        ]
        for strategy, data in run["batches"].items()
    ]
    header = [
        "Strategy",
        "Batch sizes (min–median–max)",
        "Rule",
        "Optimizer steps (total)",
        "Final test loss",
        "Last B_simple",
    ]
    lines = ["## Batch size and noise scale", ""]
    lines += _table(header, rows, "lllrrr")
    lines += [
        "",
        "Batch sizes are the clients' own; the rule is how a client's rate follows its batch "
        "(`+coupled`) or one rate for every batch, with the step schedule of lr-decay-rounds "
        "(`+grow-batch` grows the batch instead of decaying the rate). Optimizer steps are the "
        "mean local steps per trained client, summed over rounds; the test loss is the mean clean "
        "test loss over clients in the last round. B_simple = tr(Σ)/|G|² is the gradient noise "
        "scale of McCandlish et al. (2018), measured each round from the clients' gradients at "
        "the received weights (smoothed; a non-positive estimate is not plotted).",
        "",
    ]
    if _measured_noise(run):
        lines += [f"![Gradient noise scale per round]({NOISE_SCALE_PNG})", ""]
    lines += [
        f"![Test loss vs optimizer steps]({LOSS_VS_STEPS_PNG})",
        "",
        f"![Learning rate vs batch size]({RATE_VS_BATCH_PNG})",
        "",
    ]
    return lines


def _rounds_text(rounds: Sequence[Any]) -> str:
    """``1, 6 and 11``: a list of rounds in words."""
    words = [str(r) for r in rounds]
    if len(words) <= 1:
        return words[0] if words else NA
    return f"{', '.join(words[:-1])} and {words[-1]}"


def _arrival_text(starts: list[list[int]]) -> str:
    """Where the tasks start: together (one row of rounds) or staggered (first and last client).

    ``starts[k]`` holds the first round of each task at partition ``k``.

    Examples
    --------
    >>> _arrival_text([[1, 6, 11], [1, 6, 11]])
    'together at every client, in rounds 1, 6 and 11'
    >>> _arrival_text([[1, 6], [1, 8], [1, 10]])
    'staggered: in rounds 1 and 6 at client 0, up to rounds 1 and 10 at client 2 (the last)'
    """
    if not starts:
        return "in rounds not recorded"
    if all(row == starts[0] for row in starts):
        return f"together at every client, in rounds {_rounds_text(starts[0])}"
    return (
        f"staggered: in rounds {_rounds_text(starts[0])} at client 0, up to rounds "
        f"{_rounds_text(starts[-1])} at client {len(starts) - 1} (the last)"
    )


_FORGETTING_REFERENCE = "fedavg"  # forgetting is compared with fedavg's at a constant rate


def _relative_forgetting(blocks: dict[str, dict[str, Any]]) -> dict[str, float | None] | None:
    """Each strategy's forgetting relative to ``fedavg``'s at a constant rate (-0.25: 25% less).

    None when the run has no constant-rate ``fedavg``; a value is None when either forgetting is
    unknown, or ``fedavg`` forgot nothing (no forgetting to compare with).
    """
    reference = blocks.get(_FORGETTING_REFERENCE)
    if reference is None or reference["schedule"] != "constant":
        return None
    base = reference["forgetting"]
    return {
        strategy: None
        if base is None or base <= 0 or data["forgetting"] is None
        else data["forgetting"] / base - 1
        for strategy, data in blocks.items()
    }


def _continual_section(run: dict[str, Any]) -> list[str]:
    blocks = run["continual"]
    first = next(iter(blocks.values()))
    starts: list[list[int]] = next(
        (data["starts"] for data in blocks.values() if data["starts"]), []
    )
    tasks = NA if first["num_tasks"] is None else first["num_tasks"]
    relative = _relative_forgetting(blocks)
    rows = []
    for strategy, data in blocks.items():
        row = [
            f"`{strategy}`",
            data["schedule"],
            "yes" if data["replay"] else "no",
            _percent(data["acc"]),
            _percent(data["ensemble_acc"]),
            _percent(data["learning_acc"]),
            _percent(data["bwt"]),
            _percent(data["fwt"]),
            _percent(data["forgetting"]),
        ]
        if relative is not None:
            reference = strategy == _FORGETTING_REFERENCE
            row.append("reference" if reference else _fmt(relative[strategy], "+.0%"))
        rows.append(row)
    header = [
        "Strategy",
        "Schedule",
        "Replay",
        "ACC, final model (%)",
        "ACC, snapshot ensemble (%)",
        "LA (%)",
        "BWT (pp)",
        "FWT (pp)",
        "Forgetting (pp)",
    ]
    if relative is not None:
        header.append(f"Forgetting vs `{_FORGETTING_REFERENCE}`")
    lines = [
        "## Continual learning",
        "",
        f"Stream `{first['stream'] or NA}`: each client learns {tasks} tasks in turn; they start "
        f"{_arrival_text(starts)}.",
        "",
    ]
    lines += _table(header, rows, "lll" + "r" * (len(header) - 3))
    lines += [
        "",
        "R[i][j] is the accuracy on task j after training through task i, pooled over clients "
        "(each client's column j weighted by its test examples of task j). ACC is the mean "
        "accuracy over all tasks (GEM, Lopez-Paz & Ranzato 2017) of the final model, and of the "
        "snapshot ensemble (the global models kept at the task ends, predictions averaged). LA "
        "is the learning accuracy (Riemer et al. 2019), the mean accuracy on each task just "
        "after training it: a schedule that stops learning forgets less but scores low. BWT "
        "(negative: forgetting) and FWT (against the untrained model) are GEM's backward and "
        "forward transfer; forgetting is Chaudhry et al. (2018)'s max-based forgetting, the mean "
        "drop of each earlier task from its best accuracy; all three in percentage points."
        + (
            f" Forgetting vs `{_FORGETTING_REFERENCE}` is relative to that of "
            f"`{_FORGETTING_REFERENCE}` at a constant rate."
            if relative is not None
            else ""
        ),
        "",
    ]
    unfinished = [strategy for strategy, data in blocks.items() if data["from_rounds"]]
    if unfinished:
        names = ", ".join(f"`{s}`" for s in unfinished)
        lines += [
            f"{names}: from rounds.jsonl (run not finished): every client weighs the same in R, "
            "a task not finished yet leaves its row empty, and FWT and the snapshot ensemble are "
            "unknown.",
            "",
        ]
    lines += [
        f"![Accuracy matrix R per strategy]({CONTINUAL_R_PNG})",
        "",
        f"![Mean learning rate per round]({RATE_PER_ROUND_PNG})",
        "",
    ]
    return lines


def _markdown(run: dict[str, Any]) -> str:
    seed = NA if run["seed"] is None else run["seed"]
    lines = [f"# fedlr run `{run['name']}` (seed {seed})", ""]
    if not run["finished"]:
        reached = ", ".join(
            f"`{s}` round {run['summaries'][s]['round']}"
            for s in run["strategies"]
            if run["summaries"][s]["round"] is not None
        )
        total = "" if run["num_rounds"] is None else f" of {run['num_rounds']}"
        lines += [
            f"> **Unfinished run**: a strategy did not finish. Its summary is built from its last "
            f"round in rounds.jsonl ({reached}{total}); estimates there are the smoothed ones.",
            "",
        ]
    estimators = sorted({s["estimator"] for s in run["summaries"].values() if s["estimator"]})
    rho = f" between noise estimate ({', '.join(estimators)}) and true noise" if estimators else ""
    lines += ["## Summary", ""]
    lines += _summary_table(run)
    lines += [
        "",
        _summary_note(run, rho),
        "",
        f"![Mean client accuracy per round]({ACCURACY_PER_ROUND_PNG})",
        "",
    ]
    if run["has_roles"]:  # roles are simulation truth: a real site has none
        lines += _hard_clean_section(run) + [""]
    per_client = "vs true noise" if run["has_truth"] else "per partition"
    lines += [
        f"![Final client {_metric_text(run['fairness_metric'])} {per_client}]"
        f"({ACCURACY_VS_NOISE_PNG})",
        "",
        f"![Learning rate vs noise estimate]({RATE_VS_NOISE_PNG})",
        "",
    ]
    if run["degree"]:
        lines += _degree_section(run)
    if run["batches"]:
        lines += _batch_section(run)
    if run["continual"]:
        lines += _continual_section(run)
    lines += _notes(run)
    lines += ["## Clients per strategy", ""]
    for strategy in run["strategies"]:
        summary = run["summaries"][strategy]
        shown = _table_clients(summary["clients"])
        lines += [f"### `{strategy}`", ""]
        if len(shown) < len(summary["clients"]):
            lines += [
                f"{len(summary['clients'])} clients: the {TABLE_EDGE} lowest and the "
                f"{TABLE_EDGE} highest accuracies, lowest first; every client is in "
                f"[{CSV_FILE}]({CSV_FILE}).",
                "",
            ]
        lines += _client_table(run, {**summary, "clients": shown}) + [""]
        if summary["missing"]:
            ids = ", ".join(str(i) for i in summary["missing"])
            lines += [f"No reply in round {summary['round']} from: {ids}.", ""]
    lines += [f"All numbers per client: [{CSV_FILE}]({CSV_FILE}).", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Plots
# ------------------------------------------------------------------------------------------------


def _new_figure(size: tuple[float, float] = (7.5, 4.8)) -> Figure:
    figure = Figure(figsize=size, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)  # Agg, without pyplot's global figure registry
    return figure


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=_DPI, metadata={"Software": None})
    figure.clear()
    return path


def _no_data(axes: Any, message: str) -> None:
    axes.text(0.5, 0.5, message, ha="center", va="center", transform=axes.transAxes, color="0.4")


def _plot_accuracy_per_round(run: dict[str, Any], path: Path) -> Path:
    figure = _new_figure()
    axes = figure.add_subplot()
    plotted = False
    for strategy in run["strategies"]:
        by_round: dict[float, dict[str, Any]] = {}
        for record in run["rounds"]:
            round_number = _num(record.get("round"))
            if record["strategy"] == strategy and round_number is not None:
                by_round[round_number] = record
        points = sorted(by_round.items())
        colour, marker = run["colours"][strategy]
        mean = [(r, _num(rec.get("accuracy_mean"))) for r, rec in points]
        worst = [(r, _num(rec.get("accuracy_worst10"))) for r, rec in points]
        mean = [(r, 100 * v) for r, v in mean if v is not None]
        worst = [(r, 100 * v) for r, v in worst if v is not None]
        if mean:
            axes.plot(*zip(*mean, strict=True), color=colour, marker=marker, ms=4, label=strategy)
            plotted = True
        if worst:
            axes.plot(*zip(*worst, strict=True), color=colour, ls="--", lw=1.2, alpha=0.8)
            plotted = True
    axes.set_title("Client accuracy per round")
    axes.set_xlabel("Server round")
    axes.set_ylabel("Accuracy on clean test split (%)")
    axes.grid(alpha=0.3)
    if plotted:
        # One proxy entry explains the dashed lines of every strategy.
        axes.plot([], [], color="0.4", label="mean (solid)")
        axes.plot([], [], color="0.4", ls="--", lw=1.2, label="worst 10% (dashed)")
        axes.legend(loc="lower right", fontsize="small")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        _no_data(axes, "rounds.jsonl holds no round")
    return _save(figure, path)


def _dodge(index: int, count: int, span: float) -> float:
    """Offset x so that strategies at the same x do not hide each other."""
    return (index - (count - 1) / 2) * span


def _plot_accuracy_vs_noise(run: dict[str, Any], path: Path) -> Path:
    figure = _new_figure()
    axes = figure.add_subplot()
    strategies = run["strategies"]
    has_truth = run["has_truth"]
    metric = run["fairness_metric"]  # the per-client value plotted
    scale = 100.0 if _percent_scale(metric) else 1.0
    span = 0.008 if has_truth else 0.06
    hard_xs: list[float] = []
    hard_ys: list[float] = []
    for index, strategy in enumerate(strategies):
        colour, marker = run["colours"][strategy]
        xs, ys = [], []
        for client in run["summaries"][strategy]["clients"]:
            x = client["noise_true"] if has_truth else _num(client.get("partition_id"))
            value = _metric_value(client, metric)
            if x is None or value is None:
                continue
            x += _dodge(index, len(strategies), span)
            xs.append(x)
            ys.append(scale * value)
            if client.get("role") == _HARD_CLEAN:
                hard_xs.append(x)
                hard_ys.append(scale * value)
        axes.scatter(xs, ys, color=colour, marker=marker, s=42, alpha=0.85, label=strategy)
    if hard_xs:
        axes.scatter(hard_xs, hard_ys, label="hard-clean client", **_RING)
    name = _metric_text(metric)
    if has_truth:
        axes.set_title(f"Final client {name} vs true label-noise rate")
        axes.set_xlabel("True label-noise rate of the client's training split")
    else:
        axes.set_title(f"Final client {name} (no client knows its true noise)")
        axes.set_xlabel("Partition id")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    unit = " (%)" if scale == 100.0 else ""
    axes.set_ylabel(f"{name[0].upper() + name[1:]} on {'clean ' * has_truth}test split{unit}")
    axes.grid(alpha=0.3)
    if strategies:
        axes.legend(loc="best", fontsize="small")
    return _save(figure, path)


def _plot_rate_vs_noise(run: dict[str, Any], path: Path) -> Path:
    figure = _new_figure()
    axes = figure.add_subplot()
    rates: list[float] = []
    hard: list[tuple[float, float]] = []
    for strategy in run["strategies"]:
        colour, marker = run["colours"][strategy]
        points = [
            c
            for c in run["summaries"][strategy]["clients"]
            if c["noise_estimate"] is not None and c["lr"] is not None
        ]
        if not points:
            continue
        axes.scatter(
            [c["noise_estimate"] for c in points],
            [c["lr"] for c in points],
            color=colour,
            marker=marker,
            s=42,
            alpha=0.85,
            label=strategy,
        )
        rates.extend(c["lr"] for c in points)
        for client in points:
            if client.get("role") != _HARD_CLEAN:
                continue
            hard.append((client["noise_estimate"], client["lr"]))
            axes.annotate(
                f"hard-clean #{client['partition_id']} ({strategy})",
                hard[-1],
                xytext=(12, 0),
                textcoords="offset points",
                ha="left",
                va="center",
                fontsize="small",
                color=colour,
            )
    if hard:
        axes.scatter(*zip(*hard, strict=True), label="hard-clean client", **_RING)
    if rates:
        axes.margins(x=0.12, y=0.1)  # room for the annotation
        if run["base_lr"] is not None:
            axes.axhline(run["base_lr"], color="0.5", ls=":", lw=1, label="base lr")
        positive = [r for r in rates if r > 0]
        if len(positive) == len(rates) and max(positive) / min(positive) > 10:
            axes.set_yscale("log")
        axes.legend(loc="best", fontsize="small")
    else:
        _no_data(axes, "no strategy reported noise estimates")
    axes.set_title("Final learning rate vs noise estimate")
    axes.set_xlabel("Noise estimate (higher = noisier labels)")
    axes.set_ylabel("Client learning rate")
    axes.grid(alpha=0.3, which="both")
    return _save(figure, path)


def _plot_degree_quartiles(run: dict[str, Any], path: Path) -> Path:
    figure = _new_figure()
    axes = figure.add_subplot()
    scored = {s: d["fairness"] for s, d in run["degree"].items() if d["fairness"] is not None}
    edges = next((f["edges"] for f in scored.values() if f["edges"] is not None), None)
    width = 0.8 / max(len(scored), 1)
    for index, (strategy, fairness) in enumerate(scored.items()):
        colour, _ = run["colours"][strategy]
        bars = [(q, 100 * a) for q, a in enumerate(fairness["buckets"]) if a is not None]
        if bars:
            xs = [q + _dodge(index, len(scored), width) for q, _ in bars]
            axes.bar(xs, [a for _, a in bars], width=width, color=colour, label=strategy)
    ranges = _quartile_ranges(edges)
    axes.set_xticks(
        range(_QUARTILES),
        [f"Q{q + 1}\ndegree {r}" if r else f"Q{q + 1}" for q, r in enumerate(ranges)],
    )
    axes.set_title("Accuracy per global-degree quartile (all clients' test nodes)")
    axes.set_xlabel("Degree quartile (Q1 = lowest degree)")
    axes.set_ylabel("Accuracy (%)")
    axes.set_ylim(0, 105)
    axes.grid(alpha=0.3, axis="y")
    if scored:
        axes.legend(loc="best", fontsize="small")
    else:
        _no_data(axes, "no strategy evaluated degree fairness")
    return _save(figure, path)


def _loglog_fit(x: np.ndarray, y: np.ndarray, weight: np.ndarray) -> tuple[float, float] | None:
    """Weighted least squares of log y on log x: (slope, intercept), or None if undefined."""
    if x.size < 2 or np.all(x == x[0]):
        return None
    # polyfit weights multiply the residuals: sqrt(count) weighs each node once.
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1, w=np.sqrt(weight))
    return float(slope), float(intercept)


def _plot_degree_gradients(run: dict[str, Any], path: Path) -> Path:
    figure = _new_figure((12.0, 4.8))
    profile_axes, slope_axes = figure.subplots(1, 2)
    source = next((s for s, d in run["degree"].items() if d["profile"]), None)
    if source is not None:
        profile = run["degree"][source]["profile"]
        degrees = np.asarray(profile.get("degree") or [], dtype=float)
        counts = np.asarray(profile.get("count") or np.ones_like(degrees), dtype=float)
        for key, marker, colour, label in (
            ("before", "o", "C0", "before scaling"),
            ("after", "s", "C3", "after degree scales $s_v$"),
        ):
            norms = np.asarray(profile.get(key) or [], dtype=float)
            if norms.shape != degrees.shape or counts.shape != degrees.shape:
                continue
            keep = np.isfinite(norms) & (norms > 0)
            x, y = degrees[keep] + 1, norms[keep]
            fit = _loglog_fit(x, y, counts[keep])
            slope_text = "" if fit is None else f" (slope {fit[0]:.2f})"
            profile_axes.scatter(
                x, y, marker=marker, color=colour, s=36, alpha=0.85, label=label + slope_text
            )
            if fit is not None:
                line_x = np.geomspace(x.min(), x.max(), 50)
                fitted = np.exp(fit[1]) * line_x ** fit[0]
                profile_axes.plot(line_x, fitted, color=colour, ls="--", lw=1)
        profile_axes.set_xscale("log")
        profile_axes.set_yscale("log")
        # Plain degrees (2, 3, 10) rather than 2×10⁰ on the few decades a graph spans.
        profile_axes.xaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
        profile_axes.xaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))
        profile_axes.legend(loc="best", fontsize="small")
        profile_axes.set_title(f"Mean gradient norm per degree ({source}, round 1)")
    else:
        _no_data(profile_axes, "no gradient profile (results.json missing)")
        profile_axes.set_title("Mean gradient norm per degree")
    profile_axes.set_xlabel("Degree + 1 (log)")
    profile_axes.set_ylabel("Mean gradient norm (log)")
    profile_axes.grid(alpha=0.3, which="both")

    plotted = False
    for strategy, data in run["degree"].items():
        colour, marker = run["colours"][strategy]
        for index, style in ((1, "-"), (2, "--")):
            points = [(p[0], p[index]) for p in data["slopes"] if p[index] is not None]
            if points:
                slope_axes.plot(
                    *zip(*points, strict=True),
                    color=colour,
                    ls=style,
                    marker=marker,
                    ms=4,
                    label=strategy if index == 1 else None,  # one entry per strategy
                )
                plotted = True
    slope_axes.axhline(0, color="0.4", lw=1)
    slope_axes.set_title("Log-log slope of gradient norm vs degree + 1")
    slope_axes.set_xlabel("Server round")
    slope_axes.set_ylabel("Slope (0 = no degree bias)")
    slope_axes.grid(alpha=0.3)
    if plotted:
        slope_axes.plot([], [], color="0.4", label="before scaling (solid)")
        slope_axes.plot([], [], color="0.4", ls="--", label="after scaling (dashed)")
        slope_axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="x-small")
        slope_axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        _no_data(slope_axes, "no gradient slope recorded")
    return _save(figure, path)


def _plot_noise_scale(run: dict[str, Any], path: Path) -> Path:
    figure = _new_figure()
    axes = figure.add_subplot()
    plotted = False
    for strategy, data in run["batches"].items():
        colour, marker = run["colours"][strategy]
        # A log axis: non-positive estimates (tr(Σ) estimated below 0) are left out.
        smoothed = [(r, s) for r, s, _ in data["noise"] if s is not None and s > 0]
        per_round = [(r, b) for r, _, b in data["noise"] if b is not None and b > 0]
        if smoothed:
            axes.plot(
                *zip(*smoothed, strict=True), color=colour, marker=marker, ms=3, label=strategy
            )
        if per_round:
            axes.scatter(
                [r for r, _ in per_round],
                [b for _, b in per_round],
                color=colour,
                marker=marker,
                s=30,
                alpha=0.3,
                label=None if smoothed else strategy,  # one entry per strategy
            )
        plotted = plotted or bool(smoothed or per_round)
    axes.set_title("Gradient noise scale B_simple = tr(Σ) / |G|² per round")
    axes.set_xlabel("Server round")
    axes.set_ylabel("B_simple (examples, log)")
    axes.grid(alpha=0.3, which="both")
    if plotted:
        axes.set_yscale("log")
        # Plain values (20, 30, 60) rather than 2×10¹ on the few decades B_simple spans.
        axes.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
        axes.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))
        axes.plot([], [], color="0.4", marker="o", ms=3, label="smoothed (line)")
        axes.scatter([], [], color="0.4", s=30, alpha=0.3, label="this round's estimate (faint)")
        axes.legend(loc="best", fontsize="small")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        _no_data(axes, "no positive B_simple estimate")
    return _save(figure, path)


def _plot_loss_vs_steps(run: dict[str, Any], path: Path) -> Path:
    figure = _new_figure()
    axes = figure.add_subplot()
    plotted = False
    for strategy, data in run["batches"].items():
        colour, marker = run["colours"][strategy]
        if data["curve"]:
            axes.plot(
                *zip(*data["curve"], strict=True), color=colour, marker=marker, ms=4, label=strategy
            )
            plotted = True
    axes.set_title("Test loss vs optimizer steps: decay the rate or grow the batch")
    axes.set_xlabel("optimizer steps (mean per client, cumulative)")
    axes.set_ylabel("Mean clean test loss")
    axes.grid(alpha=0.3)
    if plotted:
        axes.legend(loc="best", fontsize="small")
    else:
        _no_data(axes, "no round recorded a test loss and a step count")
    return _save(figure, path)


def _plot_rate_vs_batch(run: dict[str, Any], path: Path) -> Path:
    figure = _new_figure()
    axes = figure.add_subplot()
    strategies = list(run["batches"])
    points: list[tuple[float, float]] = []
    for index, strategy in enumerate(strategies):
        colour, marker = run["colours"][strategy]
        data = run["batches"][strategy]
        pairs = [(batch, data["rates"].get(pid)) for pid, batch in data["own"].items()]
        pairs = [(b, lr) for b, lr in pairs if lr is not None and b > 0 and lr > 0]
        if not pairs:
            continue
        # A log axis: dodge by a factor, so that equal batches sit side by side.
        shift = math.exp(_dodge(index, len(strategies), 0.04))
        axes.scatter(
            [b * shift for b, _ in pairs],
            [lr for _, lr in pairs],
            color=colour,
            marker=marker,
            s=42,
            alpha=0.85,
            label=strategy,
        )
        points.extend(pairs)
    if points:
        batches, rates = np.array(points).T
        middle_batch, middle_rate = float(np.median(batches)), float(np.median(rates))
        line_x = np.geomspace(batches.min() / 1.2, batches.max() * 1.2, 50)
        axes.plot(
            line_x,
            middle_rate * line_x / middle_batch,
            color="0.4",
            ls="--",
            lw=1,
            label="slope 1 (linear rule) through the median",
        )
        axes.set_xscale("log")
        axes.set_yscale("log")
        # Plain batch sizes (8, 16, 64) rather than 10¹ on the few decades batches span.
        axes.xaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
        axes.xaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))
        axes.legend(loc="best", fontsize="small")
    else:
        _no_data(axes, "no client reported a batch size and a rate")
    axes.set_title("Final learning rate vs the client's own batch size")
    axes.set_xlabel("Client's own batch size (log)")
    axes.set_ylabel("Client learning rate, last round (log)")
    axes.grid(alpha=0.3, which="both")
    return _save(figure, path)


def _plot_continual_R(run: dict[str, Any], path: Path) -> Path:
    blocks = run["continual"]
    columns = min(len(blocks), 3)
    rows = math.ceil(len(blocks) / columns)
    tasks = max((len(d["R"]) for d in blocks.values() if d["R"] is not None), default=1)
    side = 1.2 + 0.45 * max(tasks, 4)  # inches per subplot: room for a number in every cell
    figure = _new_figure((columns * side + 1.2, rows * side + 0.5))
    grid = figure.subplots(rows, columns, squeeze=False)
    image = None
    for axes, (strategy, data) in zip(grid.flat, blocks.items(), strict=False):
        colour, _ = run["colours"][strategy]
        suffix = " (rounds.jsonl)" if data["from_rounds"] else ""
        axes.set_title(f"{strategy}{suffix}", fontsize="small", color=colour)
        matrix = data["R"]
        if matrix is None or not np.isfinite(matrix).any():
            _no_data(axes, "no accuracy matrix")
            axes.set_xticks([])
            axes.set_yticks([])
            continue
        # NaN (not measured) cells are left blank.
        image = axes.imshow(matrix, cmap="viridis", vmin=0.0, vmax=1.0)
        labels = [str(t + 1) for t in range(len(matrix))]
        axes.set_xticks(range(len(matrix)), labels)
        axes.set_yticks(range(len(matrix)), labels)
        axes.set_xlabel("task j", fontsize="small")
        axes.set_ylabel("after task i", fontsize="small")
        if len(matrix) <= 10:
            size = "small" if len(matrix) <= 6 else "x-small"
            for (i, j), value in np.ndenumerate(matrix):
                if np.isfinite(value):
                    # Dark cells (low accuracy in viridis) get white text.
                    axes.text(
                        j,
                        i,
                        f"{100 * value:.0f}",
                        ha="center",
                        va="center",
                        fontsize=size,
                        color="white" if value < 0.6 else "black",
                    )
    for axes in grid.flat[len(blocks) :]:
        axes.set_visible(False)
    if image is not None:
        colour_bar = figure.colorbar(image, ax=grid, shrink=0.8)
        colour_bar.ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
        colour_bar.set_label("Accuracy on task j")
    figure.suptitle("Accuracy matrix R (%): row i after training through task i, column task j")
    return _save(figure, path)


def _plot_rate_per_round(run: dict[str, Any], path: Path) -> Path:
    figure = _new_figure()
    axes = figure.add_subplot()
    plotted = False
    strategies = list(run["continual"])
    for index, strategy in enumerate(strategies):
        colour, marker = run["colours"][strategy]
        rates = run["continual"][strategy]["rates"]
        if rates:
            # Strategies with the same schedule send the same rates: dodge them apart.
            shift = _dodge(index, len(strategies), 0.1)
            axes.plot(
                [r + shift for r, _ in rates],
                [lr for _, lr in rates],
                color=colour,
                marker=marker,
                ms=4,
                alpha=0.85,
                label=strategy,
            )
            plotted = True
    starts: list[list[int]] = next(
        (data["starts"] for data in run["continual"].values() if data["starts"]), []
    )
    staggered = any(row != starts[0] for row in starts)
    later = [start for start in starts[0] if start > 1] if starts else []
    for index, start in enumerate(later):
        label = "task start" + (" (client 0)" if staggered else "") if index == 0 else None
        axes.axvline(start, color="0.4", ls=":", lw=1.2, label=label)
    axes.set_title("Mean learning rate sent per round")
    axes.set_xlabel("Server round")
    axes.set_ylabel("Mean client learning rate")
    axes.grid(alpha=0.3)
    if plotted:
        axes.set_ylim(bottom=0)
        axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        _no_data(axes, "no round recorded a learning rate")
    return _save(figure, path)


# ------------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------------


def render_report(run_dir: Path | str) -> Path:
    """Write ``report.md``, ``results.csv`` and the three PNGs of a run into its directory.

    A graph run (strategies with degree data) also gets ``degree_quartiles.png`` and
    ``degree_gradients.png``. A tabular run with batch data to show (clients of several batch
    sizes, a ``+coupled`` or ``+grow-batch`` strategy, ``lr-decay-rounds``, or a measured noise
    scale) gets a "Batch size and noise scale" section, ``loss_vs_steps.png`` and
    ``rate_vs_batch.png``, and ``noise_scale.png`` when some strategy measured
    ``B_simple = tr(Σ)/|G|²``; other runs get neither. A continual run (a ``stream``) gets a
    "Continual learning" section, ``continual_R.png`` and ``rate_per_round.png``.

    Works on a finished run (``results.json``) and on an unfinished one (``rounds.jsonl`` only:
    the summary then comes from the last round of each strategy, as the report says).
    Rendering twice gives the same files.

    Parameters
    ----------
    run_dir : Path or str
        The run directory.

    Returns
    -------
    Path
        The path of ``report.md``.

    Raises
    ------
    ValueError
        If the directory holds neither ``results.json`` nor a readable ``rounds.jsonl`` line.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir}: not a run directory")
    run = _load_run(run_dir)
    _plot_accuracy_per_round(run, run_dir / ACCURACY_PER_ROUND_PNG)
    _plot_accuracy_vs_noise(run, run_dir / ACCURACY_VS_NOISE_PNG)
    _plot_rate_vs_noise(run, run_dir / RATE_VS_NOISE_PNG)
    if run["degree"]:
        _plot_degree_quartiles(run, run_dir / DEGREE_QUARTILES_PNG)
        _plot_degree_gradients(run, run_dir / DEGREE_GRADIENTS_PNG)
    if run["batches"]:
        if _measured_noise(run):
            _plot_noise_scale(run, run_dir / NOISE_SCALE_PNG)
        _plot_loss_vs_steps(run, run_dir / LOSS_VS_STEPS_PNG)
        _plot_rate_vs_batch(run, run_dir / RATE_VS_BATCH_PNG)
    if run["continual"]:
        _plot_continual_R(run, run_dir / CONTINUAL_R_PNG)
        _plot_rate_per_round(run, run_dir / RATE_PER_ROUND_PNG)
    _write_csv(run_dir, run)
    path = run_dir / REPORT_FILE
    path.write_text(_markdown(run), encoding="utf-8")
    return path
