"""``results.csv``: one row per strategy and client, every metric some client reported."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from fedlr.report.files import CSV_FILE
from fedlr.report.summary import load_run

CSV_COLUMNS = (
    "strategy",
    "partition_id",
    "role",
    "noise_true",
    "noise_estimate",
    "lr",
    "accuracy",
    "num_examples",
)


def write_csv(run_dir: Path | str) -> Path:
    """Write ``results.csv``: one row per strategy and client.

    Columns are ``CSV_COLUMNS`` (``role`` and ``noise_true`` only where some client knows its
    truth), then every metric some client reported besides accuracy; a missing value is an
    empty cell. An unfinished run (no ``results.json``) gives the clients of the last recorded
    round of each strategy.

    Parameters
    ----------
    run_dir : Path or str
        The run directory.

    Returns
    -------
    Path
        The path of the written file.
    """
    run_dir = Path(run_dir)
    return write_run_csv(run_dir, load_run(run_dir))


def write_run_csv(run_dir: Path, run: dict[str, Any]) -> Path:
    """Write ``results.csv`` of a run already summarised by :func:`~fedlr.report.summary.load_run`.

    Parameters
    ----------
    run_dir : Path
        The run directory.
    run : dict
        The run's summary.

    Returns
    -------
    Path
        The path of the written file.
    """
    path = run_dir / CSV_FILE
    columns = [c for c in CSV_COLUMNS if _shows_column(run, c)]
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(columns + run["metric_names"])
        for strategy in run["strategies"]:
            for client in run["summaries"][strategy]["clients"]:
                row = [strategy] + [client.get(column) for column in columns[1:]]
                row += [client["metrics"].get(name) for name in run["metric_names"]]
                writer.writerow(["" if value is None else value for value in row])
    return path


def _shows_column(run: dict[str, Any], column: str) -> bool:
    """Role and true noise only where some client knows them (a real site has no truth)."""
    return {"role": run["has_roles"], "noise_true": run["has_truth"]}.get(column, True)
