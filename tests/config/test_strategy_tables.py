"""Named strategies: tables ``[strategy.NAME]`` next to the one-line ``RULE+MODIFIER`` entries.

A table sets its rule, its modifiers and its own values of the keys they own; the same tables
come through Flower's run config as dotted keys (``strategy.NAME.KEY``). Each bad table stops
with one line naming the table's key and what is allowed.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

import pytest

from fedlr import config
from fedlr.config import DEFAULTS, ConfigError, from_run_config, resolve, strategy_config, to_toml
from fedlr.fl.nodes import ClientInfo
from fedlr.fl.rate_plan import schedule_params
from fedlr.fl.strategy import build_strategy
from fedlr.rates.schedules import round_multipliers

from ..test_cli import run_fedlr
from ..test_end_to_end import round_lines

TWO_COSINES = """\
strategies = "fedavg, cos-lo, cos-hi"

[strategy.cos-lo]
rule = "fedavg"
schedule = { name = "cosine", floor = 0.1 }

[strategy.cos-hi]
rule = "fedavg"
schedule = "cosine"
schedule-floor = 0.5
"""

# The same tables as Flower hands them to the ServerApp: [tool.flwr.app.config.strategy.*]
# flattened into dotted keys.
TWO_COSINES_DOTTED = {
    "strategies": "fedavg, cos-lo, cos-hi",
    "strategy.cos-lo.rule": "fedavg",
    "strategy.cos-lo.schedule.name": "cosine",
    "strategy.cos-lo.schedule.floor": 0.1,
    "strategy.cos-hi.rule": "fedavg",
    "strategy.cos-hi.schedule": "cosine",
    "strategy.cos-hi.schedule-floor": 0.5,
}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tables.toml"
    path.write_text(text)
    return path


def one_line_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        resolve(path)
    message = str(info.value)
    assert message and "\n" not in message
    return message


# -- what a table sets -----------------------------------------------------------------------


def test_two_cosines_with_their_own_floors(tmp_path):
    cfg = resolve(write(tmp_path, TWO_COSINES))
    assert cfg["strategies"] == "fedavg, cos-lo, cos-hi"
    assert cfg["schedule-floor"] == 0.0  # the run's own value is unchanged
    floors = {name: strategy_config(name, cfg)["schedule-floor"] for name in ("cos-lo", "cos-hi")}
    assert floors == {"cos-lo": 0.1, "cos-hi": 0.5}
    for name, floor in floors.items():
        assert config.schedule_of(name, cfg) == "cosine"
        assert schedule_params("cosine", strategy_config(name, cfg), []) == {"floor": floor}
    assert strategy_config("fedavg", cfg)["schedule-floor"] == 0.0
    # the strategy's config is the run's plus its own values, without the tables
    own = strategy_config("cos-lo", cfg)
    assert not [key for key in own if key.startswith("strategy")]
    assert {k: v for k, v in own.items() if k != "schedule-floor"} == {
        k: v for k, v in strategy_config("fedavg", cfg).items() if k != "schedule-floor"
    }


def test_a_table_is_the_one_line_entry_with_its_own_values(tmp_path):
    text = """\
