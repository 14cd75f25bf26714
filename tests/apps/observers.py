"""Round observers named in a run config (tests/fl/test_own_observers.py), good and bad."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class Counter:
    """Counts the accepted train and evaluate replies of each round; logs them per round."""

    name = "counter"

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        self.rounds = int(cfg["num-server-rounds"])  # built with the run config
        self.train = self.evaluate = 0
        self.seen: dict[int, dict[str, int]] = {}

    def train_reply(self, pid: int, reply: Any, metrics: Any, log_: Any) -> None:
        self.train += 1

    def after_train(self, server_round: int, log_: Any) -> None:
        self.seen[server_round] = {"train": self.train}
        self.train = 0

    def evaluate_reply(self, pid: int, metrics: Any, log_: Any) -> None:
        self.evaluate += 1

    def after_evaluate(self, server_round: int, log_: Any) -> None:
        self.seen.setdefault(server_round, {})["evaluate"] = self.evaluate
        self.evaluate = 0

    def state_dict(self) -> dict[str, Any]:
        return {"seen": {str(r): v for r, v in self.seen.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.seen = {int(r): dict(v) for r, v in state.get("seen", {}).items()}

    def round_record(self, server_round: int) -> dict[str, int] | None:
        return self.seen.get(server_round)


class Nameless(Counter):
    name = None  # type: ignore[assignment]


class Continual(Counter):
    name = "continual"  # fedlr's own


class Hookless:
    name = "hookless"

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        pass

    def train_reply(self, pid: int, reply: Any, metrics: Any, log_: Any) -> None:
        pass


class Raising(Counter):
    """Fails in its second round's after_train; logs numpy values and data JSON cannot hold."""

    name = "raising"

    def after_train(self, server_round: int, log_: Any) -> None:
        if server_round == 2:
            raise RuntimeError("my bug")
        super().after_train(server_round, log_)

    def round_record(self, server_round: int) -> Any:
        import numpy as np

        if server_round == 1:
            return {"n": np.int64(3), "v": np.arange(2)}  # numpy: made plain
        return {"x": object()}  # not JSON: left out


def broken_factory(cfg: Mapping[str, Any]) -> Counter:
    raise RuntimeError("cannot build")
