"""The policy REST API: every resource tried by an anonymous user, a viewer, another team's admin
and a permitted admin; denied writes change nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from django.forms.models import model_to_dict
from rest_framework.test import APIClient

from governance.choices import RuleKind
from governance.models import (
    AgentRole,
    Environment,
    GlobalRateLimit,
    McpServer,
    McpTool,
    ServerBinding,
    ServerRateLimit,
    TriggerSettings,
)
from governance.services import environments as env_services
from governance.services import limits as limit_services
from governance.services import roles as role_services
from governance.services import servers as server_services
from portal.choices import TeamRole
from portal.models import ChangeRecord
from tests.factories import make_member


@pytest.fixture
def api():
    return APIClient()


def dev(team):
    return Environment.objects.get(team=team, name="development")


@dataclass
class Resource:
    url: str
    model: type
    make: Any  # team -> an existing object
    create: Any  # team -> payload
    update: dict

    def detail(self, obj) -> str:
        return f"{self.url}{obj.pk}/"


def _server(team, slug="git"):
    return McpServer.objects.filter(team=team, slug=slug).first() or server_services.server_create(
        team=team, slug=slug, command="python"
    )


RESOURCES = {
    "servers": Resource(
        "/api/v1/servers/",
        McpServer,
        lambda t: _server(t),
        lambda t: {
            "team": t.slug,
            "slug": "filesystem",
            "transport": "stdio",
            "command": "mcp-server-filesystem",
            "args": ["/srv"],
            "category": "filesystem",
        },
        {"description": "Git over stdio"},
    ),
    "roles": Resource(
        "/api/v1/roles/",
        AgentRole,
        lambda t: role_services.role_create(team=t, name="code_agent"),
        lambda t: {"team": t.slug, "name": "docs_agent", "description": "reads docs"},
        {"description": "writes code"},
    ),
    "environments": Resource(
        "/api/v1/environments/",
        Environment,
        lambda t: Environment.objects.get(team=t, name="staging"),
        lambda t: {"team": t.slug, "name": "qa", "forbidden_patterns": ["*prod*"]},
        {"note": "shared with QA"},
    ),
    "bindings": Resource(
        "/api/v1/bindings/",
        ServerBinding,
        lambda t: env_services.binding_set(environment=dev(t), server=_server(t), target="/srv/repo"),
        lambda t: {
            "environment": dev(t).pk,
            "server": _server(t, "time").slug,
            "target": "local",
            "permission": "read_write",
        },
        {"permission": "read_write"},
    ),
    "server-limits": Resource(
        "/api/v1/server-limits/",
        ServerRateLimit,
        lambda t: limit_services.server_limits_set(team=t, server=_server(t), max_calls_per_session=50),
        lambda t: {"team": t.slug, "server": _server(t, "time").slug, "max_calls_per_minute": 10},
        {"max_calls_per_session": 5},
    ),
}


def snapshot(model):
    return sorted((model_to_dict(o) for o in model.objects.all()), key=lambda d: d["id"])


@pytest.fixture(params=sorted(RESOURCES))
def resource(request):
    return RESOURCES[request.param]


def test_anonymous_gets_nothing_and_changes_nothing(api, team, resource):
    obj = resource.make(team)
    payload = resource.create(team)
    before = snapshot(resource.model)
    for response in (
        api.get(resource.url),
        api.get(resource.detail(obj)),
        api.post(resource.url, payload, format="json"),
        api.patch(resource.detail(obj), resource.update, format="json"),
        api.delete(resource.detail(obj)),
    ):
        assert response.status_code in (401, 403)
        assert response.json()["code"] == "not_authenticated"
    assert snapshot(resource.model) == before


def test_viewer_reads_but_every_write_is_403_and_changes_nothing(api, team, viewer, resource):
    obj = resource.make(team)
    payload = resource.create(team)
    api.force_authenticate(viewer)
    listed = api.get(resource.url)
    assert listed.status_code == 200 and obj.pk in [r["id"] for r in listed.json()["results"]]
    assert api.get(resource.detail(obj)).status_code == 200
    before, changes = snapshot(resource.model), ChangeRecord.objects.count()
    for response in (
        api.post(resource.url, payload, format="json"),
        api.patch(resource.detail(obj), resource.update, format="json"),
        api.put(resource.detail(obj), {**payload, **resource.update}, format="json"),
        api.delete(resource.detail(obj)),
    ):
        assert response.status_code == 403, response.content
        assert response.json()["code"] == "permission_denied"
    assert snapshot(resource.model) == before and ChangeRecord.objects.count() == changes


def test_other_team_gets_404_and_cannot_create_in_this_team(api, team, outsider, resource):
    obj = resource.make(team)
    payload = resource.create(team)
    api.force_authenticate(outsider)
    assert obj.pk not in [r["id"] for r in api.get(resource.url).json()["results"]]
    before = snapshot(resource.model)
    for response in (
        api.get(resource.detail(obj)),
        api.patch(resource.detail(obj), resource.update, format="json"),
        api.delete(resource.detail(obj)),
    ):
        assert response.status_code == 404
        assert "acme" not in response.content.decode()
    created = api.post(resource.url, payload, format="json")
    assert created.status_code == 400 and created.json()["code"] == "invalid"
    assert snapshot(resource.model) == before


def test_admin_creates_updates_and_deletes_through_the_services(api, team, admin, resource):
    obj = resource.make(team)
    api.force_authenticate(admin)
    changes = ChangeRecord.objects.filter(team=team, actor=admin).count()
    created = api.post(resource.url, resource.create(team), format="json")
    assert created.status_code == 201, created.content
    assert resource.model.objects.filter(pk=created.json()["id"]).exists()
    updated = api.patch(resource.detail(obj), resource.update, format="json")
    assert updated.status_code == 200, updated.content
    for field, value in resource.update.items():
        assert updated.json()[field] == value
    assert api.delete(resource.detail(obj)).status_code == 204
    assert not resource.model.objects.filter(pk=obj.pk).exists()
    assert ChangeRecord.objects.filter(team=team, actor=admin).count() >= changes + 3


# --- resource specifics --------------------------------------------------------------------------------


def test_server_lists_its_tools_read_only_and_tools_take_overrides(api, team, admin, viewer):
    git = _server(team)
    server_services.server_tools_record(
        server=git,
        tools=[
            {"name": "git_log", "description": "log", "input_schema": {}, "annotations": {}},
        ],
    )
    tool = McpTool.objects.get(server=git, name="git_log")
    api.force_authenticate(viewer)
    data = api.get(f"/api/v1/servers/{git.pk}/").json()
    assert data["team"] == "acme" and [t["name"] for t in data["tools"]] == ["git_log"]
    assert data["tools"][0]["access_class"] == "write" and len(data["tools"][0]["definition_hash"]) == 64
    assert (
        api.patch(f"/api/v1/tools/{tool.pk}/", {"access_class_override": "read"}, format="json").status_code
        == 403
    )
    api.force_authenticate(admin)
    # tools are only changed through their own endpoint
    api.patch(f"/api/v1/servers/{git.pk}/", {"tools": []}, format="json")
    assert McpTool.objects.filter(server=git).count() == 1
    response = api.patch(
        f"/api/v1/tools/{tool.pk}/",
        {"access_class_override": "read", "approval_required": True},
        format="json",
    )
    assert response.status_code == 200 and response.json()["access_class"] == "read"
    tool.refresh_from_db()
    assert tool.access_class_override == "read" and tool.approval_required
    assert (
        api.patch(f"/api/v1/tools/{tool.pk}/", {"access_class_override": "maybe"}, format="json").status_code
        == 400
    )


def test_server_requests_policy_through_the_api(api, team, admin, viewer):
    git = _server(team)
    url = f"/api/v1/servers/{git.pk}/"
    api.force_authenticate(viewer)
    assert api.get(url).json()["sampling_allowed"] is False
    assert api.patch(url, {"sampling_allowed": True}, format="json").status_code == 403
    api.force_authenticate(admin)
    response = api.patch(
        url, {"sampling_allowed": True, "elicitation_url_domains": ["example.com"]}, format="json"
    )
    assert response.status_code == 200 and response.json()["elicitation_url_domains"] == ["example.com"]
    for bad in ({"elicitation_url_domains": "example.com"}, {"elicitation_url_domains": ["*.evil"]}):
        assert api.patch(url, bad, format="json").status_code == 400
    git.refresh_from_db()
    assert git.sampling_allowed and git.elicitation_url_domains == ["example.com"]


def test_role_allowlist_add_and_remove(api, team, admin, viewer):
    role = role_services.role_create(team=team, name="code_agent")
    _server(team, "git"), _server(team, "shell")
    api.force_authenticate(viewer)
    url = f"/api/v1/roles/{role.pk}/"
    assert (
        api.post(f"{url}add-server/", {"server": "git", "kind": "allowed"}, format="json").status_code == 403
    )
    api.force_authenticate(admin)
    assert (
        api.post(f"{url}add-server/", {"server": "git", "kind": "allowed"}, format="json").status_code == 200
    )
    data = api.post(f"{url}add-server/", {"server": "shell", "kind": "forbidden"}, format="json").json()
    assert data["allowed_servers"] == ["git"] and data["forbidden_servers"] == ["shell"]
    both = api.post(f"{url}add-server/", {"server": "git", "kind": "forbidden"}, format="json")
    assert both.status_code == 400 and "cannot be both" in both.json()["detail"]
    assert (
        api.post(f"{url}add-server/", {"server": "nope", "kind": "allowed"}, format="json").status_code == 400
    )
    data = api.post(f"{url}remove-server/", {"server": "git"}, format="json").json()
    assert data["allowed_servers"] == [] and role.rules.get().kind == RuleKind.FORBIDDEN


def test_other_teams_server_cannot_be_bound_or_allowed(api, team, other_team, admin):
    _server(other_team, "their_db")
    role = role_services.role_create(team=team, name="code_agent")
    api.force_authenticate(admin)
    bound = api.post("/api/v1/bindings/", {"environment": dev(team).pk, "server": "their_db"}, format="json")
    assert bound.status_code == 400
    allowed = api.post(
        f"/api/v1/roles/{role.pk}/add-server/", {"server": "their_db", "kind": "allowed"}, format="json"
    )
    assert allowed.status_code == 400
    their_env = Environment.objects.get(team=other_team, name="development")
    assert (
        api.post(
            "/api/v1/bindings/", {"environment": their_env.pk, "server": "git"}, format="json"
        ).status_code
        == 400
    )
    assert not ServerBinding.objects.exists()


def test_production_always_requires_authorization(api, team, admin):
    prod = Environment.objects.get(team=team, name="production")
    api.force_authenticate(admin)
    response = api.patch(f"/api/v1/environments/{prod.pk}/", {"requires_authorization": False}, format="json")
    assert response.status_code == 400 and "requires_authorization" in response.json()["errors"]
    prod.refresh_from_db()
    assert prod.requires_authorization
    assert api.delete(f"/api/v1/environments/{prod.pk}/").status_code == 400


def test_duplicate_slug_is_a_400_with_the_error_shape(api, team, admin):
    _server(team)
    api.force_authenticate(admin)
    response = api.post("/api/v1/servers/", {"slug": "git", "command": "python"}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid" and body["detail"] and "errors" in body
    assert McpServer.objects.filter(team=team, slug="git").count() == 1


def test_an_admin_of_two_teams_picks_the_team(api, team, other_team, admin):
    make_member(other_team, TeamRole.ADMIN, username=admin.username)
    api.force_authenticate(admin)
    missing = api.post("/api/v1/roles/", {"name": "ops"}, format="json")
    assert missing.status_code == 400 and "team" in missing.json()["errors"]
    created = api.post("/api/v1/roles/", {"name": "ops", "team": "globex"}, format="json")
    assert created.status_code == 201 and created.json()["team"] == "globex"
    assert AgentRole.objects.get(name="ops").team == other_team
    only_acme = api.get("/api/v1/roles/?team=acme").json()
    assert all(r["team"] == "acme" for r in only_acme["results"])


def test_a_single_team_admin_need_not_name_the_team(api, team, admin):
    api.force_authenticate(admin)
    created = api.post("/api/v1/servers/", {"slug": "time", "command": "python"}, format="json")
    assert created.status_code == 201 and created.json()["team"] == "acme"


@pytest.mark.parametrize(
    ("path", "model", "change"),
    [
        ("/api/v1/global-limits/", GlobalRateLimit, {"max_calls_per_session": 100, "pause_at_percent": 75}),
        (
            "/api/v1/trigger-settings/",
            TriggerSettings,
            {"cascade_write_threshold": 5, "production_url_words": ["prod", "prd"]},
        ),
    ],
)
def test_team_settings_by_slug(api, team, admin, viewer, outsider, path, model, change):
    assert api.get(f"{path}acme/").status_code == 403
    api.force_authenticate(viewer)
    before = snapshot(model)
    assert api.get(f"{path}acme/").status_code == 200
    assert api.patch(f"{path}acme/", change, format="json").status_code == 403
    api.force_authenticate(outsider)
    assert api.get(f"{path}acme/").status_code == 404
    assert api.patch(f"{path}acme/", change, format="json").status_code == 404
    assert [r["team"] for r in api.get(path).json()["results"]] == ["globex"]
    assert snapshot(model) == before
    api.force_authenticate(admin)
    response = api.patch(f"{path}acme/", change, format="json")
    assert response.status_code == 200 and all(response.json()[k] == v for k, v in change.items())
    row = model.objects.get(team=team)
    assert all(getattr(row, k) == v for k, v in change.items())
    bad = api.patch(f"{path}acme/", {next(iter(change)): 0}, format="json")
    assert bad.status_code == 400


def test_jwks_is_public_and_has_no_private_material(api, team):
    from governance.services.signing import signing_key_ensure

    key = signing_key_ensure(team=team)
    response = api.get("/api/v1/keys/?team=acme")
    assert response.status_code == 200
    assert response.json() == {
        "keys": [
            {
                "kty": "OKP",
                "crv": "Ed25519",
                "x": key.public_key,
                "kid": key.kid,
                "alg": "EdDSA",
                "use": "sig",
            }
        ]
    }


def test_openapi_schema_and_docs_are_served_without_a_cdn(api, admin):
    api.force_authenticate(admin)
    schema = api.get("/api/v1/schema/", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for path in (
        "/api/v1/servers/",
        "/api/v1/roles/{id}/add-server/",
        "/api/v1/tools/{id}/",
        "/api/v1/bindings/",
        "/api/v1/global-limits/{team}/",
        "/api/v1/keys/",
    ):
        assert path in paths
    docs = api.get("/api/v1/docs/")
    html = docs.content.decode()
    assert docs.status_code == 200 and "drf_spectacular_sidecar" in html and "cdn" not in html.lower()


def test_list_filters_select_and_a_bad_value_is_a_400_naming_it(api, team, other_team, admin):
    git, fs = _server(team), _server(team, "fs")
    for server, name in ((git, "git_log"), (fs, "read_file")):
        server_services.server_tools_record(
            server=server, tools=[{"name": name, "description": "", "input_schema": {}, "annotations": {}}]
        )
    env_services.binding_set(environment=dev(team), server=git, target="/srv/repo", actor=None)
    api.force_authenticate(admin)
    assert [t["name"] for t in api.get(f"/api/v1/tools/?server={fs.pk}").json()["results"]] == ["read_file"]
    assert api.get("/api/v1/tools/?team=globex").json()["results"] == []
    bindings = api.get(f"/api/v1/bindings/?environment={dev(team).pk}").json()["results"]
    assert [b["server"] for b in bindings] == ["git"]
    for url, field in [
        ("/api/v1/tools/?server=git", "server"),
        ("/api/v1/tools/?server=-1", "server"),
        (f"/api/v1/tools/?server={2**63}", "server"),
        ("/api/v1/bindings/?environment=1.5", "environment"),
        ("/api/v1/access-requests/?status=granted", "status"),
        ("/api/v1/access-requests/?mine=maybe", "mine"),
    ]:
        response = api.get(url)
        assert response.status_code == 400, url
        body = response.json()
        assert body["code"] == "invalid" and body["detail"].startswith(f"{field}: "), body
