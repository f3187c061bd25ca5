"""Where the portal-backed stdio gateway's time goes: CPU per call of each gateway thread and of the portal.

Runs the real portal (as ``governed_path.py`` does) and one or more ``mcpgov gateway --portal`` stdio
variants interleaved with the direct upstream, then reads the kernel's CPU counters
(``/proc/<pid>/task/<tid>/stat``) of each gateway's threads and of the portal's processes::

    .venv/bin/python bench/stdio_portal_probe.py --calls 1500 \
        --variant 'now:{}' --variant 'before=/work/main:{}' --variant 'process:{"durability": "process"}'

A variant is ``name[=checkout]:{json}``; the JSON may hold ``durability`` and ``env`` (extra environment
of the gateway process). The figures are for judging a change A/B in one run; ``make bench`` has the goals.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from gateway_latency import pct  # noqa: E402
from governed_path import DEFAULT_DB, PY, TIME_ARGS, Portal, latency, quiet_logs, throughput  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def stat_fields(path: str) -> list[str]:
    with open(path) as fh:
        return fh.read().rsplit(")", 1)[1].split()


def proc_cpu(pid: int, tid: int | None = None, *, waited: bool = False) -> float:
    """User + system CPU seconds of a process (or one of its threads); ``waited``: with its reaped children's."""
    fields = stat_fields(f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat")
    return sum(int(x) for x in fields[11 : 15 if waited else 13]) / TICK


def threads(pid: int) -> dict[int, float]:
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError):
            out[int(tid)] = proc_cpu(pid, int(tid))
    return out


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(stat_fields(f"/proc/{entry}/stat")[1])
            except (FileNotFoundError, ProcessLookupError):
                continue
            if ppid == pid:
                out.append(int(entry))
    return out


def tree_cpu(pid: int) -> float:
    total = 0.0
    for p in [pid, *children(pid)]:
        with contextlib.suppress(FileNotFoundError):
            total += proc_cpu(p, waited=True)
    return total


def gateway_pid(tag: str) -> int:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    cmd = fh.read().split(b"\0")
            except (FileNotFoundError, ProcessLookupError):
                continue
            if b"gateway" in cmd and any(tag.encode() in c for c in cmd):
                return int(entry)
    raise SystemExit(f"gateway {tag} not found")


