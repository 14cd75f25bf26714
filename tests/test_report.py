import csv
import json
from pathlib import Path

import pytest

from fedlr.report import load_results, load_rounds, render_report, write_csv

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PNGS = ("accuracy_per_round.png", "client_accuracy_vs_noise.png", "rate_vs_noise.png")

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
    lines = [
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
    # computed from round 3: fedavg Jain = 3.1^2 / (4 * 2.47) = 0.9727
    row = _row(report, "fedavg")
    assert row[1] == "77.5" and row[3] == "60.0" and row[5] == "0.973"
    assert row[7:] == ["n/a", "n/a"]
    assert _row(report, "noise-adaptive")[1] == "**82.5**"
    assert "invalid noise estimates" in report
    for png in PNGS:
        assert (run_dir / png).read_bytes()[:8] == PNG_MAGIC


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


def test_empty_run_dir_fails_loudly(tmp_path):
    with pytest.raises(ValueError, match="nothing to report"):
        render_report(tmp_path)
