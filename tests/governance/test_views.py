"""The policy pages, tried by an anonymous user, members without the permission, another team's
admin and a permitted admin (the shared-case table below), then each screen's behaviour."""

from __future__ import annotations

import re
import sys
from types import SimpleNamespace
from typing import Any

import pytest
from django.urls import reverse

from governance.choices import RuleKind
from governance.models import (
    AgentRole,
    Environment,
    GlobalRateLimit,
    McpServer,
    McpTool,
    PolicyDraft,
    PolicyDraftChange,
    RoleServerRule,
    ServerBinding,
    ServerRateLimit,
    ShadowBundle,
    TriggerSettings,
)
from governance.services.environments import binding_set, environment_create
from governance.services.limits import server_limits_set
from governance.services.roles import role_create, role_server_add
from governance.services.servers import server_create, server_tools_record
from portal.choices import TeamRole
from portal.models import ChangeRecord, Invitation, Membership
from tests.factories import UserFactory
from tests.helpers.permission_matrix import Case, PageMatrix, call, ids


@pytest.fixture(autouse=True)
def stdio_discovery_in_the_sandbox(settings):
    # "server-discover" asks a real stdio server (acme_time): the portal runs one only in the sandbox.
    settings.MCPGOV_PORTAL_STDIO_DISCOVERY = "sandbox"


@pytest.fixture
def policy(team, admin, other_team):
    """One of each policy object in `team` (names that appear nowhere else), and a server of another team."""
    server = server_create(
        team=team,
        slug="acme_github",
        transport="http",
        url="https://api.github.com/mcp",
        category="api",
        known_risks="Pushes to main.",
    )
    server_tools_record(
        server=server,
        tools=[
            {"name": "get_issue", "annotations": {"readOnlyHint": True}},
            {"name": "delete_repo", "annotations": {"destructiveHint": True}},
        ],
    )
    spare = server_create(team=team, slug="acme_spare", category="database", command="python")
    role = role_create(team=team, name="acme_code_agent")
    rule = role_server_add(role=role, server=server, kind=RuleKind.ALLOWED)
    environment = environment_create(team=team, name="acme_sandbox", forbidden_patterns=["*prod*"])
    binding = binding_set(environment=environment, server=server, target="/srv/acme", permission="read_only")
    limit = server_limits_set(team=team, server=server, max_calls_per_session=10)
    foreign = server_create(team=other_team, slug="globex_billing")
    # A real MCP server (the mcp-server-time package) for tool discovery.
    time_server = server_create(
        team=team, slug="acme_time", command=sys.executable, args=["-m", "mcp_server_time"]
    )
    extra = UserFactory(username="acme-newcomer")
    return SimpleNamespace(
        team=team,
        server=server,
        spare=spare,
        tool=server.tools.get(name="get_issue"),
        role=role,
        rule=rule,
        environment=environment,
        binding=binding,
        limit=limit,
        foreign=foreign,
        membership=Membership.objects.get(team=team, user=admin),
        extra=extra,
        time_server=time_server,
    )


def db_state() -> dict[str, list[dict[str, Any]]]:
    """Every policy and membership row, to show that a refused request changed nothing."""
    models = [
        McpServer,
        McpTool,
        AgentRole,
        RoleServerRule,
        Environment,
        ServerBinding,
        GlobalRateLimit,
        ServerRateLimit,
        TriggerSettings,
        Membership,
        Invitation,
        ChangeRecord,
        PolicyDraft,
        PolicyDraftChange,
        ShadowBundle,
    ]
    return {m.__name__: list(m.objects.order_by("pk").values()) for m in models}


POLICY_YAML = """\
mcp_access:
  default: deny
  roles:
    acme_code_agent:
      allowed_servers: [acme_github, acme_spare]
      forbidden_servers: []
"""


def server_data(p, **extra):
    return {
        "slug": "acme_new",
        "name": "New",
        "category": "other",
        "transport": "stdio",
        "command": "python",
        "args": "-m\nmcp_server_time",
        "cost_per_call": "0.01",
        **extra,
    }


def env_data(p, **extra):
    return {
        "name": "acme_qa",
        "description": "",
        "forbidden_patterns": "*prod*\n*live*",
        "note": "",
        "order": "5",
        **extra,
    }


