"""The draft simulation over traffic a real gateway recorded: a `python -m mcpgov gateway` subprocess,
driven by the SDK client, calls real upstreams (mcp-server-time, @modelcontextprotocol/server-filesystem)
and ships its audit events to the real portal (uvicorn, PostgreSQL). Then an admin, through the
portal's own pages, drafts a change that refuses exactly one of those calls; the simulation, on the
page and over the API, names that call and no other."""

from __future__ import annotations

from datetime import timedelta

import anyio
import pytest
from django.utils import timezone
from mcp import Client

from audit.models import AuditEvent
from audit.services.simulation import draft_simulate
from governance.models import PolicyDraft, ServerBinding
from governance.services.teams import team_policy_settings_set
from tests.e2e import test_gateway_portal as journeys
from tests.e2e.portal_world import PortalBrowser
from tests.e2e.test_gateway_portal import NOW_UTC, in_thread, text, wait_delivered
from tests.factories import PASSWORD

# The team of the gateway-portal journeys (time and filesystem upstreams), fixtures shared as they are.
team, workdir = journeys.team, journeys.workdir

pytestmark = [pytest.mark.slow]


def test_simulation_names_the_one_recorded_call_a_draft_refuses(portal_server, team):
    [token] = team.world.issue("development")
    (team.files / "notes.txt").write_text("hello")

    async def scenario():
        async with Client(team.gateway(portal_server, token, "gw", "--read-write"), mode="legacy") as c:
            assert not (r := await c.call_tool(*NOW_UTC)).is_error, text(r)
            r = await c.call_tool("filesystem__read_text_file", {"path": str(team.files / "notes.txt")})
            assert text(r) == "hello"
            r = await c.call_tool(
                "filesystem__write_file", {"path": str(team.files / "out.txt"), "content": "written"}
            )
            assert not r.is_error, text(r)  # the last call: a refusal here halts nothing after it
            sid = await in_thread(team.session_id, "gw")
            return sid, await in_thread(wait_delivered, team, "gw", sid)

    sid, spooled = anyio.run(scenario)
    assert len(spooled) == 6 and (team.files / "out.txt").read_text() == "written"
    write = AuditEvent.objects.get(session_id=sid, phase="intent", tool="write_file")

    # The team now edits through drafts; the admin makes the filesystem read-only in development,
    # with the binding page of the live portal.
    world = team.world
    team_policy_settings_set(team=world.team, policy_edits_immediate=False, actor=world.admin)
    binding = ServerBinding.objects.get(environment=world.env("development"), server=team.filesystem)
    admin = PortalBrowser(portal_server, world.admin.username, PASSWORD)
    try:
        admin.post(
            f"/governance/bindings/{binding.pk}/edit/",
            {"target_kind": "path", "target": str(team.files), "permission": "read_only"},
        )
        assert ServerBinding.objects.get(pk=binding.pk).permission == "read_write"  # only drafted
        draft = PolicyDraft.objects.get(team=world.team, status="open")

        report = draft_simulate(draft=draft, since=timezone.now() - timedelta(days=1))
        dev = next(e for e in report.environments if e.environment == "development")
        assert (dev.calls, dev.sessions) == (3, 1)
        assert [(c.session_id, c.seq, c.server, c.tool, c.live, c.draft) for c in dev.newly_refused] == [
            (sid, write.seq, "filesystem", "write_file", "allow", "refuse (write_in_read_session)")
        ]
        assert dev.refused_by_trigger == {"write_in_read_session": 1}
        assert dev.newly_allowed == [] and dev.halted_sessions == [sid]

        # the same answer on the portal's page and over its API
        page = admin.http.get(f"{portal_server}/audit/simulation/?days=1", timeout=60)
        assert page.status_code == 200
        html = page.text
        assert html.count('class="newly-refused"') == 1
        assert f"#{write.seq} filesystem.write_file" in html and f"/audit/sessions/{sid}/" in html
        body = admin.http.get(
            f"{portal_server}/api/v1/policy-drafts/{draft.pk}/simulation/",
            params={"days": 1, "environment": "development"},
            timeout=60,
        ).json()
        [env] = body["environments"]
        assert [(c["session_id"], c["seq"], c["tool"]) for c in env["newly_refused"]] == [
            (sid, write.seq, "write_file")
        ]
    finally:
        admin.close()
