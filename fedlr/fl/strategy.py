"""fedlr's strategies: Flower's own, each with the per-client layer of :mod:`fedlr.fl.client_rates`.

Used as a library (docs/library.md), each is a plain Flower strategy whose knobs are keyword
arguments (``NoiseAdaptiveFedAvg(lr=0.1)``); :func:`per_client` puts the layer over any other
``FedAvg``-family class. :func:`build_strategy` makes the strategy a run config's
``strategies`` entry names (``RULE+MODIFIER...`` or a table ``[strategy.NAME]``,
:func:`fedlr.config.strategy_spec`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flwr.serverapp.strategy import FedAdam, FedAvg, FedAvgM, FedProx, FedYogi, QFedAvg

from fedlr.config import strategy_config, strategy_spec
from fedlr.fl import keys
from fedlr.fl.nodes import ClientInfo, query_nodes
from fedlr.fl.observers import gradient_diagnostic
from fedlr.fl.own_observers import load_observers
from fedlr.fl.client_rates import PerClientRates
from fedlr.fl.library import KNOBS, library_config
from fedlr.fl.rate_plan import schedule_params
from fedlr.fl.roundlog import RoundLog

__all__ = [
    "KNOBS",
    "ClientInfo",
    "FedCorrProx",
    "NoiseAdaptiveFedAdam",
    "NoiseAdaptiveFedAvg",
    "NoiseAdaptiveFedAvgM",
    "NoiseAdaptiveFedProx",
    "NoiseAdaptiveFedYogi",
    "NoiseAdaptiveQFedAvg",
    "PerClientRates",
    "RoundLog",
    "build_strategy",
    "gradient_diagnostic",
    "library_config",
    "per_client",
    "query_nodes",
    "schedule_params",
]


class NoiseAdaptiveFedAvg(PerClientRates, FedAvg):
    """Flower's FedAvg with per-client rates inverse to estimated (or true) noise.

    Examples
    --------
    In your own ServerApp (your ClientApp reads ``msg.content["config"]["lr"]`` and replies
    ``num-examples`` and ``noise-estimate``, see :func:`fedlr.client.estimate_noise`):

    >>> strategy = NoiseAdaptiveFedAvg(lr=0.1, fraction_evaluate=0.0)
    >>> strategy.cfg["lr"], strategy.rate_source, strategy.cfg["warmup-rounds"]
    (0.1, 'estimate', 2)
    """


class NoiseAdaptiveFedProx(PerClientRates, FedProx):
    """Flower's FedProx (server adds ``proximal-mu``) with fedlr's per-client rates."""


class NoiseAdaptiveQFedAvg(PerClientRates, QFedAvg):
    """Flower's q-FedAvg with fedlr's per-client rates (replies need a finite ``train_loss``)."""

    needs_train_loss = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.aggregation != "mean":  # the robust path would bypass q-FedAvg's update
            raise ValueError(f"aggregation: expected mean with q-FedAvg, got {self.aggregation!r}")


class NoiseAdaptiveFedAdam(PerClientRates, FedAdam):
    """Flower's FedAdam (Reddi et al. 2021) over fedlr's per-client rates and weights."""


class NoiseAdaptiveFedYogi(PerClientRates, FedYogi):
    """Flower's FedYogi (Reddi et al. 2021) over fedlr's per-client rates and weights."""


class NoiseAdaptiveFedAvgM(PerClientRates, FedAvgM):
    """Flower's FedAvgM (Hsu et al. 2019) over fedlr's per-client rates and weights."""


def per_client(strategy: type[FedAvg]) -> type[PerClientRates]:
    """The per-client layer over any Flower ``FedAvg``-family strategy class.

    Examples
    --------
    >>> from flwr.serverapp.strategy import FedAdagrad
    >>> cls = per_client(FedAdagrad)
    >>> cls.__name__, issubclass(cls, FedAdagrad)
    ('NoiseAdaptiveFedAdagrad', True)
    """
    if not (isinstance(strategy, type) and issubclass(strategy, FedAvg)):
        raise TypeError(f"per_client: expected a Flower FedAvg-family class, got {strategy!r}")
    if issubclass(strategy, PerClientRates):
        return strategy
    name = f"NoiseAdaptive{strategy.__name__}"
    doc = f"Flower's {strategy.__name__} with fedlr's per-client rates and weights."
    body = {
        "__doc__": doc,
        "__module__": __name__,
        "needs_train_loss": issubclass(strategy, QFedAvg),  # its update scales by the loss
    }
    return type(name, (PerClientRates, strategy), body)


class FedCorrProx(NoiseAdaptiveFedProx):
    """FedCorr's adaptive proximal term (Xu et al., CVPR 2022) as a peer, at uniform rates.

    Client k's proximal mu is ``fedcorr-beta * sigma_k / max_j sigma_j``.
    FedCorr scales an (un-squared) proximal term by each client's estimated noisy fraction, its
    closest analogue to a per-client rate. fedlr's estimates are levels, not fractions, so they
    are divided by the largest one; fedlr's proximal term is FedProx's squared one. During
    ``warmup-rounds`` every client gets ``fedprox-mu``.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.uses_estimates = True

    def client_settings(self, pid: int, server_round: int) -> dict[str, float]:
        """``proximal-mu`` for client ``pid`` this round."""
        noise = self.noise_for_rule()
        if server_round <= self.cfg["warmup-rounds"] or pid not in noise:
            return {}
        top = max(noise.values())
        share = noise[pid] / top if top > 0 else 0.0
        return {keys.PROXIMAL_MU: float(self.cfg["fedcorr-beta"]) * share}


