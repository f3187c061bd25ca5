"""The global search: the team's servers, tools, roles, sessions by short id, tickets and incidents."""

from __future__ import annotations

import re
import uuid

from django.utils import timezone

from audit.models import AgentSession
from governance.services.roles import role_create
from incidents.services import incident_open
from tests.factories import ServerFactory, ToolFactory, UserFactory
from tests.governance.access_helpers import file_request, policy


def hits(client, q: str) -> list[tuple[str, str]]:
    html = client.get("/search/", {"q": q}).content.decode()
    return re.findall(r"<tr><td>([^<]+)</td><td><a href=\"[^\"]+\">([^<]+)</a>", html)


def test_search_finds_each_kind_in_the_team_only(client, team, other_team, admin, requester):
    server = ServerFactory(team=team, slug="github_api")
    ToolFactory(server=server, name="create_pull_request")
    ServerFactory(team=other_team, slug="github_enterprise")
    role_create(team=team, name="github_agent")
    p = policy(team)
    ticket = file_request(team, requester, p, reason="Hotfix for the github outage")
    incident = incident_open(team=team, title="GitHub token leaked", severity="sev2", actor=admin)
    sid = uuid.uuid4()
    AgentSession.objects.create(
        id=sid,
        team=team,
        environment=team.environments.get(name="development"),
        role="code_agent",
        started_at=timezone.now(),
    )
    foreign = uuid.uuid4()
    AgentSession.objects.create(
        id=foreign,
        team=other_team,
        environment=other_team.environments.get(name="development"),
        role="code_agent",
        started_at=timezone.now(),
    )
    client.force_login(admin)
    found = hits(client, "github")
    assert ("Server", "github_api") in found and ("Agent role", "github_agent") in found
    assert ("Ticket", f"#{ticket.pk}") in found and (
        "Incident",
        f"#{incident.pk} GitHub token leaked",
    ) in found
    assert ("Tool", "github_api.create_pull_request") in hits(client, "pull_req")
    assert not any("enterprise" in label for _, label in found)
    assert hits(client, str(sid)[:8]) == [("Session", str(sid)[:8])]
    assert hits(client, str(foreign)[:8]) == []  # another team's session: not even by prefix
    assert ("Ticket", f"#{ticket.pk}") in hits(client, f"#{ticket.pk}")
    # The box is on every page; a team-less user gets the no-team page.
    assert 'role="search"' in client.get("/").content.decode()
    client.force_login(UserFactory(username="loner"))
    assert client.get("/search/", {"q": "github"}).status_code == 404
