"""Metrics and traces of a real gateway (``python -m mcpgov gateway`` on stdio, driven by the SDK client).

- ``--metrics``: scraped during the session and parsed with prometheus-client's own parser; calls are
  counted by server, tool, verdict, outcome and trigger, halts by trigger; bundle version and expiry;
- OpenTelemetry: spans exported over OTLP/HTTP (the SDK's exporter, configured by the standard OTEL_*
  variables) to a receiver in the test; an incoming ``_meta.traceparent`` is continued, the upstream
  receives the gateway's client span as its parent, and the audit events carry the trace id;
- with no OTEL_* variable, no span is exported but the agent's trace context still reaches the upstream
  unchanged and the audit event records its trace id.
"""

from __future__ import annotations

import json
import time
import urllib.request

import anyio
import pytest
from mcp import Client, StdioServerParameters
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port
from tests.mcpgov.conftest import PY, ROOT
from tests.otlp_receiver import OtlpReceiver

pytestmark = [pytest.mark.slow]

ECHO = ROOT / "tests" / "mcpgov" / "echo_meta_server.py"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


def echo_world(world):
    doc = world.doc()
    doc["roles"]["code_agent"]["allowed_servers"].append("echo")
    doc["servers"]["echo"] = {
        "category": "other",
        "transport": "stdio",
        "command": PY,
        "args": [str(ECHO)],
        "tools": {"echo_meta": {"class": "read"}},
    }
    doc["environment_policy"]["bindings"]["echo"] = {"target": "local", "permission": "read_only"}
    world.write_bundle(doc)
    world.write_config(("time",), extra={"echo": {"command": PY, "args": [str(ECHO)]}})


def gateway(world, *extra: str, env: dict[str, str] | None = None) -> StdioServerParameters:
    return StdioServerParameters(
        command=PY,
        args=world.gateway_args(*extra),
        cwd=str(ROOT),
        env={"MCPGOV_LOG_LEVEL": "WARNING", **(env or {})},
    )


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - a local test URL
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples, name: str, **labels) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def echoed(result) -> dict:
    return json.loads(result.content[0].text)


