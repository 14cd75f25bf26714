"""fedlr.fl.client_app without an engine: the handlers are called with hand-built Messages.

Flower's ``@app.train()`` (and ``query``, ``evaluate``) registers the function and returns it
unchanged, so ``train(msg, context)`` is the plain function; one test also goes through
``app(msg, context)``, the path Flower's runtime takes. Node 1007 holds partition 1 (noisy,
flip rate 0.95) of a 4-client federation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict

from fedlr.config import resolve
from fedlr.fl import client_app, keys
from fedlr.tasks import tabular

CFG = resolve(
    overrides={
        "num-clients": 4,
        "noisy-clients": 2,
        "hidden": 16,
        "local-epochs": 1,
        "batch-size": 32,
        "estimator": "loss-margin",
    }
)
NODE_ID, PARTITION = 1007, 1


@pytest.fixture(autouse=True, scope="module")
def restore_threads():
    """The ClientApp sets torch to one thread per process; give the rest of the session back."""
    saved = torch.get_num_threads()
    yield
    torch.set_num_threads(saved)


def context(node_config: dict | None = None) -> Context:
    return Context(
        run_id=1,
        node_id=NODE_ID,
        node_config=node_config
        if node_config is not None
        else {keys.NODE_PARTITION_ID: PARTITION, keys.NODE_NUM_PARTITIONS: 4},
        state=RecordDict(),
        run_config={},
    )


def message(message_type: str, *, with_arrays: bool = True, **config: object) -> Message:
    """What the server sends: the run config (+ per-message keys), and the global model."""
    content = RecordDict({keys.CONFIG: ConfigRecord({**CFG, **config})})
    if with_arrays:
        content[keys.ARRAYS] = ArrayRecord(tabular.build_model(CFG, seed=11).state_dict())
    return Message(content, dst_node_id=NODE_ID, message_type=message_type)


def train_message(**config: object) -> Message:
    return message(
        MessageType.TRAIN,
        **{keys.LR: 0.05, keys.SERVER_ROUND: 3, keys.ESTIMATE_NOISE: False, **config},
    )


def test_the_handlers_are_registered_and_returned_unchanged():
    registered = client_app.app._registered_funcs
    assert {"query.default", "train.default", "evaluate.default"} <= set(registered)
    assert callable(client_app.train) and client_app.train.__name__ == "train"


def test_query_describes_the_client():
    data = tabular.client_data(CFG, PARTITION)
    reply = client_app.query(message(MessageType.QUERY, with_arrays=False), context())

    assert reply.metadata.src_node_id == NODE_ID
    metrics = reply.content.metric_records[keys.METRICS]
    assert metrics[keys.PARTITION_ID] == PARTITION
    assert metrics[keys.NUM_EXAMPLES] == len(data.y_train)
    assert metrics["noise-true"] == data.flip_fraction > 0.5
    assert reply.content.config_records["info"]["role"] == "noisy"


def test_train_reply_holds_the_trained_model_and_metrics():
    msg = train_message()
    sent = msg.content.array_records[keys.ARRAYS].to_torch_state_dict()
    reply = client_app.train(msg, context())

    assert reply.metadata.reply_to_message_id == msg.metadata.message_id
    assert list(reply.content.array_records) == [keys.ARRAYS]
    state = reply.content.array_records[keys.ARRAYS].to_torch_state_dict()
    assert list(state) == list(tabular.build_model(CFG).state_dict())
    assert all(torch.isfinite(v).all() for v in state.values())
    assert any(not torch.equal(state[k], sent[k]) for k in state)  # it trained

    metrics = reply.content.metric_records[keys.METRICS]
    data = tabular.client_data(CFG, PARTITION)
    assert set(metrics) == {
        keys.NUM_EXAMPLES,
        keys.PARTITION_ID,
        keys.TRAIN_LOSS,
        keys.NOISE_ESTIMATE,
    }
    assert metrics[keys.NUM_EXAMPLES] == len(data.y_train)
    assert metrics[keys.PARTITION_ID] == PARTITION
    # train_loss is q-FFL's F_k: the loss of the *received* model on the client's train split
    model = tabular.build_model(CFG, seed=11)
    assert metrics[keys.TRAIN_LOSS] == pytest.approx(
        tabular.evaluate(model, data.x_train, data.y_train)[0]
    )
    assert metrics[keys.NOISE_ESTIMATE] == -1.0  # estimate-noise is false


def test_train_applies_the_lr_sent_to_this_client():
    sent = train_message().content.array_records[keys.ARRAYS].to_torch_state_dict()

    def moved(lr: float) -> float:
        reply = client_app.train(train_message(**{keys.LR: lr}), context())
        state = reply.content.array_records[keys.ARRAYS].to_torch_state_dict()
        return math.sqrt(sum(float(((state[k] - sent[k]) ** 2).sum()) for k in state))

    assert moved(0.001) < moved(0.05)


@pytest.mark.parametrize("estimator", ["loss-margin", "oracle"])
def test_train_estimates_noise_when_asked(estimator):
    msg = train_message(**{keys.ESTIMATE_NOISE: True, "estimator": estimator})
    estimate = client_app.train(msg, context()).content.metric_records[keys.METRICS][
        keys.NOISE_ESTIMATE
    ]
    assert math.isfinite(estimate) and estimate >= 0.0
    if estimator == "oracle":
        assert estimate == tabular.client_data(CFG, PARTITION).flip_fraction


def test_identical_train_messages_get_identical_replies():
    replies = [client_app.train(train_message(), context()) for _ in range(2)]
    states = [r.content.array_records[keys.ARRAYS].to_numpy_ndarrays() for r in replies]
    for a, b in zip(*states, strict=True):
        np.testing.assert_array_equal(a, b)
    metrics = [dict(r.content.metric_records[keys.METRICS]) for r in replies]
    assert metrics[0] == metrics[1]


def test_a_different_round_shuffles_differently():
    states = [
        client_app.train(train_message(**{keys.SERVER_ROUND: r}), context())
        .content.array_records[keys.ARRAYS]
        .to_numpy_ndarrays()
        for r in (3, 4)
    ]
    assert any(not np.array_equal(a, b) for a, b in zip(*states, strict=True))


def test_evaluate_reports_accuracy_on_the_clean_test_split():
    reply = client_app.evaluate(message(MessageType.EVALUATE), context())
    metrics = reply.content.metric_records[keys.METRICS]
    data = tabular.client_data(CFG, PARTITION)
    assert 0.0 <= metrics[keys.ACCURACY] <= 1.0
    assert metrics[keys.NUM_EXAMPLES] == len(data.y_test)
    assert metrics[keys.PARTITION_ID] == PARTITION
    loss, accuracy = tabular.evaluate(tabular.build_model(CFG, seed=11), data.x_test, data.y_test)
    assert metrics[keys.ACCURACY] == pytest.approx(accuracy)
    assert metrics[keys.EVAL_LOSS] == pytest.approx(loss)


def test_the_client_app_routes_by_message_type():
    reply = client_app.app(message(MessageType.EVALUATE), context())
    assert keys.ACCURACY in reply.content.metric_records[keys.METRICS]


@pytest.mark.parametrize("handler", [client_app.query, client_app.train, client_app.evaluate])
def test_a_node_without_partition_id_fails_with_the_fix(handler):
    with pytest.raises(ValueError, match="--node-config"):
        handler(train_message(), context(node_config={keys.NODE_NUM_PARTITIONS: 4}))


def test_a_partition_id_out_of_range_names_the_key():
    with pytest.raises(ValueError, match="partition-id"):
        client_app.train(train_message(), context(node_config={keys.NODE_PARTITION_ID: 4}))


def test_a_client_asked_for_cuda_without_a_gpu_fails_naming_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="^device: expected auto or cpu on a machine without"):
        client_app.train(train_message(device="cuda"), context())


@pytest.mark.slow
def test_ddp_procs_2_trains_on_the_global_batch_at_the_scaled_rate():
    # Two gloo processes with batch-size 32 each = one process with batch 64, at Adam's
    # square-root rate for twice the batch: 0.01 * sqrt(64 / 32).
    reply = client_app.train(
        train_message(**{"ddp-procs": 2, "optimizer": "adam", keys.LR: 0.01}), context()
    )
    state = reply.content.array_records[keys.ARRAYS].to_torch_state_dict()

    data = tabular.client_data(CFG, PARTITION)
    seed = int(np.random.SeedSequence([CFG["seed"], PARTITION, 3]).generate_state(1)[0])
    expected = tabular.build_model(CFG, seed=11)
    tabular.train_local(
        expected, data, lr=0.01 * math.sqrt(2), epochs=1, batch_size=64, optimizer="adam",
        seed=seed,
    )  # fmt: skip
    for name, value in expected.state_dict().items():
        torch.testing.assert_close(state[name], value, rtol=0, atol=1e-5)
    assert reply.content.metric_records[keys.METRICS][keys.NUM_EXAMPLES] == len(data.y_train)
