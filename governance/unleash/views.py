"""The Unleash client API (/api/client/…) over the MCP kill-switch flags.

Stock Unleash SDKs authenticate with an enforcement-client token sent raw in
`Authorization` (`Authorization: mcpgov_…`); `Bearer mcpgov_…` works too. The token's
environment selects which flag states the client sees.

- `GET  features`  — all flags (format version 2), `ETag` / `If-None-Match` → 304.
- `POST register`, `POST metrics` — accepted (202); they count as the client being seen.
- `GET  streaming` — server-sent events in Unleash's streaming format: `unleash-connected`
  (a hydration event with every feature), then `unleash-updated` with `feature-updated` /
  `feature-removed` events as flags change. An async view: a stream holds no thread and no
  database connection while it waits. Revoking the client ends its open streams at once
  (an `end` event); the SDK's reconnection is then answered 401.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.http import require_GET
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from governance.api.authentication import (
    ClientTokenAuthentication,
    IsEnforcementClient,
    client_from_authorization,
)
from governance.models import EnforcementClient, Environment
from governance.services.clients import CLIENT_ACTIVE, TokenError, client_channel, client_seen
from governance.services.flags import flag_channel, flag_versions, flags_for_environment
from governance.unleash.features import etag_matches, etag_of, features_document
from portal import realtime
from portal.db import db_call

KEEPALIVE_SECONDS = 15.0  # and how often an idle stream re-checks its token (expiry has no event)


def _address(request) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


class UnleashTokenAuthentication(ClientTokenAuthentication):
    """An enforcement-client token, raw (as Unleash SDKs send it) or as a Bearer token."""

    raw = True

    def seen(self, request, client: EnforcementClient) -> None:
        client_seen(client=client, address=_address(request), bundle_version=None)

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="mcpgov-unleash"'


@extend_schema(exclude=True)  # Unleash's client API, documented in docs/flags.md, not part of /api/v1/
class _UnleashView(APIView):
    authentication_classes = [UnleashTokenAuthentication]
    permission_classes = [IsEnforcementClient]


def _features(environment: Environment) -> dict:
    return features_document(flags_for_environment(environment=environment), environment=environment.name)


class FeaturesView(_UnleashView):
    """`GET /api/client/features`: every MCP flag, resolved for the client's environment."""

    def get(self, request):
        client: EnforcementClient = request.auth
        document = _features(client.environment)
        etag = etag_of(document)
        if etag_matches(request.headers.get("If-None-Match", ""), etag):
            response = Response(status=status.HTTP_304_NOT_MODIFIED)
        else:
            response = Response(document)
        response["ETag"] = etag
        response["Cache-Control"] = "no-cache"
        return response


class RegisterSerializer(serializers.Serializer):
    appName = serializers.CharField(max_length=200)
    instanceId = serializers.CharField(max_length=200, required=False, allow_blank=True)
    sdkVersion = serializers.CharField(max_length=200, required=False, allow_blank=True)
    strategies = serializers.ListField(child=serializers.CharField(), required=False)
    started = serializers.CharField(required=False)
    interval = serializers.IntegerField(required=False)


class MetricsSerializer(serializers.Serializer):
    appName = serializers.CharField(max_length=200)
    instanceId = serializers.CharField(max_length=200, required=False, allow_blank=True)
    bucket = serializers.DictField()


class RegisterView(_UnleashView):
    """`POST /api/client/register`: an SDK announces itself (202)."""

    def post(self, request):
        RegisterSerializer(data=request.data).is_valid(raise_exception=True)
        return Response(status=status.HTTP_202_ACCEPTED)


class MetricsView(_UnleashView):
    """`POST /api/client/metrics`: evaluation counts (202). The audit trail, not these, is the record."""

    def post(self, request):
        MetricsSerializer(data=request.data).is_valid(raise_exception=True)
        return Response(status=status.HTTP_202_ACCEPTED)


# --- streaming (async) ---------------------------------------------------------------------------


