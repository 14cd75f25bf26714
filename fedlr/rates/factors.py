r"""Rate factors: small objects whose product is each client's learning rate.

As DESIGN.md says, client k's rate in round r is made one factor at a time::

    lr[k, r] = base * schedule[k, r] * noise[k, r] * coupling[k, r]

Each factor is an object with one protocol (optax's ``GradientTransformation`` is the model:
state kept explicitly, composed by :func:`chain`):

* ``plan(server_round, clients)``: each client's :class:`Step` this round (a rate multiplier,
  and for the schedule the local batch);
* ``update(server_round, reports)``: what it learns from the round's replies (only the noise
  factor learns: the clients' estimates);
* ``state_dict()`` / ``load_state_dict(state)``: its memory as plain data, for checkpoints.

A new rule is a new factor, not a new flag on the strategy. The factors read only plain data
(:class:`ClientStats`, numbers): no Flower, no I/O, so each is testable by hand.

Examples
--------
>>> clients = {0: ClientStats(size=100, batch=16), 1: ClientStats(size=100, batch=16)}
>>> noise = NoiseFactor(source="oracle", guard="none")
>>> truth = {0: ClientStats(size=100, batch=16, noise_true=0.1),
...          1: ClientStats(size=100, batch=16, noise_true=0.4)}
>>> plan = chain(ConstantFactor("schedule"), noise).plan(1, truth, base=0.1)
>>> {pid: round(p.lr, 4) for pid, p in plan.items()}
{0: 0.16, 1: 0.04}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np

from fedlr.rates import coupling, robust, schedules
from fedlr.rates.noise import NoiseEMA, inverse_noise_rule, is_valid_estimate

__all__ = [
    "Chain",
    "ClientStats",
    "ConstantFactor",
    "CouplingFactor",
    "NoiseFactor",
    "RateFactor",
    "RatePlan",
    "ScheduleFactor",
    "Step",
    "chain",
]


@dataclass(frozen=True)
class ClientStats:
    """What a factor may know of one client (plain numbers; the truth only in simulations)."""

    size: int  # the examples it counts for (its reported count, bounded)
    batch: int  # its own local batch
    num_examples: int = 0  # its reported count: a batch never grows past it
    noise_true: float | None = None  # simulations only: the injected noise rate
    task_starts: tuple[int, ...] = ()  # continual streams: each task's arrival round


class Step(NamedTuple):
    """One factor's say for one client in one round: a rate multiplier, maybe a batch."""

    rate: float
    batch: int | None = None


