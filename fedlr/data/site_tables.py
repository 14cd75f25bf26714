"""A site's table: its files found and read (:mod:`fedlr.config.site_files`), checked and split.

:func:`site_frames` gives every site's rows (a file per site, or one file and a ``site-column``);
:func:`split_site` checks a site's label and feature columns, drops rows without a label and
splits the rest into train and test rows (stratified, seeded by ``test-fraction`` and ``seed``),
as a :class:`Site`. Every problem with a file is a :class:`~fedlr.config.ConfigError` naming the
file and column and what is allowed.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from fedlr.config import ConfigError, split_list
from fedlr.config.site_files import (  # found and read by the config, which counts the sites
    _value,
)

log = logging.getLogger("fedlr")

# Stream tag of the split, as fedlr.data.federated's: every site's split is seeded by
# SeedSequence([seed, partition_id, 2]) (scikit-learn's train_test_split takes its first word).
TAG_SPLIT = 2


@dataclass(frozen=True)
class Site:
    """One site's checked rows, split into train and test.

    Attributes
    ----------
    name : str
        The file's name, or ``file:value`` for one value of ``site-column``.
    train, test : pandas.DataFrame
        The feature columns and the label column of the train and test rows.
    features : list of str
        Feature columns in input order.
    categorical : list of str
        The categorical ones among them.
    label : str
        The label column.
    dropped : int
        Rows dropped for a missing label.
    """

    name: str
    train: pd.DataFrame
    test: pd.DataFrame
    features: list[str]
    categorical: list[str]
    label: str
    dropped: int = 0


MAX_VALUE = 1e12  # largest feature value in size (a site's own file is held to it too)


def _columns(cfg: Mapping[str, Any], name: str, frame: pd.DataFrame) -> tuple[str, list[str]]:
    label = str(cfg["label-column"]).strip()
    if label not in frame.columns:
        raise ConfigError(
            f"label-column: {name} has no column {label!r}; columns: {', '.join(frame.columns)}"
        )
    wanted = split_list(cfg["feature-columns"])
    features = wanted or [c for c in frame.columns if c != label]
    missing = [c for c in features if c not in frame.columns]
    if missing:
        raise ConfigError(
            f"feature-columns: {name} has no column {missing[0]!r}; columns: "
            f"{', '.join(frame.columns)}"
        )
    if label in features:
        raise ConfigError(f"feature-columns: {label!r} is the label column; expected features")
    if not features:
        raise ConfigError(f"feature-columns: {name} has no column besides the label {label!r}")
    categorical = split_list(cfg["categorical-columns"])
    unknown = [c for c in categorical if c not in features]
    if unknown:
        raise ConfigError(
            f"categorical-columns: {unknown[0]!r} is not a feature column; expected some of "
            f"{', '.join(features)}"
        )
    for column in features:
        if column in categorical:
            continue
        values = frame[column]
        numbers = pd.to_numeric(values, errors="coerce")
        bad = values[numbers.isna() & values.notna()]
        if len(bad):
            raise ConfigError(
                f"feature-columns: column {column!r} of {name} is not numeric (e.g. "
                f"{bad.iloc[0]!r}); list it in categorical-columns"
            )
        huge = values[numbers.abs() > MAX_VALUE]
        if len(huge):
            raise ConfigError(
                f"feature-columns: column {column!r} of {name} holds {huge.iloc[0]!r}; expected "
                f"finite numbers of at most {MAX_VALUE:g} in size (leave a missing value empty)"
            )
    labels = pd.to_numeric(frame[label].dropna(), errors="coerce")
    if labels.notna().all() and len(labels) and not (labels == labels.round()).all():
        example = frame[label].dropna()[labels != labels.round()].iloc[0]
        raise ConfigError(
            f"label-column: {label!r} of {name} holds {example!r}; expected class labels "
            "(integers or names), not continuous numbers"
        )
    return label, features


def split_site(
    name: str,
    frame: pd.DataFrame,
    cfg: Mapping[str, Any],
    partition_id: int,
) -> Site:
    """Check ``frame``'s columns, drop unlabelled rows, and split it (stratified, seeded).

    The test split has ``ceil(test-fraction * n)`` rows (at least one, leaving two to train);
    it is stratified by label when every class has two rows or more, else a plain seeded split.
    """
    label, features = _columns(cfg, name, frame)
    categorical = [c for c in split_list(cfg["categorical-columns"]) if c in features]
    labelled = frame[frame[label].notna()]
    dropped = len(frame) - len(labelled)
    if dropped:
        log.warning("fedlr: %s: %d rows without a label (%s) dropped", name, dropped, label)
    numeric = [c for c in features if c not in categorical]
    rows = labelled[[*features, label]].copy()
    rows[numeric] = rows[numeric].apply(pd.to_numeric, errors="coerce").astype(float)
    rows[label] = rows[label].map(_value)
    n = len(rows)
    n_test = math.ceil(round(float(cfg["test-fraction"]) * n, 9)) if n else 0
    n_test = max(n_test, 1)
    if n - n_test < 2:
        raise ConfigError(
            f"data-files: site {name} has {n} labelled rows; expected at least {n_test + 2} "
            f"({n_test} to test at test-fraction {cfg['test-fraction']}, 2 to train)"
        )
    y = rows[label].map(str).to_numpy()
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        warnings.warn(
            f"data-files: site {name} has one class only ({label} = {rows[label].iloc[0]!r}); "
            "kept, but it cannot learn to tell classes apart",
            stacklevel=2,
        )
    seed = int(
        np.random.SeedSequence([int(cfg["seed"]), partition_id, TAG_SPLIT]).generate_state(1)[0]
    )
    stratify = y if counts.min() >= 2 and min(n_test, n - n_test) >= len(classes) else None
    train, test = train_test_split(
        np.arange(n), test_size=n_test, random_state=seed, stratify=stratify
    )
    return Site(
        name=name,
        train=rows.iloc[np.sort(train)].reset_index(drop=True),
        test=rows.iloc[np.sort(test)].reset_index(drop=True),
        features=features,
        categorical=categorical,
        label=label,
        dropped=dropped,
    )
