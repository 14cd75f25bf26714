"""The "Continual learning" section of a stream run, and two plots.

A continual run (``stream`` other than ``none``: each client learns ``num-tasks`` tasks in turn)
gets the accuracy matrix ``R`` of each strategy as a heat-map, and the mean learning rate sent per
round with the task starts marked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import MaxNLocator, PercentFormatter

from fedlr.report.figures import dodge, new_figure, no_data, save
from fedlr.report.markdown import NA, fmt, percent, table

CONTINUAL_R_PNG = "continual_R.png"
RATE_PER_ROUND_PNG = "rate_per_round.png"

_FORGETTING_REFERENCE = "fedavg"  # forgetting is compared with fedavg's at a constant rate


def _rounds_text(rounds: Sequence[Any]) -> str:
    """``1, 6 and 11``: a list of rounds in words."""
    words = [str(r) for r in rounds]
    if len(words) <= 1:
        return words[0] if words else NA
    return f"{', '.join(words[:-1])} and {words[-1]}"


def _arrival_text(starts: list[list[int]]) -> str:
    """Where the tasks start: together (one row of rounds) or staggered (first and last client).

    ``starts[k]`` holds the first round of each task at partition ``k``.

    Examples
    --------
    >>> _arrival_text([[1, 6, 11], [1, 6, 11]])
    'together at every client, in rounds 1, 6 and 11'
    >>> _arrival_text([[1, 6], [1, 8], [1, 10]])
    'staggered: in rounds 1 and 6 at client 0, up to rounds 1 and 10 at client 2 (the last)'
    """
    if not starts:
        return "in rounds not recorded"
    if all(row == starts[0] for row in starts):
        return f"together at every client, in rounds {_rounds_text(starts[0])}"
    return (
        f"staggered: in rounds {_rounds_text(starts[0])} at client 0, up to rounds "
        f"{_rounds_text(starts[-1])} at client {len(starts) - 1} (the last)"
    )


def _relative_forgetting(blocks: dict[str, dict[str, Any]]) -> dict[str, float | None] | None:
    """Each strategy's forgetting relative to ``fedavg``'s at a constant rate (-0.25: 25% less).

    None when the run has no constant-rate ``fedavg``; a value is None when either forgetting is
    unknown, or ``fedavg`` forgot nothing (no forgetting to compare with).
    """
    reference = blocks.get(_FORGETTING_REFERENCE)
    if reference is None or reference["schedule"] != "constant":
        return None
    base = reference["forgetting"]
    return {
        strategy: None
        if base is None or base <= 0 or data["forgetting"] is None
        else data["forgetting"] / base - 1
        for strategy, data in blocks.items()
    }


def _continual_section(run: dict[str, Any]) -> list[str]:
    """One row per strategy: schedule, replay, ACC, LA, BWT, FWT and forgetting."""
    blocks = run["continual"]
    first = next(iter(blocks.values()))
    starts: list[list[int]] = next(
        (data["starts"] for data in blocks.values() if data["starts"]), []
    )
    tasks = NA if first["num_tasks"] is None else first["num_tasks"]
    relative = _relative_forgetting(blocks)
    rows = []
    for strategy, data in blocks.items():
        row = [
            f"`{strategy}`",
            data["schedule"],
            "yes" if data["replay"] else "no",
            percent(data["acc"]),
            percent(data["ensemble_acc"]),
            percent(data["learning_acc"]),
            percent(data["bwt"]),
            percent(data["fwt"]),
            percent(data["forgetting"]),
        ]
        if relative is not None:
            reference = strategy == _FORGETTING_REFERENCE
            row.append("reference" if reference else fmt(relative[strategy], "+.0%"))
        rows.append(row)
    header = [
        "Strategy",
        "Schedule",
        "Replay",
        "ACC, final model (%)",
        "ACC, snapshot ensemble (%)",
        "LA (%)",
        "BWT (pp)",
        "FWT (pp)",
        "Forgetting (pp)",
    ]
    if relative is not None:
        header.append(f"Forgetting vs `{_FORGETTING_REFERENCE}`")
    lines = [
        "## Continual learning",
        "",
        f"Stream `{first['stream'] or NA}`: each client learns {tasks} tasks in turn; they start "
        f"{_arrival_text(starts)}.",
        "",
    ]
    lines += table(header, rows, "lll" + "r" * (len(header) - 3))
    lines += [
        "",
        "R[i][j] is the accuracy on task j after training through task i, pooled over clients "
        "(each client's column j weighted by its test examples of task j). ACC is the mean "
        "accuracy over all tasks (GEM, Lopez-Paz & Ranzato 2017) of the final model, and of the "
        "snapshot ensemble (the global models kept at the task ends, predictions averaged). LA "
        "is the learning accuracy (Riemer et al. 2019), the mean accuracy on each task just "
        "after training it: a schedule that stops learning forgets less but scores low. BWT "
        "(negative: forgetting) and FWT (against the untrained model) are GEM's backward and "
        "forward transfer; forgetting is Chaudhry et al. (2018)'s max-based forgetting, the mean "
        "drop of each earlier task from its best accuracy; all three in percentage points."
        + (
            f" Forgetting vs `{_FORGETTING_REFERENCE}` is relative to that of "
            f"`{_FORGETTING_REFERENCE}` at a constant rate."
            if relative is not None
            else ""
        ),
        "",
    ]
    unfinished = [strategy for strategy, data in blocks.items() if data["from_rounds"]]
    if unfinished:
        names = ", ".join(f"`{s}`" for s in unfinished)
        lines += [
            f"{names}: from rounds.jsonl (run not finished): a task not finished yet leaves its "
            "row empty, and the snapshot ensemble is unknown.",
            "",
        ]
    lines += [
        f"![Accuracy matrix R per strategy]({CONTINUAL_R_PNG})",
        "",
        f"![Mean learning rate per round]({RATE_PER_ROUND_PNG})",
        "",
    ]
    return lines


def _plot_continual_R(run: dict[str, Any], path: Path) -> Path:
    """Each strategy's accuracy matrix R as a heat-map, a number in every measured cell."""
    blocks = run["continual"]
    columns = min(len(blocks), 3)
    rows = math.ceil(len(blocks) / columns)
    tasks = max((len(d["R"]) for d in blocks.values() if d["R"] is not None), default=1)
    side = 1.2 + 0.45 * max(tasks, 4)  # inches per subplot: room for a number in every cell
    figure = new_figure((columns * side + 1.2, rows * side + 0.5))
    grid = figure.subplots(rows, columns, squeeze=False)
    image = None
    for axes, (strategy, data) in zip(grid.flat, blocks.items(), strict=False):
        colour, _ = run["colours"][strategy]
        suffix = " (rounds.jsonl)" if data["from_rounds"] else ""
        axes.set_title(f"{strategy}{suffix}", fontsize="small", color=colour)
        matrix = data["R"]
        if matrix is None or not np.isfinite(matrix).any():
            no_data(axes, "no accuracy matrix")
            axes.set_xticks([])
            axes.set_yticks([])
            continue
        # NaN (not measured) cells are left blank.
        image = axes.imshow(matrix, cmap="viridis", vmin=0.0, vmax=1.0)
        labels = [str(t + 1) for t in range(len(matrix))]
        axes.set_xticks(range(len(matrix)), labels)
        axes.set_yticks(range(len(matrix)), labels)
        axes.set_xlabel("task j", fontsize="small")
        axes.set_ylabel("after task i", fontsize="small")
        if len(matrix) <= 10:
            size = "small" if len(matrix) <= 6 else "x-small"
            for (i, j), value in np.ndenumerate(matrix):
                if np.isfinite(value):
                    # Dark cells (low accuracy in viridis) get white text.
                    axes.text(
                        j,
                        i,
                        f"{100 * value:.0f}",
                        ha="center",
                        va="center",
                        fontsize=size,
                        color="white" if value < 0.6 else "black",
                    )
    for axes in grid.flat[len(blocks) :]:
        axes.set_visible(False)
    if image is not None:
        colour_bar = figure.colorbar(image, ax=grid, shrink=0.8)
        colour_bar.ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
        colour_bar.set_label("Accuracy on task j")
    figure.suptitle("Accuracy matrix R (%): row i after training through task i, column task j")
    return save(figure, path)


