"""Figure helpers the sections share: a pyplot-free figure, saving it, and dodging points."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_DPI = 120


def new_figure(size: tuple[float, float] = (7.5, 4.8)) -> Figure:
    """A figure of ``size`` inches on an Agg canvas, outside pyplot's global figure registry."""
    figure = Figure(figsize=size, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)  # Agg, without pyplot's global figure registry
    return figure


def save(figure: Figure, path: Path) -> Path:
    """Write ``figure`` to ``path`` as a PNG without a software stamp, then clear it."""
    figure.savefig(path, dpi=_DPI, metadata={"Software": None})
    figure.clear()
    return path


def no_data(axes: Any, message: str) -> None:
    """Write ``message`` in grey in the middle of an empty plot."""
    axes.text(0.5, 0.5, message, ha="center", va="center", transform=axes.transAxes, color="0.4")


def dodge(index: int, count: int, span: float) -> float:
    """Offset x so that strategies at the same x do not hide each other."""
    return (index - (count - 1) / 2) * span
