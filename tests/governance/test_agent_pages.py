"""The Agents pages and /api/v1/agents/, tried by every kind of user (the shared-case table of
tests/governance/test_views.py: anonymous, signed in without a team, each team role, another team's
admin, the admin), then what an admin does there; and the two credential settings on other forms:
the roles an enforcement client may enforce, a server's unknown-tools policy."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from oauth2_provider.models import Application
from rest_framework.test import APIClient

from governance.models import Agent, AgentApiKey, AgentRole, EnforcementClient, McpServer, PolicyBundle
from governance.services.agents import (
    GRANT_AUTHORIZATION_CODE,
    agent_api_key_create,
    agent_create,
    api_key_sha256,
)
from governance.services.bundles import bundle_publish
from governance.services.servers import server_create
from portal.choices import TeamRole
from portal.models import ChangeRecord
from tests.factories import UserFactory, make_member
from tests.governance.test_agents import current_bundle, token_request
from tests.governance.test_views import POST_FORM, Case, call, edit_controls, ids

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def ag(team, other_team, admin, viewer):
    """A headless agent with a key, an interactive one, and another team's agent (names found nowhere else)."""
    code = AgentRole.objects.create(team=team, name="acme_code_agent")
    docs = AgentRole.objects.create(team=team, name="acme_docs_agent")
    dev = team.environments.get(name="development")
    staging = team.environments.get(name="staging")
    ci = agent_create(team=team, name="Acme CI", slug="acme-ci", roles=[code], environments=[dev])
    key = agent_api_key_create(agent=ci.agent)
    claude = agent_create(
        team=team,
        name="Acme Claude",
        slug="acme-claude",
        roles=[code],
        environments=[dev],
        grant=GRANT_AUTHORIZATION_CODE,
        public=True,
        redirect_uris="http://127.0.0.1:33418/callback",
    )
    theirs = AgentRole.objects.create(team=other_team, name="globex_agent")
    foreign = agent_create(
        team=other_team,
        name="Globex bot",
        slug="globex-bot",
        roles=[theirs],
        environments=[other_team.environments.get(name="development")],
    )
    return SimpleNamespace(
        team=team,
        code=code,
        docs=docs,
        dev=dev,
        staging=staging,
        ci=ci,
        agent=ci.agent,
        key=key.api_key,
        claude=claude.agent,
        theirs=theirs,
        foreign=foreign.agent,
    )


def db_state() -> dict[str, list[dict[str, Any]]]:
    """Every agent, key, OAuth client, binding and history row: a refused request changes none."""
    state = {
        m.__name__: list(m.objects.order_by("pk").values())
        for m in (Agent, AgentApiKey, Application, ChangeRecord, PolicyBundle)
    }
    state["bindings"] = sorted(Agent.roles.through.objects.values_list("agent_id", "agentrole_id")) + sorted(
        Agent.environments.through.objects.values_list("agent_id", "environment_id")
    )
    return state


def create_data(p, **extra):
    return {
        "name": "Acme nightly",
        "slug": "acme-nightly",
        "grant": "client_credentials",
        "redirect_uris": "",
        "roles": [p.code.pk],
        "environments": [p.dev.pk],
        **extra,
    }


