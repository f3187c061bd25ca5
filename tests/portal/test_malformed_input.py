"""Malformed input is a clear 4xx and changes nothing (issue 9, problem 5).

Each case once answered 500: NUL bytes reaching PostgreSQL, page offsets past bigint, bodies
nested 100,000 deep (RecursionError), lone surrogates, a huge or non-ASCII bundle-version
header, and deletes refused by a PROTECT foreign key.
"""

from __future__ import annotations

import json
import random
import uuid

import pytest
from django.apps import apps
from django.core.management import CommandError, call_command
from django.test import Client
from rest_framework.test import APIClient

from audit.models import AuditEvent
from governance.api.bundle import _clear_caches
from governance.models import AgentRole, EnforcementClient, Environment, McpServer
from governance.services.bundles import bundle_publish
from portal.parsers import MAX_DEPTH, json_loads, yaml_check_depth
from tests.audit.conftest import event, issue_client, open_session
from tests.governance.access_helpers import file_request, policy

pytestmark = pytest.mark.django_db

DEEP = 100_000
DEEP_JSON = "[" * DEEP + "]" * DEEP
DEEP_YAML = "mcp_access: " + "[" * DEEP + "]" * DEEP + "\n"


def db_state() -> dict[str, int]:
    """Row counts of every model of the project's apps: a refused request leaves them all equal."""
    return {
        model._meta.label: model._default_manager.count()
        for label in ("portal", "governance", "audit")
        for model in apps.get_app_config(label).get_models()
    }


@pytest.fixture
def api(admin):
    api = APIClient()
    api.force_authenticate(admin)
    return api


@pytest.fixture
def page(admin):
    browser = Client()
    browser.force_login(admin)
    return browser


@pytest.fixture
def issued(team):
    return issue_client(team, team.environments.get(name="development"), "gw")


@pytest.fixture
def gateway(issued):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.token}")
    return api


def assert_error(response, status: int = 400) -> dict:
    assert response.status_code == status, response.content[:500]
    body = response.json()
    assert isinstance(body["detail"], str) and body["detail"]
    assert body["code"]
    return body


# --- NUL bytes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/servers/?team=acme%00",
        "/api/v1/sessions/?role=code%00agent",
        "/api/v1/global-limits/acme%00/",
        "/api/v1/trigger-settings/%00/",
        "/api/v1/tools/?server%00=1",
    ],
)
def test_nul_in_api_filter_or_lookup_is_400(api, url):
    before = db_state()
    body = assert_error(api.get(url))
    assert "NUL" in body["detail"]
    assert db_state() == before


@pytest.mark.parametrize(
    "url", ["/governance/servers/?q=git%00", "/audit/sessions/?role=%00", "/audit/sessions/?server=a%00b"]
)
def test_nul_in_page_filter_is_400(page, url):
    before = db_state()
    response = page.get(url)
    assert response.status_code == 400
    assert b"NUL" in response.content
    assert db_state() == before


def test_nul_in_a_body_slug_is_400(api, team):
    before = db_state()
    body = assert_error(api.post("/api/v1/servers/", {"slug": "git\x00hub", "command": "x"}, format="json"))
    assert "slug" in body["errors"]
    assert db_state() == before


# Found by schemathesis: the team is looked up by slug before any CharField sees it (a 500).
@pytest.mark.parametrize(
    "url", ["/api/v1/servers/", "/api/v1/roles/", "/api/v1/audit-sinks/", "/api/v1/agents/"]
)
@pytest.mark.parametrize("form", [True, False], ids=["form", "json"])
def test_nul_in_the_team_of_a_create_is_400(api, team, url, form):
    data = {"team": "ac\x00me", "slug": "x", "name": "x", "kind": "syslog", "host": "h", "port": 514}
    before = db_state()
    response = api.post(url, data) if form else api.post(url, data, format="json")
    body = assert_error(response)
    assert "NUL" in body["detail"] or "Null characters" in body["detail"]
    assert db_state() == before


def test_nul_in_a_page_form_is_400(page, team):
    before = db_state()
    response = page.post("/governance/servers/add/", {"slug": "git", "name": "a\x00b"})
    assert response.status_code == 400 and b"NUL" in response.content
    assert db_state() == before


# --- ?limit= / ?offset= -----------------------------------------------------------------------


