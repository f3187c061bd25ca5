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

from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.http import require_GET
from drf_spectacular.utils import extend_schema
from rest_framework import authentication, exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from governance.api.authentication import ClientUser, IsEnforcementClient
from governance.models import EnforcementClient, Environment
from governance.services.clients import (
    CLIENT_ACTIVE,
    TokenError,
    client_authenticate,
    client_channel,
    client_seen,
)
from governance.services.flags import flag_channel, flag_versions, flags_for_environment
from governance.unleash.features import etag_matches, etag_of, features_document
from portal import realtime
from portal.db import db_call

KEEPALIVE_SECONDS = 15.0
RECHECK_TOKEN_SECONDS = 15.0


def token_from_header(header: str) -> str | None:
    """The token of `Authorization: <token>` (Unleash) or `Authorization: Bearer <token>`."""
    parts = (header or "").split()
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2 and parts[0].lower() == "bearer":
        return parts[1]
    return None


def _address(request) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


class UnleashTokenAuthentication(authentication.BaseAuthentication):
    """An enforcement-client token, raw (as Unleash SDKs send it) or as a Bearer token."""

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        token = token_from_header(header)
        if token is None:
            raise exceptions.AuthenticationFailed(
                {"detail": "Authorization must be '<token>' or 'Bearer <token>'.", "code": "token_malformed"}
            )
        try:
            client = client_authenticate(token)
        except TokenError as exc:
            raise exceptions.AuthenticationFailed({"detail": str(exc), "code": exc.code}) from exc
        client_seen(client=client, address=_address(request), bundle_version=None)
        return ClientUser(client), client

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


def _read(environment_id: int) -> tuple[str, dict]:
    """(change token, features document) of one environment (through `db_call`)."""
    environment = Environment.objects.select_related("team").get(pk=environment_id)
    token = flag_versions([environment_id])[environment_id]
    return token, _features(environment)


def _still_valid(token: str) -> bool:
    try:
        client_authenticate(token)
        return True
    except TokenError:
        return False


def _authenticate_sync(token: str, address: str | None) -> EnforcementClient:
    client = client_authenticate(token)
    client_seen(client=client, address=address, bundle_version=None)
    return client


_END_REVOKED = _sse("end", {"reason": "token revoked or expired"})


async def _stream(client: EnforcementClient, token: str) -> AsyncIterator[bytes]:
    environment_id = client.environment_id
    event_id = 0
    async with realtime.subscribe(
        flag_channel(environment_id),
        also={client_channel(client.pk): CLIENT_ACTIVE},  # revocation ends the stream at once
    ) as sub:
        sub.seen, document = await db_call(_read, environment_id)
        sent = {f["name"]: f for f in document["features"]}
        event_id += 1
        yield _sse(
            "unleash-connected",
            {
                "events": [
                    {
                        "type": "hydration",
                        "eventId": event_id,
                        "features": document["features"],
                        "segments": [],
                    }
                ]
            },
            event_id,
        )
        idle = 0.0
        while True:
            woke = await sub.wait(KEEPALIVE_SECONDS)
            if not woke:
                idle += KEEPALIVE_SECONDS
                if idle >= RECHECK_TOKEN_SECONDS:  # (expiry has no event)
                    idle = 0.0
                    if not await db_call(_still_valid, token):
                        yield _END_REVOKED
                        return
                yield b": keep-alive\n\n"
                continue
            if not await db_call(_still_valid, token):  # woken by a revocation, or a flag change
                yield _END_REVOKED
                return
            sub.seen, document = await db_call(_read, environment_id)
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
    """`GET /api/client/streaming`: flag changes pushed as they happen (Unleash streaming format)."""
    token = token_from_header(request.headers.get("Authorization", ""))
    if not token:
        return _unauthorized("An enforcement-client token is required in Authorization.", "not_authenticated")
    try:
        client = await db_call(_authenticate_sync, token, _address(request))
    except TokenError as exc:
        return _unauthorized(str(exc), exc.code)
    realtime.ensure_started()
    response = StreamingHttpResponse(_stream(client, token), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # proxies must not buffer the stream
    return response


def _unauthorized(detail: str, code: str) -> HttpResponse:
    response = JsonResponse({"detail": detail, "code": code}, status=401)
    response["WWW-Authenticate"] = 'Bearer realm="mcpgov-unleash"'
    return response