PAGES = [
    Case("agent-list", "governance:agent-list"),
    Case("agent-detail", "governance:agent-detail", lambda p: {"pk": p.agent.pk}, object_page=True),
]
FORM_PAGES = [
    Case("agent-create-form", "governance:agent-create", perm="manage_clients"),
    Case(
        "agent-edit-form",
        "governance:agent-edit",
        lambda p: {"pk": p.agent.pk},
        object_page=True,
        perm="manage_clients",
    ),
]
WRITES = [
    Case("agent-create", "governance:agent-create", method="post", data=create_data, perm="manage_clients"),
    Case(
        "agent-edit",
        "governance:agent-edit",
        lambda p: {"pk": p.agent.pk},
        "post",
        lambda p: {
            "name": "Acme CI",
            "roles": [p.code.pk, p.docs.pk],
            "environments": [p.dev.pk, p.staging.pk],
        },
        object_page=True,
        perm="manage_clients",
    ),
    Case(
        "agent-revoke",
        "governance:agent-revoke",
        lambda p: {"pk": p.agent.pk},
        "post",
        object_page=True,
        perm="manage_clients",
    ),
    Case(
        "agent-api-key-create",
        "governance:agent-api-key-create",
        lambda p: {"pk": p.agent.pk},
        "post",
        object_page=True,
        perm="manage_clients",
    ),
    Case(
        "agent-api-key-revoke",
        "governance:agent-api-key-revoke",
        lambda p: {"pk": p.agent.pk, "key_pk": p.key.pk},
        "post",
        object_page=True,
        perm="manage_clients",
    ),
]
ALL = PAGES + FORM_PAGES + WRITES
OUR_NAMES = ["acme-ci", "acme-claude", "Acme CI", "acme_code_agent"]


@pytest.mark.parametrize("case", ALL, ids=ids(ALL))
def test_anonymous_user_is_sent_to_login_and_nothing_changes(client, ag, case):
    before = db_state()
    response = call(client, case, ag)
    assert response.status_code == 302 and response.url.startswith(reverse("login") + "?next=")
    assert db_state() == before


@pytest.mark.parametrize("case", ALL, ids=ids(ALL))
def test_signed_in_user_without_a_team_gets_404_and_nothing_changes(client, ag, case):
    client.force_login(UserFactory(username="no-team-user"))
    before = db_state()
    response = call(client, case, ag)
    assert response.status_code == 404
    assert "You are not a member of any team yet" in response.content.decode()
    assert db_state() == before


@pytest.mark.parametrize("role", [TeamRole.VIEWER, TeamRole.REVIEWER, TeamRole.REQUESTER])
@pytest.mark.parametrize("case", PAGES, ids=ids(PAGES))
def test_members_read_the_agents_without_edit_controls(client, ag, team, case, role):
    client.force_login(make_member(team, role, username=f"reader-{role}"))
    response = call(client, case, ag)
    html = response.content.decode()
    assert response.status_code == 200 and "acme-ci" in html and "acme_code_agent" in html
    assert edit_controls(html) == []


@pytest.mark.parametrize("role", [TeamRole.VIEWER, TeamRole.REVIEWER, TeamRole.REQUESTER])
@pytest.mark.parametrize("case", FORM_PAGES + WRITES, ids=ids(FORM_PAGES + WRITES))
def test_members_without_manage_clients_are_refused_and_nothing_changes(client, ag, team, case, role):
    client.force_login(make_member(team, role, username=f"refused-{role}"))
    before = db_state()
    assert call(client, case, ag).status_code == 403
    assert db_state() == before


@pytest.mark.parametrize(
    "case", [c for c in ALL if c.object_page], ids=ids([c for c in ALL if c.object_page])
)
def test_another_teams_admin_gets_404_and_nothing_changes(client, ag, outsider, case):
    client.force_login(outsider)
    before = db_state()
    assert call(client, case, ag).status_code == 404
    assert db_state() == before


def test_another_teams_admin_never_sees_the_agents_and_cannot_bind_to_them(client, ag, outsider):
    client.force_login(outsider)
    html = client.get(reverse("governance:agent-list")).content.decode()
    assert "globex-bot" in html and [n for n in OUR_NAMES if n in html] == []
    # Registering an agent of their own with our role or environment: not a choice, nothing created.
    before = db_state()
    response = client.post(reverse("governance:agent-create"), create_data(ag, slug="sneaky"))
    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()
    assert db_state() == before


@pytest.mark.parametrize("case", PAGES, ids=ids(PAGES))
def test_admin_sees_edit_controls(client, ag, admin, case):
    client.force_login(admin)
    assert edit_controls(call(client, case, ag).content.decode())


