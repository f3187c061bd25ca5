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
