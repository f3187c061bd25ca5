"""OpenAPI completion (drf-spectacular): the error responses of every operation, and the two
enforcement-client endpoints served outside DRF (the bundle and the control long poll).

Both endpoints are async Django views (one is also answered by a raw ASGI route in front of
Django, see governance/api/bundle.py), so drf-spectacular cannot introspect them; the
postprocessing hook below writes their operations by hand, from the same contract as
docs/enforcer-api.md. tests/portal/test_schemathesis.py checks every documented operation
against the running portal.
"""

from __future__ import annotations

from audit.choices import SessionState

ERROR_REF = {"$ref": "#/components/schemas/Error"}

ERROR_SCHEMA = {
    "type": "object",
    "description": "Every API error: a sentence for people and a machine code.",
    "properties": {
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "errors": {
            "type": "object",
            "additionalProperties": {},
            "description": "Validation errors (code `invalid`): the messages of each field.",
        },
    },
    "required": ["detail", "code"],
}

ERROR_TEXT = {
    "400": "The request is malformed or a rule refused it (code `invalid`, `parse_error`, …).",
    "401": "No valid enforcement-client token (`not_authenticated`, `token_invalid`, `token_revoked`, …).",
    "403": "Not signed in, or signed in without the permission this needs.",
    "404": "No such object for this caller (another team's objects do not exist for you).",
    "409": "The object is in a state or in use in a way that refuses this (nothing changed).",
    "413": "The request body is too large.",
    "502": "A server the portal asked on the caller's behalf did not answer as it should (nothing changed).",
}


# Policy edits that a team with drafts (Team.policy_edits_immediate off) keeps in its draft: 202.
DRAFTABLE_PREFIXES = tuple(
    f"/api/v1/{name}/"
    for name in (
        "servers",
        "tools",
        "roles",
        "environments",
        "bindings",
        "server-limits",
        "global-limits",
        "trigger-settings",
    )
)
DRAFTED_RESPONSE = {
    "description": (
        "Accepted, not applied: the team collects policy edits in a draft (docs/policy-lifecycle.md); "
        "code `drafted`, `draft` the page to review and publish it."
    ),
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "detail": {"type": "string"},
                    "code": {"type": "string"},
                    "draft": {"type": "string"},
                },
                "required": ["detail", "code", "draft"],
            }
        }
    },
}


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": ERROR_REF}}}


def _errors(*codes: str) -> dict:
    return {code: _error(ERROR_TEXT[code]) for code in codes}


CLIENT_SECURITY = [{"enforcementClientToken": []}]

BUNDLE_HEADERS = {
    "ETag": {"schema": {"type": "string"}, "description": '"<sha256 of the JWS>"'},
    "X-Bundle-Version": {"schema": {"type": "integer"}},
}

BUNDLE_OPERATION = {
    "operationId": "bundle_retrieve",
    "summary": "The signed policy bundle of the client's environment (gateway)",
    "description": (
        "A JWS (compact serialization) over the canonical bundle; see docs/bundle.md. With a "
        "matching `If-None-Match` the answer is `304`; with `?wait=N` as well it waits up to N "
        "seconds for a newer bundle. Served outside DRF (an async view and an ASGI fast route)."
    ),
    "tags": ["v1"],
    "security": CLIENT_SECURITY,
    "parameters": [
        {
            "in": "query",
            "name": "wait",
            "schema": {"type": "number", "minimum": 0, "maximum": 30},
            "description": "Long poll: seconds to wait for a newer bundle than If-None-Match names.",
        },
        {"in": "header", "name": "If-None-Match", "schema": {"type": "string"}},
        {
            "in": "header",
            "name": "X-Mcpgov-Bundle-Version",
            "schema": {"type": "string", "pattern": "^[0-9]{1,9}$"},
            "description": "The bundle version the gateway runs (ASCII digits, at most 2147483647).",
        },
    ],
    "responses": {
        "200": {
            "description": "The bundle.",
            "headers": BUNDLE_HEADERS,
            "content": {"application/jose": {"schema": {"type": "string"}}},
        },
        "304": {"description": "Unchanged (If-None-Match matched).", "headers": BUNDLE_HEADERS},
        "400": _error("`invalid_wait` or `invalid_bundle_version`."),
        "401": _error(ERROR_TEXT["401"]),
        "404": _error("`no_bundle`: nothing published for this environment yet."),
    },
}

CONTROL_SCHEMA = {
    "type": "object",
    "properties": {
        "state": {"type": "string", "enum": list(SessionState.values)},
        "control_version": {"type": "integer"},
        "decided_by": {"type": "string", "nullable": True},
        "reason": {"type": "string", "nullable": True},
        "decided_at": {"type": "string", "format": "date-time", "nullable": True},
        "approvals": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "call_id": {"type": "string"},
                    "decision": {"type": "string"},
                    "by": {"type": "string"},
                    "reason": {"type": "string"},
                    "decided_at": {"type": "string", "format": "date-time"},
                },
            },
        },
    },
    "required": ["state", "control_version", "decided_by", "reason", "decided_at", "approvals"],
}

CONTROL_OPERATION = {
    "operationId": "gateway_sessions_control_retrieve",
    "summary": "The session's control channel: a person's decisions (gateway long poll)",
    "description": (
        "Answers at once when the session's control_version is above `since`, else when a "
        "person decides, else after `wait` seconds. An async view outside DRF."
    ),
    "tags": ["v1"],
    "security": CLIENT_SECURITY,
    "parameters": [
        {
            "in": "path",
            "name": "session_id",
            "required": True,
            "schema": {"type": "string", "format": "uuid"},
        },
        {"in": "query", "name": "since", "schema": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}},
        {"in": "query", "name": "wait", "schema": {"type": "number", "minimum": 0, "maximum": 30}},
    ],
    "responses": {
        "200": {
            "description": "The session's control state.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SessionControl"}}},
        },
        "400": _error("`since` or `wait` out of range (`invalid`)."),
        "401": _error(ERROR_TEXT["401"]),
        "404": _error("No such session for this enforcement client."),
    },
}


def complete_schema(result, generator, request, public):
    """drf-spectacular postprocessing hook (SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"])."""
    components = result.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["Error"] = ERROR_SCHEMA
    schemas["SessionControl"] = CONTROL_SCHEMA
    paths = result.setdefault("paths", {})
    paths["/api/v1/bundle/"] = {"get": BUNDLE_OPERATION}
    paths["/api/v1/gateway/sessions/{session_id}/control/"] = {"get": CONTROL_OPERATION}

    for path, item in paths.items():
        for method, operation in item.items():
            if method not in {"get", "put", "patch", "post", "delete"}:
                continue
            responses = operation.setdefault("responses", {})
            wanted = ["400"]
            if operation.get("security") != [{}] and path != "/api/v1/keys/":
                wanted += ["401", "403"]
            if "{" in path:
                wanted.append("404")
            if method in {"post", "put", "patch", "delete"} and "{" in path:
                wanted.append("409")
            if path.endswith("/events/") and method == "post":
                wanted.append("413")
            if path.endswith("/discover/"):
                wanted.append("502")
            if path == "/api/v1/keys/":
                wanted = []
            for code in wanted:
                responses.setdefault(code, _error(ERROR_TEXT[code]))
            if method in {"post", "put", "patch", "delete"} and path.startswith(DRAFTABLE_PREFIXES):
                responses.setdefault("202", DRAFTED_RESPONSE)
    return result
