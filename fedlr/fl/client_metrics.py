"""The metrics a client's reply adds to the record, checked as untrusted input.

Besides what fedlr reads itself (:data:`fedlr.fl.keys.EVALUATE_KEYS`: accuracy, loss, example
counts, per-task and per-node lists; :data:`fedlr.fl.keys.TRAIN_KEYS` in a train reply), a reply
may carry

* the run's ``metrics`` (:mod:`fedlr.metrics.classification`): ``balanced-accuracy``, ``auroc``
  and ``f1`` must be finite and in ``[0, 1]``, ``loss`` finite and ``>= 0``;
* any other numeric scalar a task returns (a user's task may report ``sensitivity``): kept as it
  is named when the name is at most :data:`MAX_NAME` characters of ``[A-Za-z0-9_.-]`` and the
  value is a finite number; at most :data:`MAX_EXTRA` such names per reply, the first in sorted
  order (so a client cannot choose which survive by the order it sends them in).

Everything else is dropped, and :func:`evaluate_metrics` says what and why, in one bounded line,
for the round's ``errors``: a bad reply never stops the run.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from fedlr.fl import keys
from fedlr.fl.nodes import as_float
from fedlr.metrics.classification import BOUNDED, NAMES

__all__ = ["MAX_EXTRA", "MAX_NAME", "evaluate_metrics"]

MAX_EXTRA = 32  # a user's own metrics kept per reply
MAX_NAME = 64  # characters of a metric name
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_SHOWN = 5  # dropped names spelled out in one error line; the rest are counted


def _number(value: object) -> float | None:
    """``value`` as a float when it is one real number (not a bool, list or string), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return as_float(value)  # an integer beyond float range is +-inf, then refused as not finite


def _shown(name: object) -> str:
    text = str(name)
    return repr(text if len(text) <= MAX_NAME else text[:MAX_NAME] + "...")


def evaluate_metrics(
    metrics: Mapping[str, Any], known_keys: frozenset[str] = keys.EVALUATE_KEYS
) -> tuple[dict[str, float], str | None]:
    """Split a reply's extra metrics into the kept ones and a reason for the rest.

    Parameters
    ----------
    metrics : Mapping
        The reply's MetricRecord.
    known_keys : frozenset of str
        What fedlr reads itself and so leaves out: :data:`fedlr.fl.keys.EVALUATE_KEYS` for an
        evaluate reply, :data:`fedlr.fl.keys.TRAIN_KEYS` for a train reply.

    Returns
    -------
    kept : dict of str to float
        The metrics to record for this client: the run's (``auroc``, ...) first, in
        :data:`~fedlr.metrics.classification.NAMES` order, then the task's own, sorted by name.
    dropped : str or None
        What was dropped and why (None when nothing was), e.g. ``"dropped metrics: 'auroc' (nan not
        finite)"``.

    Examples
    --------
    >>> evaluate_metrics({"accuracy": 0.5, "auroc": 0.75, "sensitivity": 0.5})
    ({'auroc': 0.75, 'sensitivity': 0.5}, None)
    >>> evaluate_metrics({"f1": 1.5, "my metric": 2.0})
    ({}, "dropped metrics: 'f1' (1.5 outside [0, 1]); 'my metric' (not a name of [A-Za-z0-9_.-])")
    """
    known: dict[str, float] = {}
    own: dict[str, float] = {}
    reasons: list[str] = []
    for name, value in metrics.items():
        if name in known_keys:
            continue
        number = _number(value)
        if name in NAMES:
            if number is None:
                reasons.append(f"{_shown(name)} (not a number)")
            elif not math.isfinite(number):
                reasons.append(f"{_shown(name)} ({number!r} not finite)")
            elif name in BOUNDED and not 0.0 <= number <= 1.0:
                reasons.append(f"{_shown(name)} ({number!r} outside [0, 1])")
            elif name == "loss" and number < 0.0:
                reasons.append(f"{_shown(name)} ({number!r} < 0)")
            else:
                known[name] = number
        elif not (isinstance(name, str) and len(name) <= MAX_NAME and _NAME.fullmatch(name)):
            reasons.append(f"{_shown(name)} (not a name of [A-Za-z0-9_.-])")
        elif number is None or not math.isfinite(number):
            reasons.append(f"{_shown(name)} (not a finite number)")
        else:
            own[name] = number
    names = sorted(own)
    if len(names) > MAX_EXTRA:
        reasons.append(f"{len(names) - MAX_EXTRA} names over the limit of {MAX_EXTRA}")
    kept = {name: known[name] for name in NAMES if name in known}
    kept.update((name, own[name]) for name in names[:MAX_EXTRA])
    if not reasons:
        return kept, None
    more = len(reasons) - _SHOWN
    shown = reasons[:_SHOWN] + ([f"{more} more"] if more > 0 else [])
    return kept, "dropped metrics: " + "; ".join(shown)
