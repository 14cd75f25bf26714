"""Batch sizes, rate rule, step schedule, loss curve and noise scale of a tabular run.

From ``results.json`` (``batches``) or, for a strategy cut off, from the rounds' ``batch_size``,
``steps_total``, ``loss_mean`` and ``noise_scale``, with its coupling rule and step schedule from
its name and ``config.toml`` (``fedavg+coupled``: ``coupling-rule``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedlr.config import split_list
from fedlr.rates.coupling import rule_for_optimizer
from fedlr.report.values import last_value, modifiers_of, num, settings_from_name


def _coupling_rule(config: dict[str, Any], optimizer: Any) -> str | None:
    """The rule a ``+coupled`` strategy used, resolved as the strategy does (auto: by optimizer)."""
    rule = config.get("coupling-rule")
    if rule == "auto":
        try:
            return rule_for_optimizer(str(optimizer))
        except ValueError:
            return "auto"
    return None if rule is None else str(rule)


def _decay_rounds(config: dict[str, Any]) -> list[int]:
    """``lr-decay-rounds`` of ``config.toml`` as round numbers (empty when unset or unreadable)."""
    try:
        return [int(item) for item in split_list(str(config.get("lr-decay-rounds", "")))]
    except ValueError:
        return []


def batches_from_results(
    results: dict[str, Any], config: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """The batch data of each finished strategy that has some."""
    batches = {}
    for strategy, entry in results["strategies"].items():
        raw = entry.get("batches")
        if not isinstance(raw, dict):
            continue
        own, rates = {}, {}
        for client in entry.get("clients") or []:
            partition_id = client.get("partition_id")
            batch, rate = num(client.get("own_batch_size")), num(client.get("lr"))
            if batch is None:  # written before own batches were: the last round's batch
                batch = num(client.get("batch_size"))
            if batch is not None:
                own[partition_id] = batch
            if rate is not None:
                rates[partition_id] = rate
        # Rounds with no step count add none, as the recorder's steps_total does.
        steps = [num(s) or 0.0 for s in raw.get("steps_per_round") or []]
        losses = [num(v) for v in raw.get("loss_per_round") or []]
        cumulative = np.cumsum(steps).tolist()
        smoothed, per_round = list(raw.get("b_simple") or []), list(raw.get("b_simple_round") or [])
        count = max(len(smoothed), len(per_round))
        smoothed, per_round = smoothed + [None] * count, per_round + [None] * count
        batches[strategy] = {
            "own": own,
            "rates": rates,
            "coupled": bool(raw.get("coupled")),
            "rule": raw.get("coupling_rule"),
            "grow_batch": bool(raw.get("grow_batch")),
            "decay_rounds": [int(r) for r in raw.get("lr_decay_rounds") or []],
            "decay_factor": num(config.get("lr-decay-factor")),
            # (cumulative steps, mean test loss) and (round, smoothed, per-round B_simple)
            "curve": [(t, v) for t, v in zip(cumulative, losses, strict=False) if v is not None],
            "noise": [(i + 1, num(smoothed[i]), num(per_round[i])) for i in range(count)],
            "steps_total": num(raw.get("steps_total")),
            "final_loss": num(raw.get("final_loss")),
        }
    return batches


def batches_from_rounds(
    rounds: list[dict[str, Any]], config: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """The same data from rounds.jsonl, for each strategy with tabular lines."""
    by_strategy: dict[str, dict[float, dict[str, Any]]] = {}
    for record in rounds:
        round_number = num(record.get("round"))
        if round_number is None or "steps_total" not in record:  # tabular lines only
            continue
        by_strategy.setdefault(record["strategy"], {})[round_number] = record
    batches = {}
    for strategy, by_round in by_strategy.items():
        records = [record for _, record in sorted(by_round.items())]
        own: dict[Any, float] = {}
        rates: dict[Any, float] = {}
        for record in records:
            for client in record.get("clients") or []:
                partition_id = client.get("partition_id")
                batch, rate = num(client.get("batch_size")), num(client.get("lr"))
                # Batches only grow during a run: the smallest one seen is the client's own.
                if batch is not None:
                    own[partition_id] = min(batch, own.get(partition_id, batch))
                if rate is not None:  # a client's latest rate, as results.json keeps it
                    rates[partition_id] = rate
        noise = []
        for record in records:
            scale = record.get("noise_scale")
            if isinstance(scale, dict):
                noise.append(
                    (
                        record["round"],
                        num(scale.get("b_simple")),
                        num(scale.get("b_simple_round")),
                    )
                )
        curve = [(num(r.get("steps_total")), num(r.get("loss_mean"))) for r in records]
        curve = [(t, v) for t, v in curve if t is not None and v is not None]
        optimizer, _ = settings_from_name(strategy, config)
        coupled, grow_batch = modifiers_of(strategy, config)
        batches[strategy] = {
            "own": own,
            "rates": rates,
            "coupled": coupled,
            "rule": _coupling_rule(config, optimizer) if coupled else None,
            "grow_batch": grow_batch,
            "decay_rounds": _decay_rounds(config),
            "decay_factor": num(config.get("lr-decay-factor")),
            "curve": curve,
            "noise": noise,
            "steps_total": last_value(r.get("steps_total") for r in records),
            "final_loss": last_value(r.get("loss_mean") for r in records),
        }
    return batches


def shows_batches(batches: dict[str, dict[str, Any]]) -> bool:
    """Whether there is batch data to show: several batch sizes, a batch rule or a noise scale."""
    return any(
        len(set(data["own"].values())) > 1
        or data["coupled"]
        or data["grow_batch"]
        or data["decay_rounds"]
        or any(v is not None for point in data["noise"] for v in point[1:])
        for data in batches.values()
    )
