"""fedlr.fl.checkpoint: one file, written atomically, read back exactly."""

from __future__ import annotations

import pytest
import torch

from fedlr.fl import checkpoint as ckpt
from fedlr.fl.strategy import ClientInfo


def example() -> ckpt.Checkpoint:
    return ckpt.Checkpoint(
        seed=3,
        done=["fedavg"],
        strategy="noise-adaptive",
        round=4,
        arrays={"fc.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3) / 7},
        strategy_state={"ema": {"decay": 0.5, "values": {"0": 0.25}}, "rounds": {1: {"lr": {}}}},
        elapsed_s=12.5,
        clients=[{"partition_id": 0, "num_examples": 9, "role": "noisy", "noise_true": 0.5}],
    )


def test_save_then_load_gives_back_every_field(tmp_path):
    saved = example()
    ckpt.save(tmp_path, saved)
    loaded = ckpt.load(tmp_path)
    assert loaded is not None
    assert torch.equal(loaded.arrays["fc.weight"], saved.arrays["fc.weight"])
    assert (loaded.seed, loaded.done, loaded.strategy, loaded.round) == (
        3,
        ["fedavg"],
        "noise-adaptive",
        4,
    )
    assert loaded.strategy_state == saved.strategy_state
    assert loaded.elapsed_s == 12.5 and loaded.clients == saved.clients
    assert loaded.array_record().to_torch_state_dict()["fc.weight"].shape == (2, 3)


def test_a_save_replaces_the_old_file_and_leaves_no_temporary(tmp_path):
    ckpt.save(tmp_path, example())
    newer = example()
    newer.round = 6
    ckpt.save(tmp_path, newer)
    assert ckpt.load(tmp_path).round == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_no_checkpoint_is_none(tmp_path):
    assert ckpt.load(tmp_path) is None


def test_a_corrupt_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable fedlr checkpoint"):
        ckpt.load(tmp_path)


def test_a_file_of_another_format_is_refused(tmp_path):
    torch.save({"format": 99}, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match="expected a fedlr checkpoint of format 1"):
        ckpt.load(tmp_path)


def test_only_tensors_and_plain_data_are_unpickled(tmp_path):
    from pathlib import PurePosixPath  # any class: unpickling one could run its code

    torch.save({"format": 1, "x": PurePosixPath("/etc")}, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match="not a readable fedlr checkpoint"):
        ckpt.load(tmp_path)


def test_client_table_is_by_partition_and_ignores_node_ids():
    a = ClientInfo(node_id=99, partition_id=1, num_examples=5, noise_true=0.0, role="clean")
    b = ClientInfo(node_id=42, partition_id=0, num_examples=7, noise_true=0.5, role="noisy")
    moved = ClientInfo(node_id=7, partition_id=1, num_examples=5, noise_true=0.0, role="clean")
    assert [row["partition_id"] for row in ckpt.client_table([a, b])] == [0, 1]
    assert ckpt.client_table([a, b]) == ckpt.client_table([moved, b])
    saved = example()
    saved.clients = ckpt.client_table([a, b])
    ckpt.check_same_federation(saved, [moved, b])
    bigger = ClientInfo(node_id=7, partition_id=1, num_examples=6, noise_true=0.0, role="clean")
    with pytest.raises(RuntimeError, match="do not hold the data"):
        ckpt.check_same_federation(saved, [bigger, b])
