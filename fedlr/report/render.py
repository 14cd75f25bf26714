"""``render_report``: summarise a run once, then write its sections, results.csv and report.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedlr.report.files import REPORT_FILE
from fedlr.report.markdown import NA
from fedlr.report.results_csv import write_run_csv
from fedlr.report.sections import SECTIONS
from fedlr.report.summary import load_run


def _title(run: dict[str, Any]) -> list[str]:
    """The report's title, and a warning when a strategy did not finish."""
    seed = NA if run["seed"] is None else run["seed"]
    lines = [f"# fedlr run `{run['name']}` (seed {seed})", ""]
    if not run["finished"]:
        reached = ", ".join(
            f"`{s}` round {run['summaries'][s]['round']}"
            for s in run["strategies"]
            if run["summaries"][s]["round"] is not None
        )
        total = "" if run["num_rounds"] is None else f" of {run['num_rounds']}"
        lines += [
            f"> **Unfinished run**: a strategy did not finish. Its summary is built from the "
            f"rounds it logged in rounds.jsonl ({reached}{total}), each client's latest values.",
            "",
        ]
    return lines


def render_report(run_dir: Path | str) -> Path:
    """Write ``report.md``, ``results.csv`` and the three PNGs of a run into its directory.

    A graph run (strategies with degree data) also gets ``degree_quartiles.png`` and
    ``degree_gradients.png``. A tabular run with batch data to show (clients of several batch
    sizes, a ``+coupled`` or ``+grow-batch`` strategy, ``lr-decay-rounds``, or a measured noise
    scale) gets a "Batch size and noise scale" section, ``loss_vs_steps.png`` and
    ``rate_vs_batch.png``, and ``noise_scale.png`` when some strategy measured
    ``B_simple = tr(Σ)/|G|²``; other runs get neither. A continual run (a ``stream``) gets a
    "Continual learning" section, ``continual_R.png`` and ``rate_per_round.png``.

    Works on a finished run (``results.json``) and on an unfinished one: a strategy cut off is
    summarised from ``rounds.jsonl`` as ``results.json`` would have been, over the rounds it
    logged (:func:`fedlr.analysis.summarize`), and the report says so.
    Rendering twice gives the same files.

    Parameters
    ----------
    run_dir : Path or str
        The run directory.

    Returns
    -------
    Path
        The path of ``report.md``.

    Raises
    ------
    ValueError
        If the directory holds neither ``results.json`` nor a readable ``rounds.jsonl`` line.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir}: not a run directory")
    run = load_run(run_dir)
    lines = _title(run)
    for section in SECTIONS:
        lines += section(run, run_dir)
    write_run_csv(run_dir, run)
    path = run_dir / REPORT_FILE
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
