"""Each strategy's clients and fairness, from its ``results.json`` entry.

A client's role and true noise are absent (None) where it has no truth (a real site).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedlr.report.values import num


def _metrics(raw: Any) -> dict[str, float]:
    """A client's ``metrics`` table (name -> finite value); empty when missing or malformed."""
    if not isinstance(raw, dict):
        return {}
    return {str(k): v for k, v in ((k, num(v)) for k, v in raw.items()) if v is not None}


def metric_value(client: dict[str, Any], metric: str) -> float | None:
    """A normalised client's value of ``metric`` (accuracy or one of its ``metrics``)."""
    return client["accuracy"] if metric == "accuracy" else client["metrics"].get(metric)


def summaries_from_results(entries: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each strategy's clients, fairness, gap and Spearman ρ, from its results.json entry."""
    summaries = {}
    for strategy, entry in entries.items():
        fairness = entry.get("fairness") or {}
        estimator = entry.get("estimator") or {}
        clients = [
            {
                "partition_id": client.get("partition_id"),
                "role": client.get("role"),
                "noise_true": num(client.get("noise_true")),
                "noise_estimate": num(client.get("noise_estimate")),
                "lr": num(client.get("lr")),
                "accuracy": num(client.get("accuracy")),
                "num_examples": client.get("num_examples"),
                "metrics": _metrics(client.get("metrics")),
            }
            for client in entry.get("clients") or []
        ]
        summaries[strategy] = {
            "fairness": {key: num(value) for key, value in fairness.items()},
            "gap_clean_noisy": num(entry.get("gap_clean_noisy")),
            "spearman": num(estimator.get("spearman")),
            "estimator": estimator.get("name"),
            "clients": clients,
            "round": None,
            "missing": [],
        }
    return summaries


def client_sort_key(client: dict[str, Any]) -> tuple[int, str]:
    """Clients in partition order; a non-integer partition id after the integer ones."""
    partition_id = client.get("partition_id")
    if isinstance(partition_id, int):
        return (partition_id, "")
    return (1 << 30, str(partition_id))
