"""Sections of flat keys: ``[schedule] floor = 0.1`` is ``schedule-floor = 0.1``, everywhere."""

from __future__ import annotations

import pytest

from fedlr.config import ConfigError, DEFAULTS, from_run_config, resolve, to_toml
from fedlr.config.loading import section_key

SECTIONED = """
strategies = "fedavg+cosine"
[schedule]
floor = 0.2
period = 7
[coupling]
rule = "sqrt"
warmup-rounds = 2
[noise-scale]
growth-max = 3.0
"""
FLAT = {
    "strategies": "fedavg+cosine",
    "schedule-floor": 0.2,
    "schedule-period": 7,
    "coupling-rule": "sqrt",
    "coupling-warmup-rounds": 2,
    "noise-scale-growth-max": 3.0,
}


def test_a_section_sets_the_same_keys_as_the_flat_form(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(SECTIONED)
    assert resolve(path) == resolve(overrides=FLAT)
    # --set and Flower's run config take the dotted form
    assert resolve(overrides={"schedule.floor": 0.2})["schedule-floor"] == 0.2
    assert from_run_config({"schedule.floor": 0.2})["schedule-floor"] == 0.2
    # a resolved config is written flat, and reads back the same
    out = tmp_path / "config.toml"
    out.write_text(to_toml(resolve(path)))
    assert resolve(out) == resolve(path)


def test_a_key_given_flat_and_in_its_section_in_one_place_is_refused(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text("schedule-floor = 0.1\n[schedule]\nfloor = 0.2\n")
    with pytest.raises(ConfigError, match="schedule-floor is set twice in one place"):
        resolve(path)
    # across places the later one wins, as for flat keys: file < --set
    path.write_text("[schedule]\nfloor = 0.2\n")
    assert resolve(path, {"schedule-floor": 0.3})["schedule-floor"] == 0.3


def test_under_flwr_run_the_sections_value_wins_over_the_flat_default():
    # Flower passes every key of the app config (flat defaults) plus --run-config's dotted one.
    passed = {**DEFAULTS, "schedule.floor": 0.25}
    assert from_run_config(passed)["schedule-floor"] == 0.25
    both = {**DEFAULTS, "schedule-floor": 0.3, "schedule.floor": 0.25}
    with pytest.raises(ConfigError, match="set twice"):
        from_run_config(both)


def test_section_key_names_what_a_section_holds():
    assert section_key("noise-scale.growth-max") == "noise-scale-growth-max"
    with pytest.raises(ConfigError, match=r"\[rate\] has no key 'lo'; it holds power, low, high"):
        section_key("rate.lo")
