"""How checked train replies become the round's model, beyond Flower's weighted mean.

Each function works on the arrays of replies that :class:`fedlr.fl.client_rates.PerClientRates`
already checked, keyed by partition id, and is testable without an engine:

* :func:`compensate`: divide each update by ``factor^c`` (FedNova's share at c = 1);
* :func:`clip_updates`: clip each update's norm to a multiple of the round's median norm;
* :func:`robust_aggregate`: Flower's median, trimmed mean, Krum or Multi-Krum;
* :func:`own_rows`: node-embedding rows, each owned by one client, summed as changes;
* :func:`mean_metrics`: the round's metrics over clients.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict

from fedlr.fl import checks, keys
from fedlr.fl.nodes import scalar
from fedlr.rates import robust

OWN_MEANS = (keys.TRAIN_LOSS, keys.ACCURACY, keys.EVAL_LOSS)  # each client counts once


def mean_metrics(records: list[RecordDict], weighted_by_key: str) -> MetricRecord:
    """The round's metrics over clients: fedlr's loss and accuracy, and every other metric.

    Loss and accuracy are unweighted means (each client once, as the fairness view reads them);
    any other scalar (a user's own, already checked) is weighted by ``num-examples``, as Flower's
    ``aggregate_metricrecords`` does.
    """
    del weighted_by_key
    out: dict[str, int | float | list[int] | list[float]] = {}
    metrics = [r.metric_records[keys.METRICS] for r in records]
    for key in OWN_MEANS:
        values = [scalar(m[key]) for m in metrics if key in m]
        if values:
            out[key] = float(np.mean(values))
    skip = {*OWN_MEANS, *keys.TRAIN_KEYS, *keys.EVALUATE_KEYS}
    weights = np.array([scalar(m.get(keys.NUM_EXAMPLES)) for m in metrics])
    if metrics and np.all(np.isfinite(weights)) and weights.sum() > 0:
        for key in sorted(set.intersection(*(set(m) for m in metrics)) - skip):
            column = np.array([scalar(m[key]) for m in metrics])
            if np.all(np.isfinite(column)):
                out[key] = float(np.dot(weights, column) / weights.sum())
    return MetricRecord(out)


def cap_message(capped: Mapping[int, int], cap: int) -> str:
    """One log line naming the clients whose example counts were capped."""
    listed = ", ".join(f"partition {pid} ({count})" for pid, count in sorted(capped.items()))
    return f"fedlr: example counts above {cap} count as {cap} in aggregation: {listed}"


def compensate(
    sent: ArrayRecord,
    records: Mapping[int, ArrayRecord],
    factors: Mapping[int, float],
    exponent: float,
    skip: Sequence[str] = (),
) -> None:
    """Divide each client's update by its rate factor to the ``exponent``, in place.

    ``returned = sent + (returned - sent) / factor**c``
    (:func:`fedlr.rates.robust.normalized_update`); keys in ``skip`` (rows owned by one client)
    are left alone.
    """
    for pid, record in records.items():
        factor = factors.get(pid, 1.0) ** exponent
        if factor != 1.0:
            for key in list(record.keys()):
                if key in sent and key not in skip:
                    update = robust.normalized_update(
                        sent[key].numpy(), record[key].numpy(), factor
                    )
                    record[key] = Array(update)


def clip_updates(
    sent: ArrayRecord, records: Mapping[int, ArrayRecord], ratio: float, skip: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Clip each update (returned - sent) to ``ratio`` x the round's median norm, in place.

    Returns one ``capped`` entry per clipped client (:func:`fedlr.fl.checks.clip_norms`).
    """
    received = {k: sent[k].numpy() for k in sent if k not in skip}
    norms = {}
    for pid, record in records.items():
        squares = sum(float(np.sum((record[k].numpy() - v) ** 2)) for k, v in received.items())
        norms[pid] = math.sqrt(squares)
    scales = checks.clip_norms(norms, ratio)
    capped = []
    for pid, record in records.items():
        if pid not in scales:
            continue
        for key, value in received.items():
            update = (record[key].numpy() - value) * scales[pid]
            record[key] = Array(np.asarray(value + update, dtype=value.dtype))
        capped.append(
            {
                "partition_id": pid,
                "what": "update-norm",
                "reported": norms[pid],
                "used": norms[pid] * scales[pid],
            }
        )
    return capped


def robust_aggregate(
    contents: list[RecordDict],
    how: str,
    weighted_by_key: str,
    *,
    malicious: int = 1,
    trim_fraction: float = 0.2,
    arrays_key: str = keys.ARRAYS,
) -> tuple[ArrayRecord, list[RecordDict]]:
    """Flower's median, trimmed mean, Krum or Multi-Krum over checked replies.

    Median and trimmed mean are per coordinate and unweighted (as Flower's FedMedian and
    FedTrimmedAvg) over each reply's ArrayRecord ``arrays_key`` (the strategy's
    ``arrayrecord_key``); Krum and Multi-Krum select replies by Flower's ``select_multikrum``
    and average the selected ones by ``weighted_by_key``, so the rates' weights still apply.
    Returns the aggregate and the replies it is made of.
    """
    from flwr.serverapp.strategy.fedtrimmedavg import trim_mean
    from flwr.serverapp.strategy.multikrum import select_multikrum
    from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

    if how in ("krum", "multi-krum"):
        keep = 1 if how == "krum" else max(1, len(contents) - malicious)
        selected = select_multikrum(contents, malicious, keep)
        return aggregate_arrayrecords(selected, weighted_by_key), selected
    arrays = ArrayRecord()
    first = contents[0].array_records[arrays_key]
    for key in first:
        stack = np.stack([c.array_records[arrays_key][key].numpy() for c in contents])
        if how == "median":
            value = np.median(stack, axis=0)
        else:
            value = trim_mean(stack, trim_fraction)
        arrays[key] = Array(np.asarray(value, dtype=stack.dtype))
    return arrays, contents


def own_rows(
    arrays: ArrayRecord, sent: ArrayRecord, tables: Mapping[str, list[np.ndarray]]
) -> None:
    """Set each node-owned table to the received one plus every client's change, in place.

    Each client changes only its own nodes' rows: an average would shrink each row's step by its
    owner's weight.
    """
    for key, returned in tables.items():
        received = sent[key].numpy()
        total = received + sum(table - received for table in returned)
        arrays[key] = Array(np.asarray(total, dtype=received.dtype))


def integer_dtypes(arrays: ArrayRecord, sent: ArrayRecord) -> None:
    """Round integer arrays (BatchNorm's counters) back to the dtype sent, in place.

    A weighted mean of integer arrays is a float array; sent back as such, every client's reply
    (its own integer array) would differ in dtype from what it received and be refused.
    """
    for key in arrays:
        if key in sent and (dtype := sent[key].numpy().dtype).kind in "iub":
            arrays[key] = Array(np.asarray(np.rint(arrays[key].numpy()), dtype=dtype))