PAGES = [
    Case("dashboard", "dashboard"),
    Case("server-list", "governance:server-list"),
    Case("server-detail", "governance:server-detail", lambda p: {"pk": p.server.pk}, object_page=True),
    Case("role-list", "governance:role-list"),
    Case("role-detail", "governance:role-detail", lambda p: {"pk": p.role.pk}, object_page=True),
    Case("environment-list", "governance:environment-list"),
    Case(
        "environment-detail",
        "governance:environment-detail",
        lambda p: {"pk": p.environment.pk},
        object_page=True,
    ),
    Case("limits", "governance:limits"),
    Case("history", "governance:history"),
    Case("policy-import-page", "governance:policy-import"),
    Case("policy-export", "governance:policy-export"),
    Case("members", "members"),
    Case("effective-policy", "governance:effective-policy"),
    Case("draft-detail", "governance:draft-detail", draft=True),
]

# GET pages that need a permission and show no form to post (the simulation replays every session).
GUARDED_PAGES = [
    Case("draft-simulation", "audit:draft-simulation", perm="change_policy", draft=True),
]

FORM_PAGES = [
    Case("server-create-form", "governance:server-create", perm="change_policy"),
    Case(
        "server-edit-form",
        "governance:server-edit",
        lambda p: {"pk": p.server.pk},
        object_page=True,
        perm="change_policy",
    ),
    Case(
        "server-delete-confirm",
        "governance:server-delete",
        lambda p: {"pk": p.server.pk},
        object_page=True,
        perm="change_policy",
    ),
    Case("role-create-form", "governance:role-create", perm="change_policy"),
    Case(
        "role-edit-form",
        "governance:role-edit",
        lambda p: {"pk": p.role.pk},
        object_page=True,
        perm="change_policy",
    ),
    Case(
        "role-delete-confirm",
        "governance:role-delete",
        lambda p: {"pk": p.role.pk},
        object_page=True,
        perm="change_policy",
    ),
    Case("environment-create-form", "governance:environment-create", perm="change_policy"),
    Case(
        "environment-edit-form",
        "governance:environment-edit",
        lambda p: {"pk": p.environment.pk},
        object_page=True,
        perm="change_policy",
    ),
    Case(
        "environment-delete-confirm",
        "governance:environment-delete",
        lambda p: {"pk": p.environment.pk},
        object_page=True,
        perm="change_policy",
    ),
    Case(
        "binding-edit-form",
        "governance:binding-edit",
        lambda p: {"pk": p.binding.pk},
        object_page=True,
        perm="change_policy",
    ),
    Case("server-limits-create-form", "governance:server-limits-create", perm="change_policy"),
    Case(
        "server-limits-edit-form",
        "governance:server-limits-edit",
        lambda p: {"pk": p.limit.pk},
        object_page=True,
        perm="change_policy",
    ),
    Case(
        "server-limits-delete-confirm",
        "governance:server-limits-delete",
        lambda p: {"pk": p.limit.pk},
        object_page=True,
        perm="change_policy",
    ),
]

