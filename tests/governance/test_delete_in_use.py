"""Deleting, from the web pages, a policy object that other rows still refer to: the page says
why and nothing changes (the API answers 409 for the same, via portal/api.py). The environment
of audited sessions: tests/audit/test_environment_delete.py."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from governance.models import AgentRole
from portal.models import ChangeRecord
from tests.governance.access_helpers import file_request, policy

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(admin) -> Client:
    c = Client()
    c.force_login(admin)
    return c


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_role_of_an_access_request_is_not_deleted_and_the_page_says_why(admin_client, team, requester):
    p = policy(team)
    file_request(team, requester, p)
    history = ChangeRecord.objects.count()

    response = admin_client.post(reverse("governance:role-delete", args=[p["role"].pk]), follow=True)

    assert response.status_code == 200
    assert response.redirect_chain[-1][0] == reverse("governance:role-detail", args=[p["role"].pk])
    assert messages_of(response) == [
        "It cannot be deleted while production-access requests refer to it; nothing was changed."
    ]
    assert AgentRole.objects.filter(pk=p["role"].pk).exists()
    assert ChangeRecord.objects.count() == history


def test_an_unused_role_is_deleted(admin_client, team):
    role = AgentRole.objects.create(team=team, name="unused_agent")
    response = admin_client.post(reverse("governance:role-delete", args=[role.pk]), follow=True)
    assert messages_of(response) == ["Role unused_agent deleted."]
    assert not AgentRole.objects.filter(pk=role.pk).exists()
