"""The files ``data-files`` names: found, read as tables, and split into sites, then counted.

A run on users' files takes ``num-clients`` from them (:func:`count_sites`, which
:func:`fedlr.config.resolve` calls), and every SuperNode reads its own site
(:mod:`fedlr.data.files`). Every problem with a file is a :class:`~fedlr.config.ConfigError`
naming the file and column and what is allowed. pandas is imported with this module, which
the config loads only when it counts sites.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedlr.config.values import ConfigError, split_list

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
