"""fedlr.fl.recorder: the run directory, from hand-filled round logs.

Four clients (partition ids 0..3; examples 100..400; true noise 0.5, 0.3, 0, 0). Hand-worked
numbers for the noise-adaptive strategy below:

* round 1: sampled 0..3; client 3 sends no train reply (missing); client 1's estimate is NaN
  (invalid); accuracies 0.5, 0.6, 0.9, 0.8 -> mean 0.7, worst10 = min = 0.5 (ceil(0.1 * 4) = 1).
* round 2: client 3 misses evaluation too, so its latest accuracy stays 0.8 (round 1): final
  accuracies 0.7, 0.6, 0.9, 0.8 -> mean 0.75, variance (0.05² + 0.15² + 0.15² + 0.05²) / 4 =
  0.0125, worst10 0.6, best10 0.9, clean - noisy gap (0.9 + 0.8) / 2 - (0.7 + 0.6) / 2 = 0.2.
* smoothed estimates 0.4, 0.3, 0.1 and none for client 3: same order as the true noise of
  clients 0..2 -> Spearman 1.0 over the three clients with an estimate.
"""

from __future__ import annotations

import json
import math

import pytest

from fedlr import config as fedlr_config
from fedlr.fl.recorder import RunRecorder, new_run_dir
from fedlr.fl.strategy import RoundLog, build_strategy
from fedlr.analysis import is_round, summarize

NAN = float("nan")
ROUND_KEYS = {
    "strategy",
    "round",
    "elapsed_s",
    "accuracy_mean",
    "accuracy_worst10",
    "clients",
    "missing",
    "invalid_estimates",
    "errors",
    "loss_mean",
    "steps_mean",
    "steps_total",
    "noise_scale",
    "noisy_group",  # a strategy whose rates follow the noise (rate-guard)
}
ROUND_CLIENT_KEYS = {
    "partition_id",
    "role",
    "noise_true",
    "lr",
    "noise_estimate",
    "noise_smoothed",
    "accuracy",
    "train_loss",
    "aggregation_weight",
    "eval_loss",
    "batch_size",
    "coupling_factor",
    "schedule_factor",
    "steps",
}
RESULT_CLIENT_KEYS = {
    "partition_id",
    "role",
    "noise_true",
    "noise_estimate",
    "lr",
    "accuracy",
    "num_examples",
    "batch_size",
    "own_batch_size",
    "coupling_factor",
}


def strict_loads(text: str):
    """``json.loads`` that refuses NaN and Infinity (not JSON)."""

    def refuse(constant: str):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def cfg():
    return fedlr_config.resolve(
        overrides={"name": "unit", "num-clients": 4, "noisy-clients": 2, "seed": 3}
    )


@pytest.fixture
def clients(make_clients):
    return make_clients([100, 200, 300, 400], noise_true=[0.5, 0.3, 0.0, 0.0])


@pytest.fixture
def adaptive(cfg, clients):
    """A noise-adaptive strategy whose two rounds are filled by hand (see the module docstring)."""
    strategy = build_strategy("noise-adaptive", cfg, clients)
    strategy.rounds[1] = RoundLog(
        lr={0: 0.1, 1: 0.1, 2: 0.1, 3: 0.1},
        noise_estimate={0: 0.4, 1: NAN, 2: 0.1},
        noise_smoothed={0: 0.4, 2: 0.1},
        train_loss={0: 2.0, 1: 1.5, 2: NAN},
        accuracy={0: 0.5, 1: 0.6, 2: 0.9, 3: 0.8},
        sampled=[0, 1, 2, 3],
        invalid_estimates=[{"partition_id": 1, "value": "nan"}],
    )
    strategy.rounds[2] = RoundLog(
        lr={0: 0.05, 1: 0.08, 2: 0.2, 3: 0.1},
        noise_estimate={0: 0.4, 1: 0.3, 2: 0.1, 3: 0.02},
        noise_smoothed={0: 0.4, 1: 0.3, 2: 0.1},
        train_loss={0: 1.0, 1: 1.2, 2: 0.4, 3: 0.6},
        accuracy={0: 0.7, 1: 0.6, 2: 0.9},
        sampled=[0, 1, 2, 3],
        errors=[{"partition_id": 3, "reason": "boom"}],
    )
    strategy.ema.values = {0: 0.4, 1: 0.3, 2: 0.1}
    return strategy


