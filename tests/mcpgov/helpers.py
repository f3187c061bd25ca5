"""Builders for mcpgov tests: bundle documents and a test signing key pinned through a JWKS file."""

from __future__ import annotations

import contextlib
import copy
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mcpgov.bundle import Bundle, FlagsUpdate
from mcpgov.verify import FLAGS_JWS_TYPE, generate_key, jwks, sign_bundle

NOW = datetime(2026, 11, 24, 9, 0, 0, tzinfo=UTC)


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def bundle_doc(**overrides: Any) -> dict[str, Any]:
    """A valid development bundle document for team acme; ``overrides`` replace top-level keys."""
    doc: dict[str, Any] = {
        "schema": "mcpgov.bundle/1",
        "team": "acme",
        "environment": "development",
        "version": 3,
        "issued_at": iso(NOW - timedelta(minutes=5)),
        "expires_at": iso(NOW + timedelta(hours=1)),
        "roles": {
            "code_agent": {"allowed_servers": ["time", "filesystem", "git"], "forbidden_servers": ["shell"]},
            "docs_agent": {"allowed_servers": ["time"], "forbidden_servers": []},
        },
        "servers": {
            "time": {
                "category": "other",
                "transport": "stdio",
                "command": "python",
                "args": ["-m", "mcp_server_time"],
                "tools": {
                    "get_current_time": {"class": "read"},
                    "convert_time": {"class": "read"},
                },
                "cost_per_call": 0.0,
            },
            "filesystem": {
                "category": "filesystem",
                "transport": "stdio",
                "command": "mcp-server-filesystem",
                "args": ["/tmp/work"],
                "tools": {
                    "read_text_file": {"class": "read"},
                    "list_directory": {"class": "read"},
                    "write_file": {"class": "write"},
                    "edit_file": {"class": "write", "approval_required": False},
                },
            },
            "git": {
                "category": "api",
                "transport": "stdio",
                "command": "python",
                "args": ["-m", "mcp_server_git"],
                "tools": {"git_status": {"class": "read"}, "git_commit": {"class": "write"}},
            },
            "shell": {"category": "shell_execution", "transport": "stdio", "command": "sh", "tools": {}},
        },
        "environment_policy": {
            "name": "development",
            "requires_authorization": False,
            "forbidden_patterns": ["*prod*", "*production*", "*live*"],
            "production_url_words": [],
            "bindings": {
                "time": {"target": "local", "permission": "read_only"},
                "filesystem": {"target": "/tmp/work", "permission": "read_write"},
                "git": {"target": "/tmp/repo", "permission": "read_write"},
                "shell": {"target": "local", "permission": "read_write"},
            },
        },
        "rate_limits": {"global": {}, "per_server": {}},
        "triggers": {
            "cascade_write_threshold": 3,
            "large_data_bytes": 1048576,
            "production_url_words": ["prod", "production", "live", "main"],
        },
        "flags": [],
        "grants": [],
    }
    doc.update(copy.deepcopy(overrides))
    return doc


def flags_doc(**overrides: Any) -> dict[str, Any]:
    """A valid flags update for :func:`bundle_doc`'s bundle: ``mcp.time.all`` off, revision 1 on v3."""
    doc: dict[str, Any] = {
        "schema": "mcpgov.flags/1",
        "team": "acme",
        "environment": "development",
        "bundle_version": 3,
        "revision": 1,
        "issued_at": iso(NOW - timedelta(minutes=1)),
        "expires_at": iso(NOW + timedelta(hours=1)),
        "flags": [
            {
                "name": "mcp.time.all",
                "server": "time",
                "capability": "all",
                "enabled": False,
                "reason": "INC-9: clock drift",
                "changed_at": iso(NOW - timedelta(minutes=1)),
            }
        ],
    }
    doc.update(copy.deepcopy(overrides))
    return doc


def make_bundle(**overrides: Any) -> Bundle:
    return Bundle.model_validate(bundle_doc(**overrides))


class Signer:
    """A test signing key; ``write_jwks`` pins its public half the way an operator would."""

    def __init__(self, kid: str = "test-key-1") -> None:
        self.kid = kid
        self.key = generate_key()

    @property
    def public_key(self):
        return self.key.public_key()

    def jwks(self) -> dict[str, Any]:
        return jwks({self.kid: self.public_key})

    def write_jwks(self, path: Path) -> Path:
        path.write_text(json.dumps(self.jwks()), encoding="utf-8")
        return path

    def sign_doc(self, doc: dict[str, Any]) -> str:
        return sign_bundle(Bundle.model_validate(doc).canonical_bytes(), self.key, self.kid)

    def sign(self, **overrides: Any) -> str:
        return self.sign_doc(bundle_doc(**overrides))

    def sign_flags(self, **overrides: Any) -> str:
        """A signed flags update (typ mcpgov-flags+jws) of :func:`flags_doc` with ``overrides``."""
        payload = FlagsUpdate.model_validate(flags_doc(**overrides)).canonical_bytes()
        return sign_bundle(payload, self.key, self.kid, typ=FLAGS_JWS_TYPE)


@contextlib.contextmanager
def gateway_uvicorn(app: Any):
    """uvicorn with the gateway's settings (``uvicorn_config``) in a thread; yields its port."""
    import uvicorn

    from mcpgov.serve import uvicorn_config
    from tests.conftest import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=30)
