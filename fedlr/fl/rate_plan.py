"""How a strategy plans each client's rate: its run config made into rate factors.

:class:`RatePlanning` is the part of :class:`fedlr.fl.client_rates.PerClientRates` that builds
the chain of :mod:`fedlr.rates.factors` (``schedule * noise * coupling``) from the run config and
the strategy's modifiers, and reads it: each client's plan for a round, its optimizer settings
beyond the rate, and the task arrivals a stream's ``+phases`` schedule follows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from fedlr.fl import keys
from fedlr.fl.nodes import ClientInfo
from fedlr.fl.observers import Continual, NoiseScale
from fedlr.rates import coupling, schedules
from fedlr.rates.factors import (
    Chain,
    ClientStats,
    ConstantFactor,
    CouplingFactor,
    NoiseFactor,
    ScheduleFactor,
    chain,
)
from fedlr.rates.noise import NoiseEMA

log = logging.getLogger("fedlr")


def schedule_params(name: str, cfg: Mapping[str, Any], starts: Iterable[int]) -> dict[str, Any]:
    """Schedule ``name``'s parameters, from the run config's ``schedule-*`` keys.

    They are :func:`fedlr.rates.schedules.round_multipliers`'s; ``starts`` are a client's task
    arrival rounds (the phases of ``+phases``).

    ``schedule-period`` 0 means ``num-server-rounds // num-tasks`` (at least 1): one period per
    task. A cyclical period is one whole cycle, half up and half down.

    >>> cfg = {"schedule-period": 0, "num-server-rounds": 20, "num-tasks": 4,
    ...        "schedule-gamma": 0.5, "schedule-floor": 0.0, "schedule-warmup": 1,
    ...        "schedule-peak-decay": 1.0}
    >>> schedule_params("step", cfg, [1, 6, 11, 16])
    {'step_size': 5, 'gamma': 0.5}
    """
    period = int(cfg["schedule-period"]) or max(1, cfg["num-server-rounds"] // cfg["num-tasks"])
    floor = float(cfg["schedule-floor"])
    if name == "step":
        return {"step_size": period, "gamma": float(cfg["schedule-gamma"])}
    if name == "exponential":
        return {"gamma": float(cfg["schedule-gamma"])}
    if name == "cosine":
        return {"floor": floor}
    if name == "warm-restarts":
        return {"t_0": period, "floor": floor}
    if name == "cyclical":
        up = max(1, period // 2)
        return {"step_size_up": up, "step_size_down": max(1, period - up), "floor": floor}
    if name == "phases":
        return {
            "starts": [int(v) for v in starts],
            "warmup": int(cfg["schedule-warmup"]),
            "floor": floor,
            "peak_decay": float(cfg["schedule-peak-decay"]),
        }
    return {}  # constant, one-cycle (torch's defaults)


class RatePlanning:
    """Mixin: the rate factors of a per-client strategy, and what they plan each round."""

    cfg: dict[str, Any]
    present: set[int] | None = None  # library use: the nodes connected this round
    by_partition: dict[int, ClientInfo]
    example_cap: int
    base_lr: float
    batch: dict[int, int]
    graph: bool
    stream: str
    schedule_name: str
    coupled: bool
    grow_batch: bool
    coupling_rule: str
    reference_batch: float
    milestones: list[int]
    noise: NoiseFactor
    rates: Chain
    noise_scale_observer: NoiseScale
    continual: Continual
    _kept_betas: set[int]

    def rate_chain(self) -> Chain:
        """The rate factors of this strategy, in the order they multiply."""
        cfg = self.cfg
        schedule = ScheduleFactor(
            self.schedule_name,
            int(cfg["num-server-rounds"]),
            params=lambda starts: schedule_params(self.schedule_name, self.cfg, starts),
            milestones=self.milestones,
            decay_factor=cfg["lr-decay-factor"],
            grow_batch=self.grow_batch,
            growth=lambda: (
                self.noise_scale_observer.growth
                if self.cfg["noise-scale-growth"] == "batch"
                else 1.0
            ),
        )
        couple: ConstantFactor | CouplingFactor = ConstantFactor("coupling")
        if self.coupled and not self.graph:
            couple = CouplingFactor(
                rule=self.coupling_rule,
                optimizer=cfg["optimizer"],
                reference=self.reference_batch,
                low=cfg["coupling-low"],
                high=cfg["coupling-high"],
                warmup=int(cfg["coupling-warmup-rounds"]),
                b_noise=lambda: self.noise_scale_observer.b_simple,
            )
        return chain(schedule, self.noise, couple)

    # -- tasks and schedules -------------------------------------------------------------------
    def task_starts(self) -> np.ndarray:
        """Arrival round of each task at each partition id, ``(num-clients, num-tasks)``.

        A stream's :func:`fedlr.tasks.streams.arrival_rounds`; without a stream, ``num-tasks``
        even phases, the same at every client (the phases of ``+phases``).
        """
        from fedlr.tasks import streams

        stagger = int(self.cfg["task-stagger"]) if self.stream != "none" else 0
        return streams.arrival_rounds(
            self.cfg["num-server-rounds"],
            self.cfg["num-tasks"],
            max(self.by_partition, default=0) + 1,
            stagger,
        )

    def snapshot_rounds(self) -> list[int]:
        """Rounds after which the global model is kept: each task's end at every client."""
        from fedlr.tasks import streams

        return streams.snapshot_rounds(self.task_starts(), self.cfg["num-server-rounds"])

    def multipliers(self, pid: int) -> schedules.RoundMultipliers:
        """The schedule's rate multiplier of every round for partition ``pid``, read lazily.

        One list for all clients, except ``+phases`` in a staggered stream, where each client's
        phases start when its own tasks arrive.
        """
        starts: tuple[int, ...] = ()
        if self.schedule_name == "phases":
            starts = tuple(int(v) for v in self.task_starts()[pid])
        schedule = self.rates["schedule"]
        assert isinstance(schedule, ScheduleFactor)
        return schedule.multipliers(starts)

    # what the observers and factors keep, under the names the recorder and server app read
    @property
    def ema(self) -> NoiseEMA:
        """The smoothed noise estimates (the noise factor's)."""
        return self.noise.ema

    @property
    def invalid_last(self) -> set[int]:
        """Partition ids whose last estimate was invalid (the noise factor's)."""
        return self.noise.invalid

    @property
    def growth(self) -> float:
        """The ``noise-scale-growth`` factor for the next round (the noise-scale observer's)."""
        return self.noise_scale_observer.growth

    @property
    def noise_scale(self) -> coupling.NoiseScaleEMA:
        """The smoothed noise-scale terms (the noise-scale observer's)."""
        return self.noise_scale_observer.noise_scale

    @property
    def first_b_simple(self) -> float | None:
        """The first settled noise scale (the noise-scale observer's)."""
        return self.noise_scale_observer.first_b_simple

    @property
    def task_baseline(self) -> dict[int, list[float]]:
        """Accuracy per task of the untrained model, per partition id (continual streams)."""
        return self.continual.task_baseline

    @task_baseline.setter
    def task_baseline(self, value: dict[int, list[float]]) -> None:
        self.continual.task_baseline = value

    @property
    def task_ensemble(self) -> dict[int, list[float]]:
        """Accuracy per task of the snapshot ensemble, per partition id (continual streams)."""
        return self.continual.task_ensemble

    @task_ensemble.setter
    def task_ensemble(self, value: dict[int, list[float]]) -> None:
        self.continual.task_ensemble = value

    @property
    def ensemble_examples(self) -> dict[int, list[int]]:
        """Test examples per task behind :attr:`task_ensemble`, per partition id."""
        return self.continual.ensemble_examples

    @ensemble_examples.setter
    def ensemble_examples(self, value: dict[int, list[int]]) -> None:
        self.continual.ensemble_examples = value

    # -- rates -------------------------------------------------------------------------------
    def size(self, client: ClientInfo) -> int:
        """The examples ``client`` counts for: what it reported, at most ``example_cap``."""
        return min(client.num_examples, self.example_cap)

    def client_stats(self) -> dict[int, ClientStats]:
        """What the rate factors may know of each client, by partition id.

        Library use: of the nodes connected this round only (:attr:`present`), so a node that
        left no longer steers the others' rates through its last estimate.
        """
        starts = self.task_starts() if self.schedule_name == "phases" else None
        return {
            pid: ClientStats(
                size=self.size(client),
                batch=self.batch[pid],
                num_examples=client.num_examples,
                noise_true=client.noise_true,
                task_starts=tuple(int(v) for v in starts[pid]) if starts is not None else (),
            )
            for pid, client in self.by_partition.items()
            if self.present is None or pid in self.present
        }

    def noise_for_rule(self) -> dict[int, float]:
        """Noise per partition id that the rule may use now (oracle truth or smoothed estimates)."""
        return self.noise.noise(self.client_stats())

    def noisy_partitions(self) -> set[int]:
        """Partition ids whose noise stands apart (:func:`fedlr.rates.robust.noisy_group`)."""
        return self.noise.noisy_group(self.client_stats())

    def factors(self) -> dict[int, float]:
        """Noise factor per partition id, warm-up aside (:meth:`NoiseFactor.factors`)."""
        return self.noise.factors(self.client_stats())

    def noise_factors(self, server_round: int) -> dict[int, float]:
        """The noise-inverse factor per partition id this round (1 when uniform or warming up)."""
        return {
            p: step.rate for p, step in self.noise.plan(server_round, self.client_stats()).items()
        }

    def coupling_factors(self, server_round: int) -> dict[int, float]:
        """The batch-size coupling factor per partition id (``+coupled``; 1 otherwise)."""
        planned = self.rates["coupling"].plan(server_round, self.client_stats())
        return {pid: step.rate for pid, step in planned.items()}

    def schedule(self, server_round: int) -> dict[int, tuple[float, int]]:
        """``(rate multiplier, local batch)`` per partition id this round (the schedule factor)."""
        planned = self.rates["schedule"].plan(server_round, self.client_stats())
        return {pid: (step.rate, int(step.batch or 0)) for pid, step in planned.items()}

    def round_plan(self, server_round: int) -> dict[int, tuple[float, int, float, float]]:
        """Per partition id: ``(lr, batch, coupling factor, schedule factor)`` this round.

        ``lr = base * schedule * noise * coupling`` (:attr:`rates`), each factor computed once.
        """
        plans = self.rates.plan(server_round, self.client_stats(), base=self.base_lr)
        return {
            pid: (plan.lr, plan.batch, plan.factors["coupling"], plan.factors["schedule"])
            for pid, plan in plans.items()
        }

    def client_lr(self, server_round: int) -> dict[int, float]:
        """Learning rate per partition id for this round (:meth:`round_plan`'s first entry)."""
        return {pid: entry[0] for pid, entry in self.round_plan(server_round).items()}

    def optimizer_settings(self, pid: int, lr: float, coupling_factor: float) -> dict[str, float]:
        """Per-client optimizer settings beyond the rate: weight decay and Adam's betas/eps."""
        out: dict[str, float] = {}
        if self.cfg["weight-decay"] > 0:
            out[keys.CLIENT_WEIGHT_DECAY] = coupling.coupled_weight_decay(
                self.cfg["weight-decay"], lr, self.base_lr, self.cfg["weight-decay-coupling"]
            )
        if self.coupled and self.cfg["optimizer"] == "adam" and self.coupling_rule == "sqrt":
            try:  # the sqrt factor is sqrt(kappa): kappa = factor^2 (bounds included)
                hyper = coupling.malladi_sqrt(self.base_lr, 0.9, 0.999, 1e-8, coupling_factor**2)
            except ValueError as error:
                if pid not in self._kept_betas:  # once per client, not every round
                    self._kept_betas.add(pid)
                    log.warning("fedlr: partition %d keeps Adam's betas: %s", pid, error)
            else:
                out.update(
                    {
                        keys.ADAM_BETA1: hyper.beta1,
                        keys.ADAM_BETA2: hyper.beta2,
                        keys.ADAM_EPS: hyper.eps,
                    }
                )
        return out

    def client_settings(self, pid: int, server_round: int) -> dict[str, float]:
        """Per-client config entries a subclass adds (FedCorr's proximal mu); none here."""
        return {}

    def sample(self, server_round: int, among: Iterable[int] | None = None) -> list[int]:
        """Partition ids trained this round: seeded by (seed, round), independent of node ids.

        ``among``: the ids to draw from (library use: the connected nodes); all by default.
        """
        pids = sorted(self.by_partition if among is None else among)
        count = max(1, int(len(pids) * self.cfg["fraction-train"]))  # Flower floors too
        if self.cfg["noise-scale-growth"] == "clients":
            count = min(len(pids), round(count * self.growth))
        if count >= len(pids):
            return pids
        rng = np.random.default_rng([self.cfg["seed"], server_round])
        # by index: the same draw as choosing from the ids, for node ids beyond int64 too
        return sorted(pids[int(i)] for i in rng.choice(len(pids), size=count, replace=False))