@pytest.mark.parametrize("case", FORM_PAGES, ids=ids(FORM_PAGES))
def test_admin_opens_the_forms(client, ag, admin, case):
    client.force_login(admin)
    response = call(client, case, ag)
    assert response.status_code == 200 and POST_FORM.search(response.content.decode())


def test_nav_links_the_agents_page_for_every_member(client, ag, viewer):
    client.force_login(viewer)
    html = client.get(reverse("dashboard")).content.decode()
    assert f'href="{reverse("governance:agent-list")}"' in html


# --- what an admin does -----------------------------------------------------------------------------


@pytest.fixture
def admin_client(client, admin):
    client.force_login(admin)
    return client


def test_registering_a_headless_agent_shows_the_secret_once_and_it_gets_a_token(admin_client, ag):
    response = admin_client.post(reverse("governance:agent-create"), create_data(ag))
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    issued = response.context["issued"]
    html = response.content.decode()
    assert issued.client_secret and issued.client_secret in html and issued.client_id in html
    agent = Agent.objects.get(team=ag.team, slug="acme-nightly")
    assert agent.application.client_secret != issued.client_secret  # DOT keeps only a hash
    assert agent.created_by.username == "acme-admin"
    for page in ("governance:agent-list", "governance:agent-detail"):
        args = [agent.pk] if page.endswith("detail") else []
        assert issued.client_secret not in admin_client.get(reverse(page, args=args)).content.decode()
    token = token_request(Client(), issued)
    assert token.status_code == 200, token.content


def test_registration_errors_are_shown_and_nothing_is_created(admin_client, ag):
    before = db_state()
    cases = [
        (
            create_data(ag, grant="authorization_code"),
            "An interactive agent needs at least one redirect URI.",
        ),
        (create_data(ag, public="on"), "A client-credentials agent is a confidential client."),
        (create_data(ag, roles=[]), "This field is required."),
        (create_data(ag, slug="acme-ci"), "already exists"),
        (create_data(ag, grant="authorization_code", redirect_uris="javascript:alert(1)"), "Redirect URI"),
    ]
    for data, message in cases:
        response = admin_client.post(reverse("governance:agent-create"), data)
        assert response.status_code == 200
        assert message in response.content.decode(), (data, message)
    assert db_state() == before


def test_registering_an_interactive_agent_lists_its_redirect_uris(admin_client, ag):
    data = create_data(
        ag,
        slug="acme-cursor",
        grant="authorization_code",
        public="on",
        redirect_uris="http://127.0.0.1:6274/callback\n\nhttp://localhost:6274/callback\n",
    )
    response = admin_client.post(reverse("governance:agent-create"), data)
    assert response.context["issued"].client_secret is None
    agent = Agent.objects.get(slug="acme-cursor")
    assert agent.is_interactive and agent.application.client_type == "public"
    assert agent.application.redirect_uris.split() == [
        "http://127.0.0.1:6274/callback",
        "http://localhost:6274/callback",
    ]
    html = admin_client.get(reverse("governance:agent-detail", args=[agent.pk])).content.decode()
    assert "http://localhost:6274/callback" in html and "PKCE S256 required" in html


