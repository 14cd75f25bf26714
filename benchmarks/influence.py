"""How much of the aggregate can one client take? The worst share under each aggregation setting.

Ten clients of 135 examples each answer fedlr's real query round and one train round of the
real strategy (``fedlr.fl.strategy``: query checks, example cap, reply checks, aggregation).
Nine send honest updates (a shared direction plus noise); one attacker sends ``scale`` times a
direction of its own and claims ``claimed`` examples in the query round. The attacker's *share*
is how far the aggregate moved toward its update, as a fraction of the way:

    share = <agg - mean_honest, attack - mean_honest> / |attack - mean_honest|^2

1.0 means the aggregate is the attacker's model; 0.1 is one client's fair weight among ten; 0 is
no influence. The script prints, per setting, the worst share over claimed counts (135 to
10^12) and scales (1 to 10^6), and writes ``results/influence.json``.

    python benchmarks/influence.py
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flwr.app import (  # noqa: E402
    ArrayRecord,
    ConfigRecord,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

from fedlr.config import resolve  # noqa: E402
from fedlr.fl import keys  # noqa: E402
from fedlr.fl.strategy import build_strategy, query_nodes  # noqa: E402

NUM_CLIENTS = 10
EXAMPLES = 135
ATTACKER = NUM_CLIENTS - 1
DIM = 256
CLAIMS = [135, 1_350, 10**6, 10**12]
SCALES = [1.0, 10.0, 1e3, 1e6]
SETTINGS: dict[str, dict[str, Any]] = {
    "mean, no cap (max-examples 10^13)": {"max-examples": 10**13},
    "mean (default: cap 10x median)": {},
    "mean + clip-update-norm 3": {"clip-update-norm": 3.0},
    "median": {"aggregation": "median"},
    "trimmed-mean (0.2)": {"aggregation": "trimmed-mean"},
    "krum": {"aggregation": "krum"},
    "multi-krum": {"aggregation": "multi-krum"},
}


class AttackGrid:
    """Answers the query and the train round: nine honest clients and one attacker."""

    def __init__(self, claimed: int, scale: float, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.claimed = claimed
        self.shared = rng.normal(size=DIM)
        self.honest = {pid: self.shared + 0.3 * rng.normal(size=DIM) for pid in range(ATTACKER)}
        own = rng.normal(size=DIM)
        self.attack = scale * own / np.linalg.norm(own) * np.linalg.norm(self.shared)
        self.node_of = {1000 + 7 * pid: pid for pid in range(NUM_CLIENTS)}

    def get_node_ids(self) -> list[int]:
        """Every client, always connected."""
        return list(self.node_of)

    def send_and_receive(self, messages, *, timeout=None):
        """Each node's answer: its count (query) or its model (train)."""
        replies = []
        for msg in messages:
            pid = self.node_of[msg.metadata.dst_node_id]
            if msg.metadata.message_type == "query":
                count = self.claimed if pid == ATTACKER else EXAMPLES
                metrics = {keys.PARTITION_ID: pid, keys.NUM_EXAMPLES: count}
                content = RecordDict({keys.METRICS: MetricRecord(metrics)})
            else:
                sent = msg.content.array_records[keys.ARRAYS]["0"].numpy()
                update = self.attack if pid == ATTACKER else self.honest[pid]
                metrics = {keys.NUM_EXAMPLES: EXAMPLES, keys.TRAIN_LOSS: 1.0}
                content = RecordDict(
                    {
                        keys.ARRAYS: ArrayRecord({"0": _array(sent + update)}),
                        keys.METRICS: MetricRecord(metrics),
                    }
                )
            replies.append(Message(content, reply_to=msg))
        return replies


def _array(values: np.ndarray):
    from flwr.app import Array

    return Array(np.asarray(values, dtype=np.float64))


def share(setting: dict[str, Any], claimed: int, scale: float, seed: int) -> float:
    """The attacker's share of one aggregate under ``setting``."""
    base = {"num-clients": NUM_CLIENTS, "noisy-clients": 0, "hard-clean-clients": 0}
    cfg = resolve(overrides={**base, "strategies": "fedavg", **setting})
    grid = AttackGrid(claimed, scale, seed)
    clients, failed = query_nodes(grid, grid.get_node_ids(), cfg, timeout=10.0)
    assert not failed, failed
    strategy = build_strategy("fedavg", cfg, clients)
    w0 = ArrayRecord({"0": _array(np.zeros(DIM))})
    sent = strategy.configure_train(1, w0, ConfigRecord(dict(cfg)), grid)
    arrays, _ = strategy.aggregate_train(1, grid.send_and_receive(list(sent)))
    if arrays is None:
        return 0.0
    agg = arrays["0"].numpy()
    mean_honest = np.mean(list(grid.honest.values()), axis=0)
    direction = grid.attack - mean_honest
    return float(np.dot(agg - mean_honest, direction) / np.dot(direction, direction))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--json", type=Path, default=ROOT / "results" / "influence.json")
    args = parser.parse_args(argv)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    import logging

    logging.getLogger("fedlr").setLevel(logging.ERROR)  # the cap's warning, once per run
    logging.getLogger("flwr").setLevel(logging.ERROR)
    rows = {}
    print(f"{'setting':38s} {'worst share':>11s}  {'at claimed, scale':>20s}  {'honest':>7s}")
    for name, setting in SETTINGS.items():
        worst, where = -np.inf, None
        for claimed, scale, seed in itertools.product(CLAIMS, SCALES, args.seeds):
            value = share(setting, claimed, scale, seed)
            if value > worst:
                worst, where = value, (claimed, scale)
        honest = float(np.mean([share(setting, EXAMPLES, 1.0, s) for s in args.seeds]))
        rows[name] = {"worst_share": worst, "at": where, "honest_share": honest}
        print(f"{name:38s} {worst:11.3f}  {str(where):>20s}  {honest:7.3f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "command": "python benchmarks/influence.py " + " ".join(argv or sys.argv[1:]),
        "clients": NUM_CLIENTS,
        "claims": CLAIMS,
        "scales": SCALES,
        "settings": rows,
    }
    args.json.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
