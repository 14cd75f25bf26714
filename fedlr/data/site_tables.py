"""A site's table: find the files of ``data-files``, read them, check the columns, split.

:func:`site_frames` gives every site's rows (a file per site, or one file and a ``site-column``);
:func:`split_site` checks a site's label and feature columns, drops rows without a label and
splits the rest into train and test rows (stratified, seeded by ``test-fraction`` and ``seed``),
as a :class:`Site`. Every problem with a file is a :class:`~fedlr.config.ConfigError` naming the
file and column and what is allowed.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
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
