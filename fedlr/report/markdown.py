"""Markdown helpers the sections share: number formats, tables and metric names in words."""

from __future__ import annotations

from collections.abc import Sequence

from fedlr.metrics.classification import NAMES as METRIC_NAMES
from fedlr.metrics.classification import higher_is_better

NA = "n/a"

# The fairness-metric's name in text.
_METRIC_TEXT = {"balanced-accuracy": "balanced accuracy", "auroc": "AUROC", "f1": "F1"}


def fmt(value: float | None, spec: str, scale: float = 1.0) -> str:
    """Format ``value * scale`` with ``spec``; ``n/a`` for a missing value."""
    return NA if value is None else format(value * scale, spec)


def percent(value: float | None) -> str:
    """A fraction in percent with one decimal (``0.775`` -> ``77.5``)."""
    return fmt(value, ".1f", 100.0)


def table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> list[str]:
    """Format a markdown table; ``align`` holds one of ``l``/``r`` per column."""
    rule = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return lines


def metric_text(metric: str) -> str:
    """The name of ``metric`` in text (``balanced-accuracy``: balanced accuracy)."""
    return _METRIC_TEXT.get(metric, metric)


def percent_scale(metric: str) -> bool:
    """Whether ``metric`` is a score in [0, 1], shown in percent (the loss is shown as it is)."""
    return metric in METRIC_NAMES and higher_is_better(metric)
