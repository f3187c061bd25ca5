"""GET /api/v1/bundle/shadow/ — the shadow bundle of the client's team and environment: a policy draft
signed with the team's key under the shadow JWS type, which gateways decide beside the live bundle and
record in their audit events without enforcing it (docs/enforcer-api.md, "Shadow bundle").

A plain view (gateways poll it every few seconds; the live bundle's long-poll route is
governance/api/bundle.py)."""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from governance.api.authentication import ClientTokenAuthentication, IsEnforcementClient
from governance.models import ShadowBundle


class ShadowBundleView(APIView):
    authentication_classes = [ClientTokenAuthentication]
    permission_classes = [IsEnforcementClient]

    @extend_schema(
        responses={
            (200, "application/jose"): OpenApiResponse(OpenApiTypes.STR, description="The shadow JWS."),
            304: OpenApiResponse(description="If-None-Match matches the current shadow."),
            404: inline_serializer(
                "NoShadow", {"detail": serializers.CharField(), "code": serializers.CharField()}
            ),
        },
        summary="The shadow bundle to evaluate beside the live one (never enforced); 404 no_shadow: none",
    )
    def get(self, request):
        client = request.auth
        shadow = (
            ShadowBundle.objects.filter(environment_id=client.environment_id, team_id=client.team_id)
            .only("jws", "etag", "version")
            .first()
        )
        if shadow is None:
            return Response({"detail": "No shadow bundle is published.", "code": "no_shadow"}, status=404)
        etag = f'"{shadow.etag}"'
        if request.headers.get("If-None-Match") == etag:
            response = HttpResponse(status=304)
        else:
            response = HttpResponse(shadow.jws, content_type="application/jose")
        response["ETag"] = etag
        response["X-Bundle-Version"] = str(shadow.version)
        response["Cache-Control"] = "no-store"
        return response