strategies = "noise-adaptive+adam+cosine, mine"
[strategy.mine]
rule = "noise-adaptive"
optimizer = { name = "adam", lr = 0.002 }
schedule = "cosine"
"""
    cfg = resolve(write(tmp_path, text))
    mine, line = (
        config.strategy_spec("mine", cfg),
        config.strategy_spec("noise-adaptive+adam+cosine"),
    )
    assert (mine.rule, mine.modifiers) == (line.rule, line.modifiers)
    assert mine.overrides == (("adam-lr", 0.002),)
    assert strategy_config("mine", cfg)["lr"] == 0.002  # adam's base rate, for this one only
    assert strategy_config("noise-adaptive+adam+cosine", cfg)["lr"] == DEFAULTS["adam-lr"]
    assert config.parse_strategy("mine", cfg) == ("noise-adaptive", ("adam", "cosine"))


def test_a_sub_table_parameter_and_its_key_are_the_same(tmp_path):
    flat = resolve(
        write(
            tmp_path,
            'strategies = "a"\n[strategy.a]\nrule = "fedavg"\nlr = 0.02\n'
            'coupled = true\ncoupling-rule = "sqrt"\n',
        )
    )
    nested = resolve(
        write(
            tmp_path,
            'strategies = "a"\n[strategy.a]\nrule = "fedavg"\n'
            'optimizer = { name = "sgd", lr = 0.02 }\ncoupled = { rule = "sqrt" }\n',
        )
    )
    for cfg in (flat, nested):
        own = strategy_config("a", cfg)
        assert (own["lr"], own["coupling-rule"]) == (0.02, "sqrt")
        assert config.uses_modifier("a", "coupled", cfg)


def test_values_are_coerced_as_their_keys(tmp_path):
    # an integer for a float key becomes a float, as at the top of the file
    cfg = resolve(
        write(tmp_path, 'strategies = "a"\n[strategy.a]\nrule = "fedprox"\nfedprox-mu = 1\n')
    )
    assert cfg["strategy.a.fedprox-mu"] == 1.0 and isinstance(cfg["strategy.a.fedprox-mu"], float)


def test_false_modifiers_are_off(tmp_path):
    cfg = resolve(
        write(tmp_path, 'strategies = "a"\n[strategy.a]\nrule = "fedavg"\ncoupled = false\n')
    )
    assert config.strategy_spec("a", cfg).modifiers == ()


def test_build_strategy_reads_the_table(tmp_path):
    text = """\
strategies = "fedprox, strong, cos-lo"
[strategy.strong]
rule = "fedprox"
fedprox-mu = 0.5
[strategy.cos-lo]
rule = "fedavg"
schedule = { name = "cosine", floor = 0.1 }
replay = false
"""
    cfg = resolve(write(tmp_path, text))
    clients = [
        ClientInfo(node_id=1000 + p, partition_id=p, num_examples=100, noise_true=0.0, role="clean")
        for p in range(2)
    ]
    assert build_strategy("fedprox", cfg, clients).proximal_mu == DEFAULTS["fedprox-mu"]
    strong = build_strategy("strong", cfg, clients)
    assert strong.proximal_mu == 0.5 and strong.cfg["fedprox-mu"] == 0.5
    cosine = build_strategy("cos-lo", cfg, clients)
    assert cosine.schedule_name == "cosine" and cosine.cfg["schedule-floor"] == 0.1


def test_one_line_entries_are_unchanged():
    cfg = resolve(overrides={"strategies": "fedavg,fedavg+cosine", "schedule-floor": 0.2})
    assert cfg == {**DEFAULTS, "strategies": "fedavg,fedavg+cosine", "schedule-floor": 0.2}
    assert strategy_config("fedavg+cosine", cfg)["schedule-floor"] == 0.2


def test_to_toml_round_trip(tmp_path):
    cfg = resolve(write(tmp_path, TWO_COSINES))
    text = to_toml(cfg)
    assert tomllib.loads(text)["strategy"]["cos-lo"] == {
        "rule": "fedavg",
        "schedule": {"name": "cosine", "floor": 0.1},
    }
    assert resolve(write(tmp_path, text)) == cfg


def test_set_reaches_a_table_by_its_dotted_key(tmp_path):
    cfg = resolve(write(tmp_path, TWO_COSINES), {"strategy.cos-hi.schedule-floor": 0.3})
    assert strategy_config("cos-hi", cfg)["schedule-floor"] == 0.3


# -- flwr run: Flower's dotted keys ------------------------------------------------------------


def test_from_run_config_reads_dotted_tables(tmp_path):
    cfg = from_run_config({**DEFAULTS, **TWO_COSINES_DOTTED})
    assert cfg == resolve(write(tmp_path, TWO_COSINES))
    assert strategy_config("cos-lo", cfg)["schedule-floor"] == 0.1
    assert strategy_config("cos-hi", cfg)["schedule-floor"] == 0.5


def test_pyproject_tables_flatten_as_flower_does():
    """[tool.flwr.app.config.strategy.NAME] through Flower's own flattening."""
    from flwr.common.config import flatten_dict

    text = "[tool.flwr.app.config]\n" + TWO_COSINES.replace(
        "[strategy.", "[tool.flwr.app.config.strategy."
    )
    app_config = flatten_dict(tomllib.loads(text)["tool"]["flwr"]["app"]["config"])
    assert app_config == TWO_COSINES_DOTTED
    cfg = from_run_config(app_config)
    assert strategy_config("cos-lo", cfg)["schedule-floor"] == 0.1