@pytest.mark.parametrize("param", ["limit", "offset"])
@pytest.mark.parametrize("value", ["99999999999999999999999", "9223372036854775808", "-1", "ten", "1e3", "٣"])
@pytest.mark.parametrize("url", ["/api/v1/servers/", "/api/v1/sessions/", "/api/v1/access-requests/"])
def test_bad_page_parameters_are_400(api, team, url, param, value):
    body = assert_error(api.get(url, {param: value}))
    assert body["code"] == "invalid" and param in body["errors"]


def test_page_parameters_in_range_still_page(api, team):
    for slug in ("a", "b", "c"):
        McpServer.objects.create(team=team, slug=slug, name=slug)
    response = api.get("/api/v1/servers/", {"limit": 2, "offset": 1})
    assert response.status_code == 200
    assert response.json()["count"] == 3 and len(response.json()["results"]) == 2
    assert api.get("/api/v1/servers/", {"offset": 10**9}).json()["results"] == []


# --- deep nesting -----------------------------------------------------------------------------


def test_depth_limit_counts_only_brackets_outside_strings():
    text = json.dumps({"a": "[" * 1000, "b": [[["x"]]]})
    assert json_loads(text)["b"] == [[["x"]]]
    assert json_loads("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    with pytest.raises(ValueError, match="deeper than"):
        json_loads("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    with pytest.raises(ValueError, match="deeper than"):
        json_loads('{"k": "\\"[' + '"' + ', "v": ' + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "}")
    with pytest.raises(ValueError, match="deeper than"):
        yaml_check_depth("a:\n" + "".join("  " * i + "- \n" for i in range(1, MAX_DEPTH + 2)))


def _depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _nested(rng: random.Random, depth: int):
    """A document exactly `depth` deep, with brackets, quotes and escapes inside its strings."""
    if depth == 0:
        return rng.choice(["plain", '[{"x": 1}]', 'q\\"[', "]]}}", 3, None, True])
    inner = _nested(rng, depth - 1)
    siblings = [rng.choice(["{[", 'a"b', 7]) for _ in range(rng.randrange(3))]
    if rng.random() < 0.5:
        return {"k": inner, **{f"s{i}": v for i, v in enumerate(siblings)}}
    return [*siblings, inner]


def test_depth_check_agrees_with_the_parsed_documents_depth():
    """The bracket scan refuses exactly the documents the parser sees nested deeper than the limit."""
    rng = random.Random(12)
    for _ in range(300):
        depth = rng.randrange(MAX_DEPTH - 5, MAX_DEPTH + 6)
        doc = [_nested(rng, depth - 1) for _ in range(rng.randrange(1, 3))]  # many brackets: the scan runs
        text = json.dumps(doc)
        assert _depth(json.loads(text)) == depth
        if depth > MAX_DEPTH:
            with pytest.raises(ValueError, match="deeper than"):
                json_loads(text)
        else:
            assert json_loads(text) == doc


@pytest.mark.parametrize(
    "url",
    ["/api/v1/servers/", "/api/v1/roles/", "/api/v1/access-requests/"],
)
def test_deep_json_to_drf_endpoints_is_400(api, team, url):
    before = db_state()
    body = assert_error(api.post(url, DEEP_JSON, content_type="application/json"))
    assert "deeper than" in body["detail"]
    assert db_state() == before


def test_deep_json_to_audit_ingestion_is_400(gateway):
    sid = open_session(gateway)
    before = db_state()
    raw = '{"events": [' + json.dumps(event(1))[:-1] + ', "arguments": ' + DEEP_JSON + "}]}"
    body = assert_error(
        gateway.post(f"/api/v1/gateway/sessions/{sid}/events/", raw, content_type="application/json")
    )
    assert "deeper than" in body["detail"]
    assert db_state() == before and not AuditEvent.objects.exists()


def test_deep_json_to_unleash_metrics_is_400(gateway, issued):
    unleash = APIClient()
    unleash.credentials(HTTP_AUTHORIZATION=issued.token)
    before = db_state()
    body = assert_error(unleash.post("/api/client/metrics", DEEP_JSON, content_type="application/json"))
    assert "deeper than" in body["detail"]
    assert db_state() == before


def test_deep_yaml_on_the_import_page_is_refused(page, team):
    before = db_state()
    response = page.post("/governance/policy/import/", {"text": DEEP_YAML, "action": "apply"})
    assert response.status_code in (200, 400)
    assert b"nests deeper than" in response.content
    assert db_state() == before


def test_deep_yaml_to_import_policy_is_a_command_error(team, tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text(DEEP_YAML)
    before = db_state()
    with pytest.raises(CommandError, match="nests deeper than"):
        call_command("import_policy", str(path), "--team", team.slug)
    assert db_state() == before


# --- lone surrogates --------------------------------------------------------------------------


def test_lone_surrogate_in_json_is_400(api, team, gateway):
    before = db_state()
    raw = '{"team": "acme", "slug": "git", "name": "bad \\ud800 name", "command": "x"}'
    body = assert_error(api.post("/api/v1/servers/", raw, content_type="application/json"))
    assert "surrogate" in body["detail"]
    sid = open_session(gateway)
    before = db_state()
    raw = '{"events": [' + json.dumps(event(1))[:-1] + ', "args_summary": "\\udc00"}]}'
    body = assert_error(
        gateway.post(f"/api/v1/gateway/sessions/{sid}/events/", raw, content_type="application/json")
    )
    assert "surrogate" in body["detail"]
    assert db_state() == before


def test_surrogate_pair_escape_is_still_text(api, team):
    raw = '{"team": "acme", "slug": "git", "name": "smile \\ud83d\\ude00", "command": "x"}'
    response = api.post("/api/v1/servers/", raw, content_type="application/json")
    assert response.status_code == 201, response.content
    assert McpServer.objects.get(team=team, slug="git").name == "smile \U0001f600"


def test_lone_surrogate_in_yaml_is_refused(page, team, tmp_path):
    text = 'mcp_access:\n  "bad \\ud800 role":\n    allowed_servers: []\n'
    before = db_state()
    response = page.post("/governance/policy/import/", {"text": text, "action": "apply"})
    assert response.status_code in (200, 400)
    assert b"surrogate" in response.content
    path = tmp_path / "surrogate.yaml"
    path.write_text(text)
    with pytest.raises(CommandError, match="surrogate"):
        call_command("import_policy", str(path), "--team", team.slug)
    assert db_state() == before


# --- X-Mcpgov-Bundle-Version ------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["9" * 5000, "99999999999999999999", "2147483648", "²", "٣", "3\u00a0", "x" * 100_000]
)
def test_bad_bundle_version_header_is_400(team, issued, gateway, value):
    _clear_caches()
    bundle_publish(environment=issued.client.environment, reason="test")
    before = db_state()
    seen = EnforcementClient.objects.values("last_seen_at", "bundle_version").get(pk=issued.client.pk)
    response = gateway.get("/api/v1/bundle/", HTTP_X_MCPGOV_BUNDLE_VERSION=value)
    body = assert_error(response)
    assert body["code"] == "invalid_bundle_version"
    assert db_state() == before
    assert EnforcementClient.objects.values("last_seen_at", "bundle_version").get(pk=issued.client.pk) == seen


def test_good_bundle_version_header_is_recorded(team, issued, gateway):
    _clear_caches()
    bundle_publish(environment=issued.client.environment, reason="test")
    assert gateway.get("/api/v1/bundle/", HTTP_X_MCPGOV_BUNDLE_VERSION=" 7 ").status_code == 200
    assert EnforcementClient.objects.get(pk=issued.client.pk).bundle_version == 7


# --- deletes refused by references ------------------------------------------------------------


def test_deleting_an_environment_with_audited_sessions_is_409(api, team):
    # Its bundles would cascade; its sessions' audit events are PROTECTed (append-only).
    staging = team.environments.get(name="staging")
    bundle_publish(environment=staging, reason="test")
    gw = APIClient()
    gw.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_client(team, staging, 's').token}")
    sid = open_session(gw)
    assert (
        gw.post(f"/api/v1/gateway/sessions/{sid}/events/", {"events": [event(1)]}, format="json").status_code
        == 200
    )
    before = db_state()
    body = assert_error(api.delete(f"/api/v1/environments/{staging.pk}/"), 409)
    assert body["code"] == "protected" and "nothing was changed" in body["detail"]
    assert "audit events" in body["detail"]
    assert Environment.objects.filter(pk=staging.pk).exists()
    assert db_state() == before


def test_deleting_a_role_an_access_request_refers_to_is_409(api, team, requester):
    p = policy(team)
    file_request(team, requester, p)
    before = db_state()
    body = assert_error(api.delete(f"/api/v1/roles/{p['role'].pk}/"), 409)
    assert body["code"] == "protected" and "access request" in body["detail"]
    assert AgentRole.objects.filter(pk=p["role"].pk).exists()
    assert db_state() == before


def test_uuid_lookups_stay_404(api):
    assert api.get(f"/api/v1/sessions/{uuid.uuid4()}/").status_code == 404
