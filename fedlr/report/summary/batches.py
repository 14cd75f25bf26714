"""Batch sizes, rate rule, step schedule, loss curve and noise scale of a tabular run.

From a strategy's ``results.json`` entry (``batches``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fedlr.report.values import num


def batches_from_results(
    entries: Mapping[str, dict[str, Any]], config: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """The batch data of each strategy whose results.json entry has some."""
    batches = {}
    for strategy, entry in entries.items():
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
