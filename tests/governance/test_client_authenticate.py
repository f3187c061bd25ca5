"""`client_authenticate`: the one raw token query gives what the ORM gives, and never a stale answer."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from governance.models import EnforcementClient, Environment
from governance.services.clients import TokenError, client_authenticate, client_create, client_revoke
from portal.models import Team

pytestmark = pytest.mark.django_db


def _issue(team, name="gw", env_name="staging"):
    environment = Environment.objects.get(team=team, name=env_name)
    return client_create(team=team, environment=environment, name=name)


def _fields(obj) -> dict:
    return {f.attname: getattr(obj, f.attname) for f in obj._meta.concrete_fields}


def test_the_client_team_and_environment_equal_the_orms(team, django_assert_num_queries):
    issued = _issue(team)
    EnforcementClient.objects.filter(pk=issued.client.pk).update(
        last_seen_address="10.0.0.7", bundle_version=12, expires_at=timezone.now() + timedelta(days=1)
    )
    expected = EnforcementClient.objects.select_related("team", "environment").get(pk=issued.client.pk)
    with django_assert_num_queries(1):  # one query, team and environment included
        client = client_authenticate(issued.token)
        team_fields, environment_fields = _fields(client.team), _fields(client.environment)
    assert _fields(client) == _fields(expected)
    assert team_fields == _fields(expected.team)
    assert environment_fields == _fields(expected.environment)
    assert isinstance(client.team, Team) and client.team.pk == team.pk
    assert not client._state.adding and client._state.db == "default"
    client.name = "renamed"  # a real model instance: it saves like one
    client.save(update_fields=["name"])
    assert EnforcementClient.objects.get(pk=client.pk).name == "renamed"


def test_each_token_is_its_own_teams_client(team, other_team):
    ours, theirs = _issue(team), _issue(other_team)
    assert client_authenticate(ours.token).team_id == team.pk
    assert client_authenticate(theirs.token).team_id == other_team.pk
    assert client_authenticate(theirs.token).environment.team_id == other_team.pk


def test_a_revocation_counts_at_the_very_next_request(team):
    issued = _issue(team)
    client = client_authenticate(issued.token)
    client_revoke(client=client)
    with pytest.raises(TokenError) as refused:
        client_authenticate(issued.token)
    assert refused.value.code == "token_revoked"
    delivering = client_authenticate(issued.token, allow_revoked=True)
    assert delivering.revoked_at is not None


def test_an_expiry_counts_at_the_very_next_request(team):
    issued = _issue(team)
    client_authenticate(issued.token)
    EnforcementClient.objects.filter(pk=issued.client.pk).update(expires_at=timezone.now())
    with pytest.raises(TokenError) as refused:
        client_authenticate(issued.token)
    assert refused.value.code == "token_expired"


@pytest.mark.parametrize(
    ("mangle", "code"),
    [
        (lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"), "token_invalid"),  # right prefix, wrong secret
        (lambda t: "mcpgov_unknownprefix_" + t.rsplit("_", 1)[1], "token_invalid"),
        (lambda t: t.replace("mcpgov_", "other_", 1), "token_malformed"),
        (lambda t: "", "token_malformed"),
    ],
)
def test_wrong_tokens_are_refused(team, mangle, code):
    issued = _issue(team)
    with pytest.raises(TokenError) as refused:
        client_authenticate(mangle(issued.token))
    assert refused.value.code == code
