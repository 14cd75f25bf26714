"""Users' code named in the config as ``package.module:attribute``, the way Flower names apps.

``model = "mypkg.models:tiny_cnn"`` imports ``mypkg.models`` (from the working directory or any
installed package) and takes its ``tiny_cnn``. Every failure is one
:class:`~fedlr.config.ConfigError` line naming the key and what went wrong.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedlr.config import ConfigError


def load_object(spec: str, key: str) -> Callable[..., Any]:
    """The callable named by ``spec`` (``package.module:attribute``) for config key ``key``.

    The current directory is importable, so a user's ``my_model.py`` next to their scenario
    works as ``my_model:build`` without installing anything.

    >>> load_object("fedlr.tasks.tabular:MLP", "model").__name__
    'MLP'

    Raises
    ------
    ConfigError
        ``spec`` is not ``package.module:attribute``, the module cannot be imported, it has no
        such attribute, or the attribute is not callable.
    """
    module_name, sep, attribute = str(spec).partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"{key}: expected package.module:function, got {spec!r}")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.append(cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001  (ImportError, or an error in the user's module)
        raise ConfigError(
            f"{key}: cannot import {module_name!r} ({type(error).__name__}: {error})"
        ) from None
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"{key}: module {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"{key}: {spec} is a {type(target).__name__}, expected a callable")
    return target
