"""fedlr.fl.gate: Fleet API calls pass unchanged, everything else is refused before the SuperLink.

The SuperLink is an httpx mock transport that records what reaches it. The gate is driven with
hand-built ASGI scopes, as uvicorn builds them from the request line (``raw_path`` as sent,
``path`` percent-decoded and not normalised): an HTTP client library would normalise
``/v1/fleet/../control`` before the gate ever saw it, which is exactly what an attacker's raw
request does not do. tests/test_launch.py runs the real gate in front of a real SuperLink.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from fedlr.fl.gate import REFUSED, make_app

SIGNED = {
    "flwr-public-key": "a2V5",
    "flwr-timestamp": "2026-12-05T07:00:00+00:00",
    "flwr-signature": "c2ln",
}
PEER = "203.0.113.7"


class Reply:
    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status, self.body = status, body
        self.headers = {k.decode().lower(): v.decode() for k, v in headers}


def call(
    app: Any,
    raw_target: bytes,
    *,
    method: str = "POST",
    body: bytes = b"x",
    headers: dict[str, str] | None = None,
) -> Reply:
    """One request, as uvicorn hands it to the app: raw path as sent, path decoded only."""
    raw_path, _, query = raw_target.partition(b"?")
    fields = {"host": "gate:9092", "content-length": str(len(body)), **(headers or {})}
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "https",
        "path": unquote(raw_path.decode("ascii")),
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in fields.items()],
        "client": (PEER, 5000),
        "server": ("0.0.0.0", 9092),
    }
    chunks = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict] = []

    async def receive() -> dict:
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return Reply(start["status"], start.get("headers", []), content)


def gate(
    max_body: int = 1024, fail: bool = False, signed: bool = True
) -> tuple[Any, list[httpx.Request]]:
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
    return make_app(upstream, max_body, signed=signed), seen


def test_a_fleet_call_reaches_the_superlink_unchanged_and_its_answer_comes_back():
    app, seen = gate()
    spoofed = {**SIGNED, "x-forwarded-for": "10.0.0.1", "forwarded": "for=10.0.0.1"}
    reply = call(app, b"/v1/fleet/pull-messages", body=b"\x00\x01proto", headers=spoofed)
    assert reply.status == 412 and reply.body == b"reply:\x00\x01proto"
    assert reply.headers["content-type"] == "application/x"
    (request,) = seen
    assert request.url.raw_path == b"/v1/fleet/pull-messages"
    assert request.content == b"\x00\x01proto"
    for name, value in SIGNED.items():  # the node's signature still verifies at the SuperLink
        assert request.headers[name] == value
    # the peer as the gate saw it, never what the client claimed
    assert request.headers.get_list("x-forwarded-for") == [PEER]
    assert "forwarded" not in request.headers


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("POST", b"/v1/control/register-node"),  # a stranger's key
        ("POST", b"/v1/control/list-runs"),  # flwr ls
        ("POST", b"/v1/control/start-run"),
        ("POST", b"/v1/runtime/pull-task-input"),  # the ServerApp's API
        ("GET", b"/v1/fleet/pull-messages"),  # Fleet calls are POSTs
        ("POST", b"/v1/fleet"),
        ("POST", b"/v1/fleet/"),
        ("GET", b"/"),
        # spellings that an HTTP client would normalise into the Control or runtime API
        ("POST", b"/v1/fleet/../control/list-runs"),
        ("POST", b"/v1/fleet/%2e%2e/control/list-runs"),
        ("POST", b"/v1/fleet/.%2e/control/list-runs"),
        ("POST", b"/v1/fleet/..%2Fcontrol/list-runs"),
        ("POST", b"/v1/fleet/../../v1/control/register-node"),
        ("POST", b"/v1/fleet/./../runtime/get-nodes"),
        ("POST", b"/v1/fleet//../control/start-run"),
        ("POST", b"/v1/fleet/%70ull-messages"),  # percent-encoded, even if harmless
        ("POST", b"/v1/fleet/pull-messages/"),
        ("POST", b"/v1/fleet/pull-messages?x=/../../control"),  # no query string
        ("POST", b"/v1/fleet/pull-messages%0Aforged log line"),
    ],
)
def test_everything_else_is_refused_before_the_superlink(method, target, caplog):
    app, seen = gate()
    reply = call(app, target, method=method, headers=SIGNED)
    assert reply.status == 403 and reply.body.decode() == REFUSED
    assert seen == []
    refusals = [r.getMessage() for r in caplog.records if "gate: refused" in r.getMessage()]
    assert len(refusals) == 1 and f"from {PEER}" in refusals[0]
    assert "\n" not in refusals[0]  # the path is logged quoted: no forged log lines


def test_with_node_auth_a_call_without_the_signature_headers_is_refused():
    app, seen = gate(signed=True)
    for missing in SIGNED:
        headers = {k: v for k, v in SIGNED.items() if k != missing}
        assert call(app, b"/v1/fleet/activate-node", headers=headers).status == 403
    assert seen == []
    unsigned, seen = gate(signed=False)  # a SuperLink without node auth (--insecure)
    assert call(unsigned, b"/v1/fleet/activate-node").status == 412 and len(seen) == 1


def test_a_body_over_the_bound_is_refused_with_413():
    app, seen = gate(max_body=8)
    assert call(app, b"/v1/fleet/push-object", body=b"x" * 9, headers=SIGNED).status == 413
    # a declared length over the bound is refused before the body is read
    declared = {**SIGNED, "content-length": str(2**40)}
    assert call(app, b"/v1/fleet/push-object", body=b"", headers=declared).status == 413
    assert seen == []
    assert call(app, b"/v1/fleet/push-object", body=b"x" * 8, headers=SIGNED).status == 412


def test_a_superlink_that_does_not_answer_gives_502():
    app, _ = gate(fail=True)
    reply = call(app, b"/v1/fleet/send-node-heartbeat", headers=SIGNED)
    assert reply.status == 502 and b"did not answer" in reply.body
