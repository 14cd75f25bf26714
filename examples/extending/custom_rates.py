"""A rate factor and a round observer of your own, on fedlr's noise-adaptive FedAvg.

``RampIn`` multiplies every client's rate by ``round / rounds`` for the first ``rounds`` rounds
(a warm-up of the whole federation); ``LossSpread`` keeps, per round, the spread of the train
losses the clients report. Both follow fedlr's protocols (:mod:`fedlr.rates.factors`,
:mod:`fedlr.fl.observers`); the strategy multiplies the factor into each client's rate after its
own (``schedule * noise * coupling * ramp``) and calls the observer with every accepted reply.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flwr.app import Message, MetricRecord

from fedlr.fl import NoiseAdaptiveFedAvg
from fedlr.fl.roundlog import RoundLog
from fedlr.rates.factors import Chain, ClientStats, Step, chain


class RampIn:
    """A rate factor: ``min(1, round / rounds)`` for every client."""

    name = "ramp"

    def __init__(self, rounds: int) -> None:
        if rounds < 1:
            raise ValueError(f"rounds: expected an integer >= 1, got {rounds}")
        self.rounds = rounds

    def plan(self, server_round: int, clients: Mapping[int, ClientStats]) -> dict[int, Step]:
        """The same multiplier for every client this round."""
        return dict.fromkeys(clients, Step(min(1.0, server_round / self.rounds)))

    def update(self, server_round: int, reports: Mapping[int, Any]) -> None:
        """Nothing to learn from replies."""

    def state_dict(self) -> dict[str, Any]:
        """No memory."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """No memory."""


class LossSpread:
    """A round observer: the largest minus the smallest train loss of each round."""

    name = "loss_spread"

    def __init__(self, cfg: Mapping[str, Any] | None = None) -> None:  # observers=: the run config
        self.losses: list[float] = []
        self.spread: dict[int, float] = {}

    def train_reply(self, pid: int, reply: Message, metrics: MetricRecord, log_: RoundLog) -> None:
        """Keep the reply's train loss, when it sent one."""
        loss = metrics.get("train_loss")
        if isinstance(loss, int | float):
            self.losses.append(float(loss))

    def after_train(self, server_round: int, log_: RoundLog) -> None:
        """The round's spread, from the losses kept."""
        if self.losses:
            self.spread[server_round] = max(self.losses) - min(self.losses)
        self.losses = []

    def evaluate_reply(self, pid: int, metrics: MetricRecord, log_: RoundLog) -> None:
        """Evaluation is not watched."""

    def after_evaluate(self, server_round: int, log_: RoundLog) -> None:
        """Evaluation is not watched."""

    def state_dict(self) -> dict[str, Any]:
        """The spreads so far."""
        return {"spread": dict(self.spread)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.spread = {int(r): float(v) for r, v in state.get("spread", {}).items()}

    def round_record(self, server_round: int) -> dict[str, float] | None:
        """What rounds.jsonl logs under observers.loss_spread (None: nothing this round)."""
        spread = self.spread.get(server_round)
        return None if spread is None else {"spread": spread}


class RampedFedAvg(NoiseAdaptiveFedAvg):
    """fedlr's noise-adaptive FedAvg with the ramp as a fourth factor and the loss spread."""

    def __init__(self, *, ramp_rounds: int = 3, **kwargs: Any) -> None:
        self.ramp_rounds = ramp_rounds  # read by rate_chain(), which __init__ calls
        super().__init__(**kwargs)
        self.loss_spread = LossSpread()
        self.observers.append(self.loss_spread)

    def rate_chain(self) -> Chain:
        """The factors of the noise-adaptive FedAvg, then the ramp."""
        return chain(*super().rate_chain().factors, RampIn(self.ramp_rounds))
