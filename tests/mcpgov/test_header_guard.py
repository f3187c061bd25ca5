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


def test_the_gateway_uvicorn_refuses_an_oversized_request_head_and_serves_the_rest():
    """uvicorn under the gateway's settings (``uvicorn_config``): a request whose line and headers pass
    ``MAX_REQUEST_HEAD`` gets 400 and a closed connection, not a buffer of that size; a normal one,
    and a large body (not head), are served."""
    import contextlib
    import socket

    from mcpgov.serve import MAX_REQUEST_HEAD
    from tests.mcpgov.helpers import gateway_uvicorn

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        size, more = 0, True
        while more:
            message = await receive()
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(size).encode()})

    with gateway_uvicorn(app) as port:

        def exchange(head: bytes, body: bytes = b"") -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                # refused while still sending: what it answered is still to be read
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    s.sendall(head + body)
                out = b""
                while chunk := s.recv(65536):
                    out += chunk
                    if b"\r\n\r\n" in out and (b"400" in out[:12] or out.endswith(str(len(body)).encode())):
                        break
                return out

        def head(extra: bytes, length: int) -> bytes:
            return b"POST /mcp HTTP/1.1\r\nHost: x\r\n" + extra + b"Content-Length: %d\r\n\r\n" % length

        assert exchange(head(b"", 2), b"{}").startswith(b"HTTP/1.1 200")
        big_body = b"x" * (1 << 20)  # a megabyte of body is not a head
        assert exchange(head(b"", len(big_body)), big_body).startswith(b"HTTP/1.1 200")
        # a header just under the bound passes; one of 16 MiB is refused
        near = b"X-Pad: " + b"a" * (MAX_REQUEST_HEAD - 200) + b"\r\n"
        assert exchange(head(near, 2), b"{}").startswith(b"HTTP/1.1 200")
        huge = b"X-Pad: " + b"a" * (16 << 20) + b"\r\n"
        answer = exchange(head(huge, 2), b"{}")
        assert answer.startswith(b"HTTP/1.1 400") and b"too large" in answer
        # so is an endless request line
        line = b"GET /" + b"a" * (4 << 20) + b" HTTP/1.1\r\n\r\n"
        assert exchange(line).startswith(b"HTTP/1.1 400")
