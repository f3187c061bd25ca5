"""What one durable 600-byte record costs on this disk, four ways (the spool's design choice, issue #12).

``append + fdatasync`` (the file grows at every sync: ext4/xfs commit the new size in the journal),
``O_DSYNC`` appends, and ``pwrite`` into preallocated space + ``fdatasync`` (no size change), with the
space made by ``posix_fallocate`` (what ``mcpgov.audit.AuditSpool`` does) or by writing zeros. The four
take turns in rounds on the spool's file system (``--dir``, default ``var/``) so disk noise hits all.

    .venv/bin/python bench/spool_sync.py [--records 2000] [--dir var]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gateway_latency import pct  # noqa: E402
from summary import load_text, summary  # noqa: E402

RECORD = b"x" * 599 + b"\n"


def ways(n: int):
    def append(path):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        return fd, lambda i: (os.write(fd, RECORD), os.fdatasync(fd))

    def odsync(path):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_DSYNC, 0o600)
        return fd, lambda i: os.write(fd, RECORD)

    def fallocated(path):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.posix_fallocate(fd, 0, (n + 1) * len(RECORD))
        os.fsync(fd)
        return fd, lambda i: (os.pwrite(fd, RECORD, i * len(RECORD)), os.fdatasync(fd))

    def zeroed(path):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.write(fd, b"\0" * ((n + 1) * len(RECORD)))
        os.fsync(fd)
        return fd, lambda i: (os.pwrite(fd, RECORD, i * len(RECORD)), os.fdatasync(fd))

    return {
        "append + fdatasync": append,
        "O_DSYNC append": odsync,
        "pwrite into fallocated space + fdatasync": fallocated,
        "pwrite into zero-filled space + fdatasync": zeroed,
    }


def main() -> None:
    quick = os.environ.get("BENCH_QUICK") == "1"
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=500 if quick else 2000, help="records per way")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dir", default=str(HERE.parent / "var"))
    a = ap.parse_args()
    Path(a.dir).mkdir(parents=True, exist_ok=True)
    per = max(1, a.records // a.rounds)
    results: dict[str, list[float]] = {}
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(dir=a.dir, prefix="spool-sync-") as tmp:
        for r in range(a.rounds):
            for k, (name, make) in enumerate(ways(per).items()):
                path = Path(tmp) / f"{k}-{r}"
                fd, op = make(path)
                out = results.setdefault(name, [])
                for i in range(per):
                    t0 = time.perf_counter()
                    op(i)
                    out.append((time.perf_counter() - t0) * 1000)
                os.close(fd)
                path.unlink()
    load = load_text(load0)
    print(
        f"600 B record + sync, {per * a.rounds} per way in {a.rounds} interleaved rounds, load average {load}"
    )
    base = statistics.median(results["append + fdatasync"])
    for name, xs in results.items():
        md = statistics.median(xs)
        print(f"{name:44} median {md:.3f} ms  p99 {pct(xs, 99):.3f} ms  ({md / base:.2f}x append)")
    for name in ("pwrite into fallocated space + fdatasync", "O_DSYNC append"):
        md = statistics.median(results[name])
        summary(
            f"disk: {name} (median)",
            md,
            "ms",
            baseline=f"append + fdatasync {base:.3f} ms",
            ratio=md / base,
            load=load,
        )


if __name__ == "__main__":
    main()
