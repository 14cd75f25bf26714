"""fedlr.fl.client_metrics: which of an evaluate reply's metrics are kept, and what is dropped."""

from __future__ import annotations

import doctest

import pytest

import fedlr.fl.client_metrics
from fedlr.fl.client_metrics import MAX_EXTRA, MAX_NAME, evaluate_metrics

FEDLR_OWN = {
    "num-examples": 10,
    "partition-id": 1,
    "accuracy": 0.5,
    "eval-loss": 0.7,
    "aggregation-weight": 10.0,
    "task-accuracy": [0.5, -1.0],
    "test-degree": [1, 2],
}


def test_doctests():
    assert doctest.testmod(fedlr.fl.client_metrics).failed == 0


def test_fedlrs_own_keys_are_not_metrics():
    assert evaluate_metrics(FEDLR_OWN) == ({}, None)


def test_the_runs_metrics_come_first_in_their_order_then_a_tasks_own_sorted():
    kept, dropped = evaluate_metrics(
        {**FEDLR_OWN, "zeta": 3, "f1": 1.0, "auroc": 0.0, "alpha.b_c-1": -2.5, "loss": 0.0}
    )
    assert dropped is None
    assert list(kept.items()) == [
        ("auroc", 0.0),
        ("f1", 1.0),
        ("loss", 0.0),
        ("alpha.b_c-1", -2.5),  # a task's own metric may be any finite number
        ("zeta", 3.0),
    ]
    assert type(kept["zeta"]) is float


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("auroc", float("nan"), "'auroc' (nan not finite)"),
        ("balanced-accuracy", 1.5, "'balanced-accuracy' (1.5 outside [0, 1])"),
        ("f1", -0.1, "'f1' (-0.1 outside [0, 1])"),
        ("loss", -1.0, "'loss' (-1.0 < 0)"),
        ("loss", float("inf"), "'loss' (inf not finite)"),
        ("auroc", [0.5, 0.5], "'auroc' (not a number)"),
        ("sensitivity", float("nan"), "'sensitivity' (not a finite number)"),
        ("sensitivity", [1.0], "'sensitivity' (not a finite number)"),
        ("has space", 1.0, "'has space' (not a name of [A-Za-z0-9_.-])"),
        ("", 1.0, "'' (not a name of [A-Za-z0-9_.-])"),
    ],
)
def test_a_bad_value_drops_that_metric_and_says_why(name, value, reason):
    kept, dropped = evaluate_metrics({"auroc": 0.75, "extra": 2.0, name: value})
    assert name not in kept
    assert dropped == f"dropped metrics: {reason}"
    assert kept == {k: v for k, v in {"auroc": 0.75, "extra": 2.0}.items() if k != name}


def test_a_long_name_is_dropped_and_shown_cut():
    long = "m" * (MAX_NAME + 1)
    kept, dropped = evaluate_metrics({"m" * MAX_NAME: 1.0, long: 1.0})
    assert list(kept) == ["m" * MAX_NAME]
    assert dropped == f"dropped metrics: '{'m' * MAX_NAME}...' (not a name of [A-Za-z0-9_.-])"


def test_at_most_max_extra_own_metrics_the_first_by_name_whatever_the_order_sent():
    names = [f"m{i:03d}" for i in range(MAX_EXTRA + 8)]
    kept, dropped = evaluate_metrics({**{n: 1.0 for n in reversed(names)}, "auroc": 0.5})
    assert list(kept) == ["auroc", *names[:MAX_EXTRA]]  # the run's metrics do not count
    assert dropped == f"dropped metrics: 8 names over the limit of {MAX_EXTRA}"


def test_the_error_line_stays_short_however_much_is_dropped():
    _, dropped = evaluate_metrics({f"bad name {i}": 1.0 for i in range(1000)})
    assert dropped is not None
    assert dropped.count("(not a name") == 5 and dropped.endswith("; 995 more")
    assert len(dropped) < 600
