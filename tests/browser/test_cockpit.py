"""The cockpit in Chromium: the reviewer's home shows a real gateway's halt without a reload. (The
crawl of every page as each demo user is tests/browser/cockpit_crawl.py, a test file per user.)"""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
from pathlib import Path

import anyio
import pytest
from django.db import connections
from mcp import Client, StdioServerParameters

from governance.services.flags import flag_disable
from tests.conftest import ROOT, login
from tests.e2e.portal_world import build_world, gateway_args, write_gateway_files

pytestmark = [pytest.mark.slow, pytest.mark.browser]


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
