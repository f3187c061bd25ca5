"""tools/list through the gateway against the upstream itself, with 50 upstream tools (issue #12, goal 3).

The upstream (``bench/many_tools_server.py``) announces ``tools.listChanged``, so the gateway lists it at
connect, on its ``list_changed`` and on a new bundle, and answers tools/list from that cache; the added
time is the gateway's filtering and the relay. Both paths interleaved in rounds, the official SDK client.

    .venv/bin/python bench/tools_list.py [--lists 400]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from gateway_latency import pct  # noqa: E402
from summary import load_text, summary  # noqa: E402

from mcpgov.bundle import Bundle  # noqa: E402
from mcpgov.verify import generate_key, jwks, sign_bundle  # noqa: E402

PY = sys.executable
SERVER = [str(HERE / "many_tools_server.py")]
GOAL_MS = 0.5


def bundle(now: datetime) -> Bundle:
    return Bundle.model_validate(
        {
            "team": "bench",
            "environment": "development",
            "version": 1,
            "issued_at": (now - timedelta(minutes=1)).isoformat(),
            "expires_at": (now + timedelta(hours=2)).isoformat(),
            "roles": {"bench_agent": {"allowed_servers": ["many"]}},
            "servers": {
                "many": {
                    "transport": "stdio",
                    "command": "python",
                    "args": SERVER,
                    "tools": {f"tool_{i:02d}": {"class": "read"} for i in range(50)},
                }
            },
            "environment_policy": {
                "name": "development",
                "bindings": {"many": {"target": "local", "permission": "read_only"}},
            },
        }
    )


async def timed_lists(client: Client, n: int, expect: int) -> list[float]:
    import time

    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        result = await client.list_tools()
        out.append((time.perf_counter() - t0) * 1000)
        if len(result.tools) != expect:
            raise SystemExit(f"expected {expect} tools, got {len(result.tools)}")
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lists", type=int, default=100 if os.environ.get("BENCH_QUICK") == "1" else 400)
    ap.add_argument("--rounds", type=int, default=10)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mcpgov-bench-") as tmp:
        d = Path(tmp)
        key = generate_key()
        (d / "keys.json").write_text(json.dumps(jwks({"bench": key.public_key()})))
        (d / "bundle.jws").write_text(sign_bundle(bundle(datetime.now(UTC)).canonical_bytes(), key, "bench"))
        (d / "mcp.json").write_text(json.dumps({"mcpServers": {"many": {"command": PY, "args": SERVER}}}))
        gateway = StdioServerParameters(
            command=PY,
            cwd=str(ROOT),
            args=[
                "-m",
                "mcpgov",
                "gateway",
                "--bundle-file",
                str(d / "bundle.jws"),
                "--keys",
                str(d / "keys.json"),
                "--env",
                "development",
                "--role",
                "bench_agent",
                "--config",
                str(d / "mcp.json"),
                "--spool",
                str(d / "spool"),
                "--state-dir",
                str(d / "state"),
                "--upstream-mode",
                "legacy",
            ],
            env={"MCPGOV_LOG_LEVEL": "ERROR"},
        )
        direct = StdioServerParameters(command=PY, args=SERVER)
        via: list[float] = []
        straight: list[float] = []
        load0 = os.getloadavg()
        async with Client(gateway, mode="legacy") as g, Client(direct, mode="legacy") as s:
            await timed_lists(s, 20, 50)
            await timed_lists(g, 20, 50)
            per = max(1, a.lists // a.rounds)
            for _ in range(a.rounds):
                straight += await timed_lists(s, per, 50)
                via += await timed_lists(g, per, 50)
        load1 = os.getloadavg()
    md, mg = statistics.median(straight), statistics.median(via)
    load = load_text(load0, load1)
    print(f"tools/list, 50 upstream tools: {len(via)} lists per path, interleaved; load average {load}")
    print(f"direct : median {md:.3f} ms  p99 {pct(straight, 99):.3f} ms")
    print(f"gateway: median {mg:.3f} ms  p99 {pct(via, 99):.3f} ms")
    print(f"added  : median {mg - md:+.3f} ms  ({mg / md:.2f}x)")
    summary(
        "tools/list, 50 upstream tools: added median",
        mg - md,
        "ms",
        baseline=f"direct stdio {md:.2f} ms",
        ratio=mg / md,
        goal=f"≤ {GOAL_MS:g} ms added",
        met=mg - md <= GOAL_MS,
        load=load,
    )


if __name__ == "__main__":
    anyio.run(main)
