"""Clients against their noise: the hard-but-clean section, and two per-client plots.

Roles and true noise are simulation truth: the hard-but-clean section appears only where some
client has a role, and the final per-client value is plotted against the true noise where some
client knows it, else per partition. The rate plot shows each client's final rate against its
noise estimate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.ticker import MaxNLocator

from fedlr.report.figures import dodge, new_figure, no_data, save
from fedlr.report.markdown import fmt, metric_text, percent, percent_scale
from fedlr.report.summary.clients import metric_value
from fedlr.report.values import mean, num

ACCURACY_VS_NOISE_PNG = "client_accuracy_vs_noise.png"
RATE_VS_NOISE_PNG = "rate_vs_noise.png"

_NOISY, _HARD_CLEAN = "noisy", "hard-clean"
# A black ring around a point marks a hard-but-clean client in every plot.
_RING: dict[str, Any] = {"facecolors": "none", "edgecolors": "black", "s": 170, "lw": 1.4}


def _hard_clean_section(run: dict[str, Any]) -> list[str]:
    """Each hard-but-clean client's estimate, rate and accuracy against the noisy clients'."""
    lines = ["## Hard-but-clean clients", ""]
    bullets = []
    for strategy in run["strategies"]:
        clients = run["summaries"][strategy]["clients"]
        hard = [c for c in clients if c.get("role") == _HARD_CLEAN]
        noisy = [c for c in clients if c.get("role") == _NOISY]
        if not hard:
            continue
        described = "; ".join(
            f"client {c['partition_id']}: estimate {fmt(c['noise_estimate'], '.2f')}, "
            f"lr {fmt(c['lr'], '.3g')}, accuracy {percent(c['accuracy'])}%"
            for c in hard
        )
        noisy_text = (
            f"noisy clients (mean of {len(noisy)}): "
            f"estimate {fmt(mean([c['noise_estimate'] for c in noisy]), '.2f')}, "
            f"lr {fmt(mean([c['lr'] for c in noisy]), '.3g')}, "
            f"accuracy {percent(mean([c['accuracy'] for c in noisy]))}%"
            if noisy
            else "no noisy clients"
        )
        bullets.append(f"- `{strategy}`: {described} — vs {noisy_text}.")
    if not bullets:
        return lines + ["This run has no hard-but-clean client."]
    intro = (
        "A hard-but-clean client holds only the hardest classes: its loss is high although its "
        "labels are right. A good noise estimator gives it a low estimate and so a rate above "
        "the noisy clients' rate."
    )
    return lines + [intro, ""] + bullets


def _plot_accuracy_vs_noise(run: dict[str, Any], path: Path) -> Path:
    """Each client's final fairness-metric value vs its true noise (else its partition id)."""
    figure = new_figure()
    axes = figure.add_subplot()
    strategies = run["strategies"]
    has_truth = run["has_truth"]
    metric = run["fairness_metric"]  # the per-client value plotted
    scale = 100.0 if percent_scale(metric) else 1.0
    span = 0.008 if has_truth else 0.06
    hard_xs: list[float] = []
    hard_ys: list[float] = []
    for index, strategy in enumerate(strategies):
        colour, marker = run["colours"][strategy]
        xs, ys = [], []
        for client in run["summaries"][strategy]["clients"]:
            x = client["noise_true"] if has_truth else num(client.get("partition_id"))
            value = metric_value(client, metric)
            if x is None or value is None:
                continue
            x += dodge(index, len(strategies), span)
            xs.append(x)
            ys.append(scale * value)
            if client.get("role") == _HARD_CLEAN:
                hard_xs.append(x)
                hard_ys.append(scale * value)
        axes.scatter(xs, ys, color=colour, marker=marker, s=42, alpha=0.85, label=strategy)
    if hard_xs:
        axes.scatter(hard_xs, hard_ys, label="hard-clean client", **_RING)
    name = metric_text(metric)
    if has_truth:
        axes.set_title(f"Final client {name} vs true label-noise rate")
        axes.set_xlabel("True label-noise rate of the client's training split")
    else:
        axes.set_title(f"Final client {name} (no client knows its true noise)")
        axes.set_xlabel("Partition id")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    unit = " (%)" if scale == 100.0 else ""
    axes.set_ylabel(f"{name[0].upper() + name[1:]} on {'clean ' * has_truth}test split{unit}")
    axes.grid(alpha=0.3)
    if strategies:
        axes.legend(loc="best", fontsize="small")
    return save(figure, path)


def _plot_rate_vs_noise(run: dict[str, Any], path: Path) -> Path:
    """Each client's final learning rate vs its noise estimate."""
    figure = new_figure()
    axes = figure.add_subplot()
    rates: list[float] = []
    hard: list[tuple[float, float]] = []
    for strategy in run["strategies"]:
        colour, marker = run["colours"][strategy]
        points = [
            c
            for c in run["summaries"][strategy]["clients"]
            if c["noise_estimate"] is not None and c["lr"] is not None
        ]
        if not points:
            continue
        axes.scatter(
            [c["noise_estimate"] for c in points],
            [c["lr"] for c in points],
            color=colour,
            marker=marker,
            s=42,
            alpha=0.85,
            label=strategy,
        )
        rates.extend(c["lr"] for c in points)
        for client in points:
            if client.get("role") != _HARD_CLEAN:
                continue
            hard.append((client["noise_estimate"], client["lr"]))
            axes.annotate(
                f"hard-clean #{client['partition_id']} ({strategy})",
                hard[-1],
                xytext=(12, 0),
                textcoords="offset points",
                ha="left",
                va="center",
                fontsize="small",
                color=colour,
            )
    if hard:
        axes.scatter(*zip(*hard, strict=True), label="hard-clean client", **_RING)
    if rates:
        axes.margins(x=0.12, y=0.1)  # room for the annotation
        if run["base_lr"] is not None:
            axes.axhline(run["base_lr"], color="0.5", ls=":", lw=1, label="base lr")
        positive = [r for r in rates if r > 0]
        if len(positive) == len(rates) and max(positive) / min(positive) > 10:
            axes.set_yscale("log")
        axes.legend(loc="best", fontsize="small")
    else:
        no_data(axes, "no strategy reported noise estimates")
    axes.set_title("Final learning rate vs noise estimate")
    axes.set_xlabel("Noise estimate (higher = noisier labels)")
    axes.set_ylabel("Client learning rate")
    axes.grid(alpha=0.3, which="both")
    return save(figure, path)


def render(run: dict[str, Any], run_dir: Path) -> list[str]:
    """Write the two per-client plots; return the hard-but-clean section (roles only) and them.

    Parameters
    ----------
    run : dict
        The run's summary (:func:`fedlr.report.summary.load_run`).
    run_dir : Path
        The run directory, where the figures go.

    Returns
    -------
    list of str
        The section's markdown lines.
    """
    _plot_accuracy_vs_noise(run, run_dir / ACCURACY_VS_NOISE_PNG)
    _plot_rate_vs_noise(run, run_dir / RATE_VS_NOISE_PNG)
    lines = []
    if run["has_roles"]:  # roles are simulation truth: a real site has none
        lines += _hard_clean_section(run) + [""]
    per_client = "vs true noise" if run["has_truth"] else "per partition"
    lines += [
        f"![Final client {metric_text(run['fairness_metric'])} {per_client}]"
        f"({ACCURACY_VS_NOISE_PNG})",
        "",
        f"![Learning rate vs noise estimate]({RATE_VS_NOISE_PNG})",
        "",
    ]
    return lines
