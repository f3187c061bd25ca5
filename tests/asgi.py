"""One HTTP request through an ASGI app, in process: the bundle route and Django's handler alike."""

from __future__ import annotations

import asyncio


def asgi_get(app, path: str, *, host="127.0.0.1", scheme="http", query=b"", headers=()):
    """GET `path` on `app`; returns (status, {lower-case header: value}, body).

    The client sends an empty body and never disconnects, as a long-polling gateway would not."""
    return asgi_request(app, "GET", path, host=host, scheme=scheme, query=query, headers=headers)


def asgi_request(
    app,
    method: str,
    path: str,
    *,
    body=b"",
    chunks=None,
    host="127.0.0.1",
    scheme="http",
    query=b"",
    headers=(),
):
    """One `method` request for `path` on `app` with `body` (or the body in `chunks`); returns
    (status, {lower-case header: value}, body). The client never disconnects."""
    parts = list(chunks) if chunks is not None else [body]
    sent = []

    async def receive():
        if parts:
            chunk = parts.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(parts)}
        await asyncio.Event().wait()

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": scheme,
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query,
        "headers": [(b"host", host.encode()), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    asyncio.run(app(scope, receive, send))
    start = sent[0]
    content = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], {k.lower(): v for k, v in start["headers"]}, content
