r"""Per-client classification metrics from predicted log-probabilities (scikit-learn).

A client evaluates the global model on its test split of :math:`N` examples and :math:`C`
classes: ``log_probs`` is the model's log-softmax output, shape ``(N, C)``, ``labels`` the true
classes ``0..C-1``, and the prediction is :math:`\hat y_i = \arg\max_c \log p_{ic}` (first
maximum on ties). :func:`scores` returns the metrics named in the run's ``metrics``:

- ``accuracy``: :math:`\frac{1}{N}\sum_i [\hat y_i = y_i]` (``sklearn.metrics.accuracy_score``).
- ``balanced-accuracy``: the mean over the classes present in ``labels`` of their recall,
  :math:`\frac{1}{|P|}\sum_{c \in P} \frac{|\{i: \hat y_i = y_i = c\}|}{|\{i: y_i = c\}|}`,
  :math:`P = \{y_i\}` (``sklearn.metrics.balanced_accuracy_score``; a predicted class absent from
  ``labels`` counts only as a miss).
- ``auroc``: area under the ROC curve. Binary (:math:`C = 2`): ``roc_auc_score(labels,
  p[:, 1])``, the probability of the positive class 1 as the score. Multiclass: one-vs-rest,
  macro over the classes present — for each class :math:`c \in P`, ``roc_auc_score(labels == c,
  p[:, c])``, then their unweighted mean. With every class present this is
  ``roc_auc_score(labels, p, multi_class="ovr", average="macro", labels=range(C))``; a class
  absent from the split has no ROC curve of its own and is left out (scikit-learn would fail).
  NaN when fewer than two classes are present (no negative or no positive example).
- ``f1``: binary: F1 of the positive class 1, :math:`2TP / (2TP + FP + FN)`; NaN when
  :math:`TP + FP + FN = 0` (no positive label and none predicted). Multiclass: the unweighted
  mean of the per-class F1 over the classes present in ``labels`` (``f1_score(average="macro",
  labels=P)``), always defined there.
- ``loss``: the mean cross-entropy :math:`-\frac{1}{N}\sum_i \log p_{i y_i}`, read from
  ``log_probs`` directly (``sklearn.metrics.log_loss`` would clip the probabilities).

Every metric is NaN on an empty split. Scores lie in :math:`[0, 1]`, higher is better; the loss
is :math:`\ge 0`, lower is better (:func:`higher_is_better`). Pure: numpy and scikit-learn only.

Examples
--------
Four examples, two classes: probabilities of class 1 are 0.1, 0.6, 0.4, 0.8 for labels 0, 0, 1,
1, so the predictions are 0, 1, 0, 1 (two right). AUROC: 3 of the 4 (positive, negative) pairs
are ordered right. F1 of class 1: TP = FP = FN = 1, 2 / 4. Loss: -(ln 0.9 + ln 0.4 + ln 0.4 +
ln 0.8) / 4.

>>> import numpy as np
>>> p1 = np.array([0.1, 0.6, 0.4, 0.8])
>>> log_probs = np.log(np.stack([1 - p1, p1], axis=1))
>>> result = scores(log_probs, [0, 0, 1, 1], NAMES, 2)
>>> {name: round(value, 4) for name, value in result.items()}  # doctest: +NORMALIZE_WHITESPACE
{'accuracy': 0.5, 'balanced-accuracy': 0.5, 'auroc': 0.75, 'f1': 0.5, 'loss': 0.5403}
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["BOUNDED", "NAMES", "higher_is_better", "scores"]

# The metrics a run's ``metrics`` may name (fedlr.config.METRICS lists the same, in this order).
NAMES = ("accuracy", "balanced-accuracy", "auroc", "f1", "loss")
BOUNDED = ("accuracy", "balanced-accuracy", "auroc", "f1")  # scores in [0, 1]; "loss" is >= 0


def higher_is_better(name: str) -> bool:
    """Whether a larger value of metric ``name`` is better: every score but ``loss``.

    A metric fedlr does not know (a user's task's own) counts as a score.

    >>> higher_is_better("auroc"), higher_is_better("loss")
    (True, False)
    """
    return name != "loss"


def scores(
    log_probs: ArrayLike, labels: ArrayLike, names: Iterable[str], num_classes: int
) -> dict[str, float]:
    r"""The metrics ``names`` of predictions ``log_probs`` against ``labels`` (module docstring).

    Parameters
    ----------
    log_probs : array_like, shape (N, C)
        Log-probabilities per example and class (a model's log-softmax output).
    labels : array_like, shape (N,)
        True classes, integers in ``0..C-1``.
    names : iterable of str
        Metrics to compute, each one of :data:`NAMES`.
    num_classes : int
        :math:`C \ge 2`, the model's output width; ``log_probs`` must have ``C`` columns.

    Returns
    -------
    dict of str to float
        One value per name, in the order given; NaN where the metric is undefined.

    Raises
    ------
    ValueError
        An unknown name, ``num_classes < 2``, or shapes or labels that do not fit.
    """
    names = list(names)
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        raise ValueError(f"metrics: expected names among {', '.join(NAMES)}, got {unknown[0]!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes: expected an integer >= 2, got {num_classes!r}")
    lp = np.asarray(log_probs, dtype=np.float64)
    y = np.asarray(labels)
    if lp.ndim != 2 or lp.shape[1] != num_classes:
        raise ValueError(f"log_probs: expected shape (N, {num_classes}), got {lp.shape}")
    if y.ndim != 1 or len(y) != len(lp):
        raise ValueError(f"labels: expected shape ({len(lp)},), got {y.shape}")
    if len(y) and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels: expected integers in 0..{num_classes - 1}")
    if not len(y):
        return dict.fromkeys(names, math.nan)
    y = y.astype(np.int64)
    computed = {name: _SCORERS[name](lp, y, num_classes) for name in dict.fromkeys(names)}
    return {name: float(computed[name]) for name in names}


def _accuracy(lp: np.ndarray, y: np.ndarray, num_classes: int) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(y, lp.argmax(axis=1)))


def _balanced_accuracy(lp: np.ndarray, y: np.ndarray, num_classes: int) -> float:
    from sklearn.metrics import balanced_accuracy_score

    with warnings.catch_warnings():  # "y_pred contains classes not in y_true": a miss, by design
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(y, lp.argmax(axis=1)))


def _auroc(lp: np.ndarray, y: np.ndarray, num_classes: int) -> float:
    from sklearn.metrics import roc_auc_score

    present = np.unique(y)
    if len(present) < 2:
        return math.nan
    probs = np.exp(lp)
    if num_classes == 2:
        return float(roc_auc_score(y, probs[:, 1]))
    return float(np.mean([roc_auc_score(y == c, probs[:, c]) for c in present]))


def _f1(lp: np.ndarray, y: np.ndarray, num_classes: int) -> float:
    from sklearn.metrics import f1_score

    predicted = lp.argmax(axis=1)
    if num_classes == 2:
        return float(f1_score(y, predicted, pos_label=1, average="binary", zero_division=np.nan))
    present = np.unique(y).tolist()
    return float(f1_score(y, predicted, labels=present, average="macro", zero_division=np.nan))


def _loss(lp: np.ndarray, y: np.ndarray, num_classes: int) -> float:
    return float(-np.mean(lp[np.arange(len(y)), y]))


_SCORERS = {
    "accuracy": _accuracy,
    "balanced-accuracy": _balanced_accuracy,
    "auroc": _auroc,
    "f1": _f1,
    "loss": _loss,
}