def test_gateway_metrics_and_spans_follow_the_agents_trace(world):
    echo_world(world)
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"

    with OtlpReceiver() as otlp:

        async def scenario():
            params = gateway(world, "--metrics", f"127.0.0.1:{port}", env=otlp.env())
            async with Client(params, mode="legacy") as c:
                continued = await c.call_tool("echo__echo_meta", {}, meta={"traceparent": TRACEPARENT})
                fresh = await c.call_tool("time__get_current_time", {"timezone": "UTC"})
                assert not continued.is_error and not fresh.is_error
                during = scrape(url)
                refused = await c.call_tool("shell__run", {"command": "id"})
                assert refused.is_error
                assert (await c.call_tool("nosuch__anything", {})).is_error
                after = scrape(url)
                return echoed(continued), during, after

        upstream_meta, during, after = anyio.run(scenario)

        # metrics, read while the session runs
        calls = "mcpgov_gateway_calls_total"
        ok = {"verdict": "allow", "outcome": "success", "trigger": ""}
        assert sample(during, calls, server="echo", tool="echo_meta", **ok) == 1
        assert sample(during, calls, server="time", tool="get_current_time", **ok) == 1
        assert sample(during, "mcpgov_gateway_bundle_version") == 1
        assert 0 < sample(during, "mcpgov_gateway_bundle_expires_in_seconds") <= 3600
        assert sample(during, "mcpgov_gateway_bundle_age_seconds") >= 0
        assert sample(during, "mcpgov_gateway_sessions", state="active") == 1
        assert sample(during, "mcpgov_gateway_spool_backlog_events") == 0  # offline: nothing owed
        assert sample(during, "mcpgov_gateway_upstream_seconds_count", server="echo") == 1
        assert sample(during, "mcpgov_gateway_decision_seconds_count", verdict="allow") == 2
        assert (
            sample(during, "mcpgov_gateway_info", team="acme", environment="development", role="code_agent")
            == 1
        )
        refusal = {"verdict": "refuse", "outcome": "blocked", "trigger": "unauthorized_server"}
        assert sample(after, calls, server="shell", tool="(unknown)", **refusal) == 1
        # names the agent makes up are not label values of their own
        labelled = {dict(labels).get("server") for (name, labels) in after if name == calls}
        assert labelled == {"echo", "time", "shell", "(unknown)"}
        assert (
            sample(
                after,
                "mcpgov_gateway_session_state_changes_total",
                state="halted",
                trigger="unauthorized_server",
            )
            == 1
        )
        assert sample(after, "mcpgov_gateway_sessions", state="halted") == 1

        # spans: flushed by the exporter when the gateway exits
        deadline = time.monotonic() + 30
        while len(otlp.named("tools/call")) < 6 and time.monotonic() < deadline:
            time.sleep(0.1)
        servers = {s["attributes"]["gen_ai.tool.name"]: s for s in otlp.named("tools/call") if s["kind"] == 2}
        clients = {s["attributes"]["gen_ai.tool.name"]: s for s in otlp.named("tools/call") if s["kind"] == 3}

    assert set(servers) == {"echo__echo_meta", "time__get_current_time", "shell__run", "nosuch__anything"}
    span = servers["echo__echo_meta"]
    assert span["name"] == "tools/call echo__echo_meta"
    assert (
        span["trace_id"] == TRACE_ID and span["parent_span_id"] == PARENT_ID
    )  # the agent's trace, continued
    assert span["resource"]["service.name"] == "gateway-under-test"
    attrs = span["attributes"]
    assert attrs["mcp.method.name"] == "tools/call"
    assert attrs["gen_ai.operation.name"] == "execute_tool"
    assert attrs["mcpgov.verdict"] == "allow" and attrs["mcpgov.outcome"] == "success"
    assert "jsonrpc.request.id" in attrs
    # the forwarded call: a client span under it, whose context the upstream received
    client = clients["echo_meta"]
    assert client["trace_id"] == TRACE_ID and client["parent_span_id"] == span["span_id"]
    assert upstream_meta["traceparent"] == f"00-{TRACE_ID}-{client['span_id']}-01"
    # a call without a traceparent starts a trace of its own
    fresh = servers["time__get_current_time"]
    assert fresh["trace_id"] != TRACE_ID and fresh["parent_span_id"] == ""
    # a refusal is an error span with the verdict and trigger
    blocked = servers["shell__run"]["attributes"]
    assert blocked["mcpgov.verdict"] == "refuse" and blocked["mcpgov.trigger"] == "unauthorized_server"
    assert servers["shell__run"]["status"] == 2  # STATUS_CODE_ERROR
    assert "shell_run" not in clients  # never forwarded

    # the audit trail names the trace of every call, and each span names its audit record
    events = world.events()
    by_tool = {}
    for e in events:
        by_tool.setdefault(e["tool"], []).append(e)
    for tool, s in (("echo_meta", span), ("get_current_time", fresh), ("run", servers["shell__run"])):
        assert {e["trace_id"] for e in by_tool[tool]} == {s["trace_id"]}, tool
        assert s["attributes"]["mcpgov.call.id"] == by_tool[tool][0]["call_id"]
        assert s["attributes"]["mcpgov.session.id"] == world.events_session()


def test_without_otel_variables_the_agents_trace_context_still_reaches_upstream_and_audit(world):
    echo_world(world)

    async def scenario():
        async with Client(gateway(world), mode="legacy") as c:
            plain = await c.call_tool("echo__echo_meta", {})
            traced = await c.call_tool(
                "echo__echo_meta", {}, meta={"traceparent": TRACEPARENT, "tracestate": "vendor=1"}
            )
            return echoed(plain), echoed(traced)

    plain, traced = anyio.run(scenario)
    assert "traceparent" not in plain
    assert traced["traceparent"] == TRACEPARENT and traced["tracestate"] == "vendor=1"  # passed on unchanged
    events = world.events()
    assert [e.get("trace_id") for e in events] == [None, None, TRACE_ID, TRACE_ID]
    assert "trace_id" not in events[0]  # untraced events keep the shape older portals accept