def test_from_run_config_refuses_a_bad_dotted_table():
    with pytest.raises(ConfigError) as info:
        from_run_config({**TWO_COSINES_DOTTED, "strategy.cos-lo.schedule.gamma": 0.5})
    assert str(info.value) == (
        "strategy.cos-lo.schedule.gamma: not a parameter of cosine; allowed: name, floor"
    )
    with pytest.raises(ConfigError, match=r"^strategy\.cos-lo: expected a table"):
        from_run_config({"strategy.cos-lo": "fedavg+cosine"})


# -- bad tables: one line each -----------------------------------------------------------------

OWNED = (
    "allowed: rule, optimizer, degree, coupled, grow-batch, schedule, replay and the keys of its "
    "rule and modifiers (lr, momentum, weight-decay, adam-lr, adagrad-lr, schedule-floor)"
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (  # unknown key
            '[strategy.cos-lo]\nrule = "fedavg"\nschedule = "cosine"\nbogus = 1\n',
            "strategy.cos-lo.bogus: not a key of this strategy's rule or modifiers (a run-wide "
            f"key goes at the top of the file); {OWNED}",
        ),
        (  # a run-wide key
            '[strategy.cos-lo]\nrule = "fedavg"\nschedule = "cosine"\nnum-clients = 3\n',
            "strategy.cos-lo.num-clients: not a key of this strategy's rule or modifiers (a "
            f"run-wide key goes at the top of the file); {OWNED}",
        ),
        (  # a key of a modifier the table does not use
            '[strategy.cos-lo]\nrule = "fedavg"\nschedule = "cosine"\nschedule-gamma = 0.5\n',
            "strategy.cos-lo.schedule-gamma: not a key of this strategy's rule or modifiers (a "
            f"run-wide key goes at the top of the file); {OWNED}",
        ),
        (
            '[strategy.cos-lo]\nrule = "fedavg"\nschedule = { name = "cosine", gamma = 0.5 }\n',
            "strategy.cos-lo.schedule.gamma: not a parameter of cosine; allowed: name, floor",
        ),
        (
            '[strategy.cos-lo]\nrule = "fedavg"\ngrow-batch = { size = 2 }\n',
            "strategy.cos-lo.grow-batch.size: not a parameter of grow-batch; allowed: none",
        ),
        (  # unknown rule
            '[strategy.cos-lo]\nrule = "fedmagic"\n',
            "strategy.cos-lo.rule: unknown strategy 'fedmagic'; expected one of fedavg, "
            "inverse-noise-weights, noise-adaptive, oracle-noise-rates, qfedavg, fedprox, "
            "fedcorr-prox (modifiers are keys of the table: optimizer, degree, coupled, "
            "grow-batch, schedule, replay)",
        ),
        (
            '[strategy.cos-lo]\nschedule = "cosine"\n',
            "strategy.cos-lo: expected rule = one of fedavg, inverse-noise-weights, "
            "noise-adaptive, oracle-noise-rates, qfedavg, fedprox, fedcorr-prox; got no rule",
        ),
        (
            '[strategy.cos-lo]\nrule = "fedavg"\nschedule = "cosin"\n',
            "strategy.cos-lo.schedule: expected one of step, exponential, cosine, warm-restarts, "
            "cyclical, one-cycle, phases, got 'cosin'",
        ),
        (
            '[strategy.cos-lo]\nrule = "fedavg"\nschedule = { floor = 0.1 }\n',
            "strategy.cos-lo.schedule.name: expected one of step, exponential, cosine, "
            "warm-restarts, cyclical, one-cycle, phases; got no name",
        ),
        (
            '[strategy.cos-lo]\nrule = "fedavg"\ncoupled = "yes"\n',
            "strategy.cos-lo.coupled: expected true or false (or a table of its parameters: "
            "rule, reference, low, high, warmup-rounds), got 'yes'",
        ),
        (  # one key set twice
            '[strategy.cos-lo]\nrule = "fedavg"\nschedule = { name = "cosine", floor = 0.1 }\n'
            "schedule-floor = 0.2\n",
            "strategy.cos-lo.schedule-floor: set twice, also as strategy.cos-lo.schedule.floor; "
            "expected one of them",
        ),
        (  # a value out of range: the schema's check of the key it sets
            '[strategy.cos-lo]\nrule = "fedavg"\nschedule = { name = "cosine", floor = 1.5 }\n',
            "strategy.cos-lo.schedule.floor: expected a number in [0, 1], got 1.5",
        ),
        (
            '[strategy.cos-lo]\nrule = "fedavg"\nlr = "fast"\n',
            "strategy.cos-lo.lr: expected a number > 0, got 'fast'",
        ),
        (
            '[strategy.cos-lo]\nrule = "fedavg"\nlr = -0.1\n',
            "strategy.cos-lo.lr: expected a number > 0, got -0.1",
        ),
        (  # a modifier's own check sees the table's values, and names where they were set
            '[strategy.cos-lo]\nrule = "fedavg"\n'
            'schedule = { name = "phases", floor = 0.5, peak-decay = 0.5 }\n',
            "strategy.cos-lo.schedule.floor: +phases decays each phase to the floor, so it must "
            "be at most the last phase's peak, schedule-peak-decay ** (num-tasks - 1) = 0.0625; "
            "got 0.5",
        ),
        (
            '[strategy.cos-lo]\nrule = "fedavg"\ncoupled = { rule = "optimal" }\n',
            "strategy.cos-lo.coupled.rule: 'optimal' reads the noise scale the server measures; "
            "expected measure-noise-scale = true, or coupling-rule auto, linear or sqrt",
        ),
        (  # the run-wide checks read the table's modifiers
            '[strategy.cos-lo]\nrule = "qfedavg"\nschedule = "cosine"\n',
            "strategies: 'cos-lo': q-FedAvg's update assumes the one rate lr (L = 1 / lr); "
            "expected no +coupled, +grow-batch, schedule or lr-decay-rounds with qfedavg",
        ),
    ],
)
def test_a_bad_table_gives_one_line(tmp_path, text, message):
    path = write(tmp_path, 'strategies = "fedavg, cos-lo"\n' + text)
    assert one_line_error(path) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (  # a name used twice: a table named like a rule
            'strategies = "fedavg"\n[strategy.fedavg]\nrule = "fedavg"\n',
            "strategy.fedavg: 'fedavg' already names the rule fedavg; expected another name for "
            "the table (e.g. fedavg-1)",
        ),
        (  # a name used twice in strategies
            'strategies = "cos-lo, cos-lo"\n[strategy.cos-lo]\nrule = "fedavg"\n',
            "strategies: expected ",
        ),
        (  # listed, not defined
            'strategies = "fedavg, cos-mid"\n',
            "strategies: unknown strategy 'cos-mid'; expected one of fedavg, "
            "inverse-noise-weights, noise-adaptive, oracle-noise-rates, qfedavg, fedprox, "
            "fedcorr-prox (optionally +MODIFIERs), or the name of a table [strategy.cos-mid] "
            "that defines it",
        ),
        (  # defined, not listed
            'strategies = "fedavg, cos-lo"\n[strategy.cos-lo]\nrule = "fedavg"\n'
            '[strategy.cos-hi]\nrule = "fedavg"\n',
            "strategy.cos-hi: the table is not listed in strategies ('fedavg, cos-lo'); expected "
            "its name there, or no table",
        ),
        (
            'strategies = "fedavg, cos.lo"\n[strategy."cos.lo"]\nrule = "fedavg"\n',
            "strategies: unknown strategy 'cos.lo' in 'cos.lo'; allowed: ",
        ),
        (
            'strategy = "fedavg+cosine"\n',
            "strategy: expected a table of a named strategy, [strategy.NAME] with rule = ... (in "
            "Flower's run config, keys strategy.NAME.KEY), got 'fedavg+cosine'",
        ),
        (  # a section holds its keys' last words only
            "[schedule]\nflor = 0.1\n",
            "schedule.flor: [schedule] has no key 'flor'; it holds period, gamma, floor",
        ),
        ("[nothing]\nfloor = 0.1\n", "nothing.floor: no section [nothing]"),
        ("[schedule]\nfloor = -1.0\n", "schedule.floor: expected"),
    ],
)
def test_bad_names_give_one_line(tmp_path, text, message):
    assert one_line_error(write(tmp_path, text)).startswith(message)


