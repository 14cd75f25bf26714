"""fedlr.fl.checkpoint: one file, written atomically, read back exactly."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord

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


def test_sites_without_truth_resume_through_the_checkpoint_file(tmp_path):
    # a real site has no role and no true noise: None, written and read back as None
    sites = [
        ClientInfo(node_id=9 + pid, partition_id=pid, num_examples=5, noise_true=None, role=None)
        for pid in (0, 1)
    ]
    saved = example()
    saved.clients = ckpt.client_table(sites)
    ckpt.save(tmp_path, saved)
    loaded = ckpt.load(tmp_path)
    assert loaded is not None
    assert [(c["role"], c["noise_true"]) for c in loaded.clients] == [(None, None)] * 2
    ckpt.check_same_federation(loaded, list(reversed(sites)))
    simulated = [replace(c, noise_true=0.0, role="clean") for c in sites]
    with pytest.raises(RuntimeError, match="do not hold the data"):
        ckpt.check_same_federation(loaded, simulated)


# -- snapshots of the global model at task ends (continual runs) ----------------------------------


def snapshot_arrays() -> ArrayRecord:
    """A model's arrays with awkward values: float32 thirds, a NaN, -0.0, float64 and int64."""
    weight = torch.arange(6, dtype=torch.float32).reshape(2, 3) / 3
    weight[0, 1] = float("nan")
    weight[1, 0] = -0.0
    return ArrayRecord(
        {
            "net.0.weight": weight,
            "net.0.bias": torch.tensor([1e-30, -2.5], dtype=torch.float64),
            "steps": torch.tensor([7, -1], dtype=torch.int64),
        }
    )


@pytest.mark.parametrize(
    ("strategy", "server_round", "relative"),
    [
        ("fedavg", 7, "snapshots/fedavg/round-0007.pt"),
        (
            "noise-adaptive+phases+replay",
            30,
            "snapshots/noise-adaptive+phases+replay/round-0030.pt",
        ),
        ("fedavg", 12345, "snapshots/fedavg/round-12345.pt"),
    ],
)
def test_snapshot_path(tmp_path, strategy, server_round, relative):
    assert ckpt.snapshot_path(tmp_path, strategy, server_round) == tmp_path / relative
    assert ckpt.snapshot_path(str(tmp_path), strategy, server_round) == tmp_path / relative


def test_a_snapshot_round_trips_bit_for_bit(tmp_path):
    saved = snapshot_arrays()
    path = ckpt.save_snapshot(tmp_path, "fedavg+cosine", 6, saved)
    assert path == ckpt.snapshot_path(tmp_path, "fedavg+cosine", 6) and path.is_file()
    loaded = ckpt.load_snapshot(tmp_path, "fedavg+cosine", 6)
    assert isinstance(loaded, ArrayRecord)
    assert list(loaded) == list(saved)  # same keys, same order
    for key in saved:
        assert (loaded[key].dtype, loaded[key].shape) == (saved[key].dtype, saved[key].shape)
        assert loaded[key].numpy().tobytes() == saved[key].numpy().tobytes()  # NaN and -0.0 too


def test_snapshots_are_kept_per_strategy_and_round(tmp_path):
    first, later = snapshot_arrays(), ArrayRecord([np.full(3, 2.0, dtype=np.float32)])
    ckpt.save_snapshot(tmp_path, "fedavg", 5, first)
    ckpt.save_snapshot(tmp_path, "fedavg", 10, later)
    ckpt.save_snapshot(tmp_path, "fedprox", 5, later)
    assert list(ckpt.load_snapshot(tmp_path, "fedavg", 5)) == list(first)
    np.testing.assert_array_equal(ckpt.load_snapshot(tmp_path, "fedavg", 10)["0"].numpy(), 2.0)
    np.testing.assert_array_equal(ckpt.load_snapshot(tmp_path, "fedprox", 5)["0"].numpy(), 2.0)
    # saving a round again replaces it
    ckpt.save_snapshot(tmp_path, "fedavg", 5, later)
    assert list(ckpt.load_snapshot(tmp_path, "fedavg", 5)) == ["0"]


def test_a_missing_snapshot_is_none(tmp_path):
    assert ckpt.load_snapshot(tmp_path, "fedavg", 3) is None  # no snapshots folder at all
    ckpt.save_snapshot(tmp_path, "fedavg", 3, snapshot_arrays())
    assert ckpt.load_snapshot(tmp_path, "fedavg", 4) is None
    assert ckpt.load_snapshot(tmp_path, "fedprox", 3) is None


def test_a_snapshot_leaves_no_temporary_file(tmp_path):
    ckpt.save_snapshot(tmp_path, "fedavg", 3, snapshot_arrays())
    ckpt.save_snapshot(tmp_path, "fedavg", 3, snapshot_arrays())
    ckpt.save_snapshot(tmp_path, "fedavg", 8, snapshot_arrays())
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["snapshots/fedavg/round-0003.pt", "snapshots/fedavg/round-0008.pt"]
