"""Accuracy matrix, transfer metrics and rates per round of a continual run (a stream).

From a strategy's ``results.json`` entry (``continual``); its schedule and replay from its name
(``fedavg+phases+replay``) where an older entry lacks them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from fedlr.config import ConfigError, schedule_of, uses_modifier
from fedlr.report.values import num


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


def continual_from_results(
    entries: Mapping[str, dict[str, Any]], unfinished: Collection[str] = ()
) -> dict[str, dict[str, Any]]:
    """The continual block of each strategy whose results.json entry has one.

    A strategy in ``unfinished`` (cut off mid-run) is marked ``from_rounds``.
    """
    blocks = {}
    for strategy, entry in entries.items():
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
            "from_rounds": strategy in unfinished,
        }
    return blocks