@pytest.fixture
def recorder(tmp_path, cfg, clients):
    rec = RunRecorder(tmp_path / "run", cfg, list(reversed(clients)))
    yield rec
    rec.close()


def record_rounds(recorder, name, strategy) -> None:
    """Write every logged round's line, as the server app does before a strategy is done."""
    for server_round in sorted(strategy.rounds):
        recorder.round_done(name, strategy, server_round)


def round_lines(run_dir) -> list[dict]:
    lines = [strict_loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
    return [line for line in lines if is_round(line)]


# -- rounds.jsonl ----------------------------------------------------------------------------------


def test_round_done_appends_one_json_line_per_call(recorder, adaptive):
    seen = []
    recorder.on_round = lambda name, r, line: seen.append((name, r, line))
    recorder.start_strategy("noise-adaptive")

    first = recorder.round_done("noise-adaptive", adaptive, 1)
    assert len(round_lines(recorder.run_dir)) == 1
    recorder.round_done("noise-adaptive", adaptive, 2)

    lines = round_lines(recorder.run_dir)
    assert len(lines) == 2
    assert lines[0] == first  # what is returned is what is written
    assert [(name, r) for name, r, _ in seen] == [("noise-adaptive", 1), ("noise-adaptive", 2)]
    line = lines[0]
    assert set(line) == ROUND_KEYS
    assert line["strategy"] == "noise-adaptive" and line["round"] == 1
    assert 0.0 <= line["elapsed_s"] < 60.0
    assert line["accuracy_mean"] == pytest.approx(0.7)
    assert line["accuracy_worst10"] == pytest.approx(0.5)
    assert line["missing"] == [3]
    assert line["invalid_estimates"] == [{"partition_id": 1, "value": "nan"}]
    assert line["errors"] == []
    assert lines[1]["missing"] == []
    assert lines[1]["errors"] == [{"partition_id": 3, "reason": "boom"}]


def test_round_line_has_one_row_per_client_and_nan_as_null(recorder, adaptive):
    recorder.start_strategy("noise-adaptive")
    line = recorder.round_done("noise-adaptive", adaptive, 1)

    rows = line["clients"]
    assert [row["partition_id"] for row in rows] == [0, 1, 2, 3]  # sorted by partition id
    assert all(set(row) == ROUND_CLIENT_KEYS for row in rows)
    assert rows[0] == {
        "partition_id": 0,
        "role": "noisy",
        "noise_true": 0.5,
        "lr": 0.1,
        "noise_estimate": 0.4,
        "noise_smoothed": 0.4,
        "accuracy": 0.5,
        "train_loss": 2.0,
        "aggregation_weight": None,  # the hand-filled log has no aggregation
        "eval_loss": None,  # nor batch sizes, steps or test losses
        "batch_size": None,
        "coupling_factor": None,
        "schedule_factor": None,
        "steps": None,
    }
    assert rows[1]["noise_estimate"] is None  # NaN estimate
    assert rows[1]["noise_smoothed"] is None  # none this round
    assert rows[2]["train_loss"] is None  # NaN loss
    assert rows[3]["role"] == "clean"
    assert rows[3]["train_loss"] is None and rows[3]["noise_estimate"] is None  # missing
    assert rows[3]["accuracy"] == 0.8


def test_round_without_a_log_writes_nothing(recorder, adaptive):
    assert recorder.round_done("noise-adaptive", adaptive, 7) == {}
    assert (recorder.run_dir / "rounds.jsonl").read_text() == ""


def test_a_nan_accuracy_is_written_as_null_and_left_out_of_the_summary(recorder, adaptive):
    # aggregate_evaluate logs NaN for an evaluate reply without a numeric accuracy.
    adaptive.rounds[1].accuracy[3] = NAN
    recorder.start_strategy("noise-adaptive")
    recorder.round_done("noise-adaptive", adaptive, 1)

    line = round_lines(recorder.run_dir)[0]
    assert line["clients"][3]["accuracy"] is None
    assert line["accuracy_mean"] == pytest.approx((0.5 + 0.6 + 0.9) / 3)


# -- results.json ----------------------------------------------------------------------------------


def test_strategy_done_summarises_into_results_json(recorder, adaptive, cfg):
    recorder.start_strategy("noise-adaptive")
    record_rounds(recorder, "noise-adaptive", adaptive)
    returned = recorder.strategy_done("noise-adaptive", adaptive)

    results = strict_loads((recorder.run_dir / "results.json").read_text())
    assert results["name"] == "unit" and results["seed"] == 3
    assert results["num_rounds"] == cfg["num-server-rounds"]
    assert results["estimator"] == cfg["estimator"]
    summary = results["strategies"]["noise-adaptive"]
    assert summary == returned

    fairness = summary["fairness"]
    assert set(fairness) == {"mean", "variance", "worst10", "best10", "jain", "gini"}
    assert fairness["mean"] == pytest.approx(0.75)
    assert fairness["variance"] == pytest.approx(0.0125)
    assert fairness["worst10"] == pytest.approx(0.6)
    assert fairness["best10"] == pytest.approx(0.9)
    assert summary["gap_clean_noisy"] == pytest.approx(0.2)
    assert summary["estimator"] == {"name": cfg["estimator"], "spearman": pytest.approx(1.0)}
    assert summary["accuracy_per_round"] == pytest.approx([0.7, (0.7 + 0.6 + 0.9) / 3])

    rows = summary["clients"]
    assert all(set(row) == RESULT_CLIENT_KEYS for row in rows)
    assert rows[0] == {
        "partition_id": 0,
        "role": "noisy",
        "noise_true": 0.5,
        "noise_estimate": 0.4,
        "lr": 0.05,
        "accuracy": 0.7,
        "num_examples": 100,
        "batch_size": None,  # the hand-filled log has no batch sizes
        "own_batch_size": 16,  # the config's batch-size
        "coupling_factor": None,
    }
    assert [row["partition_id"] for row in rows] == [0, 1, 2, 3]
    assert [row["accuracy"] for row in rows] == [0.7, 0.6, 0.9, 0.8]  # 3: its round-1 value
    assert [row["lr"] for row in rows] == [0.05, 0.08, 0.2, 0.1]
    assert rows[3]["noise_estimate"] is None


def test_results_json_is_rewritten_with_every_finished_strategy(recorder, adaptive, cfg, clients):
    record_rounds(recorder, "noise-adaptive", adaptive)
    recorder.strategy_done("noise-adaptive", adaptive)
    oracle = build_strategy("oracle-noise-rates", cfg, clients)
    oracle.rounds[1] = RoundLog(
        lr={0: 0.05, 1: 0.05, 2: 0.15, 3: 0.15}, accuracy={0: 0.4, 1: 0.5, 2: 1.0, 3: 0.9}
    )
    record_rounds(recorder, "oracle-noise-rates", oracle)
    recorder.strategy_done("oracle-noise-rates", oracle)

    results = strict_loads((recorder.run_dir / "results.json").read_text())
    assert list(results["strategies"]) == ["noise-adaptive", "oracle-noise-rates"]
    assert results["strategies"]["noise-adaptive"]["fairness"]["mean"] == pytest.approx(0.75)
    summary = results["strategies"]["oracle-noise-rates"]
    assert summary["fairness"]["mean"] == pytest.approx(0.7)
    # the oracle's "estimate" is the truth; nothing is estimated, so no correlation
    assert [row["noise_estimate"] for row in summary["clients"]] == [0.5, 0.3, 0.0, 0.0]
    assert summary["estimator"] == {"name": None, "spearman": None}
    assert not list(recorder.run_dir.glob("*.tmp"))


def test_a_nan_accuracy_does_not_break_results_json(recorder, adaptive):
    adaptive.rounds[2].accuracy[1] = NAN  # no numeric accuracy in round 2: keep round 1's 0.6
    record_rounds(recorder, "noise-adaptive", adaptive)
    recorder.strategy_done("noise-adaptive", adaptive)

    summary = strict_loads((recorder.run_dir / "results.json").read_text())["strategies"][
        "noise-adaptive"
    ]
    assert [row["accuracy"] for row in summary["clients"]] == [0.7, 0.6, 0.9, 0.8]
    assert summary["fairness"]["mean"] == pytest.approx(0.75)
    assert all(math.isfinite(a) for a in summary["accuracy_per_round"])


# -- config.toml and the run directory -------------------------------------------------------------


def test_config_toml_resolves_to_the_same_config(recorder, cfg):
    assert fedlr_config.resolve(recorder.run_dir / "config.toml") == cfg


def test_new_run_dir_makes_unique_directories(tmp_path):
    made = [new_run_dir(tmp_path / "runs", "demo") for _ in range(3)]
    assert len(set(made)) == 3
    for path in made:
        assert path.is_dir() and path.parent == tmp_path / "runs"
        assert "-demo" in path.name


# -- resume --------------------------------------------------------------------------------------


def test_resume_cuts_the_run_back_to_its_checkpoint(recorder, adaptive, cfg, clients):
    from fedlr.fl.checkpoint import Checkpoint

    for name in ("fedavg", "noise-adaptive"):
        recorder.start_strategy(name)
        recorder.round_done(name, adaptive, 1)
        recorder.round_done(name, adaptive, 2)
    recorder.strategy_done("fedavg", adaptive)
    recorder.close()
    with open(recorder.run_dir / "rounds.jsonl", "a") as log_:
        log_.write('{"strategy": "noise-adaptive", "rou')  # the kill cut this line short

    saved = Checkpoint(
        seed=3,
        done=["fedavg"],
        strategy="noise-adaptive",
        round=1,
        arrays={},
        strategy_state={},
        elapsed_s=7.0,
    )
    resumed = RunRecorder(recorder.run_dir, cfg, clients, resume=True, checkpoint=saved)
    resumed.start_strategy("noise-adaptive", elapsed_s=saved.elapsed_s)
    assert resumed.elapsed("noise-adaptive") >= 7.0
    resumed.round_done("noise-adaptive", adaptive, 2)
    resumed.close()
    assert [(x["strategy"], x["round"]) for x in round_lines(recorder.run_dir)] == [
        ("fedavg", 1),
        ("fedavg", 2),
        ("noise-adaptive", 1),
        ("noise-adaptive", 2),
    ]
    results = strict_loads((recorder.run_dir / "results.json").read_text())
    assert list(results["strategies"]) == ["fedavg"]
    # Events: fedavg's all kept; noise-adaptive's start kept (cut back to it) and not repeated.
    lines = [strict_loads(x) for x in (recorder.run_dir / "rounds.jsonl").read_text().splitlines()]
    events = [(x["strategy"], x["event"]) for x in lines if "event" in x]
    assert events == [("fedavg", "start"), ("noise-adaptive", "start"), ("fedavg", "done")]


def test_events_say_what_a_strategy_is_and_when_it_is_done(recorder, adaptive, cfg):
    recorder.start_strategy("noise-adaptive", adaptive)
    recorder.round_done("noise-adaptive", adaptive, 1)
    recorder.round_done("noise-adaptive", adaptive, 2)
    entry = recorder.strategy_done("noise-adaptive", adaptive)
    lines = [strict_loads(x) for x in (recorder.run_dir / "rounds.jsonl").read_text().splitlines()]
    assert [x.get("event", x.get("round")) for x in lines] == ["start", 1, 2, "done"]
    info = lines[0]["info"]
    assert info["rate_source"] == "estimate" and info["uses_estimates"] is True
    assert [c["partition_id"] for c in info["clients"]] == [0, 1, 2, 3]
    assert [c["num_examples"] for c in info["clients"]] == [100, 200, 300, 400]
    assert lines[-1]["elapsed_s"] == entry["elapsed_s"]
    # results.json is the summary of these lines, and a run read back gives it again
    assert summarize(lines, cfg) == {"noise-adaptive": entry}


def test_resume_without_a_checkpoint_starts_from_nothing(recorder, adaptive, cfg, clients):
    recorder.start_strategy("fedavg")
    recorder.round_done("fedavg", adaptive, 1)
    recorder.strategy_done("fedavg", adaptive)
    recorder.close()
    resumed = RunRecorder(recorder.run_dir, cfg, clients, resume=True, checkpoint=None)
    resumed.close()
    assert (recorder.run_dir / "rounds.jsonl").read_text() == ""
    assert strict_loads((recorder.run_dir / "results.json").read_text())["strategies"] == {}


# -- batch sizes, optimizer steps and the noise scale -----------------------------------------


def test_steps_losses_and_noise_scale_are_logged_per_round_and_summarised(recorder, adaptive):
    adaptive.rounds[1].steps = {0: 10, 1: 20, 2: 30}  # partition 3 did not train
    adaptive.rounds[1].eval_loss = {0: 1.0, 1: 2.0, 2: 3.0, 3: NAN}
    adaptive.rounds[1].batch_size = {0: 8, 1: 16, 2: 32, 3: 64}
    adaptive.rounds[1].coupling_factor = {0: 0.5, 1: 1.0, 2: 2.0, 3: 4.0}
    adaptive.rounds[1].noise_scale = {"clients": 3, "b_simple": 120.0, "b_simple_round": NAN}
    adaptive.rounds[2].steps = {0: 4, 1: 4, 2: 4, 3: 4}
    adaptive.rounds[2].eval_loss = {0: 0.5, 1: 0.5}
    recorder.start_strategy("noise-adaptive")
    first = recorder.round_done("noise-adaptive", adaptive, 1)
    second = recorder.round_done("noise-adaptive", adaptive, 2)

    assert first["steps_mean"] == 20.0 and first["steps_total"] == 20.0
    assert second["steps_mean"] == 4.0 and second["steps_total"] == 24.0  # cumulative
    assert first["loss_mean"] == pytest.approx(2.0)  # NaN left out
    assert first["noise_scale"] == {"clients": 3, "b_simple": 120.0, "b_simple_round": None}
    assert [r["batch_size"] for r in first["clients"]] == [8, 16, 32, 64]
    assert [r["steps"] for r in first["clients"]] == [10, 20, 30, None]
    assert round_lines(recorder.run_dir)[1] == second

    batches = recorder.strategy_done("noise-adaptive", adaptive)["batches"]
    assert batches["steps_per_round"] == [20.0, 4.0]
    assert batches["steps_total"] == 24.0
    assert batches["loss_per_round"] == [pytest.approx(2.0), 0.5]
    assert batches["final_loss"] == 0.5
    assert batches["b_simple"] == [120.0, None]
    assert batches["coupled"] is False and batches["coupling_rule"] is None


# -- metrics beyond accuracy, the fairness-metric, and runs without truth --------------------


def test_metrics_go_per_client_into_both_files_and_fairness_follows_the_fairness_metric(
    tmp_path, clients
):
    cfg = fedlr_config.resolve(
        overrides={
            "name": "unit",
            "num-clients": 4,
            "noisy-clients": 2,
            "metrics": "accuracy,auroc",
            "fairness-metric": "auroc",
        }
    )
    strategy = build_strategy("fedavg", cfg, clients)
    strategy.rounds[1] = RoundLog(
        accuracy={0: 0.5, 1: 0.6, 2: 0.9, 3: 0.8},
        metrics={0: {"auroc": 0.6}, 1: {"auroc": 0.8, "sensitivity": 0.3}, 2: {"auroc": 0.9}},
    )
    strategy.rounds[2] = RoundLog(accuracy={0: 0.7}, metrics={0: {"auroc": 0.7}})
    rec = RunRecorder(tmp_path / "run", cfg, clients)
    rec.start_strategy("fedavg")
    rec.round_done("fedavg", strategy, 1)
    rec.round_done("fedavg", strategy, 2)
    summary = rec.strategy_done("fedavg", strategy)
    rec.close()

    first, second = round_lines(rec.run_dir)
    assert all(set(row) == ROUND_CLIENT_KEYS | {"metrics"} for row in first["clients"])
    assert [row["metrics"] for row in first["clients"]] == [
        {"auroc": 0.6},
        {"auroc": 0.8, "sensitivity": 0.3},
        {"auroc": 0.9},
        {},  # client 3 reported none
    ]
    assert [row["metrics"] for row in second["clients"]] == [{"auroc": 0.7}, {}, {}, {}]
    assert first["accuracy_mean"] == pytest.approx(0.7)  # the per-round means stay accuracy's

    # each client's latest value of each metric
    assert [row["metrics"] for row in summary["clients"]] == [
        {"auroc": 0.7},
        {"auroc": 0.8, "sensitivity": 0.3},
        {"auroc": 0.9},
        {},
    ]
    assert all(set(row) == RESULT_CLIENT_KEYS | {"metrics"} for row in summary["clients"])
    # AUROC of the three clients that have one: 0.7, 0.8, 0.9
    assert summary["fairness_metric"] == "auroc"
    fairness = summary["fairness"]
    assert fairness["mean"] == pytest.approx(0.8)
    assert fairness["variance"] == pytest.approx(0.02 / 3)
    assert (fairness["worst10"], fairness["best10"]) == (0.7, 0.9)
    # the clean-noisy gap stays one of accuracy: (0.9 + 0.8) / 2 - (0.7 + 0.6) / 2
    assert summary["gap_clean_noisy"] == pytest.approx(0.2)
    assert strict_loads((rec.run_dir / "results.json").read_text())["strategies"]["fedavg"] == (
        summary
    )


def test_a_loss_fairness_metric_reads_the_eval_loss_and_worst_is_highest(tmp_path, clients):
    cfg = fedlr_config.resolve(
        overrides={"num-clients": 4, "noisy-clients": 2, "fairness-metric": "loss"}
    )
    strategy = build_strategy("fedavg", cfg, clients)
    strategy.rounds[1] = RoundLog(
        accuracy={0: 0.5, 1: 0.6, 2: 0.9, 3: 0.8}, eval_loss={0: 1.0, 1: 2.0, 2: 0.5, 3: 0.5}
    )
    strategy.rounds[2] = RoundLog(eval_loss={0: 0.8, 1: NAN})
    rec = RunRecorder(tmp_path / "run", cfg, clients)
    record_rounds(rec, "fedavg", strategy)
    summary = rec.strategy_done("fedavg", strategy)
    rec.close()

    assert "metrics" not in round_lines(rec.run_dir)[0]["clients"][0]  # eval_loss is there
    assert [row["metrics"] for row in summary["clients"]] == [
        {"loss": 0.8},
        {"loss": 2.0},  # round 2's NaN is not a value
        {"loss": 0.5},
        {"loss": 0.5},
    ]
    # losses 0.8, 2.0, 0.5, 0.5: mean 3.8 / 4; worst = the highest (ceil(0.4) = 1 client)
    fairness = summary["fairness"]
    assert fairness["mean"] == pytest.approx(0.95)
    assert (fairness["worst10"], fairness["best10"]) == (2.0, 0.5)
    assert summary["fairness_metric"] == "loss"


def test_clients_without_truth_have_no_truth_columns_and_no_truth_summaries(tmp_path, cfg, clients):
    from dataclasses import replace

    unknown = [replace(c, noise_true=None, role=None) for c in clients]
    strategy = build_strategy("noise-adaptive", cfg, unknown)
    strategy.rounds[1] = RoundLog(
        lr={0: 0.1, 1: 0.1, 2: 0.1, 3: 0.1},
        noise_estimate={0: 0.4, 1: 0.3, 2: 0.1, 3: 0.2},
        noise_smoothed={0: 0.4, 1: 0.3, 2: 0.1, 3: 0.2},
        accuracy={0: 0.5, 1: 0.6, 2: 0.9, 3: 0.8},
    )
    strategy.ema.values = {0: 0.4, 1: 0.3, 2: 0.1, 3: 0.2}
    rec = RunRecorder(tmp_path / "run", cfg, unknown)
    line = rec.round_done("noise-adaptive", strategy, 1)
    summary = rec.strategy_done("noise-adaptive", strategy)
    rec.close()

    assert all(set(row) == ROUND_CLIENT_KEYS - {"role", "noise_true"} for row in line["clients"])
    assert all(
        set(row) == RESULT_CLIENT_KEYS - {"role", "noise_true"} for row in summary["clients"]
    )
    assert summary["gap_clean_noisy"] is None
    assert summary["estimator"] == {"name": cfg["estimator"], "spearman": None}
    assert summary["fairness"]["mean"] == pytest.approx(0.7)
    assert [row["noise_estimate"] for row in summary["clients"]] == [0.4, 0.3, 0.1, 0.2]
