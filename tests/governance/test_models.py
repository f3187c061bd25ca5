"""Model and service validation for the policy objects."""

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from governance.choices import RuleKind
from governance.models import Environment, RoleServerRule
from governance.services.environments import environment_update
from governance.services.roles import role_create, role_server_add
from governance.services.servers import server_create
from portal.models import ChangeRecord


def test_team_bootstrap_creates_default_environments(team):
    names = list(Environment.objects.for_team(team).values_list("name", flat=True))
    assert names == ["development", "staging", "production"]
    prod = Environment.objects.get(team=team, name="production")
    assert prod.is_production and prod.requires_authorization


def test_server_cannot_be_both_allowed_and_forbidden(team, admin):
    server = server_create(team=team, actor=admin, slug="shell_execution", category="shell_execution")
    role = role_create(team=team, actor=admin, name="code_agent")
    role_server_add(role=role, server=server, kind=RuleKind.FORBIDDEN, actor=admin)
    with pytest.raises(ValidationError, match="cannot be both"):
        role_server_add(role=role, server=server, kind=RuleKind.ALLOWED, actor=admin)
    assert list(RoleServerRule.objects.filter(role=role).values_list("kind", flat=True)) == ["forbidden"]
    # The database refuses it too, whatever path the write takes.
    with pytest.raises(IntegrityError), transaction.atomic():
        RoleServerRule.objects.create(role=role, server=server, kind=RuleKind.ALLOWED)


def test_production_authorization_cannot_be_switched_off(team, admin):
    prod = Environment.objects.get(team=team, name="production")
    with pytest.raises(ValidationError, match="Production always requires"):
        environment_update(environment=prod, actor=admin, requires_authorization=False)
    prod.refresh_from_db()
    assert prod.requires_authorization
    # Bypassing the service does not help: the database constraint refuses it.
    with pytest.raises(IntegrityError), transaction.atomic():
        Environment.objects.filter(pk=prod.pk).update(requires_authorization=False)


def test_writes_are_recorded_in_change_history(team, admin):
    server_create(team=team, actor=admin, slug="github_api", category="api")
    record = ChangeRecord.objects.filter(team=team, object_repr="github_api").get()
    assert record.actor == admin and record.action == "create"


def test_reviewer_cannot_edit_policy(team, reviewer):
    from django.core.exceptions import PermissionDenied

    with pytest.raises(PermissionDenied):
        server_create(team=team, actor=reviewer, slug="github_api")
    assert not team.servers.exists()
