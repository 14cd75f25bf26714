"""fedlr.metrics.classification: hand-worked values, the undefined cases, and the errors.

Three classes, five examples (``MULTI``): rows of probabilities and labels

    r0 (0.7, 0.2, 0.1) label 0 -> predicted 0      r3 (0.1, 0.3, 0.6) label 2 -> predicted 2
    r1 (0.3, 0.5, 0.2) label 0 -> predicted 1      r4 (0.5, 0.1, 0.4) label 2 -> predicted 0
    r2 (0.2, 0.6, 0.2) label 1 -> predicted 1

* accuracy 3/5; balanced accuracy: recalls 1/2, 1/1, 1/2 -> 2/3.
* AUROC one-vs-rest: class 0 positives (0.7, 0.3) vs negatives (0.2, 0.1, 0.5): 3 + 2 of 6
  pairs ordered -> 5/6; class 1: 0.6 above all four -> 1; class 2: (0.6, 0.4) above (0.1, 0.2,
  0.2) -> 1; macro (5/6 + 1 + 1) / 3 = 17/18.
* F1 per class, 2TP / (2TP + FP + FN): class 0 TP 1, FP 1 (r4), FN 1 (r1) -> 1/2; class 1 TP 1,
  FP 1 (r1) -> 2/3; class 2 TP 1, FN 1 (r4) -> 2/3; macro 11/18.
* loss -(ln 0.7 + ln 0.3 + ln 0.6 + ln 0.6 + ln 0.4) / 5.
"""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fedlr.metrics.classification
from fedlr import config
from fedlr.metrics.classification import NAMES, higher_is_better, scores

MULTI_P = [
    [0.7, 0.2, 0.1],
    [0.3, 0.5, 0.2],
    [0.2, 0.6, 0.2],
    [0.1, 0.3, 0.6],
    [0.5, 0.1, 0.4],
]
MULTI_Y = [0, 0, 1, 2, 2]


def logp(rows) -> np.ndarray:
    return np.log(np.asarray(rows, dtype=np.float64))


def binary(p1) -> np.ndarray:
    p1 = np.asarray(p1, dtype=np.float64)
    return np.log(np.stack([1 - p1, p1], axis=1))


def test_doctests():
    assert doctest.testmod(fedlr.metrics.classification).failed == 0


def test_names_are_the_configs():
    assert NAMES == config.METRICS


def test_binary_by_hand():
    # p(class 1) 0.1, 0.6, 0.4, 0.8 for labels 0, 0, 1, 1 -> predicted 0, 1, 0, 1
    got = scores(binary([0.1, 0.6, 0.4, 0.8]), [0, 0, 1, 1], NAMES, 2)
    assert list(got) == list(NAMES)
    assert got["accuracy"] == 0.5
    assert got["balanced-accuracy"] == 0.5  # recalls 1/2 and 1/2
    assert got["auroc"] == 0.75  # (0.4 > 0.1), (0.8 > 0.1), (0.8 > 0.6); not (0.4 > 0.6)
    assert got["f1"] == 0.5  # TP 1 (0.8), FP 1 (0.6), FN 1 (0.4): 2 / (2 + 1 + 1)
    expected_loss = -(math.log(0.9) + math.log(0.4) + math.log(0.4) + math.log(0.8)) / 4
    assert got["loss"] == pytest.approx(expected_loss, rel=1e-12)


def test_multiclass_by_hand():
    got = scores(logp(MULTI_P), MULTI_Y, NAMES, 3)
    assert got["accuracy"] == pytest.approx(3 / 5)
    assert got["balanced-accuracy"] == pytest.approx(2 / 3)
    assert got["auroc"] == pytest.approx(17 / 18)
    assert got["f1"] == pytest.approx(11 / 18)
    expected_loss = -sum(math.log(v) for v in (0.7, 0.3, 0.6, 0.6, 0.4)) / 5
    assert got["loss"] == pytest.approx(expected_loss, rel=1e-12)


def test_multiclass_auroc_is_sklearns_ovr_macro_when_every_class_is_present():
    from sklearn.metrics import roc_auc_score

    expected = roc_auc_score(MULTI_Y, MULTI_P, multi_class="ovr", average="macro", labels=[0, 1, 2])
    assert scores(logp(MULTI_P), MULTI_Y, ["auroc"], 3)["auroc"] == pytest.approx(expected)


