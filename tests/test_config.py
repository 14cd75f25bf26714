"""Tests for fedlr/config.py: defaults < file < overrides, typing, and one-line errors."""

from __future__ import annotations

import warnings
import math
import tomllib
from pathlib import Path

import numpy as np
import pytest

from fedlr import config
from fedlr.config import DEFAULTS, ConfigError, parse_override, resolve, to_toml

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.toml"
    path.write_text(text)
    return path


def test_defaults_resolve():
    assert resolve() == DEFAULTS


def test_pyproject_app_config_equals_defaults():
    app_config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"][
        "config"
    ]
    assert list(app_config) == list(DEFAULTS)
    # types too: 1 == 1.0 == True in Python, but not for Flower's run config
    assert {k: (type(v), v) for k, v in app_config.items()} == {
        k: (type(v), v) for k, v in DEFAULTS.items()
    }


SIMULATIONS = sorted((ROOT / "simulations").glob("*.toml"))


def test_there_are_simulations():
    assert SIMULATIONS


@pytest.mark.parametrize("path", SIMULATIONS, ids=lambda p: p.name)
def test_simulations_resolve(path):
    values = resolve(path)
    assert set(values) == set(DEFAULTS)


def test_file_then_overrides(tmp_path):
    path = write(tmp_path, 'seed = 3\nlr = 0.2\nname = "from-file"\n')
    values = resolve(path, {"seed": 7})
    assert values["seed"] == 7  # override beats file
    assert values["lr"] == 0.2  # file beats default
    assert values["name"] == "from-file"
    assert values["num-clients"] == DEFAULTS["num-clients"]  # default kept
    assert values == {**DEFAULTS, "seed": 7, "lr": 0.2, "name": "from-file"}


def test_int_for_float_key_becomes_float(tmp_path):
    values = resolve(write(tmp_path, "lr = 1\n"))
    assert values["lr"] == 1.0 and type(values["lr"]) is float


def test_toml_arrays_are_joined(tmp_path):
    path = write(tmp_path, 'strategies = ["fedavg", "qfedavg"]\nhard-classes = [1, 3]\n')
    values = resolve(path)
    assert values["strategies"] == "fedavg,qfedavg"
    assert values["hard-classes"] == "1,3"


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("num-server-rounds=5", "num-server-rounds", 5),
        ("lr=0.5", "lr", 0.5),
        ("noise-weighted-aggregation=true", "noise-weighted-aggregation", True),
        ("strategies=fedavg,qfedavg", "strategies", "fedavg,qfedavg"),
        ("name = my run", "name", "my run"),
        ('name="quoted"', "name", "quoted"),
        ("out-dir=a=b", "out-dir", "a=b"),
    ],
)
def test_parse_override(text, key, value):
    parsed_key, parsed_value = parse_override(text)
    assert parsed_key == key
    assert parsed_value == value and type(parsed_value) is type(value)


def test_parse_override_without_equals():
    with pytest.raises(ConfigError, match="seed"):
        parse_override("seed")


def one_line_error(match: str, file: Path | None = None, **overrides) -> str:
    with pytest.raises(ConfigError) as info:
        resolve(file, overrides)
    message = str(info.value)
    assert message and "\n" not in message
    assert match in message
    return message


@pytest.mark.parametrize(
    ("key", "overrides"),
    [
        ("no-such-key", {"no-such-key": 1}),
        ("num-clients", {"num-clients": "5"}),  # a string for an int
        ("num-clients", {"num-clients": 5.0}),  # a float for an int
        ("seed", {"seed": True}),  # a bool is not an int
        ("noise-weighted-aggregation", {"noise-weighted-aggregation": 1}),
        ("lr", {"lr": "0.1"}),
        ("noise-rate-max", {"noise-rate-max": 1.5}),
        ("noise-rate-min", {"noise-rate-min": -0.1}),
        ("noise-rate-min", {"noise-rate-min": 0.9, "noise-rate-max": 0.8}),
        ("lr", {"lr": 0.0}),
        ("lr", {"lr": -0.1}),
        ("lr", {"lr": math.nan}),
        ("lr", {"lr": math.inf}),
        ("dirichlet-alpha", {"dirichlet-alpha": 0.0}),
        ("dirichlet-alpha", {"dirichlet-alpha": math.nan}),
        ("rate-high", {"rate-high": math.inf}),
        ("noisy-clients", {"noisy-clients": 11}),
        ("hard-clean-clients", {"noisy-clients": 10}),  # 10 + 1 > 10
        ("feature-noise-clients", {"feature-noise-clients": 11}),
        ("strategies", {"strategies": "fedavg,fedmagic"}),
        ("strategies", {"strategies": ""}),
        ("dataset", {"dataset": "mnist"}),
        ("hard-classes", {"hard-classes": "1,x"}),
        ("hard-classes", {"hard-classes": "1,12"}),  # digits has classes 0..9
    ],
)
def test_errors_name_the_key(key, overrides):
    one_line_error(key, **overrides)


