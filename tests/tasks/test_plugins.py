"""A user's model named ``package.module:function``: loaded, called, checked."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from fedlr.config import ConfigError, resolve
from fedlr.tasks import tabular
from fedlr.tasks.plugins import load_object

USER_MODULE = """
from torch import nn

def tiny(num_features, num_classes):
    return nn.Sequential(nn.Linear(num_features, 3), nn.Tanh(), nn.Linear(3, num_classes))

def not_a_module(num_features, num_classes):
    return "a string"

def broken(num_features, num_classes):
    raise RuntimeError("out of ideas")

NOT_CALLABLE = 3
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_models"
    sys.modules.pop("my_models", None)


def test_builtin_models_by_name():
    cfg = resolve(overrides={"model": "linear"})
    model = tabular.make_model(cfg, 64, 10)
    assert isinstance(model, nn.Linear) and model.weight.shape == (10, 64)
    assert isinstance(tabular.make_model(resolve(), 64, 10), tabular.MLP)


def test_a_users_function_gets_features_and_classes(user_module):
    cfg = resolve(overrides={"model": f"{user_module}:tiny"})
    model = tabular.build_model(cfg)  # digits: 64 features, 10 classes
    assert model(torch.zeros(2, 64)).shape == (2, 10)
    again = tabular.build_model(cfg)  # seeded: the same initial weights
    for a, b in zip(model.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "my_models:not_a_module",
            "model: my_models:not_a_module returned str; expected a torch.nn.Module",
        ),
        ("my_models:broken", "model: my_models:broken(64, 10) raised RuntimeError: out of ideas"),
        ("my_models:absent", "model: module 'my_models' has no attribute 'absent'"),
        ("my_models:NOT_CALLABLE", "model: my_models:NOT_CALLABLE is a int, expected a callable"),
        (
            "no_such_package.models:tiny",
            "model: cannot import 'no_such_package.models' (ModuleNotFoundError",
        ),
    ],
)
def test_a_bad_model_is_one_config_error(user_module, spec, message):
    with pytest.raises(ConfigError) as caught:
        tabular.build_model(resolve(overrides={"model": spec}))
    assert message in str(caught.value)


def test_model_key_needs_the_import_string_shape():
    with pytest.raises(ConfigError, match="model: expected mlp, linear or package.module:function"):
        resolve(overrides={"model": "resnet"})
    with pytest.raises(ConfigError, match="model: graphs use the gnn key"):
        resolve(
            overrides={
                "model": "linear",
                "dataset": "karate",
                "num-clients": 2,
                "noisy-clients": 0,
                "hard-clean-clients": 0,
            }
        )


def test_load_object_doctest_target():
    assert load_object("fedlr.tasks.tabular:MLP", "model") is tabular.MLP


def test_cli_exits_2_with_one_line_for_a_model_that_returns_the_wrong_thing(user_module, tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedlr.cli",
            "simulate",
            "--set",
            "model=my_models:not_a_module",
            "--out",
            str(tmp_path / "runs"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "expected a torch.nn.Module" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
