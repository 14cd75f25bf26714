"""The "Degree fairness" section of a graph run (dataset cora, karate or ba), and two plots.

Accuracy per global-degree quartile, and the gradient norm vs degree before and after the
degree scales.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import LogFormatter, MaxNLocator

from fedlr.report.figures import dodge, new_figure, no_data, save
from fedlr.report.markdown import NA, fmt, percent, table
from fedlr.report.summary.degree import QUARTILES

DEGREE_QUARTILES_PNG = "degree_quartiles.png"
DEGREE_GRADIENTS_PNG = "degree_gradients.png"


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
        return [""] * QUARTILES
    ranges = [f"≤ {math.floor(edges[0])}"]
    for low_edge, high_edge in zip(edges, edges[1:], strict=False):
        low, high = math.floor(low_edge) + 1, math.floor(high_edge)
        ranges.append("empty" if low > high else str(low) if low == high else f"{low}–{high}")
    return ranges + [f"≥ {math.floor(edges[-1]) + 1}"]


def _slopes_text(slope: tuple[Any, float | None, float | None] | None) -> str:
    """A gradient slope before → after the degree scales."""
    if slope is None:
        return NA
    return f"{fmt(slope[1], '.2f')} → {fmt(slope[2], '.2f')}"


def _degree_section(run: dict[str, Any]) -> list[str]:
    """One row per strategy, the quartiles' degree ranges, and the two figures."""
    degree = run["degree"]
    rows = []
    for strategy, data in degree.items():
        fairness = data["fairness"] or {}
        buckets = fairness.get("buckets") or [None] * QUARTILES
        slopes = data["slopes"]
        rows.append(
            [
                f"`{strategy}`",
                str(data["optimizer"] or NA),
                "-" if data["gamma"] is None else f"γ = {data['gamma']:g}",
                percent(fairness.get("accuracy")),
                *(percent(b) for b in buckets),
                fmt(fairness.get("jain"), ".3f"),
                percent(fairness.get("worst")),
                _slopes_text(slopes[0] if slopes else None),
                _slopes_text(slopes[-1] if slopes else None),
            ]
        )
    header = [
        "Strategy",
        "Optimizer",
        "Degree rule",
        "Accuracy (%)",
        *(f"Q{q + 1} (%)" for q in range(QUARTILES)),
        "Jain",
        "Worst Q (%)",
        "Grad. slope, round 1",
        "Grad. slope, last round",
    ]
    lines = ["## Degree fairness", ""]
    lines += table(header, rows, "lll" + "r" * (len(header) - 3))
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


def _plot_degree_quartiles(run: dict[str, Any], path: Path) -> Path:
    """Bars of each strategy's accuracy per global-degree quartile."""
    figure = new_figure()
    axes = figure.add_subplot()
    scored = {s: d["fairness"] for s, d in run["degree"].items() if d["fairness"] is not None}
    edges = next((f["edges"] for f in scored.values() if f["edges"] is not None), None)
    width = 0.8 / max(len(scored), 1)
    for index, (strategy, fairness) in enumerate(scored.items()):
        colour, _ = run["colours"][strategy]
        bars = [(q, 100 * a) for q, a in enumerate(fairness["buckets"]) if a is not None]
        if bars:
            xs = [q + dodge(index, len(scored), width) for q, _ in bars]
            axes.bar(xs, [a for _, a in bars], width=width, color=colour, label=strategy)
    ranges = _quartile_ranges(edges)
    axes.set_xticks(
        range(QUARTILES),
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
        no_data(axes, "no strategy evaluated degree fairness")
    return save(figure, path)


def _loglog_fit(x: np.ndarray, y: np.ndarray, weight: np.ndarray) -> tuple[float, float] | None:
    """Weighted least squares of log y on log x: (slope, intercept), or None if undefined."""
    if x.size < 2 or np.all(x == x[0]):
        return None
    # polyfit weights multiply the residuals: sqrt(count) weighs each node once.
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1, w=np.sqrt(weight))
    return float(slope), float(intercept)


def _plot_degree_gradients(run: dict[str, Any], path: Path) -> Path:
    """The gradient norm per degree (round 1), and the log-log slope per round."""
    figure = new_figure((12.0, 4.8))
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
        no_data(profile_axes, "no gradient profile (results.json missing)")
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
        no_data(slope_axes, "no gradient slope recorded")
    return save(figure, path)


def render(run: dict[str, Any], run_dir: Path) -> list[str]:
    """Write the two degree plots and return the section; nothing for a run without degree data.

    Parameters
    ----------
    run : dict
        The run's summary (:func:`fedlr.report.summary.load_run`).
    run_dir : Path
        The run directory, where the figures go.

    Returns
    -------
    list of str
        The section's markdown lines (empty unless a graph run).
    """
    if not run["degree"]:
        return []
    _plot_degree_quartiles(run, run_dir / DEGREE_QUARTILES_PNG)
    _plot_degree_gradients(run, run_dir / DEGREE_GRADIENTS_PNG)
    return _degree_section(run)