def test_error_says_what_is_allowed():
    message = one_line_error("noise-rate-max", **{"noise-rate-max": 1.5})
    assert message == "noise-rate-max: expected a number in [0, 1], got 1.5"


def test_missing_file(tmp_path):
    missing = tmp_path / "missing.toml"
    one_line_error(str(missing), missing)


def test_invalid_toml(tmp_path):
    path = write(tmp_path, "seed = = 3\n")
    one_line_error(str(path), path)


def test_errors_from_a_file_name_the_key(tmp_path):
    one_line_error("noise-rate-max", write(tmp_path, "noise-rate-max = 1.5\n"))
    one_line_error("bogus", write(tmp_path, "bogus = 1\n"))


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_from_run_config():
    assert config.from_run_config({"seed": 4}) == {**DEFAULTS, "seed": 4}


def test_to_toml_round_trip(tmp_path):
    values = resolve(overrides={"seed": 4, "strategies": "fedavg,fedprox", "lr": 0.05})
    path = write(tmp_path, to_toml(values))
    assert resolve(path) == values
    assert resolve(write(tmp_path, to_toml(DEFAULTS))) == DEFAULTS


def test_numeric_override_of_a_text_key_is_kept_as_text():
    # `--set hard-classes=3` and `--set name=2024` are read as TOML numbers first.
    assert resolve(overrides={"hard-classes": 3})["hard-classes"] == "3"
    assert resolve(overrides=dict([parse_override("name=2024")]))["name"] == "2024"


def test_gpus_for_cpu_clients_is_legal_but_warned():
    with pytest.warns(UserWarning, match="client-gpus=0.5 reserves GPUs for clients that train"):
        cfg = resolve(overrides={"client-gpus": 0.5, "device": "cpu"})
    assert cfg["client-gpus"] == 0.5


# -- strategy entries RULE[+MODIFIER...] ---------------------------------------------------------

GRAPH = {"dataset": "karate", "num-clients": 2, "noisy-clients": 0, "hard-clean-clients": 0}
ALL_RULES = (
    "fedavg, inverse-noise-weights, noise-adaptive, oracle-noise-rates, qfedavg, fedprox, "
    "fedcorr-prox"
)
TWO_OPTIMIZERS = "repeats a modifier or names two optimizers; expected at most one of +sgd, +adam, "
ONCE = "+adagrad and each other modifier at most once"


@pytest.mark.parametrize(
    ("name", "rule", "modifiers"),
    [
        ("fedavg", "fedavg", ()),
        ("noise-adaptive+adam+degree", "noise-adaptive", ("adam", "degree")),
        ("fedprox+degree+adagrad", "fedprox", ("degree", "adagrad")),
        ("qfedavg + sgd", "qfedavg", ("sgd",)),  # parts are stripped
    ],
)
def test_parse_strategy_splits_rule_and_modifiers(name, rule, modifiers):
    assert config.parse_strategy(name) == (rule, modifiers)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "fedmagic+adam",
            f"strategies: unknown strategy 'fedmagic' in 'fedmagic+adam'; allowed: {ALL_RULES}",
        ),
        (
            "fedavg+adamw",
            "strategies: unknown modifier 'adamw' in 'fedavg+adamw'; "
            "allowed: +sgd, +adam, +adagrad, +degree, +coupled, +grow-batch, +step, "
            "+exponential, +cosine, +warm-restarts, +cyclical, +one-cycle, +phases, +replay",
        ),
        (
            "fedavg+",
            "strategies: unknown modifier '' in 'fedavg+'; allowed: +sgd, +adam, +adagrad, "
            "+degree, +coupled, +grow-batch, +step, +exponential, +cosine, +warm-restarts, "
            "+cyclical, +one-cycle, +phases, +replay",
        ),
        (
            "fedavg+adam+sgd",
            f"strategies: 'fedavg+adam+sgd' {TWO_OPTIMIZERS}{ONCE}",
        ),
        (
            "fedavg+degree+degree",
            f"strategies: 'fedavg+degree+degree' {TWO_OPTIMIZERS}{ONCE}",
        ),
        (
            "fedavg+adam+adam",
            f"strategies: 'fedavg+adam+adam' {TWO_OPTIMIZERS}{ONCE}",
        ),
    ],
)
def test_parse_strategy_refuses_with_one_line(name, message):
    with pytest.raises(ConfigError) as info:
        config.parse_strategy(name)
    assert str(info.value) == message
    # resolve() refuses the same entry in `strategies` with the same line
    assert one_line_error(message, strategies=f"fedavg,{name}", **GRAPH) == message