def _sse(event: str, data: dict, event_id: int | None = None) -> bytes:
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(data, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode()


def _read(authorization: str, environment_id: int) -> tuple[str, dict] | None:
    """(change token, features document) of one environment, or None once the client's token
    is revoked or expired (one `db_call`: the token is checked on every read)."""
    try:
        client_from_authorization(authorization, raw=True)
    except TokenError:
        return None
    environment = Environment.objects.select_related("team").get(pk=environment_id)
    token = flag_versions([environment_id])[environment_id]
    return token, _features(environment)


def _authenticate_sync(authorization: str, address: str | None) -> EnforcementClient:
    client = client_from_authorization(authorization, raw=True)
    client_seen(client=client, address=address, bundle_version=None)
    return client


_END_REVOKED = _sse("end", {"reason": "token revoked or expired"})


async def _stream(client: EnforcementClient, authorization: str) -> AsyncIterator[bytes]:
    environment_id = client.environment_id
    sent_token: str | None = None

    async def changed(timeout: float) -> tuple[str, dict] | None:
        """The next state unlike the one sent, after at most `timeout` seconds (long poll)."""
        return await realtime.long_poll(
            flag_channel(environment_id),
            read=lambda: db_call(_read, authorization, environment_id),
            ready=lambda state: state is None or state[0] != sent_token,
            token=lambda state: state[0],
            timeout=timeout,
            also={client_channel(client.pk): CLIENT_ACTIVE},  # revocation ends the stream at once
        )

    state = await changed(0)
    if state is None:
        yield _END_REVOKED
        return
    sent_token, document = state
    sent = {f["name"]: f for f in document["features"]}
    event_id = 1
    yield _sse(
        "unleash-connected",
        {
            "events": [
                {"type": "hydration", "eventId": event_id, "features": document["features"], "segments": []}
            ]
        },
        event_id,
    )
    while True:
        state = await changed(KEEPALIVE_SECONDS)  # a wake-up by a flag change, a revocation, or none
        if state is None:
            yield _END_REVOKED
            return
        if state[0] == sent_token:
            yield b": keep-alive\n\n"
            continue
        sent_token, document = state
        current = {f["name"]: f for f in document["features"]}
        events = []
        for name, feature in current.items():
            if sent.get(name) != feature:
                event_id += 1
                events.append({"type": "feature-updated", "eventId": event_id, "feature": feature})
        for name in sent.keys() - current.keys():
            event_id += 1
            events.append(
                {
                    "type": "feature-removed",
                    "eventId": event_id,
                    "featureName": name,
                    "project": sent[name]["project"],
                }
            )
        sent = current
        if events:
            yield _sse("unleash-updated", {"events": events}, event_id)


@require_GET
async def streaming(request):
    """`GET /api/client/streaming`: flag changes pushed as they happen (Unleash streaming format).

    Only under ASGI: a WSGI server (`manage.py runserver`, gunicorn with config.wsgi) would read this
    endless stream to its end before sending any of it (Django's StreamingHttpResponse does so for an
    asynchronous iterator) — nothing would ever arrive, and a thread and a growing buffer would be held
    per client. There it answers 501; the SDKs then poll `/api/client/features`.
    """
    if not isinstance(request, ASGIRequest):
        return JsonResponse(
            {
                "detail": "Streaming needs the portal's ASGI server (uvicorn config.asgi:application); "
                "poll /api/client/features instead.",
                "code": "streaming_needs_asgi",
            },
            status=501,
        )
    authorization = request.headers.get("Authorization", "")
    try:
        client = await db_call(_authenticate_sync, authorization, _address(request))
    except TokenError as exc:
        return _unauthorized(str(exc), exc.code)
    realtime.ensure_started()
    response = StreamingHttpResponse(_stream(client, authorization), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # proxies must not buffer the stream
    return response


def _unauthorized(detail: str, code: str) -> HttpResponse:
    response = JsonResponse({"detail": detail, "code": code}, status=401)
    response["WWW-Authenticate"] = 'Bearer realm="mcpgov-unleash"'
    return response
