"""The cockpit crawl in Chromium, as one demo user: every page reachable by links (one per path
shape) and the pages behind a form, at 390 px wide, scrolls no sideways, prints times only in the
one format and has no axe-core violation (npm axe-core, injected).

One test file per demo user calls `crawl_as` (tests/browser/test_cockpit_crawl_*.py): with
`--dist loadfile` each file goes to one xdist worker, so the four crawls, each minutes long on a
loaded machine, can run on different workers instead of one after another in one test.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import deque
from pathlib import Path

import pytest

from tests.conftest import ROOT, login
from tests.portal.crawl import DEMO_PASSWORD, FORM_GETS, MAX_PAGES, demo_world, link_target, raw_times, shape

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


FORMS = ["client registered", "agent registered", "import preview", "invitation created"]


def crawl_as(portal_server: str, browser, username: str) -> None:
    """Build the demo world, then crawl the portal as `username` and assert on every page it reaches."""
    if not AXE.exists():
        pytest.fail("node_modules/axe-core is missing: run `make upstreams` (npm install)")
    base = Path(tempfile.mkdtemp(prefix="mcpgov-crawl-"))
    try:
        demo_world(base / "workspace")
        problems: list[str] = []
        formed: list[str] = []

        def check(page, where: str) -> None:
            width, inner = page.evaluate(SIDEWAYS)
            if width > inner:
                problems.append(f"{username} {where}: scrollWidth {width} > innerWidth {inner}")
            problems.extend(f"{username} {where}: {p}" for p in raw_times(page.content()))
            page.add_script_tag(path=str(AXE))
            for v in page.evaluate(AXE_RUN):
                problems.append(
                    f"{username} {where}: axe {v['id']} ({v['impact']}): {v['help']} — {v['nodes']}"
                )

        # bypass_csp: axe is injected as a script the portal's CSP would (rightly) refuse.
        context = browser.new_context(viewport={"width": 390, "height": 844}, bypass_csp=True)
        try:
            page = context.new_page()
            page.set_default_timeout(60_000)  # a loaded machine; nothing here is timed
            login(page, portal_server, username, DEMO_PASSWORD)
            n = 0
            for url in crawl(page, portal_server):
                n += 1
                check(page, url)
            for label in behind_a_form(page, portal_server, username):
                formed.append(label)
                check(page, f"{label} ({page.url})")
        finally:
            context.close()
        print(f"\npages crawled as {username}: {n}; behind a form: {formed}")
        assert n >= 10, (username, n)
        assert formed == (FORMS if username == "demo-admin" else []), formed
        assert not problems, "\n".join(problems)
    finally:
        shutil.rmtree(base, ignore_errors=True)
