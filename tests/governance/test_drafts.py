"""Policy drafts: edits do not publish until the draft is published, the diff names each kind of change,
the two-person rule for production, emergency controls stay immediate, the YAML import is a draft."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from rest_framework.test import APIClient

from governance.choices import DraftStatus, RuleKind
from governance.models import AgentRole, Environment, McpTool, PolicyBundle, PolicyDraft, ServerBinding
from governance.services import drafts, policy_yaml
from governance.services import environments as env_services
from governance.services import flags as flag_services
from governance.services import limits as limit_services
from governance.services import roles as role_services
from governance.services import servers as server_services
from governance.services.bundles import team_bundles_rebuild
from governance.services.teams import team_policy_settings_set
from portal.choices import TeamRole
from tests.factories import make_member


def env(team, name):
    return Environment.objects.get(team=team, name=name)


def versions(team):
    return {
        e.name: PolicyBundle.objects.filter(environment=e).count()
        for e in Environment.objects.filter(team=team)
    }


@pytest.fixture
def live(team):
    """A live policy (edits immediate while it is set up), published, then edits switched to drafts."""
    git = server_services.server_create(team=team, slug="git", command="python")
    server_services.server_tools_record(
        server=git,
        tools=[
            {"name": "log", "annotations": {"readOnlyHint": True}},
            {"name": "write_file", "annotations": {"readOnlyHint": False}},
        ],
    )
    github = server_services.server_create(
        team=team, slug="github_api", url="https://api.example.com/mcp", transport="http"
    )
    role = role_services.role_create(team=team, name="code_agent")
    role_services.role_server_add(role=role, server=git, kind=RuleKind.ALLOWED)
    for name in ("development", "staging", "production"):
        env_services.binding_set(
            environment=env(team, name), server=git, target="/srv", permission="read_write"
        )
    env_services.binding_set(
        environment=env(team, "staging"), server=github, target="", permission="read_only"
    )
    team_bundles_rebuild(team_id=team.pk)
    team_policy_settings_set(team=team, policy_edits_immediate=False)
    team.refresh_from_db()
    return {"git": git, "github": github, "role": role}


def recorded(call):
    with pytest.raises(drafts.DraftChangeRecorded) as info:
        call()
    return info.value


def test_edits_collect_in_the_draft_and_publish_as_one_version(
    team, admin, live, django_capture_on_commit_callbacks
):
    before = versions(team)
    with django_capture_on_commit_callbacks(execute=True):
        first = recorded(
            lambda: role_services.role_server_add(
                role=live["role"], server=live["github"], kind=RuleKind.ALLOWED, actor=admin
            )
        )
        tool = McpTool.objects.get(server=live["git"], name="write_file")
        recorded(lambda: server_services.tool_update(tool=tool, approval_required=True, actor=admin))
    assert first.url == "/governance/draft/"
    # nothing live changed, nothing was published
    assert not live["role"].rules.filter(server=live["github"]).exists()
    assert not McpTool.objects.get(pk=tool.pk).approval_required
    assert versions(team) == before
    draft = PolicyDraft.objects.get(team=team, status=DraftStatus.OPEN)
    assert [c.position for c in draft.changes.all()] == [1, 2]

    preview = drafts.draft_preview(draft=draft)
    lines = {p.environment.name: p.lines for p in preview.environments}
    assert "code_agent gains github_api in staging" in lines["staging"]
    assert "github_api added to the allowed servers of code_agent" in lines["staging"]
    assert "write_file on git becomes approval-required" in lines["production"]
    assert not any("gains" in line for line in lines["production"])  # github_api is not bound there
    assert preview.affects_production

    with django_capture_on_commit_callbacks(execute=True):
        drafts.draft_publish(draft=draft, actor=admin)
    after = versions(team)
    assert after == {name: n + 1 for name, n in before.items()}  # one new version per environment
    draft.refresh_from_db()
    assert draft.status == DraftStatus.PUBLISHED and set(draft.published_versions) == set(before)
    staging = PolicyBundle.objects.filter(environment=env(team, "staging")).order_by("-version").first()
    assert "github_api" in staging.content["roles"]["code_agent"]["allowed_servers"]
    assert staging.content["servers"]["git"]["tools"]["write_file"]["approval_required"] is True
    assert drafts.draft_open(team=team) is None


def test_the_diff_names_each_kind_of_change(team, admin, live):
    recorded(lambda: server_services.server_create(team=team, slug="fs", command="npx", actor=admin))
    recorded(lambda: role_services.role_create(team=team, name="docs_agent", actor=admin))
    binding = ServerBinding.objects.get(environment=env(team, "staging"), server=live["github"])
    recorded(
        lambda: env_services.binding_set(
            environment=env(team, "staging"), server=live["github"], permission="read_write", actor=admin
        )
    )
    recorded(
        lambda: env_services.environment_update(
            environment=env(team, "staging"), forbidden_patterns=["*prod*"], actor=admin
        )
    )
    recorded(lambda: limit_services.global_limits_set(team=team, max_calls_per_session=50, actor=admin))
    recorded(
        lambda: limit_services.server_limits_set(
            team=team, server=live["git"], max_calls_per_session=5, actor=admin
        )
    )
    recorded(lambda: limit_services.trigger_settings_set(team=team, cascade_write_threshold=5, actor=admin))
    tool = McpTool.objects.get(server=live["git"], name="write_file")
    recorded(lambda: server_services.tool_update(tool=tool, access_class_override="read", actor=admin))
    recorded(
        lambda: role_services.role_server_remove(rule=live["role"].rules.get(server=live["git"]), actor=admin)
    )
    recorded(
        lambda: env_services.binding_delete(
            binding=ServerBinding.objects.get(environment=env(team, "development"), server=live["git"]),
            actor=admin,
        )
    )
    assert binding.permission == "read_only"
    lines = {
        p.environment.name: p.lines
        for p in drafts.draft_preview(draft=drafts.draft_open(team=team)).environments
    }
    staging, dev = lines["staging"], lines["development"]
    for expected in (
        "server fs added to the catalogue",
        "role docs_agent added",
        "github_api becomes read_write in staging",
        "forbidden pattern *prod* added in staging",
        "global max_calls_per_session: none -> 50",
        "rate limits of git added (max_calls_per_session 5)",
        "trigger setting cascade_write_threshold: 3 -> 5",
        "write_file on git becomes read-only",
        "code_agent loses git in staging",
        "git removed from the allowed servers of code_agent",
    ):
        assert expected in staging, (expected, staging)
    assert "git unbound from development" in dev
    # a change that changes nothing is refused, and the draft keeps what it had
    count = drafts.draft_open(team=team).changes.count()
    with pytest.raises(ValidationError):
        limit_services.trigger_settings_set(team=team, cascade_write_threshold=5, actor=admin)
    assert drafts.draft_open(team=team).changes.count() == count


def test_a_call_that_the_draft_makes_invalid_is_refused_at_once(team, admin, live):
    recorded(lambda: role_services.role_update(role=live["role"], name="coder", actor=admin))
    # later changes name the role by its draft name
    recorded(
        lambda: role_services.role_server_add(
            role=live["role"], server=live["github"], kind=RuleKind.FORBIDDEN, actor=admin
        )
    )
    with pytest.raises(ValidationError):
        role_services.role_create(team=team, name="bad name!", actor=admin)
    draft = drafts.draft_open(team=team)
    assert draft.changes.count() == 2
    assert AgentRole.objects.get(pk=live["role"].pk).name == "code_agent"
    drafts.draft_publish(draft=draft, actor=admin)
    role = AgentRole.objects.get(pk=live["role"].pk)
    assert role.name == "coder" and role.rules.filter(server=live["github"], kind=RuleKind.FORBIDDEN).exists()


def test_discard_and_remove_a_change(team, admin, viewer, live):
    recorded(lambda: role_services.role_create(team=team, name="a_agent", actor=admin))
    recorded(lambda: role_services.role_create(team=team, name="b_agent", actor=admin))
    draft = drafts.draft_open(team=team)
    with pytest.raises(PermissionDenied):
        drafts.draft_discard(draft=draft, actor=viewer)
    drafts.draft_change_remove(draft=draft, position=1, actor=admin)
    assert [c.summary for c in draft.changes.all()] == ["Role b_agent added"]
    drafts.draft_discard(draft=draft, actor=admin, reason="wrong idea")
    draft.refresh_from_db()
    assert draft.status == DraftStatus.DISCARDED
    assert not AgentRole.objects.filter(team=team, name__in=["a_agent", "b_agent"]).exists()
    with pytest.raises(ValidationError):
        drafts.draft_publish(draft=draft, actor=admin)


def test_two_person_rule_for_production(team, admin, live):
    second = make_member(team, TeamRole.ADMIN, username="second-admin")
    team_policy_settings_set(team=team, policy_drafts_require_second_approver=True, actor=admin)
    tool = McpTool.objects.get(server=live["git"], name="write_file")
    recorded(lambda: server_services.tool_update(tool=tool, approval_required=True, actor=admin))
    draft = drafts.draft_open(team=team)
    with pytest.raises(PermissionDenied):
        drafts.draft_publish(draft=draft, actor=admin)
    with pytest.raises(PermissionDenied):
        drafts.draft_approve(draft=draft, actor=admin)  # the author cannot approve
    drafts.draft_approve(draft=draft, actor=second)
    # a further change by the approver voids the approval and makes them an author too
    recorded(lambda: limit_services.global_limits_set(team=team, max_calls_per_session=9, actor=second))
    draft.refresh_from_db()
    assert draft.approved_by is None
    with pytest.raises(PermissionDenied):
        drafts.draft_approve(draft=draft, actor=second)
    third = make_member(team, TeamRole.ADMIN, username="third-admin")
    drafts.draft_approve(draft=draft, actor=third)
    drafts.draft_publish(draft=draft, actor=admin)
    assert McpTool.objects.get(pk=tool.pk).approval_required


def test_a_draft_that_leaves_production_alone_needs_no_second_approver(team, admin, live):
    team_policy_settings_set(team=team, policy_drafts_require_second_approver=True, actor=admin)
    recorded(
        lambda: env_services.binding_set(
            environment=env(team, "staging"), server=live["github"], permission="read_write", actor=admin
        )
    )
    drafts.draft_publish(draft=drafts.draft_open(team=team), actor=admin)
    assert (
        ServerBinding.objects.get(environment=env(team, "staging"), server=live["github"]).permission
        == "read_write"
    )


def test_flag_toggle_still_publishes_at_once_and_leaves_the_draft_out(
    team, admin, live, django_capture_on_commit_callbacks
):
    recorded(
        lambda: role_services.role_server_add(
            role=live["role"], server=live["github"], kind=RuleKind.ALLOWED, actor=admin
        )
    )
    flag = flag_services.flag_create(team=team, server=live["git"], capability="write")
    staging = env(team, "staging")
    before = PolicyBundle.objects.filter(environment=staging).count()
    with django_capture_on_commit_callbacks(execute=True):
        flag_services.flag_set_state(
            flag=flag, environment=staging, enabled=False, reason="incident", actor=admin
        )
    latest = PolicyBundle.objects.filter(environment=staging).order_by("-version").first()
    assert PolicyBundle.objects.filter(environment=staging).count() == before + 1
    assert [f["enabled"] for f in latest.content["flags"]] == [False]
    # the pending allowlist change did not ride along
    assert latest.content["roles"]["code_agent"]["allowed_servers"] == ["git"]
    assert drafts.draft_open(team=team).changes.count() == 1


def test_yaml_import_creates_a_draft(team, admin, live):
    text = policy_yaml.policy_export(team=team).replace(
        "allowed_servers: [git]", "allowed_servers: [git, github_api]"
    )
    change = recorded(lambda: policy_yaml.policy_import(team=team, text=text, actor=admin))
    assert "github_api added to allowed servers of code_agent" in change.change.summary
    assert not live["role"].rules.filter(server=live["github"]).exists()
    # a dry run (the preview, policy_diff) is never drafted
    assert policy_yaml.policy_import(team=team, text=text, actor=admin, dry_run=True).changed
    draft = drafts.draft_open(team=team)
    assert draft.changes.count() == 1
    lines = {p.environment.name: p.lines for p in drafts.draft_preview(draft=draft).environments}
    assert "code_agent gains github_api in staging" in lines["staging"]
    drafts.draft_publish(draft=draft, actor=admin)
    assert live["role"].rules.filter(server=live["github"]).exists()


def test_edits_publish_at_once_by_default(team, admin):
    assert team.policy_edits_immediate
    role = role_services.role_create(team=team, name="code_agent", actor=admin)
    assert role.pk and drafts.draft_open(team=team) is None


def test_switching_back_to_immediate_needs_the_draft_closed(team, admin, live):
    recorded(lambda: role_services.role_create(team=team, name="x_agent", actor=admin))
    with pytest.raises(ValidationError):
        team_policy_settings_set(team=team, policy_edits_immediate=True, actor=admin)


def test_api_edit_answers_202_and_pages_redirect_to_the_draft(team, admin, outsider, live, client):
    api = APIClient()
    api.force_login(admin)
    response = api.post("/api/v1/roles/", {"team": "acme", "name": "docs_agent"}, format="json")
    assert response.status_code == 202, response.content
    assert response.json()["code"] == "drafted" and response.json()["draft"] == "/governance/draft/"
    assert not AgentRole.objects.filter(name="docs_agent").exists()
    client.force_login(admin)
    page = client.post(
        f"/governance/roles/{live['role'].pk}/edit/", {"name": "code_agent", "description": "writes"}
    )
    assert page.status_code == 302 and page["Location"] == "/governance/draft/"
    body = client.get("/governance/draft/").content.decode()
    assert "Role docs_agent added" in body and "Kept in the policy draft" in body
    # another team's admin sees no draft of this team and cannot publish it
    client.force_login(outsider)
    assert "docs_agent" not in client.get("/governance/draft/").content.decode()
    client.post("/governance/draft/publish/")
    assert not AgentRole.objects.filter(name="docs_agent").exists()
    client.force_login(admin)
    assert client.post("/governance/draft/publish/").status_code == 302
    assert AgentRole.objects.filter(name="docs_agent").exists()


def test_the_diff_of_an_environment_never_published_names_its_entries(team, admin, live):
    """An environment with no live bundle yet (created in immediate mode, never compiled) is previewed
    against nothing: each server, binding and setting is named, and the preview does not break."""
    from governance.services.policy_changes import describe_bundle_changes

    staging = PolicyBundle.objects.filter(environment=env(team, "staging")).order_by("-version").first()
    lines = describe_bundle_changes("qa", {}, staging.content)
    assert "code_agent gains git in qa" in lines
    assert "server git added to the catalogue" in lines
    assert "github_api bound in qa (read_only)" in lines
    assert describe_bundle_changes("qa", staging.content, staging.content) == []
