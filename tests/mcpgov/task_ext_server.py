"""An SDK ``MCPServer`` with the 2026-07-28 tasks extension (``io.modelcontextprotocol/tasks``), for the
gateway's tasks tests, on stdio (default) or streamable HTTP (``--http PORT``).

Written with the SDK's own extension interface (``mcp.server.extension.Extension``: ``tasks/get``,
``tasks/update``, ``tasks/cancel`` as method bindings, the task creation as a ``tools/call`` interceptor);
the SDK 2.3 ships the interface but no tasks extension. ``job`` runs for ``seconds`` and answers
``done: <label>``. When the request declares the extension (per-request ``clientCapabilities``), the
server answers ``resultType: "task"`` at once and runs the job in the background; ``ask`` makes the task
stop half-way in ``input_required`` with one input request (``"elicit"``: a form elicitation, ``"sample"``:
a sampling request, ``"roots"``) until ``tasks/update`` answers it. Without the extension ``job`` is an
ordinary tool. Every request is appended to ``$TASK_SERVER_LOG`` (one JSON line: method, params) so a
test sees what reached the upstream.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import mcp_types as types
from mcp.server.extension import Extension, MethodBinding
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from pydantic import Field

TASKS = "io.modelcontextprotocol/tasks"
LOG = os.environ.get("TASK_SERVER_LOG")
TERMINAL = ("completed", "failed", "cancelled")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def record(method: str, params: Any) -> None:
    if LOG:
        with open(LOG, "a") as f:
            f.write(json.dumps({"method": method, "params": params}) + "\n")


class TaskParams(types.RequestParams):
    task_id: Annotated[str, Field(alias="taskId")]
    input_responses: Annotated[dict[str, Any] | None, Field(alias="inputResponses")] = None


def _questions(ask: str) -> dict[str, Any]:
    if ask == "elicit":
        return {
            "method": "elicitation/create",
            "params": {
                "mode": "form",
                "message": "Which colour?",
                "requestedSchema": {"type": "object", "properties": {"colour": {"type": "string"}}},
            },
        }
    if ask == "sample":
        return {
            "method": "sampling/createMessage",
            "params": {
                "messages": [{"role": "user", "content": {"type": "text", "text": "2+2?"}}],
                "maxTokens": 50,
            },
        }
    return {"method": "roots/list", "params": {}}


class Tasks(Extension):
    identifier = TASKS

    def __init__(self) -> None:
        self.tasks: dict[str, dict[str, Any]] = {}
        self.answers: dict[str, asyncio.Future[Any]] = {}
        self.runners: dict[str, asyncio.Task[None]] = {}

    def methods(self) -> list[MethodBinding]:
        return [
            MethodBinding("tasks/get", TaskParams, self.get),
            MethodBinding("tasks/update", TaskParams, self.update),
            MethodBinding("tasks/cancel", TaskParams, self.cancel),
        ]

    async def intercept_tool_call(self, params: types.CallToolRequestParams, ctx: Any, call_next: Any) -> Any:
        record("tools/call", params.model_dump(by_alias=True, mode="json", exclude_none=True))
        caps = ((ctx.meta or {}).get(types.CLIENT_CAPABILITIES_META_KEY) or {}) if ctx.meta else {}
        if TASKS not in (caps.get("extensions") or {}):
            return await call_next(ctx)
        args = params.arguments or {}
        tid = str(uuid.uuid4())
        task = {
            "taskId": tid,
            "status": "working",
            "statusMessage": "started",
            "createdAt": now(),
            "lastUpdatedAt": now(),
            "ttlMs": 60000,
            "pollIntervalMs": 100,
        }
        self.tasks[tid] = task
        self.runners[tid] = asyncio.get_running_loop().create_task(self.run(tid, args))
        return {"resultType": "task", **task}

    def _set(self, tid: str, **fields: Any) -> None:
        task = self.tasks[tid]
        if task["status"] in TERMINAL:
            return
        for key in ("inputRequests", "result", "error"):
            task.pop(key, None)
        task.update(fields, lastUpdatedAt=now())

    async def run(self, tid: str, args: dict[str, Any]) -> None:
        seconds = float(args.get("seconds", 0.3))
        await asyncio.sleep(seconds / 2)
        said = ""
        if ask := args.get("ask"):
            key = f"q-{uuid.uuid4().hex[:8]}"
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self.answers[f"{tid}/{key}"] = fut
            self._set(
                tid, status="input_required", statusMessage="waiting", inputRequests={key: _questions(ask)}
            )
            said = f" ({json.dumps(await fut, sort_keys=True)})"
            self._set(tid, status="working", statusMessage="answered")
        await asyncio.sleep(seconds / 2)
        if args.get("fail"):
            self._set(tid, status="failed", error={"code": -32603, "message": "the job broke"})
            return
        text = f"done: {args.get('label', '')}{said}" + "x" * int(args.get("pad", 0))
        # the shape the tool answers when called plainly (its output schema: {"result": str})
        result = {"content": [{"type": "text", "text": text}], "structuredContent": {"result": text}}
        self._set(tid, status="completed", statusMessage="done", result=result)

    def _task(self, params: TaskParams) -> dict[str, Any]:
        task = self.tasks.get(params.task_id)
        if task is None:
            raise MCPError(types.INVALID_PARAMS, "Task not found")
        return task

    async def get(self, ctx: Any, params: TaskParams) -> dict[str, Any]:
        record("tasks/get", {"taskId": params.task_id})
        return dict(self._task(params))

    async def update(self, ctx: Any, params: TaskParams) -> dict[str, Any]:
        record("tasks/update", {"taskId": params.task_id, "inputResponses": params.input_responses})
        self._task(params)
        for key, answer in (params.input_responses or {}).items():
            fut = self.answers.pop(f"{params.task_id}/{key}", None)
            if fut is not None and not fut.done():
                fut.set_result(answer)
        return {}

    async def cancel(self, ctx: Any, params: TaskParams) -> dict[str, Any]:
        record("tasks/cancel", {"taskId": params.task_id})
        self._task(params)
        runner = self.runners.get(params.task_id)
        if runner is not None:
            runner.cancel()
        self._set(params.task_id, status="cancelled", statusMessage="cancelled on request")
        return {}


server = MCPServer("task-ext", extensions=[Tasks()])


@server.tool()
async def job(label: str, seconds: float = 0.3, ask: str = "", fail: bool = False, pad: int = 0) -> str:
    """Runs for a while and says it is done."""
    await asyncio.sleep(seconds)
    return f"done: {label}" + "x" * pad


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run("stdio")