def test_uses_degree_reads_the_modifier():
    assert config.uses_degree("fedavg+degree") is True
    assert config.uses_degree("noise-adaptive+adam+degree") is True
    assert config.uses_degree("fedavg+adam") is False
    assert config.uses_degree("fedavg") is False


@pytest.mark.parametrize(
    ("name", "cfg_optimizer", "optimizer", "lr"),
    [
        ("fedavg", "sgd", "sgd", 0.3),  # lr
        ("fedavg", "adam", "adam", 0.02),  # the config's optimizer, with its base rate
        ("fedavg", "adagrad", "adagrad", 0.07),
        ("fedavg+adam", "sgd", "adam", 0.02),  # the modifier beats the config
        ("fedavg+adagrad+degree", "adam", "adagrad", 0.07),
        ("fedprox+sgd", "adam", "sgd", 0.3),
    ],
)
def test_strategy_config_picks_the_optimizer_and_its_base_rate(name, cfg_optimizer, optimizer, lr):
    cfg = resolve(
        overrides={
            **GRAPH,
            "strategies": f"fedavg,{name}" if name != "fedavg" else "fedavg",
            "optimizer": cfg_optimizer,
            "lr": 0.3,
            "adam-lr": 0.02,
            "adagrad-lr": 0.07,
        }
    )
    saved = dict(cfg)
    out = config.strategy_config(name, cfg)
    assert (out["optimizer"], out["lr"]) == (optimizer, lr)
    assert cfg == saved  # the run config is not changed
    assert {k: v for k, v in out.items() if k not in ("optimizer", "lr")} == {
        k: v for k, v in cfg.items() if k not in ("optimizer", "lr")
    }


def test_is_graph():
    assert config.is_graph(resolve(overrides=GRAPH))
    assert config.is_graph(resolve(overrides={**GRAPH, "dataset": "ba"}))
    assert not config.is_graph(resolve())
    assert not config.is_graph(resolve(overrides={"dataset": "synthetic"}))


# -- graph datasets: relations between keys ------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"hard-clean-clients": 1},
            "hard-clean-clients: expected 0 with a graph dataset (karate: a client holds a "
            "subgraph, not chosen classes), got 1",
        ),
        (
            {"estimator": "gradient"},
            "estimator: expected loss, loss-margin or oracle with a graph dataset (karate), got "
            "'gradient' (per-sample gradients are not defined for message passing)",
        ),
        (
            {"estimator": "crossfit"},
            "estimator: expected loss, loss-margin or oracle with a graph dataset (karate), got "
            "'crossfit' (halves of a train split are not defined for message passing)",
        ),
        (
            {"ddp-procs": 2},
            "ddp-procs: expected 1 with a graph dataset (karate: full-batch training in one "
            "process), got 2",
        ),
        (
            {"dataset": "ba", "graph-labels": "public"},
            "graph-labels: the ba graph has no public split; expected random, got 'public'",
        ),
        (
            {"strategies": "fedavg,fedavg+degree", "degree-mode": "embedding"},
            "degree-mode: 'embedding' scales node-embedding rows, but embedding-dim is 0; "
            "expected embedding-dim > 0, or degree-mode loss or both",
        ),
    ],
)
def test_graph_relations_are_refused_with_one_line(overrides, message):
    assert one_line_error(message, **{**GRAPH, **overrides}) == message


