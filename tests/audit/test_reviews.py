"""The quarterly allowlist review (Layer 7) on a prepared history: calls posted through the gateways'
ingestion API in the fourth quarter of 2026 (tests/audit/conftest.py T0), an incident, the policy as it
stands. The scheduled task opens one review per team and quarter with the expected suggestions;
accepting one creates the draft change; dismissing needs a reason; sign-off needs every one decided."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from audit.choices import ReviewStatus, SuggestionStatus
from audit.models import PolicyReview
from audit.models import ReviewSuggestion as ReviewSuggestionModel
from audit.services import reviews
from audit.tasks import open_quarterly_reviews
from governance.choices import DraftStatus, RuleKind
from governance.models import AgentRole, Environment, PolicyDraft, RoleServerRule, ServerBinding
from governance.services import drafts
from governance.services import environments as env_services
from governance.services import roles as role_services
from governance.services import servers as server_services
from governance.services.bundles import team_bundles_rebuild
from incidents.services import incident_open
from tests.audit.conftest import event, open_session, post_events

JAN_2027 = datetime(2027, 1, 2, 3, 0, tzinfo=UTC)  # the review of 2026-Q4 opens in the next quarter


def tools(server, **classes):
    server_services.server_tools_record(
        server=server,
        tools=[
            {"name": name, "annotations": {} if cls is None else {"readOnlyHint": cls == "read"}}
            for name, cls in classes.items()
        ],
    )


def post_calls(gateway, role: str, calls: list[tuple[str, str, str]]) -> str:
    """A session of `role` with these (server, tool, status) calls, INTENT and RESULT each."""
    sid = open_session(gateway, role=role, read_only=False)
    batch = []
    for n, (server, tool, status) in enumerate(calls, 1):
        batch.append(event(2 * n - 1, call=n, server=server, tool=tool))
        batch.append(event(2 * n, call=n, server=server, tool=tool, status=status))
    assert post_events(gateway, sid, batch).status_code == 200
    return sid


@pytest.fixture
def history(team, admin, environment, gateway):
    git = server_services.server_create(team=team, slug="git", command="python")
    tools(git, log="read", write_file="write")
    fs = server_services.server_create(team=team, slug="fs", command="npx")
    tools(fs, read_text_file="read", write_file="write", mystery=None)
    github = server_services.server_create(
        team=team, slug="github_api", url="https://api.example.com/mcp", transport="http"
    )
    tools(github, get_issue="read")
    db = server_services.server_create(team=team, slug="db", command="python")
    tools(db, select="read")
    code, database = (AgentRole.objects.get(team=team, name=n) for n in ("code_agent", "database_agent"))
    for role, servers in ((code, [git, fs, github]), (database, [git, fs, db])):
        for server in servers:
            role_services.role_server_add(role=role, server=server, kind=RuleKind.ALLOWED)
    for server, permission in (
        (git, "read_write"),
        (fs, "read_write"),
        (github, "read_only"),
        (db, "read_write"),
    ):
        env_services.binding_set(environment=environment, server=server, target="/srv", permission=permission)
    team_bundles_rebuild(team_id=team.pk)
    # code_agent writes with git and reads with fs; its fs write was refused; database_agent only reads git
    post_calls(
        gateway,
        "code_agent",
        [
            ("git", "log", "success"),
            ("git", "write_file", "success"),
            ("fs", "read_text_file", "success"),
            ("fs", "write_file", "blocked"),
        ],
    )
    post_calls(gateway, "database_agent", [("git", "log", "success")])
    incident_open(team=team, title="Leaked token", severity="sev2", servers=[github], actor=admin)
    return {"git": git, "fs": fs, "github": github, "db": db, "code": code, "database": database}


def found(review) -> set[tuple]:
    return {(s.kind, s.role, s.server, s.tool, s.environment) for s in review.suggestions.all()}


def test_the_quarterly_task_opens_one_review_per_team_with_the_expected_suggestions(
    team, other_team, history, monkeypatch
):
    monkeypatch.setattr(reviews.timezone, "now", lambda: JAN_2027)
    ids = open_quarterly_reviews.apply().get()
    review = PolicyReview.objects.get(team=team)
    assert review.quarter == "2026-Q4" and review.opened_by is None
    assert (review.period_start, review.period_end) == (
        datetime(2026, 10, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert review.calls == 5
    assert found(review) == {
        # nobody called github_api or db
        ("server_unused", "", "github_api", "", ""),
        ("server_unused", "", "db", "", ""),
        # fs is used (by code_agent), not by database_agent
        ("role_unused_server", "database_agent", "fs", "", ""),
        # fs may write in development, its one write was refused; db never wrote; git did
        ("write_unused", "", "fs", "", "development"),
        ("write_unused", "", "db", "", "development"),
        ("tool_unclassified", "", "fs", "mystery", ""),
        ("incident_server", "", "github_api", "", ""),
    }
    incident = review.suggestions.get(kind="incident_server")
    assert "Leaked token" in incident.detail and "incident #" in incident.detail
    assert PolicyReview.objects.get(team=other_team).suggestions.count() == 0  # nothing granted there
    # safe to run again: still one review per team and quarter
    assert sorted(open_quarterly_reviews.apply().get()) == sorted(ids)
    assert PolicyReview.objects.filter(team=team).count() == 1


def test_accepting_a_suggestion_creates_the_draft_change(
    team, admin, history, django_capture_on_commit_callbacks
):
    review = reviews.review_open(
        team=team, actor=admin, period_start=datetime(2026, 10, 1, tzinfo=UTC), period_end=JAN_2027
    )
    assert review.opened_by == admin and review.quarter == ""
    unused = review.suggestions.get(kind="role_unused_server")
    with django_capture_on_commit_callbacks(execute=True):
        accepted = reviews.review_suggestion_accept(suggestion=unused, actor=admin)
    draft = PolicyDraft.objects.get(team=team, status=DraftStatus.OPEN)
    assert (accepted.status, accepted.draft, accepted.draft_positions) == ("accepted", draft, [1])
    [change] = draft.changes.all()
    assert change.operation == "role_server_remove" and change.author == admin
    assert "fs" in change.summary and "database_agent" in change.summary
    # the policy is untouched until the draft is published (the team edits at once otherwise)
    assert RoleServerRule.objects.filter(role=history["database"], server=history["fs"]).exists()
    lines = {p.environment.name: p.lines for p in drafts.draft_preview(draft=draft).environments}
    assert "database_agent loses fs in development" in lines["development"]

    # server unused by everybody: one change per allowlist it is on
    github = review.suggestions.get(kind="server_unused", server="github_api")
    assert reviews.review_suggestion_accept(suggestion=github, actor=admin).draft_positions == [2]
    write = review.suggestions.get(kind="write_unused", server="fs")
    reviews.review_suggestion_accept(suggestion=write, actor=admin)
    assert [c.operation for c in draft.changes.all()] == [
        "role_server_remove",
        "role_server_remove",
        "binding_set",
    ]
    with pytest.raises(ValidationError, match="already accepted"):
        reviews.review_suggestion_accept(suggestion=write, actor=admin)

    drafts.draft_publish(draft=draft, actor=admin)
    assert not RoleServerRule.objects.filter(role=history["database"], server=history["fs"]).exists()
    assert not RoleServerRule.objects.filter(server=history["github"]).exists()
    dev = Environment.objects.get(team=team, name="development")
    assert ServerBinding.objects.get(environment=dev, server=history["fs"]).permission == "read_only"


def test_dismiss_needs_a_reason_and_sign_off_needs_every_suggestion_decided(team, admin, viewer, history):
    review = reviews.review_open(
        team=team, actor=admin, period_start=datetime(2026, 10, 1, tzinfo=UTC), period_end=JAN_2027
    )
    first, *rest = list(review.suggestions.all())
    with pytest.raises(PermissionDenied):
        reviews.review_suggestion_dismiss(suggestion=first, actor=viewer, reason="no")
    with pytest.raises(ValidationError, match="Say why"):
        reviews.review_suggestion_dismiss(suggestion=first, actor=admin, reason="  ")
    with pytest.raises(PermissionDenied):
        reviews.review_suggestion_accept(suggestion=first, actor=viewer)
    assert not PolicyDraft.objects.exists()
    reviews.review_suggestion_dismiss(suggestion=first, actor=admin, reason="Needed next quarter")
    with pytest.raises(ValidationError, match="still open"):
        reviews.review_sign_off(review=review, actor=admin)
    for suggestion in rest:
        reviews.review_suggestion_dismiss(suggestion=suggestion, actor=admin, reason="Kept on purpose")
    with pytest.raises(PermissionDenied):
        reviews.review_sign_off(review=review, actor=viewer)
    signed = reviews.review_sign_off(review=review, actor=admin, note="Q4 reviewed with the platform team")
    assert (signed.status, signed.signed_off_by) == (ReviewStatus.SIGNED_OFF, admin)
    assert set(signed.suggestions.values_list("status", flat=True)) == {SuggestionStatus.DISMISSED}
    with pytest.raises(ValidationError, match="signed off"):
        reviews.review_suggestion_accept(suggestion=first, actor=admin)


def test_an_accepted_suggestion_whose_object_is_gone_says_so(team, admin, history):
    review = reviews.review_open(
        team=team, actor=admin, period_start=datetime(2026, 10, 1, tzinfo=UTC), period_end=JAN_2027
    )
    tool = review.suggestions.get(kind="tool_unclassified")
    server_services.server_delete(server=history["fs"], actor=None)
    with pytest.raises(ValidationError, match="no longer exists"):
        reviews.review_suggestion_accept(suggestion=tool, actor=admin)
    assert review.suggestions.get(pk=tool.pk).status == "open"


def review_state():
    return (
        list(PolicyReview.objects.order_by("pk").values_list("pk", "status")),
        list(ReviewSuggestionModel.objects.order_by("pk").values_list("pk", "status", "reason")),
        list(PolicyDraft.objects.values_list("pk", "status")),
    )


def test_review_pages_who_may_read_and_decide(client, team, admin, viewer, reviewer, outsider, history):
    from django.test import Client

    review = reviews.review_open(
        team=team, actor=None, period_start=datetime(2026, 10, 1, tzinfo=UTC), period_end=JAN_2027
    )
    suggestion = review.suggestions.get(kind="role_unused_server")
    pages = ["/audit/reviews/", f"/audit/reviews/{review.pk}/"]
    writes = [
        (f"/audit/reviews/suggestions/{suggestion.pk}/accept/", {}),
        (f"/audit/reviews/suggestions/{suggestion.pk}/dismiss/", {"reason": "no"}),
        (f"/audit/reviews/{review.pk}/sign-off/", {"note": "x"}),
        ("/audit/reviews/open/", {}),
    ]

    def as_(user=None):
        c = Client()
        if user is not None:
            c.force_login(user)
        return c

    before = review_state()
    for url in pages:
        assert "/login/" in as_().get(url)["Location"]
    for url, data in writes:
        assert "/login/" in as_().post(url, data)["Location"]
        for user in (viewer, reviewer):
            assert as_(user).post(url, data).status_code == 403, (url, user)
        if "/open/" not in url:  # another team's admin: the review is not theirs
            assert as_(outsider).post(url, data).status_code == 404, url
    assert as_(outsider).get(pages[1]).status_code == 404
    assert "database_agent" not in as_(outsider).get(pages[0]).content.decode()
    assert review_state() == before
    page = as_(viewer).get(pages[1]).content.decode()
    assert "database_agent never called fs" in page and "Accept into the draft" not in page

    admin_client = as_(admin)
    page = admin_client.get(pages[1]).content.decode()
    assert page.count("Accept into the draft") == review.suggestions.count()
    response = admin_client.post(writes[0][0], follow=True)
    assert "Accepted into the policy draft." in response.content.decode()
    assert PolicyDraft.objects.get(team=team).changes.get().operation == "role_server_remove"
    again = admin_client.post(writes[1][0], {"reason": "late"}, follow=True).content.decode()
    assert "already accepted into the draft" in again
    opened = admin_client.post("/audit/reviews/open/", follow=True)
    assert "Review opened" in opened.content.decode()
    assert PolicyReview.objects.filter(team=team, quarter="").count() == 2


def test_review_api(team, admin, viewer, outsider, history):
    from tests.audit.conftest import person

    review = reviews.review_open(
        team=team, actor=None, period_start=datetime(2026, 10, 1, tzinfo=UTC), period_end=JAN_2027
    )
    suggestion = review.suggestions.get(kind="write_unused", server="fs")
    base = f"/api/v1/policy-reviews/{review.pk}/"
    listed = person(viewer).get("/api/v1/policy-reviews/?status=open").json()
    assert [r["id"] for r in listed["results"]] == [review.pk]
    assert person(viewer).get("/api/v1/policy-reviews/?status=bogus").status_code == 400
    assert person(outsider).get("/api/v1/policy-reviews/").json()["count"] == 0
    assert person(outsider).get(base).status_code == 404
    before = review_state()
    accept = f"{base}suggestions/{suggestion.pk}/accept/"
    assert person(viewer).post(accept).status_code == 403
    assert person(outsider).post(accept).status_code == 404
    assert person(viewer).post("/api/v1/policy-reviews/", {"team": "acme"}, format="json").status_code == 403
    assert (
        person(outsider).post("/api/v1/policy-reviews/", {"team": "acme"}, format="json").status_code == 400
    )
    assert review_state() == before
    body = person(admin).post(accept).json()
    [accepted] = [s for s in body["suggestions"] if s["id"] == suggestion.pk]
    assert accepted["status"] == "accepted" and accepted["draft_positions"] == [1]
    assert PolicyDraft.objects.get(team=team).changes.get().operation == "binding_set"
    other = review.suggestions.exclude(pk=suggestion.pk).first()
    dismiss = f"{base}suggestions/{other.pk}/dismiss/"
    assert person(admin).post(dismiss, {}, format="json").status_code == 400
    assert person(admin).post(f"{base}suggestions/999999/accept/").status_code == 404
    sign = person(admin).post(f"{base}sign-off/", {"note": "done"}, format="json")
    assert sign.status_code == 400 and "still open" in sign.json()["detail"]
    created = person(admin).post("/api/v1/policy-reviews/", {"team": "acme"}, format="json")
    assert created.status_code == 201 and created.json()["quarter"] == ""
    schema = person(admin).get("/api/v1/schema/?format=json").json()["paths"]
    assert "/api/v1/policy-reviews/{id}/suggestions/{suggestion_id}/accept/" in schema
