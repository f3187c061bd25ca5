"""The cockpit in Chromium: every page of a crawl as each demo user, at 390 px wide, scrolls no
sideways and has no axe-core violation (npm axe-core, injected); the reviewer's home shows a real
gateway's halt without a reload."""

from __future__ import annotations

import io
import shutil
import sys
import tempfile
import threading
import uuid
from collections import deque
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlsplit

import anyio
import pytest
from django.core.management import call_command
from django.db import connections
from mcp import Client, StdioServerParameters

from audit.services import session_open, session_report_state
from audit.services.ingest import events_ingest
from governance.services.access import access_request_create
from governance.services.clients import client_create
from governance.services.flags import flag_disable
from incidents.services import incident_open
from portal.models import Team
from tests.audit.conftest import event
from tests.conftest import ROOT, login
from tests.e2e.portal_world import build_world, gateway_args, write_gateway_files

pytestmark = [pytest.mark.slow, pytest.mark.browser]

AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
DEMO_USERS = ("demo-admin", "demo-reviewer", "demo-requester", "demo-viewer")
MAX_PAGES = 70  # per user: every kind of page, not every object
# Not pages: downloads, the API, the Django admin, actions behind a GET that leave the page.
SKIP = ("/logout/", "/api/", "/admin/", "/metrics", "/export/", "/oauth/", "/sso/", "/.well-known/")


def demo_world(workspace: Path) -> None:
    """The demo data plus what makes every page show something: sessions with calls, a halt, a
    refused repeat, a ticket, an incident, a gateway."""
    from datetime import timedelta

    from django.utils import timezone

    call_command(
        "seed_demo", "--no-discover", workspace=workspace, stdout=io.StringIO(), stderr=io.StringIO()
    )
    team = Team.objects.get(slug="demo")
    dev = team.environments.get(name="development")
    client = client_create(team=team, environment=dev, name="laptop").client
    from django.contrib.auth import get_user_model

    users = {u.username: u for u in get_user_model().objects.filter(username__in=DEMO_USERS)}
    for halted in (False, True):
        session, _ = session_open(client=client, id=uuid.uuid4(), role="code_agent")
        batch = [event(seq, server="time", tool="get_current_time") for seq in range(1, 7)]
        batch += [
            event(seq, server="shell_execution", tool="run", status="blocked", trigger="unauthorized_server")
            for seq in range(7, 13)
        ]
        events_ingest(session_id=session.pk, client=client, events=batch)
        if halted:
            session_report_state(
                client=client,
                session_id=session.pk,
                state="halted",
                trigger="unauthorized_server",
                reason="shell_execution is not allowed",
            )
        else:
            session_report_state(client=client, session_id=session.pk, state="ended", reason="done")
    from governance.models import AgentRole, McpServer

    now = timezone.now()
    access_request_create(
        team=team,
        requester=users["demo-requester"],
        environment=team.environments.get(name="production"),
        role=AgentRole.objects.get(team=team, name="code_agent"),
        servers=[McpServer.objects.get(team=team, slug="github_api")],
        reason="INC-7 hotfix",
        starts_at=now,
        ends_at=now + timedelta(hours=1),
    )
    incident_open(team=team, title="Token leaked in a PR", severity="sev2", actor=users["demo-admin"])


def crawl(page, base: str, *, limit: int = MAX_PAGES) -> list[str]:
    """Pages reachable by links from the home, breadth first; one per path shape (ids → one)."""
    import re

    seen_shapes: set[str] = set()
    queue, visited = deque([f"{base}/"]), []
    while queue and len(visited) < limit:
        url = queue.popleft()
        path = urlsplit(url).path
        shape = re.sub(r"/[0-9a-f-]{8,}/|/\d+/", "/ID/", path) + ("?" if urlsplit(url).query else "")
        if shape in seen_shapes:
            continue
        seen_shapes.add(shape)
        response = page.goto(url)
        if (
            response is None
            or response.status >= 400
            or "text/html" not in (response.headers.get("content-type") or "")
        ):
            continue
        visited.append(url)
        yield url
        for href in page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))"):
            target, _ = urldefrag(urljoin(url, href))
            parts = urlsplit(target)
            if f"{parts.scheme}://{parts.netloc}" != base or any(s in parts.path for s in SKIP):
                continue
            if "format=" in parts.query or parts.path.endswith((".csv", ".md", ".jsonl", ".log")):
                continue  # downloads (exports, the cost table), not pages
            queue.append(target)


