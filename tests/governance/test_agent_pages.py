"""The Agents pages and /api/v1/agents/, tried by every kind of user (the shared cases of
tests/helpers/permission_matrix.py: anonymous, signed in without a team, each team role, another team's
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
from mcpgov.identity import AgentVerifier, PinnedKeys, TokenRejected
from portal.choices import ChangeEventType, TeamRole
from portal.models import ChangeRecord
from tests.factories import UserFactory, make_member
from tests.governance.test_agents import current_bundle, token_request
from tests.helpers.permission_matrix import Case, PageMatrix, edit_controls

pytestmark = pytest.mark.django_db


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
OUR_NAMES = ["acme-ci", "acme-claude", "Acme CI", "acme_code_agent"]


class TestAgentPages(PageMatrix):
    pages = PAGES
    form_pages = FORM_PAGES
    writes = WRITES
    read_page_shows = ("acme-ci", "acme_code_agent")
    our_names = tuple(OUR_NAMES)
    silent_writes = ("agent-create", "agent-api-key-create")  # the page that shows the secret once

    @pytest.fixture
    def objects(self, ag):
        return ag

    def db_state(self):
        return db_state()


def test_another_teams_admin_never_sees_the_agents_and_cannot_bind_to_them(client, ag, outsider):
    client.force_login(outsider)
    html = client.get(reverse("governance:agent-list")).content.decode()
    assert "globex-bot" in html and [n for n in OUR_NAMES if n in html] == []
    # Registering an agent of their own with our role or environment: not a choice, nothing created.
    before = db_state()
    response = client.post(reverse("governance:agent-create"), create_data(ag, slug="sneaky"))
    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()
    assert db_state() == before


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
        ("patch", f"/api/v1/agents/{p.agent.pk}/", {"name": "Renamed", "roles": ["acme_docs_agent"]}),
        ("post", f"/api/v1/agents/{p.agent.pk}/revoke/", None),
        ("post", f"/api/v1/agents/{p.agent.pk}/api-keys/", None),
        ("post", f"/api/v1/agents/{p.agent.pk}/api-keys/{p.key.pk}/revoke/", None),
    ]


def test_api_anonymous_gets_nothing_and_changes_nothing(ag):
    api = api_as()
    before = db_state()
    assert api.get("/api/v1/agents/").status_code == 403
    assert api.get(f"/api/v1/agents/{ag.agent.pk}/").status_code == 403
    for method, url, body in api_writes(ag):
        response = getattr(api, method)(url, body, format="json")
        assert response.status_code == 403 and response.json()["code"] == "not_authenticated", url
    assert db_state() == before


def test_api_signed_in_without_a_team_sees_no_agent_and_changes_nothing(ag):
    api = api_as(UserFactory(username="no-team"))
    before = db_state()
    assert api.get("/api/v1/agents/").json()["results"] == []
    assert api.get(f"/api/v1/agents/{ag.agent.pk}/").status_code == 404
    for method, url, body in api_writes(ag):
        expected = 400 if url == "/api/v1/agents/" else 404  # a create: the team field refuses "acme"
        assert getattr(api, method)(url, body, format="json").status_code == expected, url
    assert db_state() == before


@pytest.mark.parametrize("role", [TeamRole.VIEWER, TeamRole.REVIEWER, TeamRole.REQUESTER])
def test_api_members_read_but_every_write_is_403(ag, team, role):
    api = api_as(make_member(team, role, username=f"api-{role}"))
    rows = api.get("/api/v1/agents/").json()["results"]
    assert sorted(r["slug"] for r in rows) == ["acme-ci", "acme-claude"]
    assert "client_secret" not in str(rows) and "key_hash" not in str(rows)
    before = db_state()
    for method, url, data in api_writes(ag):
        response = getattr(api, method)(url, data, format="json")
        assert response.status_code == 403 and response.json()["code"] == "permission_denied", url
    # A body that would not validate is refused for the permission too, before it is read.
    assert api.patch(f"/api/v1/agents/{ag.agent.pk}/", {"team": "globex"}, format="json").status_code == 403
    assert db_state() == before


def test_api_another_team_gets_404_and_cannot_register_in_this_team(ag, outsider):
    api = api_as(outsider)
    before = db_state()
    assert api.get(f"/api/v1/agents/{ag.agent.pk}/").status_code == 404
    for method, url, data in api_writes(ag):
        expected = 400 if url == "/api/v1/agents/" else 404  # a create: the team field refuses it
        response = getattr(api, method)(url, data, format="json")
        assert response.status_code == expected, url
        assert "acme-ci" not in response.content.decode()
    # Their own team, with our role: refused, nothing made.
    response = api.post("/api/v1/agents/", {**NEW, "team": "globex"}, format="json")
    assert response.status_code == 400 and "acme_code_agent" in str(response.json())
    # Their own agent, rebound to our role, or our key revoked through their agent: refused.
    theirs = f"/api/v1/agents/{ag.foreign.pk}/"
    assert api.patch(theirs, {"roles": ["acme_code_agent"]}, format="json").status_code == 400
    assert api.post(f"{theirs}api-keys/{ag.key.pk}/revoke/").status_code == 404
    assert db_state() == before


def test_api_admin_registers_revokes_and_issues_keys(ag, admin):
    api = api_as(admin)
    response = api.post("/api/v1/agents/", NEW, format="json")
    assert response.status_code == 201 and response.json()["client_secret"]
    pk = response.json()["id"]
    assert api.get(f"/api/v1/agents/{pk}/").json()["roles"] == ["acme_code_agent"]
    key = api.post(f"/api/v1/agents/{pk}/api-keys/").json()
    assert key["key"].startswith(f"mcpgov_agent_{key['prefix']}_")
    listed = api.get(f"/api/v1/agents/{pk}/").json()["api_keys"]
    assert [(k["id"], k["prefix"], k["revoked"]) for k in listed] == [(key["id"], key["prefix"], False)]
    assert key["key"] not in str(listed)
    assert api.post(f"/api/v1/agents/{pk}/revoke/").json()["revoked"] is True
    assert api.post(f"/api/v1/agents/{pk}/api-keys/").status_code == 400  # a revoked agent gets none


def test_api_patch_changes_what_the_edit_page_changes_through_the_same_service(
    ag, admin, django_capture_on_commit_callbacks
):
    api = api_as(admin)
    url = f"/api/v1/agents/{ag.agent.pk}/"
    bundle_publish(environment=ag.dev)
    before = current_bundle(ag.team).version
    with django_capture_on_commit_callbacks(execute=True):
        response = api.patch(
            url,
            {"name": "Acme CI (main)", "roles": ["acme_docs_agent"], "environments": ["staging"]},
            format="json",
        )
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["name"], body["roles"], body["environments"]) == (
        "Acme CI (main)",
        ["acme_docs_agent"],
        ["staging"],
    )
    assert (body["slug"], body["team"]) == ("acme-ci", "acme")
    # The same history row as the page writes, and the bundles republished at once.
    change = ChangeRecord.objects.get(event_type=ChangeEventType.AGENT_UPDATED, object_id=str(ag.agent.pk))
    assert change.actor == admin and change.changes["roles"] == [["acme_code_agent"], ["acme_docs_agent"]]
    assert change.changes["name"] == ["Acme CI", "Acme CI (main)"]
    assert current_bundle(ag.team).version > before
    assert current_bundle(ag.team).agent(str(ag.agent.pk)) is None
    assert current_bundle(ag.team, "staging").agent(str(ag.agent.pk)).roles == ("acme_docs_agent",)
    # A field left out keeps its value.
    assert api.patch(url, {"name": "Acme CI"}, format="json").json()["roles"] == ["acme_docs_agent"]
    # An interactive agent's redirect URIs, under the registration's rules.
    claude = f"/api/v1/agents/{ag.claude.pk}/"
    assert api.patch(claude, {"redirect_uris": "http://127.0.0.1:40000/cb"}, format="json").status_code == 200
    ag.claude.application.refresh_from_db()
    assert ag.claude.application.redirect_uris == "http://127.0.0.1:40000/cb"


@pytest.mark.parametrize(
    "agent_attr, body, message",
    [
        ("agent", {"team": "globex"}, "Cannot be changed"),
        ("agent", {"slug": "other"}, "Cannot be changed"),
        ("agent", {"client_id": "x"}, "Cannot be changed"),
        ("agent", {"public": True}, "Cannot be changed"),
        ("agent", {"is_staff": True}, "Unknown field"),
        ("agent", {"roles": []}, "roles"),
        ("agent", {"roles": ["globex_agent"]}, "No such role in acme: globex_agent"),
        ("agent", {"environments": ["nowhere"]}, "No such environment: nowhere"),
        ("agent", {"name": "x" * 201}, "name"),
        ("agent", {"name": "a\x00b"}, "Null characters"),
        ("agent", {"redirect_uris": "http://127.0.0.1:1/cb"}, "Only an interactive agent"),
        ("claude", {"redirect_uris": ""}, "at least one redirect URI"),
        ("claude", {"redirect_uris": "http://evil.example/cb"}, "use https"),
        ("claude", {"redirect_uris": "https://app.example/cb#frag"}, "no fragment"),
    ],
)
def test_api_patch_refusals_say_why_and_change_nothing(ag, admin, agent_attr, body, message):
    api = api_as(admin)
    before = db_state()
    response = api.patch(f"/api/v1/agents/{getattr(ag, agent_attr).pk}/", body, format="json")
    assert response.status_code == 400 and response.json()["code"] == "invalid", response.content
    assert message in str(response.json()), response.json()
    assert db_state() == before


def test_api_patch_of_a_revoked_agent_is_refused(ag, admin):
    api = api_as(admin)
    api.post(f"/api/v1/agents/{ag.agent.pk}/revoke/")
    before = db_state()
    response = api.patch(f"/api/v1/agents/{ag.agent.pk}/", {"name": "back"}, format="json")
    assert response.status_code == 400 and "revoked" in response.json()["detail"]
    assert db_state() == before
    assert api.put(f"/api/v1/agents/{ag.agent.pk}/", {"name": "x"}, format="json").status_code == 405


def test_api_revokes_a_key_as_the_page_does(ag, admin, django_capture_on_commit_callbacks):
    api = api_as(admin)
    with django_capture_on_commit_callbacks(execute=True):
        issued = api.post(f"/api/v1/agents/{ag.agent.pk}/api-keys/").json()
    hashes = current_bundle(ag.team).agent(str(ag.agent.pk)).api_key_sha256
    assert api_key_sha256(issued["key"]) in hashes and len(hashes) == 2
    url = f"/api/v1/agents/{ag.agent.pk}/api-keys/{issued['id']}/revoke/"
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(url)
    assert response.status_code == 200 and response.json()["revoked"] is True
    assert response.json()["prefix"] == issued["prefix"] and "key" not in response.json()
    assert AgentApiKey.objects.get(pk=issued["id"]).revoked_at is not None
    assert current_bundle(ag.team).agent(str(ag.agent.pk)).api_key_sha256 == (ag.key.key_hash,)
    change = ChangeRecord.objects.get(event_type=ChangeEventType.AGENT_KEY_REVOKED)
    assert change.actor == admin and issued["prefix"] in change.summary
    # Again: nothing more happens. A key of another agent, or no such key: 404.
    before = db_state()
    assert api.post(url).status_code == 200
    assert api.post(f"/api/v1/agents/{ag.claude.pk}/api-keys/{ag.key.pk}/revoke/").status_code == 404
    assert api.post(f"/api/v1/agents/{ag.agent.pk}/api-keys/999999999999999999/revoke/").status_code == 404
    assert db_state() == before


def _key_at_the_gateway(team, key: str):
    """What a gateway makes of `key` with the team's current bundle (mcpgov's own verifier)."""
    verifier = AgentVerifier(
        keys=PinnedKeys(None, {}),
        issuer="http://testserver",
        resource="http://127.0.0.1:8765/mcp",
        team=lambda: team.slug,
        agents=lambda: list(current_bundle(team).agents),
    )
    try:
        return verifier.verify(key).slug
    except TokenRejected as exc:
        return exc.code


@pytest.mark.parametrize("where", ["page", "api"])
def test_a_key_revoked_on_the_page_or_over_the_api_stops_working_at_the_gateway(
    admin_client, ag, admin, where, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        issued = agent_api_key_create(agent=ag.agent)
    assert _key_at_the_gateway(ag.team, issued.key) == "acme-ci"
    with django_capture_on_commit_callbacks(execute=True):
        if where == "page":
            url = reverse("governance:agent-api-key-revoke", args=[ag.agent.pk, issued.api_key.pk])
            assert admin_client.post(url).status_code == 302
        else:
            url = f"/api/v1/agents/{ag.agent.pk}/api-keys/{issued.api_key.pk}/revoke/"
            assert api_as(admin).post(url).status_code == 200
    assert _key_at_the_gateway(ag.team, issued.key) == "unknown_api_key"
    # The agent's other key still works: only the one key was revoked.
    assert current_bundle(ag.team).agent(str(ag.agent.pk)).api_key_sha256 == (ag.key.key_hash,)


def test_the_openapi_schema_documents_patch_and_key_revocation(admin):
    api = api_as(admin)
    paths = api.get("/api/v1/schema/", HTTP_ACCEPT="application/json").json()["paths"]
    patch = paths["/api/v1/agents/{id}/"]["patch"]
    assert "put" not in paths["/api/v1/agents/{id}/"]
    props = patch["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert props.endswith("/PatchedAgentUpdate") or props.endswith("/AgentUpdate")
    revoke = paths["/api/v1/agents/{id}/api-keys/{key_pk}/revoke/"]["post"]
    assert revoke["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/AgentApiKey"
    )


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
