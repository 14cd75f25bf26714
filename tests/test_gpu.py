"""The CUDA paths CI cannot run: marked ``gpu`` and skipped where torch sees no GPU.

``launch/gpu-check.sh`` runs these (``pytest -m gpu``) next to the launches that need a GPU
machine (several SuperNodes per GPU, ``client-gpus`` fractions in simulation). Each compares the
GPU result with the CPU result of the same seeded computation, up to float32 rounding: kernels
differ between devices, so bit equality is not expected.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict

from fedlr.config import resolve
from fedlr.fl import client_app, keys
from fedlr.tasks import ddp, tabular

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU that torch sees"),
]

CFG = resolve(overrides={"num-clients": 4, "noisy-clients": 2, "hidden": 16, "batch-size": 32})
NODE_ID, PARTITION = 1007, 1


def train_reply(device: str) -> dict[str, np.ndarray]:
    """The ClientApp's train reply on ``device`` for one fixed message (round 3, lr 0.05)."""
    config = ConfigRecord(
        {**CFG, "device": device, keys.LR: 0.05, keys.SERVER_ROUND: 3, keys.ESTIMATE_NOISE: True}
    )
    content = RecordDict(
        {
            keys.CONFIG: config,
            keys.ARRAYS: ArrayRecord(tabular.build_model(CFG, seed=11).state_dict()),
        }
    )
    message = Message(content, dst_node_id=NODE_ID, message_type=MessageType.TRAIN)
    context = Context(
        run_id=1,
        node_id=NODE_ID,
        node_config={keys.NODE_PARTITION_ID: PARTITION, keys.NODE_NUM_PARTITIONS: 4},
        state=RecordDict(),
        run_config={},
    )
    reply = client_app.train(message, context)
    assert not reply.has_error()
    arrays = reply.content.array_records[keys.ARRAYS]
    return {name: array.numpy() for name, array in arrays.items()}


def test_client_training_on_cuda_matches_the_cpu():
    on_gpu, on_cpu = train_reply("cuda"), train_reply("cpu")
    start = tabular.build_model(CFG, seed=11).state_dict()
    assert on_gpu.keys() == on_cpu.keys()
    for name in on_cpu:
        np.testing.assert_allclose(on_gpu[name], on_cpu[name], rtol=1e-4, atol=1e-6)
    moved = max(float(np.abs(on_cpu[k] - start[k].numpy()).max()) for k in on_cpu)
    assert moved > 1e-3  # it trained


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DDP with nccl needs two GPUs")
def test_two_nccl_processes_match_one_process_on_the_global_batch():
    data = tabular.client_data(CFG, 3)
    data = dataclasses.replace(data, x_train=data.x_train[:161], y_train=data.y_train[:161])
    settings = dict(lr=0.1, epochs=2, optimizer="sgd", momentum=0.9, seed=7)
    ddp_model, single_model = tabular.build_model(CFG), tabular.build_model(CFG)
    ddp.train_ddp(ddp_model, data, procs=2, batch_size=8, timeout=300, device="cuda", **settings)
    tabular.train_local(single_model, data, batch_size=16, **settings)
    for name, value in single_model.state_dict().items():
        torch.testing.assert_close(
            ddp_model.state_dict()[name].cpu(), value.cpu(), rtol=1e-4, atol=1e-5
        )
