"""Metrics and traces across the product: a real gateway (``python -m mcpgov gateway --metrics …``, OTLP
export on) in a session against the REAL portal (uvicorn with two workers, prometheus-client's
multiprocess mode) and the mcp-server-time upstream.

- the portal's /metrics, scraped repeatedly (each scrape may reach either worker), shows every
  worker's counts: events ingested, the events API's requests, the gateway's long polls waiting;
- the gateway's /metrics, scraped during the session: its call, its bundle version, its spool drained;
- the call's span continues the agent's traceparent, and the event the PORTAL stored carries its trace id;
- docs/prometheus/alerts.yml parses and names only metrics these endpoints export.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path

import anyio
import pytest
import yaml
from django.db import connections
from mcp import Client, StdioServerParameters
from prometheus_client.parser import text_string_to_metric_families

from audit.models import AgentSession, AuditEvent
from governance.models import PolicyBundle
from tests.conftest import free_port, run_portal
from tests.e2e.portal_world import PY, ROOT, build_world, gateway_args, write_gateway_files
from tests.otlp_receiver import OtlpReceiver

pytestmark = [pytest.mark.slow]

ALERTS = ROOT / "docs" / "prometheus" / "alerts.yml"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(url, timeout=15) as resp:  # noqa: S310 - a local test URL
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples, name: str, **labels) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    return sum(
        v
        for (n, lab), v in samples.items()
        if n == name and all(dict(lab).get(k) == x for k, x in labels.items())
    )


def scraped_when(url: str, condition):
    samples = scrape(url)
    return samples if condition(samples) else None


def drained(s) -> bool:
    return (
        total(s, "mcpgov_gateway_spool_backlog_events") == 0 and total(s, "mcpgov_gateway_calls_total") == 1
    )


def polling(s) -> bool:
    return total(s, "mcpgov_portal_longpoll_waiters", channel="bundle") >= 1


def poll(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s (last: {value!r})")
        time.sleep(0.2)


def db(fn):
    try:
        return fn()
    finally:
        connections.close_all()


def test_a_gateway_session_moves_both_metrics_endpoints_and_its_trace_reaches_the_portals_audit(
    transactional_db,
):
    world = build_world()
    [token] = world.issue("development")
    base = Path(tempfile.mkdtemp(prefix="mcpgov-obs-"))
    prom = base / "prometheus"
    prom.mkdir()
    keys, config = write_gateway_files(base)
    gw_port = free_port()
    gw_metrics = f"http://127.0.0.1:{gw_port}/metrics"
    version = (
        PolicyBundle.objects.filter(environment=world.env("development")).order_by("-version")[0].version
    )
    try:
        with (
            OtlpReceiver() as otlp,
            run_portal(
                env={"PROMETHEUS_MULTIPROC_DIR": str(prom)}, uvicorn_args=("--workers", "2")
            ) as portal,
        ):
            portal_metrics = f"{portal}/metrics"
            before = scrape(portal_metrics)
            args = [
                *gateway_args(
                    portal=portal, token=token, keys=keys, config=config, env="development", workdir=base
                ),
                "--metrics",
                f"127.0.0.1:{gw_port}",
            ]
            params = StdioServerParameters(
                command=PY, args=args, cwd=str(ROOT), env={"MCPGOV_LOG_LEVEL": "ERROR", **otlp.env()}
            )

            async def session():
                async with Client(params, mode="legacy") as c:
                    r = await c.call_tool(
                        "time__get_current_time",
                        {"timezone": "UTC"},
                        meta={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
                    )
                    assert not r.is_error
                    # the spool drains to the portal; the gateway's long polls wait in some portal worker
                    gateway_now = await anyio.to_thread.run_sync(
                        lambda: poll(
                            lambda: scraped_when(gw_metrics, drained), what="the gateway's spool drained"
                        )
                    )
                    portal_now = await anyio.to_thread.run_sync(
                        lambda: poll(
                            lambda: scraped_when(portal_metrics, polling), what="the bundle long poll"
                        )
                    )
                    refused = await c.call_tool("clock__tick", {})  # not allowed: the session halts
                    assert refused.is_error
                    halted = await anyio.to_thread.run_sync(scrape, gw_metrics)
                    return gateway_now, portal_now, halted

            gateway_now, portal_now, halted = anyio.run(session)

            sid = db(
                lambda: poll(
                    lambda: AgentSession.objects.filter(team=world.team).values_list("pk", flat=True).first(),
                    what="the session",
                )
            )
            stored = db(
                lambda: poll(
                    lambda: list(
                        AuditEvent.objects.filter(session_id=sid, tool="get_current_time").values_list(
                            "trace_id", flat=True
                        )
                    ),
                    what="the events",
                )
            )
            db(
                lambda: poll(
                    lambda: AuditEvent.objects.filter(session_id=sid).count() == 4, what="all 4 events"
                )
            )

            # every scrape, whichever worker answers it, counts the events all workers ingested
            for _ in range(6):
                after = scrape(portal_metrics)
                ingested = total(after, "mcpgov_portal_audit_events_ingested_total") - total(
                    before, "mcpgov_portal_audit_events_ingested_total"
                )
                assert ingested == 4
                posted = total(
                    after,
                    "mcpgov_portal_http_requests_total",
                    view="audit-api:gateway-events",
                    method="POST",
                    status="200",
                )
                assert posted >= 1
                assert total(after, "mcpgov_portal_audit_ingest_lag_seconds_count") >= 4
                assert total(after, "mcpgov_portal_bundle_builds_total") >= 0
            assert total(portal_now, "mcpgov_portal_http_requests_total", view="governance-api:bundle") >= 1
            assert total(after, "mcpgov_portal_sessions") >= 1

            deadline = time.monotonic() + 30
            while (
                not [s for s in otlp.named("tools/call time__") if s["kind"] == 2]
                and time.monotonic() < deadline
            ):
                time.sleep(0.1)
            [span] = [s for s in otlp.named("tools/call time__") if s["kind"] == 2]
    finally:
        shutil.rmtree(base, ignore_errors=True)

    # the gateway, during the session
    assert (
        total(
            gateway_now,
            "mcpgov_gateway_calls_total",
            server="time",
            tool="get_current_time",
            verdict="allow",
            outcome="success",
        )
        == 1
    )
    assert total(gateway_now, "mcpgov_gateway_bundle_version") == version
    assert total(gateway_now, "mcpgov_gateway_bundle_expires_in_seconds") > 0
    assert total(halted, "mcpgov_gateway_session_state_changes_total", state="halted") == 1

    # the trace and the audit record name each other
    assert span["trace_id"] == TRACE_ID and span["parent_span_id"] == PARENT_ID
    assert stored == [TRACE_ID, TRACE_ID]
    assert span["attributes"]["mcpgov.session.id"] == str(sid)

    # the sample alert rules parse and use only exported metrics
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    assert rules and all({"alert", "expr", "labels", "annotations"} <= r.keys() for r in rules)
    exported = {n for n, _ in gateway_now} | {n for n, _ in halted} | {n for n, _ in after}
    exported |= {n for n, _ in portal_now}
    named = {m for r in rules for m in re.findall(r"\bmcpgov_[a-z_]+", r["expr"])}
    assert named and named <= exported, named - exported
