"""The environment of audited sessions cannot be deleted from its page: the page says why (the
sessions' audit events are append-only and refer to it) and nothing changes."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from audit.models import AgentSession, AuditEvent
from governance.models import Environment
from portal.models import ChangeRecord
from tests.audit.conftest import event, open_session, post_events

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(admin) -> Client:
    c = Client()
    c.force_login(admin)
    return c


def test_environment_with_audited_sessions_is_not_deleted_and_the_page_says_why(
    admin_client, gateway, environment
):
    sid = open_session(gateway)
    assert post_events(gateway, sid, [event(1), event(2)]).status_code == 200
    history = ChangeRecord.objects.count()

    response = admin_client.post(reverse("governance:environment-delete", args=[environment.pk]))

    assert response.status_code == 302
    assert response["Location"] == reverse("governance:environment-detail", args=[environment.pk])
    page = admin_client.get(response["Location"])
    text = page.content.decode()
    assert "It cannot be deleted while" in text and "nothing was changed" in text
    assert Environment.objects.filter(pk=environment.pk).exists()
    assert AgentSession.objects.filter(pk=sid).exists()
    assert AuditEvent.objects.filter(session_id=sid).count() == 2
    assert ChangeRecord.objects.count() == history
