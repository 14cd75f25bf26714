"""fedlr.tasks.ddp: P gloo processes with batch B compute what one process computes with batch P*B.

Data: the clean client (partition 3) of a 4-client digits federation; MLPs with 16 hidden units.
A test that starts torchrun takes a few seconds (three Python processes import torch) and is
marked slow.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fedlr.config import resolve
from fedlr.rates.coupling import rule_for_optimizer, scale_lr
from fedlr.tasks import ddp, tabular

CFG = resolve(overrides={"num-clients": 4, "noisy-clients": 2, "hidden": 16})
CLEAN = 3
TIMEOUT = 120.0  # seconds; a healthy run takes a few


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def max_abs_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def first(n: int):
    data = tabular.client_data(CFG, CLEAN)
    return dataclasses.replace(data, x_train=data.x_train[:n], y_train=data.y_train[:n])


def processes_naming(path: Path) -> list[int]:
    """Pids of live processes whose command line mentions ``path`` (Linux /proc)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(path).encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:
            pass  # gone meanwhile
    return pids


def test_torchrun_listens_on_the_loopback_address_only():
    command = ddp.torchrun_command(Path("/tmp/job"), 2)
    assert command[command.index("--rdzv-endpoint") + 1] == "127.0.0.1:0"  # OS-chosen free port
    assert command[command.index("--local-addr") + 1] == "127.0.0.1"
    assert command[command.index("--nproc-per-node") + 1] == "2"
    assert command[-3:] == ["-m", "fedlr.tasks.ddp", "/tmp/job"]


def test_client_data_survives_a_weights_only_round_trip(tmp_path):
    data = tabular.client_data(CFG, 1)
    torch.save(ddp._data_to_tensors(data), tmp_path / "data.pt")
    back = ddp._data_from_tensors(torch.load(tmp_path / "data.pt", weights_only=True))
    for field in dataclasses.fields(data):
        np.testing.assert_array_equal(getattr(back, field.name), getattr(data, field.name))
    assert back.x_train.dtype == np.float32 and back.y_train.dtype == np.int64


def test_bad_arguments_fail_before_starting_anything():
    model, data = tabular.build_model(CFG), first(16)
    with pytest.raises(ValueError, match="ddp-procs: expected an integer >= 1, got 0"):
        ddp.train_ddp(model, data, procs=0, lr=0.1, epochs=1, batch_size=8)
    with pytest.raises(ValueError, match="timeout: expected a number > 0, got 0"):
        ddp.train_ddp(model, data, procs=2, lr=0.1, epochs=1, batch_size=8, timeout=0)


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_on_the_global_batch():
    # 161 = 10 * 16 + 1 samples: the last global batch holds one sample, so rank 1 gets none
    # and the gradient must still be the mean over the one sample, not half of it.
    data = first(161)
    procs, batch = 2, 8
    lr = scale_lr(0.05, procs * batch, batch, rule_for_optimizer("sgd"))  # linear: 0.1
    settings = dict(lr=lr, epochs=2, optimizer="sgd", momentum=0.9, proximal_mu=0.5, seed=7)
    start = weights(tabular.build_model(CFG))
    ddp_model, single_model = tabular.build_model(CFG), tabular.build_model(CFG)

    started = time.monotonic()
    ddp_loss = ddp.train_ddp(
        ddp_model, data, procs=procs, batch_size=batch, timeout=TIMEOUT, **settings
    )
    seconds = time.monotonic() - started
    single_loss = tabular.train_local(single_model, data, batch_size=procs * batch, **settings)

    difference = max_abs_difference(weights(ddp_model), weights(single_model))
    print(f"DDP (2 gloo processes, {seconds:.1f} s) vs one process: max |dw| = {difference:.2e}")
    assert difference < 1e-5
    assert max_abs_difference(weights(ddp_model), start) > 1e-2  # it trained
    assert ddp_loss == pytest.approx(single_loss, rel=1e-5)


@pytest.mark.slow
def test_failing_workers_raise_with_their_error():
    data = first(40)
    corrupt = dataclasses.replace(data, y_train=np.full_like(data.y_train, 99))  # no class 99
    model = tabular.build_model(CFG)
    before = weights(model)
    with pytest.raises(RuntimeError, match=r"(?s)^ddp: 2 workers failed .*out of bounds"):
        ddp.train_ddp(model, corrupt, procs=2, lr=0.1, epochs=1, batch_size=8, timeout=TIMEOUT)
    assert max_abs_difference(weights(model), before) == 0.0  # the model is left as it was


@pytest.mark.slow
def test_workers_past_the_timeout_are_killed(monkeypatch, tmp_path):
    # Ten thousand epochs take minutes; in 4 s the workers are usually up and training, so the
    # launcher stops torchrun and torchrun its workers (or, failing that, the launcher kills them).
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the job directory goes here
    model, data = tabular.build_model(CFG), first(40)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="ddp: 2 workers did not finish within 4 s"):
        ddp.train_ddp(model, data, procs=2, lr=0.1, epochs=10_000, batch_size=8, timeout=4)
    assert time.monotonic() - started < 4 + ddp.GRACE + 5
    deadline = time.monotonic() + 5
    while processes_naming(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_naming(tmp_path) == []


@pytest.mark.parametrize(
    ("first_error", "calls"),
    [
        ("ddp: 2 workers failed (torchrun exit code 1); ... exitcode  : -6 (pid: 7) (SIGABRT)", 2),
        ("ddp: 2 workers failed (torchrun exit code 1); ... IndexError: out of bounds", 1),
    ],
)
def test_only_a_gloo_abort_is_run_once_more(monkeypatch, caplog, first_error, calls):
    # No torchrun: the fake workers fail once, then write the result a healthy job writes.
    model = tabular.build_model(CFG)
    trained = {k: v + 1.0 for k, v in weights(model).items()}
    seen: list[Path] = []

    def fake_workers(workdir: Path, procs: int, timeout: float) -> None:
        seen.append(workdir)
        if len(seen) == 1:
            raise RuntimeError(first_error)
        torch.save({"state_dict": trained, "loss": 0.25}, workdir / "result.pt")

    monkeypatch.setattr(ddp, "_run_workers", fake_workers)
    if calls == 1:
        with pytest.raises(RuntimeError, match="out of bounds"):
            ddp.train_ddp(model, first(40), procs=2, lr=0.1, epochs=1, batch_size=8)
        assert max_abs_difference(weights(model), trained) == 1.0  # left as it was
    else:
        loss = ddp.train_ddp(model, first(40), procs=2, lr=0.1, epochs=1, batch_size=8)
        assert loss == 0.25 and max_abs_difference(weights(model), trained) == 0.0
        assert "aborted (SIGABRT); running the job once more" in caplog.text
    assert len(seen) == calls