def test_a_class_absent_from_the_labels_is_left_out():
    # Class 2 absent; r2 is predicted 2 (a miss, not a class of its own).
    rows = [[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6]]
    got = scores(logp(rows), [0, 0, 1], ["balanced-accuracy", "auroc", "f1"], 3)
    assert got["balanced-accuracy"] == pytest.approx(0.25)  # recalls 1/2 and 0
    # class 0: (0.6, 0.2) above 0.1 -> 1; class 1: 0.3 vs (0.3 tie = 1/2, 0.5 no) -> 1/4
    assert got["auroc"] == pytest.approx((1 + 0.25) / 2)
    # class 0: TP 1, FN 1 -> 2/3; class 1: TP 0 -> 0; class 2 (FP only) not counted
    assert got["f1"] == pytest.approx(1 / 3)


def test_auroc_is_nan_with_one_class_only():
    assert math.isnan(scores(binary([0.2, 0.7]), [1, 1], ["auroc"], 2)["auroc"])
    assert math.isnan(scores(logp(MULTI_P[:2]), [0, 0], ["auroc"], 3)["auroc"])


def test_binary_f1_is_nan_without_positive_label_or_prediction_and_zero_with_a_false_one():
    assert math.isnan(scores(binary([0.2, 0.3]), [0, 0], ["f1"], 2)["f1"])
    assert scores(binary([0.2, 0.7]), [0, 0], ["f1"], 2)["f1"] == 0.0  # FP 1
    assert scores(binary([0.2, 0.3]), [1, 0], ["f1"], 2)["f1"] == 0.0  # FN 1


def test_one_class_only_keeps_the_defined_metrics():
    got = scores(binary([0.2, 0.7]), [0, 0], NAMES, 2)
    assert got["accuracy"] == 0.5 and got["balanced-accuracy"] == 0.5  # recall of class 0


def test_an_empty_split_is_nan_everywhere():
    got = scores(np.zeros((0, 3)), np.zeros(0, dtype=int), NAMES, 3)
    assert list(got) == list(NAMES)
    assert all(math.isnan(v) for v in got.values())


def test_names_keep_their_order():
    got = scores(binary([0.1, 0.9]), [0, 1], ["f1", "accuracy"], 2)
    assert list(got) == ["f1", "accuracy"]
    assert all(type(v) is float for v in got.values())


def test_higher_is_better():
    assert [higher_is_better(n) for n in NAMES] == [True, True, True, True, False]
    assert higher_is_better("sensitivity")  # a user's own metric counts as a score


@pytest.mark.parametrize(
    ("log_probs", "labels", "names", "num_classes", "match"),
    [
        (binary([0.1]), [0], ["precision"], 2, "metrics"),
        (binary([0.1]), [0], ["f1"], 1, "num_classes"),
        (binary([0.1]), [0], ["f1"], 3, "log_probs"),
        (binary([0.1, 0.2]), [0], ["f1"], 2, "labels"),
        (binary([0.1]), [2], ["f1"], 2, "labels"),
        (binary([0.1]), [0.0], ["f1"], 2, "labels"),
    ],
)
def test_bad_input_is_refused(log_probs, labels, names, num_classes, match):
    with pytest.raises(ValueError, match=match):
        scores(log_probs, np.asarray(labels), names, num_classes)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(min_value=2, max_value=5).flatmap(
        lambda c: st.tuples(
            st.just(c),
            st.lists(
                st.tuples(
                    st.integers(0, c - 1),
                    st.lists(st.floats(-5, 5), min_size=c, max_size=c),
                ),
                min_size=1,
                max_size=30,
            ),
        )
    )
)
def test_scores_are_in_range(case):
    num_classes, rows = case
    logits = np.asarray([r[1] for r in rows])
    lp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    got = scores(lp, np.asarray([r[0] for r in rows]), NAMES, num_classes)
    for name in ("accuracy", "balanced-accuracy", "auroc", "f1"):
        assert math.isnan(got[name]) or 0.0 <= got[name] <= 1.0
    assert got["loss"] >= 0.0
