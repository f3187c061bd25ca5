"""The stdio pass-through floor: what a relay on the gateway's event loop costs with no governance (#12, goal 1).

A minimal stdio MCP relay on the same event loop as the gateway (``mcpgov.serve.event_loop_options``:
uvloop when installed): every line from the agent is parsed and written to one stdio upstream, every
line from the upstream is parsed and written back; JSON is decoded and encoded once each way, as any
relay that routes by id must. No policy, audit, sessions or SDK. ``--spool DIR`` adds the INTENT's
floor: before a ``tools/call`` goes to the upstream a 600-byte record is written into a preallocated
file and ``fdatasync``-ed on the loop (as the gateway does for a lone call), and after the answer a
second record is written without a sync (the RESULT). The gateway's figure minus this one is what
mcpgov itself adds; ``bench/gateway_latency.py --floor`` measures both, interleaved with direct stdio.

    .venv/bin/python bench/stdio_floor.py [--spool DIR] -- python -m mcp_server_time
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mcpgov.serve import event_loop_options

RECORD = b"x" * 599 + b"\n"
PREALLOCATED = 64 * 1024 * 1024


class Spool:
    """Records written with pwrite into fallocated space, like the gateway's spool."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(directory / "floor.jsonl", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.posix_fallocate(self.fd, 0, PREALLOCATED)
        os.fsync(self.fd)
        self.end = 0

    def write(self, *, sync: bool) -> None:
        if self.end + len(RECORD) > PREALLOCATED:
            self.end = 0
        self.end += os.pwrite(self.fd, RECORD, self.end)
        if sync:
            os.fdatasync(self.fd)


async def relay(command: list[str], spool: Spool | None) -> None:
    loop = asyncio.get_running_loop()
    agent_in = asyncio.StreamReader(limit=2**24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(agent_in), os.fdopen(0, "rb", 0))
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(1, "wb", 0)
    )
    agent_out = asyncio.StreamWriter(transport, protocol, None, loop)
    proc = await asyncio.create_subprocess_exec(
        *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=2**24
    )
    assert proc.stdin is not None and proc.stdout is not None
    up_in, up_out = proc.stdout, proc.stdin
    calls: set[object] = set()  # ids of tools/call requests waiting for their answer

    def line(msg: object) -> bytes:
        return json.dumps(msg, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"

    async def from_upstream() -> None:
        while raw := await up_in.readline():
            msg = json.loads(raw)
            if spool is not None and msg.get("id") in calls and "method" not in msg:
                calls.discard(msg["id"])
                spool.write(sync=False)
            agent_out.write(line(msg))

    reader = loop.create_task(from_upstream())
    while raw := await agent_in.readline():
        msg = json.loads(raw)
        if spool is not None and msg.get("method") == "tools/call":
            spool.write(sync=True)  # on disk before the upstream sees the call
            calls.add(msg.get("id"))
        up_out.write(line(msg))
    up_out.close()
    await proc.wait()
    reader.cancel()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spool", type=Path, help="write and fdatasync an INTENT-sized record per tools/call")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    command = a.command[1:] if a.command[:1] == ["--"] else a.command
    spool = Spool(a.spool) if a.spool else None
    anyio.run(relay, command, spool, backend_options=event_loop_options())


if __name__ == "__main__":
    main()
