"""The ``mcpgov`` console script and ``python -m mcpgov`` are the same CLI, and it talks on stderr only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize(
    "command", [[str(Path(sys.executable).parent / "mcpgov")], [sys.executable, "-m", "mcpgov"]]
)
def test_cli_entry_points(command, tmp_path):
    r = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "{verify-bundle,gateway,gate,discover,audit-check}" in r.stdout
    # a usage error is one clear line on stderr and a non-zero exit
    r = subprocess.run(
        [*command, "gateway", "--env", "development"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert r.returncode == 2 and r.stdout == "" and "gateway needs --role" in r.stderr


def test_gateway_without_pinned_keys_refuses(tmp_path):
    bundle = tmp_path / "b.jws"
    bundle.write_text("x.y.z")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "mcpgov",
            "gateway",
            "--role",
            "r",
            "--env",
            "development",
            "--bundle-file",
            str(bundle),
            "--spool",
            str(tmp_path / "spool"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "--keys (a pinned JWKS file) is required" in r.stderr
