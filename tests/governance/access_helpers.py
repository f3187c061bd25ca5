"""Shared set-up for the access, flag and incident tests: a team's servers, a role, and requests."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from governance.choices import RuleKind
from governance.models import Environment
from governance.services.access import access_request_create
from governance.services.roles import role_create, role_server_add
from governance.services.servers import server_create


def policy(team):
    """Two servers (database, filesystem) allowed for database_agent; production environment."""
    database = server_create(team=team, slug="database", category="database")
    filesystem = server_create(team=team, slug="filesystem", category="filesystem")
    shell = server_create(team=team, slug="shell", category="shell_execution")
    role = role_create(team=team, name="database_agent")
    role_server_add(role=role, server=database, kind=RuleKind.ALLOWED)
    role_server_add(role=role, server=filesystem, kind=RuleKind.ALLOWED)
    role_server_add(role=role, server=shell, kind=RuleKind.FORBIDDEN)
    prod = Environment.objects.get(team=team, name="production")
    return {"database": database, "filesystem": filesystem, "shell": shell, "role": role, "production": prod}


def file_request(
    team, requester, p, *, hours: float = 2, start_in: float = 0, servers=None, reason="Fix INC-42"
):
    now = timezone.now()
    return access_request_create(
        team=team,
        requester=requester,
        environment=p["production"],
        role=p["role"],
        servers=servers if servers is not None else [p["database"]],
        reason=reason,
        starts_at=now + timedelta(hours=start_in),
        ends_at=now + timedelta(hours=start_in + hours),
    )
