"""Users' own tables: one CSV or Parquet file per site, or one file with a site column.

A site's table becomes a client's train/test arrays in three steps, the same for a simulation
that reads every site here and, later, for a SuperNode that reads only its own file:

1. :func:`read_site` — the site's rows, its label column and feature columns checked, rows
   without a label dropped, and a stratified, seeded train/test split (``test-fraction``).
2. :func:`site_statistics` — what the site may share about its *train split*, never rows: its
   label values, per numeric column the count, sum and sum of squares of the present values, per
   categorical column its categories, and how many values are missing.
   :func:`agree` pools every site's statistics into one :class:`Agreement`: the classes (the
   union of the sites' labels, sorted), the categories of each categorical column (the union,
   sorted), and the pooled mean and standard deviation of each numeric column,
   ``mean = sum / count`` and ``std = sqrt(sum_sq / count - mean^2)``.
3. :func:`encode` — numeric columns: missing values imputed with the mean (the pooled mean; with
   ``standardize = "site"``, the site's own train mean where it has one), then z-scored with the
   pooled statistics (``federated``), the site's own (``site``), or left as they are (``none``);
   categorical columns: one-hot over the agreed categories (a missing value is all zeros).

Every problem with a file is a :class:`~fedlr.config.ConfigError` naming the file and column and
what is allowed; ``fedlr simulate`` prints it as one line (exit 2) before the engine starts.

The steps live in :mod:`fedlr.data.site_tables` (reading and splitting) and
:mod:`fedlr.data.site_stats` (statistics, agreement, encoding), re-exported here; this module
holds what the ClientApp and ServerApp exchange in the query round: the client's own site
(:func:`own_site`), the statistics and the agreement as checked JSON, and the server's side,
:func:`agree_from_replies`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedlr.config import ConfigError
from fedlr.data.site_stats import (
    Agreement,
    SiteStatistics,
    agree,
    encode,
    log_missing,
    site_statistics,
)
from fedlr.config.site_files import (
    DATA_ENV,
    DEFAULT_DATA_DIR,
    SUFFIXES,
    _sort_key,
    _value,
    count_sites,
    data_dir,
    expand,
    find_files,
    read_table,
    site_frames,
)
from fedlr.data.site_tables import (
    MAX_VALUE,
    TAG_SPLIT,
    Site,
    split_site,
)

__all__ = [
    "DATA_ENV",
    "DEFAULT_DATA_DIR",
    "MAX_CATEGORIES",
    "MAX_CLASSES",
    "MAX_COLUMNS",
    "MAX_REPLY_CHARS",
    "MAX_VALUE",
    "SUFFIXES",
    "TAG_SPLIT",
    "Agreement",
    "Site",
    "SiteStatistics",
    "agree",
    "agree_from_replies",
    "agreement_from_json",
    "agreement_to_json",
    "count_sites",
    "data_dir",
    "encode",
    "encode_own_site",
    "expand",
    "find_files",
    "log_missing",
    "own_site",
    "read_table",
    "site_frames",
    "site_statistics",
    "split_site",
    "statistics_from_json",
    "statistics_to_json",
]

# -- the sites' agreement over the wire (query round) -------------------------------------------
# Bounds on what one site may claim: a hostile reply cannot make the model or the messages huge.
MAX_CLASSES = 1000
MAX_CATEGORIES = 1000
MAX_COLUMNS = 10_000
MAX_REPLY_CHARS = 10_000_000


def own_site(cfg: Mapping[str, Any], partition_id: int, data_path: str | None = None) -> Site:
    """The client's own site only: the SuperNode's ``data-path``, else site ``partition_id``.

    A SuperNode started with ``--node-config "data-path='/srv/site.csv'"`` reads that file and
    nothing else. Without it (a simulation), the client is site ``partition_id`` of
    ``data-files``.
    """
    if data_path:
        path = Path(expand(str(data_path)))
        if not path.is_file():
            raise ConfigError(f"data-path: file not found: {data_path}")
        if path.suffix.lower() not in SUFFIXES:
            raise ConfigError(f"data-path: {path}: expected a .csv or .parquet file")
        return split_site(path.name, read_table(path), cfg, partition_id)
    frames = site_frames(cfg)
    if not 0 <= partition_id < len(frames):
        raise ConfigError(
            f"partition-id: expected 0..{len(frames) - 1} (the sites of data-files), "
            f"got {partition_id}"
        )
    name, frame = frames[partition_id]
    return split_site(name, frame, cfg, partition_id)


def statistics_to_json(site: Site, statistics: SiteStatistics) -> str:
    """What a site sends in the query round: its columns and :class:`SiteStatistics`, as JSON."""
    return json.dumps(
        {
            "name": site.name,
            "features": site.features,
            "categorical": site.categorical,
            "num_train": statistics.num_train,
            "labels": statistics.labels,
            "count": statistics.count,
            "total": statistics.total,
            "total_sq": statistics.total_sq,
            "categories": statistics.categories,
            "missing": statistics.missing,
        }
    )


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise ValueError(f"site statistics: {what}")


def statistics_from_json(text: str) -> tuple[list[str], list[str], SiteStatistics]:
    """``(features, categorical, statistics)`` of a site's reply, checked as untrusted input.

    Raises
    ------
    ValueError
        Not the expected JSON, counts out of range, non-finite moments, or more classes,
        categories or columns than the bounds allow.
    """
    _check(isinstance(text, str) and len(text) <= MAX_REPLY_CHARS, "expected a JSON string")

    def refuse(constant: str) -> Any:
        raise ValueError(f"site statistics: {constant} is not a number")

    try:
        data = json.loads(text, parse_constant=refuse)
    except ValueError as error:  # JSONDecodeError is one
        raise ValueError(f"site statistics: not JSON ({str(error)[:200]})") from None
    except (TypeError, RecursionError) as error:
        raise ValueError(f"site statistics: not JSON ({type(error).__name__})") from None
    _check(isinstance(data, dict), "expected a JSON object")
    features, categorical = data.get("features"), data.get("categorical")
    _check(
        isinstance(features, list)
        and 0 < len(features) <= MAX_COLUMNS
        and all(isinstance(c, str) for c in features)
        and len(set(features)) == len(features),
        "features: expected distinct column names",
    )
    _check(
        isinstance(categorical, list)
        and all(isinstance(c, str) for c in categorical)
        and set(categorical) <= set(features),
        "categorical: expected some of the features",
    )
    numeric = [c for c in features if c not in categorical]
    num_train = data.get("num_train")
    _check(isinstance(num_train, int) and num_train >= 1, "num_train: expected an integer >= 1")
    labels = data.get("labels")
    _check(
        isinstance(labels, list)
        and 0 < len(labels) <= MAX_CLASSES
        and all(
            isinstance(v, int | str)
            and not isinstance(v, bool)
            or isinstance(v, float)
            and math.isfinite(v)
            for v in labels
        ),
        f"labels: expected 1..{MAX_CLASSES} label values",
    )
    count, total, total_sq = data.get("count"), data.get("total"), data.get("total_sq")
    for name, values in (("count", count), ("total", total), ("total_sq", total_sq)):
        _check(
            isinstance(values, dict) and set(values) == set(numeric),
            f"{name}: expected one value per numeric column",
        )
    for column in numeric:
        n, s, sq = count[column], total[column], total_sq[column]
        _check(isinstance(n, int) and 0 <= n <= num_train, f"count of {column!r} out of range")
        _check(
            all(isinstance(v, int | float) and math.isfinite(v) for v in (s, sq)) and sq >= 0,
            f"sums of {column!r}: expected finite numbers",
        )
        # moments of n real values, each at most MAX_VALUE in size: nothing else can be pooled
        _check(
            (n > 0 or s == sq == 0)
            and abs(s) <= n * MAX_VALUE
            and sq <= n * MAX_VALUE**2
            and s * s <= n * sq * (1 + 1e-9) + 1e-9,
            f"sums of {column!r}: not the moments of {n} values of at most {MAX_VALUE:g}",
        )
    categories = data.get("categories")
    _check(
        isinstance(categories, dict)
        and set(categories) == set(categorical)
        and all(
            isinstance(v, list) and len(v) <= MAX_CATEGORIES and all(isinstance(c, str) for c in v)
            for v in categories.values()
        ),
        f"categories: expected at most {MAX_CATEGORIES} strings per categorical column",
    )
    missing = data.get("missing", {})
    _check(isinstance(missing, dict), "missing: expected an object")
    statistics = SiteStatistics(
        num_train=num_train,
        labels=[_value(v) for v in labels],
        count={c: int(count[c]) for c in numeric},
        total={c: float(total[c]) for c in numeric},
        total_sq={c: float(total_sq[c]) for c in numeric},
        categories={c: list(categories[c]) for c in categorical},
        missing={str(c): int(n) for c, n in missing.items() if isinstance(n, int)},
    )
    return list(features), list(categorical), statistics


def agreement_to_json(agreement: Agreement, features: Sequence[str]) -> str:
    """The agreement as the server sends it to every client (JSON)."""
    return json.dumps(
        {
            "features": list(features),
            "classes": agreement.classes,
            "categories": agreement.categories,
            "mean": agreement.mean,
            "std": agreement.std,
            "numeric": agreement.numeric,
        }
    )


def agreement_from_json(text: str) -> tuple[list[str], Agreement]:
    """``(features, agreement)`` from the server's JSON."""
    data = json.loads(text)
    return list(data["features"]), Agreement(
        classes=[_value(v) for v in data["classes"]],
        categories={c: list(v) for c, v in data["categories"].items()},
        mean={c: float(v) for c, v in data["mean"].items()},
        std={c: float(v) for c, v in data["std"].items()},
        numeric=list(data["numeric"]),
    )