@pytest.mark.parametrize(
    "overrides",
    [
        {"graph-labels": "public"},  # karate has its own split
        {"estimator": "oracle", "ddp-procs": 1},
        {"strategies": "fedavg,fedavg+degree", "degree-mode": "embedding", "embedding-dim": 4},
        {"strategies": "fedavg,fedavg+degree", "degree-mode": "loss"},
        {"strategies": "fedavg,fedavg+degree", "degree-mode": "both"},
        {"strategies": "fedavg", "degree-mode": "embedding"},  # no +degree: the mode is unused
    ],
)
def test_graph_settings_that_are_allowed(overrides):
    cfg = resolve(overrides={**GRAPH, **overrides})
    assert {k: cfg[k] for k in overrides} == overrides


def test_graph_keys_are_not_checked_for_tabular_data():
    # The same values a graph run refuses are fine for digits.
    cfg = resolve(overrides={"estimator": "gradient", "graph-labels": "public", "ddp-procs": 2})
    assert cfg["hard-clean-clients"] == 1


@pytest.mark.parametrize("dataset", ["digits", "synthetic"])
def test_degree_modifier_needs_a_graph_dataset(dataset):
    message = (
        "strategies: 'noise-adaptive+adam+degree' uses +degree, which needs a graph dataset "
        f"(cora, karate, ba), got dataset '{dataset}'"
    )
    overrides = {"dataset": dataset, "strategies": "fedavg+adam,noise-adaptive+adam+degree"}
    assert one_line_error(message, **overrides) == message
    assert resolve(overrides={**overrides, "strategies": "fedavg+adam"})["strategies"] == (
        "fedavg+adam"
    )


# ---------------------------------------------------------------------------------------------
# batch sizes, coupling and the noise scale
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "n", "expected"),
    [
        ("", 3, [16, 16, 16]),
        ("8,16,256", 3, [8, 16, 256]),
        (" 8 , 32 ", 2, [8, 32]),
    ],
)
def test_client_batch_sizes_explicit(spec, n, expected):
    cfg = {"client-batch-sizes": spec, "num-clients": n, "batch-size": 16, "seed": 0}
    assert config.client_batch_sizes(cfg) == expected


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_powers_of_two_deal_every_size(seed):
    cfg = {"client-batch-sizes": "powers-of-two:8:256", "num-clients": 12, "batch-size": 16}
    sizes = config.client_batch_sizes({**cfg, "seed": seed})
    # 8, 16, 32, 64, 128, 256: six sizes dealt over twelve clients, each exactly twice
    assert sorted(sizes) == sorted([8, 16, 32, 64, 128, 256] * 2)
    assert sizes == config.client_batch_sizes({**cfg, "seed": seed})  # seeded


