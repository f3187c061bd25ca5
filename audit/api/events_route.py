"""POST /api/v1/gateway/sessions/<id>/events/ answered in front of Django (config/asgi.py).

Why this bypass exists: a batch of events is the portal's hottest request (every call of every
gateway ends up in one), and of the CPU it cost, a fifth was the request around the ingestion —
fourteen middleware, most of them sync (a thread hop each way), the URL resolver, DRF's request
wrapping, negotiation, authentication and permission classes, the renderer — none of which
ingestion needs: it is a bearer-token POST of JSON answered with JSON. `bench/ingest.py`
measures what this route buys (docs/audit.md, "What one batch costs").

The route answers **only a stored batch** (200). Everything else is handed to Django's
handler unchanged, with the body it already read played back, so every other answer is
Django's own by construction: no bearer token or a token that does not authenticate, a revoked
client (its delivery rule is the view's), a body without a Content-Length or over the size
limit, bad JSON, deep nesting, NUL bytes, a batch refused by the service (a refused batch stores
nothing, so the second run sees what the first saw), a session of another team, an unexpected
error; and, as in `governance.api.bundle.asgi_bundle_route`, a host not in ALLOWED_HOSTS,
plain HTTP under SECURE_SSL_REDIRECT and a NUL byte in the query (`portal.asgi_routes`). What
the route itself does is what the view does on success: the same token lookup, the same body
parsing (`batch_events`) and the same service (`events_ingest`: team scoping, the
`(session, seq)` duplicate drop, the chain, the seal, the metrics), with the security headers
of Django's middleware and the request metric under the view's URL name.
`tests/audit/test_events_route.py` checks the two paths answer alike.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from audit.api.gateway import MAX_EVENTS_BODY_BYTES, GatewayEventsView, batch_events
from audit.services import events_ingest
from governance.api.authentication import client_token
from governance.services.clients import TokenError, client_authenticate
from portal import metrics
from portal.asgi_routes import DjangoMirror, request_headers, request_query
from portal.db import db_call_pooled
from portal.errors import ServiceError

log = logging.getLogger(__name__)

PREFIX = "/api/v1/gateway/sessions/"
VIEW_NAME = "audit-api:gateway-events"  # Django's name for it (the request metric's label)
# Django's <uuid:…> converter: lower-case hex, dashed.
_PATH = re.compile(
    re.escape(PREFIX) + r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})/events/"
)
_HEADERS = [
    (b"content-type", b"application/json"),
    (b"allow", ", ".join(GatewayEventsView().allowed_methods).encode()),
]


def _ingest(token: str, session_id: uuid.UUID, raw: bytes) -> bytes | None:
    """The 200 body for a stored batch, or None: Django's path answers this request."""
    try:
        client = client_authenticate(token, allow_revoked=True)
    except TokenError:
        return None
    if client.revoked_at is not None:  # a revoked client's last deliveries: the view's rule
        return None
    try:
        result = events_ingest(session_id=session_id, client=client, events=batch_events(raw))
    except ServiceError:
        return None  # refused: nothing was stored
    except Exception:
        log.warning("events route: handing a batch to Django after an unexpected error", exc_info=True)
        return None
    return json.dumps(result.as_dict(), separators=(",", ":")).encode()  # as DRF's JSONRenderer


async def _read_body(receive) -> tuple[bytes, bool] | None:
    """(the body read, whether it is complete), at most MAX_EVENTS_BODY_BYTES; None: disconnected."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), True
        if size > MAX_EVENTS_BODY_BYTES:
            return b"".join(chunks), False


def _replay(body: bytes, complete: bool, receive):
    """`receive` for Django: what the route read first, then the rest of the request."""
    pending = [{"type": "http.request", "body": body, "more_body": not complete}]

    async def replayed():
        return pending.pop() if pending else await receive()

    return replayed


def asgi_events_route(django_app):
    """Wrap the Django ASGI app: a batch POST is ingested here when it can be stored (see above)."""
    mirror = DjangoMirror(f"{PREFIX}{uuid.UUID(int=0)}/events/", "POST")

    async def application(scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await django_app(scope, receive, send)
        root = scope.get("root_path", "")
        path = scope["path"]
        match = _PATH.fullmatch(path, len(root)) if path.startswith(root + PREFIX) else None
        if match is None:
            return await django_app(scope, receive, send)
        headers = request_headers(scope)
        length = headers.get("content-length", "")
        if (
            mirror.handled_by_django(scope, headers, request_query(scope))
            or not (length.isascii() and length.isdigit())
            or int(length) > MAX_EVENTS_BODY_BYTES
        ):
            return await django_app(scope, receive, send)
        try:
            token = client_token(headers.get("authorization", ""))
        except TokenError:
            token = None
        if token is None:
            return await django_app(scope, receive, send)
        started = time.perf_counter()
        read = await _read_body(receive)
        if read is None:
            return  # the gateway went away: nothing to answer, nothing stored
        raw, complete = read
        answer = await db_call_pooled(_ingest, token, uuid.UUID(match[1]), raw) if complete else None
        if answer is None:
            return await django_app(scope, _replay(raw, complete, receive), send)
        response_headers = [
            *_HEADERS,
            (b"content-length", str(len(answer)).encode()),
            *mirror.security_headers(scope, headers, 200),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": response_headers})
        await send({"type": "http.response.body", "body": answer})
        metrics.request_observed(VIEW_NAME, "POST", 200, started)

    return application
