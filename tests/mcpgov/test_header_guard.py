"""The POST guard's header/body check (``mcpgov.serve._body_matches_headers``), on raw ASGI headers."""

from __future__ import annotations

import json

import pytest

from mcpgov.serve import _body_matches_headers

CALL = json.dumps(
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "time__now", "arguments": {}}}
).encode()


def scope(*headers: tuple[bytes, bytes]) -> dict:
    return {"headers": [(b"content-type", b"application/json"), *headers]}


@pytest.mark.parametrize(
    "headers",
    [
        (),
        ((b"mcp-method", b"tools/call"),),
        ((b"mcp-method", b"tools/call"), (b"mcp-name", b"time__now")),
        ((b"mcp-protocol-version", b"2025-11-25"), (b"mcp-session-id", b"abc")),  # other mcp- headers
    ],
)
def test_headers_that_agree_with_the_body_pass(headers):
    assert _body_matches_headers(scope(*headers), CALL) is None


@pytest.mark.parametrize(
    ("headers", "word"),
    [
        (((b"mcp-method", b"tools/list"),), "Mcp-Method"),
        (((b"Mcp-Method", b"tools/list"),), "Mcp-Method"),  # a server that kept the case: still checked
        (((b"mcp-name", b"time__other"),), "Mcp-Name"),
        (((b"MCP-NAME", b"time__other"),), "Mcp-Name"),
        # repeated: the last one counts, as it always did
        (((b"mcp-method", b"tools/call"), (b"mcp-method", b"tools/list")), "Mcp-Method"),
    ],
)
def test_a_header_that_disagrees_with_the_body_is_named(headers, word):
    problem = _body_matches_headers(scope(*headers), CALL)
    assert problem is not None and word in problem


async def _post_through_the_guard(chunks: int, chunk: bytes, headers: list | None = None) -> tuple[int, int]:
    """POST ``chunks`` x ``chunk`` through ``header_guard`` in front of the SDK's body limit; returns
    (status answered, chunks the guard and the SDK pulled from the client)."""
    from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE, RequestBodyLimitMiddleware

    from mcpgov.serve import header_guard

    async def inner(scope, receive, send):  # the SDK's app behind its limit: reads the body, answers 200
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    pulled = 0

    async def receive():
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": chunk, "more_body": pulled < chunks}

    statuses = []

    async def send(message):
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    app = header_guard(RequestBodyLimitMiddleware(inner, DEFAULT_MAX_REQUEST_BODY_SIZE), "/mcp")
    scope = {"type": "http", "method": "POST", "path": "/mcp", "headers": headers or []}
    await app(scope, receive, send)
    return statuses[0], pulled


def test_an_oversized_body_is_not_buffered_past_the_sdk_limit_and_gets_its_413():
    import anyio

    mib = b"x" * (1 << 20)
    status, pulled = anyio.run(_post_through_the_guard, 1024, mib)  # a 1 GiB body, 1 MiB at a time
    assert status == 413
    assert pulled <= 6  # 4 MiB and a chunk, not the gigabyte
    # a mismatching header is not looked at on a body the SDK refuses anyway
    status, _ = anyio.run(_post_through_the_guard, 1024, mib, [(b"mcp-method", b"tools/list")])
    assert status == 413
    status, pulled = anyio.run(_post_through_the_guard, 3, mib)  # under the limit: read whole, passed on
    assert (status, pulled) == (200, 3)
