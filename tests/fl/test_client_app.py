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
    assert metrics[keys.BATCH_SIZE] == 32  # batch-size: every client's when no spread is set


def test_query_reports_the_clients_own_batch_size():
    spread = {**CFG, "client-batch-sizes": "8,16,64,128"}
    reply = client_app.query(message(MessageType.QUERY, with_arrays=False, **spread), context())
    assert reply.content.metric_records[keys.METRICS][keys.BATCH_SIZE] == 16  # partition 1
    # a SuperNode's node-config batch-size (its hardware) wins over the run config
    node = {keys.NODE_PARTITION_ID: PARTITION, keys.NODE_NUM_PARTITIONS: 4, "batch-size": 48}
    reply = client_app.query(message(MessageType.QUERY, with_arrays=False), context(node))
    assert reply.content.metric_records[keys.METRICS][keys.BATCH_SIZE] == 48


def test_a_bad_node_config_batch_size_names_the_key():
    node = {keys.NODE_PARTITION_ID: PARTITION, keys.NODE_NUM_PARTITIONS: 4, "batch-size": 0}
    with pytest.raises(ValueError, match="node_config: batch-size: expected an integer >= 1"):
        client_app.query(message(MessageType.QUERY, with_arrays=False), context(node))


def test_train_uses_the_batch_size_sent_to_this_client():
    data = tabular.client_data(CFG, PARTITION)
    reply = client_app.train(train_message(**{keys.CLIENT_BATCH_SIZE: 8}), context())
    assert reply.content.metric_records[keys.METRICS][keys.STEPS] == math.ceil(data.num_train / 8)
    other = client_app.train(train_message(**{keys.CLIENT_BATCH_SIZE: 64}), context())
    first = reply.content.array_records[keys.ARRAYS].to_torch_state_dict()
    second = other.content.array_records[keys.ARRAYS].to_torch_state_dict()
    assert any(not torch.equal(first[k], second[k]) for k in first)


def test_train_sends_the_gradient_at_the_received_weights_when_asked():
    msg = train_message(**{keys.MEASURE_NOISE_SCALE: True, keys.CLIENT_BATCH_SIZE: 24})
    reply = client_app.train(msg, context())
    metrics = reply.content.metric_records[keys.METRICS]
    assert metrics[keys.GRADIENT_BATCH] == 24
    (flat,) = reply.content.array_records[keys.GRADIENT].to_numpy_ndarrays()

    # the same gradient by hand: the received model, the same seeded batch, no step taken
    model = tabular.build_model(CFG, seed=11)
    data = tabular.client_data(CFG, PARTITION)
    seed = int(np.random.SeedSequence([CFG["seed"], PARTITION, 3]).generate_state(1)[0])
    expected = tabular.mean_gradient(model, data, 24, seed=seed ^ 0x6E5)
    assert flat.shape == (sum(p.numel() for p in model.parameters()),)
    # the ClientApp trains where device=auto puts it (a GPU if any), the check runs on the CPU:
    # equal up to float32 rounding (bit for bit on a CPU-only machine)
    np.testing.assert_allclose(flat, expected, rtol=1e-5, atol=1e-7)
    # the training itself is unchanged by the measurement (its batches have their own seed)
    plain = client_app.train(train_message(**{keys.CLIENT_BATCH_SIZE: 24}), context())
    assert keys.GRADIENT not in plain.content.array_records
    a = reply.content.array_records[keys.ARRAYS].to_torch_state_dict()
    b = plain.content.array_records[keys.ARRAYS].to_torch_state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_mean_gradient_is_the_gradient_of_the_mean_loss_over_the_batch():
    model = tabular.build_model(CFG, seed=11)
    data = tabular.client_data(CFG, PARTITION)
    flat = tabular.mean_gradient(model, data, data.num_train + 100, seed=0)  # all examples
    x = torch.tensor(data.x_train, dtype=torch.float32)
    y = torch.tensor(data.y_train, dtype=torch.int64)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    np.testing.assert_allclose(
        flat, torch.cat([g.reshape(-1) for g in grads]).numpy(), rtol=1e-5, atol=1e-7
    )
    assert all(p.grad is None for p in model.parameters())  # leaves no gradient behind


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_weight_decay_sent_to_this_client_shrinks_the_weights(optimizer):
    # zero rate for the loss is impossible, so compare two runs that differ only in decay
    cfg = {"optimizer": optimizer, keys.LR: 0.01}
    plain = client_app.train(train_message(**cfg), context())
    decayed = client_app.train(train_message(**cfg, **{keys.CLIENT_WEIGHT_DECAY: 5.0}), context())
    norm = [
        math.sqrt(
            sum(
                float((v**2).sum())
                for v in r.content.array_records[keys.ARRAYS].to_torch_state_dict().values()
            )
        )
        for r in (plain, decayed)
    ]
    assert norm[1] < 0.9 * norm[0]


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
        keys.STEPS,
    }
    assert metrics[keys.NUM_EXAMPLES] == len(data.y_train)
    assert metrics[keys.STEPS] == math.ceil(len(data.y_train) / 32)  # one epoch of batches of 32
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


