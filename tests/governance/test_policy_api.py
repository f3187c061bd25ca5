"""Flags and their strategies, the team's policy settings and the policy diff over the REST API,
each tried by an anonymous user, a viewer, a reviewer, another team's admin and an admin."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from governance.models import Environment, Flag, FlagState, PolicyBundle
from governance.services import flags as flag_services
from governance.services import policy_yaml
from governance.services import roles as role_services
from governance.services import servers as server_services
from governance.services.bundles import team_bundles_rebuild
from portal.models import Team


@pytest.fixture
def api():
    return APIClient()


@pytest.fixture
def git(team):
    return server_services.server_create(team=team, slug="git", command="python")


@pytest.fixture
def flag(team, git):
    return flag_services.flag_create(team=team, server=git, capability="write")


def states(flag):
    return {
        s.environment.name: s.enabled
        for s in FlagState.objects.filter(flag=flag).select_related("environment")
    }


def test_flags_list_with_their_strategies_and_filters(api, team, viewer, outsider, flag):
    api.force_login(viewer)
    body = api.get("/api/v1/flags/").json()
    assert body["count"] == 1
    item = body["results"][0]
    assert (item["name"], item["team"], item["server"], item["capability"]) == (
        "mcp.git.write",
        "acme",
        "git",
        "write",
    )
    assert {s["environment"] for s in item["states"]} == {"development", "staging", "production"}
    assert api.get("/api/v1/flags/?server=nope").json()["count"] == 0
    assert api.get("/api/v1/flags/?capability=bogus").status_code == 400
    api.force_login(outsider)
    assert api.get("/api/v1/flags/").json()["count"] == 0
    assert api.get(f"/api/v1/flags/{flag.pk}/").status_code == 404


def test_anonymous_gets_nothing(api, flag):
    assert api.get("/api/v1/flags/").status_code == 403
    assert (
        api.post(f"/api/v1/flags/{flag.pk}/state/", {"environment": "staging", "enabled": False}).status_code
        == 403
    )
    assert all(states(flag).values())


def test_toggle_needs_toggle_flags_and_publishes_at_once(
    api, team, viewer, reviewer, outsider, flag, django_capture_on_commit_callbacks
):
    team_bundles_rebuild(team_id=team.pk)
    staging = Environment.objects.get(team=team, name="staging")
    before = PolicyBundle.objects.filter(environment=staging).count()
    payload = {"environment": "staging", "enabled": False, "reason": "incident 7"}
    api.force_login(viewer)
    assert api.post(f"/api/v1/flags/{flag.pk}/state/", payload, format="json").status_code == 403
    api.force_login(outsider)
    assert api.post(f"/api/v1/flags/{flag.pk}/state/", payload, format="json").status_code == 404
    assert all(states(flag).values())
    api.force_login(reviewer)  # reviewers flip kill switches but cannot edit policy
    response = api.post(f"/api/v1/flags/{flag.pk}/state/", {**payload, "reason": ""}, format="json")
    assert response.status_code == 400 and response.json()["code"] == "invalid"
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"/api/v1/flags/{flag.pk}/state/", payload, format="json")
    assert response.status_code == 200, response.content
    assert states(flag) == {"development": True, "staging": False, "production": True}
    latest = PolicyBundle.objects.filter(environment=staging).order_by("-version").first()
    assert PolicyBundle.objects.filter(environment=staging).count() == before + 1
    assert [f["enabled"] for f in latest.content["flags"] if f["name"] == "mcp.git.write"] == [False]
    unknown = api.post(f"/api/v1/flags/{flag.pk}/state/", {**payload, "environment": "moon"}, format="json")
    assert unknown.status_code == 400 and "moon" in unknown.json()["detail"]
    # role constraints go through the same validation as the panel
    bad = {"environment": "development", "enabled": True, "constraints": [{"context_name": "x"}]}
    assert api.post(f"/api/v1/flags/{flag.pk}/state/", bad, format="json").status_code == 400


def test_create_and_delete_need_change_policy(api, team, other_team, admin, reviewer, outsider, git):
    payload = {"team": "acme", "server": "git", "capability": "read"}
    api.force_login(reviewer)
    response = api.post("/api/v1/flags/", payload, format="json")
    assert response.status_code == 403, response.content
    api.force_login(outsider)
    assert api.post("/api/v1/flags/", payload, format="json").status_code == 400  # acme is not theirs
    assert not Flag.objects.exists()
    api.force_login(admin)
    response = api.post("/api/v1/flags/", payload, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["name"] == "mcp.git.read"
    flag = Flag.objects.get()
    api.force_login(reviewer)
    assert api.delete(f"/api/v1/flags/{flag.pk}/").status_code == 403
    api.force_login(admin)
    assert api.delete(f"/api/v1/flags/{flag.pk}/").status_code == 204
    assert not Flag.objects.exists()


def test_flag_on_another_teams_server_is_refused(api, team, other_team, admin, outsider):
    server_services.server_create(team=other_team, slug="theirs", command="python")
    api.force_login(admin)
    response = api.post("/api/v1/flags/", {"team": "acme", "server": "theirs"}, format="json")
    assert response.status_code == 400
    assert not Flag.objects.exists()


def test_bundle_lifetime_is_settable_and_reissues_the_bundles(api, team, admin, viewer, outsider):
    team_bundles_rebuild(team_id=team.pk)
    url = "/api/v1/team-policy-settings/acme/"
    api.force_login(viewer)
    assert api.get(url).json()["bundle_ttl_seconds"] == 24 * 3600
    assert api.patch(url, {"bundle_ttl_seconds": 3600}, format="json").status_code == 403
    api.force_login(outsider)
    assert api.get(url).status_code == 404
    assert api.patch(url, {"bundle_ttl_seconds": 3600}, format="json").status_code == 404
    team.refresh_from_db()
    assert team.bundle_ttl_seconds == 24 * 3600
    api.force_login(admin)
    assert api.patch(url, {"bundle_ttl_seconds": 10}, format="json").status_code == 400
    response = api.patch(url, {"bundle_ttl_seconds": 3600}, format="json")
    assert response.status_code == 200, response.content
    assert Team.objects.get(pk=team.pk).bundle_ttl_seconds == 3600
    # the rebuild the change scheduled re-issues every bundle with the new lifetime
    for result in team_bundles_rebuild(team_id=team.pk):
        assert (result.bundle.expires_at - result.bundle.issued_at).total_seconds() == 3600


def test_new_endpoints_are_in_the_openapi_schema(api, admin):
    api.force_login(admin)
    paths = api.get("/api/v1/schema/", HTTP_ACCEPT="application/json").json()["paths"]
    for path in (
        "/api/v1/flags/",
        "/api/v1/flags/{id}/state/",
        "/api/v1/team-policy-settings/{team}/",
        "/api/v1/policy/diff/",
    ):
        assert path in paths, path


def test_policy_diff_endpoint(api, team, admin, viewer, outsider, git):
    role_services.role_create(team=team, name="code_agent")
    exported = policy_yaml.policy_export(team=team)
    changed = exported.replace("code_agent:", "docs_agent:")
    api.force_login(outsider)
    assert (
        api.post("/api/v1/policy/diff/", {"team": "acme", "yaml": exported}, format="json").status_code == 400
    )
    api.force_login(viewer)
    same = api.post("/api/v1/policy/diff/", {"team": "acme", "yaml": exported}, format="json")
    assert same.status_code == 200, same.content
    assert same.json()["changed"] is False and same.json()["changes"] == []
    diff = api.post("/api/v1/policy/diff/", {"team": "acme", "yaml": changed}, format="json").json()
    assert diff["changed"] is True
    assert "- role code_agent" in diff["changes"]
    assert any(c.startswith("+ role docs_agent") for c in diff["changes"])
    bad = api.post("/api/v1/policy/diff/", {"team": "acme", "yaml": "mcp_access: [1"}, format="json")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid"
    # nothing was written by any of these
    assert list(team.agent_roles.values_list("name", flat=True)) == ["code_agent"]