def test_log_uniform_batch_sizes_stay_in_range_and_are_seeded():
    cfg = {"client-batch-sizes": "log-uniform:8:256", "num-clients": 200, "batch-size": 16}
    sizes = config.client_batch_sizes({**cfg, "seed": 3})
    assert min(sizes) >= 8 and max(sizes) <= 256
    assert sizes == config.client_batch_sizes({**cfg, "seed": 3})
    assert sizes != config.client_batch_sizes({**cfg, "seed": 4})
    # log-uniform: about half the draws below the geometric mean sqrt(8 * 256) = 45.3
    assert 0.35 < np.mean(np.array(sizes) < 45.3) < 0.65


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"client-batch-sizes": "8,16"},
            "client-batch-sizes: expected one batch size per client (10), got 2",
        ),
        (
            {"client-batch-sizes": "8,0"},
            "client-batch-sizes: expected '' (all batch-size), B1,B2,... (one per client), "
            "log-uniform:MIN:MAX or powers-of-two:MIN:MAX, got '8,0'",
        ),
        (
            {"client-batch-sizes": "log-uniform:64:8"},
            "client-batch-sizes: expected '' (all batch-size), B1,B2,... (one per client), "
            "log-uniform:MIN:MAX or powers-of-two:MIN:MAX, got 'log-uniform:64:8'",
        ),
        (
            {"lr-decay-rounds": "20,10"},
            "lr-decay-rounds: expected strictly increasing round numbers in "
            "1..num-server-rounds (30), got '20,10'",
        ),
        (
            {"lr-decay-rounds": "10,31"},
            "lr-decay-rounds: expected strictly increasing round numbers in "
            "1..num-server-rounds (30), got '10,31'",
        ),
        (
            {"strategies": "fedavg,fedavg+grow-batch"},
            "strategies: 'fedavg+grow-batch' turns rate decay into batch growth, but "
            "lr-decay-rounds is empty; expected decay rounds, e.g. lr-decay-rounds = '10,20'",
        ),
        (
            {"strategies": "fedavg+coupled", "coupling-rule": "optimal"},
            "coupling-rule: 'optimal' reads the noise scale the server measures; expected "
            "measure-noise-scale = true, or coupling-rule auto, linear or sqrt",
        ),
        (
            {"noise-scale-growth": "batch"},
            "noise-scale-growth: 'batch' follows the measured noise scale; expected "
            "measure-noise-scale = true, or noise-scale-growth = 'none'",
        ),
        (
            {"client-batch-sizes": "powers-of-two:5:7"},
            "client-batch-sizes: expected '' (all batch-size), B1,B2,... (one per client), "
            "log-uniform:MIN:MAX or powers-of-two:MIN:MAX, got 'powers-of-two:5:7'",
        ),
        (
            {"measure-noise-scale": True, "fraction-train": 0.1},
            "measure-noise-scale: the estimate needs the gradients of at least 2 clients per "
            "round; expected num-clients * fraction-train >= 2, got 10 * 0.1 -> 1",
        ),
        (
            {"strategies": "fedavg,qfedavg+coupled"},
            "strategies: 'qfedavg+coupled': q-FedAvg's update assumes the one rate lr "
            "(L = 1 / lr); expected no +coupled, +grow-batch, schedule or lr-decay-rounds "
            "with qfedavg",
        ),
        (
            {"strategies": "fedavg,qfedavg", "lr-decay-rounds": "5"},
            "strategies: 'qfedavg': q-FedAvg's update assumes the one rate lr "
            "(L = 1 / lr); expected no +coupled, +grow-batch, schedule or lr-decay-rounds "
            "with qfedavg",
        ),
        (
            {"lr-decay-factor": 1.0},
            "lr-decay-factor: expected a number in (0, 1), got 1.0",
        ),
        (
            {"weight-decay-coupling": "fixed"},
            "weight-decay-coupling: expected lr-proportional or fixed-shrink, got 'fixed'",
        ),
    ],
)
def test_batch_relations_are_refused_with_one_line(overrides, message):
    assert one_line_error(message, **overrides) == message


@pytest.mark.parametrize(
    ("overrides", "what"),
    [
        ({"strategies": "fedavg,fedavg+coupled"}, "strategies: 'fedavg+coupled'"),
        ({"measure-noise-scale": True}, "measure-noise-scale"),
        ({"client-batch-sizes": "powers-of-two:8:64"}, "client-batch-sizes"),
    ],
)
def test_batch_keys_need_a_tabular_dataset(overrides, what):
    message = (
        f"{what}: batch sizes and the gradient noise scale need mini-batches; a graph dataset "
        "(karate) trains full-batch; expected a tabular dataset (digits, synthetic, csv, parquet)"
    )
    assert one_line_error(message, **{**GRAPH, **overrides}) == message


@pytest.mark.parametrize(
    "overrides",
    [
        {"strategies": "fedavg,fedavg+coupled,noise-adaptive+adam+coupled"},
        {"strategies": "fedavg+coupled", "coupling-rule": "optimal", "measure-noise-scale": True},
        {"strategies": "fedavg,fedavg+grow-batch", "lr-decay-rounds": "10,20"},
        {"noise-scale-growth": "clients", "measure-noise-scale": True},
        {"client-batch-sizes": "powers-of-two:8:256", "num-clients": 12},
        {"weight-decay": 0.001, "weight-decay-coupling": "fixed-shrink"},
    ],
)
def test_batch_settings_that_are_allowed(overrides):
    cfg = resolve(overrides=overrides)
    assert {k: cfg[k] for k in overrides} == overrides


def test_uses_modifier():
    assert config.uses_modifier("noise-adaptive+adam+coupled", "coupled")
    assert not config.uses_modifier("noise-adaptive+adam+coupled", "grow-batch")


# ---------------------------------------------------------------------------------------------
# schedules and continual streams
# ---------------------------------------------------------------------------------------------

STREAM_NAMES = "class-incremental, task-incremental, permuted, rotated"
SCHEDULE_NAMES = "+step, +exponential, +cosine, +warm-restarts, +cyclical, +one-cycle, +phases"
QFEDAVG_ONE_RATE = (
    "q-FedAvg's update assumes the one rate lr (L = 1 / lr); expected no +coupled, +grow-batch, "
    "schedule or lr-decay-rounds with qfedavg"
)