WRITES = [
    Case("server-create", "governance:server-create", method="post", data=server_data, perm="change_policy"),
    Case(
        "server-edit",
        "governance:server-edit",
        lambda p: {"pk": p.server.pk},
        "post",
        lambda p: server_data(
            p,
            slug="acme_github",
            transport="http",
            command="",
            args="",
            url="https://api.github.com/mcp",
            name="Renamed",
        ),
        object_page=True,
        perm="change_policy",
    ),
    Case(
        "server-delete",
        "governance:server-delete",
        lambda p: {"pk": p.server.pk},
        "post",
        object_page=True,
        perm="change_policy",
    ),
    Case(
        "tool-edit",
        "governance:tool-edit",
        lambda p: {"pk": p.tool.pk},
        "post",
        lambda p: {
            f"tool-{p.tool.pk}-access_class_override": "write",
            f"tool-{p.tool.pk}-approval_required": "on",
        },
        object_page=True,
        perm="change_policy",
    ),
    Case(
        "role-create",
        "governance:role-create",
        method="post",
        data=lambda p: {"name": "acme_db_agent"},
        perm="change_policy",
    ),
    Case(
        "role-edit",
        "governance:role-edit",
        lambda p: {"pk": p.role.pk},
        "post",
        lambda p: {"name": "acme_code_agent", "description": "Changed."},
        object_page=True,
        perm="change_policy",
    ),
    Case(
        "role-delete",
        "governance:role-delete",
        lambda p: {"pk": p.role.pk},
        "post",
        object_page=True,
        perm="change_policy",
    ),
    Case(
        "role-server-add",
        "governance:role-server-add",
        lambda p: {"pk": p.role.pk},
        "post",
        lambda p: {"server": p.spare.pk, "kind": "forbidden"},
        object_page=True,
        perm="change_policy",
    ),
    Case(
        "role-server-remove",
        "governance:role-server-remove",
        lambda p: {"pk": p.role.pk, "rule_pk": p.rule.pk},
        "post",
        object_page=True,
        perm="change_policy",
    ),
    Case(
        "environment-create",
        "governance:environment-create",
        method="post",
        data=env_data,
        perm="change_policy",
    ),
    Case(
        "environment-edit",
        "governance:environment-edit",
        lambda p: {"pk": p.environment.pk},
        "post",
        lambda p: env_data(p, name="acme_sandbox", forbidden_patterns="*prod*\n*main*"),
        object_page=True,
        perm="change_policy",
    ),
    Case(
        "environment-delete",
        "governance:environment-delete",
        lambda p: {"pk": p.environment.pk},
        "post",
        object_page=True,
        perm="change_policy",
    ),
    Case(
        "binding-create",
        "governance:binding-create",
        lambda p: {"pk": p.environment.pk},
        "post",
        lambda p: {
            "server": p.spare.pk,
            "target_kind": "url",
            "target": "postgresql://db/acme",
            "permission": "read_write",
        },
        object_page=True,
        perm="change_policy",
    ),
    Case(
        "binding-edit",
        "governance:binding-edit",
        lambda p: {"pk": p.binding.pk},
        "post",
        lambda p: {"target_kind": "path", "target": "/srv/other", "permission": "read_write"},
        object_page=True,
        perm="change_policy",
    ),
    Case(
        "binding-delete",
        "governance:binding-delete",
        lambda p: {"pk": p.binding.pk},
        "post",
        object_page=True,
        perm="change_policy",
    ),
    Case(
        "global-limits-edit",
        "governance:global-limits-edit",
        method="post",
        data=lambda p: {"max_calls_per_session": "200", "max_calls_per_minute": "", "pause_at_percent": "75"},
        perm="change_policy",
    ),
    Case(
        "trigger-settings-edit",
        "governance:trigger-settings-edit",
        method="post",
        data=lambda p: {
            "cascade_write_threshold": "4",
            "large_data_bytes": "2048",
            "production_url_words": "prod\nlive",
        },
        perm="change_policy",
    ),
    Case(
        "server-limits-create",
        "governance:server-limits-create",
        method="post",
        data=lambda p: {"server": p.spare.pk, "max_calls_per_minute": "30"},
        perm="change_policy",
    ),
    Case(
        "server-limits-edit",
        "governance:server-limits-edit",
        lambda p: {"pk": p.limit.pk},
        "post",
        lambda p: {"max_calls_per_session": "20", "max_response_bytes": "4096"},
        object_page=True,
        perm="change_policy",
    ),
    Case(
        "server-limits-delete",
        "governance:server-limits-delete",
        lambda p: {"pk": p.limit.pk},
        "post",
        object_page=True,
        perm="change_policy",
    ),
    Case(
        "policy-import-apply",
        "governance:policy-import",
        method="post",
        data=lambda p: {"text": POLICY_YAML, "action": "apply"},
        perm="change_policy",
    ),
    Case(
        "server-discover",
        "governance:server-discover",
        lambda p: {"pk": p.time_server.pk},
        "post",
        object_page=True,
        perm="change_policy",
    ),
    Case(
        "member-invite",
        "member-invite",
        method="post",
        data=lambda p: {"email": "acme-newcomer@example.com", "role": "reviewer"},
        perm="manage_members",
    ),
    Case(
        "member-edit",
        "member-edit",
        lambda p: {"pk": p.viewer_membership.pk},
        "post",
        lambda p: {"role": "reviewer", "is_auditor": "on"},
        object_page=True,
        perm="manage_members",
    ),
    Case(
        "member-remove",
        "member-remove",
        lambda p: {"pk": p.viewer_membership.pk},
        "post",
        object_page=True,
        perm="manage_members",
    ),
]