class RateFactor(Protocol):
    """The protocol every factor follows (see the module docstring)."""

    name: str

    def plan(self, server_round: int, clients: Mapping[int, ClientStats]) -> dict[int, Step]:
        """Each client's step this round."""
        ...

    def update(self, server_round: int, reports: Mapping[int, Any]) -> object:
        """Learn from the round's replies (partition id -> what the factor reads)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The factor's memory as plain data."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        ...


class _Stateless:
    """A factor with no memory: nothing to learn, nothing to save."""

    def update(self, server_round: int, reports: Mapping[int, Any]) -> None:
        """Nothing to learn."""
        del server_round, reports

    def state_dict(self) -> dict[str, Any]:
        """No memory."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """No memory."""
        del state


@dataclass
class ConstantFactor(_Stateless):
    """Multiplier 1 for every client: a factor that is switched off."""

    name: str

    def plan(self, server_round: int, clients: Mapping[int, ClientStats]) -> dict[int, Step]:
        """Step(1.0) for every client."""
        return dict.fromkeys(clients, Step(1.0))


class RatePlan(NamedTuple):
    """A client's rate this round, its local batch, and each factor's multiplier by name."""

    lr: float
    batch: int
    factors: dict[str, float]


@dataclass
class Chain:
    """Factors applied in order: ``lr = base * f_1 * f_2 * ...``; the last batch said wins."""

    factors: tuple[RateFactor, ...]

    def plan(
        self, server_round: int, clients: Mapping[int, ClientStats], *, base: float
    ) -> dict[int, RatePlan]:
        """Each client's :class:`RatePlan`, the factors multiplied left to right."""
        steps = [factor.plan(server_round, clients) for factor in self.factors]
        out = {}
        for pid, client in clients.items():
            lr, batch, named = base, client.batch, {}
            for factor, planned in zip(self.factors, steps, strict=True):
                step = planned[pid]
                lr *= step.rate
                named[factor.name] = step.rate
                if step.batch is not None:
                    batch = step.batch
            out[pid] = RatePlan(lr, batch, named)
        return out

    def __getitem__(self, name: str) -> RateFactor:
        """The factor called ``name``."""
        for factor in self.factors:
            if factor.name == name:
                return factor
        raise KeyError(name)

    def state_dict(self) -> dict[str, Any]:
        """Every factor's memory, by name (factors without memory left out)."""
        return {f.name: state for f in self.factors if (state := f.state_dict())}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (a factor missing from ``state`` keeps its own)."""
        for factor in self.factors:
            if factor.name in state:
                factor.load_state_dict(state[factor.name])


def chain(*factors: RateFactor) -> Chain:
    """Compose factors; their names must differ (each owns its column of the round log)."""
    names = [f.name for f in factors]
    if len(set(names)) != len(names):
        raise ValueError(f"chain: factor names must differ, got {names}")
    return Chain(tuple(factors))


@dataclass
class NoiseFactor:
    """Inverse to each client's noise: :func:`fedlr.rates.noise.inverse_noise_rule`, guarded.

    ``source`` is where the noise comes from: ``estimate`` (the clients' reported estimates,
    smoothed by :class:`~fedlr.rates.noise.NoiseEMA` from the last warm-up round on), ``oracle``
    (the injected truth; simulations only) or ``uniform`` (factor 1). Estimated rates stay
    uniform for ``warmup`` rounds. With ``guard = "gap"`` all factors are 1 unless some clients'
    noise stands apart (:func:`fedlr.rates.robust.noisy_group`,
    :func:`fedlr.rates.robust.guarded_factors`). A client whose last estimate was invalid
    (missing, NaN, negative) gets factor 1 until a valid one arrives.
    """

    source: str = "estimate"
    power: float = 1.0
    low: float = 0.25
    high: float = 4.0
    floor: float = 0.05
    warmup: int = 2
    ema_decay: float = 0.5
    guard: str = "gap"
    guard_ratio: float = 2.0
    name: str = "noise"
    ema: NoiseEMA = field(init=False)
    invalid: set[int] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        if self.source not in ("uniform", "estimate", "oracle"):
            raise ValueError(
                f"rate_source: expected uniform, estimate or oracle, got {self.source}"
            )
        self.rule = inverse_noise_rule(
            power=self.power, low=self.low, high=self.high, floor=self.floor
        )
        self.ema = NoiseEMA(decay=self.ema_decay)

    def noise(self, clients: Mapping[int, ClientStats]) -> dict[int, float]:
        """Noise per client that the rule may use now (oracle truth or smoothed estimates)."""
        if self.source == "oracle":
            return {pid: c.noise_true for pid, c in clients.items() if c.noise_true is not None}
        return {
            pid: v
            for pid, v in self.ema.values.items()
            if pid in clients and pid not in self.invalid  # of these clients only
        }

    def noisy_group(self, clients: Mapping[int, ClientStats]) -> set[int]:
        """Clients whose noise stands apart (:func:`fedlr.rates.robust.noisy_group`)."""
        noise = self.noise(clients)
        pids = sorted(noise)
        if not pids:
            return set()
        mask = robust.noisy_group(
            np.array([noise[p] for p in pids]), min_ratio=self.guard_ratio, floor=self.floor
        )
        return {p for p, flagged in zip(pids, mask, strict=True) if flagged}

    def factors(self, clients: Mapping[int, ClientStats]) -> dict[int, float]:
        """The rule over clients with usable noise, 1 elsewhere (warm-up aside)."""
        noise = self.noise(clients)
        pids = sorted(noise)
        out = dict.fromkeys(clients, 1.0)
        if pids:
            sizes = np.array([clients[p].size for p in pids])
            values = self.rule(np.array([noise[p] for p in pids]), sizes)
            if self.guard == "gap":
                noisy = self.noisy_group(clients)
                values = robust.guarded_factors(values, np.array([p in noisy for p in pids]))
            out.update(zip(pids, (float(v) for v in values), strict=True))
        return out

    def active(self, server_round: int) -> bool:
        """Whether the noise steers anything this round (not uniform, past warm-up)."""
        return self.source == "oracle" or (self.source == "estimate" and server_round > self.warmup)

    def plan(self, server_round: int, clients: Mapping[int, ClientStats]) -> dict[int, Step]:
        """The factor per client this round (1 when uniform or warming up)."""
        if self.source == "uniform" or (self.source == "estimate" and server_round <= self.warmup):
            return dict.fromkeys(clients, Step(1.0))
        return {pid: Step(value) for pid, value in self.factors(clients).items()}

    def check(self, reports: Mapping[int, object]) -> tuple[dict[int, float], list[int]]:
        """Split reported estimates into the valid ones and the clients whose one is not."""
        valid, invalid = {}, []
        for pid, value in reports.items():
            if is_valid_estimate(value):
                valid[pid] = float(value)  # type: ignore[arg-type]
                self.invalid.discard(pid)
            else:
                invalid.append(pid)
                self.invalid.add(pid)
        return valid, invalid

    def update(self, server_round: int, reports: Mapping[int, Any]) -> dict[int, float]:
        """Smooth valid estimates (from the last warm-up round on); return the smoothed ones."""
        if server_round < self.warmup:  # earlier models are too raw
            return {}
        return {pid: self.ema.update(pid, value) for pid, value in reports.items()}

    def state_dict(self) -> dict[str, Any]:
        """The smoothed estimates and who sent an invalid one last."""
        return {"ema": self.ema.to_dict(), "invalid_last": sorted(self.invalid)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.ema = NoiseEMA.from_dict(state["ema"])
        self.invalid = {int(p) for p in state["invalid_last"]}


@dataclass
class CouplingFactor(_Stateless):
    """Each client's batch-size coupling factor (``+coupled``).

    :func:`fedlr.rates.coupling.coupling_factors` of each client's own batch size, relative to
    ``reference`` (a batch size), bounded by ``[low, high]``, ramped from 1 over
    ``warmup`` rounds (:func:`fedlr.rates.coupling.goyal_warmup_lr`). ``optimal`` reads
    ``b_noise()`` (the measured noise scale) as ``B_noise``; until one is measured it falls back
    to the ``optimizer``'s rule.
    """

    rule: str
    optimizer: str
    reference: float
    low: float
    high: float
    warmup: int = 0
    b_noise: Callable[[], float | None] = lambda: None
    name: str = "coupling"

    def plan(self, server_round: int, clients: Mapping[int, ClientStats]) -> dict[int, Step]:
        """The coupling factor per client this round."""
        rule, b_noise = self.rule, None
        if rule == "optimal":
            b_noise = self.b_noise()
            if b_noise is None or not np.isfinite(b_noise) or b_noise < 0:
                rule, b_noise = coupling.rule_for_optimizer(self.optimizer), None
        pids = sorted(clients)
        values = coupling.coupling_factors(
            [clients[p].batch for p in pids],
            self.reference,
            rule,
            b_noise=b_noise,
            low=self.low,
            high=self.high,
        )
        out = {}
        for pid, value in zip(pids, values, strict=True):
            out[pid] = Step(
                coupling.goyal_warmup_lr(1.0, float(value), server_round - 1, self.warmup)
                if self.warmup
                else float(value)
            )
        return out


@dataclass
class ScheduleFactor(_Stateless):
    """A round-indexed multiplier per client, and the local batch it trains on.

    ``name`` is a schedule of :func:`fedlr.rates.schedules.round_multipliers`, read lazily
    (:class:`~fedlr.rates.schedules.RoundMultipliers`); ``params(starts)`` gives its parameters
    (``starts``: a client's task arrivals, for ``phases``). With ``milestones`` the step decay of
    :func:`fedlr.rates.coupling.decay_or_grow` is used instead (``grow_batch``: the batch grows
    first). Each client trains on its own batch times ``growth()`` (the noise-scale growth in
    batch mode), never more than its examples.
    """

    schedule: str
    num_rounds: int
    params: Callable[[tuple[int, ...]], dict[str, Any]]
    milestones: Sequence[int] = ()
    decay_factor: float = 0.1
    grow_batch: bool = False
    growth: Callable[[], float] = lambda: 1.0
    name: str = "schedule"
    _multipliers: dict[tuple[int, ...], schedules.RoundMultipliers] = field(
        init=False, default_factory=dict
    )

    def multipliers(self, starts: tuple[int, ...] = ()) -> schedules.RoundMultipliers:
        """The multiplier of every round for clients whose tasks arrive at ``starts``."""
        if self.schedule != "phases":
            starts = ()
        if starts not in self._multipliers:
            self._multipliers[starts] = schedules.RoundMultipliers(
                self.schedule, self.num_rounds, **self.params(starts)
            )
        return self._multipliers[starts]

    def plan(self, server_round: int, clients: Mapping[int, ClientStats]) -> dict[int, Step]:
        """``Step(multiplier, batch)`` per client this round."""
        out = {}
        grow = self.growth()
        last = self.num_rounds
        for pid, client in clients.items():
            most = max(1, client.num_examples)
            batch = min(most, max(1, round(client.batch * grow)))
            if not self.milestones:
                if self.schedule == "constant":
                    out[pid] = Step(1.0, batch)
                else:  # a round past the run (never sent) keeps the last multiplier
                    rate = self.multipliers(client.task_starts)[min(max(server_round, 1), last) - 1]
                    out[pid] = Step(rate, batch)
                continue
            rate, batch = coupling.decay_or_grow(
                server_round,
                self.milestones,
                self.decay_factor,
                base_lr=1.0,
                base_batch=batch,
                max_batch=most,
                mode="grow" if self.grow_batch else "decay",
            )
            out[pid] = Step(rate, batch)
        return out
