"""Run ``python -m mcpgov ...`` with every ``fdatasync`` of the process held while a file says so.

``python held_sync.py <gate-dir> -m mcpgov gateway ...``: while ``<gate-dir>/hold`` exists, each
``os.fdatasync`` (the spool calls it at call time) first creates ``<gate-dir>/entered``, then waits until
``<gate-dir>/release`` exists (60 s at most), then syncs for real and appends the time it returned to
``<gate-dir>/returned``. Tests use it to see what the gateway does while its INTENT's sync has not returned.
"""

from __future__ import annotations

import os
import runpy
import sys
import time
from pathlib import Path

gate = Path(sys.argv[1])
real_fdatasync = os.fdatasync


def held_fdatasync(fd: int) -> None:
    if (gate / "hold").exists():
        (gate / "entered").touch()
        deadline = time.monotonic() + 60
        while not (gate / "release").exists() and time.monotonic() < deadline:
            time.sleep(0.005)
    real_fdatasync(fd)
    if (gate / "hold").exists():
        with open(gate / "returned", "a") as fh:
            fh.write(f"{time.time()!r}\n")


os.fdatasync = held_fdatasync
assert sys.argv[2:4] == ["-m", "mcpgov"], sys.argv
sys.argv = ["mcpgov", *sys.argv[4:]]
sys.path.insert(0, os.getcwd())  # the checkout's mcpgov, as ``python -m mcpgov`` run from it
runpy.run_module("mcpgov", run_name="__main__", alter_sys=True)
