"""An MCP server with a task tool (2025-11-25 tasks), on stdio, for the gateway's tasks tests.

Written on raw JSON-RPC lines because the SDK 2.3 server has no ``tasks/*`` at 2025-11-25 (the same
reason the gateway relays them itself). ``job`` runs for ``seconds`` and answers ``done: <label>``;
called as a task it returns a ``CreateTaskResult`` at once, sends ``notifications/tasks/status`` and
serves ``tasks/get``, ``tasks/result`` (blocking until the end), ``tasks/list`` and ``tasks/cancel``.
Every request it receives is appended to the file named by ``TASK_SERVER_LOG`` (one JSON line: method,
params), so a test sees what reached the upstream: the cancel a halt sends, the polls it did not get.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

TOOLS = [
    {
        "name": "job",
        "description": "Runs for a while and says it is done.",
        "inputSchema": {
            "type": "object",
            "properties": {"label": {"type": "string"}, "seconds": {"type": "number"}},
            "required": ["label"],
        },
        "execution": {"taskSupport": "optional"},
    }
]

LOG = os.environ.get("TASK_SERVER_LOG")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Server:
    def __init__(self, out: asyncio.StreamWriter | Any) -> None:
        self.out = out
        self.tasks: dict[str, dict[str, Any]] = {}
        self.results: dict[str, dict[str, Any]] = {}
        self.done: dict[str, asyncio.Event] = {}
        self.runners: dict[str, asyncio.Task[None]] = {}

    def send(self, msg: dict[str, Any]) -> None:
        self.out.write((json.dumps(msg) + "\n").encode())

    def set_status(self, tid: str, status: str, message: str) -> None:
        task = self.tasks[tid]
        task.update(status=status, statusMessage=message, lastUpdatedAt=now())
        self.send({"jsonrpc": "2.0", "method": "notifications/tasks/status", "params": dict(task)})
        if status in ("completed", "failed", "cancelled"):
            self.done[tid].set()

    async def run_job(self, tid: str, args: dict[str, Any]) -> None:
        await asyncio.sleep(float(args.get("seconds", 0.5)))
        if self.tasks[tid]["status"] != "working":
            return
        self.results[tid] = {
            "content": [{"type": "text", "text": f"done: {args.get('label')}"}],
            "isError": False,
        }
        self.set_status(tid, "completed", "finished")

    async def handle(self, msg: dict[str, Any]) -> None:
        method, rid, params = msg.get("method"), msg.get("id"), msg.get("params") or {}
        if LOG and rid is not None:
            with open(LOG, "a") as f:
                f.write(json.dumps({"method": method, "params": params}) + "\n")
        if rid is None:
            return  # notifications
        try:
            result = await self.answer(method, params)
        except LookupError as exc:
            self.send({"jsonrpc": "2.0", "id": rid, "error": {"code": -32602, "message": str(exc)}})
            return
        self.send({"jsonrpc": "2.0", "id": rid, "result": result})

    async def answer(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if method == "initialize":
            return {
                "protocolVersion": params.get("protocolVersion", "2025-11-25"),
                "capabilities": {
                    "tools": {},
                    "tasks": {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}},
                },
                "serverInfo": {"name": "task-server", "version": "1.0"},
            }
        if method == "ping":
            return {}
        if method == "tools/list":
            return {"tools": TOOLS}
        if method == "tools/call":
            args = params.get("arguments") or {}
            if "task" not in params:
                await asyncio.sleep(float(args.get("seconds", 0.5)))
                return {"content": [{"type": "text", "text": f"done: {args.get('label')}"}], "isError": False}
            tid = uuid.uuid4().hex
            ts = now()
            self.tasks[tid] = {
                "taskId": tid,
                "status": "working",
                "statusMessage": "started",
                "createdAt": ts,
                "lastUpdatedAt": ts,
                "ttl": params["task"].get("ttl", 60000),
                "pollInterval": 100,
            }
            self.done[tid] = asyncio.Event()
            self.runners[tid] = asyncio.get_running_loop().create_task(self.run_job(tid, args))
            return {"task": dict(self.tasks[tid])}
        if method == "tasks/list":
            return {"tasks": [dict(t) for t in self.tasks.values()]}
        tid = params.get("taskId")
        if tid not in self.tasks:
            raise LookupError("Failed to retrieve task: Task not found")
        task = self.tasks[tid]
        if method == "tasks/get":
            return dict(task)
        if method == "tasks/cancel":
            if task["status"] in ("completed", "failed", "cancelled"):
                raise LookupError(f"Cannot cancel task: already in terminal status '{task['status']}'")
            self.runners[tid].cancel()
            self.set_status(tid, "cancelled", "cancelled by the client")
            return dict(task)
        if method == "tasks/result":
            await self.done[tid].wait()
            result = self.results.get(tid) or {
                "content": [{"type": "text", "text": task["statusMessage"]}],
                "isError": True,
            }
            return {**result, "_meta": {"io.modelcontextprotocol/related-task": {"taskId": tid}}}
        raise LookupError(f"Method not found: {method}")


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, sys.stdout)
    server = Server(asyncio.StreamWriter(transport, protocol, None, loop))
    pending: set[asyncio.Task[None]] = set()
    while line := await reader.readline():
        msg = json.loads(line)
        if "method" in msg:
            t = loop.create_task(server.handle(msg))
            pending.add(t)
            t.add_done_callback(pending.discard)


if __name__ == "__main__":
    asyncio.run(main())
