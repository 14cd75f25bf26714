r"""One client's local training across ``P`` processes: DistributedDataParallel under torchrun.

The ClientApp process calls :func:`train_ddp`; it writes the received model, the client's data
and the training settings into a temporary directory and starts

.. code-block:: text

    python -m torch.distributed.run --nnodes 1 --nproc-per-node P \
        --rdzv-backend c10d --rdzv-endpoint 127.0.0.1:0 ... -m fedlr.tasks.ddp DIR

(a rendezvous advertised on the loopback address, on a port the OS picks; gloo binds to the
loopback interface; torch's rendezvous TCP store itself has no bind option and listens on all
interfaces, on that random port). Each of the ``P`` workers (:func:`main`) wraps the model in
DDP (backend ``gloo`` on CPU, ``nccl`` on GPUs) and runs :func:`fedlr.tasks.tabular.train_local`
as rank ``r`` of ``P``: the same seeded permutation as one process with batch :math:`P B`, each
global batch split across the ranks, gradients averaged over the whole global batch (see
``train_local``). Rank 0 writes the trained weights; the
launcher loads them into the model. So ``P`` processes with batch :math:`B` each compute what one
process computes with batch :math:`P B`, up to floating-point summation order.

Every file is read with ``torch.load(weights_only=True)``. The workers are bounded by a timeout
and killed at it; a failure raises :class:`RuntimeError` with the tail of their output, which
Flower turns into an error reply.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record
from torch.nn.parallel import DistributedDataParallel

from fedlr.data.federated import ClientData
from fedlr.tasks.mlp import MLP
from fedlr.tasks.tabular_loops import train_local

WORKER = "fedlr.tasks.ddp"
# Characters of the workers' output quoted in the error when they fail.
OUTPUT_TAIL = 3000
# Seconds the launcher gives torchrun, after SIGTERM, to stop its workers itself.
GRACE = 10.0
log = logging.getLogger("fedlr")
_INPUTS, _SETTINGS, _RESULT, _LOG = "inputs.pt", "settings.json", "result.pt", "output.log"


def train_ddp(
    model: MLP,
    data: ClientData,
    *,
    procs: int,
    lr: float,
    epochs: int,
    batch_size: int,
    optimizer: str = "sgd",
    momentum: float = 0.0,
    proximal_mu: float = 0.0,
    seed: int = 0,
    device: torch.device | str = "cpu",
    timeout: float = 600.0,
    weight_decay: float = 0.0,
    adam_betas: tuple[float, float] = (0.9, 0.999),
    adam_eps: float = 1e-8,
) -> float:
    """Train ``model`` in place with ``procs`` DDP processes, each on batches of ``batch_size``.

    The global batch is ``procs * batch_size`` and ``lr`` is used as given: the caller scales it
    for the global batch (:func:`fedlr.rates.coupling.scale_lr`). The other arguments are those of
    :func:`fedlr.tasks.tabular.train_local`.

    Parameters
    ----------
    device : torch.device or str
        ``cpu`` (backend gloo) or ``cuda`` (backend nccl, rank ``r`` on GPU ``r``: needs
        ``procs`` visible GPUs).
    timeout : float
        Seconds the workers may take, start-up included; they are killed after it.

    Returns
    -------
    float
        Mean training loss over the local steps, as ``train_local`` returns it.

    Raises
    ------
    RuntimeError
        When the workers fail or time out; the message ends with the tail of their output.
    """
    if procs < 1:
        raise ValueError(f"ddp-procs: expected an integer >= 1, got {procs}")
    if not timeout > 0:
        raise ValueError(f"timeout: expected a number > 0, got {timeout}")
    device_type = torch.device(device).type
    if device_type not in ("cpu", "cuda"):
        raise ValueError(f"device: expected cpu or cuda, got {str(device)!r}")
    if device_type == "cuda" and torch.cuda.device_count() < procs:
        raise ValueError(
            f"ddp-procs: expected at most {torch.cuda.device_count()} (the visible GPUs) "
            f"with device cuda, got {procs}"
        )
    settings = {
        "lr": lr,
        "epochs": epochs,
        "batch_size": procs * batch_size,
        "optimizer": optimizer,
        "momentum": momentum,
        "proximal_mu": proximal_mu,
        "seed": seed,
        "device": device_type,
        "timeout": timeout,
        "weight_decay": weight_decay,
        "adam_betas": list(adam_betas),
        "adam_eps": adam_eps,
    }
    with tempfile.TemporaryDirectory(prefix="fedlr-ddp-") as tmp:
        workdir = Path(tmp)
        torch.save(
            {
                "shape": [model.num_features, model.num_classes, model.hidden],
                "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "data": _data_to_tensors(data),
            },
            workdir / _INPUTS,
        )
        (workdir / _SETTINGS).write_text(json.dumps(settings))
        try:
            _run_workers(workdir, procs, timeout)
        except RuntimeError as error:
            # gloo can abort a worker at random (SIGABRT in its TCP transport, pytorch#188266).
            # The job is seeded, so running it again gives what the first run would have.
            if "(SIGABRT)" not in str(error):
                raise
            log.warning("fedlr: a DDP worker aborted (SIGABRT); running the job once more")
            _run_workers(workdir, procs, timeout)
        result = torch.load(workdir / _RESULT, weights_only=True)
    model.load_state_dict(result["state_dict"])
    return float(result["loss"])


def torchrun_command(workdir: Path, procs: int) -> list[str]:
    """The torchrun command line that starts ``procs`` workers on ``workdir``, via 127.0.0.1."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        str(procs),
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        "127.0.0.1:0",  # port 0: the OS picks a free one
        "--rdzv-id",
        f"fedlr-{uuid.uuid4().hex}",
        "--local-addr",
        "127.0.0.1",
        "--max-restarts",
        "0",
        "--log-dir",  # torchrun's error files, removed with the job directory
        str(workdir / "torchrun"),
        "-m",
        WORKER,
        str(workdir),
    ]


