"""Acknowledgement rules, in the service and through the API: explanations first, once, then read-only."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied

from audit.models import Acknowledgement, AgentSession, FailedCallExplanation
from audit.services import failed_call_explain, session_acknowledge
from portal.errors import ServiceError
from portal.models import ChangeRecord
from tests.audit.conftest import event, events, open_session, person, post_events

pytestmark = pytest.mark.django_db


@pytest.fixture
def ended(gateway):
    """An ended session with two failed calls (call-2, call-4) and one blocked call."""
    sid = open_session(gateway)
    batch = [
        event(1),
        event(2),
        event(3),
        event(4, status="fail"),
        event(5),
        event(6, status="blocked", trigger="write_in_read_session"),
        event(7),
        event(8, status="fail"),
    ]
    assert post_events(gateway, sid, batch).status_code == 200
    assert (
        gateway.patch(f"/api/v1/gateway/sessions/{sid}/", {"state": "ended"}, format="json").status_code
        == 200
    )
    return AgentSession.objects.get(pk=sid)


def test_failed_calls_need_explanations_before_acknowledgement(ended, reviewer):
    with pytest.raises(ServiceError) as info:
        session_acknowledge(session=ended, reviewer=reviewer, note="looks fine")
    assert info.value.code == "unexplained_failures" and info.value.extra["call_ids"] == ["call-2", "call-4"]
    failed_call_explain(session=ended, reviewer=reviewer, call_id="call-2", explanation="PR already existed")
    with pytest.raises(ServiceError) as info:
        session_acknowledge(session=ended, reviewer=reviewer)
    assert info.value.extra["call_ids"] == ["call-4"]
    assert not Acknowledgement.objects.filter(session=ended).exists()
    failed_call_explain(session=ended, reviewer=reviewer, call_id="call-4", explanation="branch protected")
    ack = session_acknowledge(session=ended, reviewer=reviewer, note="checked both failures")
    assert ack.reviewer == reviewer and ack.last_seq == 8 and ack.note == "checked both failures"
    assert ChangeRecord.objects.filter(
        team=ended.team, summary__startswith="Session log acknowledged"
    ).exists()


def test_acknowledged_session_is_read_only(ended, reviewer, admin):
    for call_id in ("call-2", "call-4"):
        failed_call_explain(session=ended, reviewer=reviewer, call_id=call_id, explanation="known")
    session_acknowledge(session=ended, reviewer=reviewer)
    with pytest.raises(ServiceError) as info:
        session_acknowledge(session=ended, reviewer=admin, note="again")
    assert info.value.code == "already_acknowledged"
    with pytest.raises(ServiceError) as info:
        failed_call_explain(session=ended, reviewer=admin, call_id="call-2", explanation="changed my mind")
    assert info.value.code == "already_acknowledged"
    assert FailedCallExplanation.objects.get(session=ended, call_id="call-2").explanation == "known"
    assert Acknowledgement.objects.get(session=ended).reviewer == reviewer


def test_only_failed_calls_can_be_explained_and_only_ended_sessions_acknowledged(gateway, reviewer):
    sid = open_session(gateway)
    post_events(gateway, sid, events(1, 4))
    session = AgentSession.objects.get(pk=sid)
    with pytest.raises(ServiceError) as info:
        failed_call_explain(session=session, reviewer=reviewer, call_id="call-1", explanation="x")
    assert info.value.code == "not_a_failed_call"
    with pytest.raises(ServiceError) as info:
        session_acknowledge(session=session, reviewer=reviewer)
    assert info.value.code == "not_ended"


def test_members_without_the_permission_cannot_explain_or_acknowledge(ended, viewer, requester, outsider):
    for user in (viewer, requester, outsider):
        with pytest.raises(PermissionDenied):
            failed_call_explain(session=ended, reviewer=user, call_id="call-2", explanation="x")
        with pytest.raises(PermissionDenied):
            session_acknowledge(session=ended, reviewer=user)
    assert not FailedCallExplanation.objects.exists() and not Acknowledgement.objects.exists()


def test_api_enforces_the_same_rules(ended, reviewer, gateway):
    api = person(reviewer)
    url = f"/api/v1/sessions/{ended.pk}/"
    response = api.post(url + "acknowledgement/", {"note": "fine"}, format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "unexplained_failures" and response.json()["call_ids"] == [
        "call-2",
        "call-4",
    ]
    assert api.get(url + "explanations/").json()["unexplained"] == ["call-2", "call-4"]
    bad = api.post(url + "explanations/", {"call_id": "call-1", "explanation": "x"}, format="json")
    assert bad.status_code == 400 and bad.json()["code"] == "not_a_failed_call"
    for call_id in ("call-2", "call-4"):
        created = api.post(
            url + "explanations/", {"call_id": call_id, "explanation": "expected"}, format="json"
        )
        assert created.status_code == 201 and created.json()["call_id"] == call_id
    response = api.post(url + "acknowledgement/", {"note": "fine"}, format="json")
    assert response.status_code == 201 and response.json()["acknowledged"] is True
    again = api.post(url + "acknowledgement/", {"note": "again"}, format="json")
    assert again.status_code == 409 and again.json()["code"] == "already_acknowledged"
    late = api.post(url + "explanations/", {"call_id": "call-2", "explanation": "edited"}, format="json")
    assert late.status_code == 409
    # mcpgov audit-check reads it with the gateway's token.
    check = gateway.get(f"/api/v1/gateway/sessions/{ended.pk}/acknowledgement/").json()
    assert (
        check["acknowledged"] is True
        and check["acknowledged_by"] == reviewer.username
        and check["note"] == "fine"
    )
    assert check["acknowledged_at"].endswith("Z")


def test_acknowledgement_check_before_acknowledgement(ended, gateway, other_gateway):
    url = f"/api/v1/gateway/sessions/{ended.pk}/acknowledgement/"
    assert gateway.get(url).json() == {
        "acknowledged": False,
        "acknowledged_by": None,
        "acknowledged_at": None,
        "note": None,
        "last_seq": None,
    }
    assert other_gateway.get(url).status_code == 404