DRAFT_WRITES = [
    Case("draft-publish", "governance:draft-publish", method="post", perm="change_policy", draft=True),
    Case("draft-approve", "governance:draft-approve", method="post", perm="change_policy", draft=True),
    Case(
        "draft-discard",
        "governance:draft-discard",
        method="post",
        data=lambda p: {"reason": "not now"},
        perm="change_policy",
        draft=True,
    ),
    Case("draft-shadow", "governance:draft-shadow", method="post", perm="change_policy", draft=True),
    Case(
        "draft-change-remove",
        "governance:draft-change-remove",
        lambda p: {"position": 1},
        "post",
        perm="change_policy",
        draft=True,
    ),
]
WRITES += DRAFT_WRITES


def open_draft(team) -> PolicyDraft:
    """Switch the team to drafts; another admin (so `admin` may approve) drafts a role change."""
    from governance.services.drafts import DraftChangeRecorded
    from governance.services.roles import role_update
    from governance.services.teams import team_policy_settings_set
    from tests.factories import make_member

    team_policy_settings_set(team=team, policy_edits_immediate=False)
    drafter = make_member(team, TeamRole.ADMIN, username="acme-drafter")
    with pytest.raises(DraftChangeRecorded) as info:
        role_update(
            role=AgentRole.objects.get(team=team, name="acme_code_agent"), description="D.", actor=drafter
        )
    return info.value.draft


@pytest.fixture
def p(policy, team, viewer, request):
    policy.viewer_membership = Membership.objects.get(team=team, user=viewer)
    callspec = getattr(request.node, "callspec", None)
    case = callspec.params.get("case") if callspec else None
    if isinstance(case, Case) and case.draft:
        policy.draft = open_draft(team)
    return policy


# --- the shared cases (tests/helpers/permission_matrix.py) -------------------------------------------


class TestPolicyPages(PageMatrix):
    pages = PAGES
    guarded_pages = GUARDED_PAGES
    form_pages = FORM_PAGES
    writes = WRITES
    refused_roles = (TeamRole.VIEWER, TeamRole.REVIEWER)
    no_team_status = {"dashboard": 200}
    pages_without_edit_controls = ("history", "policy-export", "effective-policy")
    our_names = (
        "acme_github",
        "acme_spare",
        "acme_code_agent",
        "acme_sandbox",
        "/srv/acme",
        "acme-admin",
        "acme-viewer",
    )

    @pytest.fixture
    def objects(self, p):
        return p

    def db_state(self):
        return db_state()


@pytest.mark.parametrize("case", GUARDED_PAGES, ids=ids(GUARDED_PAGES))
def test_admin_opens_guarded_pages(client, p, admin, case):
    client.force_login(admin)
    response = call(client, case, p)
    assert response.status_code == 200
    assert 'data-environment="acme_sandbox"' in response.content.decode()


@pytest.mark.parametrize("case", DRAFT_WRITES + GUARDED_PAGES, ids=ids(DRAFT_WRITES + GUARDED_PAGES))
def test_other_teams_admin_never_reaches_the_teams_draft(client, p, outsider, case):
    """The draft pages are the signed-in team's: another team's admin acts on (its own) nothing."""
    client.force_login(outsider)
    before = db_state()
    response = call(client, case, p, follow=True)
    assert response.status_code == 200
    assert db_state() == before
    assert "acme_code_agent" not in response.content.decode()


# --- each screen's behaviour --------------------------------------------------------------------


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


@pytest.fixture
def admin_client(client, admin):
    client.force_login(admin)
    return client


def test_server_list_filters_by_category(admin_client, p):
    response = admin_client.get(reverse("governance:server-list"), {"category": "database"})
    html = response.content.decode()
    assert "acme_spare" in html and "acme_github" not in html
    html = admin_client.get(reverse("governance:server-list")).content.decode()
    assert "acme_spare" in html and "acme_github" in html


def test_server_create_shows_the_services_validation_errors(admin_client, p):
    data = server_data(p, slug="acme_github")  # taken in this team
    response = admin_client.post(reverse("governance:server-create"), data)
    assert response.status_code == 200
    assert "already exists" in response.content.decode()
    data = server_data(p, transport="http", url="")
    data.update(command="python", slug="acme_other")
    response = admin_client.post(reverse("governance:server-create"), data)
    assert "An HTTP server has a URL, not a command." in response.content.decode()
    assert not McpServer.objects.filter(slug="acme_other").exists()


