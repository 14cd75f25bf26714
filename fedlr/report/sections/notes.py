"""The "Run notes" section: missing replies, invalid noise estimates, strategies left out."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def render(run: dict[str, Any], run_dir: Path) -> list[str]:
    """List missing replies and invalid estimates seen in rounds.jsonl, per strategy.

    Parameters
    ----------
    run : dict
        The run's summary (:func:`fedlr.report.summary.load_run`).
    run_dir : Path
        The run directory (unused: this section has no figure).

    Returns
    -------
    list of str
        The section's markdown lines (empty when every reply came and every estimate was valid).
    """
    notes = []
    for strategy in run["strategies"]:
        records = [r for r in run["rounds"] if r["strategy"] == strategy]
        missing = sum(len(r.get("missing") or []) for r in records)
        invalid = sum(len(r.get("invalid_estimates") or []) for r in records)
        if missing or invalid:
            notes.append(
                f"- `{strategy}`: {missing} missing client replies, "
                f"{invalid} invalid noise estimates over {len(records)} rounds."
            )
    for strategy in run["unsummarized"]:
        notes.append(
            f"- `{strategy}`: not finished, and its rounds.jsonl has no start event (written by "
            "an older fedlr): no summary; its rounds are in the plots."
        )
    return ["## Run notes", ""] + notes + [""] if notes else []
