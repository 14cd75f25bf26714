"""Checkpoints: everything a killed run needs to go on as if it had never stopped.

Flower has no resume (flwrlabs/flower#599), so fedlr keeps one file, ``checkpoint.pt`` in the run
directory, rewritten every ``checkpoint-every`` rounds and when a strategy ends. It is written to
``checkpoint.pt.tmp`` and renamed over the old one, so a kill at any instant leaves either the
previous checkpoint or the new one, never half of one.

It holds the strategies already finished, the current strategy and its last completed round, the
global model after that round, and the strategy's state (noise EMA, clients whose last estimate
was invalid, and the per-round logs that ``results.json`` is summarised from). There is no random
stream to save: every draw in a run is keyed by ``(seed, round, partition id)`` (client sampling,
batches, estimator subsamples), so the seed and the round number, both stored, are the RNG state.

The file is read with ``torch.load(weights_only=True)``: tensors and plain Python data only, no
arbitrary objects are unpickled.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord

from fedlr.fl.strategy import ClientInfo

FILE_NAME = "checkpoint.pt"
FORMAT = 1


@dataclass
class Checkpoint:
    """The state of a run after ``round`` rounds of ``strategy``.

    ``done`` lists the strategies whose results are final (in ``results.json``); when
    ``strategy`` is in ``done``, ``round`` is its last round and ``arrays`` its final model.
    """

    seed: int
    done: list[str]
    strategy: str
    round: int
    arrays: dict[str, torch.Tensor]
    strategy_state: dict[str, Any]
    elapsed_s: float
    clients: list[dict[str, Any]] = field(default_factory=list)

    def array_record(self) -> ArrayRecord:
        """The saved global model as Flower's ArrayRecord."""
        return ArrayRecord(self.arrays)


def client_table(clients: Sequence[ClientInfo]) -> list[dict[str, Any]]:
    """What identifies the federation's data: partition, size, role and true noise per client.

    Role and true noise are None where a client has no truth (a real site): resuming compares
    them as they are, so a federation that gained or lost its truth is a different one.
    """
    return [
        {
            "partition_id": c.partition_id,
            "num_examples": c.num_examples,
            "role": c.role,
            "noise_true": c.noise_true,
        }
        for c in sorted(clients, key=lambda c: c.partition_id)
    ]


def save(run_dir: Path, checkpoint: Checkpoint) -> Path:
    """Write ``run_dir/checkpoint.pt`` atomically (write, flush to disk, rename)."""
    path = Path(run_dir) / FILE_NAME
    tmp = path.with_name(FILE_NAME + ".tmp")
    payload = {
        "format": FORMAT,
        "seed": checkpoint.seed,
        "done": list(checkpoint.done),
        "strategy": checkpoint.strategy,
        "round": checkpoint.round,
        "arrays": {k: v.detach().cpu() for k, v in checkpoint.arrays.items()},
        "strategy_state": checkpoint.strategy_state,
        "elapsed_s": checkpoint.elapsed_s,
        "clients": checkpoint.clients,
    }
    with open(tmp, "wb") as handle:
        torch.save(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def load(run_dir: Path) -> Checkpoint | None:
    """The run's checkpoint, or None when it was stopped before its first one.

    Raises
    ------
    ValueError
        The file exists but is not a fedlr checkpoint of a format this version reads.
    """
    path = Path(run_dir) / FILE_NAME
    if not path.exists():
        return None
    try:
        payload = torch.load(path, weights_only=True)
    except Exception as error:  # noqa: BLE001  (pickle and zip errors have no common base)
        # torch's own message is many lines and suggests weights_only=False, which is unsafe.
        raise ValueError(
            f"{path}: not a readable fedlr checkpoint ({type(error).__name__}); "
            "remove it to resume from the start"
        ) from None
    if not isinstance(payload, Mapping) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: expected a fedlr checkpoint of format {FORMAT}")
    return Checkpoint(
        seed=int(payload["seed"]),
        done=list(payload["done"]),
        strategy=str(payload["strategy"]),
        round=int(payload["round"]),
        arrays=dict(payload["arrays"]),
        strategy_state=dict(payload["strategy_state"]),
        elapsed_s=float(payload["elapsed_s"]),
        clients=list(payload["clients"]),
    )


def check_same_federation(checkpoint: Checkpoint, clients: Sequence[ClientInfo]) -> None:
    """Refuse to resume onto different data (partition sizes, roles or noise differ).

    Clients without truth (role and true noise None) match a checkpoint of clients without it.
    """
    now = client_table(clients)
    if now != checkpoint.clients:
        raise RuntimeError(
            "the clients answering now do not hold the data the checkpoint was made with "
            "(partition ids, sizes, roles or noise differ); resume with the same config and nodes"
        )


def snapshot_path(run_dir: Path, strategy: str, server_round: int) -> Path:
    """Where the global model after ``server_round`` of ``strategy`` is kept (continual runs)."""
    return Path(run_dir) / "snapshots" / strategy / f"round-{server_round:04d}.pt"


def save_snapshot(run_dir: Path, strategy: str, server_round: int, arrays: ArrayRecord) -> Path:
    """Keep a snapshot of the global model (written to a temp file, then renamed)."""
    path = snapshot_path(run_dir, strategy, server_round)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pt.tmp")
    torch.save(arrays.to_torch_state_dict(), tmp)
    os.replace(tmp, path)
    return path


def load_snapshot(run_dir: Path, strategy: str, server_round: int) -> ArrayRecord | None:
    """The snapshot :func:`save_snapshot` kept, or None when there is none."""
    path = snapshot_path(run_dir, strategy, server_round)
    if not path.is_file():
        return None
    return ArrayRecord(torch.load(path, weights_only=True))