def test_server_create_parses_lists_one_per_line(admin_client, p):
    data = server_data(p, adr_links="https://adr.example.com/1\n\nhttps://adr.example.com/2\n")
    response = admin_client.post(reverse("governance:server-create"), data)
    server = McpServer.objects.get(team=p.team, slug="acme_new")
    assert response.url == reverse("governance:server-detail", args=[server.pk])
    assert server.args == ["-m", "mcp_server_time"]
    assert server.adr_links == ["https://adr.example.com/1", "https://adr.example.com/2"]
    response = admin_client.post(
        reverse("governance:server-create"), server_data(p, slug="x2", adr_links="nope")
    )
    assert "nope: Enter a valid URL." in response.content.decode()


def test_server_edit_records_field_diffs_in_the_history(admin_client, p):
    data = server_data(
        p,
        slug="acme_github",
        transport="http",
        command="",
        args="",
        url="https://api.github.com/mcp",
        known_risks="Deletes repositories.",
    )
    admin_client.post(reverse("governance:server-edit", args=[p.server.pk]), data)
    change = ChangeRecord.objects.filter(team=p.team, object_id=str(p.server.pk), action="update").first()
    assert change.changes["known_risks"] == ["Pushes to main.", "Deletes repositories."]
    html = admin_client.get(reverse("governance:history")).content.decode()
    assert "Deletes repositories." in html


def test_server_delete_asks_first_then_deletes(admin_client, p):
    url = reverse("governance:server-delete", args=[p.server.pk])
    assert "Delete server acme_github?" in admin_client.get(url).content.decode()
    assert McpServer.objects.filter(pk=p.server.pk).exists()
    response = admin_client.post(url, follow=True)
    assert "Server acme_github deleted." in messages_of(response)
    assert not McpServer.objects.filter(pk=p.server.pk).exists()


def test_server_detail_shows_tools_classes_annotations_risks(admin_client, p):
    html = admin_client.get(reverse("governance:server-detail", args=[p.server.pk])).content.decode()
    assert re.search(r'class="badge read">read<', html)
    assert re.search(r'class="badge write">write<', html)
    assert "destructiveHint: <code>true</code>" in html
    assert "Pushes to main." in html
    assert "Discover tools" in html


def test_tool_override_in_place_with_htmx_returns_the_row(admin_client, p):
    tool = p.server.tools.get(name="delete_repo")
    response = admin_client.post(
        reverse("governance:tool-edit", args=[tool.pk]),
        {f"tool-{tool.pk}-access_class_override": "read", f"tool-{tool.pk}-approval_required": "on"},
        HTTP_HX_REQUEST="true",
    )
    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html
    assert (
        f'id="tool-{tool.pk}"' in html and 'class="badge read">read<' in html and "approval required" in html
    )
    assert "Tool delete_repo saved" in html  # the message, swapped out of band
    tool.refresh_from_db()
    assert (tool.access_class, tool.approval_required) == ("read", True)
    # back to the class the annotations give
    admin_client.post(
        reverse("governance:tool-edit", args=[tool.pk]), {f"tool-{tool.pk}-access_class_override": ""}
    )
    tool.refresh_from_db()
    assert (tool.access_class_override, tool.access_class, tool.approval_required) == ("", "write", False)


def test_role_allowlist_add_and_remove_by_plain_post(admin_client, p):
    url = reverse("governance:role-server-add", args=[p.role.pk])
    response = admin_client.post(url, {"server": p.spare.pk, "kind": "allowed"})
    assert response.status_code == 302 and response.url == reverse("governance:role-detail", args=[p.role.pk])
    assert p.role.server_slugs("allowed") == ["acme_github", "acme_spare"]
    rule = RoleServerRule.objects.get(role=p.role, server=p.spare)
    response = admin_client.post(
        reverse("governance:role-server-remove", args=[p.role.pk, rule.pk]), follow=True
    )
    assert "acme_spare removed from the allowed servers of acme_code_agent." in messages_of(response)
    assert p.role.server_slugs("allowed") == ["acme_github"]


def test_role_allowlist_add_with_htmx_returns_the_lists(admin_client, p):
    response = admin_client.post(
        reverse("governance:role-server-add", args=[p.role.pk]),
        {"server": p.spare.pk, "kind": "forbidden"},
        HTTP_HX_REQUEST="true",
    )
    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html and 'id="role-rules"' in html
    forbidden = html[html.index('id="forbidden-servers"') :]
    assert "acme_spare" in forbidden.split("<form")[0]
    assert "acme_spare is now forbidden for acme_code_agent." in html


