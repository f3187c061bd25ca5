"""Kill-switch flags: permissions, reasons, constraints, immediate publication, the panel, stale gateways."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse
from django.utils import timezone

from governance import selectors
from governance.models import EnforcementClient, Environment, Flag, FlagState, PolicyBundle
from governance.services.clients import client_create
from governance.services.flags import (
    flag_create,
    flag_delete,
    flag_disable,
    flag_enable,
    flag_set_state,
    flag_versions,
    flags_for_environment,
)
from governance.services.notifications import stale_clients_notify
from governance.services.servers import server_create
from portal.models import ChangeRecord


@pytest.fixture
def server(team):
    return server_create(team=team, slug="filesystem", category="filesystem")


@pytest.fixture
def flag(team, server):
    return flag_create(team=team, server=server, capability="write")


def env(team, name="production"):
    return Environment.objects.get(team=team, name=name)


def state(flag, environment) -> FlagState:
    return FlagState.objects.get(flag=flag, environment=environment)


# --- services ------------------------------------------------------------------------------


def test_flag_is_created_on_everywhere_with_its_default_name(team, server, admin):
    flag = flag_create(team=team, server=server, capability="write", actor=admin)
    assert flag.name == "mcp.filesystem.write"
    assert sorted(s.environment.name for s in flag.states.all()) == ["development", "production", "staging"]
    assert all(s.enabled for s in flag.states.all())
    assert ChangeRecord.objects.filter(
        team=team, summary__startswith="Flag mcp.filesystem.write added"
    ).exists()


def test_creating_and_deleting_flags_needs_change_policy(team, server, reviewer, flag):
    with pytest.raises(PermissionDenied):
        flag_create(team=team, server=server, capability="read", actor=reviewer)
    with pytest.raises(PermissionDenied):
        flag_delete(flag=flag, actor=reviewer)
    assert list(Flag.objects.values_list("name", flat=True)) == ["mcp.filesystem.write"]


def test_one_flag_per_server_capability_and_name(team, server, flag):
    with pytest.raises(ValidationError, match="already has a flag"):
        flag_create(team=team, server=server, capability="write", name="other.name")
    other = server_create(team=team, slug="shell")
    with pytest.raises(ValidationError, match="already exists"):
        flag_create(team=team, server=other, name="mcp.filesystem.write")


@pytest.mark.parametrize("role", ["admin", "reviewer"])
def test_admins_and_reviewers_toggle_flags(team, flag, role, request):
    user = request.getfixturevalue(role)
    [switched] = flag_disable(flag=flag, environment=env(team), reason="INC-1", actor=user)
    assert not switched.enabled and switched.reason == "INC-1" and switched.changed_by == user
    flag_enable(flag=flag, environment=env(team), actor=user)
    assert state(flag, env(team)).enabled


@pytest.mark.parametrize("role", ["requester", "viewer", "outsider"])
def test_others_cannot_toggle_and_nothing_changes(team, flag, role, request):
    user = request.getfixturevalue(role)
    with pytest.raises(PermissionDenied):
        flag_disable(flag=flag, environment=env(team), reason="x", actor=user)
    with pytest.raises(PermissionDenied):
        flag_set_state(flag=flag, environment=env(team), enabled=False, reason="x", actor=user)
    assert state(flag, env(team)).enabled


def test_disabling_needs_a_reason(team, flag, admin):
    for reason in ("", "   "):
        with pytest.raises(ValidationError, match="Say why"):
            flag_disable(flag=flag, environment=env(team), reason=reason, actor=admin)
        with pytest.raises(ValidationError, match="Say why"):
            flag_set_state(flag=flag, environment=env(team), enabled=False, reason=reason, actor=admin)
    assert state(flag, env(team)).enabled


def test_disable_everywhere_and_record_who_when_why(team, flag, admin):
    switched = flag_disable(flag=flag, reason="Production incident — writes suspended", actor=admin)
    assert len(switched) == 3
    records = ChangeRecord.objects.filter(team=team, summary__contains="disabled in")
    assert records.count() == 3 and all(r.actor == admin for r in records)
    assert all("Production incident" in r.summary for r in records)
    # Disabling again changes nothing (and records nothing new).
    assert flag_disable(flag=flag, reason="again", actor=admin) == []
    assert ChangeRecord.objects.filter(team=team, summary__contains="disabled in").count() == 3


def test_constraints_are_validated_and_normalised(team, flag, admin):
    with pytest.raises(ValidationError, match="per agent role"):
        flag_set_state(
            flag=flag,
            environment=env(team),
            enabled=True,
            actor=admin,
            constraints=[{"context_name": "userId", "operator": "IN", "values": ["x"]}],
        )
    with pytest.raises(ValidationError, match="IN or NOT_IN"):
        flag_set_state(
            flag=flag,
            environment=env(team),
            enabled=True,
            actor=admin,
            constraints=[{"context_name": "role", "operator": "EQ", "values": ["x"]}],
        )
    s = flag_set_state(
        flag=flag,
        environment=env(team),
        enabled=True,
        actor=admin,
        constraints=[
            {"context_name": "role", "operator": "NOT_IN", "values": [" db_agent ", "code_agent", "db_agent"]}
        ],
    )
    assert s.constraints == [
        {"context_name": "role", "operator": "NOT_IN", "values": ["code_agent", "db_agent"]}
    ]


def test_a_toggle_publishes_the_bundle_at_once(team, flag, admin, django_capture_on_commit_callbacks):
    prod = env(team)
    with django_capture_on_commit_callbacks(execute=True):
        flag_disable(flag=flag, environment=prod, reason="INC-2: stop writes", actor=admin)
    latest = PolicyBundle.objects.filter(environment=prod).order_by("-version").first()
    [bundled] = [f for f in latest.content["flags"] if f["name"] == "mcp.filesystem.write"]
    assert bundled["enabled"] is False and bundled["reason"] == "INC-2: stop writes"
    assert bundled["server"] == "filesystem" and bundled["capability"] == "write"
    # Only the toggled environment got a new version.
    staging = PolicyBundle.objects.filter(environment=env(team, "staging")).count()
    with django_capture_on_commit_callbacks(execute=True):
        flag_enable(flag=flag, environment=prod, actor=admin)
    assert PolicyBundle.objects.filter(environment=env(team, "staging")).count() == staging
    assert (
        PolicyBundle.objects.filter(environment=prod).order_by("-version").first().version
        == latest.version + 1
    )


def test_the_change_token_moves_with_every_toggle(team, flag, admin):
    prod = env(team)
    before = flag_versions([prod.pk])[prod.pk]
    flag_disable(flag=flag, environment=prod, reason="x", actor=admin)
    after = flag_versions([prod.pk])[prod.pk]
    assert after != before
    flag_delete(flag=flag, actor=admin)
    assert flag_versions([prod.pk])[prod.pk] == "0:"


def test_flags_resolve_per_environment(team, flag, admin):
    flag_disable(flag=flag, environment=env(team), reason="prod only", actor=admin)
    prod = {f.name: f for f in flags_for_environment(environment=env(team))}
    dev = {f.name: f for f in flags_for_environment(environment=env(team, "development"))}
    assert (
        prod["mcp.filesystem.write"].enabled is False and prod["mcp.filesystem.write"].reason == "prod only"
    )
    assert dev["mcp.filesystem.write"].enabled is True


# --- stale gateways --------------------------------------------------------------------------


def test_stale_gateways_are_reported_once_per_quiet_spell(
    team, reviewer, admin, django_capture_on_commit_callbacks
):
    issued = client_create(team=team, environment=env(team), name="gw-prod")
    client_create(team=team, environment=env(team), name="gw-never-connected")
    EnforcementClient.objects.filter(pk=issued.client.pk).update(
        last_seen_at=timezone.now() - timedelta(minutes=30)
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert stale_clients_notify(minutes=10) == 1
    assert sorted(m.to[0] for m in mail.outbox) == sorted([reviewer.email, admin.email])
    assert "gw-prod" in mail.outbox[0].body and "gw-never-connected" not in mail.outbox[0].body
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert stale_clients_notify(minutes=10) == 0
    assert mail.outbox == []
    # Seen again, then quiet again: reported again.
    EnforcementClient.objects.filter(pk=issued.client.pk).update(last_seen_at=timezone.now())
    assert stale_clients_notify(minutes=10) == 0
    later = timezone.now() + timedelta(minutes=20)
    assert stale_clients_notify(minutes=10, now=later) == 1


# --- pages ---------------------------------------------------------------------------------------


PANEL = "/governance/flags/"


def test_panel_shows_every_flag_and_environment_with_state_reason_and_since(
    client, team, flag, admin, viewer
):
    flag_disable(flag=flag, environment=env(team), reason="INC-3 writes stopped", actor=admin)
    client.force_login(viewer)
    resp = client.get(PANEL)
    assert resp.status_code == 200
    html = resp.content.decode()
    assert "mcp.filesystem.write" in html and "INC-3 writes stopped" in html
    for name in ("development", "staging", "production"):
        assert f'data-env="{name}"' in html
    assert "since" in html and admin.username in html
    assert "Disable" not in html  # a viewer sees the panel, not the switches
    client.force_login(admin)
    assert "Disable…" in client.get(PANEL).content.decode()


def test_panel_permission_matrix(client, team, flag, viewer, outsider, reviewer):
    prod = env(team)
    url = f"/governance/flags/{flag.pk}/{prod.pk}/disable/"
    # anonymous → login
    assert client.post(url, {"reason": "x"}).status_code == 302
    assert client.get(PANEL).status_code == 302
    # a member without TOGGLE_FLAGS → 403, nothing changed
    client.force_login(viewer)
    assert client.post(url, {"reason": "x"}).status_code == 403
    assert state(flag, prod).enabled
    # another team → 404, nothing changed
    client.force_login(outsider)
    assert client.post(url, {"reason": "x"}).status_code == 404
    assert client.get(f"/governance/flags/{flag.pk}/").status_code == 404
    assert 'data-flag="mcp.filesystem.write"' not in client.get(PANEL).content.decode()
    assert state(flag, prod).enabled
    # permitted
    client.force_login(reviewer)
    resp = client.post(url, {"reason": "INC-4"})
    assert resp.status_code == 302
    assert not state(flag, prod).enabled and state(flag, prod).reason == "INC-4"
    assert client.post(f"/governance/flags/{flag.pk}/{prod.pk}/enable/").status_code == 302
    assert state(flag, prod).enabled


def test_panel_disable_without_reason_changes_nothing(client, team, flag, admin):
    client.force_login(admin)
    client.post(f"/governance/flags/{flag.pk}/{env(team).pk}/disable/", {"reason": ""})
    assert state(flag, env(team)).enabled


def test_disable_everywhere_from_the_panel(client, team, flag, reviewer):
    client.force_login(reviewer)
    client.post(f"/governance/flags/{flag.pk}/disable/", {"reason": "INC-5"})
    assert not FlagState.objects.filter(flag=flag, enabled=True).exists()


def test_flag_create_and_delete_pages_need_change_policy(client, team, server, flag, reviewer, admin):
    client.force_login(reviewer)
    assert client.get("/governance/flags/add/").status_code == 403
    assert (
        client.post("/governance/flags/add/", {"server": server.pk, "capability": "read"}).status_code == 403
    )
    assert client.post(f"/governance/flags/{flag.pk}/delete/").status_code == 403
    assert Flag.objects.count() == 1
    client.force_login(admin)
    assert (
        client.post("/governance/flags/add/", {"server": server.pk, "capability": "read"}).status_code == 302
    )
    assert Flag.objects.filter(name="mcp.filesystem.read").exists()
    assert client.post(f"/governance/flags/{flag.pk}/delete/").status_code == 302
    assert not Flag.objects.filter(pk=flag.pk).exists()


def test_strategy_form_sets_role_constraints(client, team, flag, admin):
    prod = env(team)
    client.force_login(admin)
    p = f"env{prod.pk}"
    client.post(
        f"/governance/flags/{flag.pk}/{prod.pk}/strategy/",
        {f"{p}-enabled": "on", f"{p}-operator": "NOT_IN", f"{p}-roles": "database_agent, code_agent"},
    )
    s = state(flag, prod)
    assert s.enabled and s.constraints == [
        {"context_name": "role", "operator": "NOT_IN", "values": ["code_agent", "database_agent"]}
    ]


def test_stale_gateway_is_flagged_on_the_panel(client, team, admin):
    issued = client_create(team=team, environment=env(team), name="gw-quiet")
    EnforcementClient.objects.filter(pk=issued.client.pk).update(
        last_seen_at=timezone.now() - timedelta(hours=1)
    )
    client_create(team=team, environment=env(team), name="gw-fresh")
    EnforcementClient.objects.filter(name="gw-fresh").update(last_seen_at=timezone.now())
    client.force_login(admin)
    html = client.get(PANEL).content.decode()
    quiet_row = html[html.index("gw-quiet") :].split("</tr>")[0]
    fresh_row = html[html.index("gw-fresh") :].split("</tr>")[0]
    assert "stale" in quiet_row and "stale" not in fresh_row


def test_a_flags_history_is_its_own_rows_by_event_type_not_by_summary_text(client, team, server, admin):
    """The flag page's history: this flag and its states, never a deleted flag of the same name nor a row
    whose summary merely starts with "Flag <name> "."""
    old = flag_create(team=team, server=server, capability="write", name="acme.fs.write", actor=admin)
    flag_set_state(flag=old, environment=env(team), enabled=False, reason="old incident", actor=admin)
    flag_delete(flag=old, actor=admin)
    new = flag_create(team=team, server=server, capability="write", name="acme.fs.write", actor=admin)
    flag_set_state(
        flag=new, environment=env(team, "staging"), enabled=False, reason="new incident", actor=admin
    )
    ChangeRecord.objects.create(
        team=team, action="action", event_type="other", object_type="note", summary="Flag acme.fs.write noted"
    )
    history = list(selectors.flag_history(team=team, flag=new))
    assert [r.event_type for r in history] == ["flag_disabled", "flag_created"]
    assert "new incident" in history[0].summary
    client.force_login(admin)
    html = client.get(reverse("governance:flag-detail", args=[new.pk])).content.decode()
    assert "new incident" in html and "old incident" not in html and "noted" not in html