def test_stream_names_are_the_ones_streams_builds():
    from fedlr.tasks import streams

    assert streams.STREAMS == config.STREAMS
    assert config.SCHEMA["stream"].allowed == "none or " + " or ".join(config.STREAMS)
    assert all(config.SCHEMA["stream"].check(kind) for kind in ("none", *streams.STREAMS))
    assert not config.SCHEMA["stream"].check("domain-incremental")


def test_every_schedule_modifier_is_a_schedule_the_server_can_run():
    from fedlr.fl.strategy import schedule_params
    from fedlr.rates.schedules import round_multipliers

    assert len(set(config.SCHEDULE_MODIFIERS)) == len(config.SCHEDULE_MODIFIERS)
    assert set(config.SCHEDULE_MODIFIERS) <= set(config.MODIFIERS)
    cfg = resolve(overrides={"num-server-rounds": 10, "num-tasks": 2})
    for name in config.SCHEDULE_MODIFIERS:  # each one's parameters, from the config's keys
        multipliers = round_multipliers(name, 10, **schedule_params(name, cfg, [1, 6]))
        assert len(multipliers) == 10 and max(multipliers) <= 1.0
        assert multipliers != [1.0] * 10, name  # a schedule, not the constant rate


@pytest.mark.parametrize(
    ("name", "schedule"),
    [
        ("fedavg", "constant"),
        ("fedavg+adam", "constant"),
        ("fedavg+replay", "constant"),
        ("noise-adaptive+phases+replay", "phases"),
        ("fedprox+adam+warm-restarts", "warm-restarts"),
        ("fedavg+one-cycle+coupled", "one-cycle"),
        ("inverse-noise-weights + cosine", "cosine"),  # parts are stripped
    ],
)
def test_schedule_of_reads_the_schedule_modifier(name, schedule):
    assert config.schedule_of(name) == schedule


@pytest.mark.parametrize("schedule", config.SCHEDULE_MODIFIERS)
def test_every_schedule_modifier_resolves(schedule):
    name = f"noise-adaptive+adam+{schedule}"
    cfg = resolve(overrides={"strategies": f"fedavg,{name}"})
    assert cfg["strategies"] == f"fedavg,{name}"
    assert config.parse_strategy(name) == ("noise-adaptive", ("adam", schedule))
    assert config.schedule_of(name) == schedule


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "fedavg+cosine+step",
            f"strategies: 'fedavg+cosine+step' names two schedules; expected at most one of "
            f"{SCHEDULE_NAMES}",
        ),
        (
            "noise-adaptive+adam+phases+replay+one-cycle",
            "strategies: 'noise-adaptive+adam+phases+replay+one-cycle' names two schedules; "
            f"expected at most one of {SCHEDULE_NAMES}",
        ),
        (
            "fedavg+cosine+cosine",
            f"strategies: 'fedavg+cosine+cosine' {TWO_OPTIMIZERS}{ONCE}",
        ),
        (
            "fedavg+replay+replay",
            f"strategies: 'fedavg+replay+replay' {TWO_OPTIMIZERS}{ONCE}",
        ),
    ],
)
def test_two_schedules_are_refused_with_one_line(name, message):
    with pytest.raises(ConfigError) as info:
        config.schedule_of(name)
    assert str(info.value) == message
    overrides = {"strategies": f"fedavg,{name}", "stream": "class-incremental"}
    assert one_line_error(message, **overrides) == message


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"strategies": "fedavg,fedavg+replay"},
            "strategies: 'fedavg+replay' replays earlier tasks, but stream is 'none'; expected a "
            f"stream ({STREAM_NAMES})",
        ),
        (
            {"dataset": "synthetic", "stream": "rotated"},
            "stream: 'rotated' turns 8x8 images; expected dataset digits, got 'synthetic' "
            "(use permuted)",
        ),
        (
            {"stream": "class-incremental", "num-tasks": 3},
            "num-tasks: a split stream deals the 10 classes evenly; expected 1, 2, 5 or 10, got 3",
        ),
        (
            {"stream": "task-incremental", "num-tasks": 4},
            "num-tasks: a split stream deals the 10 classes evenly; expected 1, 2, 5 or 10, got 4",
        ),
        (
            {"stream": "permuted", "num-tasks": 6, "num-server-rounds": 5},
            "num-tasks: expected at most num-server-rounds (5) tasks or phases (each needs a "
            "round), got 6",
        ),
        (
            {"strategies": "fedavg,fedavg+phases", "num-server-rounds": 4},  # num-tasks = 5
            "num-tasks: expected at most num-server-rounds (4) tasks or phases (each needs a "
            "round), got 5",
        ),
        (
            {"stream": "task-incremental", "ddp-procs": 2},
            "ddp-procs: expected 1 with stream task-incremental (its per-task output heads train "
            "in one process), got 2",
        ),
        (
            {"strategies": "fedavg,fedavg+cosine", "lr-decay-rounds": "10"},
            "strategies: 'fedavg+cosine' has its own schedule, and lr-decay-rounds sets a step "
            "decay for every strategy; expected one of them (lr-decay-rounds = '' or no "
            "schedule modifier)",
        ),
        (
            {"strategies": "fedavg,qfedavg+step"},
            f"strategies: 'qfedavg+step': {QFEDAVG_ONE_RATE}",
        ),
        (
            {"strategies": "qfedavg+phases+replay", "stream": "permuted"},
            f"strategies: 'qfedavg+phases+replay': {QFEDAVG_ONE_RATE}",
        ),
        (
            {"stream": "domain"},
            f"stream: expected none or {STREAM_NAMES.replace(', ', ' or ')}, got 'domain'",
        ),
        ({"num-tasks": 0}, "num-tasks: expected an integer >= 1, got 0"),
        ({"task-stagger": -1}, "task-stagger: expected an integer >= 0, got -1"),
        ({"replay-size": -1}, "replay-size: expected an integer >= 0, got -1"),
        ({"rotation-max": 361.0}, "rotation-max: expected a number in [0, 360], got 361.0"),
        ({"schedule-period": -1}, "schedule-period: expected an integer >= 0, got -1"),
        ({"schedule-gamma": 0.0}, "schedule-gamma: expected a number in (0, 1], got 0.0"),
        ({"schedule-gamma": 1.5}, "schedule-gamma: expected a number in (0, 1], got 1.5"),
        ({"schedule-floor": 1.5}, "schedule-floor: expected a number in [0, 1], got 1.5"),
        ({"schedule-warmup": -1}, "schedule-warmup: expected an integer >= 0, got -1"),
        (
            {"schedule-peak-decay": 0.0},
            "schedule-peak-decay: expected a number in (0, 1], got 0.0",
        ),
    ],
)
def test_stream_relations_are_refused_with_one_line(overrides, message):
    assert one_line_error(message, **overrides) == message


