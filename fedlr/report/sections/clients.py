"""The "Clients per strategy" section: one table per strategy, one row per client.

The tables hold every metric a client reported (the run's ``metrics``, a task's own); roles and
true noise only where some client knows its truth. A long list shows its two ends and points to
``results.csv``, which holds every client.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedlr.metrics.classification import NAMES as METRIC_NAMES
from fedlr.report.files import CSV_FILE
from fedlr.report.markdown import NA, fmt, percent, table

TABLE_CLIENTS = 40  # a per-client table longer than this shows its two ends only
TABLE_EDGE = 10


def _table_clients(clients: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The clients a per-client table shows: all, or the two ends of a long list.

    More than ``TABLE_CLIENTS``: the ``TABLE_EDGE`` lowest and highest accuracies, lowest first
    (a client without an accuracy counts as lowest).
    """
    if len(clients) <= TABLE_CLIENTS:
        return clients
    ranked = sorted(
        clients,
        key=lambda c: (c["accuracy"] is not None, c["accuracy"] or 0.0, c["partition_id"]),
    )
    return ranked[:TABLE_EDGE] + ranked[-TABLE_EDGE:]


def _client_table(run: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    """One row per client: truth where known, estimate, rate, accuracy, every other metric."""
    names = run["metric_names"]
    rows = []
    for client in summary["clients"]:
        row = [str(client.get("partition_id"))]
        if run["has_roles"]:
            row.append(client.get("role") or NA)
        if run["has_truth"]:
            row.append(fmt(client["noise_true"], ".2f"))
        row += [
            fmt(client["noise_estimate"], ".2f"),
            fmt(client["lr"], ".3g"),
            percent(client["accuracy"]),
        ]
        row += [fmt(client["metrics"].get(n), ".3f" if n in METRIC_NAMES else ".4g") for n in names]
        rows.append(row)
    header = ["Partition"] + ["Role"] * run["has_roles"] + ["True noise"] * run["has_truth"]
    header += ["Estimate", "LR", "Accuracy (%)"] + names
    align = "r" + "l" * run["has_roles"] + "r" * run["has_truth"] + "rrr" + "r" * len(names)
    return table(header, rows, align)


def render(run: dict[str, Any], run_dir: Path) -> list[str]:
    """Return the per-client tables of every strategy, and the link to ``results.csv``.

    Parameters
    ----------
    run : dict
        The run's summary (:func:`fedlr.report.summary.load_run`).
    run_dir : Path
        The run directory (unused: this section has no figure).

    Returns
    -------
    list of str
        The section's markdown lines.
    """
    lines = ["## Clients per strategy", ""]
    for strategy in run["strategies"]:
        summary = run["summaries"][strategy]
        shown = _table_clients(summary["clients"])
        lines += [f"### `{strategy}`", ""]
        if len(shown) < len(summary["clients"]):
            lines += [
                f"{len(summary['clients'])} clients: the {TABLE_EDGE} lowest and the "
                f"{TABLE_EDGE} highest accuracies, lowest first; every client is in "
                f"[{CSV_FILE}]({CSV_FILE}).",
                "",
            ]
        lines += _client_table(run, {**summary, "clients": shown}) + [""]
        if summary["missing"]:
            ids = ", ".join(str(i) for i in summary["missing"])
            lines += [f"No reply in round {summary['round']} from: {ids}.", ""]
    lines += [f"All numbers per client: [{CSV_FILE}]({CSV_FILE}).", ""]
    return lines
