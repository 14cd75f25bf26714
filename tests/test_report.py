import copy
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from fedlr.config import resolve, to_toml
from fedlr.tasks.streams import arrival_rounds, task_ends
from fedlr.report import (
    CONTINUAL_R_PNG,
    LOSS_VS_STEPS_PNG,
    NOISE_SCALE_PNG,
    RATE_PER_ROUND_PNG,
    RATE_VS_BATCH_PNG,
    _arrival_text,
    _batch_sizes_text,
    _load_run,
    _quartile_ranges,
    _relative_forgetting,
    load_results,
    load_rounds,
    render_report,
    write_csv,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PNGS = ("accuracy_per_round.png", "client_accuracy_vs_noise.png", "rate_vs_noise.png")
DEGREE_PNGS = ("degree_quartiles.png", "degree_gradients.png")

# Four clients: 0 and 1 noisy, 2 hard-but-clean, 3 clean.
ROLES = {0: "noisy", 1: "noisy", 2: "hard-clean", 3: "clean"}
NOISE_TRUE = {0: 0.6, 1: 0.8, 2: 0.0, 3: 0.0}
# Final (round 3) accuracies: fedavg mean 3.1 / 4 = 0.775, noise-adaptive 3.3 / 4 = 0.825.
FINAL_ACCURACY = {
    "fedavg": {0: 0.6, 1: 0.7, 2: 0.9, 3: 0.9},
    "noise-adaptive": {0: 0.7, 1: 0.8, 2: 0.85, 3: 0.95},
}
ESTIMATE = {0: 0.55, 1: 0.75, 2: 0.15, 3: 0.05}
ADAPTIVE_LR = {0: 0.05, 1: 0.025, 2: 0.2, 3: 0.2}


def start_event(
    strategy: str,
    clients: list[dict],
    *,
    uses_estimates: bool = False,
    graph: bool = False,
    batches: dict | None = None,
    degree: dict | None = None,
    continual: dict | None = None,
    optimizer: str = "sgd",
) -> dict:
    """The ``start`` event a run logs before a strategy's first round: what the strategy is."""
    return {
        "strategy": strategy,
        "event": "start",
        "info": {
            "clients": clients,
            "rate_source": "estimate" if uses_estimates else "uniform",
            "uses_estimates": uses_estimates,
            "optimizer": optimizer,
            "base_lr": 0.1,
            "graph": graph,
            "batches": batches
            or {
                "coupled": False,
                "coupling_rule": None,
                "reference_batch": 32.0,
                "grow_batch": False,
                "lr_decay_rounds": [],
            },
            "degree": degree or {"degree_rule": None, "gamma": 0.0},
            "continual": continual,
        },
    }


def start_from_entry(strategy: str, entry: dict, **info) -> dict:
    """The ``start`` event of the strategy a results.json ``entry`` (a fixture) summarises."""
    clients = [
        {
            "partition_id": c["partition_id"],
            "role": c.get("role"),
            "noise_true": c.get("noise_true"),
            "num_examples": c.get("num_examples"),
            "own_batch_size": c.get("own_batch_size"),
        }
        for c in entry["clients"]
    ]
    return start_event(strategy, clients, optimizer=entry.get("optimizer", "sgd"), **info)


def done_event(strategy: str) -> dict:
    return {"strategy": strategy, "event": "done", "elapsed_s": 1.5}


def _round_line(strategy: str, round_number: int) -> dict:
    adaptive = strategy == "noise-adaptive"
    accuracy = {k: a - 0.1 * (3 - round_number) for k, a in FINAL_ACCURACY[strategy].items()}
    clients = [
        {
            "partition_id": k,
            "lr": ADAPTIVE_LR[k] if adaptive else 0.1,
            "noise_estimate": ESTIMATE[k] if adaptive else None,
            "noise_smoothed": ESTIMATE[k] if adaptive else None,
            "accuracy": accuracy[k],
            "train_loss": 1.0,
        }
        for k in ROLES
    ]
    return {
        "strategy": strategy,
        "round": round_number,
        "elapsed_s": 0.5,
        "accuracy_mean": sum(accuracy.values()) / 4,
        "accuracy_worst10": min(accuracy.values()),
        "clients": clients,
        "missing": [],
        "invalid_estimates": [{"partition_id": 1, "value": "nan"}] if round_number == 1 else [],
    }


def _results() -> dict:
    def clients(strategy: str) -> list[dict]:
        adaptive = strategy == "noise-adaptive"
        return [
            {
                "partition_id": k,
                "role": ROLES[k],
                "noise_true": NOISE_TRUE[k],
                "noise_estimate": ESTIMATE[k] if adaptive else None,
                "lr": ADAPTIVE_LR[k] if adaptive else 0.1,
                "accuracy": FINAL_ACCURACY[strategy][k],
                "num_examples": 40,
            }
            for k in ROLES
        ]

    return {
        "name": "tiny",
        "seed": 7,
        "num_rounds": 3,
        "strategies": {
            "fedavg": {
                # worst10 = min (ceil(4 / 10) = 1 client); gap = (0.9 + 0.9) / 2 - (0.6 + 0.7) / 2
                "fairness": {
                    "mean": 0.775,
                    "variance": 0.016875,
                    "worst10": 0.6,
                    "best10": 0.9,
                    "jain": 0.97267,
                    "gini": 0.08871,
                },
                "gap_clean_noisy": 0.25,
                "estimator": {"spearman": None, "name": "loss-margin"},
                "clients": clients("fedavg"),
                "elapsed_s": 1.5,
            },
            "noise-adaptive": {
                "fairness": {
                    "mean": 0.825,
                    "variance": 0.008125,
                    "worst10": 0.7,
                    "best10": 0.95,
                    "jain": 0.98820,
                    "gini": 0.06061,
                },
                "gap_clean_noisy": 0.15,
                "estimator": {"spearman": 0.8, "name": "loss-margin"},
                "clients": clients("noise-adaptive"),
                "elapsed_s": 1.6,
            },
        },
    }


def make_run(root: Path, *, finished: bool = True) -> Path:
    """A fake run directory: 2 strategies x 4 clients x 3 rounds, last line truncated."""
    run_dir = root / "2025-01-01T00-00-00-tiny"
    run_dir.mkdir()
    (run_dir / "config.toml").write_text(
        'name = "tiny"\nseed = 7\nstrategies = "fedavg,noise-adaptive"\n'
        "num-server-rounds = 3\nlr = 0.1\n"
    )
    # these sites have no truth (real sites): no role or true noise in what the strategy knows
    clients = [{"partition_id": k, "num_examples": 40, "own_batch_size": 32} for k in ROLES]
    lines = [
        json.dumps(start_event(strategy, clients, uses_estimates=strategy == "noise-adaptive"))
        for strategy in ("fedavg", "noise-adaptive")
    ]
    lines += [
        json.dumps(_round_line(strategy, r))
        for r in (1, 2, 3)
        for strategy in ("fedavg", "noise-adaptive")
    ]
    truncated = json.dumps(_round_line("fedavg", 4))[:40]
    (run_dir / "rounds.jsonl").write_text("\n".join(lines) + "\n" + truncated)
    if finished:
        (run_dir / "results.json").write_text(json.dumps(_results()))
    return run_dir


def _row(report: str, strategy: str) -> list[str]:
    line = next(x for x in report.splitlines() if x.startswith(f"| `{strategy}` |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_load_rounds_skips_truncated_line(tmp_path):
    run_dir = make_run(tmp_path)
    rounds = load_rounds(run_dir)
    assert len(rounds) == 6
    assert [r["round"] for r in rounds if r["strategy"] == "fedavg"] == [1, 2, 3]
    assert load_results(run_dir)["seed"] == 7
    assert load_results(tmp_path) is None


def test_report_from_results(tmp_path):
    run_dir = make_run(tmp_path)
    path = render_report(run_dir)
    assert path == run_dir / "report.md"
    report = path.read_text()
    assert report.startswith("# fedlr run `tiny` (seed 7)")
    assert "Unfinished run" not in report
    # mean, variance, worst10, best10, Jain, Gini, gap, Spearman; best in bold
    assert _row(report, "fedavg") == [
        "`fedavg`", "77.5", "168.8", "60.0", "90.0", "0.973", "0.089", "25.0", "n/a",
    ]  # fmt: skip
    assert _row(report, "noise-adaptive") == [
        "`noise-adaptive`", "**82.5**", "**81.2**", "**70.0**", "**95.0**",
        "**0.988**", "**0.061**", "**15.0**", "0.80",
    ]  # fmt: skip
    # a column with a single value has no best
    # client table row of the hard-clean client under noise-adaptive: id, role, true, est, lr, acc
    assert "| 2 | hard-clean | 0.00 | 0.15 | 0.2 | 85.0 |" in report
    # hard-clean paragraph: its estimate and rate vs the noisy mean (0.65, 0.0375)
    assert "client 2: estimate 0.15, lr 0.2, accuracy 85.0%" in report
    assert "estimate 0.65, lr 0.0375, accuracy 75.0%" in report
    for png in PNGS:
        assert f"]({png})" in report


def test_pngs_are_valid_and_nontrivial(tmp_path):
    run_dir = make_run(tmp_path)
    render_report(run_dir)
    for png in PNGS:
        data = (run_dir / png).read_bytes()
        assert data[:8] == PNG_MAGIC
        assert len(data) > 10_000


def test_report_without_results(tmp_path):
    run_dir = make_run(tmp_path, finished=False)
    report = render_report(run_dir).read_text()
    assert "Unfinished run" in report.splitlines()[2]
    assert "`fedavg` round 3" in report
    # summarised from rounds.jsonl, each client's latest (round 3): fedavg Jain = 3.1^2 / (4 * 2.47)
    row = _row(report, "fedavg")
    assert row[1] == "77.5" and row[3] == "60.0" and row[5] == "0.973"
    # these sites have no truth: no gap or Spearman column
    assert len(row) == 7
    assert _row(report, "noise-adaptive")[1] == "**82.5**"
    assert "invalid noise estimates" in report
    for png in PNGS:
        assert (run_dir / png).read_bytes()[:8] == PNG_MAGIC


def test_a_log_without_start_events_keeps_its_rounds_and_says_why_there_is_no_summary(tmp_path):
    run_dir = make_run(tmp_path, finished=False)
    path = run_dir / "rounds.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(x for x in lines if '"event"' not in x))  # an older fedlr's log
    report = render_report(run_dir).read_text()
    assert "`noise-adaptive`: not finished, and its rounds.jsonl has no start event" in report
    assert "| `fedavg` |" not in report  # no summary table row to show
    assert (run_dir / "accuracy_per_round.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize("finished", [True, False])
def test_render_is_idempotent(tmp_path, finished):
    run_dir = make_run(tmp_path, finished=finished)
    first = render_report(run_dir).read_text()
    second = render_report(run_dir).read_text()
    assert first == second


def test_write_csv_one_row_per_strategy_and_client(tmp_path):
    run_dir = make_run(tmp_path)
    with write_csv(run_dir).open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 8
    hard = [r for r in rows if r["role"] == "hard-clean"]
    assert [r["strategy"] for r in hard] == ["fedavg", "noise-adaptive"]
    assert rows[0]["noise_estimate"] == ""


def test_table_clients_keeps_a_short_list_and_the_two_ends_of_a_long_one():
    from fedlr.report import TABLE_CLIENTS, TABLE_EDGE, _table_clients

    short = [{"partition_id": i, "accuracy": 0.5} for i in range(TABLE_CLIENTS)]
    assert _table_clients(short) == short
    accuracy = np.random.default_rng(0).random(1000)
    long = [{"partition_id": i, "accuracy": float(a)} for i, a in enumerate(accuracy)]
    long[3]["accuracy"] = None  # no reply: counts as lowest
    shown = _table_clients(long)
    order = [3, *np.argsort(np.where(np.arange(1000) == 3, np.inf, accuracy))[:-1].tolist()]
    assert [c["partition_id"] for c in shown] == order[:TABLE_EDGE] + order[-TABLE_EDGE:]


def test_a_long_client_table_shows_its_ends_and_points_to_the_csv(tmp_path, monkeypatch):
    import fedlr.report.sections.clients as clients_section

    monkeypatch.setattr(clients_section, "TABLE_CLIENTS", 3)
    monkeypatch.setattr(clients_section, "TABLE_EDGE", 1)
    run_dir = make_run(tmp_path)
    report = render_report(run_dir).read_text()
    fedavg = report.split("### `fedavg`")[1].split("### `noise-adaptive`")[0]
    assert "4 clients: the 1 lowest and the 1 highest accuracies, lowest first" in fedavg
    rows = [line for line in fedavg.splitlines() if line.startswith("| ") and "---" not in line]
    assert [r.split(" | ")[0] for r in rows[1:]] == ["| 0", "| 3"]  # 60.0% and 90.0% (id 2 ties)
    with write_csv(run_dir).open(newline="") as stream:
        assert len(list(csv.DictReader(stream))) == 8  # every client stays in the CSV


def test_empty_run_dir_fails_loudly(tmp_path):
    with pytest.raises(ValueError, match="nothing to report"):
        render_report(tmp_path)


# ------------------------------------------------------------------------------------------------
# Graph runs: degree fairness
# ------------------------------------------------------------------------------------------------

GRAPH_STRATEGIES = ("fedavg", "fedavg+adam+degree")
# Global-degree quartile edges 1, 3, 3: Q1 degree <= 1, Q2 2-3, Q3 empty, Q4 >= 4.
EDGES = [1.0, 3.0, 3.0]
SIZES = [4, 4, 0, 2]
# Quartile accuracies per strategy and round; overall accuracy = size-weighted mean over 10 nodes.
BUCKETS = {
    "fedavg": {1: [0.25, 0.5, None, 1.0], 2: [0.5, 0.75, None, 1.0]},
    "fedavg+adam+degree": {1: [0.5, 0.5, None, 0.5], 2: [0.75, 0.75, None, 1.0]},
}
# Gradient-norm slopes (before, after the degree scales) per round.
SLOPES = {
    "fedavg": {1: (0.5, 0.1), 2: (0.4, 0.0)},
    "fedavg+adam+degree": {1: (0.5, -0.25), 2: (0.3, -0.05)},
}


def _degree_fairness(buckets: list) -> dict:
    filled = [a for a in buckets if a is not None]
    return {
        "bucket-accuracy": buckets,
        "bucket-size": SIZES,
        "bucket-edges": EDGES,
        "jain": sum(filled) ** 2 / (len(filled) * sum(a * a for a in filled)),
        "worst": min(filled),
        "gap": max(filled) - min(filled),
        "low-high-gap": filled[0] - filled[-1],
        "accuracy": sum(a * n for a, n in zip(buckets, SIZES, strict=True) if a is not None) / 10,
        "nodes": 10,
    }


def _graph_round_line(strategy: str, round_number: int) -> dict:
    before, after = SLOPES[strategy][round_number]
    return {
        "strategy": strategy,
        "round": round_number,
        "accuracy_mean": 0.5,
        "accuracy_worst10": 0.5,
        "clients": [
            {"partition_id": k, "role": "clean", "noise_true": 0.0, "lr": 0.1, "accuracy": 0.5}
            for k in (0, 1)
        ],
        "missing": [],
        "invalid_estimates": [],
        "degree_fairness": _degree_fairness(BUCKETS[strategy][round_number]),
        "gradient_slope": {"before": before, "after": after},
    }


def _graph_results() -> dict:
    def entry(strategy: str, optimizer: str, base_lr: float, gamma: float | None) -> dict:
        return {
            "fairness": {
                "mean": 0.5,
                "variance": 0.0,
                "worst10": 0.5,
                "best10": 0.5,
                "jain": 1.0,
                "gini": 0.0,
            },
            "gap_clean_noisy": None,
            "estimator": {"name": None, "spearman": None},
            "clients": [
                {
                    "partition_id": k,
                    "role": "clean",
                    "noise_true": 0.0,
                    "noise_estimate": None,
                    "lr": base_lr,
                    "accuracy": 0.5,
                    "num_examples": 5,
                }
                for k in (0, 1)
            ],
            "optimizer": optimizer,
            "base_lr": base_lr,
            "degree": {
                "degree_rule": gamma is not None,
                "gamma": gamma or 0.0,
                "fairness": _degree_fairness(BUCKETS[strategy][2]),
                "lowest_quartile_per_round": [BUCKETS[strategy][r][0] for r in (1, 2)],
                "gradient_slope": {
                    "before": [SLOPES[strategy][r][0] for r in (1, 2)],
                    "after": [SLOPES[strategy][r][1] for r in (1, 2)],
                },
                # Mean norm 3 (d + 1)^0.5 before, constant after the scales.
                "gradient_profile": {
                    "degree": [0.0, 1.0, 3.0],
                    "before": [3.0, 3.0 * 2**0.5, 6.0],
                    "after": [3.0, 3.0, 3.0],
                    "count": [4, 4, 2],
                },
            },
        }

    return {
        "name": "graph",
        "seed": 3,
        "num_rounds": 2,
        "strategies": {
            "fedavg": entry("fedavg", "sgd", 0.1, None),
            "fedavg+adam+degree": entry("fedavg+adam+degree", "adam", 0.01, 0.25),
        },
    }


def make_graph_run(root: Path, *, finished: bool = True) -> Path:
    """A fake karate run: 2 strategies x 2 clients x 2 rounds; unfinished: killed in round 2."""
    run_dir = root / "2025-01-01T00-00-00-graph"
    run_dir.mkdir()
    config = resolve(
        overrides={
            "name": "graph",
            "seed": 3,
            "dataset": "karate",
            "num-clients": 2,
            "noisy-clients": 0,
            "hard-clean-clients": 0,
            "strategies": ",".join(GRAPH_STRATEGIES),
            "num-server-rounds": 2,
            "degree-gamma": 0.25,
        }
    )
    (run_dir / "config.toml").write_text(to_toml(config))
    entries = _graph_results()["strategies"]
    lines = [
        start_from_entry(
            s,
            entries[s],
            graph=True,
            degree={k: entries[s]["degree"][k] for k in ("degree_rule", "gamma")},
        )
        for s in GRAPH_STRATEGIES
    ]
    lines += [
        _graph_round_line(strategy, r)
        for r in (1, 2)
        for strategy in GRAPH_STRATEGIES
        if finished or (strategy, r) != ("fedavg+adam+degree", 2)
    ]
    lines.append(done_event("fedavg"))
    (run_dir / "rounds.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    if finished:
        (run_dir / "results.json").write_text(json.dumps(_graph_results()))
    return run_dir


def _degree_row(report: str, strategy: str) -> list[str]:
    return _row(report[report.index("## Degree fairness") :], strategy)


# strategy, optimizer, degree rule, accuracy, Q1..Q4, Jain, worst quartile, slopes round 1 / last
# Jain over Q1, Q2, Q4 = 2.25^2 / (3 * 1.8125) = 0.9310; accuracy (2 + 3 + 2) / 10
FEDAVG_ROW = [
    "`fedavg`", "sgd", "-", "70.0", "50.0", "75.0", "n/a", "100.0", "0.931", "50.0",
    "0.50 → 0.10", "0.40 → 0.00",
]  # fmt: skip
# Jain = 2.5^2 / (3 * 2.125) = 0.9804; accuracy (3 + 3 + 2) / 10
ADAM_DEGREE_ROW = [
    "`fedavg+adam+degree`", "adam", "γ = 0.25", "80.0", "75.0", "75.0", "n/a", "100.0", "0.980",
    "75.0", "0.50 → -0.25", "0.30 → -0.05",
]  # fmt: skip


def test_quartile_ranges():
    assert _quartile_ranges([2.0, 5.0, 6.0]) == ["≤ 2", "3–5", "6", "≥ 7"]
    assert _quartile_ranges(EDGES) == ["≤ 1", "2–3", "empty", "≥ 4"]
    assert _quartile_ranges([1.0, 1.0, 2.25]) == ["≤ 1", "empty", "2", "≥ 3"]


def test_degree_section_from_results(tmp_path):
    run_dir = make_graph_run(tmp_path)
    report = render_report(run_dir).read_text()
    assert "Unfinished run" not in report
    assert _degree_row(report, "fedavg") == FEDAVG_ROW
    assert _degree_row(report, "fedavg+adam+degree") == ADAM_DEGREE_ROW
    assert (
        "Global-degree quartiles: Q1 ≤ 1, Q2 2–3, Q3 empty, Q4 ≥ 4 "
        "(quantile edges 1, 3, 3; test nodes per quartile: 4, 4, 0, 2)."
    ) in report
    section = report[report.index("## Degree fairness") :]
    for png in DEGREE_PNGS:
        assert f"]({png})" in section
        data = (run_dir / png).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000
    # the rest of the report is still there, with '+' in a strategy name
    assert _row(report, "fedavg+adam+degree")[1] == "**50.0**"  # a tie: both best
    assert "### `fedavg+adam+degree`" in report


def test_degree_section_of_killed_run_from_rounds(tmp_path):
    run_dir = make_graph_run(tmp_path, finished=False)
    report = render_report(run_dir).read_text()
    assert "`fedavg+adam+degree` round 1 of 2" in report
    # fedavg: its round-2 line equals what results.json would say
    assert _degree_row(report, "fedavg") == FEDAVG_ROW
    # killed in round 2: round-1 quartiles; optimizer and gamma from its start event
    assert _degree_row(report, "fedavg+adam+degree") == [
        "`fedavg+adam+degree`", "adam", "γ = 0.25", "50.0", "50.0", "50.0", "n/a", "50.0",
        "1.000", "50.0", "0.50 → -0.25", "0.50 → -0.25",
    ]  # fmt: skip
    for png in DEGREE_PNGS:
        assert (run_dir / png).read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize("finished", [True, False])
def test_degree_render_is_idempotent(tmp_path, finished):
    run_dir = make_graph_run(tmp_path, finished=finished)
    first = render_report(run_dir).read_text()
    pngs = [(run_dir / png).read_bytes() for png in DEGREE_PNGS]
    assert render_report(run_dir).read_text() == first
    assert [(run_dir / png).read_bytes() for png in DEGREE_PNGS] == pngs


@pytest.mark.parametrize("finished", [True, False])
def test_non_graph_run_has_no_degree_section(tmp_path, finished):
    run_dir = make_run(tmp_path, finished=finished)
    report = render_report(run_dir).read_text()
    assert "Degree" not in report and "degree_" not in report
    assert not any((run_dir / png).exists() for png in DEGREE_PNGS)


# ------------------------------------------------------------------------------------------------
# Tabular runs: batch size and noise scale
# ------------------------------------------------------------------------------------------------

BATCH_PNGS = ("noise_scale.png", "loss_vs_steps.png", "rate_vs_batch.png")
BATCH_STRATEGIES = ("fedavg", "fedavg+coupled", "fedavg+grow-batch")
OWN_BATCH = {0: 8, 1: 16, 2: 16, 3: 64}  # min-median-max 8-16-64
# 256 examples per client: 32, 16, 16, 4 steps, mean 17; grown x5 in round 3 (batches 40, 80, 80,
# 320 capped at 256): 7, 4, 4, 1 steps, mean 4.
STEPS_MEAN = {
    "fedavg": (17, 17, 17),
    "fedavg+coupled": (17, 17, 17),
    "fedavg+grow-batch": (17, 17, 4),
}
LOSS = {
    "fedavg": (1.0, 0.8, 0.6),
    "fedavg+coupled": (0.9, 0.7, 0.5),
    "fedavg+grow-batch": (1.0, 0.8, 0.65),
}
# (smoothed, this round's) B_simple per round; None: no noise_scale in that round's line.
NOISE = {
    "fedavg": ((40.0, 40.0), (30.0, -5.0), (None, None)),
    "fedavg+coupled": ((50.0, 50.0), (55.0, 60.0), (-1.0, -3.0)),
    "fedavg+grow-batch": (None, (20.0, 20.0), (25.0, 30.0)),
}


def _batch_and_lr(strategy: str, pid: int, round_number: int, own: dict) -> tuple[int, float]:
    """Round 3 is the decay round: the rate x 0.2, or (+grow-batch) the batch x 5."""
    grow, decayed = strategy.endswith("+grow-batch"), round_number >= 3
    batch = own[pid] * (5 if grow and decayed else 1)
    coupling = own[pid] / 16 if strategy.endswith("+coupled") else 1.0  # linear, reference 16
    return batch, 0.1 * coupling * (0.2 if decayed and not grow else 1.0)


def _noise_scale(strategy: str, round_number: int, noise: dict) -> dict | None:
    point = noise[strategy][round_number - 1]
    if point is None:
        return None
    return {"clients": 4, "g2": 1.0, "trace": 1.0, "b_simple": point[0], "b_simple_round": point[1]}


def _batch_round_line(strategy: str, round_number: int, own: dict, noise: dict) -> dict:
    loss = LOSS[strategy][round_number - 1]
    clients = []
    for k in own:
        batch, lr = _batch_and_lr(strategy, k, round_number, own)
        clients.append(
            {
                "partition_id": k,
                "role": "clean",
                "noise_true": 0.0,
                "lr": lr,
                "accuracy": 0.5,
                "eval_loss": loss,
                "batch_size": batch,
                "coupling_factor": own[k] / 16 if strategy.endswith("+coupled") else 1.0,
                "steps": 256 // batch,
            }
        )
    return {
        "strategy": strategy,
        "round": round_number,
        "accuracy_mean": 0.5,
        "accuracy_worst10": 0.5,
        "clients": clients,
        "missing": [],
        "invalid_estimates": [],
        "loss_mean": loss,
        "steps_mean": STEPS_MEAN[strategy][round_number - 1],
        "steps_total": sum(STEPS_MEAN[strategy][:round_number]),
        "noise_scale": _noise_scale(strategy, round_number, noise),
    }


def _batch_results(strategies: tuple, own: dict, noise: dict, decay: list) -> dict:
    def entry(strategy: str) -> dict:
        coupled = strategy.endswith("+coupled")
        points = [p or (None, None) for p in noise[strategy]]
        clients = []
        for k in own:
            batch, lr = _batch_and_lr(strategy, k, 3, own)
            clients.append(
                {
                    "partition_id": k,
                    "role": "clean",
                    "noise_true": 0.0,
                    "noise_estimate": None,
                    "lr": lr,
                    "accuracy": 0.5,
                    "num_examples": 256,
                    "batch_size": batch,
                    "own_batch_size": own[k],
                    "coupling_factor": own[k] / 16 if coupled else 1.0,
                }
            )
        return {
            "fairness": {"mean": 0.5, "worst10": 0.5},
            "gap_clean_noisy": None,
            "estimator": {"name": None, "spearman": None},
            "clients": clients,
            "optimizer": "sgd",
            "base_lr": 0.1,
            "batches": {
                "coupled": coupled,
                "coupling_rule": "linear" if coupled else None,
                "reference_batch": 16.0,
                "grow_batch": strategy.endswith("+grow-batch"),
                "lr_decay_rounds": decay,
                "steps_per_round": list(STEPS_MEAN[strategy]),
                "steps_total": float(sum(STEPS_MEAN[strategy])),
                "loss_per_round": list(LOSS[strategy]),
                "final_loss": LOSS[strategy][-1],
                "b_simple": [s for s, _ in points],
                "b_simple_round": [b for _, b in points],
            },
        }

    return {
        "name": "batches",
        "seed": 5,
        "num_rounds": 3,
        "strategies": {s: entry(s) for s in strategies},
    }


def make_batch_run(
    root: Path,
    *,
    finished: bool = True,
    strategies: tuple = BATCH_STRATEGIES,
    own: dict | None = None,
    noise: dict | None = None,
    decay: str = "3",
) -> Path:
    """A fake tabular run: 4 clients x 3 rounds; unfinished: no results.json, and
    ``fedavg+coupled`` killed in round 3."""
    own = OWN_BATCH if own is None else own
    noise = NOISE if noise is None else noise
    run_dir = root / "2025-01-01T00-00-00-batches"
    run_dir.mkdir(parents=True)
    (run_dir / "config.toml").write_text(
        f'name = "batches"\nseed = 5\nstrategies = "{",".join(strategies)}"\n'
        'num-server-rounds = 3\nlr = 0.1\noptimizer = "sgd"\ncoupling-rule = "auto"\n'
        f'lr-decay-rounds = "{decay}"\nlr-decay-factor = 0.2\n'
    )
    decay_rounds = [int(r) for r in decay.split(",") if r]
    results = _batch_results(strategies, own, noise, decay_rounds)
    lines = []
    for strategy in strategies:
        entry = results["strategies"][strategy]
        static = ("coupled", "coupling_rule", "reference_batch", "grow_batch", "lr_decay_rounds")
        lines.append(
            start_from_entry(strategy, entry, batches={k: entry["batches"][k] for k in static})
        )
        lines += [
            _batch_round_line(strategy, r, own, noise)
            for r in (1, 2, 3)
            if finished or (strategy, r) != ("fedavg+coupled", 3)
        ]
        if finished or strategy != "fedavg+coupled":
            lines.append(done_event(strategy))
    (run_dir / "rounds.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    if finished:
        (run_dir / "results.json").write_text(json.dumps(results))
    return run_dir


def _batch_row(report: str, strategy: str) -> list[str]:
    return _row(report[report.index("## Batch size and noise scale") :], strategy)


# strategy, batch sizes, rule, optimizer steps, final test loss, last smoothed B_simple
FEDAVG_BATCH_ROW = ["`fedavg`", "8–16–64", "shared rate; rate ×0.2 at round 3", "51", "0.600", "30"]
GROW_BATCH_ROW = [
    "`fedavg+grow-batch`", "8–16–64", "shared rate; batch ×5 at round 3", "38", "0.650", "25",
]  # fmt: skip


def _assert_batch_pngs(report: str, run_dir: Path, pngs: tuple = BATCH_PNGS) -> None:
    section = report[report.index("## Batch size and noise scale") :]
    for png in pngs:
        assert f"]({png})" in section
        data = (run_dir / png).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000


def test_batch_sizes_text():
    assert _batch_sizes_text({0: 8.0, 1: 16.0, 2: 16.0, 3: 64.0}) == "8–16–64"
    assert _batch_sizes_text({0: 8.0, 1: 64.0}) == "8–36–64"
    assert (_batch_sizes_text({0: 32.0, 1: 32.0}), _batch_sizes_text({})) == ("32", "n/a")


def test_batch_section_from_results(tmp_path):
    run_dir = make_batch_run(tmp_path)
    report = render_report(run_dir).read_text()
    assert "Unfinished run" not in report
    assert _batch_row(report, "fedavg") == FEDAVG_BATCH_ROW
    # the last smoothed estimate is kept even when negative (it is only left out of the plot)
    assert _batch_row(report, "fedavg+coupled") == [
        "`fedavg+coupled`", "8–16–64", "linear; rate ×0.2 at round 3", "51", "0.500", "-1",
    ]  # fmt: skip
    assert _batch_row(report, "fedavg+grow-batch") == GROW_BATCH_ROW
    assert "McCandlish et al. (2018)" in report
    _assert_batch_pngs(report, run_dir)
    assert "### `fedavg+grow-batch`" in report  # the rest of the report is still there


def test_batch_section_of_killed_run_from_rounds(tmp_path):
    run_dir = make_batch_run(tmp_path, finished=False)
    report = render_report(run_dir).read_text()
    assert "`fedavg+coupled` round 2," in report
    # the same as results.json says, summarised from rounds.jsonl (its start events and rounds)
    assert _batch_row(report, "fedavg") == FEDAVG_BATCH_ROW
    assert _batch_row(report, "fedavg+grow-batch") == GROW_BATCH_ROW
    # killed in round 3: steps 17 + 17, round-2 loss and smoothed B_simple
    assert _batch_row(report, "fedavg+coupled") == [
        "`fedavg+coupled`", "8–16–64", "linear; rate ×0.2 at round 3", "34", "0.700", "55",
    ]  # fmt: skip
    _assert_batch_pngs(report, run_dir)


@pytest.mark.parametrize("recorded", ["before batch data", "one batch size, no rule"])
def test_plain_run_has_no_batch_section(tmp_path, recorded):
    if recorded == "before batch data":
        run_dir = make_run(tmp_path)
    else:
        run_dir = make_batch_run(
            tmp_path,
            strategies=("fedavg",),
            own=dict.fromkeys(OWN_BATCH, 16),
            noise={"fedavg": (None, None, None)},
            decay="",
        )
    report = render_report(run_dir).read_text()
    assert "Batch size" not in report and "B_simple" not in report
    assert not any((run_dir / png).exists() for png in BATCH_PNGS)


def test_noise_scale_plot_only_when_measured(tmp_path):
    # several batch sizes but no noise scale: the section without the noise-scale plot
    unmeasured = make_batch_run(
        tmp_path / "unmeasured", strategies=("fedavg",), noise={"fedavg": (None, None, None)}
    )
    report = render_report(unmeasured).read_text()
    assert _batch_row(report, "fedavg") == [
        "`fedavg`", "8–16–64", "shared rate; rate ×0.2 at round 3", "51", "0.600", "n/a",
    ]  # fmt: skip
    assert NOISE_SCALE_PNG not in report and not (unmeasured / NOISE_SCALE_PNG).exists()
    _assert_batch_pngs(report, unmeasured, (LOSS_VS_STEPS_PNG, RATE_VS_BATCH_PNG))
    # measured, but never a positive or a smoothed estimate: an empty plot, not a crash
    negative = make_batch_run(
        tmp_path / "negative",
        strategies=("fedavg",),
        own=dict.fromkeys(OWN_BATCH, 16),
        noise={"fedavg": ((None, None), (None, -4.0), (None, 0.0))},
        decay="",
    )
    report = render_report(negative).read_text()
    assert _batch_row(report, "fedavg") == ["`fedavg`", "16", "shared rate", "51", "0.600", "0"]
    _assert_batch_pngs(report, negative)


# ------------------------------------------------------------------------------------------------
# Continual runs: a task stream
# ------------------------------------------------------------------------------------------------

CONTINUAL_PNGS = (CONTINUAL_R_PNG, RATE_PER_ROUND_PNG)
CONTINUAL_STRATEGIES = ("fedavg", "fedavg+cosine")
# Two clients learn two tasks over four rounds: task 1 in rounds 1-2, task 2 in rounds 3-4.
# Accuracy on (task 1, task 2) after each round, per client. The pooled R (each client weighs 1)
# takes rounds 2 and 4: fedavg [[0.9, 0.1], [0.3, 0.8]], fedavg+cosine [[0.9, 0.2], [0.45, 0.7]].
TASK_ACCURACY = {
    "fedavg": {
        0: {1: [0.5, 0.0], 2: [1.0, 0.1], 3: [0.7, 0.5], 4: [0.4, 0.8]},
        1: {1: [0.5, 0.0], 2: [0.8, 0.1], 3: [0.5, 0.5], 4: [0.2, 0.8]},
    },
    "fedavg+cosine": {
        0: {1: [0.5, 0.1], 2: [0.9, 0.2], 3: [0.8, 0.4], 4: [0.5, 0.7]},
        1: {1: [0.5, 0.1], 2: [0.9, 0.2], 3: [0.6, 0.4], 4: [0.4, 0.7]},
    },
}
R_POOLED = {"fedavg": [[0.9, 0.1], [0.3, 0.8]], "fedavg+cosine": [[0.9, 0.2], [0.45, 0.7]]}
RATES = {"fedavg": (0.1, 0.1, 0.1, 0.1), "fedavg+cosine": (0.1, 0.075, 0.025, 0.0)}
# ACC = mean of the last row; BWT = R10 - R00; FWT = R01 - baseline 0.1; forgetting = -BWT.
# fedavg+cosine forgets 0.45 / 0.6 - 1 = 25% less than fedavg.
CONTINUAL_METRICS = {
    "fedavg": {
        "acc": 0.55,
        "learning_acc": 0.85,
        "bwt": -0.6,
        "fwt": 0.0,
        "forgetting": 0.6,
        "ensemble_acc": 0.7,
    },
    "fedavg+cosine": {
        "acc": 0.575,
        "learning_acc": 0.8,
        "bwt": -0.45,
        "fwt": 0.1,
        "forgetting": 0.45,
        "ensemble_acc": 0.65,
    },
}
# strategy, schedule, replay, ACC final model, ACC ensemble, LA (mean diagonal), BWT, FWT,
# forgetting, vs fedavg
FEDAVG_CONTINUAL_ROW = [
    "`fedavg`", "constant", "no", "55.0", "70.0", "85.0", "-60.0", "0.0", "60.0"
]  # fmt: skip
COSINE_CONTINUAL_ROW = [
    "`fedavg+cosine`", "cosine", "no", "57.5", "65.0", "80.0", "-45.0", "10.0", "45.0"
]  # fmt: skip


def _continual_round_line(strategy: str, round_number: int, accuracy: dict) -> dict:
    rate = RATES[strategy][round_number - 1]
    return {
        "strategy": strategy,
        "round": round_number,
        "accuracy_mean": 0.5,
        "accuracy_worst10": 0.5,
        "clients": [
            {
                "partition_id": k,
                "role": "clean",
                "noise_true": 0.0,
                "lr": rate,
                "accuracy": 0.5,
                "schedule_factor": rate / 0.1,
                "task": 0 if round_number <= 2 else 1,
                "task_accuracy": accuracy[strategy][k][round_number],
                # -1: no test example of that task (its accuracy then is -1 in every round)
                "task_examples": [0 if a == -1 else 10 for a in accuracy[strategy][k][1]],
            }
            for k in (0, 1)
        ],
        "missing": [],
        "invalid_estimates": [],
    }


def _continual_block(strategy: str) -> dict:
    R = R_POOLED[strategy]
    return {
        "stream": "class-incremental",
        "num_tasks": 2,
        "schedule": "cosine" if strategy.endswith("+cosine") else "constant",
        "replay": False,
        "task_starts": [[1, 3], [1, 3]],
        "snapshot_rounds": [2, 4],
        "R": R,
        "baseline": [0.1, 0.1],
        **{k: v for k, v in CONTINUAL_METRICS[strategy].items() if k != "ensemble_acc"},
        "forgetting_per_task": [CONTINUAL_METRICS[strategy]["forgetting"]],
        "final_task_accuracy": R[-1],
        "final_acc": CONTINUAL_METRICS[strategy]["acc"],
        "ensemble_task_accuracy": [0.9, 2 * CONTINUAL_METRICS[strategy]["ensemble_acc"] - 0.9],
        "ensemble_acc": CONTINUAL_METRICS[strategy]["ensemble_acc"],
        "lr_mean_per_round": list(RATES[strategy]),
        "multipliers": [rate / 0.1 for rate in RATES[strategy]],
        "clients": [],
    }


def make_continual_run(
    root: Path,
    *,
    finished: bool = True,
    stagger: int = 0,
    accuracy: dict | None = None,
    blocks: dict | None = None,
) -> Path:
    """A fake continual run: 2 strategies x 2 clients x 2 tasks x 4 rounds; unfinished: no
    results.json, and ``fedavg+cosine`` killed after round 3 (in task 2)."""
    accuracy = TASK_ACCURACY if accuracy is None else accuracy
    run_dir = root / "2025-01-01T00-00-00-stream"
    run_dir.mkdir(parents=True)
    (run_dir / "config.toml").write_text(
        f'name = "stream"\nseed = 2\nstrategies = "{",".join(CONTINUAL_STRATEGIES)}"\n'
        'num-server-rounds = 4\nnum-clients = 2\nlr = 0.1\nstream = "class-incremental"\n'
        f"num-tasks = 2\ntask-stagger = {stagger}\n"
    )
    starts = arrival_rounds(4, 2, 2, stagger)
    lines = []
    for strategy in CONTINUAL_STRATEGIES:
        block = _continual_block(strategy)
        continual = {
            **{k: block[k] for k in ("stream", "num_tasks", "schedule", "replay", "multipliers")},
            "task_starts": starts.tolist(),
            "task_ends": task_ends(starts, 4).tolist(),
            "snapshot_rounds": block["snapshot_rounds"],
        }
        clients = [
            {
                "partition_id": k,
                "role": "clean",
                "noise_true": 0.0,
                "num_examples": 20,
                "own_batch_size": 32,
            }
            for k in (0, 1)
        ]
        lines.append(start_event(strategy, clients, continual=continual))
        baseline = {k: [0.1, 0.1] for k in (0, 1)}  # the untrained model
        lines.append({"strategy": strategy, "event": "baseline", "task_baseline": baseline})
        lines += [
            _continual_round_line(strategy, r, accuracy)
            for r in (1, 2, 3, 4)
            if finished or (strategy, r) != ("fedavg+cosine", 4)
        ]
        if finished or strategy == "fedavg":
            ensemble = block["ensemble_task_accuracy"]
            lines.append(
                {
                    "strategy": strategy,
                    "event": "ensemble",
                    "task_ensemble": {k: ensemble for k in (0, 1)},
                    "ensemble_examples": {k: [10, 10] for k in (0, 1)},
                }
            )
            lines.append(done_event(strategy))
    (run_dir / "rounds.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    if finished:
        blocks = (
            {s: _continual_block(s) for s in CONTINUAL_STRATEGIES} if blocks is None else blocks
        )
        entry = {
            "fairness": {"mean": 0.5, "worst10": 0.5},
            "gap_clean_noisy": None,
            "estimator": {"name": None, "spearman": None},
            "clients": [],
        }
        strategies = {s: {**entry, "continual": block} for s, block in blocks.items()}
        results = {"name": "stream", "seed": 2, "num_rounds": 4, "strategies": strategies}
        (run_dir / "results.json").write_text(json.dumps(results))
    return run_dir


def _continual_section(report: str) -> str:
    return report[report.index("## Continual learning") :]


def _continual_row(report: str, strategy: str) -> list[str]:
    return _row(_continual_section(report), strategy)


def _assert_continual_pngs(report: str, run_dir: Path) -> None:
    section = _continual_section(report)
    for png in CONTINUAL_PNGS:
        assert f"]({png})" in section
        data = (run_dir / png).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000


def test_arrival_text():
    assert _arrival_text([[1, 3], [1, 3]]) == "together at every client, in rounds 1 and 3"
    assert _arrival_text([[1, 6], [3, 8], [5, 10]]) == (
        "staggered: in rounds 1 and 6 at client 0, up to rounds 5 and 10 at client 2 (the last)"
    )
    assert _arrival_text([[1]]) == "together at every client, in rounds 1"


def test_relative_forgetting():
    blocks = {
        "fedavg": {"schedule": "constant", "forgetting": 0.8},
        "fedavg+step": {"schedule": "step", "forgetting": 0.6},  # 0.6 / 0.8 - 1
        "fedavg+phases+replay": {"schedule": "phases", "forgetting": 1.0},  # 1.0 / 0.8 - 1
        "fedavg+cosine": {"schedule": "cosine", "forgetting": None},  # R incomplete
    }
    relative = _relative_forgetting(blocks)
    assert relative == pytest.approx(
        {"fedavg": 0.0, "fedavg+step": -0.25, "fedavg+phases+replay": 0.25, "fedavg+cosine": None}
    )
    # no constant-rate fedavg in the run: nothing to compare with
    assert _relative_forgetting({"fedavg+step": blocks["fedavg+step"]}) is None
    # fedavg forgot nothing: no ratio
    nothing = {**blocks, "fedavg": {"schedule": "constant", "forgetting": 0.0}}
    assert set(_relative_forgetting(nothing).values()) == {None}


def test_continual_section_from_results(tmp_path):
    run_dir = make_continual_run(tmp_path)
    report = render_report(run_dir).read_text()
    assert "Unfinished run" not in report and "from rounds.jsonl" not in report
    assert (
        "Stream `class-incremental`: each client learns 2 tasks in turn; they start together at "
        "every client, in rounds 1 and 3."
    ) in report
    assert "| Forgetting vs `fedavg` |" in report
    assert _continual_row(report, "fedavg") == FEDAVG_CONTINUAL_ROW + ["reference"]
    assert _continual_row(report, "fedavg+cosine") == COSINE_CONTINUAL_ROW + ["-25%"]
    _assert_continual_pngs(report, run_dir)
    run = _load_run(run_dir)
    assert run["continual"]["fedavg+cosine"]["rates"] == [
        (1, 0.1),
        (2, 0.075),
        (3, 0.025),
        (4, 0.0),
    ]
    np.testing.assert_allclose(run["continual"]["fedavg"]["R"], R_POOLED["fedavg"])
    assert "### `fedavg+cosine`" in report  # the rest of the report is still there


def test_continual_section_of_killed_run_from_rounds(tmp_path):
    run_dir = make_continual_run(tmp_path, finished=False)
    report = render_report(run_dir).read_text()
    assert "`fedavg+cosine` round 3 of 4" in report
    section = _continual_section(report)
    assert "`fedavg`, `fedavg+cosine`: from rounds.jsonl (run not finished)" in section
    # fedavg ran to the end: summarised from its log as results.json is
    assert _continual_row(report, "fedavg") == FEDAVG_CONTINUAL_ROW + ["reference"]
    # killed in task 2: R has its first row only, so no metric yet, and no ensemble
    row = _continual_row(report, "fedavg+cosine")
    assert row == ["`fedavg+cosine`", "cosine", "no", *["n/a"] * 7]
    run = _load_run(run_dir)
    np.testing.assert_allclose(run["continual"]["fedavg"]["R"], R_POOLED["fedavg"])
    np.testing.assert_allclose(
        run["continual"]["fedavg+cosine"]["R"], [[0.9, 0.2], [np.nan, np.nan]], equal_nan=True
    )
    assert run["continual"]["fedavg+cosine"]["rates"] == [(1, 0.1), (2, 0.075), (3, 0.025)]
    assert run["continual"]["fedavg"]["starts"] == [[1, 3], [1, 3]]
    _assert_continual_pngs(report, run_dir)


def test_continual_staggered_task_ends_from_rounds(tmp_path):
    # stagger 1: client 1 starts task 2 in round 4, so its task 1 ends in round 3, not 2
    run_dir = make_continual_run(tmp_path, finished=False, stagger=1)
    report = render_report(run_dir).read_text()
    assert (
        "they start staggered: in rounds 1 and 3 at client 0, up to rounds 1 and 4 at client 1 "
        "(the last)."
    ) in report
    # row 1: client 0 after round 2 (1.0, 0.1), client 1 after round 3 (0.5, 0.5)
    R = _load_run(run_dir)["continual"]["fedavg"]["R"]
    np.testing.assert_allclose(R, [[0.75, 0.3], [0.3, 0.8]])
    # ACC (0.3 + 0.8) / 2; ensemble (0.9 + 0.5) / 2; LA (0.75 + 0.8) / 2; BWT and forgetting
    # 0.3 - 0.75; FWT 0.3 - baseline 0.1
    row = _continual_row(report, "fedavg")[3:9]
    assert row == ["55.0", "70.0", "77.5", "-45.0", "20.0", "45.0"]


def test_continual_nulls_do_not_crash(tmp_path):
    # results.json: an incomplete R (null entries), so no metric, no baseline and no ensemble
    block = {
        **_continual_block("fedavg"),
        "R": [[0.9, None], [None, 0.8]],
        "baseline": None,
        "final_acc": None,
        "ensemble_task_accuracy": None,
        "ensemble_acc": None,
        "lr_mean_per_round": [0.1, None, float("nan"), 0.1],
    }
    for key in ("acc", "learning_acc", "bwt", "fwt", "forgetting", "forgetting_per_task"):
        del block[key]
    run_dir = make_continual_run(tmp_path / "results", blocks={"fedavg": block})
    report = render_report(run_dir).read_text()
    # fedavg stays the reference, though its forgetting (and so every ratio) is unknown
    row = _continual_row(report, "fedavg")
    assert row == ["`fedavg`", "constant", "no", *["n/a"] * 6, "reference"]
    run = _load_run(run_dir)
    np.testing.assert_allclose(
        run["continual"]["fedavg"]["R"], [[0.9, np.nan], [np.nan, 0.8]], equal_nan=True
    )
    assert run["continual"]["fedavg"]["rates"] == [(1, 0.1), (4, 0.1)]
    _assert_continual_pngs(report, run_dir)
    # rounds.jsonl: client 1 has no test example of task 2 (-1) and a null accuracy in round 4;
    # the pooled R then takes client 0 alone there: [[0.9, 0.1], [0.4, 0.8]]
    accuracy = copy.deepcopy(TASK_ACCURACY)
    for round_number, row in accuracy["fedavg"][1].items():
        row[1] = -1
        if round_number == 4:
            row[0] = None
    run_dir = make_continual_run(tmp_path / "rounds", finished=False, accuracy=accuracy)
    report = render_report(run_dir).read_text()
    np.testing.assert_allclose(
        _load_run(run_dir)["continual"]["fedavg"]["R"], [[0.9, 0.1], [0.4, 0.8]]
    )
    # ACC (0.4 + 0.8) / 2, ensemble (0.9 + 0.5) / 2, LA (0.9 + 0.8) / 2, BWT and forgetting
    # 0.4 - 0.9, FWT 0.1 - baseline 0.1
    row = _continual_row(report, "fedavg")[3:9]
    assert row == ["60.0", "70.0", "85.0", "-50.0", "0.0", "50.0"]
    _assert_continual_pngs(report, run_dir)


@pytest.mark.parametrize("finished", [True, False])
def test_continual_render_is_idempotent(tmp_path, finished):
    run_dir = make_continual_run(tmp_path, finished=finished)
    first = render_report(run_dir).read_text()
    pngs = [(run_dir / png).read_bytes() for png in CONTINUAL_PNGS]
    assert render_report(run_dir).read_text() == first
    assert [(run_dir / png).read_bytes() for png in CONTINUAL_PNGS] == pngs


@pytest.mark.parametrize("finished", [True, False])
def test_run_without_stream_has_no_continual_section(tmp_path, finished):
    run_dir = make_run(tmp_path, finished=finished)
    report = render_report(run_dir).read_text()
    assert "Continual" not in report and "rate_per_round" not in report
    assert not any((run_dir / png).exists() for png in CONTINUAL_PNGS)
    # the PNGs every run gets are still written
    assert all((run_dir / png).exists() for png in PNGS)


# ------------------------------------------------------------------------------------------------
# Metrics beyond accuracy, the fairness-metric, and sites without truth
# ------------------------------------------------------------------------------------------------

# Three clients, one round of fedavg, written by the real recorder. Client 0 is the noisy one
# (when there is truth). AUROC 0.7, 0.85, 0.95: mean 2.5 / 3 = 83.3%; losses 0.9, 0.5, 0.3:
# mean 1.7 / 3 = 0.567, worst (highest) 0.9. Accuracy gap (0.8 + 0.9) / 2 - 0.6 = 25 pp.


def make_metrics_run(root: Path, *, fairness_metric: str, truth: bool, finished: bool) -> Path:
    from fedlr.fl.recorder import RunRecorder
    from fedlr.fl.strategy import ClientInfo, RoundLog, build_strategy

    cfg = resolve(
        overrides={
            "name": "sites",
            "num-clients": 3,
            "noisy-clients": 1,
            "hard-clean-clients": 0,
            "strategies": "fedavg",
            "num-server-rounds": 1,
            "metrics": "accuracy,auroc",
            "fairness-metric": fairness_metric,
        }
    )
    clients = [
        ClientInfo(
            node_id=10 + k,
            partition_id=k,
            num_examples=20,
            noise_true=(0.4 if k == 0 else 0.0) if truth else None,
            role=("noisy" if k == 0 else "clean") if truth else None,
        )
        for k in range(3)
    ]
    strategy = build_strategy("fedavg", cfg, clients)
    strategy.rounds[1] = RoundLog(
        lr=dict.fromkeys(range(3), 0.1),
        accuracy={0: 0.6, 1: 0.8, 2: 0.9},
        eval_loss={0: 0.9, 1: 0.5, 2: 0.3},
        metrics={0: {"auroc": 0.7, "sensitivity": 0.25}, 1: {"auroc": 0.85}, 2: {"auroc": 0.95}},
    )
    run_dir = root / f"{fairness_metric}-{truth}-{finished}"
    recorder = RunRecorder(run_dir, cfg, clients)
    recorder.start_strategy("fedavg")
    recorder.round_done("fedavg", strategy, 1)
    if finished:
        recorder.strategy_done("fedavg", strategy)
    recorder.close()
    return run_dir


def _header(report: str, first: str) -> list[str]:
    line = next(x for x in report.splitlines() if x.startswith(f"| {first} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


@pytest.mark.parametrize("finished", [True, False])
def test_report_of_an_auroc_fairness_metric(tmp_path, finished):
    run_dir = make_metrics_run(tmp_path, fairness_metric="auroc", truth=True, finished=finished)
    report = render_report(run_dir).read_text()
    assert _header(report, "Strategy") == [
        "Strategy", "Mean AUROC (%)", "Variance (%²)", "Worst-10% (%)", "Best-10% (%)", "Jain",
        "Gini", "Clean−noisy acc. gap (pp)", "Spearman ρ",
    ]  # fmt: skip
    row = _row(report, "fedavg")
    assert row[1] == "83.3" and row[3] == "70.0" and row[4] == "95.0" and row[7] == "25.0"
    assert "Fairness columns are of each client's AUROC on its clean test split" in report
    # the per-client table holds every reported metric
    assert _header(report, "Partition") == [
        "Partition", "Role", "True noise", "Estimate", "LR", "Accuracy (%)", "auroc",
        "sensitivity",
    ]  # fmt: skip
    assert "| 0 | noisy | 0.40 | n/a | 0.1 | 60.0 | 0.700 | 0.25 |" in report
    assert "| 2 | clean | 0.00 | n/a | 0.1 | 90.0 | 0.950 | n/a |" in report
    assert "![Final client AUROC vs true noise](client_accuracy_vs_noise.png)" in report
    with (run_dir / "results.csv").open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert list(rows[0])[-2:] == ["auroc", "sensitivity"]
    assert [(r["auroc"], r["sensitivity"]) for r in rows] == [
        ("0.7", "0.25"),
        ("0.85", ""),
        ("0.95", ""),
    ]
    for png in PNGS:
        assert (run_dir / png).read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize("finished", [True, False])
def test_report_of_a_loss_fairness_metric_counts_the_highest_loss_as_worst(tmp_path, finished):
    run_dir = make_metrics_run(tmp_path, fairness_metric="loss", truth=True, finished=finished)
    report = render_report(run_dir).read_text()
    header = _header(report, "Strategy")
    assert header[1:5] == ["Mean loss", "Variance", "Worst-10% (highest)", "Best-10% (lowest)"]
    row = _row(report, "fedavg")
    assert row[1] == "0.567" and row[3] == "0.900" and row[4] == "0.300"
    assert "the worst 10% are the clients of highest loss" in report
    assert _header(report, "Partition")[-3:] == ["auroc", "loss", "sensitivity"]
    assert "| 1 | clean | 0.00 | n/a | 0.1 | 80.0 | 0.850 | 0.500 | n/a |" in report


@pytest.mark.parametrize("finished", [True, False])
def test_report_of_sites_without_truth_shows_no_truth(tmp_path, finished):
    run_dir = make_metrics_run(tmp_path, fairness_metric="accuracy", truth=False, finished=finished)
    report = render_report(run_dir).read_text()
    assert _header(report, "Strategy")[-2:] == ["Jain", "Gini"]  # no gap, no Spearman ρ
    assert _row(report, "fedavg")[1] == "76.7"
    assert _header(report, "Partition") == [
        "Partition", "Estimate", "LR", "Accuracy (%)", "auroc", "sensitivity",
    ]  # fmt: skip
    assert "Hard-but-clean" not in report and "Spearman" not in report and "gap" not in report
    assert "Accuracies are on each client's test split, in percent. Best" in report
    assert "![Final client accuracy per partition](client_accuracy_vs_noise.png)" in report
    with (run_dir / "results.csv").open(newline="") as stream:
        columns = next(csv.reader(stream))
    assert "role" not in columns and "noise_true" not in columns
    for png in PNGS:
        assert (run_dir / png).read_bytes()[:8] == PNG_MAGIC
