"""Server-side CPU per HTTP ``tools/call``: the gateway (HTTP + auth, fast path) vs the HTTP pass-through floor.

Wall times on a shared 2-core machine are mostly queueing; the CPU a server process spends per call
is not. This runs the gateway of this tree (and of ``--before <checkout>``) and ``bench/http_floor.py``
on the same stdio upstream, calls each in interleaved rounds with the official SDK client, and reads
each server process's CPU time from ``/proc`` (the scheduler's nanoseconds per thread; the upstream is
a separate process, not counted). ``--profile`` also runs this tree's gateway under cProfile on its event-loop thread's CPU
clock and prints where that CPU goes. With ``--before`` the checkout's own floor runs too (its uvicorn
settings), and ``--variants`` adds this tree's gateway with ``--durability process`` and without auth.

    .venv/bin/python bench/http_cpu.py [--calls 2000] [--before /work/main] [--variants] [--profile]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import anyio

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from gateway_latency import ISSUER, agent_token, bench_bundle  # noqa: E402
from gateway_latency import process_cpu_seconds as _ticks_cpu_seconds  # noqa: E402
from governed_path import CALL, PY, TIME_ARGS, free_port, http_client, wait_port  # noqa: E402
from summary import load_text, summary  # noqa: E402

from mcpgov.verify import generate_key, jwks, sign_bundle  # noqa: E402


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds of one process: the scheduler's own nanosecond count of each thread's time on a CPU
    (``/proc/<pid>/task/*/schedstat``), user and system; ``/proc/<pid>/stat``'s clock ticks (10 ms
    each, sampled) when the kernel keeps no schedstat."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):  # a thread that just ended
                total += int((task / "schedstat").read_text().split()[0])
    except OSError:
        return _ticks_cpu_seconds(pid)
    return total / 1e9 if total else _ticks_cpu_seconds(pid)


# cProfile on the event loop's thread CPU clock around the gateway's own entry point
PROFILED = """
import cProfile, runpy, sys, time
out = sys.argv.pop(1)
sys.argv[0] = "mcpgov"
prof = cProfile.Profile(time.thread_time)
prof.enable()
try:
    runpy.run_module("mcpgov", run_name="__main__")
except SystemExit:
    pass
finally:
    prof.disable()
    prof.dump_stats(out)
