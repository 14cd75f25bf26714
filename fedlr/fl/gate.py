"""A Fleet-only gate in front of a SuperLink: SuperNodes get in, strangers do not.

Flower 1.42's SuperLink serves three APIs on one HTTP port: the Fleet API (SuperNodes), the
Control API (``flwr run``, ``flwr ls``, ``flwr supernode register``) and the ServerApp runtime
API. With TLS and SuperNode authentication on, the Fleet API checks every node's signature and
refuses self-registration, but the Control API has no authentication without OIDC: anyone who
holds the public ``ca.crt`` and reaches the port can register a key of their own and list runs.

The gate closes that. The SuperLink listens on 127.0.0.1 only; the gate listens where SuperNodes
reach it, terminates TLS with the SuperLink's own certificate, forwards ``POST /v1/fleet/...``
(headers and body unchanged, so SuperNode signatures still verify at the SuperLink) and answers
everything else with 403, logged. The operator runs ``flwr`` on the SuperLink's host, against
127.0.0.1.

    fedlr gate --listen 0.0.0.0:9092 --superlink 127.0.0.1:9091 --certs certs/
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

log = logging.getLogger("fedlr.gate")

FLEET_PREFIX = "/v1/fleet/"
REFUSED = "fedlr gate: only the Fleet API (POST /v1/fleet/...) is open here\n"
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
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
    )


def make_app(client: httpx.AsyncClient, max_body: int) -> Starlette:
    """The gate's ASGI app: forwards Fleet API calls to ``client``'s SuperLink, refuses the rest.

    A body over ``max_body`` bytes gets 413; a SuperLink that cannot be reached, 502.
    """

    async def forward(request: Request) -> Response:
        path, peer = request.url.path, request.client.host if request.client else "?"
        if request.method != "POST" or not path.startswith(FLEET_PREFIX):
            log.warning("gate: refused %s %s from %s", request.method, path, peer)
            return PlainTextResponse(REFUSED, status_code=403)
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > max_body:
                    why = "gate: refused %s from %s: body over %d bytes"
                    log.warning(why, path, peer, max_body)
                    return PlainTextResponse(
                        f"fedlr gate: request body over {max_body} bytes\n", status_code=413
                    )
        except ClientDisconnect:
            return Response(status_code=400)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        try:
            reply = await client.post(
                path, params=request.query_params, content=bytes(body), headers=headers
            )
        except httpx.HTTPError as error:
            log.error("gate: the SuperLink did not answer %s: %s", path, error)
            return PlainTextResponse("fedlr gate: the SuperLink did not answer\n", status_code=502)
        out = {k: v for k, v in reply.headers.items() if k.lower() not in _HOP}
        return Response(reply.content, status_code=reply.status_code, headers=out)

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    return Starlette(routes=[Route("/{path:path}", forward, methods=methods)])


def serve(
    listen: str,
    superlink: str,
    certs: Path | None,
    *,
    max_body: int = 2**31,
    timeout: float = 600.0,
) -> None:
    """Run the gate until stopped (SIGINT or SIGTERM). ``certs`` None: no TLS on either side."""
    import uvicorn

    host, _, port = listen.rpartition(":")
    ca = certs / "ca.crt" if certs is not None else None
    app = make_app(upstream_client(superlink, ca, timeout), max_body)
    certfile = str(certs / "server.pem") if certs is not None else None
    keyfile = str(certs / "server.key") if certs is not None else None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    uvicorn.run(
        app,
        host=host.strip("[]"),
        port=int(port),
        log_level="warning",
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
    )
