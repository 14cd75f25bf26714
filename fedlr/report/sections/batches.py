"""The "Batch size and noise scale" section of a tabular run, and up to three plots.

A tabular run whose clients train with several batch sizes, or with a batch rule (``+coupled``,
``+grow-batch``, ``lr-decay-rounds``), or that measured the gradient noise scale, gets this
section: ``B_simple`` per round (only when measured), mean test loss vs cumulative optimizer
steps, and each client's rate vs its own batch.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import LogFormatter, MaxNLocator

from fedlr.report.figures import dodge, new_figure, no_data, save
from fedlr.report.markdown import NA, fmt, table
from fedlr.report.values import last_value

NOISE_SCALE_PNG = "noise_scale.png"  # runs that measured the gradient noise scale only
LOSS_VS_STEPS_PNG = "loss_vs_steps.png"
RATE_VS_BATCH_PNG = "rate_vs_batch.png"


def _batch_sizes_text(own: dict[Any, float]) -> str:
    """Min–median–max of the clients' own batch sizes (one number when they are all equal).

    Examples
    --------
    >>> _batch_sizes_text({0: 8.0, 1: 16.0, 2: 16.0, 3: 64.0})
    '8–16–64'
    >>> _batch_sizes_text({0: 32.0, 1: 32.0}), _batch_sizes_text({})
    ('32', 'n/a')
    """
    if not own:
        return NA
    sizes = sorted(own.values())
    if sizes[0] == sizes[-1]:
        return f"{sizes[0]:g}"
    return f"{sizes[0]:g}–{float(np.median(sizes)):g}–{sizes[-1]:g}"


def _batch_rule_text(data: dict[str, Any]) -> str:
    """The rate rule of a strategy, and its step schedule (rate decay or batch growth)."""
    text = str(data["rule"] or "coupled") if data["coupled"] else "shared rate"
    rounds = data["decay_rounds"]
    if rounds:
        factor = data["decay_factor"]
        if data["grow_batch"]:
            step = "batch grows" if factor is None else f"batch ×{1 / factor:g}"
        else:
            step = "rate decays" if factor is None else f"rate ×{factor:g}"
        at = ", ".join(str(r) for r in rounds)
        text += f"; {step} at round{'s' if len(rounds) > 1 else ''} {at}"
    elif data["grow_batch"]:
        text += "; grow batch"
    return text


def _last_b_simple(noise: list[tuple[Any, float | None, float | None]]) -> float | None:
    """The last smoothed B_simple; the last per-round one if none was smoothed."""
    smoothed = last_value(point[1] for point in noise)
    return smoothed if smoothed is not None else last_value(point[2] for point in noise)


def _measured_noise(run: dict[str, Any]) -> bool:
    """Whether some strategy recorded a B_simple value (of any sign)."""
    return any(
        value is not None
        for data in run["batches"].values()
        for point in data["noise"]
        for value in point[1:]
    )


def _batch_section(run: dict[str, Any]) -> list[str]:
    """One row per strategy: batch sizes, rule, steps, final loss and last B_simple."""
    rows = [
        [
            f"`{strategy}`",
            _batch_sizes_text(data["own"]),
            _batch_rule_text(data),
            fmt(data["steps_total"], ".0f"),
            fmt(data["final_loss"], ".3f"),
            fmt(_last_b_simple(data["noise"]), ".3g"),
        ]
        for strategy, data in run["batches"].items()
    ]
    header = [
        "Strategy",
        "Batch sizes (min–median–max)",
        "Rule",
        "Optimizer steps (total)",
        "Final test loss",
        "Last B_simple",
    ]
    lines = ["## Batch size and noise scale", ""]
    lines += table(header, rows, "lllrrr")
    lines += [
        "",
        "Batch sizes are the clients' own; the rule is how a client's rate follows its batch "
        "(`+coupled`) or one rate for every batch, with the step schedule of lr-decay-rounds "
        "(`+grow-batch` grows the batch instead of decaying the rate). Optimizer steps are the "
        "mean local steps per trained client, summed over rounds; the test loss is the mean clean "
        "test loss over clients in the last round. B_simple = tr(Σ)/|G|² is the gradient noise "
        "scale of McCandlish et al. (2018), measured each round from the clients' gradients at "
        "the received weights (smoothed; a non-positive estimate is not plotted).",
        "",
    ]
    if _measured_noise(run):
        lines += [f"![Gradient noise scale per round]({NOISE_SCALE_PNG})", ""]
    lines += [
        f"![Test loss vs optimizer steps]({LOSS_VS_STEPS_PNG})",
        "",
        f"![Learning rate vs batch size]({RATE_VS_BATCH_PNG})",
        "",
    ]
    return lines


def _plot_noise_scale(run: dict[str, Any], path: Path) -> Path:
    """Smoothed (line) and per-round (faint) B_simple per round, on a log axis."""
    figure = new_figure()
    axes = figure.add_subplot()
    plotted = False
    for strategy, data in run["batches"].items():
        colour, marker = run["colours"][strategy]
        # A log axis: non-positive estimates (tr(Σ) estimated below 0) are left out.
        smoothed = [(r, s) for r, s, _ in data["noise"] if s is not None and s > 0]
        per_round = [(r, b) for r, _, b in data["noise"] if b is not None and b > 0]
        if smoothed:
            axes.plot(
                *zip(*smoothed, strict=True), color=colour, marker=marker, ms=3, label=strategy
            )
        if per_round:
            axes.scatter(
                [r for r, _ in per_round],
                [b for _, b in per_round],
                color=colour,
                marker=marker,
                s=30,
                alpha=0.3,
                label=None if smoothed else strategy,  # one entry per strategy
            )
        plotted = plotted or bool(smoothed or per_round)
    axes.set_title("Gradient noise scale B_simple = tr(Σ) / |G|² per round")
    axes.set_xlabel("Server round")
    axes.set_ylabel("B_simple (examples, log)")
    axes.grid(alpha=0.3, which="both")
    if plotted:
        axes.set_yscale("log")
        # Plain values (20, 30, 60) rather than 2×10¹ on the few decades B_simple spans.
        axes.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
        axes.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))
        axes.plot([], [], color="0.4", marker="o", ms=3, label="smoothed (line)")
        axes.scatter([], [], color="0.4", s=30, alpha=0.3, label="this round's estimate (faint)")
        axes.legend(loc="best", fontsize="small")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        no_data(axes, "no positive B_simple estimate")
    return save(figure, path)


def _plot_loss_vs_steps(run: dict[str, Any], path: Path) -> Path:
    """Mean test loss vs cumulative optimizer steps, per strategy."""
    figure = new_figure()
    axes = figure.add_subplot()
    plotted = False
    for strategy, data in run["batches"].items():
        colour, marker = run["colours"][strategy]
        if data["curve"]:
            axes.plot(
                *zip(*data["curve"], strict=True), color=colour, marker=marker, ms=4, label=strategy
            )
            plotted = True
    axes.set_title("Test loss vs optimizer steps: decay the rate or grow the batch")
    axes.set_xlabel("optimizer steps (mean per client, cumulative)")
    axes.set_ylabel("Mean clean test loss")
    axes.grid(alpha=0.3)
    if plotted:
        axes.legend(loc="best", fontsize="small")
    else:
        no_data(axes, "no round recorded a test loss and a step count")
    return save(figure, path)


def _plot_rate_vs_batch(run: dict[str, Any], path: Path) -> Path:
    """Each client's final rate vs its own batch size, with a slope-1 guide."""
    figure = new_figure()
    axes = figure.add_subplot()
    strategies = list(run["batches"])
    points: list[tuple[float, float]] = []
    for index, strategy in enumerate(strategies):
        colour, marker = run["colours"][strategy]
        data = run["batches"][strategy]
        pairs = [(batch, data["rates"].get(pid)) for pid, batch in data["own"].items()]
        pairs = [(b, lr) for b, lr in pairs if lr is not None and b > 0 and lr > 0]
        if not pairs:
            continue
        # A log axis: dodge by a factor, so that equal batches sit side by side.
        shift = math.exp(dodge(index, len(strategies), 0.04))
        axes.scatter(
            [b * shift for b, _ in pairs],
            [lr for _, lr in pairs],
            color=colour,
            marker=marker,
            s=42,
            alpha=0.85,
            label=strategy,
        )
        points.extend(pairs)
    if points:
        batches, rates = np.array(points).T
        middle_batch, middle_rate = float(np.median(batches)), float(np.median(rates))
        line_x = np.geomspace(batches.min() / 1.2, batches.max() * 1.2, 50)
        axes.plot(
            line_x,
            middle_rate * line_x / middle_batch,
            color="0.4",
            ls="--",
            lw=1,
            label="slope 1 (linear rule) through the median",
        )
        axes.set_xscale("log")
        axes.set_yscale("log")
        # Plain batch sizes (8, 16, 64) rather than 10¹ on the few decades batches span.
        axes.xaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
        axes.xaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))
        axes.legend(loc="best", fontsize="small")
    else:
        no_data(axes, "no client reported a batch size and a rate")
    axes.set_title("Final learning rate vs the client's own batch size")
    axes.set_xlabel("Client's own batch size (log)")
    axes.set_ylabel("Client learning rate, last round (log)")
    axes.grid(alpha=0.3, which="both")
    return save(figure, path)


def render(run: dict[str, Any], run_dir: Path) -> list[str]:
    """Write the batch plots and return the section; nothing for a run without batch data.

    Parameters
    ----------
    run : dict
        The run's summary (:func:`fedlr.report.summary.load_run`).
    run_dir : Path
        The run directory, where the figures go.

    Returns
    -------
    list of str
        The section's markdown lines (empty unless there is batch data to show).
    """
    if not run["batches"]:
        return []
    if _measured_noise(run):
        _plot_noise_scale(run, run_dir / NOISE_SCALE_PNG)
    _plot_loss_vs_steps(run, run_dir / LOSS_VS_STEPS_PNG)
    _plot_rate_vs_batch(run, run_dir / RATE_VS_BATCH_PNG)
    return _batch_section(run)
