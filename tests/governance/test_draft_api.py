"""Policy drafts over the REST API: an edit answers 202 and lands in the draft, the draft shows its diff,
and publish / approve / discard / take-one-out follow the page's rules (two-person rule for production),
each tried by an anonymous user, a viewer, a reviewer, another team's admin and an admin."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from governance.choices import DraftStatus, RuleKind
from governance.models import Environment, PolicyDraft, RoleServerRule
from governance.services import drafts
from governance.services import environments as env_services
from governance.services import roles as role_services
from governance.services import servers as server_services
from governance.services.bundles import team_bundles_rebuild
from governance.services.teams import team_policy_settings_set
from portal.choices import TeamRole
from tests.factories import make_member
from tests.governance.test_drafts import versions


def api_as(user=None) -> APIClient:
    api = APIClient()
    if user is not None:
        api.force_login(user)
    return api


@pytest.fixture
def live(team):
    git = server_services.server_create(team=team, slug="git", command="python")
    github = server_services.server_create(
        team=team, slug="github_api", url="https://api.example.com/mcp", transport="http"
    )
    role = role_services.role_create(team=team, name="code_agent")
    role_services.role_server_add(role=role, server=git, kind=RuleKind.ALLOWED)
    for env in Environment.objects.filter(team=team):
        env_services.binding_set(environment=env, server=git, target="/srv", permission="read_write")
        env_services.binding_set(environment=env, server=github, target="", permission="read_only")
    team_bundles_rebuild(team_id=team.pk)
    team_policy_settings_set(team=team, policy_edits_immediate=False)
    return {"git": git, "github": github, "role": role}


@pytest.fixture
def second_admin(team):
    return make_member(team, TeamRole.ADMIN, username="acme-admin2")


def draft_an_edit(admin, live) -> PolicyDraft:
    """The admin allows github_api for code_agent through the API: 202, kept in the draft."""
    response = api_as(admin).post(
        f"/api/v1/roles/{live['role'].pk}/add-server/",
        {"server": "github_api", "kind": "allowed"},
        format="json",
    )
    assert response.status_code == 202, response.content
    assert response.json()["code"] == "drafted"
    assert not RoleServerRule.objects.filter(role=live["role"], server=live["github"]).exists()
    return PolicyDraft.objects.get(team=live["role"].team, status=DraftStatus.OPEN)


def test_an_api_edit_lands_in_the_draft_which_shows_its_diff(team, admin, viewer, outsider, live):
    draft = draft_an_edit(admin, live)
    body = api_as(viewer).get("/api/v1/policy-drafts/").json()
    assert [(d["id"], d["status"], d["team"]) for d in body["results"]] == [(draft.pk, "open", "acme")]
    assert [c["position"] for c in body["results"][0]["changes"]] == [1]
    detail = api_as(viewer).get(f"/api/v1/policy-drafts/{draft.pk}/").json()
    assert detail["changes"][0]["author"] == admin.username
    envs = {e["environment"]: e for e in detail["preview"]["environments"]}
    assert "code_agent gains github_api in staging" in envs["staging"]["lines"]
    assert envs["production"]["is_production"] and envs["production"]["changed"]
    assert detail["preview"]["affects_production"] is True
    assert detail["preview"]["needs_approval"] is False  # the team has no two-person rule yet
    # filters are declared (django-filter): bad choices are a 400, other teams' drafts never listed
    assert api_as(viewer).get("/api/v1/policy-drafts/?status=open").json()["count"] == 1
    assert api_as(viewer).get("/api/v1/policy-drafts/?status=published").json()["count"] == 0
    assert api_as(viewer).get("/api/v1/policy-drafts/?status=bogus").status_code == 400
    assert api_as(outsider).get("/api/v1/policy-drafts/").json()["count"] == 0
    assert api_as(outsider).get(f"/api/v1/policy-drafts/{draft.pk}/").status_code == 404
    assert api_as().get("/api/v1/policy-drafts/").status_code == 403


STEPS = [
    ("post", "publish/", {}),
    ("post", "approve/", {}),
    ("post", "discard/", {"reason": "not now"}),
    ("delete", "changes/1/", None),
]


def draft_state(draft):
    draft = PolicyDraft.objects.get(pk=draft.pk)
    return (draft.status, draft.approved_by_id, list(draft.changes.values_list("position", "summary")))


@pytest.mark.parametrize(("method", "path", "data"), STEPS, ids=[s[1] for s in STEPS])
def test_steps_need_change_policy_and_other_teams_get_404(
    team, admin, second_admin, viewer, reviewer, outsider, live, method, path, data
):
    draft = draft_an_edit(second_admin, live)  # authored by the second admin: `admin` may approve
    url = f"/api/v1/policy-drafts/{draft.pk}/{path}"
    before, live_versions = draft_state(draft), versions(team)

    def send(user):
        return getattr(api_as(user), method)(url, data, format="json")

    assert send(None).status_code == 403
    for user in (viewer, reviewer):
        response = send(user)
        assert response.status_code == 403, response.content
    assert send(outsider).status_code == 404
    assert draft_state(draft) == before and versions(team) == live_versions
    response = send(admin)
    assert response.status_code == 200, response.content
    assert draft_state(draft) != before


def test_publish_makes_one_version_per_changed_environment(
    team, admin, live, django_capture_on_commit_callbacks
):
    draft = draft_an_edit(admin, live)
    before = versions(team)
    with django_capture_on_commit_callbacks(execute=True):
        response = api_as(admin).post(f"/api/v1/policy-drafts/{draft.pk}/publish/")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "published" and body["preview"] is None
    assert set(body["published_versions"]) == set(before)
    assert versions(team) == {name: n + 1 for name, n in before.items()}
    assert RoleServerRule.objects.filter(role=live["role"], server=live["github"]).exists()
    # a closed draft takes no more steps
    again = api_as(admin).post(f"/api/v1/policy-drafts/{draft.pk}/publish/")
    assert again.status_code == 400 and "published" in again.json()["detail"]


def test_two_person_rule_for_production(team, admin, second_admin, live):
    team_policy_settings_set(team=team, policy_drafts_require_second_approver=True, actor=admin)
    draft = draft_an_edit(admin, live)
    before = versions(team)
    detail = api_as(admin).get(f"/api/v1/policy-drafts/{draft.pk}/").json()
    assert detail["preview"]["needs_approval"] is True
    refused = api_as(admin).post(f"/api/v1/policy-drafts/{draft.pk}/publish/")
    assert refused.status_code == 403 and "another admin must approve" in refused.json()["detail"]
    own = api_as(admin).post(f"/api/v1/policy-drafts/{draft.pk}/approve/")
    assert own.status_code == 403 and "another admin" in own.json()["detail"]
    assert versions(team) == before and PolicyDraft.objects.get(pk=draft.pk).approved_by is None
    approved = api_as(second_admin).post(f"/api/v1/policy-drafts/{draft.pk}/approve/")
    assert approved.status_code == 200 and approved.json()["approved_by"] == "acme-admin2"
    # a later change voids the approval: the author cannot slip an edit in after it
    response = api_as(admin).patch(
        f"/api/v1/bindings/{live['git'].bindings.get(environment__name='production').pk}/",
        {"permission": "read_only"},
        format="json",
    )
    assert response.status_code == 202, response.content
    assert PolicyDraft.objects.get(pk=draft.pk).approved_by is None
    assert api_as(admin).post(f"/api/v1/policy-drafts/{draft.pk}/publish/").status_code == 403
    assert api_as(second_admin).post(f"/api/v1/policy-drafts/{draft.pk}/approve/").status_code == 200
    published = api_as(admin).post(f"/api/v1/policy-drafts/{draft.pk}/publish/")
    assert published.status_code == 200, published.content


def test_take_one_change_out_and_discard(team, admin, live):
    draft = draft_an_edit(admin, live)
    with pytest.raises(drafts.DraftChangeRecorded):
        role_services.role_update(role=live["role"], description="Writes code.", actor=admin)
    missing = api_as(admin).delete(f"/api/v1/policy-drafts/{draft.pk}/changes/7/")
    assert missing.status_code == 400 and "no change 7" in missing.json()["detail"]
    response = api_as(admin).delete(f"/api/v1/policy-drafts/{draft.pk}/changes/1/")
    assert response.status_code == 200
    assert [c["summary"] for c in response.json()["changes"]] == [draft.changes.get().summary]
    assert "github_api" not in " ".join(response.json()["changes"][0]["summary"])
    discarded = api_as(admin).post(f"/api/v1/policy-drafts/{draft.pk}/discard/", {"reason": "later"})
    assert discarded.status_code == 200
    assert (discarded.json()["status"], discarded.json()["close_reason"]) == ("discarded", "later")
    assert drafts.draft_open(team=team) is None
    too_long = api_as(admin).post(f"/api/v1/policy-drafts/{draft.pk}/discard/", {"reason": "x" * 501})
    assert too_long.status_code == 400


def test_the_schema_documents_the_draft_api(admin, db):
    schema = api_as(admin).get("/api/v1/schema/?format=json").json()
    paths = schema["paths"]
    for path in (
        "/api/v1/policy-drafts/",
        "/api/v1/policy-drafts/{id}/",
        "/api/v1/policy-drafts/{id}/publish/",
        "/api/v1/policy-drafts/{id}/approve/",
        "/api/v1/policy-drafts/{id}/discard/",
        "/api/v1/policy-drafts/{id}/changes/{position}/",
        "/api/v1/policy-drafts/{id}/simulation/",
    ):
        assert path in paths, path
    params = {p["name"] for p in paths["/api/v1/policy-drafts/"]["get"]["parameters"]}
    assert {"team", "status"} <= params
    sim = {p["name"] for p in paths["/api/v1/policy-drafts/{id}/simulation/"]["get"]["parameters"]}
    assert {"days", "since", "until", "environment"} <= sim
