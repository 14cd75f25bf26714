"""Degree fairness of a graph run: per-quartile accuracy and gradient slopes per strategy.

From a strategy's ``results.json`` entry (``degree``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedlr.report.values import num

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


def degree_from_results(entries: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The degree data of each strategy whose results.json entry has some."""
    degree = {}
    for strategy, entry in entries.items():
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