def test_editing_rebinds_the_agent_and_republishes_its_bundles(
    admin_client, ag, django_capture_on_commit_callbacks
):
    bundle_publish(environment=ag.dev)
    before = current_bundle(ag.team).version
    url = reverse("governance:agent-edit", args=[ag.agent.pk])
    data = {"name": "Acme CI (main)", "roles": [ag.docs.pk], "environments": [ag.staging.pk]}
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url, data, follow=True)
    assert "Agent acme-ci saved" in response.content.decode()
    ag.agent.refresh_from_db()
    assert ag.agent.name == "Acme CI (main)"
    assert [r.name for r in ag.agent.roles.all()] == ["acme_docs_agent"]
    # Taken out of development: development's next bundle no longer lists it; staging's does.
    assert current_bundle(ag.team).version > before
    assert current_bundle(ag.team).agent(str(ag.agent.pk)) is None
    assert current_bundle(ag.team, "staging").agent(str(ag.agent.pk)).roles == ("acme_docs_agent",)
    change = ChangeRecord.objects.filter(object_id=str(ag.agent.pk), action="update").get()
    assert change.changes["roles"] == [["acme_code_agent"], ["acme_docs_agent"]]
    # The redirect URIs of an interactive agent are edited on the same page.
    url = reverse("governance:agent-edit", args=[ag.claude.pk])
    data = {
        "name": "Acme Claude",
        "roles": [ag.code.pk],
        "environments": [ag.dev.pk],
        "redirect_uris": "http://127.0.0.1:40000/cb",
    }
    admin_client.post(url, data)
    ag.claude.application.refresh_from_db()
    assert ag.claude.application.redirect_uris == "http://127.0.0.1:40000/cb"


def test_a_hostile_admin_cannot_bind_an_agent_to_another_teams_role(admin_client, ag):
    before = db_state()
    url = reverse("governance:agent-edit", args=[ag.agent.pk])
    response = admin_client.post(url, {"name": "x", "roles": [ag.theirs.pk], "environments": [ag.dev.pk]})
    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()
    assert db_state() == before


def test_revoking_on_the_page_is_a_kill_switch(admin_client, ag, django_capture_on_commit_callbacks):
    client_id = ag.agent.application.client_id
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("governance:agent-revoke", args=[ag.agent.pk]), follow=True)
    html = response.content.decode()
    assert "Agent acme-ci revoked" in html and 'class="badge forbidden">revoked<' in html
    assert not Application.objects.filter(client_id=client_id).exists()
    spec = current_bundle(ag.team).agent(str(ag.agent.pk))
    assert spec.revoked and spec.api_key_sha256 == ()
    # No edit or key controls on a revoked agent, and editing it is refused.
    assert edit_controls(html) == []
    response = admin_client.post(
        reverse("governance:agent-edit", args=[ag.agent.pk]),
        {"name": "back", "roles": [ag.code.pk], "environments": [ag.dev.pk]},
        follow=True,
    )
    assert "is revoked" in response.content.decode()
    assert Agent.objects.get(pk=ag.agent.pk).name == "Acme CI"


def test_api_keys_are_shown_once_and_revocable(admin_client, ag, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("governance:agent-api-key-create", args=[ag.agent.pk]))
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    key = response.context["issued"].key
    assert key.startswith("mcpgov_agent_") and key in response.content.decode()
    assert api_key_sha256(key) in current_bundle(ag.team).agent(str(ag.agent.pk)).api_key_sha256
    detail = admin_client.get(reverse("governance:agent-detail", args=[ag.agent.pk])).content.decode()
    assert key not in detail and response.context["issued"].api_key.prefix in detail
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(reverse("governance:agent-api-key-revoke", args=[ag.agent.pk, ag.key.pk]))
    ag.key.refresh_from_db()
    assert ag.key.revoked_at is not None
    assert current_bundle(ag.team).agent(str(ag.agent.pk)).api_key_sha256 == (api_key_sha256(key),)


def test_a_key_of_another_agent_cannot_be_revoked_through_this_one(admin_client, ag):
    before = db_state()
    url = reverse("governance:agent-api-key-revoke", args=[ag.claude.pk, ag.key.pk])
    assert admin_client.post(url).status_code == 404
    assert db_state() == before


# --- /api/v1/agents/ ---------------------------------------------------------------------------------


def api_as(user=None) -> APIClient:
    api = APIClient()
    if user is not None:
        api.force_authenticate(user)
    return api


NEW = {
    "team": "acme",
    "name": "API bot",
    "slug": "acme-api-bot",
    "roles": ["acme_code_agent"],
    "environments": ["development"],
}


