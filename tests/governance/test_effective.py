"""The effective policy (role by environment) read from the signed bundle as gateways read it, the bundle
detail page built on it with the gateways running the version, the raw JSON, and who may see them."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from governance.choices import RuleKind
from governance.effective import UNLISTED_TOOL, BundleNotVerified, bundle_enforced, effective_policy
from governance.models import AccessRequest, Environment, McpTool, PolicyBundle
from governance.services.access import access_request_approve, access_request_create
from governance.services.bundles import team_bundles_rebuild
from governance.services.clients import client_create
from governance.services.environments import binding_set
from governance.services.flags import flag_create, flag_disable
from governance.services.limits import server_limits_set
from governance.services.roles import role_create, role_server_add
from governance.services.servers import server_create
from governance.services.signing import signing_key_ensure
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def _tool(server, name, *, read: bool, approval: bool = False):
    McpTool.objects.create(
        server=server, name=name, read_only_hint=read, destructive_hint=not read, approval_required=approval
    )


@pytest.fixture
def policy(team, admin, reviewer, requester):
    """code_agent: time (bound read-only in development), github (read-write, a write flag off, an
    approval-required tool, per-server limits), shell forbidden, wiki allowed but never bound."""
    time_ = server_create(team=team, actor=admin, slug="time", transport="stdio", command="mcp-server-time")
    _tool(time_, "get_current_time", read=True)
    _tool(time_, "set_clock", read=False)
    github = server_create(
        team=team,
        actor=admin,
        slug="github_api",
        transport="http",
        url="https://api.github.com/mcp",
        cost_per_call="0.0050",
    )
    _tool(github, "list_prs", read=True)
    _tool(github, "create_pr", read=False)
    _tool(github, "merge_pr", read=False, approval=True)
    shell = server_create(team=team, actor=admin, slug="shell", transport="stdio", command="sh")
    wiki = server_create(
        team=team, actor=admin, slug="wiki", transport="http", url="https://wiki.example/mcp"
    )
    role = role_create(team=team, actor=admin, name="code_agent")
    for s in (time_, github, wiki):
        role_server_add(role=role, server=s, kind=RuleKind.ALLOWED, actor=admin)
    role_server_add(role=role, server=shell, kind=RuleKind.FORBIDDEN, actor=admin)
    role_create(team=team, actor=admin, name="reader")  # allowed nothing
    dev = Environment.objects.get(team=team, name="development")
    prod = Environment.objects.get(team=team, name="production")
    binding_set(environment=dev, server=time_, actor=admin, target="local clock", permission="read_only")
    binding_set(
        environment=dev,
        server=github,
        actor=admin,
        target="https://api.github.com/mcp",
        permission="read_write",
    )
    binding_set(environment=dev, server=shell, actor=admin, target="/bin/sh", permission="read_write")
    binding_set(environment=prod, server=time_, actor=admin, target="local clock", permission="read_only")
    server_limits_set(
        team=team, server=github, actor=admin, max_calls_per_session=40, max_response_bytes=65536
    )
    flag = flag_create(team=team, server=github, capability="write", name="mcp.github.write", actor=admin)
    flag_disable(flag=flag, reason="incident 12", actor=admin, environment=dev)
    signing_key_ensure(team=team)
    team_bundles_rebuild(team_id=team.pk, reason="test")
    return {
        "dev": dev,
        "prod": prod,
        "role": role,
        "time": time_,
        "admin": admin,
        "reviewer": reviewer,
        "requester": requester,
    }


def latest(env) -> PolicyBundle:
    return PolicyBundle.objects.filter(environment=env).order_by("-version").first()


def verdicts(effective, server):
    servers = {s.slug: s for s in effective.servers + effective.refused}
    return {
        t.name: (t.read_only.kind, t.read_only.trigger, t.read_write.kind, t.read_write.trigger)
        for t in servers[server].tools
    }


def test_the_effective_policy_is_what_the_gateways_engine_decides(policy):
    e = effective_policy(bundle_enforced(latest(policy["dev"])), "code_agent")
    assert e.defined and set(e.allowed_servers) == {"time", "github_api", "wiki"}
    assert [s.slug for s in e.servers] == ["github_api", "time"]
    assert verdicts(e, "time") == {
        "get_current_time": ("allowed", "", "allowed", ""),
        "set_clock": (
            "refused",
            "write_in_read_session",
            "refused",
            "write_in_read_session",
        ),  # binding read-only
        UNLISTED_TOOL: ("refused", "unknown_tool", "refused", "unknown_tool"),
    }
    assert verdicts(e, "github_api") == {
        "list_prs": ("allowed", "", "allowed", ""),
        "create_pr": ("refused", "kill_switch_flag", "refused", "kill_switch_flag"),  # the write flag is off
        "merge_pr": ("refused", "kill_switch_flag", "refused", "kill_switch_flag"),
        UNLISTED_TOOL: ("refused", "kill_switch_flag", "refused", "kill_switch_flag"),  # unlisted: a write
    }
    github = next(s for s in e.servers if s.slug == "github_api")
    assert github.permission == "read_write" and github.flag_off_write.name == "mcp.github.write"
    assert github.limits == (("calls per session", 40), ("response bytes", 65536))
    assert github.cost_per_call == 0.005
    assert [f.name for f in e.flags_off] == ["mcp.github.write"]
    refused = {s.slug: s.refusal for s in e.refused}
    assert refused["shell"].trigger == "unauthorized_server" and "forbidden" in refused["shell"].reason
    assert refused["wiki"].trigger == "production_environment" and "not bound" in refused["wiki"].reason


def test_a_write_allowed_in_a_read_write_session_and_an_approval_tool(policy, team, admin):
    from governance.models import Flag
    from governance.services.flags import flag_enable

    flag_enable(
        flag=Flag.objects.get(team=team, name="mcp.github.write"),
        actor=admin,
        environment=policy["dev"],
        reason="resolved",
    )
    team_bundles_rebuild(team_id=team.pk, reason="flag on")  # (the service publishes on commit)
    e = effective_policy(bundle_enforced(latest(policy["dev"])), "code_agent")
    assert verdicts(e, "github_api")["create_pr"] == ("refused", "write_in_read_session", "allowed", "")
    assert verdicts(e, "github_api")["merge_pr"] == (
        "refused",
        "write_in_read_session",
        "approval",
        "approval_required",
    )


def test_production_needs_a_live_grant(policy, team):
    prod = policy["prod"]
    e = effective_policy(bundle_enforced(latest(prod)), "code_agent")
    assert e.servers == [] and "time" in {s.slug for s in e.refused}
    assert verdicts(e, "time")["get_current_time"][3] == "production_environment"
    now = timezone.now()
    ticket = access_request_create(
        team=team,
        requester=policy["requester"],
        environment=prod,
        role=policy["role"],
        servers=[policy["time"]],
        reason="deploy",
        starts_at=now - timedelta(minutes=1),
        ends_at=now + timedelta(hours=1),
    )
    access_request_approve(access_request=ticket, reviewer=policy["reviewer"], reason="ok")
    assert AccessRequest.objects.get(pk=ticket.pk).status == "approved"
    team_bundles_rebuild(team_id=team.pk, reason="grant")
    e = effective_policy(bundle_enforced(latest(prod)), "code_agent")
    assert [s.slug for s in e.servers] == ["time"]
    assert [live for _g, live in e.grants] == [True]
    assert verdicts(e, "time")["get_current_time"] == ("allowed", "", "allowed", "")
    # the same bundle after its grant ended: refused again
    later = effective_policy(bundle_enforced(latest(prod)), "code_agent", at=now + timedelta(hours=2))
    assert not later.expired  # a day's lifetime
    assert later.servers == [] and [live for _g, live in later.grants] == [False]


def test_a_role_with_no_servers_and_an_unknown_role(policy):
    bundle = bundle_enforced(latest(policy["dev"]))
    reader = effective_policy(bundle, "reader")
    assert reader.defined and reader.servers == [] and reader.allowed_servers == ()
    # the engine's order: the allowlist decides (the github write flag would only show on a write tool)
    assert {s.refusal.trigger for s in reader.refused} == {"unauthorized_server"}
    ghost = effective_policy(bundle, "ghost")
    assert not ghost.defined and ghost.servers == []


def test_an_altered_bundle_row_is_not_shown_as_policy(policy):
    row = latest(policy["dev"])
    header, payload, signature = row.jws.split(".")
    PolicyBundle.objects.filter(pk=row.pk).update(jws=f"{header}.{payload[:-4]}AAAA.{signature}")
    with pytest.raises(BundleNotVerified):
        bundle_enforced(PolicyBundle.objects.get(pk=row.pk))


# --- pages ----------------------------------------------------------------------------------------


def test_bundle_detail_shows_the_effective_policy_the_gateways_and_a_raw_json_link(
    client, viewer, policy, team
):
    row = latest(policy["dev"])
    running = client_create(team=team, environment=policy["dev"], name="laptop-gw").client
    running.bundle_version, running.last_seen_at = row.version, timezone.now()
    running.save()
    behind = client_create(team=team, environment=policy["dev"], name="old-gw").client
    behind.bundle_version = row.version - 1 if row.version > 1 else None
    behind.save()
    client.force_login(viewer)
    response = client.get(reverse("governance:bundle-detail", args=[row.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert [c.name for c in response.context["gateways"]] == ["laptop-gw"]
    assert "<td>laptop-gw</td>" in html and "old-gw" not in html
    assert response.context["role"] == "code_agent" and "✕ Refused <code>kill_switch_flag</code>" in html
    assert reverse("governance:bundle-raw", args=[row.pk]) in html
    assert '"environment_policy"' not in html  # the JSON is one click away, not dumped on the page
    reader = client.get(reverse("governance:bundle-detail", args=[row.pk]), {"role": "reader"})
    assert reader.context["role"] == "reader"
    assert (
        client.get(reverse("governance:bundle-detail", args=[row.pk]), {"role": "ghost"}).status_code == 404
    )
    raw = client.get(reverse("governance:bundle-raw", args=[row.pk]))
    assert raw["Content-Type"].startswith("application/json")
    assert json.loads(raw.content) == row.content


def test_effective_policy_page_per_environment_and_role(client, viewer, policy):
    client.force_login(viewer)
    response = client.get(reverse("governance:effective-policy"), {"environment": policy["prod"].pk})
    assert response.status_code == 200
    assert response.context["bundle"] == latest(policy["prod"])
    assert response.context["effective"].servers == []
    response = client.get(
        reverse("governance:effective-policy"), {"environment": policy["dev"].pk, "role": "code_agent"}
    )
    assert [s.slug for s in response.context["effective"].servers] == ["github_api", "time"]
    assert "get_current_time" in response.content.decode()


def test_an_altered_bundle_shows_an_error_not_a_policy(client, viewer, policy):
    row = latest(policy["dev"])
    header, payload, signature = row.jws.split(".")
    PolicyBundle.objects.filter(pk=row.pk).update(jws=f"{header}.{payload[:-4]}AAAA.{signature}")
    client.force_login(viewer)
    html = client.get(reverse("governance:bundle-detail", args=[row.pk])).content.decode()
    assert "does not verify against the team's signing keys" in html
    assert "get_current_time" not in html


def test_a_bundle_without_roles_and_an_environment_without_a_bundle(client, viewer, team):
    dev = Environment.objects.get(team=team, name="development")
    client.force_login(viewer)
    response = client.get(reverse("governance:effective-policy"), {"environment": dev.pk})
    assert response.status_code == 200 and response.context["bundle"] is None
    assert "No bundle has been published for this environment yet." in response.content.decode()
    signing_key_ensure(team=team)
    team_bundles_rebuild(team_id=team.pk, reason="empty policy")
    response = client.get(reverse("governance:effective-policy"), {"environment": dev.pk})
    assert response.status_code == 200 and response.context["bundle"] == latest(dev)
    assert "The bundle defines no roles." in response.content.decode()
    detail = client.get(reverse("governance:bundle-detail", args=[latest(dev).pk]))
    assert detail.status_code == 200 and "The bundle defines no roles." in detail.content.decode()


def _urls(policy):
    row = latest(policy["dev"])
    return [
        reverse("governance:bundle-detail", args=[row.pk]),
        reverse("governance:bundle-raw", args=[row.pk]),
        reverse("governance:effective-policy") + f"?environment={policy['dev'].pk}",
    ]


def test_anonymous_is_sent_to_login(policy):
    for url in _urls(policy):
        response = Client().get(url)
        assert response.status_code == 302 and response.url.startswith(reverse("login"))


def test_signed_in_without_a_team_gets_404(policy):
    c = Client()
    c.force_login(UserFactory(username="no-team-user"))
    for url in _urls(policy):
        assert c.get(url).status_code == 404


def test_another_team_gets_404_for_the_teams_bundles_and_environments(client, outsider, policy):
    client.force_login(outsider)
    for url in _urls(policy):
        response = client.get(url)
        assert response.status_code == 404, url
        assert "github_api" not in response.content.decode()