def _run_workers(workdir: Path, procs: int, timeout: float) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # The workers must import the fedlr this process runs, wherever it was loaded from.
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    loopback = next((name for _, name in socket.if_nameindex() if name.startswith("lo")), None)
    if loopback is not None and "GLOO_SOCKET_IFNAME" not in env:
        env["GLOO_SOCKET_IFNAME"] = loopback
    log_path = workdir / _LOG
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            torchrun_command(workdir, procs),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop(proc, workdir)
            raise RuntimeError(
                f"ddp: {procs} workers did not finish within {timeout:g} s and were killed; "
                f"output tail:\n{_tail(log_path)}"
            ) from None
        except BaseException:  # interrupted: leave no workers behind
            _stop(proc, workdir)
            raise
    if returncode != 0 or not (workdir / _RESULT).exists():
        raise RuntimeError(
            f"ddp: {procs} workers failed (torchrun exit code {returncode}); "
            f"output tail:\n{_tail(log_path)}"
        )


def _stop(proc: subprocess.Popen, workdir: Path) -> None:
    """Stop torchrun and its workers; each worker leads its own process group."""
    proc.terminate()  # torchrun's agent stops its workers on SIGTERM
    try:
        proc.wait(timeout=GRACE)
        pgids = []
    except subprocess.TimeoutExpired:
        pgids = [proc.pid]
    pgids += [int(text) for p in workdir.glob("pid-*") if (text := p.read_text().strip())]
    for pgid in pgids:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    proc.wait()


def _tail(path: Path) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return text[-OUTPUT_TAIL:].strip() or "(no output)"


def _data_to_tensors(data: ClientData) -> dict[str, Any]:
    return {
        f.name: torch.from_numpy(np.ascontiguousarray(value))
        if isinstance(value := getattr(data, f.name), np.ndarray)
        else value
        for f in dataclasses.fields(data)
    }


def _data_from_tensors(fields: dict[str, Any]) -> ClientData:
    values: dict[str, Any] = {
        k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in fields.items()
    }
    return ClientData(**values)


@record
def main(argv: list[str] | None = None) -> None:
    """Entry point of one worker: ``python -m fedlr.tasks.ddp DIR``, started by torchrun.

    Reads torchrun's ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``, trains its share of every
    global batch, and (rank 0) writes the trained weights and the mean loss to ``DIR``.
    """
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit(f"usage: python -m {WORKER} DIR (started by torchrun)")
    workdir = Path(args[0])
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    (workdir / f"pid-{rank}").write_text(str(os.getpid()))
    torch.set_num_threads(1)
    settings = json.loads((workdir / _SETTINGS).read_text())
    inputs = torch.load(workdir / _INPUTS, weights_only=True)

    device = torch.device("cpu")
    if settings["device"] == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo",
        timeout=timedelta(seconds=float(settings["timeout"])),
    )
    try:
        model = MLP(*inputs["shape"])
        model.load_state_dict(inputs["state_dict"])
        model.to(device)
        ddp_model = DistributedDataParallel(
            model, device_ids=[local_rank] if device.type == "cuda" else None
        )
        share = train_local(
            ddp_model,
            _data_from_tensors(inputs["data"]),
            lr=settings["lr"],
            epochs=settings["epochs"],
            batch_size=settings["batch_size"],
            optimizer=settings["optimizer"],
            momentum=settings["momentum"],
            proximal_mu=settings["proximal_mu"],
            seed=settings["seed"],
            rank=rank,
            world_size=world_size,
            weight_decay=settings["weight_decay"],
            adam_betas=tuple(settings["adam_betas"]),
            adam_eps=settings["adam_eps"],
        )
        loss = torch.tensor([share], dtype=torch.float64, device=device)
        dist.all_reduce(loss)  # the ranks' shares add up to the mean loss
        if rank == 0:
            state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            partial = workdir / f"{_RESULT}.partial"
            torch.save({"state_dict": state, "loss": float(loss.item())}, partial)
            os.replace(partial, workdir / _RESULT)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
