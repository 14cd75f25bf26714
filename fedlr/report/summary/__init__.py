"""The one summary of a run the report renders, the same shape for a finished and a killed run.

Finished strategies come from ``results.json``; a strategy missing there (a run killed mid-way)
from :func:`fedlr.analysis.summarize` of ``rounds.jsonl``, the summary ``results.json`` is
written from, over the rounds it logged. Each feature's data (degree, batches, continual) is read
by its own module, from those entries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedlr.analysis import is_round, read_log, summarize
from fedlr.metrics.classification import NAMES as METRIC_NAMES
from fedlr.report.files import load_config, load_results
from fedlr.report.summary.batches import batches_from_results, shows_batches
from fedlr.report.summary.clients import client_sort_key, summaries_from_results
from fedlr.report.summary.continual import continual_from_results
from fedlr.report.summary.degree import degree_from_results
from fedlr.report.values import num

__all__ = ["load_run"]

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">")


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


def load_run(run_dir: Path) -> dict[str, Any]:
    """Collect everything the report needs, in one shape for finished and unfinished runs.

    Parameters
    ----------
    run_dir : Path
        The run directory.

    Returns
    -------
    dict
        The run's name, seed and settings, its strategies in order, each strategy's summary
        (clients and fairness), the rounds, and the degree, batch and continual data of the
        strategies that have some (each empty when the run has none to show).

    Raises
    ------
    ValueError
        If the directory holds neither ``results.json`` nor a readable ``rounds.jsonl`` line.
    """
    config = load_config(run_dir)
    results = load_results(run_dir)
    lines = read_log(Path(run_dir) / "rounds.jsonl")
    rounds = [line for line in lines if is_round(line)]
    if results is None and not rounds:
        raise ValueError(
            f"{run_dir}: nothing to report (no results.json and no readable line in rounds.jsonl)"
        )
    # Finished strategies from results.json; a strategy cut off mid-run summarised from its log.
    finished = dict(results["strategies"]) if results is not None else {}
    unfinished = [line for line in lines if line["strategy"] not in finished]
    entries = {**summarize(unfinished, config), **finished}
    summaries = summaries_from_results(entries)
    for name, summary in summaries.items():
        summary["clients"].sort(key=client_sort_key)
        own = [line for line in rounds if line["strategy"] == name]
        if name not in finished and own:  # where it stopped, and who did not reply there
            last = max(own, key=lambda line: line["round"])
            summary.update(round=last["round"], missing=list(last.get("missing") or []))
    order = [s for s in _strategy_order(results, rounds, config) if s in summaries]
    degree = degree_from_results(entries)
    batches = batches_from_results(entries, config)
    blocks = continual_from_results(entries, unfinished=set(entries) - set(finished))
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
        "base_lr": num(config.get("lr")),
        "finished": results is not None and all(s in finished for s in order),
        # strategies with rounds but no summary (a log written before fedlr logged events)
        "unsummarized": [s for s in _strategy_order(None, rounds, {}) if s not in summaries],
        "strategies": order,
        "summaries": {s: summaries[s] for s in order},
        "rounds": rounds,
        "degree": {s: degree[s] for s in order if s in degree},  # empty unless a graph run
        # empty unless a tabular run with several batch sizes, a batch rule or a noise scale
        "batches": batches if shows_batches(batches) else {},
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
