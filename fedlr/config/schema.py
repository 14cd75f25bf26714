"""The schema: every key once, with its type, default, check and meaning; and its Markdown table.

The keys are written in two tables by group (:mod:`fedlr.config.keys_data`,
:mod:`fedlr.config.keys_training`); :data:`SCHEMA` is both, in that order, the order of the
README's table and of a resolved config.
"""

from __future__ import annotations

import json
from typing import Any

from fedlr.config.keys_data import DATA_KEYS
from fedlr.config.keys_training import TRAINING_KEYS
from fedlr.config.values import Key

SCHEMA: dict[str, Key] = {**DATA_KEYS, **TRAINING_KEYS}
if len(SCHEMA) != len(DATA_KEYS) + len(TRAINING_KEYS):  # each key is named once
    raise RuntimeError(f"keys named twice: {sorted(DATA_KEYS.keys() & TRAINING_KEYS.keys())}")

DEFAULTS: dict[str, Any] = {key: spec.default for key, spec in SCHEMA.items()}


def keys_markdown() -> str:
    """Every key of :data:`SCHEMA` as the Markdown table of the README (``fedlr config --keys``)."""
    rows = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    for key, spec in SCHEMA.items():
        default = json.dumps(spec.default)
        cells = [f"`{key}`", f"`{default}`", spec.allowed, spec.help]
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows) + "\n"
