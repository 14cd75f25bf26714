"""The report's sections, in the order report.md shows them.

A section is a function ``render(run, run_dir) -> list[str]``: it writes its figures into the run
directory and returns its markdown lines, or nothing when the run has no data for it (a degree
section for a tabular run). A new feature adds one section module and one entry in ``SECTIONS``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedlr.report.sections import batches, clients, continual, degree, fairness, noise, notes

Section = Callable[[dict[str, Any], Path], list[str]]

SECTIONS: tuple[Section, ...] = (
    fairness.render,  # Summary: fairness table, accuracy per round
    noise.render,  # hard-but-clean clients, accuracy and rate vs noise
    degree.render,  # graph runs only
    batches.render,  # tabular runs with batch data to show only
    continual.render,  # continual runs (a stream) only
    notes.render,  # missing replies and invalid estimates, if any
    clients.render,  # one table per strategy
)
