"""In-process time of one decision (``mcpgov.decision.decide``), p50 / p99 / max, for typical calls.

The policy is compiled once per bundle (as the gateway does); the session carries limits, a per-minute
window and a write chain, so every rule of the call path is evaluated.

    .venv/bin/python bench/decision_time.py [--calls 200000]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from summary import load_text, summary

from mcpgov.bundle import Bundle
from mcpgov.decision import ToolCall, Verdict, compile_policy, decide
from mcpgov.session import SessionState, call_resource


def bench_bundle(now: datetime) -> Bundle:
    servers = {
        f"srv{i}": {
            "transport": "stdio",
            "command": "x",
            "tools": {f"read{j}": {"class": "read"} for j in range(10)} | {"write0": {"class": "write"}},
        }
        for i in range(20)
    }
    return Bundle.model_validate(
        {
            "team": "bench",
            "environment": "development",
            "version": 1,
            "issued_at": (now - timedelta(minutes=1)).isoformat(),
            "expires_at": (now + timedelta(hours=2)).isoformat(),
            "roles": {"agent": {"allowed_servers": list(servers), "forbidden_servers": ["shell"]}},
            "servers": servers,
            "environment_policy": {
                "name": "development",
                "forbidden_patterns": ["*prod*", "*live*"],
                "bindings": {s: {"target": f"/srv/{s}", "permission": "read_write"} for s in servers},
            },
            "rate_limits": {
                "global": {
                    "max_calls_per_session": 10_000_000,
                    "max_calls_per_minute": 10_000_000,
                    "pause_at_percent": 99,
                },
                "per_server": {
                    s: {
                        "max_calls_per_session": 10_000_000,
                        "max_read_calls_per_session": 10_000_000,
                        "max_write_calls_per_session": 10_000_000,
                        "max_calls_per_minute": 10_000_000,
                    }
                    for s in servers
                },
            },
            "flags": [
                {"name": f"mcp.srv{i}.write", "server": f"srv{i}", "capability": "write", "enabled": True}
                for i in range(20)
            ],
            "triggers": {"cascade_write_threshold": 1_000_000},
        }
    )


def run(n: int) -> None:
    now = datetime.now(UTC)
    bundle = bench_bundle(now)
    policy = compile_policy(bundle, "agent")
    state = SessionState(session_id="bench", role="agent", read_only=False)
    calls = [ToolCall(f"srv{i % 20}", f"read{i % 10}", {"path": f"/srv/x/{i}"}) for i in range(1000)]
    calls += [ToolCall(f"srv{i % 20}", "write0", {"path": f"/srv/x/{i % 3}"}) for i in range(100)]
    t = time.time()
    # a session with history: counters, a full per-minute window, a write chain
    for i in range(5000):
        c = calls[i % len(calls)]
        state.record_forwarded(
            c.server, c.tool == "write0", call_resource(c.server, c.arguments), t - 30 + i / 1000
        )
    samples = []
    load0 = os.getloadavg()
    clock = time.perf_counter_ns
    gc.disable()
    try:
        for i in range(n):
            c = calls[i % len(calls)]
            t0 = clock()
            d = decide(policy, state, c, t)
            samples.append(clock() - t0)
            if d.verdict != Verdict.ALLOW:
                raise SystemExit(f"unexpected refusal: {d.message}")
    finally:
        gc.enable()
    samples.sort()
    us = [s / 1000 for s in samples]
    print(f"decide(): {n} calls, policy compiled once (20 servers x 11 tools, limits, flags, patterns)")
    print(
        f"p50 {statistics.median(us):.2f} µs   p99 {us[int(0.99 * n)]:.2f} µs   p99.9 {us[int(0.999 * n)]:.2f} µs   "
        f"max {us[-1]:.1f} µs"
    )
    t0 = time.perf_counter()
    for _ in range(100):
        bundle2 = bench_bundle(now)
        compile_policy(bundle2, "agent")
    print(f"bundle parse + compile for one role: {(time.perf_counter() - t0) * 10:.2f} ms")
    p99 = us[int(0.99 * n)]
    summary("decide() p99", p99, "µs", goal="< 20 µs", met=p99 < 20, load=load_text(load0))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=50_000 if os.environ.get("BENCH_QUICK") == "1" else 200_000)
    run(ap.parse_args().calls)