def api_writes(p) -> list[tuple[str, str, dict | None]]:
    return [
        ("post", "/api/v1/agents/", NEW),
        ("post", f"/api/v1/agents/{p.agent.pk}/revoke/", None),
        ("post", f"/api/v1/agents/{p.agent.pk}/api-keys/", None),
    ]


def test_api_anonymous_and_no_team_users_get_nothing(ag):
    for api, listing in ((api_as(), 403), (api_as(UserFactory(username="no-team")), 200)):
        before = db_state()
        response = api.get("/api/v1/agents/")
        assert response.status_code == listing
        if listing == 200:
            assert response.json()["results"] == [] if "results" in response.json() else response.json() == []
        assert api.get(f"/api/v1/agents/{ag.agent.pk}/").status_code in (403, 404)
        for method, url, body in api_writes(ag):
            # a create naming a team not theirs is refused on the team field (400), like every create
            assert getattr(api, method)(url, body, format="json").status_code in (400, 403, 404), url
        assert db_state() == before


@pytest.mark.parametrize("role", [TeamRole.VIEWER, TeamRole.REVIEWER, TeamRole.REQUESTER])
def test_api_members_read_but_every_write_is_403(ag, team, role):
    api = api_as(make_member(team, role, username=f"api-{role}"))
    body = api.get("/api/v1/agents/").json()
    rows = body["results"] if isinstance(body, dict) else body
    assert sorted(r["slug"] for r in rows) == ["acme-ci", "acme-claude"]
    assert "client_secret" not in str(rows)
    before = db_state()
    for method, url, data in api_writes(ag):
        assert getattr(api, method)(url, data, format="json").status_code == 403, url
    assert db_state() == before


def test_api_another_team_gets_404_and_cannot_register_in_this_team(ag, outsider):
    api = api_as(outsider)
    before = db_state()
    assert api.get(f"/api/v1/agents/{ag.agent.pk}/").status_code == 404
    for method, url, data in api_writes(ag):
        expected = 400 if url == "/api/v1/agents/" else 404  # a create: the team field refuses it
        assert getattr(api, method)(url, data, format="json").status_code == expected, url
    # Their own team, with our role: refused, nothing made.
    response = api.post("/api/v1/agents/", {**NEW, "team": "globex"}, format="json")
    assert response.status_code == 400 and "acme_code_agent" in str(response.json())
    assert db_state() == before


def test_api_admin_registers_revokes_and_issues_keys(ag, admin):
    api = api_as(admin)
    response = api.post("/api/v1/agents/", NEW, format="json")
    assert response.status_code == 201 and response.json()["client_secret"]
    pk = response.json()["id"]
    assert api.get(f"/api/v1/agents/{pk}/").json()["roles"] == ["acme_code_agent"]
    key = api.post(f"/api/v1/agents/{pk}/api-keys/").json()
    assert key["key"].startswith(f"mcpgov_agent_{key['prefix']}_")
    assert api.post(f"/api/v1/agents/{pk}/revoke/").json()["revoked"] is True
    assert api.post(f"/api/v1/agents/{pk}/api-keys/").status_code == 400  # a revoked agent gets none


# --- the roles an enforcement client may enforce ----------------------------------------------------


def test_the_client_form_offers_only_the_teams_roles_and_binds_the_picked_ones(admin_client, ag):
    html = admin_client.get(reverse("governance:client-create")).content.decode()
    assert "acme_code_agent" in html and "acme_docs_agent" in html and "globex_agent" not in html
    base = {"name": "edge-1", "environment": ag.dev.pk}
    for roles, message in (([], "This field is required."), ([ag.theirs.pk], "Select a valid choice")):
        response = admin_client.post(reverse("governance:client-create"), {**base, "roles": roles})
        assert message in response.content.decode()
    assert not EnforcementClient.objects.exists()
    response = admin_client.post(reverse("governance:client-create"), {**base, "roles": [ag.docs.pk]})
    client = EnforcementClient.objects.get(name="edge-1")
    assert [r.name for r in client.roles.all()] == ["acme_docs_agent"]
    listing = admin_client.get(reverse("governance:client-list")).content.decode()
    assert re.search(r'class="client-roles"><code>acme_docs_agent</code>', listing)
    # The token's whoami says so, and a session in another role is refused.
    token = response.context["token"]
    gateway = APIClient()
    gateway.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert gateway.get("/api/v1/client/").json()["roles"] == ["acme_docs_agent"]
    refused = gateway.post(
        "/api/v1/gateway/sessions/",
        {"id": "5a3c1d2e-0000-4000-8000-000000000001", "role": "acme_code_agent"},
        format="json",
    )
    assert refused.status_code == 400 and refused.json()["code"] == "role_not_allowed"


