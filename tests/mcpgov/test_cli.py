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


@pytest.mark.parametrize(
    ("address", "public", "ok"),
    [
        ("127.0.0.1:9464", False, True),
        ("localhost:9464", False, True),
        ("[::1]:9464", False, True),
        (":9464", False, True),  # no host: loopback
        ("0.0.0.0:9464", False, False),
        ("10.0.0.5:9464", False, False),
        ("metrics.example.com:9464", False, False),  # a name may resolve anywhere
        ("0.0.0.0:9464", True, True),
        ("127.0.0.1", False, False),
    ],
)
def test_metrics_address_is_loopback_unless_made_public(address, public, ok):
    from mcpgov.metrics import MetricsAddressError, parse_address

    if ok:
        host, port = parse_address(address, public=public)
        assert port == 9464 and host
    else:
        with pytest.raises(MetricsAddressError):
            parse_address(address, public=public)


def test_gateway_refuses_public_metrics_without_the_flag(tmp_path):
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
            str(tmp_path / "b.jws"),
            "--keys",
            str(tmp_path / "k.json"),
            "--metrics",
            "0.0.0.0:9464",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert r.returncode == 2 and "--metrics-public" in r.stderr and r.stdout == ""
