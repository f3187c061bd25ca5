"""A chart drawn from a real gateway session: the portal under uvicorn, a real `mcpgov gateway` on stdio in
front of the real `time` MCP server, calls, then a kill switch (a refusal and a halt); a reviewer opens the
activity page in Chromium and the vendored Chart.js draws what the gateway reported, with no CSP violation.

With MCPGOV_SCREENSHOT_DIR set, the page's screenshot is also written there (docs/screenshots/ holds it).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from audit.models import AuditEvent, SessionStateChange
from governance.models import EnforcementClient, McpServer
from tests.conftest import login
from tests.e2e.portal_world import ROOT, PortalBrowser, build_world, gateway_args, write_gateway_files
from tests.factories import PASSWORD
from tests.mcpgov.test_lifecycle import BOUND, Wire

pytestmark = [pytest.mark.slow, pytest.mark.browser]

RECORD_CSP = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__csp.push(e.violatedDirective + " " + (e.blockedURI || "inline"));
});
"""

# What the chart holds and how much of the canvas it painted (non-white pixels).
CHART_STATE = """
(id) => {
  const canvas = document.getElementById(id);
  const chart = window.Chart && window.Chart.getChart(canvas);
  if (!chart) { return null; }
  const ctx = canvas.getContext("2d");
  const img = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 0; i < img.length; i += 4) {
    if (img[i + 3] > 0 && (img[i] < 240 || img[i + 1] < 240 || img[i + 2] < 240)) { painted++; }
  }
  return {
    series: chart.data.datasets.map((d) => [d.label, d.data.reduce((a, b) => a + b, 0)]),
    patterned: chart.data.datasets.map((d) => typeof d.backgroundColor !== "string"),
    painted: painted,
  };
}
"""


@pytest.fixture
def workdir():
    # a neutral prefix: words such as "production" in a path are what the gateway refuses
    base = Path(tempfile.mkdtemp(prefix="mcpgov-act-"))
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _poll(predicate, what: str):
    deadline = time.monotonic() + BOUND
    while not (value := predicate()):
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
    return value


def test_the_activity_chart_draws_a_real_gateway_session(portal_server, workdir, page, tmp_path):
    world = build_world()
    McpServer.objects.filter(pk=world.server.pk).update(cost_per_call="0.0020")
    [token] = world.issue("development")
    keys, config = write_gateway_files(workdir)
    args = gateway_args(
        portal=portal_server, token=token, keys=keys, config=config, env="development", workdir=workdir
    )
    gw = Wire(args, cwd=ROOT, stderr=workdir / "gw.err")
    admin = PortalBrowser(portal_server, world.admin.username, PASSWORD)
    try:
        gw.handshake()
        for _ in range(5):
            r = gw.call_time()
            assert not r["result"].get("isError"), r
        for tz in ("Europe/Paris", "Asia/Tokyo"):
            r = gw.request(
                "tools/call",
                {
                    "name": "time__convert_time",
                    "arguments": {"source_timezone": "UTC", "time": "12:00", "target_timezone": tz},
                },
            )
            assert not r["result"].get("isError"), r
        admin.post(
            f"/governance/flags/{world.flag.pk}/{world.env('development').pk}/disable/",
            {"reason": "INC-9: time server suspended"},
        )
        _poll(lambda: gw.call_time()["result"].get("isError"), "the kill switch reached the gateway")
        _poll(
            lambda: SessionStateChange.objects.filter(to_state="halted").exists(),
            "the halt reached the portal",
        )
        _poll(
            lambda: AuditEvent.objects.filter(phase="result", status="blocked").exists(),
            "the refusal reached the portal",
        )
        gw.proc.stdin.close()
        assert gw.wait() == 0, gw.stderr()
    finally:
        admin.close()
        if gw.proc.poll() is None:
            gw.proc.kill()
    results = AuditEvent.objects.filter(phase="result")
    calls, refusals = results.count(), results.filter(status="blocked").count()
    assert calls >= 8 and refusals >= 1

    page.add_init_script(RECORD_CSP)
    page.set_viewport_size({"width": 1280, "height": 900})
    login(page, portal_server, world.reviewer.username)
    page.goto(f"{portal_server}/audit/activity/?range=24h&by=server")
    page.wait_for_selector("#chart-calls[data-rendered]")
    state = page.evaluate(CHART_STATE, "chart-calls")
    assert state is not None, "Chart.js drew no chart"
    assert state["series"] == [["time (solid)", calls]]
    assert state["painted"] > 500, "the canvas is blank"
    refused = page.evaluate(CHART_STATE, "chart-refusals")
    assert refused["series"] == [["time (solid)", refusals]]
    halts = page.evaluate(CHART_STATE, "chart-halts")
    assert [total for _name, total in halts["series"]] == [1]
    # the data table beside the chart says the same, in text
    assert page.locator("#chart-calls-title .count").inner_text() == str(calls)
    usage = page.locator("section[aria-labelledby=servers-title] tbody tr").first.inner_text()
    assert usage.split("\t")[:4] == ["time", str(calls), str(refusals), "0"]
    gateways = page.locator("section[aria-labelledby=gateways-title] tbody tr").first.inner_text()
    client = EnforcementClient.objects.get(team=world.team)
    assert client.bundle_version and f"v{client.bundle_version}" in gateways and "connected" in gateways
    assert page.evaluate("window.__csp") == []

    # split by trigger: the refusals chart names the kill switch (its own pattern, not a colour alone)
    page.goto(f"{portal_server}/audit/activity/?range=24h&by=trigger")
    page.wait_for_selector("#chart-refusals[data-rendered]")
    by_trigger = page.evaluate(CHART_STATE, "chart-refusals")
    assert by_trigger["series"] == [["kill_switch_flag (solid)", refusals]]
    both = page.evaluate(CHART_STATE, "chart-calls")
    assert both["series"] == [
        ["no trigger (solid)", calls - refusals],
        ["kill_switch_flag (diagonal)", refusals],
    ]
    assert both["patterned"] == [False, True]

    shot = tmp_path / "activity.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("MCPGOV_SCREENSHOT_DIR"):
        shutil.copy(shot, Path(os.environ["MCPGOV_SCREENSHOT_DIR"]) / "activity.png")
