"""What a site shares (never rows), the agreement pooled from every site, and the encoding.

:func:`site_statistics` is what a site may share about its *train split*: its label values, per
numeric column the count, sum and sum of squares of the present values, per categorical column
its categories, and how many values are missing. :func:`agree` pools every site's statistics
into one :class:`Agreement`: the classes (the union of the sites' labels, sorted), the categories
of each categorical column (the union, sorted), and the pooled mean and standard deviation of
each numeric column, ``mean = sum / count`` and ``std = sqrt(sum_sq / count - mean^2)``.
:func:`encode` turns a site's rows into arrays under the agreement.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fedlr.config.site_files import _sort_key, _value, log
from fedlr.data.site_tables import Site


@dataclass(frozen=True)
class SiteStatistics:
    """What one site shares about its train split: sizes, labels and moments, never rows."""

    num_train: int
    labels: list[Any]
    count: dict[str, int]
    total: dict[str, float]
    total_sq: dict[str, float]
    categories: dict[str, list[str]]
    missing: dict[str, int]


@dataclass(frozen=True)
class Agreement:
    """What every site uses alike: classes, categories and pooled statistics.

    ``mean`` and ``std`` hold the numeric columns' pooled moments (std 1.0 where a column is
    constant or never present; mean 0.0 where it is never present).
    """

    classes: list[Any]
    categories: dict[str, list[str]]
    mean: dict[str, float]
    std: dict[str, float]
    numeric: list[str] = field(default_factory=list)

    @property
    def num_features(self) -> int:
        """Input width after one-hot encoding."""
        return len(self.numeric) + sum(len(v) for v in self.categories.values())


def site_statistics(site: Site) -> SiteStatistics:
    """What ``site`` shares about its train split (see the module docstring)."""
    numeric = [c for c in site.features if c not in site.categorical]
    train = site.train
    present = train[numeric].notna()
    categories = {
        c: sorted({str(_value(v)) for v in train[c].dropna()}, key=str) for c in site.categorical
    }
    # a category seen only in a site's test rows is still agreed on: one-hot needs every value
    for c in site.categorical:
        categories[c] = sorted(
            set(categories[c]) | {str(_value(v)) for v in site.test[c].dropna()}, key=str
        )
    return SiteStatistics(
        num_train=len(train),
        labels=sorted(
            {_value(v) for v in pd.concat([train, site.test])[site.label]}, key=_sort_key
        ),
        count={c: int(present[c].sum()) for c in numeric},
        total={c: float(train[c].sum(skipna=True)) for c in numeric},
        total_sq={c: float((train[c] ** 2).sum(skipna=True)) for c in numeric},
        categories=categories,
        missing={c: int(train[c].isna().sum()) for c in site.features},
    )


def agree(statistics: Sequence[SiteStatistics], numeric: Sequence[str]) -> Agreement:
    """Pool the sites' statistics: union of classes and categories, pooled mean and std."""
    classes = sorted({v for s in statistics for v in s.labels}, key=_sort_key)
    categories: dict[str, list[str]] = {}
    for s in statistics:
        for column, values in s.categories.items():
            categories[column] = sorted(set(categories.get(column, [])) | set(values), key=str)
    mean, std = {}, {}
    for column in numeric:
        count = sum(s.count[column] for s in statistics)
        total = sum(s.total[column] for s in statistics)
        total_sq = sum(s.total_sq[column] for s in statistics)
        mean[column], std[column] = _moments(count, total, total_sq)
    return Agreement(
        classes=classes, categories=categories, mean=mean, std=std, numeric=list(numeric)
    )


def _moments(count: int, total: float, total_sq: float) -> tuple[float, float]:
    if count == 0:
        return 0.0, 1.0
    mean = total / count
    variance = max(total_sq / count - mean * mean, 0.0)
    std = math.sqrt(variance)
    return mean, std if std > 1e-12 else 1.0


def encode(
    site: Site, agreement: Agreement, own: SiteStatistics, standardize: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)``: float32 inputs, int64 class indices."""
    numeric = agreement.numeric
    centre, scale, fill = {}, {}, {}
    for column in numeric:
        pooled = agreement.mean[column], agreement.std[column]
        local = _moments(own.count[column], own.total[column], own.total_sq[column])
        has_own = own.count[column] > 0
        fill[column] = local[0] if standardize == "site" and has_own else pooled[0]
        if standardize == "federated":
            centre[column], scale[column] = pooled
        elif standardize == "site":
            centre[column], scale[column] = local if has_own else (fill[column], 1.0)
        else:
            centre[column], scale[column] = 0.0, 1.0
    index = {value: i for i, value in enumerate(agreement.classes)}

    def one(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        parts = []
        for column in numeric:
            values = rows[column].fillna(fill[column]).to_numpy(float)
            parts.append(((values - centre[column]) / scale[column])[:, None])
        for column, categories in agreement.categories.items():
            values = rows[column].map(lambda v: None if pd.isna(v) else str(_value(v)))
            parts.append(
                np.stack([(values == c).to_numpy(float) for c in categories], axis=1)
                if categories
                else np.zeros((len(rows), 0))
            )
        x = np.concatenate(parts, axis=1) if parts else np.zeros((len(rows), 0))
        y = np.array([index[_value(v)] for v in rows[site.label]], dtype=np.int64)
        return x.astype(np.float32), y

    x_train, y_train = one(site.train)
    x_test, y_test = one(site.test)
    return x_train, y_train, x_test, y_test


def log_missing(site: Site) -> dict[str, int]:
    """Log (and return) how many train values of each feature column ``site`` has imputed."""
    missing = {c: int(site.train[c].isna().sum()) for c in site.features}
    missing = {c: n for c, n in missing.items() if n}
    if missing:
        log.info(
            "fedlr: %s: imputed %d missing train values (%s)",
            site.name,
            sum(missing.values()),
            ", ".join(f"{c} {n}" for c, n in missing.items()),
        )
    return missing