def test_evaluate_reports_the_runs_other_metrics_and_nothing_more_by_default():
    from fedlr.metrics import classification

    default = client_app.evaluate(message(MessageType.EVALUATE), context())
    assert set(default.content.metric_records[keys.METRICS]) == {
        keys.NUM_EXAMPLES,
        keys.ACCURACY,
        keys.EVAL_LOSS,
        keys.PARTITION_ID,
    }
    names = "accuracy,balanced-accuracy,auroc,f1,loss"
    reply = client_app.evaluate(message(MessageType.EVALUATE, metrics=names), context())
    metrics = reply.content.metric_records[keys.METRICS]
    # accuracy and the loss are there already (accuracy, eval-loss); the others join them
    assert set(metrics) - set(default.content.metric_records[keys.METRICS]) == {
        "balanced-accuracy",
        "auroc",
        "f1",
    }
    data = tabular.client_data(CFG, PARTITION)
    log_probs = tabular.log_probs(tabular.build_model(CFG, seed=11), data.x_test)
    expected = classification.scores(
        log_probs, data.y_test, ["balanced-accuracy", "auroc", "f1"], 10
    )
    assert {name: metrics[name] for name in expected} == pytest.approx(expected)


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


# -- graph task (karate, two clients): per-node reports ----------------------------------------

GRAPH_CFG = resolve(
    overrides={
        "dataset": "karate",
        "num-clients": 2,
        "noisy-clients": 1,
        "hard-clean-clients": 0,
        "graph-split": "random",
        "embedding-dim": 4,
        "hidden": 8,
        "local-epochs": 2,
        "degree-gamma": 1.0,
        "degree-mode": "embedding",
        "strategies": "fedavg,fedavg+degree",
    }
)
GRAPH_CONTEXT = {keys.NODE_PARTITION_ID: PARTITION, keys.NODE_NUM_PARTITIONS: 2}
GRAD_KEYS = (keys.GRAD_DEGREE, keys.GRAD_NORM, keys.GRAD_NORM_SCALED)


def graph_message(message_type: str, **config: object) -> Message:
    from fedlr.tasks import graph

    content = RecordDict({keys.CONFIG: ConfigRecord({**GRAPH_CFG, **config})})
    content[keys.ARRAYS] = ArrayRecord(graph.build_model(GRAPH_CFG, seed=11).state_dict())
    return Message(content, dst_node_id=NODE_ID, message_type=message_type)


def graph_train(**config: object) -> Message:
    msg = graph_message(
        MessageType.TRAIN,
        **{keys.LR: 0.1, keys.SERVER_ROUND: 1, keys.ESTIMATE_NOISE: False, **config},
    )
    return client_app.train(msg, context(GRAPH_CONTEXT))