@pytest.mark.parametrize("stream", config.STREAMS)
def test_a_stream_on_a_graph_dataset_is_refused_with_one_line(stream):
    message = (
        "stream: continual streams split digits or synthetic examples; expected 'none' with a "
        f"graph dataset (karate), got '{stream}'"
    )
    assert one_line_error(message, **GRAPH, stream=stream) == message


@pytest.mark.parametrize(
    "overrides",
    [
        {"stream": "class-incremental", "strategies": "fedavg,fedavg+replay"},
        {"stream": "task-incremental", "num-tasks": 2, "ddp-procs": 1},
        {"stream": "class-incremental", "num-tasks": 10, "ddp-procs": 2},  # one shared head
        {"stream": "permuted", "num-tasks": 7},  # a domain stream need not divide the classes
        {"stream": "permuted", "dataset": "synthetic", "num-tasks": 3},
        {"stream": "rotated", "num-tasks": 3, "rotation-max": 360.0},
        {"stream": "permuted", "num-tasks": 30, "num-server-rounds": 30},  # one round a task
        {"stream": "class-incremental", "task-stagger": 3, "replay-size": 0},
        {"strategies": "fedavg+phases", "num-tasks": 3, "num-server-rounds": 3},
        {"num-tasks": 10, "num-server-rounds": 3},  # no stream, no +phases: num-tasks unused
        {"strategies": "qfedavg", "stream": "class-incremental"},  # qfedavg without a schedule
        {
            "stream": "class-incremental",
            "strategies": "fedavg,fedavg+cosine,noise-adaptive+adam+phases+replay",
        },
        {"strategies": "fedavg,fedavg+step", "lr-decay-rounds": ""},
        {"strategies": "fedavg,fedavg+grow-batch", "lr-decay-rounds": "10,20"},  # no schedule
        {
            "strategies": "fedavg+warm-restarts",
            "schedule-period": 0,
            "schedule-gamma": 1.0,
            "schedule-floor": 1.0,
            "schedule-warmup": 0,
            "schedule-peak-decay": 1.0,
        },
    ],
)
def test_stream_settings_that_are_allowed(overrides):
    cfg = resolve(overrides=overrides)
    assert {k: cfg[k] for k in overrides} == overrides


