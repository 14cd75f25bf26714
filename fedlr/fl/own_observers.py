"""A run's own round observers (the ``observers`` key): loaded, checked and guarded.

:func:`load_observers` builds each ``package.module:Factory`` with the run config and checks it
follows :class:`fedlr.fl.observers.Observer`; :class:`Guarded` keeps one that raises from ending
the run; :func:`round_records` collects what they log of a round (``observers.NAME`` in
``rounds.jsonl``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from flwr.app import Message, MetricRecord

from fedlr.analysis import json_safe
from fedlr.fl.observers import Observer
from fedlr.fl.roundlog import RoundLog

log = logging.getLogger("fedlr")

HOOKS = (
    "train_reply",
    "after_train",
    "evaluate_reply",
    "after_evaluate",
    "state_dict",
    "load_state_dict",
)
BUILTIN_NAMES = ("batches", "noise_scale", "degree", "continual")  # fedlr's own observers


def load_observers(cfg: Mapping[str, Any]) -> list[Observer]:
    """The run's own round observers (``observers``), each built from its factory with ``cfg``.

    An observer may also have ``round_record(server_round)``: what it returns (plain data, or
    None for nothing) is logged under ``observers.NAME`` of the round's line in ``rounds.jsonl``
    and, one entry per round, of the strategy's ``results.json`` entry.

    Raises
    ------
    ConfigError
        A factory cannot be loaded, or what it returns has no ``name`` (a word, not one of
        fedlr's own or another observer's) or lacks a hook of :class:`Observer`.
    """
    from fedlr.config import ConfigError, split_list
    from fedlr.tasks.plugins import load_object

    observers: list[Observer] = []
    for spec in split_list(str(cfg.get("observers", ""))):
        factory = load_object(spec, "observers")
        try:
            observer = factory(cfg)
        except Exception as error:  # noqa: BLE001  (the user's code)
            raise ConfigError(
                f"observers: {spec}(config) raised {type(error).__name__}: {error}"
            ) from None
        name = getattr(observer, "name", None)
        if not isinstance(name, str) or not name.isidentifier():
            raise ConfigError(
                f"observers: {spec} built an observer whose name is {name!r}; expected a word "
                "(letters, digits, _), its namespace in rounds.jsonl"
            )
        taken = [*BUILTIN_NAMES, *(o.name for o in observers)]
        if name in taken:
            raise ConfigError(
                f"observers: {spec}'s name {name!r} is taken; expected one not in "
                f"{', '.join(taken)}"
            )
        missing = [hook for hook in HOOKS if not callable(getattr(observer, hook, None))]
        if missing:
            raise ConfigError(
                f"observers: {spec} has no {', '.join(missing)}; expected the six hooks of "
                "fedlr.fl.observers.Observer"
            )
        observers.append(Guarded(observer, spec))
    return observers


class Guarded:
    """A run's own observer, kept from ending the run.

    A hook that raises is logged once and the observer is off for the rest of the run; what it
    logs (its round records, its state) must be plain JSON data, else it is left out (logged).
    """

    def __init__(self, observer: Any, spec: str) -> None:
        self.observer, self.spec, self.name = observer, spec, str(observer.name)
        self.off = False

    def _call(self, hook: str, *args: Any, default: Any = None) -> Any:
        if self.off:
            return default
        try:
            return getattr(self.observer, hook)(*args)
        except Exception as error:  # noqa: BLE001  (the user's code)
            self.off = True
            log.warning(
                "fedlr: observer %s (%s) raised in %s (%s: %s); it is off for the rest of the run",
                self.name,
                self.spec,
                hook,
                type(error).__name__,
                error,
            )
            return default

    def train_reply(self, pid: int, reply: Message, metrics: MetricRecord, log_: RoundLog) -> None:
        """The observer's own hook."""
        self._call("train_reply", pid, reply, metrics, log_)

    def after_train(self, server_round: int, log_: RoundLog) -> None:
        """The observer's own hook."""
        self._call("after_train", server_round, log_)

    def evaluate_reply(self, pid: int, metrics: MetricRecord, log_: RoundLog) -> None:
        """The observer's own hook."""
        self._call("evaluate_reply", pid, metrics, log_)

    def after_evaluate(self, server_round: int, log_: RoundLog) -> None:
        """The observer's own hook."""
        self._call("after_evaluate", server_round, log_)

    def state_dict(self) -> dict[str, Any]:
        """The observer's memory, as JSON-safe data (empty when it fails)."""
        return self._plain("state_dict", self._call("state_dict", default={})) or {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """The observer's own hook."""
        self._call("load_state_dict", state)

    def round_record(self, server_round: int) -> Any:
        """What the observer logs of a round (None: nothing, or it has no ``round_record``)."""
        if not callable(getattr(self.observer, "round_record", None)):
            return None
        return self._plain("round_record", self._call("round_record", server_round))

    def _plain(self, hook: str, value: Any) -> Any:
        """``value`` as strict-JSON data, or None (logged) when it cannot be."""
        value = json_safe(value)
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as error:
            log.warning("fedlr: observer %s: %s gave no JSON data (%s)", self.name, hook, error)
            return None
        return value


def round_records(observers: list[Observer], server_round: int) -> dict[str, Any]:
    """What each of a run's own observers says of round ``server_round`` (None: nothing)."""
    records = {}
    for observer in observers:
        record = getattr(observer, "round_record", None)
        value = record(server_round) if callable(record) else None
        if value is not None:
            records[observer.name] = value
    return records
