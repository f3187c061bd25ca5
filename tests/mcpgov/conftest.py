"""Fixtures for the enforcer's tests: a signing key pinned in a JWKS file, real upstream MCP servers,
and the gateway started as ``python -m mcpgov gateway`` the way an agent host starts it.

Nothing here touches the database.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from mcp import StdioServerParameters

from mcpgov.audit import read_events
from tests.conftest import free_port
from tests.mcpgov.helpers import Signer, bundle_doc, iso
from tests.mcpgov.portal_double import PortalTestDouble

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
FILESYSTEM_SERVER = ROOT / "node_modules" / ".bin" / "mcp-server-filesystem"
TIME_ARGS = ["-m", "mcp_server_time", "--local-timezone", "UTC"]


@dataclass
class World:
    """One scenario's files: key, bundle, MCP config, spool, and the filesystem upstream's root.

    Paths come from ``tempfile.mkdtemp`` with a neutral prefix: pytest's ``tmp_path`` carries the test's
    name, and words like "production" or "live" in a path are exactly what the gateway refuses.
    """

    base: Path
    signer: Signer = field(default_factory=Signer)
    version: int = 1

    def __post_init__(self) -> None:
        self.files = self.base / "files"
        self.files.mkdir()
        self.repo = self.base / "repo"
        self.spool = self.base / "spool"
        self.state = self.base / "state"
        self.keys = self.signer.write_jwks(self.base / "keys.json")
        self.bundle_path = self.base / "bundle.jws"
        self.config_path = self.base / "mcp.json"

    def doc(self, **overrides: Any) -> dict[str, Any]:
        now = datetime.now(UTC)
        d = bundle_doc(
            version=self.version,
            issued_at=iso(now - timedelta(minutes=1)),
            expires_at=iso(now + timedelta(hours=1)),
        )
        d["environment_policy"]["bindings"]["filesystem"]["target"] = str(self.files)
        d["environment_policy"]["bindings"]["git"]["target"] = str(self.repo)
        d["servers"]["filesystem"]["args"] = [str(self.files)]
        d.update(overrides)
        return d

    def write_bundle(self, doc: dict[str, Any]) -> str:
        jws = self.signer.sign_doc(doc)
        tmp = self.bundle_path.with_suffix(".tmp")
        tmp.write_text(jws)
        tmp.replace(self.bundle_path)
        return jws

    def publish(self, portal: PortalTestDouble, doc: dict[str, Any] | None = None) -> None:
        """Sign `doc` (default: this world's bundle) and let the portal double serve it."""
        doc = self.doc() if doc is None else doc
        portal.publish(self.signer.sign_doc(doc), doc.get("version", self.version))

    def next_version(self) -> int:
        self.version += 1
        return self.version

    def write_config(
        self, servers: tuple[str, ...] = ("time", "filesystem"), extra: dict[str, Any] | None = None
    ) -> Path:
        entries: dict[str, Any] = {}
        if "time" in servers:
            entries["time"] = {"command": PY, "args": TIME_ARGS}
        if "filesystem" in servers:
            entries["filesystem"] = {"command": str(FILESYSTEM_SERVER), "args": [str(self.files)]}
        if "git" in servers:
            entries["git"] = {"command": PY, "args": ["-m", "mcp_server_git", "--repository", str(self.repo)]}
        entries.update(extra or {})
        self.config_path.write_text(json.dumps({"mcpServers": entries}))
        return self.config_path

    def gateway_args(
        self,
        *extra: str,
        role: str = "code_agent",
        env: str = "development",
        portal: PortalTestDouble | None = None,
    ) -> list[str]:
        args = [
            "-m",
            "mcpgov",
            "gateway",
            "--keys",
            str(self.keys),
            "--env",
            env,
            "--role",
            role,
            "--config",
            str(self.config_path),
            "--spool",
            str(self.spool),
            "--state-dir",
            str(self.state),
        ]
        if portal is not None:
            from tests.mcpgov.portal_double import TOKEN

            args += ["--portal", portal.url, "--token", TOKEN]
        else:
            args += ["--bundle-file", str(self.bundle_path)]
        return args + list(extra)

    def gate_args(self, *extra: str, role: str = "code_agent") -> list[str]:
        """``mcpgov gate`` on this world's keys, config, state and bundle file."""
        args = self.gateway_args(*extra, role=role)
        args[2] = "gate"
        return [a for a in args if a not in ("--spool", str(self.spool))]

    def gateway(self, *extra: str, fast_path: bool = True, **kw: Any) -> StdioServerParameters:
        env = {"MCPGOV_LOG_LEVEL": "WARNING", "MCPGOV_FAST_PATH": "1" if fast_path else "0"}
        return StdioServerParameters(command=PY, args=self.gateway_args(*extra, **kw), cwd=str(ROOT), env=env)

    def events_session(self) -> str:
        [path] = self.spool.glob("*.jsonl")
        return path.stem

    def events(self) -> list[dict[str, Any]]:
        out = []
        for f in sorted(self.spool.glob("*.jsonl")):
            out += [event for _, event in read_events(f)[0]]  # a live spool ends in preallocated NULs
        return out


def run_mcpgov(args: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """``python <args>`` as a user runs it (stdin closed, warnings logged), within 90 s."""
    return subprocess.run(
        [PY, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=90,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "MCPGOV_LOG_LEVEL": "WARNING"},
    )


@dataclass
class HttpGateway:
    """A gateway process on the HTTP transport; its stderr goes to a file of the world."""

    proc: subprocess.Popen[bytes]
    port: int
    stderr: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"


def start_http_gateway(world: World, portal: PortalTestDouble, *extra: str, role: str = "code_agent"):
    """Start ``mcpgov gateway --http`` on a free port and return once it listens (60 s at most)."""
    port = free_port()
    stderr = world.base / f"http-{port}.err"
    proc = subprocess.Popen(
        [PY, *world.gateway_args(*extra, "--http", f"127.0.0.1:{port}", role=role, portal=portal)],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(stderr, "w"),  # noqa: SIM115 (closed with the process)
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return HttpGateway(proc, port, stderr)
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, stderr.read_text()
            time.sleep(0.1)


@pytest.fixture
def world() -> Iterator[World]:
    base = Path(tempfile.mkdtemp(prefix="mcpgov-e2e-"))
    try:
        yield World(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def portal() -> Iterator[PortalTestDouble]:
    p = PortalTestDouble().start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture(scope="session")
def filesystem_server() -> Path:
    if not FILESYSTEM_SERVER.exists():
        pytest.fail(f"{FILESYSTEM_SERVER} is missing: run `make upstreams` (npm install)")
    return FILESYSTEM_SERVER