def build_strategy(name: str, cfg: Mapping[str, Any], clients: list[ClientInfo]) -> PerClientRates:
    """The strategy called ``name`` (``RULE[+MODIFIER...]``, or a table) in ``strategies``."""
    spec = strategy_spec(name, cfg)  # a table's name is read from the run config's tables
    rule = spec.rule
    cfg = strategy_config(name, cfg)
    common: dict[str, Any] = {
        "cfg": cfg,
        "clients": clients,
        "rate_source": "uniform",
        "schedule": spec.schedule,
        "coupled": spec.has("coupled"),
        "grow_batch": spec.has("grow-batch"),
        "replay": spec.has("replay"),
        "degree_rule": spec.degree,
    }
    strategy: PerClientRates
    if rule == "fedavg":
        strategy = NoiseAdaptiveFedAvg(**common, weight_by_noise=False)
    elif rule == "inverse-noise-weights":
        strategy = NoiseAdaptiveFedAvg(**common, weight_by_noise=True)
    elif rule == "noise-adaptive":
        strategy = NoiseAdaptiveFedAvg(
            **{**common, "rate_source": "estimate"},
            weight_by_noise=cfg["noise-weighted-aggregation"],
        )
    elif rule == "oracle-noise-rates":
        strategy = NoiseAdaptiveFedAvg(**{**common, "rate_source": "oracle"}, weight_by_noise=False)
    elif rule == "fedprox":
        strategy = NoiseAdaptiveFedProx(
            **common, weight_by_noise=False, proximal_mu=cfg["fedprox-mu"]
        )
    elif rule == "fedcorr-prox":
        strategy = FedCorrProx(**common, weight_by_noise=False, proximal_mu=cfg["fedprox-mu"])
    elif rule == "qfedavg":
        strategy = NoiseAdaptiveQFedAvg(
            **common,
            weight_by_noise=False,
            client_learning_rate=cfg["lr"],
            q=cfg["qfedavg-q"],
            train_loss_key=keys.TRAIN_LOSS,
        )
    else:
        raise ValueError(f"strategies: unknown strategy {name!r}")
    strategy.own_observers = load_observers(cfg)  # the run's own, built fresh per strategy
    strategy.observers.extend(strategy.own_observers)
    return strategy
