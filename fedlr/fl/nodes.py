"""Who the server talks to: what it learns of each node, and the values nodes report.

:func:`query_nodes` is fedlr's query round (its own ClientApp answers it: partition id, size,
batch, a site's shared statistics, and in simulations the truth). :class:`ClientInfo` is one
node's answer. The parsers below read one reported value as untrusted input: a value that is not
what it should be gives a neutral result and a log line, never an exception.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedlr.fl import keys

log = logging.getLogger("fedlr")

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1  # what a numpy integer array holds


@dataclass(frozen=True)
class ClientInfo:
    """What the server learned about one node in the query round."""

    node_id: int
    partition_id: int
    num_examples: int
    noise_true: float | None  # None: no truth (a real site; users' files with nothing injected)
    role: str | None
    batch_size: int = 0  # the client's own local batch size (0: graph tasks, full-batch)
    site_statistics: str = ""  # users' files: the site's shared statistics (JSON), else empty


def as_float(value: int | float | np.number) -> float:
    """A number as float; an integer beyond float range as +-inf, as float arithmetic gives.

    ``float(10**400)`` raises OverflowError; a reported count or metric that large is then
    refused by the same finiteness checks as an Inf, never raised out of the strategy.
    """
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def shown(value: object, limit: int = 64) -> str:
    """``repr(value)`` for a log line, at most ``limit`` characters, whatever a client sent.

    ``repr`` of an integer above 4300 digits raises ValueError (Python's int-to-str limit).
    """
    try:
        text = repr(value)
    except ValueError:
        text = f"<{type(value).__name__} too long to show>"
    return text if len(text) <= limit else text[:limit] + "..."


def scalar(value: object) -> float:
    """A record value as float (NaN when it is not a single number)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        return float("nan")
    return as_float(value)


def int_list(value: object) -> list[int] | None:
    """A reported list of integers (each within int64, as numpy holds them); else None."""
    if isinstance(value, list) and all(
        isinstance(v, int) and _INT64_MIN <= v <= _INT64_MAX for v in value
    ):
        return [int(v) for v in value]
    return None


def float_list(value: object) -> list[float] | None:
    """A reported list of numbers as floats (:func:`as_float`); None when it is anything else."""
    if isinstance(value, list) and all(isinstance(v, int | float) for v in value):
        return [as_float(v) for v in value]
    return None


def _batch_size(value: object) -> int:
    """A reported batch size; 0 (the run's ``batch-size``) when not an integer >= 1."""
    number = scalar(value)
    if not (np.isfinite(number) and number >= 1 and float(number).is_integer()):
        if value is not None:
            log.warning(
                "fedlr: reported batch size %s ignored; the run's batch-size is used", shown(value)
            )
        return 0
    return int(number)


def _noise_true(value: object, node_id: int) -> float | None:
    """A query reply's true noise rate: None when absent (no truth) or not a rate in [0, 1]."""
    if value is None:
        return None
    rate = scalar(value)
    if not 0.0 <= rate <= 1.0:  # NaN too
        log.warning(
            "fedlr: node %s: true noise %s ignored (not a rate in [0, 1])", node_id, shown(value)
        )
        return None
    return rate


def _role(value: object, node_id: int) -> str | None:
    """A query reply's role: None when absent (no truth) or not a short string."""
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 64:
        log.warning("fedlr: node %s: role %s ignored (not a short string)", node_id, shown(value))
        return None
    return value


def query_nodes(
    grid: Grid, node_ids: Iterable[int], cfg: Mapping[str, Any], timeout: float
) -> tuple[list[ClientInfo], list[tuple[int, str]]]:
    """Ask nodes who they are (partition id, size, role); return answers and failures.

    Failures are ``(node_id, reason)`` pairs: a node whose ClientApp raised, or whose reply
    lacks the keys. The truth (``noise-true``, the ``info`` record's ``role``) is optional: a
    real site sends none, and its :class:`ClientInfo` holds None for both.
    """
    content = RecordDict({keys.CONFIG: ConfigRecord(dict(cfg))})
    messages = [Message(content, dst_node_id=n, message_type=MessageType.QUERY) for n in node_ids]
    clients: list[ClientInfo] = []
    failed: list[tuple[int, str]] = []
    for reply in grid.send_and_receive(messages, timeout=timeout):
        node_id = reply.metadata.src_node_id
        if reply.has_error():
            failed.append((node_id, str(reply.error.reason)))
            continue
        try:
            metrics = reply.content.metric_records[keys.METRICS]
            info = reply.content.config_records.get("info")
            site = reply.content.config_records.get(keys.SITE)
            clients.append(
                ClientInfo(
                    node_id=node_id,
                    partition_id=int(scalar(metrics[keys.PARTITION_ID])),
                    num_examples=int(scalar(metrics[keys.NUM_EXAMPLES])),
                    # ground truth is optional metadata: simulations send it, real sites do not
                    noise_true=_noise_true(metrics.get("noise-true"), node_id),
                    role=_role(info.get("role") if info is not None else None, node_id),
                    batch_size=_batch_size(metrics.get(keys.BATCH_SIZE)),
                    site_statistics=str(site[keys.SITE_STATISTICS]) if site is not None else "",
                )
            )
        except (KeyError, ValueError, TypeError, OverflowError) as error:  # int(nan), int(inf)
            failed.append((node_id, f"malformed query reply ({error!r})"))
    return clients, failed
