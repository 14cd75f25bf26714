"""fedlr.analysis.summarize_strategy: a strategy's results.json entry from its round lines alone."""

from __future__ import annotations

import json

import pytest

from fedlr.analysis import json_safe, read_log, summarize_strategy

CFG = {"estimator": "loss-margin", "fairness-metric": "accuracy", "metrics": "accuracy"}


def row(pid, **values):
    return {"partition_id": pid, "lr": None, "accuracy": None, "noise_smoothed": None, **values}


def lines():
    """Two rounds of two clients; client 1 misses round 2's evaluation."""
    return [
        {
            "round": 2,
            "clients": [row(0, lr=0.05, accuracy=0.9, noise_smoothed=0.1), row(1, lr=0.2)],
            "steps_mean": 4.0,
            "loss_mean": 0.5,
            "noise_scale": None,
        },
        {
            "round": 1,
            "clients": [
                row(0, lr=0.1, accuracy=0.5, noise_smoothed=0.3),
                row(1, lr=0.1, accuracy=0.7, noise_smoothed=0.2),
            ],
            "steps_mean": 2.0,
            "loss_mean": None,
            "noise_scale": {"b_simple": float("nan")},
        },
    ]


def info(**overrides):
    return {
        "clients": [
            {
                "partition_id": 0,
                "role": "noisy",
                "noise_true": 0.4,
                "num_examples": 10,
                "own_batch_size": 8,
            },
            {
                "partition_id": 1,
                "role": "clean",
                "noise_true": 0.0,
                "num_examples": 30,
                "own_batch_size": 16,
            },
        ],
        "rate_source": "estimate",
        "uses_estimates": True,
        "optimizer": "sgd",
        "base_lr": 0.1,
        "graph": False,
        "elapsed_s": 1.5,
        "batches": {"coupled": False},
        "degree": {},
        "continual": None,
        **overrides,
    }


def test_each_client_keeps_its_latest_values_in_round_order_whatever_the_line_order():
    entry = summarize_strategy(lines(), info(), CFG)
    clients = entry["clients"]
    assert [c["lr"] for c in clients] == [0.05, 0.2]
    assert [c["accuracy"] for c in clients] == [0.9, 0.7]  # client 1: round 1's
    assert [c["noise_estimate"] for c in clients] == [0.1, 0.2]
    assert [c["own_batch_size"] for c in clients] == [8, 16]
    assert entry["accuracy_per_round"] == [pytest.approx(0.6), 0.9]
    assert entry["fairness"]["mean"] == pytest.approx(0.8)
    assert entry["gap_clean_noisy"] == pytest.approx(0.7 - 0.9)  # clean minus noisy
    batches = entry["batches"]
    assert batches["steps_per_round"] == [2.0, 4.0] and batches["steps_total"] == 6.0
    assert batches["final_loss"] == 0.5 and batches["b_simple"] == [None, None]


def test_the_oracle_reports_the_truth_and_no_correlation():
    entry = summarize_strategy(lines(), info(rate_source="oracle", uses_estimates=False), CFG)
    assert [c["noise_estimate"] for c in entry["clients"]] == [0.4, 0.0]
    assert entry["estimator"] == {"name": None, "spearman": None}


def test_a_summary_read_back_from_json_is_the_same():
    written = [json.loads(json.dumps(line)) for line in lines()]
    assert summarize_strategy(written, info(), CFG) == summarize_strategy(lines(), info(), CFG)
    assert json_safe({"a": [float("inf"), 1.0]}) == {"a": [None, 1.0]}


def test_json_safe_makes_numpy_values_and_sets_plain():
    import numpy as np

    value = {"i": np.int64(3), "b": np.bool_(True), "a": np.array([1.5, np.nan]), "s": {2, 1}}
    assert json_safe(value) == {"i": 3, "b": True, "a": [1.5, None], "s": [1, 2]}
    json.dumps(json_safe(value), allow_nan=False)


def test_read_log_skips_lines_of_the_wrong_shape(tmp_path):
    good = {"strategy": "a", "round": 1, "clients": [{"partition_id": 0}]}
    bad = [
        {"strategy": "a", "event": "start"},  # no info
        {"strategy": "a", "event": "start", "info": []},
        {"strategy": "a", "round": "x", "clients": []},
        {"strategy": "a", "round": 2},  # no clients
        {"strategy": "a", "round": 3, "clients": [], "observers": []},
        {"round": 4, "clients": []},  # no strategy
    ]
    path = tmp_path / "rounds.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in [good, *bad]))
    assert read_log(path) == [good]