async def run(a: argparse.Namespace, d: Path, portal: Portal) -> None:
    from contextlib import AsyncExitStack

    clients: dict[str, Client] = {
        "direct": Client(StdioServerParameters(command=PY, args=TIME_ARGS), mode="legacy")
    }
    tags = {}
    for spec in a.variant:
        head, _, body = spec.partition(":")
        name, _, checkout = head.partition("=")
        opts = json.loads(body or "{}")
        tag = f"spool-{name}"
        tags[name] = tag
        clients[name] = Client(
            StdioServerParameters(
                command=PY,
                cwd=checkout or str(ROOT),
                env={**os.environ, **opts.get("env", {})},
                args=[
                    *["-m", "mcpgov", "gateway", "--portal", portal.url, "--token", portal.token],
                    *["--keys", str(portal.keys), "--env", "development", "--role", "time_agent"],
                    *["--config", str(portal.config), "--upstream-mode", "legacy"],
                    *["--spool", str(d / tag), "--state-dir", str(d / f"state-{name}")],
                    *["--durability", opts.get("durability", "intent")],
                ],
            ),
            mode="legacy",
        )
    lat: dict[str, list[float]] = {p: [] for p in clients}
    thr: dict[str, list[float]] = {p: [] for p in clients}
    cpu: dict[str, dict[str, float]] = {}
    async with AsyncExitStack() as stack:
        sessions = {p: await stack.enter_async_context(c) for p, c in clients.items()}
        name = "time__get_current_time"
        for p, s in sessions.items():
            await latency(s, "get_current_time" if p == "direct" else name, 50)
        await anyio.sleep(1)
        pids = {p: gateway_pid(t) for p, t in tags.items()}
        if a.idle:  # the portal's own CPU while no call is made (its long polls, its fallback poller)
            idle0, i0 = tree_cpu(portal.proc.pid), {p: proc_cpu(pid) for p, pid in pids.items()}
            await anyio.sleep(a.idle)
            print(
                f"idle {a.idle:g} s: portal CPU {(tree_cpu(portal.proc.pid) - idle0) * 1000 / a.idle:.1f} ms/s, "
                f"gateways {[round((proc_cpu(pid) - i0[p]) * 1000 / a.idle, 1) for p, pid in pids.items()]} ms/s"
            )
        t0 = {p: threads(pid) for p, pid in pids.items()}
        portal0 = tree_cpu(portal.proc.pid)
        load0 = os.getloadavg()[0]
        per = max(1, a.calls // a.rounds)
        for _ in range(a.rounds):
            for p, s in sessions.items():
                lat[p] += await latency(s, "get_current_time" if p == "direct" else name, per)
        await anyio.sleep(1)  # the last batch ships
        t1 = {p: threads(pid) for p, pid in pids.items()}
        portal1 = tree_cpu(portal.proc.pid)
        for p, pid in pids.items():
            main = t1[p].get(pid, 0) - t0[p].get(pid, 0)
            other = sum(v - t0[p].get(tid, 0) for tid, v in t1[p].items() if tid != pid)
            busiest = sorted(
                ((v - t0[p].get(tid, 0), tid) for tid, v in t1[p].items() if tid != pid), reverse=True
            )[:3]
            cpu[p] = {"main": main, "other": other, "busiest": busiest}
        for _ in range(a.tput_rounds):
            for p, s in sessions.items():
                thr[p].append(
                    await throughput(s, "get_current_time" if p == "direct" else name, a.tput_calls, 16)
                )
    n = per * a.rounds
    print(
        f"{n} sequential calls per path, {a.rounds} interleaved rounds; load {load0:.2f} → {os.getloadavg()[0]:.2f}"
    )
    print(
        f"portal CPU (all variants' events): {(portal1 - portal0) * 1000 / (n * len(pids)):.3f} ms per call"
    )
    base = statistics.median(lat["direct"])
    base_thr = statistics.median(thr["direct"]) if thr["direct"] else 0
    for p in clients:
        med, p99 = statistics.median(lat[p]), pct(lat[p], 99)
        line = f"{p:>12}: median {med:.3f} ms (+{med - base:.3f})  p99 {p99:.3f} ms"
        if thr[p]:
            t = statistics.median(thr[p])
            line += f"  {t:.0f} calls/s ({t / base_thr:.2f}x)"
        if p in cpu:
            c = cpu[p]
            line += (
                f"  CPU/call main {c['main'] * 1000 / n:.3f} ms, other threads {c['other'] * 1000 / n:.3f} ms"
                f" (busiest {[round(v * 1000 / n, 3) for v, _ in c['busiest']]})"
            )
        print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tput-calls", type=int, default=400)
    ap.add_argument("--tput-rounds", type=int, default=1)
    ap.add_argument("--variant", action="append", default=[], help="name[=checkout]:{json}, repeatable")
    ap.add_argument("--idle", type=float, default=0, help="first measure this many seconds without calls")
    ap.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB))
    a = ap.parse_args()
    if not a.variant:
        ap.error("give at least one --variant name[=checkout]:{json} (e.g. --variant 'now:{}')")
    quiet_logs()
    with tempfile.TemporaryDirectory(prefix="mcpgov-probe-") as tmp:
        d = Path(tmp)
        (d / "portal").mkdir()
        portal = Portal(a.database_url, d / "portal")
        try:
            anyio.run(run, a, d, portal)
        finally:
            portal.stop()


if __name__ == "__main__":
    main()