@pytest.mark.parametrize("htmx", [False, True])
def test_server_cannot_be_both_allowed_and_forbidden(admin_client, p, htmx):
    extra = {"HTTP_HX_REQUEST": "true"} if htmx else {}
    before = db_state()
    response = admin_client.post(
        reverse("governance:role-server-add", args=[p.role.pk]),
        {"server": p.server.pk, "kind": "forbidden"},
        **extra,
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert "a server cannot be both allowed and forbidden" in html
    assert 'role="alert"' in html
    assert db_state() == before


def test_role_server_add_refuses_another_teams_server(admin_client, p):
    before = db_state()
    response = admin_client.post(
        reverse("governance:role-server-add", args=[p.role.pk]), {"server": p.foreign.pk, "kind": "allowed"}
    )
    assert "Select a valid choice" in response.content.decode()
    assert db_state() == before


def test_role_page_marks_servers_on_the_other_list(admin_client, p):
    html = admin_client.get(reverse("governance:role-detail", args=[p.role.pk])).content.decode()
    assert "acme_github (allowed)</option>" in html


def test_environment_patterns_are_edited_one_per_line(admin_client, p):
    admin_client.post(
        reverse("governance:environment-edit", args=[p.environment.pk]),
        env_data(p, name="acme_sandbox", forbidden_patterns="  *prod*\n\n*live*  \n"),
    )
    p.environment.refresh_from_db()
    assert p.environment.forbidden_patterns == ["*prod*", "*live*"]
    html = admin_client.get(reverse("governance:environment-edit", args=[p.environment.pk])).content.decode()
    assert "*prod*\n*live*</textarea>" in html


def test_production_authorization_is_locked_on(admin_client, p, team):
    production = Environment.objects.get(team=team, name="production")
    url = reverse("governance:environment-edit", args=[production.pk])
    html = admin_client.get(url).content.decode()
    assert re.search(r'name="requires_authorization"[^>]*disabled', html)
    assert re.search(r'name="requires_authorization"[^>]*checked', html)
    # a hand-made POST that leaves it off changes nothing about authorization
    admin_client.post(url, env_data(p, name="production", order="2", note="Live systems."))
    production.refresh_from_db()
    assert (
        production.requires_authorization and production.is_production and production.note == "Live systems."
    )


def test_production_requires_authorization_on_create(admin_client, p):
    response = admin_client.post(
        reverse("governance:environment-create"), env_data(p, name="live_eu", is_production="on")
    )
    assert "Production always requires explicit human authorization" in response.content.decode()
    assert not Environment.objects.filter(name="live_eu").exists()


def test_production_environment_cannot_be_deleted(admin_client, team):
    production = Environment.objects.get(team=team, name="production")
    response = admin_client.post(reverse("governance:environment-delete", args=[production.pk]), follow=True)
    assert "The production environment cannot be deleted." in messages_of(response)
    assert Environment.objects.filter(pk=production.pk).exists()


def test_environment_bindings_add_edit_remove(admin_client, p):
    env_url = reverse("governance:environment-detail", args=[p.environment.pk])
    response = admin_client.post(
        reverse("governance:binding-create", args=[p.environment.pk]),
        {"server": p.spare.pk, "target_kind": "url", "target": "no-scheme", "permission": "read_only"},
    )
    assert "A URL target needs a scheme" in response.content.decode()
    response = admin_client.post(
        reverse("governance:binding-create", args=[p.environment.pk]),
        {
            "server": p.spare.pk,
            "target_kind": "url",
            "target": "postgresql://db/x",
            "permission": "read_only",
        },
        follow=True,
    )
    assert "acme_spare bound in acme_sandbox (read only)." in messages_of(response)
    binding = ServerBinding.objects.get(environment=p.environment, server=p.spare)
    admin_client.post(
        reverse("governance:binding-edit", args=[binding.pk]),
        {"target_kind": "url", "target": "postgresql://db/y", "permission": "read_write"},
    )
    binding.refresh_from_db()
    assert (binding.target, binding.permission) == ("postgresql://db/y", "read_write")
    html = admin_client.get(env_url).content.decode()
    assert "postgresql://db/y" in html and "read and write" in html
    admin_client.post(reverse("governance:binding-delete", args=[binding.pk]))
    assert not ServerBinding.objects.filter(pk=binding.pk).exists()


def test_limits_forms_save_and_show_errors(admin_client, p, team):
    response = admin_client.post(
        reverse("governance:global-limits-edit"), {"max_calls_per_session": "100", "pause_at_percent": "150"}
    )
    assert "Ensure this value is less than or equal to 100." in response.content.decode()
    assert not GlobalRateLimit.objects.filter(team=team, max_calls_per_session=100).exists()
    response = admin_client.post(
        reverse("governance:trigger-settings-edit"),
        {"cascade_write_threshold": "5", "large_data_bytes": "4096", "production_url_words": "prod\nlive\n"},
        follow=True,
    )
    assert "Kill-switch trigger settings saved." in messages_of(response)
    triggers = TriggerSettings.objects.get(team=team)
    assert (triggers.cascade_write_threshold, triggers.production_url_words) == (5, ["prod", "live"])
    response = admin_client.post(reverse("governance:server-limits-create"), {"server": p.spare.pk})
    assert "Set at least one limit." in response.content.decode()
    assert not ServerRateLimit.objects.filter(server=p.spare).exists()


def test_history_is_paginated_and_team_scoped(admin_client, p, team, other_team):
    for n in range(60):
        ChangeRecord.objects.create(team=team, action="action", object_type="thing", object_repr=f"thing-{n}")
    ChangeRecord.objects.create(
        team=other_team, action="action", object_type="thing", object_repr="globex-thing"
    )
    first = admin_client.get(reverse("governance:history")).content.decode()
    assert "thing-59" in first and "Page 1 of" in first and "globex-thing" not in first
    second = admin_client.get(reverse("governance:history"), {"page": 2}).content.decode()
    assert "thing-5<" in second or "thing-5</td>" in second
    assert "thing-59" not in second


def test_list_pages_do_not_query_per_row(admin_client, p, team, django_assert_max_num_queries):
    for n in range(15):
        server = server_create(team=team, slug=f"bulk_{n}")
        role = role_create(team=team, name=f"bulk_role_{n}")
        role_server_add(role=role, server=server, kind=RuleKind.ALLOWED)
    for name in (
        "governance:server-list",
        "governance:role-list",
        "governance:environment-list",
        "governance:limits",
    ):
        with django_assert_max_num_queries(20):
            assert admin_client.get(reverse(name)).status_code == 200
    with django_assert_max_num_queries(25):
        admin_client.get(reverse("governance:role-detail", args=[p.role.pk]))


def test_discover_tools_records_the_real_servers_tools(admin_client, p, settings):
    settings.MCPGOV_PORTAL_STDIO_DISCOVERY = "sandbox"  # the portal runs a stdio command only sandboxed
    response = admin_client.post(reverse("governance:server-discover", args=[p.time_server.pk]), follow=True)
    assert response.redirect_chain[-1][0] == reverse("governance:server-detail", args=[p.time_server.pk])
    [message] = messages_of(response)
    assert message.startswith("Tools discovered on acme_time: added ") and "get_current_time" in message
    html = response.content.decode()
    assert "get_current_time" in html and "convert_time" in html
    assert set(p.time_server.tools.values_list("name", flat=True)) == {"get_current_time", "convert_time"}


def test_discover_tools_failure_shows_the_reason_and_keeps_the_page(admin_client, p, settings):
    settings.MCPGOV_PORTAL_STDIO_DISCOVERY = "sandbox"
    server = server_create(team=p.team, slug="acme_broken", command="/nonexistent/mcp-server")
    before = db_state()
    response = admin_client.post(reverse("governance:server-discover", args=[server.pk]), follow=True)
    assert response.redirect_chain[-1][0] == reverse("governance:server-detail", args=[server.pk])
    [message] = messages_of(response)
    assert message.startswith("Discovery failed: ") and len(message) > len("Discovery failed: ") + 10
    assert 'class="msg-error"' in response.content.decode()
    assert db_state() == before


def test_policy_import_preview_then_apply(admin_client, p):
    url = reverse("governance:policy-import")
    before = db_state()
    response = admin_client.post(url, {"text": POLICY_YAML, "action": "preview"})
    html = response.content.decode()
    assert "Dry run of an import of mcp_access" in html
    assert "acme_spare" in html and 'class="badge changed">changed<' in html
    assert "Apply this import" in html
    assert db_state() == before  # a preview writes nothing
    response = admin_client.post(url, {"text": POLICY_YAML, "action": "apply"}, follow=True)
    assert response.redirect_chain[-1][0] == reverse("governance:history")
    assert any(
        m.startswith("Policy imported (mcp_access): 0 added, 1 changed") for m in messages_of(response)
    )
    assert p.role.server_slugs("allowed") == ["acme_github", "acme_spare"]


def test_policy_import_from_an_uploaded_file(admin_client, p):
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("policy.yaml", POLICY_YAML.encode(), content_type="application/yaml")
    response = admin_client.post(reverse("governance:policy-import"), {"file": upload, "action": "preview"})
    assert "Dry run of an import of mcp_access" in response.content.decode()


def test_policy_import_error_names_the_line(admin_client, p):
    bad = POLICY_YAML.replace("default: deny", "default: allow")
    before = db_state()
    response = admin_client.post(reverse("governance:policy-import"), {"text": bad, "action": "apply"})
    html = response.content.decode()
    assert response.status_code == 200
    assert re.search(r"line 2: mcp_access\.default: the default must be deny[^<]+", html)
    assert re.search(r"<textarea[^>]*>\s*mcp_access:\n  default: allow\n", html)  # kept, to fix it
    assert db_state() == before


def test_policy_export_downloads_the_teams_yaml(client, p, viewer):
    client.force_login(viewer)
    response = client.get(reverse("governance:policy-export"))
    assert response["Content-Disposition"] == 'attachment; filename="acme-policy.yaml"'
    text = response.content.decode()
    assert "acme_code_agent:" in text and "acme_github" in text and "globex" not in text


def test_server_form_sets_what_the_server_may_ask_of_the_agent(admin_client, p):
    data = server_data(
        p,
        sampling_allowed="on",
        sampling_max_tokens="300",
        elicitation_allowed="on",
        elicitation_url_domains="login.example.com\n\nexample.org\n",
    )
    admin_client.post(reverse("governance:server-create"), data)
    server = McpServer.objects.get(team=p.team, slug="acme_new")
    assert server.sampling_allowed and server.sampling_max_tokens == 300
    assert not server.sampling_tools_allowed and not server.roots_allowed  # unchecked boxes
    assert server.elicitation_url_domains == ["login.example.com", "example.org"]
    html = admin_client.get(reverse("governance:server-detail", args=[server.pk])).content.decode()
    assert (
        "sampling allowed (≤ 300 tokens)" in html
        and "URL elicitation to login.example.com, example.org" in html
    )
    # a URL instead of a domain, or a zero cap: refused with the field's message, nothing saved
    bad = server_data(p, elicitation_url_domains="https://evil.example.net/x", sampling_max_tokens="0")
    response = admin_client.post(
        reverse("governance:server-edit", args=[server.pk]), {**bad, "slug": "acme_new"}
    )
    assert "is not a domain such as example.com" in response.content.decode()
    server.refresh_from_db()
    assert (
        server.elicitation_url_domains == ["login.example.com", "example.org"]
        and server.sampling_max_tokens == 300
    )


def test_history_shows_list_changes_as_lists_and_list_fields_as_added_and_removed(admin_client, team):
    """A discovery report's names are a list ("added: a, b"), not an [old, new] pair; a list field's
    change says what was added and removed; a plain field stays old → new."""
    ChangeRecord.objects.create(
        team=team,
        action="action",
        object_type="MCP server",
        object_repr="time",
        changes={"added": ["get_current_time", "convert_time"], "removed": ["tick"]},
    )
    ChangeRecord.objects.create(
        team=team,
        action="update",
        object_type="environment",
        object_repr="dev",
        changes={
            "forbidden_patterns": [["*prod*", "*live*"], ["*prod*", "*main*"]],
            "name": ["dev", "development"],
        },
    )
    html = admin_client.get(reverse("governance:history")).content.decode()
    text = " ".join(re.sub(r"<[^>]+>", " ", html).split())
    assert "added : get_current_time, convert_time" in text and "removed : tick" in text
    assert "get_current_time → convert_time" not in text
    assert "forbidden_patterns : added *main*; removed *live*" in text
    assert "name : dev → development" in text
