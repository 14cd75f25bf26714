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
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from fedlr.config import ConfigError, split_list

log = logging.getLogger("fedlr")

SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
DATA_ENV = "FEDLR_DATA_DIR"
# ../shared/data next to the repository: where the offline data of this project lives
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def data_dir() -> Path:
    """``$FEDLR_DATA_DIR``, else ``../shared/data`` next to the repository."""
    return Path(os.environ.get(DATA_ENV) or DEFAULT_DATA_DIR)


def expand(item: str) -> str:
    """``item`` with ``~`` and ``$FEDLR_DATA_DIR`` (or ``${FEDLR_DATA_DIR}``) expanded.

    >>> import os; os.environ["FEDLR_DATA_DIR"] = "/data"
    >>> expand("$FEDLR_DATA_DIR/heart_disease/*.csv")
    '/data/heart_disease/*.csv'
    """
    for token in (f"${{{DATA_ENV}}}", f"${DATA_ENV}"):
        item = item.replace(token, str(data_dir()))
    return str(Path(item).expanduser())


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


def _value(item: Any) -> Any:
    """A label or category as one canonical value: ``1``, ``1.0`` and ``"1"`` read alike."""
    if isinstance(item, bool | np.bool_):
        return int(item)
    if isinstance(item, int | np.integer):
        return int(item)
    if isinstance(item, float | np.floating):
        return int(item) if float(item).is_integer() else float(item)
    text = str(item).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() else number


def _sort_key(item: Any) -> tuple[int, Any]:
    return (0, item) if isinstance(item, int | float) else (1, str(item))


def find_files(spec: str) -> list[Path]:
    """The files of ``data-files``: each comma item a path or a glob, all sorted, no repeats.

    Raises
    ------
    ConfigError
        An item matches no file, or a file is not ``.csv``/``.parquet``.
    """
    found: list[Path] = []
    for item in split_list(spec):
        path = Path(expand(item))
        where = ""
        if DATA_ENV in item:
            how = f"${DATA_ENV}" if os.environ.get(DATA_ENV) else "the default, ../shared/data"
            where = f" ({DATA_ENV} = {data_dir()}, {how}; set ${DATA_ENV} to the data folder)"
        if glob.has_magic(str(path)):
            matches = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
            if not matches:
                raise ConfigError(f"data-files: no file matches {item!r}{where}")
            found.extend(matches)
        elif path.is_file():
            found.append(path)
        else:
            raise ConfigError(f"data-files: file not found: {item}{where}")
    files = sorted(set(found))
    for path in files:
        if path.suffix.lower() not in SUFFIXES:
            raise ConfigError(
                f"data-files: {path}: expected a .csv or .parquet file, got {path.suffix!r}"
            )
    return files


def read_table(path: Path) -> pd.DataFrame:
    """A site's file as a DataFrame (CSV or Parquet by its suffix), with at least one row."""
    try:
        if SUFFIXES.get(path.suffix.lower()) == "parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise ConfigError(f"data-files: {path} is empty (expected a header row and rows)") from None
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"data-files: {path} cannot be read as a table ({first})") from None
    if frame.empty:
        raise ConfigError(f"data-files: {path} has no rows (expected a header row and rows)")
    if SUFFIXES.get(path.suffix.lower()) != "parquet":  # pandas renames a repeated "a" to "a.1"
        header = pd.read_csv(path, header=None, nrows=1).iloc[0].tolist()
        columns = [str(c).strip() for c in header]
    else:
        columns = [str(c).strip() for c in frame.columns]
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise ConfigError(
            f"data-files: {path} names column {repeated[0]!r} more than once; expected "
            "distinct column names"
        )
    frame.columns = columns
    return frame


def site_frames(cfg: Mapping[str, Any]) -> list[tuple[str, pd.DataFrame]]:
    """Every site's rows, in client order: ``(name, rows)`` per file, or per ``site-column`` value.

    Raises
    ------
    ConfigError
        No files; one file without ``site-column``; several files with it; a ``site-column``
        that is absent or holds one value.
    """
    files = find_files(str(cfg["data-files"]))
    if not files:
        raise ConfigError(
            f"data-files: expected one file per site (or one file and site-column) with "
            f"dataset {cfg['dataset']!r}, got none"
        )
    column = str(cfg["site-column"]).strip()
    if not column:
        if len(files) < 2:
            raise ConfigError(
                f"data-files: one file ({files[0]}) is one site; expected a file per site "
                "(2 or more), or one file and site-column"
            )
        return [(path.name, read_table(path)) for path in files]
    if len(files) != 1:
        raise ConfigError(
            f"site-column: expected one file holding every site, got {len(files)} files"
        )
    frame = read_table(files[0])
    if column not in frame.columns:
        raise ConfigError(
            f"site-column: {files[0]} has no column {column!r}; columns: {', '.join(frame.columns)}"
        )
    values = sorted({_value(v) for v in frame[column].dropna()}, key=_sort_key)
    if len(values) < 2:
        raise ConfigError(
            f"site-column: column {column!r} of {files[0]} has {len(values)} value(s); expected "
            "2 or more sites"
        )
    canonical = frame[column].map(lambda v: None if pd.isna(v) else _value(v))
    unassigned = int(frame[column].isna().sum())
    if unassigned:
        log.warning("fedlr: %s: %d rows without a %s value dropped", files[0], unassigned, column)
    return [
        (f"{files[0].name}:{value}", frame[canonical == value].drop(columns=[column]))
        for value in values
    ]


def count_sites(cfg: Mapping[str, Any]) -> int:
    """How many clients the files make (reads a ``site-column`` file, lists the others)."""
    if str(cfg["site-column"]).strip():
        return len(site_frames(cfg))
    files = find_files(str(cfg["data-files"]))
    return len(files) if len(files) >= 2 else len(site_frames(cfg))  # the latter raises


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


# -- the sites' agreement over the wire (query round) -------------------------------------------
# Bounds on what one site may claim: a hostile reply cannot make the model or the messages huge.
MAX_CLASSES = 1000
MAX_CATEGORIES = 1000
MAX_COLUMNS = 10_000
MAX_VALUE = 1e12  # largest feature value in size (a site's own file is held to it too)
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