def encode_own_site(
    cfg: Mapping[str, Any], site: Site, agreement_json: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The client's arrays under the server's agreement (its columns must be the agreed ones)."""
    features, agreement = agreement_from_json(agreement_json)
    if site.features != features:
        raise ConfigError(
            f"feature-columns: site {site.name} has features {', '.join(site.features)}; the "
            f"federation agreed on {', '.join(features)}"
        )
    unknown = sorted(
        {_value(v) for v in pd.concat([site.train, site.test])[site.label]}
        - set(agreement.classes),
        key=_sort_key,
    )
    if unknown:
        raise ConfigError(f"label-column: site {site.name} has labels {unknown} not agreed on")
    return encode(site, agreement, site_statistics(site), str(cfg["standardize"]))


def agree_from_replies(replies: Mapping[int, str]) -> tuple[str, dict[int, str]]:
    """The server's side: the agreement (JSON) from the sites' statistics, and who was left out.

    ``replies`` maps partition ids to their statistics JSON. A reply that is not valid
    (:func:`statistics_from_json`) or whose feature columns differ from those of most sites (ties:
    the lowest partition id's) is left out, with the reason, in the returned dict.

    Raises
    ------
    ValueError
        Fewer than 2 sites' statistics are usable, or all of them hold one class.
    """
    parsed: dict[int, tuple[list[str], list[str], SiteStatistics]] = {}
    left_out: dict[int, str] = {}
    for pid in sorted(replies):
        try:
            parsed[pid] = statistics_from_json(replies[pid])
        except ValueError as error:
            left_out[pid] = str(error)
        except Exception as error:  # noqa: BLE001  (untrusted input: never fatal)
            left_out[pid] = f"site statistics: malformed ({type(error).__name__})"
    shapes = [(tuple(f), tuple(c)) for f, c, _ in parsed.values()]
    if shapes:
        features, categorical = max(
            shapes, key=lambda shape: (shapes.count(shape), -shapes.index(shape))
        )
        for pid, (f, c, _) in list(parsed.items()):
            if (tuple(f), tuple(c)) != (features, categorical):
                left_out[pid] = (
                    f"feature columns {', '.join(f)} differ from the other sites' "
                    f"{', '.join(features)}"
                )
                del parsed[pid]
    if len(parsed) < 2:
        raise ValueError(
            f"site statistics: {len(parsed)} site(s) usable; expected 2 or more"
            + (f" (left out: {left_out})" if left_out else "")
        )
    numeric = [c for c in features if c not in categorical]
    agreement = agree([s for _, _, s in parsed.values()], numeric)
    if len(agreement.classes) < 2:
        raise ValueError(
            f"label-column: one value ({agreement.classes[0]!r}) at every site; expected 2 or "
            "more classes"
        )
    return agreement_to_json(agreement, features), left_out
