"""Your own Flower app with fedlr's noise-adaptive rates: a ServerApp and a ClientApp in one file.

Three hospitals fit a logistic regression on their own numpy arrays; hospital 2's labels are 40%
flipped. Each ClientApp estimates its label noise under the weights it receives
(:func:`fedlr.client.estimate_noise`), trains at the rate the server sent (``config["lr"]``) and
replies its example count, its estimate and its own metrics. fedlr's strategy turns the
estimates into rates after the warm-up rounds: the noisy hospital takes the smallest steps.
Nothing else of fedlr is involved: no run config, no query round, no fedlr ClientApp.

Run it on Flower's simulation engine (Ray)::

    python examples/flower_app/app.py

It prints one JSON line per round (each node's rate and estimate, and the aggregated metrics).
"""

from __future__ import annotations

import json

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from torch import nn

from fedlr.client import estimate_noise
from fedlr.fl import NoiseAdaptiveFedAvg

NUM_CLIENTS = 3
NOISY_CLIENT = 2  # the partition whose labels are flipped
NUM_ROUNDS = 6


def load_data(partition_id: int) -> tuple[np.ndarray, np.ndarray]:
    """One hospital's table: 400 rows of 10 features, two classes, seeded by its partition."""
    rng = np.random.default_rng(partition_id)
    x = rng.normal(size=(400, 10)).astype(np.float32)
    y = (x @ np.linspace(1.0, -1.0, 10) > 0).astype(np.int64)
    if partition_id == NOISY_CLIENT:
        flip = rng.random(len(y)) < 0.4
        y[flip] = 1 - y[flip]
    return x, y


def make_model() -> nn.Module:
    """Logistic regression over two classes (softmax is in the loss)."""
    torch.manual_seed(0)
    return nn.Linear(10, 2)


client = ClientApp()


@client.train()
def train(msg: Message, context: Context) -> Message:
    """Estimate the noise at the received weights, then one epoch of SGD at the sent rate."""
    x, y = load_data(int(context.node_config["partition-id"]))
    model = make_model()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    estimate = estimate_noise(model, x, y)  # before training, with the received weights
    lr = float(msg.content["config"]["lr"])
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    generator = torch.Generator().manual_seed(int(msg.content["config"]["server-round"]))
    for batch in torch.randperm(len(x), generator=generator).split(32):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(xt[batch]), yt[batch]).backward()
        optimizer.step()
    with torch.no_grad():
        train_accuracy = float((model(xt).argmax(1) == yt).float().mean())
    metrics = MetricRecord(
        {
            "num-examples": len(x),
            "noise-estimate": estimate,
            "train-accuracy": train_accuracy,  # your own metrics pass through
            "hospital": int(context.node_config["partition-id"]),
        }
    )
    content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics})
    return Message(content, reply_to=msg)


server = ServerApp()
RESULT: dict[str, object] = {}  # what the last run learnt, for whoever imported this module


@server.main()
def main(grid: Grid, context: Context) -> None:
    """FedAvg with fedlr's per-client rates, as any Flower strategy is run."""
    strategy = NoiseAdaptiveFedAvg(lr=0.1, fraction_evaluate=0.0)
    result = strategy.start(
        grid=grid, initial_arrays=ArrayRecord(make_model().state_dict()), num_rounds=NUM_ROUNDS
    )
    for server_round, log in sorted(strategy.rounds.items()):
        line = {
            "round": server_round,
            "lr": {str(node): rate for node, rate in log.lr.items()},
            "noise_estimate": {str(node): est for node, est in log.noise_estimate.items()},
            "train_metrics": {str(node): m for node, m in log.train_metrics.items()},
            "aggregated": dict(result.train_metrics_clientapp.get(server_round, {})),
        }
        print(json.dumps(line), flush=True)
    RESULT.update(strategy=strategy, result=result)


if __name__ == "__main__":
    from flwr.simulation import run_simulation

    run_simulation(server_app=server, client_app=client, num_supernodes=NUM_CLIENTS)
