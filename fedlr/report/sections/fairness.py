"""The "Summary" section: one row of fairness numbers per strategy, and accuracy per round.

The fairness columns (mean, variance, worst/best 10%, Jain, Gini) are of the run's
``fairness-metric`` (accuracy by default; for ``loss`` the worst clients are those of highest
loss, :func:`fedlr.metrics.fairness.metric_fairness_summary`); the clean−noisy gap and Spearman
ρ against the true noise appear only where some client knows its truth.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from matplotlib.ticker import MaxNLocator

from fedlr.metrics.classification import higher_is_better
from fedlr.report.figures import new_figure, no_data, save
from fedlr.report.markdown import fmt, metric_text, percent, percent_scale, table
from fedlr.report.values import num

ACCURACY_PER_ROUND_PNG = "accuracy_per_round.png"

# (header, value of a summary, format, which value is best: +1 highest, -1 lowest, 0 closest to 0)
_SUMMARY_COLUMNS: tuple[tuple[str, Callable[[dict], float | None], Callable, int], ...] = (
    ("Mean acc. (%)", lambda s: s["fairness"].get("mean"), percent, 1),
    ("Variance (%²)", lambda s: s["fairness"].get("variance"), lambda v: fmt(v, ".1f", 1e4), -1),
    ("Worst-10% (%)", lambda s: s["fairness"].get("worst10"), percent, 1),
    ("Best-10% (%)", lambda s: s["fairness"].get("best10"), percent, 1),
    ("Jain", lambda s: s["fairness"].get("jain"), lambda v: fmt(v, ".3f"), 1),
    ("Gini", lambda s: s["fairness"].get("gini"), lambda v: fmt(v, ".3f"), -1),
    ("Clean−noisy gap (pp)", lambda s: s["gap_clean_noisy"], percent, 0),
    ("Spearman ρ", lambda s: s["spearman"], lambda v: fmt(v, ".2f"), 1),
)

# The fairness-metric's name in the summary table's header.
_METRIC_SHORT = {"accuracy": "acc.", "balanced-accuracy": "bal. acc.", "auroc": "AUROC", "f1": "F1"}


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
    if percent_scale(metric):
        return ((f"Mean {short} (%)", *fairness[0][1:]), *fairness[1:], *truth)
    three = lambda v: fmt(v, ".3f")  # noqa: E731
    return (
        (f"Mean {short}", fairness[0][1], three, -1),
        ("Variance", fairness[1][1], lambda v: fmt(v, ".4f"), -1),
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
        unit = ", in percent" if percent_scale(metric) else ""
        words = f"Fairness columns are of each client's {metric_text(metric)} on its {clean}test "
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
    """One row per strategy; the best value of each column in bold."""
    strategies = run["strategies"]
    columns = _summary_columns(run)
    cells: dict[str, list[str]] = {s: [] for s in strategies}
    for _, value_of, formatter, direction in columns:
        values = {s: num(value_of(run["summaries"][s])) for s in strategies}
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
    return table(header, rows, "l" + "r" * len(columns))


def _plot_accuracy_per_round(run: dict[str, Any], path: Path) -> Path:
    """Mean (solid) and worst-10% (dashed) client accuracy per round, per strategy."""
    figure = new_figure()
    axes = figure.add_subplot()
    plotted = False
    for strategy in run["strategies"]:
        by_round: dict[float, dict[str, Any]] = {}
        for record in run["rounds"]:
            round_number = num(record.get("round"))
            if record["strategy"] == strategy and round_number is not None:
                by_round[round_number] = record
        points = sorted(by_round.items())
        colour, marker = run["colours"][strategy]
        mean = [(r, num(rec.get("accuracy_mean"))) for r, rec in points]
        worst = [(r, num(rec.get("accuracy_worst10"))) for r, rec in points]
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
        no_data(axes, "rounds.jsonl holds no round")
    return save(figure, path)


def render(run: dict[str, Any], run_dir: Path) -> list[str]:
    """Write ``accuracy_per_round.png``; return the "Summary" section.

    Parameters
    ----------
    run : dict
        The run's summary (:func:`fedlr.report.summary.load_run`).
    run_dir : Path
        The run directory, where the figure goes.

    Returns
    -------
    list of str
        The section's markdown lines.
    """
    _plot_accuracy_per_round(run, run_dir / ACCURACY_PER_ROUND_PNG)
    estimators = sorted({s["estimator"] for s in run["summaries"].values() if s["estimator"]})
    rho = f" between noise estimate ({', '.join(estimators)}) and true noise" if estimators else ""
    lines = ["## Summary", ""]
    lines += _summary_table(run)
    lines += [
        "",
        _summary_note(run, rho),
        "",
        f"![Mean client accuracy per round]({ACCURACY_PER_ROUND_PNG})",
        "",
    ]
    return lines
