"""Tables and plots from a run directory: ``report.md``, ``results.csv`` and three PNGs.

A graph run (dataset cora, karate or ba) also gets a "Degree fairness" section and two more PNGs:
accuracy per global-degree quartile, and the gradient norm vs degree before and after the degree
scales.

A tabular run whose clients train with several batch sizes, or with a batch rule (``+coupled``,
``+grow-batch``, ``lr-decay-rounds``), or that measured the gradient noise scale, also gets a
"Batch size and noise scale" section and up to three more PNGs: ``B_simple`` per round (only when
measured), mean test loss vs cumulative optimizer steps, and each client's rate vs its own batch.

A continual run (``stream`` other than ``none``: each client learns ``num-tasks`` tasks in turn)
also gets a "Continual learning" section and two more PNGs: the accuracy matrix ``R`` of each
strategy as a heat-map, and the mean learning rate sent per round with the task starts marked.

A run directory (``runs/<time>-<name>/``) holds ``config.toml``, ``rounds.jsonl`` (one line per
strategy per round, appended as rounds finish) and ``results.json`` (rewritten each time a
strategy finishes). Everything here reads those files and writes next to them; nothing is kept
between calls.

The summary table's fairness columns (mean, variance, worst/best 10%, Jain, Gini) and the
per-client plot are of the run's ``fairness-metric`` (accuracy by default; for ``loss`` the
worst clients are those of highest loss, :func:`fedlr.metrics.fairness.metric_fairness_summary`),
and the per-client tables and ``results.csv`` hold every metric a client reported (the run's
``metrics``, a task's own). Roles, true noise and what is computed from them (the clean−noisy
gap, Spearman ρ against the true noise, the hard-but-clean section, the plot against true noise)
appear only where some client knows its truth: a real site has none.

A strategy missing from ``results.json`` (a run killed mid-way) is summarised from its last
recorded round in ``rounds.jsonl``, and the report says so at the top. Its degree data comes from
the same lines (``degree_fairness``, ``gradient_slope``), and its optimizer and degree rule from
its name and ``config.toml`` (``fedavg+adam+degree``: adam, ``degree-gamma``); likewise its
batch data (``batch_size``, ``steps_total``, ``loss_mean``, ``noise_scale``), with its coupling rule
and step schedule from its name and ``config.toml`` (``fedavg+coupled``: ``coupling-rule``).
A continual strategy's rates and accuracy matrix come from the rows' ``lr`` and ``task_accuracy``
at the task ends (``num-tasks``, ``task-stagger``), each client weighing the same; its schedule and
replay from its name (``fedavg+phases+replay``).

Examples
--------
>>> from pathlib import Path
>>> from fedlr.report import render_report
>>> render_report(Path("runs/2025-01-01T12-00-00-noisy_hospitals"))  # doctest: +SKIP
PosixPath('runs/2025-01-01T12-00-00-noisy_hospitals/report.md')
"""

from __future__ import annotations

from fedlr.report.files import CSV_FILE as CSV_FILE
from fedlr.report.files import REPORT_FILE as REPORT_FILE
from fedlr.report.files import load_config, load_results, load_rounds
from fedlr.report.render import render_report
from fedlr.report.results_csv import CSV_COLUMNS as CSV_COLUMNS
from fedlr.report.results_csv import write_csv
from fedlr.report.sections.batches import LOSS_VS_STEPS_PNG as LOSS_VS_STEPS_PNG
from fedlr.report.sections.batches import NOISE_SCALE_PNG as NOISE_SCALE_PNG
from fedlr.report.sections.batches import RATE_VS_BATCH_PNG as RATE_VS_BATCH_PNG
from fedlr.report.sections.batches import _batch_sizes_text as _batch_sizes_text
from fedlr.report.sections.clients import TABLE_CLIENTS as TABLE_CLIENTS
from fedlr.report.sections.clients import TABLE_EDGE as TABLE_EDGE
from fedlr.report.sections.clients import _table_clients as _table_clients
from fedlr.report.sections.continual import CONTINUAL_R_PNG as CONTINUAL_R_PNG
from fedlr.report.sections.continual import RATE_PER_ROUND_PNG as RATE_PER_ROUND_PNG
from fedlr.report.sections.continual import _arrival_text as _arrival_text
from fedlr.report.sections.continual import _relative_forgetting as _relative_forgetting
from fedlr.report.sections.degree import DEGREE_GRADIENTS_PNG as DEGREE_GRADIENTS_PNG
from fedlr.report.sections.degree import DEGREE_QUARTILES_PNG as DEGREE_QUARTILES_PNG
from fedlr.report.sections.degree import _quartile_ranges as _quartile_ranges
from fedlr.report.sections.fairness import ACCURACY_PER_ROUND_PNG as ACCURACY_PER_ROUND_PNG
from fedlr.report.sections.noise import ACCURACY_VS_NOISE_PNG as ACCURACY_VS_NOISE_PNG
from fedlr.report.sections.noise import RATE_VS_NOISE_PNG as RATE_VS_NOISE_PNG
from fedlr.report.summary import load_run

__all__ = ["load_config", "load_results", "load_rounds", "render_report", "write_csv"]

_load_run = load_run  # the summary every section renders from (tests read it by this name)