def test_the_replay_warning_names_the_table(tmp_path):
    text = (
        'strategies = "fedavg, r"\nstream = "class-incremental"\n'
        '[strategy.r]\nrule = "fedavg"\nreplay = { size = 0 }\n'
    )
    with pytest.warns(UserWarning, match=r"^strategy\.r\.replay\.size is 0: 'r' replays nothing"):
        resolve(write(tmp_path, text))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolve(write(tmp_path, text.replace("size = 0", "size = 8")))


def test_cli_exits_2_with_one_line(tmp_path):
    bad = TWO_COSINES.replace("floor = 0.1 }", "floor = 0.1, gamma = 0.5 }")
    write(tmp_path, bad)
    result = run_fedlr("simulate", "tables.toml", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert lines == [
        "error: strategy.cos-lo.schedule.gamma: not a parameter of cosine; allowed: name, floor"
    ]


# -- end to end ------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_tables_run_side_by_side(tmp_path):
    """`fedlr simulate` on a file with two cosine tables: each runs at its own floor."""
    path = write(tmp_path, TWO_COSINES.replace('"fedavg, cos-lo, cos-hi"', '"cos-lo, cos-hi"'))
    settings = ["num-clients=4", "noisy-clients=2", "hard-clean-clients=0", "local-epochs=1"]
    args = [sys.executable, "-m", "fedlr.cli", "simulate", str(path), "--out", "runs"]
    for setting in [*settings, "num-server-rounds=2"]:
        args += ["--set", setting]
    env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1")
    result = subprocess.run(
        args, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    assert list(results["strategies"]) == ["cos-lo", "cos-hi"]
    lines = round_lines(run_dir)
    lr = DEFAULTS["lr"]
    for name, floor in (("cos-lo", 0.1), ("cos-hi", 0.5)):
        expected = [lr * m for m in round_multipliers("cosine", 2, floor=floor)]
        assert expected[1] == pytest.approx(lr * floor)  # 2 rounds: the last is at the floor
        for rnd in (1, 2):
            rates = {c["lr"] for c in lines[name, rnd]["clients"]}
            assert len(rates) == 1 and math.isclose(rates.pop(), expected[rnd - 1], rel_tol=1e-9)
    assert "cos-lo" in (run_dir / "report.md").read_text()
    assert tomllib.loads((run_dir / "config.toml").read_text())["strategy"]["cos-hi"] == {
        "rule": "fedavg",
        "schedule": "cosine",
        "schedule-floor": 0.5,
    }
