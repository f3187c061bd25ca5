"""The cockpit in Chromium: every page of a crawl as each demo user, at 390 px wide, scrolls no
sideways and has no axe-core violation (npm axe-core, injected); the reviewer's home shows a real
gateway's halt without a reload."""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
from collections import deque
from pathlib import Path

import anyio
import pytest
from django.db import connections
from mcp import Client, StdioServerParameters

from governance.services.flags import flag_disable
from tests.conftest import ROOT, login
from tests.e2e.portal_world import build_world, gateway_args, write_gateway_files
from tests.portal.crawl import (
    DEMO_PASSWORD,
    DEMO_USERS,
    FORM_GETS,
    MAX_PAGES,
    demo_world,
    link_target,
    raw_times,
    shape,
)

pytestmark = [pytest.mark.slow, pytest.mark.browser]

AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"


def crawl(page, base: str, *, limit: int = MAX_PAGES) -> list[str]:
    """Pages reachable by links from the home (and the GET forms' results), breadth first; one
    per path shape (ids → one)."""
    seen_shapes: set[str] = set()
    starts = [f"{base}/", *(f"{base}{u}" for u in FORM_GETS)]
    queue, visited = deque(starts), []
    while queue and len(visited) < limit:
        url = queue.popleft()
        if shape(url) in seen_shapes and url not in starts:
            continue
        seen_shapes.add(shape(url))
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
            target = link_target(base, url, href)
            if target:
                queue.append(target)


def behind_a_form(page, base: str, username: str):
    """The pages only a POST reaches, reached the way a person does (fill in, submit): the
    client-registered page (one-time token, .mcp.json), the new agent's one-time secret, the
    policy import preview, the invitation link. Yields a label for each, on that page."""
    if username != "demo-admin":
        return
    page.goto(f"{base}/governance/clients/add/")
    page.fill("#id_name", "crawl-laptop")
    page.select_option("#id_environment", label="development")
    page.check("input[name=roles] >> nth=0")
    page.click("main button[type=submit]")
    page.wait_for_selector("text=.mcp.json")
    yield "client registered"
    page.goto(f"{base}/governance/agents/add/")
    page.fill("#id_name", "Crawl bot")
    page.fill("#id_slug", "crawl-bot")
    page.check("input[name=roles] >> nth=0")
    page.click("main button[type=submit]")
    page.wait_for_selector("text=crawl-bot")
    assert "/agents/add/" in page.url and page.locator("#id_name").count() == 0, page.url
    yield "agent registered"
    yaml = page.request.get(f"{base}/governance/policy/export/").text()
    page.goto(f"{base}/governance/policy/import/")
    page.fill("#id_text", yaml)
    page.click("button[value=preview]")
    page.wait_for_selector("#import-preview")
    yield "import preview"
    page.goto(f"{base}/team/members/")
    page.fill("#id_email", "newcomer@example.test")
    page.click("form[action$='/team/members/invite/'] button[type=submit]")
    page.wait_for_selector("text=shown only once")
    yield "invitation created"


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
    counts, formed = {}, []

    def check(page, username: str, where: str) -> None:
        width, inner = page.evaluate(SIDEWAYS)
        if width > inner:
            problems.append(f"{username} {where}: scrollWidth {width} > innerWidth {inner}")
        problems.extend(f"{username} {where}: {p}" for p in raw_times(page.content()))
        page.add_script_tag(path=str(AXE))
        for v in page.evaluate(AXE_RUN):
            problems.append(f"{username} {where}: axe {v['id']} ({v['impact']}): {v['help']} — {v['nodes']}")

    for username in DEMO_USERS:
        # bypass_csp: axe is injected as a script the portal's CSP would (rightly) refuse.
        context = browser.new_context(viewport={"width": 390, "height": 844}, bypass_csp=True)
        page = context.new_page()
        page.set_default_timeout(60_000)  # a loaded machine; nothing here is timed
        login(page, portal_server, username, DEMO_PASSWORD)
        n = 0
        for url in crawl(page, portal_server):
            n += 1
            check(page, username, url)
        for label in behind_a_form(page, portal_server, username):
            formed.append(label)
            check(page, username, f"{label} ({page.url})")
        counts[username] = n
        context.close()
    print(f"\npages crawled per user: {counts}; behind a form: {formed}")
    assert all(n >= 10 for n in counts.values()), counts
    assert formed == ["client registered", "agent registered", "import preview", "invitation created"]
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
