"""The peers the benchmarks compare mcpgov with, installed from PyPI into their own virtualenv.

``var/bench-peers`` (gitignored) gets ``mcp-proxy`` at a pinned version the first time a benchmark asks
for it, with the ordinary ``venv`` + ``pip``; its ``mcp`` SDK never mixes with the project's.

    .venv/bin/python bench/peers.py     # install (or check) and print the version
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "var" / "bench-peers"
MCP_PROXY = "mcp-proxy==0.13.0"


def mcp_proxy() -> str:
    """Path of the ``mcp-proxy`` executable, installing it first when missing."""
    exe = PEERS / "bin" / "mcp-proxy"
    if not exe.exists():
        print(f"installing {MCP_PROXY} into {PEERS.relative_to(ROOT)}…", flush=True)
        venv.create(PEERS, with_pip=True, clear=PEERS.exists())
        subprocess.run([str(PEERS / "bin" / "pip"), "install", "--quiet", MCP_PROXY], check=True)
    return str(exe)


if __name__ == "__main__":
    path = mcp_proxy()
    out = subprocess.run([path, "--version"], capture_output=True, text=True)
    print(path, (out.stdout or out.stderr).strip())
    sys.exit(out.returncode)
