"""Runs every benchmark in bench/ in turn and prints their figures (`make bench`).

Each benchmark measures its baseline in the same run and prints ratios; nothing here
asserts a speed (the machines are shared and noisy). Run one alone with
`.venv/bin/python bench/<name>.py`.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = [
    "decision_time.py",
    "gateway_latency.py",
    "governed_path.py",
    "bundle_build.py",
    "bundle_serve.py",
    "ingest.py",
    "killswitch_propagation.py",
    "db_connections.py",
]


def main() -> int:
    failed = []
    for name in BENCHMARKS:
        path = HERE / name
        if not path.exists():
            print(f"== {name}: missing", flush=True)
            failed.append(name)
            continue
        print(f"\n== {name}", flush=True)
        started = time.monotonic()
        result = subprocess.run([sys.executable, str(path)], cwd=HERE.parent)
        print(f"== {name}: exit {result.returncode} in {time.monotonic() - started:.1f}s", flush=True)
        if result.returncode != 0:
            failed.append(name)
    if failed:
        print(f"\nFailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
