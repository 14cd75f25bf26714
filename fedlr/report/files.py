"""The files of a run directory the report reads, and the two it writes besides its figures.

A run directory (``runs/<time>-<name>/``) holds ``config.toml``, ``rounds.jsonl`` (one line per
strategy per round and its events, appended as they happen) and ``results.json`` (rewritten
each time a strategy finishes). Nothing here is kept between calls.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from fedlr.analysis import is_round, read_log

REPORT_FILE = "report.md"
CSV_FILE = "results.csv"


def load_rounds(run_dir: Path | str) -> list[dict[str, Any]]:
    """The round lines of ``rounds.jsonl`` (its events left out; :func:`fedlr.analysis.read_log`).

    A run killed while writing leaves a truncated last line; such lines are skipped, not fatal.

    Parameters
    ----------
    run_dir : Path or str
        The run directory.

    Returns
    -------
    list of dict
        One record per readable round line, in file order; empty if the file is missing.
    """
    return [line for line in read_log(Path(run_dir) / "rounds.jsonl") if is_round(line)]


def load_results(run_dir: Path | str) -> dict[str, Any] | None:
    """Read ``results.json``.

    Parameters
    ----------
    run_dir : Path or str
        The run directory.

    Returns
    -------
    dict or None
        The parsed file, or ``None`` when it is missing (the run has not finished).

    Raises
    ------
    ValueError
        If the file exists but is not a JSON object with a ``strategies`` table.
    """
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        return None
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(results, dict) or not isinstance(results.get("strategies"), dict):
        raise ValueError(f"{path}: expected an object with a 'strategies' table")
    return results


def load_config(run_dir: Path | str) -> dict[str, Any]:
    """Read the resolved ``config.toml`` of a run.

    Parameters
    ----------
    run_dir : Path or str
        The run directory.

    Returns
    -------
    dict
        The flat config table, or an empty dict when the file is missing or unreadable.
    """
    path = Path(run_dir) / "config.toml"
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}
