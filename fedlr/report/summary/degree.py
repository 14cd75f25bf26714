"""Degree fairness of a graph run: per-quartile accuracy and gradient slopes per strategy.

From ``results.json`` (``degree``) or, for a strategy cut off, from the rounds' ``degree_fairness``
and ``gradient_slope``, with its optimizer and degree rule from its name and ``config.toml``
(``fedavg+adam+degree``: adam, ``degree-gamma``).
"""

from __future__ import annotations

from typing import Any

from fedlr.report.values import num, settings_from_name

QUARTILES = 4  # degree buckets: global-degree quartiles Q1 (lowest) .. Q4


def _degree_fairness(raw: Any) -> dict[str, Any] | None:
    """Normalise a ``degree_fairness`` dict (None when missing); buckets padded to four."""
    if not isinstance(raw, dict):
        return None

    def four(values: Any) -> list[float | None]:
        values = [num(v) for v in values] if isinstance(values, list) else []
        return (values + [None] * QUARTILES)[:QUARTILES]

    edges = [num(e) for e in raw.get("bucket-edges") or []]
    return {
        "accuracy": num(raw.get("accuracy")),
        "buckets": four(raw.get("bucket-accuracy")),
        "sizes": [None if n is None else int(n) for n in four(raw.get("bucket-size"))],
        "edges": edges if len(edges) == QUARTILES - 1 and None not in edges else None,
        "jain": num(raw.get("jain")),
        "worst": num(raw.get("worst")),
    }


def degree_from_results(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The degree data of each finished strategy that has some."""
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
            "gamma": num(raw.get("gamma")) if raw.get("degree_rule") else None,
            "fairness": _degree_fairness(raw.get("fairness")),
            # One entry per recorded round, rounds 1, 2, ...
            "slopes": [(i + 1, num(before[i]), num(after[i])) for i in range(count)],
            "profile": profile if isinstance(profile, dict) else None,
        }
    return degree


def degree_from_rounds(
    rounds: list[dict[str, Any]], config: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """The same data from rounds.jsonl, for each strategy with a degree line."""
    by_strategy: dict[str, dict[float, dict[str, Any]]] = {}
    for record in rounds:
        round_number = num(record.get("round"))
        if round_number is None or not ("degree_fairness" in record or "gradient_slope" in record):
            continue
        by_strategy.setdefault(record["strategy"], {})[round_number] = record
    degree = {}
    for strategy, by_round in by_strategy.items():
        records = [record for _, record in sorted(by_round.items())]
        optimizer, gamma = settings_from_name(strategy, config)
        # As results.json does: the last round that evaluated degree fairness.
        fairness = [_degree_fairness(r.get("degree_fairness")) for r in records]
        slopes = []
        for record in records:
            slope = record.get("gradient_slope") or {}
            slopes.append((record["round"], num(slope.get("before")), num(slope.get("after"))))
        degree[strategy] = {
            "optimizer": optimizer,
            "gamma": gamma,
            "fairness": next((f for f in reversed(fairness) if f is not None), None),
            "slopes": slopes,
            "profile": None,  # written to results.json only
        }
    return degree
