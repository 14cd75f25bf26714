"""A run's own round observers (``observers``): loaded, checked, logged, summarised, saved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedlr.analysis import is_round, read_log
from fedlr.config import ConfigError, resolve
from fedlr.fl import checkpoint as ckpt
from fedlr.fl.own_observers import load_observers
from fedlr.fl.server_app import run_federation
from fedlr.fl.strategy import build_strategy

from .conftest import InProcessGrid

ROUNDS = 3
CFG = resolve(
    overrides={
        "num-clients": 4,
        "noisy-clients": 2,
        "hard-clean-clients": 1,
        "hidden": 16,
        "local-epochs": 1,
        "batch-size": 32,
        "num-server-rounds": ROUNDS,
        "strategies": "fedavg,noise-adaptive",
        "observers": "tests.apps.observers:Counter",
    }
)


@pytest.mark.parametrize(
    ("spec", "mention"),
    [
        ("tests.apps.observers:Nameless", "name is None; expected a word"),
        ("tests.apps.observers:Continual", "'continual' is taken"),
        ("tests.apps.observers:Counter,tests.apps.observers:Counter", "'counter' is taken"),
        ("tests.apps.observers:Hookless", "has no after_train, evaluate_reply"),
        ("tests.apps.no_such:Counter", "cannot import 'tests.apps.no_such'"),
        ("tests.apps.observers:broken_factory", "raised RuntimeError: cannot build"),
    ],
)
def test_a_bad_observer_is_one_config_error(spec: str, mention: str) -> None:
    with pytest.raises(ConfigError, match="^observers: ") as caught:
        load_observers({**CFG, "observers": spec})
    assert mention in str(caught.value)


def test_the_key_takes_import_strings_only() -> None:
    with pytest.raises(ConfigError, match="observers"):
        resolve(overrides={"observers": "counter"})
    assert load_observers(resolve()) == []  # none by default


def test_own_observers_are_logged_summarised_and_checkpointed(tmp_path: Path) -> None:
    run_federation(InProcessGrid(4), CFG, tmp_path)
    rounds = [line for line in read_log(tmp_path / "rounds.jsonl") if is_round(line)]
    assert len(rounds) == 2 * ROUNDS
    for line in rounds:  # every client trains and is evaluated every round
        assert line["observers"] == {"counter": {"train": 4, "evaluate": 4}}
    results = json.loads((tmp_path / "results.json").read_text())["strategies"]
    for entry in results.values():
        assert entry["observers"] == {"counter": [{"train": 4, "evaluate": 4}] * ROUNDS}
    saved = ckpt.load(tmp_path)
    assert saved is not None
    assert saved.strategy_state["observers"]["counter"]["seen"]["3"] == {"train": 4, "evaluate": 4}
    # A fresh strategy restores its observer from the checkpoint.
    strategy = build_strategy("noise-adaptive", CFG, [])
    strategy.load_state_dict(saved.strategy_state)
    (counter,) = strategy.own_observers
    assert counter.round_record(2) == {"train": 4, "evaluate": 4}


def test_without_own_observers_nothing_changes() -> None:
    strategy = build_strategy("fedavg", {**CFG, "observers": ""}, [])
    assert strategy.own_observers == []
    assert "observers" not in strategy.state_dict()


def test_an_observer_that_raises_is_switched_off_and_the_run_goes_on(tmp_path, caplog) -> None:
    cfg = {**CFG, "strategies": "fedavg", "observers": "tests.apps.observers:Raising"}
    with caplog.at_level("WARNING", logger="fedlr"):
        run_federation(InProcessGrid(4), cfg, tmp_path)
    rounds = [line for line in read_log(tmp_path / "rounds.jsonl") if is_round(line)]
    assert len(rounds) == ROUNDS  # the run finished
    assert rounds[0]["observers"] == {"raising": {"n": 3, "v": [0, 1]}}  # numpy made plain
    assert all("observers" not in line for line in rounds[1:])  # off after its failure
    messages = [r.getMessage() for r in caplog.records]
    assert sum("raised in after_train (RuntimeError: my bug)" in m for m in messages) == 1
    results = json.loads((tmp_path / "results.json").read_text())["strategies"]["fedavg"]
    assert results["observers"]["raising"] == [{"n": 3, "v": [0, 1]}, None, None]
