"""A Fleet-only gate in front of a SuperLink: SuperNodes get in, strangers do not.

Flower 1.42's SuperLink serves three APIs on one HTTP port: the Fleet API (SuperNodes), the
Control API (``flwr run``, ``flwr ls``, ``flwr supernode register``) and the ServerApp runtime
API. With TLS and SuperNode authentication on, the Fleet API checks every node's signature and
refuses self-registration, but the Control API has no authentication without OIDC: anyone who
holds the public ``ca.crt`` and reaches the port can register a key of their own and list runs.

The gate closes that. The SuperLink listens on 127.0.0.1 only; the gate listens where SuperNodes
reach it, terminates TLS with the SuperLink's own certificate, forwards ``POST
/v1/fleet/<call>`` (headers and body unchanged, so SuperNode signatures still verify at the
SuperLink) and answers everything else with 403, logged. The path must be one plain segment of
lowercase letters and dashes after ``/v1/fleet/``, exactly as sent (no percent-encoding, no dot
segments, no query), so no spelling of a path can reach the Control or runtime API. With TLS,
a request must also carry the three signature headers every SuperNode sends under node
authentication, and its declared size must fit, before its body is read. The operator runs
``flwr`` on the SuperLink's host, against 127.0.0.1.

    fedlr gate --listen 0.0.0.0:9092 --superlink 127.0.0.1:9091 --certs certs/
"""

from __future__ import annotations

import logging
import re
import ssl
from pathlib import Path

import httpx
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("fedlr.gate")

FLEET_PATH = re.compile(r"/v1/fleet/[a-z]+(?:-[a-z]+)*")
REFUSED = "fedlr gate: only the Fleet API (POST /v1/fleet/...) is open here\n"
# What flwr's NodeAuthHttpInterceptor adds to every Fleet call under SuperNode authentication.
SIGNATURE_HEADERS = ("flwr-public-key", "flwr-timestamp", "flwr-signature")
# Client-supplied proxy headers are dropped: the gate states the peer itself.
_SPOOFABLE = frozenset(
    {"forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip"}
)
# Hop-by-hop headers (RFC 9110 section 7.6.1) and those httpx or uvicorn set themselves.
_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-connection",
        "host",
        "content-length",
        "content-encoding",
        "date",
        "server",
    }
)


def upstream_client(superlink: str, ca: Path | None, timeout: float) -> httpx.AsyncClient:
    """An HTTP client for the SuperLink at ``host:port``: TLS verified with ``ca``, or plain."""
    verify: ssl.SSLContext | bool = False
    scheme = "http"
    if ca is not None:
        verify, scheme = ssl.create_default_context(cafile=str(ca)), "https"
    return httpx.AsyncClient(
        base_url=f"{scheme}://{superlink}",
        verify=verify,
        timeout=httpx.Timeout(timeout),
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
    )


def _refusal(request: Request) -> str | None:
    """Why ``request`` may not pass (None: it may): method, exact path, query, headers."""
    raw = request.scope.get("raw_path") or request.scope["path"].encode()
    if request.method != "POST":
        return "not a POST"
    if not FLEET_PATH.fullmatch(request.scope["path"]) or raw != request.scope["path"].encode():
        return "not a Fleet API path"
    if request.scope.get("query_string"):
        return "a query string"
    return None


def make_app(client: httpx.AsyncClient, max_body: int, *, signed: bool = False) -> ASGIApp:
    """The gate's ASGI app: forwards Fleet API calls to ``client``'s SuperLink, refuses the rest.

    A path other than ``/v1/fleet/<call>`` as sent, another method or a query string gets 403;
    with ``signed``, so does a request without flwr's signature headers. A body over
    ``max_body`` bytes gets 413 (by its Content-Length before it is read, else as it arrives);
    a SuperLink that cannot be reached, 502.
    """

    async def forward(request: Request) -> Response:
        peer = request.client.host if request.client else "?"
        why = _refusal(request)
        if why is None and signed and not all(h in request.headers for h in SIGNATURE_HEADERS):
            why = "no SuperNode signature headers"
        if why is not None:
            log.warning(
                "gate: refused %s %r from %s: %s", request.method, request.scope["path"], peer, why
            )
            return PlainTextResponse(REFUSED, status_code=403)
        path = request.scope["path"]
        declared = request.headers.get("content-length", "0")
        if not declared.isdigit() or int(declared) > max_body:
            log.warning("gate: refused %r from %s: content-length %r", path, peer, declared[:20])
            return PlainTextResponse(
                f"fedlr gate: request body over {max_body} bytes\n", status_code=413
            )
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > max_body:
                    log.warning(
                        "gate: refused %r from %s: body over %d bytes", path, peer, max_body
                    )
                    return PlainTextResponse(
                        f"fedlr gate: request body over {max_body} bytes\n", status_code=413
                    )
        except ClientDisconnect:
            return Response(status_code=400)
        headers = [
            (k, v) for k, v in request.headers.items() if k not in _HOP and k not in _SPOOFABLE
        ]
        headers.append(("x-forwarded-for", peer))
        try:
            reply = await client.post(path, content=bytes(body), headers=headers)
        except httpx.HTTPError as error:
            log.error("gate: the SuperLink did not answer %r: %s", path, error)
            return PlainTextResponse("fedlr gate: the SuperLink did not answer\n", status_code=502)
        response = Response(reply.content, status_code=reply.status_code)
        for key, value in reply.headers.multi_items():
            if key.lower() not in _HOP:
                response.headers.append(key, value)
        return response

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        # every HTTP request, whatever its path (a router would 404 some unlogged), goes to
        # forward(); lifespan is acknowledged; anything else (websockets) is closed
        if scope["type"] == "http":
            response = await forward(Request(scope, receive))
            await response(scope, receive, send)
        elif scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})

    return app


def serve(
    listen: str,
    superlink: str,
    certs: Path | None,
    *,
    max_body: int = 64 * 2**20,
    timeout: float = 600.0,
    concurrency: int = 256,
) -> None:
    """Run the gate until stopped (SIGINT or SIGTERM). ``certs`` None: no TLS on either side.

    With ``certs`` every request must carry flwr's SuperNode signature headers (the SuperLink
    runs with node authentication). At most ``concurrency`` connections at once (503 beyond).
    """
    import uvicorn

    host, _, port = listen.rpartition(":")
    ca = certs / "ca.crt" if certs is not None else None
    app = make_app(upstream_client(superlink, ca, timeout), max_body, signed=certs is not None)
    certfile = str(certs / "server.pem") if certs is not None else None
    keyfile = str(certs / "server.key") if certs is not None else None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    uvicorn.run(
        app,
        host=host.strip("[]"),
        port=int(port),
        log_level="warning",
        limit_concurrency=concurrency,
        timeout_keep_alive=30,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
    )
