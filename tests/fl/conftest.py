"""Shared fakes for the Flower-side tests: a Grid that only lists nodes, and train replies.

No simulation engine runs: a strategy's ``configure_train`` is called with :class:`FakeGrid`,
and each reply is built as Flower's ClientApp builds it, ``Message(content, reply_to=msg)``, so
its metadata (``src_node_id`` = the instruction's ``dst_node_id``) is what the strategy would see.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedlr.fl import keys
from fedlr.fl.inprocess import InProcessGrid, Killed  # noqa: F401  (the tests' grid)
from fedlr.fl.strategy import ClientInfo, PerClientRates

SUPERLINK_NODE_ID = 1  # flwr.common.constant.SUPERLINK_NODE_ID


class FakeGrid:
    """The one Grid method a FedAvg-family ``configure_train`` calls: ``get_node_ids``."""

    def __init__(self, node_ids: Iterable[int]) -> None:
        self.node_ids = list(node_ids)

    def get_node_ids(self) -> list[int]:
        return list(self.node_ids)


@pytest.fixture(autouse=True, scope="session")
def task_identity():
    """Flower's runtime sets the process's identity before app code builds a Message."""
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


@pytest.fixture(scope="session")
def make_clients() -> Callable[..., list[ClientInfo]]:
    """``make_clients(num_examples, noise_true=None, node_ids=None)``: one ClientInfo per entry.

    Partition ids are ``0..K-1``; node ids default to ``1000 + 7 * pid`` (never equal to the
    partition id, so a strategy that confuses the two fails).
    """

    def make(
        num_examples: Sequence[int],
        noise_true: Sequence[float] | None = None,
        node_ids: Sequence[int] | None = None,
    ) -> list[ClientInfo]:
        k = len(num_examples)
        noise_true = noise_true if noise_true is not None else [0.0] * k
        node_ids = node_ids if node_ids is not None else [1000 + 7 * pid for pid in range(k)]
        return [
            ClientInfo(
                node_id=node_ids[pid],
                partition_id=pid,
                num_examples=num_examples[pid],
                noise_true=noise_true[pid],
                role="noisy" if noise_true[pid] > 0 else "clean",
            )
            for pid in range(k)
        ]

    return make


@pytest.fixture(scope="session")
def fake_grid() -> Callable[[Iterable[ClientInfo]], FakeGrid]:
    """``fake_grid(clients)``: a Grid whose ``get_node_ids()`` lists the clients' node ids."""
    return lambda clients: FakeGrid(c.node_id for c in clients)


@pytest.fixture(scope="session")
def train_reply() -> Callable[..., Message]:
    """``train_reply(msg, weights, ...)``: the reply fedlr's ClientApp would send to ``msg``.

    ``noise_estimate=None`` or ``train_loss=None`` leaves that key out of the MetricRecord.
    """

    def make(
        msg: Message,
        weights: Sequence[Sequence[float]],
        *,
        num_examples: int,
        partition_id: int,
        train_loss: float | None = 1.0,
        noise_estimate: float | None = 0.0,
    ) -> Message:
        metrics: dict[str, int | float] = {
            keys.NUM_EXAMPLES: num_examples,
            keys.PARTITION_ID: partition_id,
        }
        if train_loss is not None:
            metrics[keys.TRAIN_LOSS] = train_loss
        if noise_estimate is not None:
            metrics[keys.NOISE_ESTIMATE] = noise_estimate
        arrays = ArrayRecord([np.asarray(w, dtype=np.float64) for w in weights])
        content = RecordDict({keys.ARRAYS: arrays, keys.METRICS: MetricRecord(metrics)})
        return Message(content, reply_to=msg)

    return make


@pytest.fixture(scope="session")
def run_round(fake_grid, train_reply):
    """``run_round(strategy, r, answers, arrays=None, config=None)``: one round, no engine.

    ``answers`` maps partition id -> dict(weights=..., and optionally noise_estimate,
    train_loss); sampled clients missing from it send no reply. Returns ``(messages, replies,
    (arrays, metrics))`` where ``messages`` maps partition id -> the Message sent to it.
    """

    def run(
        strategy: PerClientRates,
        server_round: int,
        answers: Mapping[int, Mapping[str, object]],
        arrays: ArrayRecord | None = None,
        config: Mapping[str, object] | None = None,
    ):
        clients = list(strategy.clients.values())
        arrays = arrays if arrays is not None else ArrayRecord([np.zeros(2)])
        config_record = ConfigRecord(dict(config if config is not None else strategy.cfg))
        sent = strategy.configure_train(server_round, arrays, config_record, fake_grid(clients))
        messages = {strategy.clients[m.metadata.dst_node_id].partition_id: m for m in sent}
        replies = [
            train_reply(
                messages[pid],
                answer["weights"],
                num_examples=strategy.by_partition[pid].num_examples,
                partition_id=pid,
                **{k: v for k, v in answer.items() if k != "weights"},
            )
            for pid, answer in answers.items()
            if pid in messages
        ]
        return messages, replies, strategy.aggregate_train(server_round, replies)

    return run