def _plot_rate_per_round(run: dict[str, Any], path: Path) -> Path:
    """The mean learning rate sent per round, per strategy, with the task starts marked."""
    figure = new_figure()
    axes = figure.add_subplot()
    plotted = False
    strategies = list(run["continual"])
    for index, strategy in enumerate(strategies):
        colour, marker = run["colours"][strategy]
        rates = run["continual"][strategy]["rates"]
        if rates:
            # Strategies with the same schedule send the same rates: dodge them apart.
            shift = dodge(index, len(strategies), 0.1)
            axes.plot(
                [r + shift for r, _ in rates],
                [lr for _, lr in rates],
                color=colour,
                marker=marker,
                ms=4,
                alpha=0.85,
                label=strategy,
            )
            plotted = True
    starts: list[list[int]] = next(
        (data["starts"] for data in run["continual"].values() if data["starts"]), []
    )
    staggered = any(row != starts[0] for row in starts)
    later = [start for start in starts[0] if start > 1] if starts else []
    for index, start in enumerate(later):
        label = "task start" + (" (client 0)" if staggered else "") if index == 0 else None
        axes.axvline(start, color="0.4", ls=":", lw=1.2, label=label)
    axes.set_title("Mean learning rate sent per round")
    axes.set_xlabel("Server round")
    axes.set_ylabel("Mean client learning rate")
    axes.grid(alpha=0.3)
    if plotted:
        axes.set_ylim(bottom=0)
        axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        no_data(axes, "no round recorded a learning rate")
    return save(figure, path)


def render(run: dict[str, Any], run_dir: Path) -> list[str]:
    """Write the two continual plots and return the section; nothing for a run without a stream.

    Parameters
    ----------
    run : dict
        The run's summary (:func:`fedlr.report.summary.load_run`).
    run_dir : Path
        The run directory, where the figures go.

    Returns
    -------
    list of str
        The section's markdown lines (empty unless a continual run).
    """
    if not run["continual"]:
        return []
    _plot_continual_R(run, run_dir / CONTINUAL_R_PNG)
    _plot_rate_per_round(run, run_dir / RATE_PER_ROUND_PNG)
    return _continual_section(run)