def test_create_client_command_binds_the_named_roles(ag):
    from io import StringIO

    from django.core.management import CommandError, call_command

    out = StringIO()
    call_command(
        "create_client",
        team="acme",
        env="development",
        name="cli",
        roles=["acme_docs_agent"],
        stdout=out,
        stderr=StringIO(),
    )
    assert [r.name for r in EnforcementClient.objects.get(name="cli").roles.all()] == ["acme_docs_agent"]
    with pytest.raises(CommandError, match="no role globex_agent"):
        call_command(
            "create_client",
            team="acme",
            env="development",
            name="cli2",
            roles=["globex_agent"],
            stdout=StringIO(),
            stderr=StringIO(),
        )
    assert not EnforcementClient.objects.filter(name="cli2").exists()


# --- a server's unknown-tools policy ----------------------------------------------------------------


def test_unknown_tools_policy_is_set_on_the_server_form_and_reaches_the_bundle(
    admin_client, ag, django_capture_on_commit_callbacks
):
    server = server_create(team=ag.team, slug="acme_late", command="python")
    url = reverse("governance:server-edit", args=[server.pk])
    assert 'name="allow_unknown_tools"' in admin_client.get(url).content.decode()
    data = {
        "slug": "acme_late",
        "category": "other",
        "transport": "stdio",
        "command": "python",
        "cost_per_call": "0",
        "allow_unknown_tools": "as_write",
    }
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(url, data)
    server.refresh_from_db()
    assert server.allow_unknown_tools == "as_write"
    detail = admin_client.get(reverse("governance:server-detail", args=[server.pk])).content.decode()
    assert 'data-allow-unknown-tools="as_write"' in detail
    response = admin_client.post(url, {**data, "allow_unknown_tools": "allow_everything"})
    assert "Select a valid choice" in response.content.decode()
    # The API takes it too (PATCH), and only the two values.
    api = api_as(ag.team.memberships.get(role="admin").user)
    assert (
        api.patch(f"/api/v1/servers/{server.pk}/", {"allow_unknown_tools": "x"}, format="json").status_code
        == 400
    )
    assert (
        api.patch(f"/api/v1/servers/{server.pk}/", {"allow_unknown_tools": "deny"}, format="json").json()[
            "allow_unknown_tools"
        ]
        == "deny"
    )
    assert McpServer.objects.get(pk=server.pk).allow_unknown_tools == "deny"


def test_a_viewer_cannot_change_the_unknown_tools_policy(client, ag, viewer):
    server = server_create(team=ag.team, slug="acme_late", command="python")
    client.force_login(viewer)
    response = client.post(
        reverse("governance:server-edit", args=[server.pk]),
        {
            "slug": "acme_late",
            "category": "other",
            "transport": "stdio",
            "command": "python",
            "cost_per_call": "0",
            "allow_unknown_tools": "as_write",
        },
    )
    assert response.status_code == 403
    assert McpServer.objects.get(pk=server.pk).allow_unknown_tools == "deny"
    api = api_as(viewer)
    r = api.patch(f"/api/v1/servers/{server.pk}/", {"allow_unknown_tools": "as_write"}, format="json")
    assert r.status_code == 403
    assert McpServer.objects.get(pk=server.pk).allow_unknown_tools == "deny"
