"""One value of one key: :class:`Key`, :class:`ConfigError` and the checks keys are built from."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type, or out of range."""


@dataclass(frozen=True)
class Key:
    """One configuration key: its type, default, a check and what the check allows."""

    kind: type
    default: Any
    allowed: str
    check: Callable[[Any], bool]
    help: str


def split_list(value: str) -> list[str]:
    """Split a comma-separated config value into its stripped, non-empty items."""
    return [item.strip() for item in str(value).split(",") if item.strip()]


def in_range(
    lo: float | None = None, hi: float | None = None, *, lo_open: bool = False
) -> Callable[[Any], bool]:
    """A check that a number lies in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``), and is finite."""

    def check(v: Any) -> bool:
        if lo is not None and (v <= lo if lo_open else v < lo):
            return False
        return v <= hi if hi is not None else v < float("inf")  # rejects nan and inf

    return check


def one_of(options: tuple[str, ...]) -> Callable[[Any], bool]:
    """A check that a value is one of ``options``."""
    return lambda v: v in options


def subset_of(options: tuple[str, ...]) -> Callable[[str], bool]:
    """A check that a comma list is non-empty, without repeats, and drawn from ``options``."""

    def check(v: str) -> bool:
        items = split_list(v)
        return bool(items) and len(set(items)) == len(items) and all(i in options for i in items)

    return check


POSITIVE = in_range(0, lo_open=True)
UNIT = in_range(0.0, 1.0)


def is_run_name(v: str) -> bool:
    """A run name is one path component of printable, portable characters."""
    return bool(re.fullmatch(r"[A-Za-z0-9_\-][A-Za-z0-9._\-]{0,99}", v))


def is_int_list(v: str) -> bool:
    """Whether ``v`` is a non-empty comma list of integers >= 0."""
    try:
        items = split_list(v)
        return bool(items) and all(0 <= int(item) for item in items)
    except ValueError:
        return False


def is_import_string(value: str) -> bool:
    """Whether ``value`` has the shape ``package.module:attribute`` (imported later, when used)."""
    module, sep, attribute = value.partition(":")
    return bool(sep) and all(
        part.isidentifier() for part in (*module.split("."), *attribute.split("."))
    )
