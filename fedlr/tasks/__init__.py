"""Tasks: one task = data + model + local train/eval loop.

:func:`task_for` picks the run's task from its ``dataset``: :mod:`fedlr.tasks.tabular`
(digits, synthetic) or :mod:`fedlr.tasks.graph` (cora, karate, ba). Both offer
``client_data(cfg, partition_id)`` (with ``num_train``, ``num_test``, ``role`` and
``flip_fraction``), and ``build_model(cfg)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import Any

from fedlr.config import is_graph


def task_for(cfg: Mapping[str, Any]) -> ModuleType:
    """The task module of a resolved config."""
    if is_graph(cfg):
        from fedlr.tasks import graph

        return graph
    from fedlr.tasks import tabular

    return tabular
