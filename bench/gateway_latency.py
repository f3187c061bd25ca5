"""Added latency of the mcpgov gateway: tools/call through the gateway vs straight to mcp-server-time (stdio).

Both paths run in the same process run, with the same client settings, after a warm-up, and print
median and p99 per path, the added latency (gateway minus direct) and the ratio.

    .venv/bin/python bench/gateway_latency.py [--calls 1000] [--mode legacy|auto] [--observe]
    .venv/bin/python bench/gateway_latency.py --http [--mode 2026-07-28]

``--observe`` turns on what production monitoring would: ``--metrics`` and OTLP span export (to a
receiver in this process), to show what they cost per call.
``--http``: the gateway on streamable HTTP, without auth (loopback) and with agent auth (an EdDSA
access token verified offline on every request), against the same direct stdio baseline.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from summary import load_text, summary  # noqa: E402

from mcpgov.audit import read_events  # noqa: E402
from mcpgov.bundle import Bundle  # noqa: E402
from mcpgov.verify import generate_key, jwks, sign_bundle  # noqa: E402

PY = sys.executable
TIME_ARGS = ["-m", "mcp_server_time", "--local-timezone", "UTC"]


def bench_bundle(now: datetime, *, asks_nothing: bool = True) -> Bundle:
    """The benchmark's bundle. ``asks_nothing``: the upstream may neither sample, elicit nor list roots
    (the plain HTTP fast path); ``False`` is the default server policy (form elicitation and roots
    allowed), whose HTTP calls take the streaming fast path (``mcpgov/fast_http_stream.py``)."""
    time_server: dict = {
        "transport": "stdio",
        "command": "python",
        "args": TIME_ARGS,
        "tools": {"get_current_time": {"class": "read"}, "convert_time": {"class": "read"}},
    }
    if asks_nothing:
        time_server["server_requests"] = {"elicitation": False, "roots": False}
    return Bundle.model_validate(
        {
            "team": "bench",
            "environment": "development",
            "version": 1,
            "issued_at": (now - timedelta(minutes=1)).isoformat(),
            "expires_at": (now + timedelta(hours=2)).isoformat(),
            "roles": {"bench_agent": {"allowed_servers": ["time"]}},
            "servers": {"time": time_server},
            "environment_policy": {
                "name": "development",
                "forbidden_patterns": ["*prod*"],
                "bindings": {"time": {"target": "local", "permission": "read_only"}},
            },
            "rate_limits": {
                "global": {
                    "max_calls_per_session": 1_000_000,
                    "max_calls_per_minute": 1_000_000,
                    "pause_at_percent": 99,
                }
            },
            "agents": [
                {"id": "1", "slug": "bench", "roles": ["bench_agent"], "environments": ["development"]}
            ],
        }
    )


ISSUER = "http://issuer.bench.invalid"


def agent_token(key, resource: str) -> str:
    """An access token as the portal issues it (RFC 9068 profile, EdDSA, the team key)."""
    from mcpgov.verify import b64url_encode

    now = int(time.time())
    header = {"alg": "EdDSA", "kid": "bench", "typ": "at+jwt"}
    claims = {
        "iss": ISSUER,
        "aud": resource,
        "sub": "agent:1",
        "client_id": "bench",
        "team": "bench",
        "agent": "bench",
        "roles": ["bench_agent"],
        "environments": ["development"],
        "iat": now,
        "exp": now + 3600,
        "jti": "bench",
    }
    signing_input = ".".join(b64url_encode(json.dumps(x).encode()) for x in (header, claims))
    return f"{signing_input}.{b64url_encode(key.sign(signing_input.encode()))}"


async def http_gateway(args: list[str], port: int, mode: str, token: str | None):
    import socket
    import subprocess

    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    proc = subprocess.Popen([PY, *args, "--http", f"127.0.0.1:{port}"], cwd=ROOT, stdin=subprocess.DEVNULL)
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            await anyio.sleep(0.1)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http = httpx2.AsyncClient(headers=headers, timeout=30)
    return proc, Client(streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http), mode=mode)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def main_http(a, d: Path, key, base_args: list[str]) -> None:
    direct = StdioServerParameters(command=PY, args=TIME_ARGS)
    results: dict[str, list[float]] = {
        "direct (stdio)": [],
        "gateway HTTP, no auth": [],
        "gateway HTTP + auth": [],
    }
    load0 = os.getloadavg()
    p1, p2 = free_port(), free_port()
    # upstream side in legacy mode: the gateway's 2026-07-28 upstream calls are not what this measures
    base_args = [*base_args]
    base_args[base_args.index("--upstream-mode") + 1] = "legacy"
    spool2 = [
        *base_args[: base_args.index("--spool") + 1],
        str(d / "spool2"),
        *base_args[base_args.index("--spool") + 2 :],
    ]
    noauth, c1 = await http_gateway(base_args, p1, a.mode, None)
    auth_args = [*spool2, "--issuer", ISSUER]
    withauth, c2 = await http_gateway(auth_args, p2, a.mode, agent_token(key, f"http://127.0.0.1:{p2}/mcp"))
    try:
        async with Client(direct, mode=a.mode) as s, c1 as g1, c2 as g2:
            per = a.calls // 10
            for _ in range(10):
                results["direct (stdio)"] += await measure(s, per, "get_current_time")
                results["gateway HTTP, no auth"] += await measure(g1, per, "time__get_current_time")
                results["gateway HTTP + auth"] += await measure(g2, per, "time__get_current_time")
    finally:
        for p in (noauth, withauth):
            p.terminate()
            p.wait(timeout=20)
    base = statistics.median(results["direct (stdio)"])
    print(
        f"calls per path: {len(results['direct (stdio)'])} (mode={a.mode}, load average {os.getloadavg()[0]:.1f})"
    )
    for name, xs in results.items():
        md = statistics.median(xs)
        print(
            f"{name:24}: median {md:.3f} ms  p99 {pct(xs, 99):.3f} ms  added over direct {md - base:.3f} ms"
        )
    auth_cost = statistics.median(results["gateway HTTP + auth"]) - statistics.median(
        results["gateway HTTP, no auth"]
    )
    print(f"agent auth (token verified per request): {auth_cost:.3f} ms median")
    load = load_text(load0)
    for name in ("gateway HTTP, no auth", "gateway HTTP + auth"):
        md = statistics.median(results[name])
        summary(
            f"{name} (fast path; upstream asks nothing): added median",
            md - base,
            "ms",
            baseline=f"direct stdio {base:.2f} ms",
            ratio=md / base,
            goal="≤ 1 ms added" if "auth" in name and "no auth" not in name else None,
            met=(md - base <= 1.0) if "no auth" not in name else None,
            load=load,
        )


async def measure(client: Client, n: int, name: str) -> list[float]:
    for _ in range(50):  # warm-up
        await client.call_tool(name, {"timezone": "UTC"})
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = await client.call_tool(name, {"timezone": "UTC"})
        out.append((time.perf_counter() - t0) * 1000)
        if r.is_error:
            raise SystemExit(f"call failed: {r.content[0].text}")
    return out


def child_pid(marker: str, not_pid: int | None = None) -> int:
    """The pid of our newest child process whose command line contains ``marker``."""
    found = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        for pid in (task / "children").read_text().split():
            with contextlib.suppress(OSError):
                if marker in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode():
                    found.append(int(pid))
    found = [p for p in found if p != not_pid]
    if not found:
        raise SystemExit(f"no child process runs {marker!r}")
    return max(found)


def process_cpu_seconds(pid: int) -> float:
    """user+system CPU seconds of one process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=300 if os.environ.get("BENCH_QUICK") == "1" else 1000)
    ap.add_argument("--mode", default="legacy")
    ap.add_argument("--durability", default="intent", choices=["process", "intent", "all"])
    ap.add_argument("--no-fast-path", action="store_true", help="let the SDK server handle tools/call too")
    ap.add_argument("--observe", action="store_true", help="gateway with --metrics and OTLP traces on")
    ap.add_argument("--http", action="store_true", help="streamable HTTP, without and with agent auth")
    ap.add_argument(
        "--before", default="", help="also run the gateway of this checkout (e.g. main), interleaved (stdio)"
    )
    ap.add_argument(
        "--floor",
        action="store_true",
        help="also run bench/stdio_floor.py (a bare relay, and the relay with the INTENT's pwrite + fdatasync)",
    )
    a = ap.parse_args()
    receiver = contextlib.nullcontext()
    observe_args: list[str] = []
    observe_env: dict[str, str] = {}
    if a.observe:
        from tests.otlp_receiver import OtlpReceiver

        receiver = OtlpReceiver()
        observe_args = ["--metrics", "127.0.0.1:0"]
        observe_env = {**receiver.env(), "OTEL_BSP_SCHEDULE_DELAY": "1000"}
    with receiver, tempfile.TemporaryDirectory(prefix="mcpgov-bench-") as tmp:
        d = Path(tmp)
        key = generate_key()
        (d / "keys.json").write_text(json.dumps(jwks({"bench": key.public_key()})))
        (d / "bundle.jws").write_text(
            sign_bundle(bench_bundle(datetime.now(UTC)).canonical_bytes(), key, "bench")
        )
        (d / "mcp.json").write_text(json.dumps({"mcpServers": {"time": {"command": PY, "args": TIME_ARGS}}}))
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
                a.mode,
                "--durability",
                a.durability,
                *observe_args,
            ],
            env={"MCPGOV_FAST_PATH": "0" if a.no_fast_path else "1", **observe_env},
        )
        if a.http:
            await main_http(a, d, key, gateway.args)
            return
        direct = StdioServerParameters(command=PY, args=TIME_ARGS)
        # the same gateway command run from another checkout (its own spool), measured in the same rounds
        before = None
        if a.before:
            args = [*gateway.args]
            args[args.index("--spool") + 1] = str(d / "spool-before")
            args[args.index("--state-dir") + 1] = str(d / "state-before")
            before = gateway.model_copy(update={"cwd": str(Path(a.before).resolve()), "args": args})
        # the pass-through floor: the same upstream behind a bare relay on the same event loop, without
        # and with the INTENT's pwrite + fdatasync (what any relay keeping that promise pays)
        floors: dict[str, StdioServerParameters] = {}
        if a.floor:
            relay = [str(ROOT / "bench" / "stdio_floor.py")]
            floors["floor: bare relay"] = StdioServerParameters(
                command=PY, args=[*relay, "--", PY, *TIME_ARGS]
            )
            floors["floor: relay + INTENT sync"] = StdioServerParameters(
                command=PY, args=[*relay, "--spool", str(d / "floor-spool"), "--", PY, *TIME_ARGS]
            )
        # interleave the paths in rounds so machine noise hits them alike
        rounds = 10
        per = a.calls // rounds
        via: list[float] = []
        via_before: list[float] = []
        straight: list[float] = []
        gateway_cpu = before_cpu = 0.0
        floor_lat: dict[str, list[float]] = {name: [] for name in floors}
        floor_cpu: dict[str, float] = dict.fromkeys(floors, 0.0)
        load0 = os.getloadavg()
        async with contextlib.AsyncExitStack() as stack:
            g = await stack.enter_async_context(Client(gateway, mode=a.mode))
            g_pid = child_pid("mcpgov gateway")
            b = await stack.enter_async_context(Client(before, mode=a.mode)) if before else None
            b_pid = child_pid("mcpgov gateway", not_pid=g_pid) if before else None
            relays: dict[str, tuple[Client, int]] = {}
            for name, params in floors.items():
                client = await stack.enter_async_context(Client(params, mode=a.mode))
                relays[name] = (client, child_pid("stdio_floor.py"))  # the newest: the one just started
            if len({pid for _, pid in relays.values()}) != len(relays):
                raise SystemExit("could not tell the floor relays apart")
            s = await stack.enter_async_context(Client(direct, mode=a.mode))
            for _ in range(rounds):
                straight += await measure(s, per, "get_current_time")
                cpu0 = process_cpu_seconds(g_pid)
                via += await measure(g, per, "time__get_current_time")
                gateway_cpu += process_cpu_seconds(g_pid) - cpu0
                if b is not None:
                    cpu0 = process_cpu_seconds(b_pid)
                    via_before += await measure(b, per, "time__get_current_time")
                    before_cpu += process_cpu_seconds(b_pid) - cpu0
                for name, (client, pid) in relays.items():
                    cpu0 = process_cpu_seconds(pid)
                    floor_lat[name] += await measure(client, per, "get_current_time")
                    floor_cpu[name] += process_cpu_seconds(pid) - cpu0
        spool_lines = sum(len(read_events(f)[0]) for f in (d / "spool").glob("*.jsonl"))
    md, mg = statistics.median(straight), statistics.median(via)
    print(
        f"calls per path: {len(straight)} (mcp-server-time over stdio, mode={a.mode}, durability={a.durability}, "
        f"fast path {'off' if a.no_fast_path else 'on'}, metrics+traces {'on' if a.observe else 'off'}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    print(f"direct : median {md:.3f} ms  p99 {pct(straight, 99):.3f} ms")
    print(f"gateway: median {mg:.3f} ms  p99 {pct(via, 99):.3f} ms")
    print(f"added  : median {mg - md:.3f} ms  p99 {pct(via, 99) - pct(straight, 99):.3f} ms")
    print(f"ratio  : median {mg / md:.2f}x  p99 {pct(via, 99) / pct(straight, 99):.2f}x")
    print(f"gateway process CPU (user+sys) per call: {gateway_cpu / (len(via) + 50 * rounds) * 1000:.3f} ms")
    print(f"audit events spooled by the gateway: {spool_lines}")
    per_call_before = None
    if via_before:
        mb = statistics.median(via_before)
        per_call_before = before_cpu / (len(via_before) + 50 * rounds) * 1000
        print(
            f"BEFORE ({a.before}): median {mb:.3f} ms  p99 {pct(via_before, 99):.3f} ms  "
            f"added median {mb - md:.3f} ms  gateway CPU per call {per_call_before:.3f} ms"
        )
    path = f"stdio {'SDK' if a.no_fast_path else 'fast'} path, no portal, {a.durability}"
    load = load_text(load0)
    for name, xs in floor_lat.items():
        mf = statistics.median(xs)
        per_call_floor = floor_cpu[name] / (len(xs) + 50 * rounds) * 1000
        print(
            f"{name}: median {mf:.3f} ms  p99 {pct(xs, 99):.3f} ms  added median {mf - md:.3f} ms  "
            f"CPU per call {per_call_floor:.3f} ms  (the gateway adds {mg - mf:+.3f} ms over it)"
        )
        summary(
            f"stdio {name}: added median",
            mf - md,
            "ms",
            baseline=f"direct stdio {md:.2f} ms",
            ratio=mf / md,
            load=load,
        )
        summary(f"stdio {name}: CPU per call", per_call_floor, "ms", load=load)
    summary(
        f"gateway {path}: added median",
        mg - md,
        "ms",
        baseline=f"direct stdio {md:.2f} ms",
        ratio=mg / md,
        load=load,
    )
    per_call = gateway_cpu / (len(via) + 50 * rounds) * 1000
    summary(
        f"gateway {path}: gateway CPU per call",
        per_call,
        "ms",
        baseline=f"before {per_call_before:.3f} ms" if per_call_before else None,
        ratio=per_call / per_call_before if per_call_before else None,
        load=load,
    )


if __name__ == "__main__":
    anyio.run(main)
