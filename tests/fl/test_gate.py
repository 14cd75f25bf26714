"""fedlr.fl.gate: Fleet API calls pass unchanged, everything else is refused before the SuperLink.

The SuperLink is an httpx mock transport that records what reaches it; the gate is driven
in-process through httpx's ASGI transport. tests/test_launch.py runs the real gate in front of
a real SuperLink.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from fedlr.fl.gate import REFUSED, make_app

SIGNED = {
    "flwr-public-key": "a2V5",
    "flwr-timestamp": "2026-12-05T07:00:00+00:00",
    "flwr-signature": "c2ln",
}


class Client:
    """A synchronous face over the gate's ASGI app."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, client=("203.0.113.7", 5000))
            async with httpx.AsyncClient(transport=transport, base_url="https://gate") as c:
                return await c.request(method, path, **kwargs)

        return asyncio.run(go())

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)


def gate(max_body: int = 1024, fail: bool = False) -> tuple[Client, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def superlink(request: httpx.Request) -> httpx.Response:
        if fail:
            raise httpx.ConnectError("refused", request=request)
        seen.append(request)
        return httpx.Response(
            412, content=b"reply:" + request.content, headers={"content-type": "application/x"}
        )

    upstream = httpx.AsyncClient(
        transport=httpx.MockTransport(superlink), base_url="https://127.0.0.1:9091"
    )
    return Client(make_app(upstream, max_body)), seen


def test_a_fleet_call_reaches_the_superlink_unchanged_and_its_answer_comes_back():
    client, seen = gate()
    reply = client.post("/v1/fleet/pull-messages?x=1", content=b"\x00\x01proto", headers=SIGNED)
    assert reply.status_code == 412 and reply.content == b"reply:\x00\x01proto"
    assert reply.headers["content-type"] == "application/x"
    (request,) = seen
    assert request.url.path == "/v1/fleet/pull-messages" and request.url.params["x"] == "1"
    assert request.content == b"\x00\x01proto"
    for name, value in SIGNED.items():  # the node's signature still verifies at the SuperLink
        assert request.headers[name] == value


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/control/register-node"),  # a stranger's key
        ("POST", "/v1/control/list-runs"),  # flwr ls
        ("POST", "/v1/control/start-run"),
        ("POST", "/v1/runtime/pull-task-input"),  # the ServerApp's API
        ("GET", "/v1/fleet/pull-messages"),  # Fleet calls are POSTs
        ("POST", "/v1/fleet"),
        ("POST", "/v1/fleet/../control/list-runs"),
        ("GET", "/"),
    ],
)
def test_everything_else_is_refused_before_the_superlink(method, path, caplog):
    client, seen = gate()
    reply = client.request(method, path, content=b"x")
    assert reply.status_code == 403 and reply.text == REFUSED
    assert seen == []
    assert f"gate: refused {method} " in caplog.text and "from 203.0.113.7" in caplog.text


def test_a_body_over_the_bound_is_refused_with_413():
    client, seen = gate(max_body=8)
    reply = client.post("/v1/fleet/push-object", content=b"x" * 9)
    assert reply.status_code == 413 and "over 8 bytes" in reply.text
    assert seen == []
    assert client.post("/v1/fleet/push-object", content=b"x" * 8).status_code == 412


def test_a_superlink_that_does_not_answer_gives_502():
    client, _ = gate(fail=True)
    reply = client.post("/v1/fleet/send-node-heartbeat", content=b"x")
    assert reply.status_code == 502 and "did not answer" in reply.text