def test_uses_modifier_reads_replay_and_schedules():
    assert config.uses_modifier("noise-adaptive+phases+replay", "replay")
    assert config.uses_modifier("noise-adaptive+phases+replay", "phases")
    assert not config.uses_modifier("noise-adaptive+phases", "replay")


def test_phases_floor_above_the_last_peak_is_refused_with_one_line():
    # 5 phases at peak decay 0.5: the last peak is 0.5 ** 4 = 0.0625, below the floor 0.1
    overrides = {
        "strategies": "fedavg+phases",
        "schedule-floor": 0.1,
        "schedule-peak-decay": 0.5,
    }
    with pytest.raises(ConfigError) as info:
        resolve(overrides=overrides)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("schedule-floor: +phases decays each phase to the floor")
    assert "0.0625; got 0.1" in message
    resolve(overrides={**overrides, "schedule-floor": 0.0625})  # at the last peak: allowed
    resolve(overrides={**overrides, "strategies": "fedavg+cosine"})  # only +phases has phases


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"task-stagger": 1}, "task-stagger is ignored without a stream"),
        (
            {"stream": "permuted", "task-stagger": 2},  # 10 clients, 30 rounds: cap 5
            "task-stagger: client delays are capped at 5 rounds",
        ),
        (
            {"stream": "permuted", "strategies": "fedavg+replay", "replay-size": 0},
            "replay-size is 0: 'fedavg\\+replay' replays nothing",
        ),
    ],
)
def test_settings_that_do_nothing_warn(overrides, match):
    with pytest.warns(UserWarning, match=match):
        resolve(overrides=overrides)


def test_a_stagger_within_the_cap_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # 6 clients, 30 rounds of 5 tasks: delays 0..5, the cap
        settings = {"stream": "permuted", "task-stagger": 1, "num-clients": 6}
        resolve(overrides={**settings, "noisy-clients": 4})


def test_the_configuration_page_lists_every_key_as_the_schema_says():
    """docs/configuration.md is `fedlr config --page`, byte for byte, and holds `--keys`' table."""
    import subprocess
    import sys

    page = (ROOT / "docs" / "configuration.md").read_text()
    regenerate = (
        "docs/configuration.md differs from the schema; regenerate it with "
        "`fedlr config --page > docs/configuration.md`"
    )
    done = subprocess.run(
        [sys.executable, "-m", "fedlr.cli", "config", "--page"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == page, regenerate
    start = page.index("| key | default | allowed | meaning |")
    assert page[start:] == config.keys_markdown(), regenerate


def test_fedlr_config_prints_the_resolved_config_and_exits_2_on_bad_input():
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "fedlr.cli", "config", "--set", "seed=3"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    assert tomllib.loads(done.stdout) == {**DEFAULTS, "seed": 3}
    bad = subprocess.run(
        [sys.executable, "-m", "fedlr.cli", "config", "--set", "lr=-1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2 and "lr: expected a number > 0, got -1" in bad.stderr


@pytest.mark.parametrize(("n", "noisy", "hard"), [(2, 1, 0), (3, 2, 0), (5, 4, 0), (8, 6, 0)])
def test_default_noise_counts_scale_down_to_a_small_cluster(n, noisy, hard):
    from fedlr.config import DEFAULTS, from_run_config

    deployed = from_run_config({**DEFAULTS, "num-clients": n})  # flwr run passes every key
    for values in (resolve(overrides={"num-clients": n}), deployed):
        assert (values["noisy-clients"], values["hard-clean-clients"]) == (noisy, hard)


def test_default_noise_counts_stay_where_they_fit_and_set_counts_are_kept():
    assert resolve(overrides={"num-clients": 9})["noisy-clients"] == 8
    assert resolve(overrides={"num-clients": 20})["noisy-clients"] == 8
    with pytest.raises(ConfigError, match="noisy-clients: expected at most num-clients"):
        resolve(overrides={"num-clients": 2, "noisy-clients": 3})
    with pytest.raises(ConfigError, match="noisy-clients: expected at most num-clients"):
        resolve(overrides={"num-clients": 2, "hard-clean-clients": 0})  # one set: none scales