AXE_RUN = """async () => {
  const r = await axe.run(document, {resultTypes: ['violations']});
  return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.slice(0, 3).map(n => n.target.join(' ') + ' ' + n.html.slice(0, 120))}));
}"""
SIDEWAYS = "() => [document.documentElement.scrollWidth, window.innerWidth]"


@pytest.fixture
def workspace():
    base = Path(tempfile.mkdtemp(prefix="mcpgov-crawl-"))
    yield base / "workspace"
    shutil.rmtree(base, ignore_errors=True)


def test_every_page_as_each_demo_user_fits_390px_and_has_no_axe_violations(portal_server, browser, workspace):
    if not AXE.exists():
        pytest.fail("node_modules/axe-core is missing: run `make upstreams` (npm install)")
    demo_world(workspace)
    problems: list[str] = []
    counts = {}
    for username in DEMO_USERS:
        # bypass_csp: axe is injected as a script the portal's CSP would (rightly) refuse.
        context = browser.new_context(viewport={"width": 390, "height": 844}, bypass_csp=True)
        page = context.new_page()
        page.set_default_timeout(20_000)
        login(page, portal_server, username, "demo-password-1")
        n = 0
        for url in crawl(page, portal_server):
            n += 1
            width, inner = page.evaluate(SIDEWAYS)
            if width > inner:
                problems.append(f"{username} {url}: scrollWidth {width} > innerWidth {inner}")
            page.add_script_tag(path=str(AXE))
            for v in page.evaluate(AXE_RUN):
                problems.append(
                    f"{username} {url}: axe {v['id']} ({v['impact']}): {v['help']} — {v['nodes']}"
                )
        counts[username] = n
        context.close()
    print(f"\npages crawled per user: {counts}")
    assert all(n >= 10 for n in counts.values()), counts
    assert not problems, "\n".join(problems)


def test_the_reviewers_home_shows_a_real_gateways_halt_without_a_reload(portal_server, page):
    world = build_world()
    workdir = Path(tempfile.mkdtemp(prefix="mcpgov-home-"))
    try:
        [token] = world.issue("development")
        keys, config = write_gateway_files(workdir)
        args = gateway_args(
            portal=portal_server, token=token, keys=keys, config=config, env="development", workdir=workdir
        )
        params = StdioServerParameters(
            command=sys.executable, args=args, cwd=str(ROOT), env={"MCPGOV_LOG_LEVEL": "ERROR"}
        )
        login(page, portal_server, world.reviewer.username)
        halted = page.locator('[data-need="halted"] .num')
        assert halted.inner_text() == "0"
        page.evaluate("() => { window.__sameDocument = true; }")
        outcome: dict = {}

        async def agent():
            async with Client(params, mode="legacy") as c:
                ok = await c.call_tool("time__get_current_time", {"timezone": "UTC"})
                outcome["before"] = ok.is_error

                def switch_off():
                    try:
                        flag_disable(
                            flag=world.flag,
                            environment=world.env("development"),
                            reason="INC-9: suspended",
                            actor=world.admin,
                        )
                    finally:
                        connections.close_all()

                await anyio.to_thread.run_sync(switch_off)
                for _ in range(300):  # until the gateway has the change (bounded, generous)
                    r = await c.call_tool("time__get_current_time", {"timezone": "UTC"})
                    if r.is_error:
                        outcome["refused"] = "\n".join(getattr(x, "text", "") for x in r.content)
                        return
                    await anyio.sleep(0.2)

        # Playwright's sync API owns this thread's event loop: the agent runs in its own thread.
        errors: list[BaseException] = []

        def run():
            try:
                anyio.run(agent)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        page.wait_for_function(
            "() => document.querySelector('[data-need=\"halted\"] .num').textContent.trim() === '1'",
            timeout=90_000,
        )
        thread.join(timeout=120)
        assert not errors, errors
        assert outcome.get("before") is False and "MCP_KILL_SWITCH" in outcome.get("refused", ""), outcome
        assert page.evaluate("() => window.__sameDocument === true")  # no reload happened
        badge = page.locator("#badge-audit_halted_queue")
        assert badge.inner_text().startswith("1")
        page.locator('[data-need="halted"] a').click()
        page.wait_for_url(f"{portal_server}/audit/halted/")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