def test_graph_train_reports_one_diagnostic_value_per_node_of_the_client():
    from fedlr.tasks import graph

    client = graph.client_data(GRAPH_CFG, PARTITION)
    reply = graph_train()

    metrics = reply.content.metric_records[keys.METRICS]
    assert set(metrics) == {
        keys.NUM_EXAMPLES,
        keys.PARTITION_ID,
        keys.TRAIN_LOSS,
        keys.NOISE_ESTIMATE,
        *GRAD_KEYS,
    }
    n = client.data.num_nodes
    assert 0 < n < 34
    assert [len(metrics[k]) for k in GRAD_KEYS] == [n, n, n]
    assert metrics[keys.GRAD_DEGREE] == client.local_degree.float().tolist()
    assert metrics[keys.NUM_EXAMPLES] == client.num_train
    assert metrics[keys.PARTITION_ID] == PARTITION
    received = graph.build_model(GRAPH_CFG, seed=11)
    expected_norms = graph.gradient_norms_by_node(received, client.data)  # before training
    # the ClientApp may run on a GPU, the check on the CPU: float32 rounding apart
    np.testing.assert_allclose(metrics[keys.GRAD_NORM], expected_norms, rtol=1e-5, atol=1e-7)
    assert metrics[keys.TRAIN_LOSS] == pytest.approx(graph.received_loss(received, client))

    # the table has a row per node of the whole graph; only this client's rows moved
    sent = received.state_dict()["embedding.weight"]
    table = reply.content.array_records[keys.ARRAYS].to_torch_state_dict()["embedding.weight"]
    assert table.shape == (34, 4)
    others = torch.ones(34, dtype=torch.bool)
    others[client.data.n_id] = False
    assert torch.equal(table[others], sent[others])
    assert not torch.equal(table[~others], sent[~others])


def test_graph_train_applies_the_degree_rule_only_when_the_strategy_says_so():
    plain, ruled = graph_train(**{keys.DEGREE_RULE: False}), graph_train(**{keys.DEGREE_RULE: True})
    default = graph_train()  # a message without the key: no rule

    def table(reply: Message) -> torch.Tensor:
        return reply.content.array_records[keys.ARRAYS].to_torch_state_dict()["embedding.weight"]

    assert not torch.equal(table(plain), table(ruled))
    assert torch.equal(table(plain), table(default))
    # the diagnostic is taken at the received weights, whatever the rule
    for key in GRAD_KEYS:
        assert (
            plain.content.metric_records[keys.METRICS][key]
            == ruled.content.metric_records[keys.METRICS][key]
        )


def test_graph_evaluate_reports_each_test_node():
    from fedlr.tasks import graph

    client = graph.client_data(GRAPH_CFG, PARTITION)
    reply = client_app.evaluate(graph_message(MessageType.EVALUATE), context(GRAPH_CONTEXT))

    metrics = reply.content.metric_records[keys.METRICS]
    assert len(metrics[keys.TEST_DEGREE]) == len(metrics[keys.TEST_CORRECT]) == client.num_test
    assert metrics[keys.NUM_EXAMPLES] == client.num_test
    assert metrics[keys.TEST_DEGREE] == client.global_degree[client.data.test_mask].tolist()
    assert set(metrics[keys.TEST_CORRECT]) <= {0, 1}
    correct = metrics[keys.TEST_CORRECT]
    assert metrics[keys.ACCURACY] == pytest.approx(sum(correct) / len(correct))


def test_graph_query_describes_the_client():
    from fedlr.tasks import graph

    client = graph.client_data(GRAPH_CFG, 0)
    msg = graph_message(MessageType.QUERY)
    reply = client_app.query(msg, context({**GRAPH_CONTEXT, keys.NODE_PARTITION_ID: 0}))

    metrics = reply.content.metric_records[keys.METRICS]
    assert metrics[keys.NUM_EXAMPLES] == client.num_train
    assert metrics["noise-true"] == client.flip_fraction > 0
    assert reply.content.config_records["info"]["role"] == "noisy"
