"""The Unleash client API: stock Unleash SDKs evaluate the MCP kill-switch flags unchanged."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import requests
from rest_framework.test import APIClient
from yggdrasil_engine.engine import UnleashEngine

from governance.models import Environment, Flag
from governance.services.clients import client_create, client_revoke
from governance.services.flags import flag_create, flag_delete, flag_disable, flag_enable, flag_set_state
from governance.services.servers import server_create
from mcpgov.bundle import Flag as BundleFlag
from mcpgov.bundle import FlagConstraint


def _env(team, name="staging"):
    return Environment.objects.get(team=team, name=name)


@pytest.fixture
def flag(team):
    server = server_create(team=team, slug="database", category="database")
    return flag_create(team=team, server=server, capability="write", name="mcp.database.write")


@pytest.fixture
def token(team):
    return client_create(team=team, environment=_env(team), name="gw-staging").token


def client_for(token: str, raw: bool = True) -> APIClient:
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=token if raw else f"Bearer {token}")
    return c


# --- the feature document, evaluated by Unleash's own engine ---------------------------------


CONSTRAINT_CASES = [
    [],
    [{"context_name": "role", "operator": "IN", "values": ["database_agent", "master_agent"]}],
    [{"context_name": "role", "operator": "NOT_IN", "values": ["database_agent"]}],
    [
        {"context_name": "role", "operator": "IN", "values": ["database_agent", "code_agent"]},
        {"context_name": "role", "operator": "NOT_IN", "values": ["code_agent"]},
    ],
]
CONTEXTS = [
    ("database_agent", {"userId": "database_agent"}),
    ("database_agent", {"properties": {"role": "database_agent"}}),
    ("database_agent", {"role": "database_agent"}),  # the SDK moves unknown top-level keys to properties
    ("code_agent", {"userId": "code_agent"}),
    ("code_agent", {"properties": {"role": "code_agent"}}),
    ("code_agent", {"userId": "code_agent", "properties": {"role": "code_agent"}}),  # both ways, one role
    (None, {}),
]


@pytest.mark.parametrize("enabled", [True, False])
@pytest.mark.parametrize("constraints", CONSTRAINT_CASES)
def test_unleash_engine_agrees_with_the_gateway(team, flag, token, enabled, constraints):
    env = _env(team)
    flag_set_state(flag=flag, environment=env, enabled=enabled, constraints=constraints, reason="test")
    body = client_for(token).get("/api/client/features").json()
    engine = UnleashEngine()
    assert engine.take_state(json.dumps(body)) is None  # no parse warnings
    gateway_flag = BundleFlag(
        name=flag.name,
        server="database",
        capability="write",
        enabled=enabled,
        constraints=tuple(FlagConstraint(**c) for c in constraints),
    )
    for role, context in CONTEXTS:
        ctx = {**context}
        if "role" in ctx:
            ctx = {"properties": {"role": ctx.pop("role")}}
        expected = gateway_flag.is_on_for(role or "")
        assert engine.is_enabled(flag.name, ctx).is_enabled is expected, (constraints, context)


def test_features_document_shape_and_etag(team, flag, token):
    c = client_for(token)
    resp = c.get("/api/client/features")
    assert resp.status_code == 200
    body = resp.json()
    assert body["version"] == 2 and isinstance(body["version"], int)
    [feature] = body["features"]
    assert feature["name"] == "mcp.database.write" and feature["enabled"] is True
    assert feature["strategies"] == [{"name": "default", "parameters": {}, "constraints": [], "variants": []}]
    etag = resp["ETag"]
    assert c.get("/api/client/features", HTTP_IF_NONE_MATCH=etag).status_code == 304
    assert c.get("/api/client/features", HTTP_IF_NONE_MATCH=f"W/{etag}").status_code == 304
    flag_disable(flag=flag, environment=_env(team), reason="INC-7")
    resp = c.get("/api/client/features", HTTP_IF_NONE_MATCH=etag)
    assert resp.status_code == 200 and resp["ETag"] != etag
    assert resp.json()["features"][0]["enabled"] is False


def test_the_clients_environment_selects_the_flag_state(team, flag):
    flag_disable(flag=flag, environment=_env(team, "production"), reason="prod freeze")
    staging = client_create(team=team, environment=_env(team), name="gw-s").token
    prod = client_create(team=team, environment=_env(team, "production"), name="gw-p").token
    assert client_for(staging).get("/api/client/features").json()["features"][0]["enabled"] is True
    assert client_for(prod).get("/api/client/features").json()["features"][0]["enabled"] is False


def test_bearer_and_raw_tokens_are_accepted_others_refused(team, flag, token):
    assert client_for(token, raw=True).get("/api/client/features").status_code == 200
    assert client_for(token, raw=False).get("/api/client/features").status_code == 200
    assert APIClient().get("/api/client/features").status_code == 401
    assert client_for("mcpgov_nope_nope").get("/api/client/features").status_code == 401
    assert client_for("Basic a b").get("/api/client/features").status_code == 401


def test_revoked_token_is_refused(team, flag):
    issued = client_create(team=team, environment=_env(team), name="gw-r")
    client_revoke(client=issued.client)
    resp = client_for(issued.token).get("/api/client/features")
    assert resp.status_code == 401 and resp.json()["code"] == "token_revoked"


def test_a_team_sees_only_its_own_flags(team, other_team, flag):
    theirs = client_create(team=other_team, environment=_env(other_team), name="gw-globex").token
    assert client_for(theirs).get("/api/client/features").json()["features"] == []


def test_a_person_session_is_not_an_unleash_client(team, flag, admin):
    c = APIClient()
    c.force_authenticate(admin)
    assert c.get("/api/client/features").status_code == 403


def test_register_and_metrics_are_accepted(team, token):
    c = client_for(token)
    register = {
        "appName": "gw",
        "instanceId": "i-1",
        "sdkVersion": "unleash-python-sdk:6.9.1",
        "strategies": ["default"],
        "started": "2026-11-24T09:00:00Z",
        "interval": 15000,
    }
    assert c.post("/api/client/register", register, format="json").status_code == 202
    metrics = {
        "appName": "gw",
        "instanceId": "i-1",
        "bucket": {"start": "2026-11-24T09:00:00Z", "stop": "2026-11-24T09:01:00Z", "toggles": {}},
    }
    assert c.post("/api/client/metrics", metrics, format="json").status_code == 202
    assert c.post("/api/client/metrics", {"nope": 1}, format="json").status_code == 400
    assert APIClient().post("/api/client/register", register, format="json").status_code == 401


def test_requests_mark_the_client_as_seen(team, token):
    from governance.models import EnforcementClient

    client_for(token).get("/api/client/features")
    assert EnforcementClient.objects.get(name="gw-staging").last_seen_at is not None


# --- the official SDK against the live portal (uvicorn) ---------------------------------------


def _sdk(base_url: str, token: str, **kwargs):
    from UnleashClient import UnleashClient

    client = UnleashClient(
        url=f"{base_url}/api",
        app_name="mcp-governance-check",
        instance_id=f"test-{uuid.uuid4().hex[:8]}",
        environment="staging",
        custom_headers={"Authorization": token},
        refresh_interval=1,
        disable_metrics=True,
        cache_directory=None,
        **kwargs,
    )
    client.initialize_client()
    return client


def _eventually(predicate, timeout: float = 10.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


@pytest.mark.slow
def test_official_sdk_evaluates_flags_and_rereads_after_a_change(portal_server, team, flag, token):
    env = _env(team)
    flag_set_state(
        flag=flag,
        environment=env,
        enabled=True,
        constraints=[{"context_name": "role", "operator": "NOT_IN", "values": ["database_agent"]}],
        reason="database writes suspended for the database agent",
    )
    sdk = _sdk(portal_server, token)
    try:
        assert sdk.is_enabled("mcp.database.write", {"userId": "database_agent"}) is False
        assert sdk.is_enabled("mcp.database.write", {"properties": {"role": "database_agent"}}) is False
        assert sdk.is_enabled("mcp.database.write", {"userId": "code_agent"}) is True
        # The admin switches the flag off for everyone: the SDK re-reads it on its next poll.
        flag_disable(flag=flag, environment=env, reason="INC-9: all database writes stopped")
        _eventually(lambda: sdk.is_enabled("mcp.database.write", {"userId": "code_agent"}) is False)
        flag_enable(flag=flag, environment=env)
        flag_set_state(
            flag=flag,
            environment=env,
            enabled=True,
            constraints=[{"context_name": "role", "operator": "IN", "values": ["database_agent"]}],
        )
        _eventually(lambda: sdk.is_enabled("mcp.database.write", {"userId": "database_agent"}) is True)
        assert sdk.is_enabled("mcp.database.write", {"userId": "code_agent"}) is False
    finally:
        sdk.destroy()


@pytest.mark.slow
def test_official_sdk_streaming_receives_a_kill_switch(portal_server, team, flag, token):
    env = _env(team)
    sdk = _sdk(portal_server, token, experimental_mode={"type": "streaming"})
    try:
        _eventually(lambda: sdk.is_enabled("mcp.database.write", {"userId": "database_agent"}) is True)
        start = time.monotonic()
        flag_disable(flag=flag, environment=env, reason="INC-10")
        elapsed = _eventually(
            lambda: sdk.is_enabled("mcp.database.write", {"userId": "database_agent"}) is False
        )
        # Pushed, not polled: the SDK's own poll is 15 s (bench/killswitch_propagation.py has the speed).
        assert time.monotonic() - start < 10, elapsed
        # A flag removed in the portal disappears from the SDK (unknown flags are off).
        other = flag_create(team=team, server=flag.server, capability="read", name="mcp.database.read")
        _eventually(lambda: sdk.is_enabled("mcp.database.read", {}) is True)
        flag_delete(flag=other)
        _eventually(lambda: "mcp.database.read" not in sdk.feature_definitions())
    finally:
        sdk.destroy()


def test_under_wsgi_streaming_is_refused_rather_than_held_forever(team, flag, token):
    """The test client is a WSGI request, as runserver and gunicorn make: Django would read the endless
    stream before sending anything; the endpoint says so at once (the SDKs then poll the features)."""
    resp = client_for(token).get("/api/client/streaming")
    assert resp.status_code == 501
    assert resp.json()["code"] == "streaming_needs_asgi"


@pytest.mark.slow
def test_streaming_endpoint_speaks_server_sent_events(portal_server, team, flag, token):
    with requests.get(
        f"{portal_server}/api/client/streaming", headers={"Authorization": token}, stream=True, timeout=10
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        lines = resp.iter_lines(decode_unicode=True)
        event = {}
        for line in lines:
            if not line:
                break
            key, _, value = line.partition(": ")
            event[key] = value
        assert event["event"] == "unleash-connected"
        data = json.loads(event["data"])
        [hydration] = data["events"]
        assert hydration["type"] == "hydration" and hydration["features"][0]["name"] == "mcp.database.write"
    assert requests.get(f"{portal_server}/api/client/streaming", timeout=5).status_code == 401
    assert Flag.objects.count() == 1