"""


async def run(a: argparse.Namespace, d: Path) -> None:
    key = generate_key()
    (d / "keys.json").write_text(json.dumps(jwks({"bench": key.public_key()})))
    (d / "bundle.jws").write_text(
        sign_bundle(bench_bundle(datetime.now(UTC)).canonical_bytes(), key, "bench")
    )
    (d / "stdio.json").write_text(json.dumps({"mcpServers": {"time": {"command": PY, "args": TIME_ARGS}}}))
    gateway = [
        *("gateway", "--bundle-file", str(d / "bundle.jws"), "--keys", str(d / "keys.json")),
        *("--env", "development", "--role", "bench_agent", "--upstream-mode", "legacy"),
        *("--config", str(d / "stdio.json"), "--issuer", ISSUER),
    ]
    procs: dict[str, subprocess.Popen] = {}
    urls: dict[str, str] = {}

    def spawn(name: str, args: list[str], cwd: Path = ROOT) -> None:
        port = free_port()
        if args[0] == "gateway":
            tag = name.replace(" ", "-")
            args = [*args, "--spool", str(d / f"spool-{tag}"), "--state-dir", str(d / f"state-{tag}")]
            args = [*args, "--http", f"127.0.0.1:{port}"]
            args = (
                ["-c", PROFILED, str(d / "gateway.prof"), *args]
                if "profiled" in name
                else ["-m", "mcpgov", *args]
            )
        else:
            args = [*args, "--port", str(port), "--", PY, *TIME_ARGS]
        p = subprocess.Popen([PY, *args], cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        procs[name] = p
        wait_port(port, p, name)
        urls[name] = f"http://127.0.0.1:{port}/mcp"

    spawn("HTTP pass-through floor", [str(HERE / "http_floor.py")])
    if a.parsers:
        for parser in ("h11", "httptools"):
            spawn(f"HTTP floor, {parser}", [str(HERE / "http_floor.py"), "--http", parser])
    spawn("mcpgov HTTP + auth", gateway)
    if a.before:
        spawn("BEFORE mcpgov HTTP + auth", gateway, Path(a.before))
        if (Path(a.before) / "bench" / "http_floor.py").exists():  # its floor under its uvicorn settings
            spawn("BEFORE HTTP pass-through floor", [str(Path(a.before) / "bench" / "http_floor.py")])
    for spec in a.tree:  # NAME=PATH: another checkout's gateway and floor, side by side
        label, _, path = spec.partition("=")
        spawn(f"{label} mcpgov HTTP + auth", gateway, Path(path))
        spawn(f"{label} HTTP floor", [str(Path(path) / "bench" / "http_floor.py")])
    if a.variants:  # what the audit's sync and the agent's authentication cost, by leaving each out
        spawn("mcpgov HTTP + auth, --durability process", [*gateway, "--durability", "process"])
        no_auth = [x for x in gateway if x not in ("--issuer", ISSUER)]
        spawn("mcpgov HTTP, no auth, process", [*no_auth, "--durability", "process"])
    if a.profile:
        spawn("mcpgov HTTP + auth, profiled", gateway)
    cpu = {name: 0.0 for name in procs}
    calls = {name: 0 for name in procs}
    wall: dict[str, list[float]] = {name: [] for name in procs}
    load0 = os.getloadavg()
    from contextlib import AsyncExitStack

    try:
        async with AsyncExitStack() as stack:
            sessions = {}
            for name, url in urls.items():
                token = None if "floor" in name or "no auth" in name else agent_token(key, url)
                sessions[name] = await stack.enter_async_context(http_client(url, "legacy", token))
            for name, s in sessions.items():
                tool = "get_current_time" if "floor" in name else "time__get_current_time"
                for _ in range(50):
                    await s.call_tool(tool, CALL)
            per = max(1, a.calls // a.rounds)
            names = list(sessions)
            for r in range(a.rounds):
                for name in names[r % len(names) :] + names[: r % len(names)]:  # no path always first
                    s = sessions[name]
                    tool = "get_current_time" if "floor" in name else "time__get_current_time"
                    c0 = process_cpu_seconds(procs[name].pid)
                    for _ in range(per):
                        t0 = time.perf_counter()
                        r = await s.call_tool(tool, CALL)
                        wall[name].append((time.perf_counter() - t0) * 1000)
                        if r.is_error:
                            raise SystemExit(f"{name}: {r.content[0].text}")
                    cpu[name] += process_cpu_seconds(procs[name].pid) - c0
                    calls[name] += per
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            p.wait(timeout=30)
    load = load_text(load0, os.getloadavg())
    us = {name: cpu[name] / calls[name] * 1e6 for name in procs}
    floor = us["HTTP pass-through floor"]
    print(f"server CPU per call ({calls['HTTP pass-through floor']} calls each, load {load}):")
    for name, v in us.items():
        md = statistics.median(wall[name])
        print(f"  {name:36} {v:8.1f} µs   ({v - floor:+.1f} µs over the floor); wall median {md:.3f} ms")
    if "BEFORE HTTP pass-through floor" in us:
        summary(
            "HTTP pass-through floor: server CPU per call",
            floor,
            "µs",
            baseline=f"BEFORE's floor {us['BEFORE HTTP pass-through floor']:.0f} µs",
            ratio=floor / us["BEFORE HTTP pass-through floor"],
            load=load,
        )
    for name in ("mcpgov HTTP + auth", "BEFORE mcpgov HTTP + auth"):
        if name in us:
            summary(
                f"{name}: gateway CPU per call over the HTTP pass-through floor",
                us[name] - floor,
                "µs",
                baseline=f"floor {floor:.0f} µs",
                ratio=us[name] / floor,
                load=load,
            )
    if a.profile:
        stats = pstats.Stats(str(d / "gateway.prof"))
        if a.save:
            stats.dump_stats(a.save)
        stats.sort_stats("tottime").print_stats(a.top)
        stats.sort_stats("cumulative").print_stats(a.top)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--before", default="")
    ap.add_argument(
        "--tree", action="append", default=[], help="NAME=PATH: also that checkout's gateway and floor"
    )
    ap.add_argument("--profile", action="store_true")
    ap.add_argument(
        "--parsers", action="store_true", help="also the floor on uvicorn's h11 and httptools parsers"
    )
    ap.add_argument(
        "--variants",
        action="store_true",
        help="also this tree's gateway with --durability process, and without auth (loopback) as well",
    )
    ap.add_argument("--top", type=int, default=45)
    ap.add_argument("--save", default="", help="keep the gateway's cProfile stats in this file")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mcpgov-httpcpu-") as tmp:
        anyio.run(run, a, Path(tmp))


if __name__ == "__main__":
    main()
