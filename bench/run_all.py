"""Runs every benchmark in bench/ in turn and prints one table of every issue-#12 figure (`make bench`).

Each benchmark measures its baseline in the same run and ends with one ``SUMMARY {json}`` line per
headline figure (``bench/summary.py``); this script shows each benchmark's own output as it runs, then
collects those lines into one table: figure, value, baseline, ratio, goal, met?, load average. Nothing
here asserts a speed (the machines are shared and noisy). ``BENCH_QUICK=1`` asks every benchmark for a
shorter run (fewer calls; the same figures, noisier); ``--only a,b`` runs the benchmarks whose file
names contain one of those words. Run one alone with `.venv/bin/python bench/<name>.py`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from summary import parse  # noqa: E402

BENCH_REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")

# (script, its arguments): the gateway's latency figures first, then the portal's
BENCHMARKS: list[tuple[str, list[str]]] = [
    ("decision_time.py", []),
    ("spool_sync.py", []),
    ("gateway_latency.py", ["--floor"]),  # with the stdio pass-through floor, bare and with the INTENT sync
    ("gateway_latency.py", ["--http"]),
    ("tools_list.py", []),
    ("governed_path.py", []),
    ("bundle_build.py", []),
    ("bundle_serve.py", []),
    ("ingest.py", []),
    # the goal's set-up: 2 uvicorn workers, Redis fan-out (BENCH_QUICK=1: 2 toggles instead of 10)
    ("killswitch_propagation.py", ["--workers", "2", "--redis", BENCH_REDIS]),
    ("db_connections.py", []),
]


def run(name: str, args: list[str]) -> tuple[int, list[dict]]:
    """Run one benchmark, echoing its output, and return its exit code and SUMMARY figures."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE / name), *args],
        cwd=HERE.parent,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    assert proc.stdout is not None
    out = []
    for line in proc.stdout:
        sys.stdout.write(line)
        out.append(line)
    return proc.wait(), parse("".join(out))


def table(figures: list[tuple[str, dict]]) -> str:
    head = ("figure", "value", "baseline (same run)", "ratio", "goal (#12)", "met?", "load", "script")
    rows = []
    for script, f in figures:
        value = (
            f"{f['value']:g} {f['unit']}" if isinstance(f.get("value"), int | float) else str(f.get("value"))
        )
        ratio = f"{f['ratio']:.2f}x" if isinstance(f.get("ratio"), int | float) else "—"
        met = {True: "yes", False: "NO", None: ""}.get(f.get("met"), str(f.get("met")))
        rows.append(
            (
                str(f["figure"]),
                value,
                f.get("baseline") or "—",
                ratio,
                f.get("goal") or "—",
                met,
                str(f.get("load") or ""),
                script,
            )
        )
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(head)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--only", default="", help="comma-separated words; run the benchmarks whose names hold one"
    )
    a = ap.parse_args()
    wanted = [w.strip() for w in a.only.split(",") if w.strip()]
    failed: list[str] = []
    figures: list[tuple[str, dict]] = []
    started_all = time.monotonic()
    load0 = os.getloadavg()
    for name, args in BENCHMARKS:
        label = " ".join([name, *args])
        if wanted and not any(w in label for w in wanted):
            continue
        if not (HERE / name).exists():
            print(f"== {label}: missing", flush=True)
            failed.append(label)
            continue
        print(f"\n== {label}", flush=True)
        started = time.monotonic()
        code, found = run(name, args)
        figures += [(label, f) for f in found]
        print(f"== {label}: exit {code} in {time.monotonic() - started:.1f}s", flush=True)
        if code != 0:
            failed.append(label)
    load1 = os.getloadavg()
    print(
        f"\n== every figure ({'BENCH_QUICK=1, shorter runs' if os.environ.get('BENCH_QUICK') == '1' else 'full runs'}"
        f"; {time.monotonic() - started_all:.0f} s; {os.cpu_count()} CPUs, load average "
        f"{load0[0]:.1f} → {load1[0]:.1f}; ratios are what to read on a shared machine)\n"
    )
    print(table(figures) if figures else "(no SUMMARY figures)")
    if failed:
        print(f"\nFailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
