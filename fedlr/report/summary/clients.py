"""Each strategy's clients and fairness, from ``results.json`` or from its last logged round.

A client's role and true noise are absent (None) where it has no truth (a real site).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fedlr.config import split_list
from fedlr.metrics.fairness import clean_noisy_gap, metric_fairness_summary, spearman_rho
from fedlr.report.values import num


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
    return {str(k): v for k, v in ((k, num(v)) for k, v in raw.items()) if v is not None}


def metric_value(client: dict[str, Any], metric: str) -> float | None:
    """A normalised client's value of ``metric`` (accuracy or one of its ``metrics``)."""
    return client["accuracy"] if metric == "accuracy" else client["metrics"].get(metric)


def _wants_loss(config: dict[str, Any]) -> bool:
    """Whether the run's ``metrics`` or ``fairness-metric`` names the loss (eval_loss)."""
    names = split_list(str(config.get("metrics", "")))
    return config.get("fairness-metric") == "loss" or "loss" in names


def _last_rounds(rounds: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Return the record of the highest round of each strategy (the later line wins a tie)."""
    last: dict[str, dict[str, Any]] = {}
    for record in rounds:
        current = last.get(record["strategy"])
        round_number = num(record.get("round")) or 0.0
        if current is None or round_number >= (num(current.get("round")) or 0.0):
            last[record["strategy"]] = record
    return last


def summaries_from_results(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each finished strategy's clients, fairness, gap and Spearman ρ, as results.json has them."""
    summaries = {}
    for strategy, entry in results["strategies"].items():
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


def summaries_from_rounds(
    rounds: list[dict[str, Any]], config: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """The same summaries, of each strategy's last round in rounds.jsonl (a run cut off)."""
    metric = str(config.get("fairness-metric", "accuracy"))
    summaries = {}
    for strategy, record in _last_rounds(rounds).items():
        clients = []
        for client in record.get("clients") or []:
            # The smoothed estimate is what the rate rule reads; fall back to the raw one.
            estimate = num(client.get("noise_smoothed"))
            if estimate is None:
                estimate = num(client.get("noise_estimate"))
            metrics = _metrics(client.get("metrics"))
            loss = num(client.get("eval_loss"))
            if _wants_loss(config) and loss is not None:
                metrics["loss"] = loss
            clients.append(
                {
                    "partition_id": client.get("partition_id"),
                    "role": client.get("role"),
                    "noise_true": num(client.get("noise_true")),
                    "noise_estimate": estimate,
                    "lr": num(client.get("lr")),
                    "accuracy": num(client.get("accuracy")),
                    "num_examples": None,
                    "metrics": metrics,
                }
            )
        fairness = _fairness([metric_value(c, metric) for c in clients], metric)
        # Prefer what the run itself logged for the two numbers it logs (of accuracy).
        for key, logged in (("mean", "accuracy_mean"), ("worst10", "accuracy_worst10")):
            if metric == "accuracy" and num(record.get(logged)) is not None:
                fairness[key] = num(record.get(logged))
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
            "gap_clean_noisy": num(gap),
            "spearman": num(rho),
            "estimator": None,
            "clients": clients,
            "round": record.get("round"),
            "missing": list(record.get("missing") or []),
        }
    return summaries


def client_sort_key(client: dict[str, Any]) -> tuple[int, str]:
    """Clients in partition order; a non-integer partition id after the integer ones."""
    partition_id = client.get("partition_id")
    if isinstance(partition_id, int):
        return (partition_id, "")
    return (1 << 30, str(partition_id))
