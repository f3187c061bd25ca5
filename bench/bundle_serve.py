"""Bundle serving throughput: GET /api/v1/bundle/ under uvicorn on loopback, 304 path and 200 path.

Starts the portal (uvicorn, production ASGI server) on a throwaway database with a team, an
enforcement client and a published bundle, then drives it with wrk (a C HTTP load generator:
`apt-get install -y wrk`) — or, without wrk, a Python asyncio keep-alive client — and prints
requests per second and latency for:

- 304: `If-None-Match` with the current ETag (what every polling gateway sends), goal >= 2,000 req/s;
- 200: no ETag, the full signed bundle in the body.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/mcpgov .venv/bin/python bench/bundle_serve.py \\
        [--seconds 10] [--connections 64] [--workers 1] [--through-django]

`--through-django` runs the same load a second time against `config.asgi:django_application`
(no bundle route in front: every request through Django's middleware and URL conf).

Loopback only; every run is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bundle_build import bench_database, populate  # noqa: E402

PATH = "/api/v1/bundle/"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"uvicorn exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("uvicorn did not start")


def one(port: int, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=60
    )  # (a first request also loads the URL conf)
    try:
        conn.request("GET", PATH, headers=headers)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def run_wrk(port: int, headers: dict[str, str], seconds: int, connections: int) -> dict[str, str]:
    args = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--latency"]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    out = subprocess.run(
        [*args, f"http://127.0.0.1:{port}{PATH}"], capture_output=True, text=True, timeout=seconds + 30
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    lat = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors:.*", out)
    return {
        "rps": rps.group(1) if rps else "?",
        "p50": lat.group(1) if lat else "?",
        "p99": p99.group(1) if p99 else "?",
        "errors": errors.group(1) if errors else "0",
        "socket": socket_errors.group(0) if socket_errors else "",
    }


async def _client(port: int, request: bytes, stop: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.monotonic() < stop:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"content-length: (\d+)", head.lower()).group(1))
            if length:
                await reader.readexactly(length)
            counts[0] += 1
    finally:
        writer.close()


def run_python_client(port: int, headers: dict[str, str], seconds: int, connections: int) -> dict[str, str]:
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n{lines}\r\n".encode()
    counts = [0]

    async def main():
        stop = time.monotonic() + seconds
        await asyncio.gather(*(_client(port, request, stop, counts) for _ in range(connections)))

    started = time.monotonic()
    asyncio.run(main())
    return {
        "rps": f"{counts[0] / (time.monotonic() - started):.0f}",
        "p50": "-",
        "p99": "-",
        "errors": "?",
        "socket": "",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--servers", type=int, default=50, help="servers in the bundle (its size)")
    parser.add_argument(
        "--through-django",
        action="store_true",
        help="also serve the same requests through Django's own ASGI handler (config.asgi:django_application, "
        "the whole middleware stack) to show what the route in front of Django buys",
    )
    args = parser.parse_args()

    with bench_database() as url:
        from governance.models import Environment
        from governance.services.bundles import bundle_publish
        from governance.services.clients import client_create

        team, _ = populate(
            servers=args.servers,
            roles=20,
            bindings=min(30, args.servers),
            limits=min(20, args.servers),
            flags=min(10, args.servers),
            grants=3,
        )
        env = Environment.objects.select_related("team").get(team=team, name="production")
        bundle = bundle_publish(environment=env).bundle
        token = client_create(team=team, environment=env, name="bench-gw").token

        targets = ["config.asgi:application"]
        if args.through_django:
            targets.append("config.asgi:django_application")
        for target in targets:
            port = free_port()
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    target,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--workers",
                    str(args.workers),
                    "--log-level",
                    "warning",
                    "--no-access-log",
                ],
                cwd=ROOT,
                env={
                    **os.environ,
                    "DATABASE_URL": url,
                    "DJANGO_DEBUG": "0",
                    "DJANGO_SECRET_KEY": "bench-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
                    "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
                    "MCPGOV_KEY_ENCRYPTION_KEY": os.environ.get(
                        "MCPGOV_KEY_ENCRYPTION_KEY", "ZGV2LW9ubHkta2V5LWVuY3J5cHRpb24ta2V5LTAwMDA="
                    ),
                    "DJANGO_SECURE_SSL_REDIRECT": "0",
                    "CELERY_BROKER_URL": "",
                },
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            try:
                wait_listening(port, proc)
                auth = {"Authorization": f"Bearer {token}", "X-Mcpgov-Bundle-Version": str(bundle.version)}
                status, headers, body = one(port, auth)
                assert status == 200 and body.decode() == bundle.jws, (status, body[:200])
                etag = headers["etag"]
                status, _, _ = one(port, {**auth, "If-None-Match": etag})
                assert status == 304, status
                status, _, _ = one(port, {"Authorization": "Bearer mcpgov_000000000000_wrong"})
                assert status == 401, status

                tool = "wrk" if shutil.which("wrk") else "python-asyncio"
                runner = run_wrk if tool == "wrk" else run_python_client
                print(
                    f"server          uvicorn {target}, {args.workers} worker(s), loopback, "
                    f"DJANGO_DEBUG=0; load generator {tool}, {args.connections} connections, {args.seconds}s each"
                )
                print(
                    f"bundle          v{bundle.version}, {len(body) / 1024:.1f} KiB JWS ({args.servers} servers)"
                )
                for name, headers_ in (
                    ("304 (If-None-Match)", {**auth, "If-None-Match": etag}),
                    ("200 (full body)", auth),
                ):
                    r = runner(port, headers_, args.seconds, args.connections)
                    print(
                        f"{name:20s}  {float(r['rps']):9.0f} req/s   p50 {r['p50']:>8s}   p99 {r['p99']:>8s}   "
                        f"non-2xx/3xx {r['errors']}  {r['socket']}"
                    )
                    if name.startswith("304"):
                        print(
                            f"goal >= 2,000 req/s on the 304 path: {'met' if float(r['rps']) >= 2000 else 'NOT met'}"
                        )
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
