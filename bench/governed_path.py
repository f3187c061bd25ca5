"""The governed MCP path against its baselines and its peers, every path interleaved in one run (#12).

Paths (the official SDK client, ``mcp-server-time`` as the upstream, legacy handshake):

- ``direct stdio``: the client spawns the upstream itself (baseline of every stdio→stdio and HTTP→stdio
  figure);
- ``mcpgov stdio + portal``: ``mcpgov gateway`` with ``--portal`` (the real Django portal under uvicorn
  on its own PostgreSQL database), default durability ``intent``, the audit shipper delivering every
  event while the calls run;
- ``mcpgov HTTP→stdio + auth``: the gateway on streamable HTTP with agent auth (an EdDSA access token
  verified on every request), upstream on stdio, whose server policy lets it neither sample nor elicit
  (the HTTP fast path takes those calls);
- ``mcpgov HTTP→stdio + auth, durability process``: the same with ``--durability process`` (no
  ``fdatasync`` of the INTENT before forwarding: what the disk costs the HTTP path);
- ``mcpgov HTTP→stdio + auth, default policy``: the same with the default server policy (form
  elicitation allowed: a mid-call request would ride the call's SSE stream, so calls take the streaming
  fast path of ``mcpgov/fast_http_stream.py``, which answers JSON when the server asks nothing);
- ``mcpgov HTTP→stdio + auth, default policy, SDK path``: the same gateway with ``MCPGOV_FAST_PATH=0``
  (what every such call cost before the streaming fast path: the baseline of its figure);
- ``direct stdio, asks once per call`` and ``mcpgov HTTP→stdio + auth, asks once per call`` (and its
  ``SDK path``): ``bench/eliciting_server.py``, whose tool puts one form elicitation to the agent per
  call (the client's callback accepts): the streamed request, the agent's POSTed answer and the result;
- ``HTTP pass-through floor`` (``bench/http_floor.py``): the same client over streamable HTTP to a raw
  ASGI app under the gateway's uvicorn settings that only relays each JSON-RPC message to the same
  stdio upstream and answers ``application/json``: the HTTP paths' figures are also given over it,
  which is what mcpgov itself adds (the floor over direct stdio is the client's HTTP, uvicorn and
  the loopback);
- ``mcp-proxy HTTP→stdio``: the PyPI peer, no governance (installed by :mod:`peers` into its own
  virtualenv under ``var/``), the same upstream;
- ``direct HTTP``: the client straight to an upstream served on streamable HTTP (an ``mcp-proxy``
  HTTP→stdio in front of ``mcp-server-time``: the baseline of the stdio→HTTP figures);
- ``mcp-proxy stdio→HTTP`` and ``mcpgov stdio→HTTP``: each on stdio in front of that HTTP upstream.

Latency: calls one at a time, the paths taking turns in rounds so machine noise hits all alike (each
round starting one path later, so no path always runs right after the same one).
Throughput: 16 calls in flight on one session, again in turns. Prints a table of every figure with
its baseline, ratio, the goal of issue #12 and the load average; asserts nothing about speed.

    .venv/bin/python bench/governed_path.py [--calls 1000] [--rounds 10] [--inflight 16] [--no-portal]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from gateway_latency import ISSUER, agent_token, bench_bundle, pct  # noqa: E402
from peers import mcp_proxy  # noqa: E402
from summary import load_text, summary  # noqa: E402

from mcpgov.audit import read_events  # noqa: E402
from mcpgov.verify import generate_key, jwks, sign_bundle  # noqa: E402

PY = sys.executable
TIME_ARGS = ["-m", "mcp_server_time", "--local-timezone", "UTC"]
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/mcpgov_bench_governed"
CALL = {"timezone": "UTC"}
# the client's streamable HTTP + uvicorn + loopback + a JSON relay to the same stdio upstream, nothing else
FLOOR = "HTTP pass-through floor"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on :{port} within {within:g} s")


def http_client(url: str, mode: str, token: str | None = None, **callbacks: Any) -> Client:
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http = httpx2.AsyncClient(headers=headers, timeout=30)
    return Client(streamable_http_client(url, http_client=http), mode=mode, **callbacks)


ELICITING = HERE / "eliciting_server.py"


async def accept(ctx: Any, params: Any) -> Any:
    """The agent's user, answering the eliciting server's question at once."""
    import mcp_types as types

    return types.ElicitResult(action="accept", content={"ok": True})


def asking_bundle(now: datetime):
    """The default-policy bundle with the eliciting server (form elicitation allowed by default)."""
    from mcpgov.bundle import Bundle

    doc = bench_bundle(now, asks_nothing=False).model_dump(mode="json", exclude_none=True)
    doc["servers"]["ask"] = {
        "transport": "stdio",
        "command": "python",
        "args": [str(ELICITING)],
        "tools": {"confirm": {"class": "read"}},
    }
    doc["roles"]["bench_agent"]["allowed_servers"].append("ask")
    doc["environment_policy"]["bindings"]["ask"] = {"target": "local", "permission": "read_only"}
    return Bundle.model_validate(doc)


class Portal:
    """The real portal (uvicorn, production settings off) on a fresh database, with a `time` world."""

    def __init__(self, database_url: str, workdir: Path) -> None:
        from killswitch_propagation import fresh_database, start_portal

        self.database_url = database_url
        fresh_database(database_url)
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DJANGO_DEBUG": "1",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "CELERY_BROKER_URL": "",
            "REDIS_URL": "",
            "DJANGO_LOG_LEVEL": "WARNING",
        }
        os.environ.update({k: env[k] for k in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE", "DJANGO_DEBUG")})
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connections

        call_command("migrate", verbosity=0)
        from governance.services.bundles import team_bundles_rebuild
        from governance.services.limits import global_limits_set
        from tests.e2e.portal_world import build_world, write_gateway_files

        world = build_world("bench")
        global_limits_set(
            team=world.team,
            actor=world.admin,
            max_calls_per_session=10_000_000,
            max_calls_per_minute=10_000_000,
            pause_at_percent=100,
        )
        team_bundles_rebuild(team_id=world.team.pk, reason="bench limits")
        self.team_pk = world.team.pk
        self.token = world.issue("development", 1, prefix="bench")[0]
        self.keys, self.config = write_gateway_files(workdir, "bench")
        connections.close_all()
        self.proc, self.url = start_portal(env, 1)

    def events_stored(self) -> int:
        from django.db import connections

        from audit.models import AuditEvent

        n = AuditEvent.objects.filter(session__team_id=self.team_pk).count()
        connections.close_all()
        return n

    def stop(self) -> None:
        from killswitch_propagation import fresh_database

        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        from django.db import connections

        connections.close_all()
        fresh_database(self.database_url, create=False)


async def latency(client: Client, name: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = await client.call_tool(name, CALL)
        out.append((time.perf_counter() - t0) * 1000)
        if r.is_error:
            raise SystemExit(f"{name} failed: {r.content[0].text}")
    return out


async def throughput(client: Client, name: str, total: int, inflight: int) -> float:
    """Calls per second with ``inflight`` calls outstanding on one session."""
    left = [total]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            r = await client.call_tool(name, CALL)
            if r.is_error:
                raise SystemExit(f"{name} failed: {r.content[0].text}")

    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(inflight):
            tg.start_soon(worker)
    return total / (time.perf_counter() - t0)


async def run(a: argparse.Namespace, d: Path, portal: Portal | None) -> None:
    from contextlib import AsyncExitStack

    key = generate_key()
    (d / "keys.json").write_text(json.dumps(jwks({"bench": key.public_key()})))
    (d / "bundle.jws").write_text(
        sign_bundle(bench_bundle(datetime.now(UTC)).canonical_bytes(), key, "bench")
    )
    (d / "bundle-default.jws").write_text(
        sign_bundle(bench_bundle(datetime.now(UTC), asks_nothing=False).canonical_bytes(), key, "bench")
    )
    (d / "stdio.json").write_text(json.dumps({"mcpServers": {"time": {"command": PY, "args": TIME_ARGS}}}))
    (d / "bundle-ask.jws").write_text(
        sign_bundle(asking_bundle(datetime.now(UTC)).canonical_bytes(), key, "bench")
    )
    (d / "ask.json").write_text(
        json.dumps({"mcpServers": {"ask": {"command": PY, "args": [str(ELICITING)]}}})
    )
    offline = [
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
        "--upstream-mode",
        "legacy",
    ]
    procs: list[subprocess.Popen] = []

    def spawn(args: list[str], port: int, what: str, cwd: Path = ROOT, env: dict | None = None) -> None:
        p = subprocess.Popen(
            args,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            env={**os.environ, **env} if env else None,
        )
        procs.append(p)
        wait_port(port, p, what)

    proxy = mcp_proxy()
    # mcp-proxy HTTP→stdio (a peer), and a second one as the HTTP upstream of the stdio→HTTP paths
    up_port, peer_port, gw_port = free_port(), free_port(), free_port()
    for port in (up_port, peer_port):
        spawn([proxy, "--port", str(port), "--log-level", "WARNING", "--", PY, *TIME_ARGS], port, "mcp-proxy")
    upstream_url = f"http://127.0.0.1:{up_port}/mcp"
    floor_port = free_port()
    spawn(
        [PY, str(HERE / "http_floor.py"), "--port", str(floor_port), "--", PY, *TIME_ARGS],
        floor_port,
        "HTTP floor",
    )
    (d / "http.json").write_text(json.dumps({"mcpServers": {"time": {"url": upstream_url}}}))
    spawn(
        [
            PY,
            *offline,
            "--config",
            str(d / "stdio.json"),
            "--spool",
            str(d / "spool-http"),
            "--state-dir",
            str(d / "state-http"),
            "--issuer",
            ISSUER,
            "--http",
            f"127.0.0.1:{gw_port}",
        ],
        gw_port,
        "mcpgov gateway --http",
    )
    gw_url = f"http://127.0.0.1:{gw_port}/mcp"
    default_port = free_port()
    default_offline = [*offline]
    default_offline[default_offline.index("--bundle-file") + 1] = str(d / "bundle-default.jws")
    spawn(
        [
            PY,
            *default_offline,
            "--config",
            str(d / "stdio.json"),
            "--spool",
            str(d / "spool-http-default"),
            "--state-dir",
            str(d / "state-http-default"),
            "--issuer",
            ISSUER,
            "--http",
            f"127.0.0.1:{default_port}",
        ],
        default_port,
        "mcpgov gateway --http (default server policy)",
    )
    default_url = f"http://127.0.0.1:{default_port}/mcp"

    def http_gateway(
        bundle: str, config: str, tag: str, what: str, env: dict | None = None, extra: tuple[str, ...] = ()
    ) -> str:
        """``mcpgov gateway --http`` with agent auth on a bundle and a config of ``d``; returns its URL."""
        args = [*offline, *extra]
        args[args.index("--bundle-file") + 1] = str(d / bundle)
        port = free_port()
        spool = ["--spool", str(d / f"spool-{tag}"), "--state-dir", str(d / f"state-{tag}")]
        http = ["--issuer", ISSUER, "--http", f"127.0.0.1:{port}"]
        spawn([PY, *args, "--config", str(d / config), *spool, *http], port, what, env=env)
        return f"http://127.0.0.1:{port}/mcp"

    sdk_path = {"MCPGOV_FAST_PATH": "0"}
    sdk_url = http_gateway(
        "bundle-default.jws", "stdio.json", "http-sdk", "default policy, SDK path", sdk_path
    )
    # the same gateway with durability `process`: the HTTP path without the INTENT's fdatasync
    process_url = http_gateway(
        "bundle.jws", "stdio.json", "http-process", "durability process", extra=("--durability", "process")
    )
    ask_urls = {
        "fast": http_gateway("bundle-ask.jws", "ask.json", "ask-fast", "eliciting server"),
        "sdk": http_gateway("bundle-ask.jws", "ask.json", "ask-sdk", "eliciting server, SDK path", sdk_path),
    }
    if a.before:
        before_port = free_port()
        spawn(
            [
                PY,
                *offline,
                "--config",
                str(d / "stdio.json"),
                "--spool",
                str(d / "spool-http-before"),
                "--state-dir",
                str(d / "state-http-before"),
                "--issuer",
                ISSUER,
                "--http",
                f"127.0.0.1:{before_port}",
            ],
            before_port,
            "mcpgov gateway --http (before)",
            Path(a.before),
        )
        before_url = f"http://127.0.0.1:{before_port}/mcp"

    paths: dict[str, tuple[Client, str]] = {
        "direct stdio": (
            Client(StdioServerParameters(command=PY, args=TIME_ARGS), mode=a.mode),
            "get_current_time",
        ),
        FLOOR: (http_client(f"http://127.0.0.1:{floor_port}/mcp", a.mode), "get_current_time"),
        "mcp-proxy HTTP→stdio": (
            http_client(f"http://127.0.0.1:{peer_port}/mcp", a.mode),
            "get_current_time",
        ),
        "mcpgov HTTP→stdio + auth": (
            http_client(gw_url, a.mode, agent_token(key, gw_url)),
            "time__get_current_time",
        ),
        "mcpgov HTTP→stdio + auth, durability process": (
            http_client(process_url, a.mode, agent_token(key, process_url)),
            "time__get_current_time",
        ),
        "mcpgov HTTP→stdio + auth, default policy": (
            http_client(default_url, a.mode, agent_token(key, default_url)),
            "time__get_current_time",
        ),
        "mcpgov HTTP→stdio + auth, default policy, SDK path": (
            http_client(sdk_url, a.mode, agent_token(key, sdk_url)),
            "time__get_current_time",
        ),
        "direct stdio, asks once per call": (
            Client(
                StdioServerParameters(command=PY, args=[str(ELICITING)]),
                mode=a.mode,
                elicitation_callback=accept,
            ),
            "confirm",
        ),
        "mcpgov HTTP→stdio + auth, asks once per call": (
            http_client(
                ask_urls["fast"], a.mode, agent_token(key, ask_urls["fast"]), elicitation_callback=accept
            ),
            "ask__confirm",
        ),
        "mcpgov HTTP→stdio + auth, asks once per call, SDK path": (
            http_client(
                ask_urls["sdk"], a.mode, agent_token(key, ask_urls["sdk"]), elicitation_callback=accept
            ),
            "ask__confirm",
        ),
        "direct HTTP": (http_client(upstream_url, a.mode), "get_current_time"),
        "mcp-proxy stdio→HTTP": (
            Client(
                StdioServerParameters(
                    command=proxy,
                    args=["--transport", "streamablehttp", "--log-level", "WARNING", upstream_url],
                ),
                mode=a.mode,
            ),
            "get_current_time",
        ),
        "mcpgov stdio→HTTP": (
            Client(
                StdioServerParameters(
                    command=PY,
                    cwd=str(ROOT),
                    args=[
                        *offline,
                        "--config",
                        str(d / "http.json"),
                        "--spool",
                        str(d / "spool-s2h"),
                        "--state-dir",
                        str(d / "state-s2h"),
                    ],
                ),
                mode=a.mode,
            ),
            "time__get_current_time",
        ),
    }

    if a.before:
        paths["BEFORE mcpgov HTTP→stdio + auth"] = (
            http_client(before_url, a.mode, agent_token(key, before_url)),
            "time__get_current_time",
        )

    def governed_stdio(durability: str, root: Path = ROOT) -> tuple[Client, str]:
        assert portal is not None
        tag = durability if root == ROOT else f"{durability}-before"
        return Client(
            StdioServerParameters(
                command=PY,
                cwd=str(root),
                args=[
                    "-m",
                    "mcpgov",
                    "gateway",
                    "--portal",
                    portal.url,
                    "--token",
                    portal.token,
                    "--keys",
                    str(portal.keys),
                    "--env",
                    "development",
                    "--role",
                    "time_agent",
                    "--config",
                    str(portal.config),
                    "--upstream-mode",
                    "legacy",
                    "--spool",
                    str(d / f"spool-portal-{tag}"),
                    "--state-dir",
                    str(d / f"state-portal-{tag}"),
                    "--durability",
                    durability,
                ],
            ),
            mode=a.mode,
        ), "time__get_current_time"

    if portal is not None:
        paths["mcpgov stdio + portal"] = governed_stdio("intent")
        paths["mcpgov stdio + portal, process"] = governed_stdio("process")
        if a.before:
            # the same gateway from another checkout (main before this change), measured in the same run
            paths["BEFORE mcpgov stdio + portal"] = governed_stdio("intent", Path(a.before))
            paths["BEFORE mcpgov stdio + portal, process"] = governed_stdio("process", Path(a.before))
    paths["mcpgov stdio, no portal"] = (
        Client(
            StdioServerParameters(
                command=PY,
                cwd=str(ROOT),
                args=[
                    *offline,
                    "--config",
                    str(d / "stdio.json"),
                    "--spool",
                    str(d / "spool-stdio"),
                    "--state-dir",
                    str(d / "state-stdio"),
                    "--durability",
                    "process",
                ],
            ),
            mode=a.mode,
        ),
        "time__get_current_time",
    )
    if a.paths:
        wanted = [w.strip() for w in a.paths.split(",")]
        paths = {
            p: c
            for p, c in paths.items()
            if p.startswith("direct") or p == FLOOR or any(w in p for w in wanted)
        }
    lat: dict[str, list[float]] = {p: [] for p in paths}
    thr: dict[str, list[float]] = {p: [] for p in paths}
    load0 = os.getloadavg()
    try:
        async with AsyncExitStack() as stack:
            sessions = {p: await stack.enter_async_context(c) for p, (c, _) in paths.items()}
            for p, s in sessions.items():
                await latency(s, paths[p][1], 50)  # warm-up
            per = max(1, a.calls // a.rounds)
            order = list(sessions.items())

            def turn(r: int) -> list:
                """Each round starts one path later: no path always follows the same one (a slow peer
                leaves work behind that the next path would always pay)."""
                k = r % len(order)
                return order[k:] + order[:k]

            for r in range(a.rounds):
                for p, s in turn(r):
                    lat[p] += await latency(s, paths[p][1], per)
            for r in range(a.tput_rounds):
                for p, s in turn(r):
                    thr[p].append(await throughput(s, paths[p][1], a.tput_calls, a.inflight))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
    load1 = os.getloadavg()
    sync = await anyio.to_thread.run_sync(disk_sync_floor, d)
    return lat, thr, load0, load1, sync


def disk_sync_floor(d: Path, n: int = 200) -> dict[str, list[float]]:
    """A 600-byte record + ``fdatasync`` on the spool's file system, the floor of ``durability=intent``:
    appended (the file grows at every sync) and written with ``pwrite`` into preallocated space (the
    spool's way), taking turns."""
    record = b"x" * 599 + b"\n"
    append = os.open(d / "sync-append", os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    prealloc = os.open(d / "sync-prealloc", os.O_RDWR | os.O_CREAT, 0o600)
    os.posix_fallocate(prealloc, 0, (n + 1) * len(record))
    os.fsync(prealloc)
    out: dict[str, list[float]] = {"append": [], "pwrite": []}
    try:
        for i in range(n):
            t0 = time.perf_counter()
            os.write(append, record)
            os.fdatasync(append)
            t1 = time.perf_counter()
            os.pwrite(prealloc, record, i * len(record))
            os.fdatasync(prealloc)
            t2 = time.perf_counter()
            out["append"].append((t1 - t0) * 1000)
            out["pwrite"].append((t2 - t1) * 1000)
    finally:
        os.close(append)
        os.close(prealloc)
    return out


def report(a, lat, thr, load0, load1, sync) -> None:
    med = {p: statistics.median(xs) for p, xs in lat.items()}
    p99 = {p: pct(xs, 99) for p, xs in lat.items()}
    tput = {p: statistics.median(xs) for p, xs in thr.items()}
    load = load_text(load0, load1)
    print(
        f"\ncalls per path: {len(lat['direct stdio'])} one at a time ({a.rounds} rounds, interleaved), "
        f"then {a.tput_rounds}x{a.tput_calls} with {a.inflight} in flight; {os.cpu_count()} CPUs, "
        f"load average {load0[0]:.2f} at start, {load1[0]:.2f} at end"
    )
    print(f"{'path':42} {'median ms':>10} {'p99 ms':>9} {'calls/s':>9}")
    for p in lat:
        print(f"{p:42} {med[p]:10.3f} {p99[p]:9.3f} {tput[p]:9.0f}")
    rows = []  # (figure, baseline, value, ratio or added, goal, met); each also a SUMMARY line

    def row(figure, value, unit, text, baseline, ratio_, goal, met) -> None:
        rows.append(
            (
                figure,
                baseline or "—",
                text,
                "" if ratio_ is None else f"{ratio_:.2f}x",
                goal or "—",
                "" if met is None else ("met" if met else "NOT met"),
            )
        )
        summary(figure, value, unit, baseline=baseline, ratio=ratio_, goal=goal, met=met, load=load)

    def added(path: str, base: str, goal_ms: float | None, what: str = "median") -> None:
        v, b = (med[path], med[base]) if what == "median" else (p99[path], p99[base])
        row(
            f"{path}: added {what}",
            v - b,
            "ms",
            f"{v - b:+.3f} ms",
            f"{base} {b:.3f} ms",
            v / b,
            f"≤ {goal_ms:g} ms added" if goal_ms is not None else None,
            None if goal_ms is None else v - b <= goal_ms,
        )

    def ratio(path: str, base: str, goal: float | None) -> None:
        r = tput[path] / tput[base]
        row(
            f"{path}: throughput, {a.inflight} in flight",
            tput[path],
            "calls/s",
            f"{tput[path]:.0f}/s",
            f"{base} {tput[base]:.0f}/s",
            r,
            f"≥ {goal:g}x" if goal else None,
            None if goal is None else r >= goal,
        )

    for governed in (
        "mcpgov stdio + portal",
        "mcpgov stdio + portal, process",
        "BEFORE mcpgov stdio + portal",
        "BEFORE mcpgov stdio + portal, process",
    ):
        if governed in lat:
            added(governed, "direct stdio", 0.5)
            added(governed, "direct stdio", 2.0, "p99")
            ratio(governed, "direct stdio", 0.7)
    if "mcpgov stdio, no portal" in lat:
        added("mcpgov stdio, no portal", "direct stdio", None)
        ratio("mcpgov stdio, no portal", "direct stdio", None)
    http_paths = (
        "mcpgov HTTP→stdio + auth",
        "mcpgov HTTP→stdio + auth, durability process",
        "mcpgov HTTP→stdio + auth, default policy",
        "mcpgov HTTP→stdio + auth, default policy, SDK path",
        "BEFORE mcpgov HTTP→stdio + auth",
    )
    if FLOOR in lat:
        added(FLOOR, "direct stdio", None)
        ratio(FLOOR, "direct stdio", None)
    for p in http_paths:
        if p in lat:
            added(p, "direct stdio", 1.0)
            ratio(p, "direct stdio", None)
            if FLOOR in lat:  # what mcpgov itself adds on HTTP, over the relay that does nothing else
                added(p, FLOOR, None)
                ratio(p, FLOOR, None)
    asking = "mcpgov HTTP→stdio + auth, asks once per call"
    if asking in lat:
        for p in (asking, f"{asking}, SDK path"):
            added(p, "direct stdio, asks once per call", None)
            ratio(p, "direct stdio, asks once per call", None)
    for streamed in ("mcpgov HTTP→stdio + auth, default policy", asking):
        sdk_path = f"{streamed}, SDK path"
        if streamed not in lat or sdk_path not in lat:
            continue
        # the streaming fast path against the SDK path it replaces, same policy, same run
        row(
            f"{streamed}: median, streaming fast path vs SDK path",
            med[streamed],
            "ms",
            f"{med[streamed]:.3f} ms",
            f"SDK path {med[sdk_path]:.3f} ms",
            med[streamed] / med[sdk_path],
            None,
            None,
        )
        row(
            f"{streamed}: throughput, streaming fast path vs SDK path",
            tput[streamed],
            "calls/s",
            f"{tput[streamed]:.0f}/s",
            f"SDK path {tput[sdk_path]:.0f}/s",
            tput[streamed] / tput[sdk_path],
            None,
            None,
        )
    if "mcp-proxy HTTP→stdio" in lat:
        added("mcp-proxy HTTP→stdio", "direct stdio", None)
        ratio("mcp-proxy HTTP→stdio", "direct stdio", None)
        for p in http_paths:
            if p in lat:
                r = tput[p] / tput["mcp-proxy HTTP→stdio"]
                row(
                    f"{p} vs mcp-proxy: throughput",
                    tput[p],
                    "calls/s",
                    f"{tput[p]:.0f}/s",
                    f"mcp-proxy HTTP→stdio {tput['mcp-proxy HTTP→stdio']:.0f}/s",
                    r,
                    "≥ 1x mcp-proxy",
                    r >= 1,
                )
    for p in ("mcpgov stdio→HTTP", "mcp-proxy stdio→HTTP"):
        if p in lat:
            added(p, "direct HTTP", None)
            ratio(p, "direct HTTP", None)
    append, prealloc = statistics.median(sync["append"]), statistics.median(sync["pwrite"])
    row(
        "disk: 600 B append + fdatasync (median)",
        append,
        "ms",
        f"{append:.3f} ms (p99 {pct(sync['append'], 99):.3f})",
        None,
        None,
        None,
        None,
    )
    row(
        "disk: 600 B pwrite into preallocated space + fdatasync (the INTENT floor, median)",
        prealloc,
        "ms",
        f"{prealloc:.3f} ms (p99 {pct(sync['pwrite'], 99):.3f})",
        f"append + fdatasync {append:.3f} ms",
        prealloc / append,
        None,
        None,
    )
    print()
    widths = [max(len(str(r[i])) for r in rows) for i in range(6)]
    head = ("figure", "baseline (same run)", "value", "ratio", "goal #12", "")
    widths = [max(w, len(h)) for w, h in zip(widths, head, strict=True)]
    print(" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
    print(f"load average (1 min) {load0[0]:.2f} → {load1[0]:.2f} on {os.cpu_count()} CPUs")


def check_delivery(portal: Portal, d: Path) -> None:
    """Every event the portal-backed gateways spooled is stored by the portal (0 lost)."""
    spooled = sum(len(read_events(f)[0]) for f in d.glob("spool-portal-*/*.jsonl"))
    deadline = time.monotonic() + 60
    stored = portal.events_stored()
    while stored < spooled and time.monotonic() < deadline:
        time.sleep(0.5)
        stored = portal.events_stored()
    print(
        f"audit events: {spooled} spooled by the portal-backed gateway, {stored} stored by the portal "
        f"({'0 lost' if stored >= spooled else f'{spooled - stored} MISSING'})"
    )
    summary(
        "audit events lost (spooled by the portal-backed gateways, not stored by the portal)",
        max(spooled - stored, 0),
        "events",
        baseline=f"{spooled} spooled",
        goal="0 lost",
        met=stored >= spooled,
    )


def quiet_logs() -> None:
    """Only errors from the clients' libraries: the benchmark's own lines stay readable."""
    import logging

    for name in ("mcpgov", "httpx2", "httpx", "httpcore", "mcp"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    quick = os.environ.get("BENCH_QUICK") == "1"  # make bench BENCH_QUICK=1: fewer calls, same figures
    ap.add_argument("--calls", type=int, default=300 if quick else 1000, help="sequential calls per path")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--inflight", type=int, default=16)
    ap.add_argument(
        "--tput-calls", type=int, default=300 if quick else 800, help="calls per throughput round"
    )
    ap.add_argument("--tput-rounds", type=int, default=1 if quick else 3)
    ap.add_argument("--mode", default="legacy")
    ap.add_argument("--no-portal", action="store_true", help="no portal-backed gateway (no database needed)")
    ap.add_argument(
        "--paths", default="", help="only the paths whose names contain one of these (comma-separated)"
    )
    ap.add_argument(
        "--before", default="", help="also run the mcpgov gateways from this checkout (e.g. main)"
    )
    ap.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB))
    a = ap.parse_args()
    quiet_logs()
    with tempfile.TemporaryDirectory(prefix="mcpgov-bench-") as tmp:
        d = Path(tmp)
        (d / "portal").mkdir()
        portal = None if a.no_portal else Portal(a.database_url, d / "portal")
        try:
            try:
                lat, thr, load0, load1, sync = anyio.run(run, a, d, portal)
            except BaseExceptionGroup as group:  # the SDK nests task groups past the traceback's depth
                leaves = [group]
                while any(isinstance(e, BaseExceptionGroup) for e in leaves):
                    leaves = [
                        x
                        for e in leaves
                        for x in (e.exceptions if isinstance(e, BaseExceptionGroup) else [e])
                    ]
                raise SystemExit(
                    f"benchmark failed: {'; '.join(f'{type(e).__name__}: {e}' for e in leaves)}"
                ) from group
            report(a, lat, thr, load0, load1, sync)
            if portal is not None:
                check_delivery(portal, d)
        finally:
            if portal is not None:
                portal.stop()


if __name__ == "__main__":
    main()
