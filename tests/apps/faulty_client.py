"""fedlr's ClientApp, except that training raises on partition 1 (tests/test_launch_faults.py)."""

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedlr.fl import client_app as fedlr_client

app = ClientApp()
app.query()(fedlr_client.query)
app.evaluate()(fedlr_client.evaluate)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Raise on partition 1, train as fedlr does elsewhere."""
    if fedlr_client.partition_id(context) == 1:
        raise RuntimeError("faulty client: training failed on partition 1")
    return fedlr_client.train(msg, context)
