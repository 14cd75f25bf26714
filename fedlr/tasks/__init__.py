"""Tasks: one task = data + model + local train/eval loop (the Task protocol, :mod:`.base`).

:func:`load_task` gives the run's task: the user's ``task = "package.module:factory"``, else the
built-in one of its ``dataset`` — :class:`~fedlr.tasks.tabular.TabularTask` (digits, synthetic,
users' files), :class:`~fedlr.tasks.continual.ContinualTask` (tabular under a ``stream``) or
:class:`~fedlr.tasks.graph.GraphTask` (cora, karate, ba). :func:`task_for` gives the built-in
task's module, whose ``client_data(cfg, partition_id)`` and ``build_model(cfg)`` tools, benchmarks
and tests use directly.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from fedlr.config import ConfigError, is_graph


def task_for(cfg: Mapping[str, Any]) -> ModuleType:
    """The built-in task module of a resolved config."""
    if is_graph(cfg):
        from fedlr.tasks import graph

        return graph
    from fedlr.tasks import tabular

    return tabular


def preflight(cfg: Mapping[str, Any]) -> None:
    """Build the first client's data and the model once, before any engine starts.

    Bad data or a bad model is then one clear error (``fedlr simulate`` calls it).

    Raises
    ------
    ValueError
        What is wrong (:class:`~fedlr.config.ConfigError` for the user's files, model or task).
    """
    if cfg.get("task"):
        from fedlr.tasks.base import ClientContext

        task = load_task(cfg)
        task.build_model()
        task.client_data(ClientContext(cfg, 0))
        return
    module = task_for(cfg)
    module.client_data(cfg, 0)
    module.build_model(cfg)


def load_task(cfg: Mapping[str, Any]) -> Any:
    """The run's :class:`~fedlr.tasks.base.Task`, built once per process and config.

    Raises
    ------
    ConfigError
        A user's ``task`` factory cannot be imported, fails, or returns no Task.
    """
    from fedlr.config import SCHEMA

    # not `lr`: the server sets it per client and round (the RoundPlan carries it), and a task
    # built again per message would lose what it cached
    settings = {k: cfg[k] for k in SCHEMA if k in cfg and k != "lr"}
    return _cached_task(json.dumps(settings, sort_keys=True))


@functools.lru_cache(maxsize=16)
def _cached_task(key: str) -> Any:
    from fedlr.tasks.base import Task

    cfg = json.loads(key)
    spec = str(cfg.get("task", ""))
    if spec:
        from fedlr.tasks.plugins import load_object

        factory = load_object(spec, "task")
        try:
            task = factory(cfg)
        except ConfigError:
            raise
        except Exception as error:  # noqa: BLE001  (the user's code: one line, not a traceback)
            raise ConfigError(f"task: {spec}(cfg) raised {type(error).__name__}: {error}") from None
        missing = [
            name
            for name in ("client_data", "build_model", "describe", "train", "evaluate")
            if not callable(getattr(task, name, None))
        ]
        if missing or not isinstance(task, Task):
            raise ConfigError(
                f"task: {spec} returned {type(task).__name__}, which lacks "
                f"{', '.join(missing) or 'mini_batches'}; expected a fedlr Task (e.g. a "
                "fedlr.tasks.base.ArrayTask)"
            )
        return task
    if is_graph(cfg):
        from fedlr.tasks.graph import GraphTask

        return GraphTask(cfg)
    if cfg.get("stream", "none") != "none":
        from fedlr.tasks.continual import ContinualTask

        return ContinualTask(cfg)
    from fedlr.tasks.tabular import TabularTask

    return TabularTask(cfg)
