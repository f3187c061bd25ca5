"""Shadow mode end to end: a draft published as a shadow bundle by the real portal (uvicorn, PostgreSQL)
is fetched by a real `python -m mcpgov gateway` beside the live bundle. The gateway records in each audit
event what the shadow would have decided and enforces only the live bundle; the portal's shadow page
lists the calls where the two differ; dropping the shadow stops the shadow verdicts."""

from __future__ import annotations

import anyio
import pytest
from mcp import Client

from audit.models import AuditEvent
from audit.services.digests import audit_verify
from governance.models import PolicyBundle, ServerBinding
from governance.services import drafts
from governance.services import environments as env_services
from governance.services.teams import team_policy_settings_set
from tests.e2e import test_gateway_portal as journeys
from tests.e2e.portal_world import PortalBrowser
from tests.e2e.test_gateway_portal import NOW_UTC, in_thread, text, wait_delivered
from tests.factories import PASSWORD

pytestmark = [pytest.mark.slow]

team, workdir = journeys.team, journeys.workdir  # the journeys' team: time and filesystem upstreams


def shadow_of(events: list[dict]) -> list[tuple]:
    return [
        (
            e["phase"],
            e["tool"],
            (e.get("shadow") or {}).get("decision"),
            (e.get("shadow") or {}).get("trigger"),
        )
        for e in events
    ]


def test_gateway_records_shadow_verdicts_and_enforces_only_the_live_bundle(portal_server, team):
    world = team.world
    dev = world.env("development")
    live_before = PolicyBundle.objects.filter(environment=dev).order_by("-version").first()
    # The draft: the filesystem becomes read-only in development; published as a shadow, not live.
    team_policy_settings_set(team=world.team, policy_edits_immediate=False, actor=world.admin)
    with pytest.raises(drafts.DraftChangeRecorded):
        env_services.binding_set(
            environment=dev, server=team.filesystem, permission="read_only", actor=world.admin
        )
    draft = drafts.draft_open(team=world.team)
    drafts.draft_shadow_publish(draft=draft, actor=world.admin)
    assert PolicyBundle.objects.filter(environment=dev).order_by("-version").first() == live_before
    [token] = world.issue("development")

    async def scenario():
        async with Client(team.gateway(portal_server, token, "gw", "--read-write"), mode="legacy") as c:
            assert not (r := await c.call_tool(*NOW_UTC)).is_error, text(r)
            r = await c.call_tool(
                "filesystem__write_file", {"path": str(team.files / "s.txt"), "content": "live"}
            )
            assert not r.is_error, text(r)  # the live bundle allows it: the shadow is not enforced
            assert not (r := await c.call_tool(*NOW_UTC)).is_error, text(r)
            sid = await in_thread(team.session_id, "gw")
            return sid, await in_thread(wait_delivered, team, "gw", sid)

    sid, spooled = anyio.run(scenario)
    assert (team.files / "s.txt").read_text() == "live"
    expected = [
        ("intent", "get_current_time", "allow", None),
        ("result", "get_current_time", "allow", None),
        ("intent", "write_file", "refuse", "write_in_read_session"),
        ("result", "write_file", "refuse", "write_in_read_session"),
        ("intent", "get_current_time", "refuse", "session_halted"),  # the shadow's session halted
        ("result", "get_current_time", "refuse", "session_halted"),
    ]
    assert shadow_of(spooled) == expected
    assert [e["status"] for e in spooled if e["phase"] == "result"] == ["success"] * 3
    assert {e["shadow"]["bundle_version"] for e in spooled} == {live_before.version}
    # stored by the portal as sent, inside the hash chain
    rows = list(AuditEvent.objects.filter(session_id=sid).order_by("seq").values("phase", "tool", "shadow"))
    assert [
        (r["phase"], r["tool"], r["shadow"]["decision"], r["shadow"]["trigger"]) for r in rows
    ] == expected
    assert audit_verify(team=world.team)[2] == []

    admin = PortalBrowser(portal_server, world.admin.username, PASSWORD)
    try:
        page = admin.http.get(f"{portal_server}/audit/shadow/", timeout=60).text
        assert page.count('class="shadow-difference"') == 2
        assert "filesystem.write_file" in page and "write_in_read_session" in page
        assert f"/audit/sessions/{sid}/" in page
        # the admin drops the shadow: the live bundle is untouched, the gateway stops shadow verdicts
        admin.post("/governance/draft/shadow/drop/", {})
    finally:
        admin.close()
    assert ServerBinding.objects.get(environment=dev, server=team.filesystem).permission == "read_write"

    async def after_drop():
        async with Client(team.gateway(portal_server, token, "gw2", "--read-write"), mode="legacy") as c:
            r = await c.call_tool(
                "filesystem__write_file", {"path": str(team.files / "t.txt"), "content": "x"}
            )
            assert not r.is_error, text(r)
            sid2 = await in_thread(team.session_id, "gw2")
            return await in_thread(wait_delivered, team, "gw2", sid2)

    events = anyio.run(after_drop)
    assert [e.get("shadow") for e in events] == [None, None]
