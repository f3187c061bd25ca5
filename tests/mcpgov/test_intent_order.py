"""A call reaches its upstream only after its INTENT's ``fdatasync`` returned (default durability).

The gateway runs under ``held_sync.py``, which holds every ``fdatasync`` of the gateway process while a
file says so; the upstream (``record_server.py``) writes down each call it receives. With the sync held,
the INTENT is in the spool but the upstream must not have the call; once released, it gets it.
"""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters

from mcpgov.audit import read_events
from tests.mcpgov.conftest import PY, ROOT

pytestmark = [pytest.mark.slow]

HELD_SYNC = ROOT / "tests" / "mcpgov" / "held_sync.py"
RECORD = ROOT / "tests" / "mcpgov" / "record_server.py"


def record_world(world, log: Path) -> None:
    doc = world.doc()
    doc["roles"]["code_agent"]["allowed_servers"].append("rec")
    doc["servers"]["rec"] = {
        "category": "other",
        "transport": "stdio",
        "command": PY,
        "args": [str(RECORD), str(log)],
        "tools": {"record": {"class": "read"}},
    }
    doc["environment_policy"]["bindings"]["rec"] = {"target": "local", "permission": "read_only"}
    world.write_bundle(doc)
    world.write_config(("time",), extra={"rec": {"command": PY, "args": [str(RECORD), str(log)]}})


def received(log: Path) -> dict[int, float]:
    if not log.exists():
        return {}
    return {int(n): float(t) for n, t in (line.split() for line in log.read_text().splitlines())}


async def wait_for(check, what: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await anyio.sleep(0.01)


async def _progress(progress: float, total: float | None, message: str | None) -> None:
    pass


@pytest.mark.parametrize(
    ("fast_path", "progress"),
    [(True, None), (False, None), (True, _progress)],
    # with a progress token the call takes the SDK path and the upstream's SDK session, not the raw channel
    ids=["fast-path", "sdk-path", "upstream-sdk-session"],
)
def test_no_call_reaches_the_upstream_before_its_intent_sync_returned(world, fast_path, progress):
    log = world.base / "received.txt"
    gate = world.base / "gate"
    gate.mkdir()
    record_world(world, log)
    params = StdioServerParameters(
        command=PY,
        args=[str(HELD_SYNC), str(gate), *world.gateway_args()],
        cwd=str(ROOT),
        env={"MCPGOV_LOG_LEVEL": "WARNING", "MCPGOV_FAST_PATH": "1" if fast_path else "0"},
    )

    def intent_written() -> bool:
        return any(
            ev["phase"] == "intent" and ev["arguments"] == {"n": 2}
            for f in world.spool.glob("*.jsonl")
            for _, ev in read_events(f)[0]
        )

    async def scenario() -> tuple[float, str]:
        async with Client(params, mode="legacy") as c:
            first = await c.call_tool("rec__record", {"n": 1})  # the session and its spool exist now
            assert not first.is_error, first
            (gate / "hold").touch()
            answer: list = []

            async def second() -> None:
                answer.append(await c.call_tool("rec__record", {"n": 2}, progress_callback=progress))

            async with anyio.create_task_group() as tg:
                tg.start_soon(second)
                await wait_for(intent_written, "the second call's INTENT in the spool")
                await wait_for((gate / "entered").exists, "a held fdatasync")
                # the disk has not confirmed the INTENT: however long we look, the upstream has no call 2
                with anyio.move_on_after(1.0):
                    await wait_for(lambda: 2 in received(log), "call 2 at the upstream (must not happen)")
                assert 2 not in received(log), "forwarded before its INTENT's fdatasync returned"
                assert not answer
                released = time.time()
                (gate / "release").touch()
            [result] = answer
            assert not result.is_error, result
            return released, result.content[0].text

    released, text = anyio.run(scenario)
    assert text == "recorded 2"
    assert received(log)[2] >= released  # it arrived after the sync was let go, never before
    returned = [float(t) for t in (gate / "returned").read_text().split()]
    assert min(returned) <= received(log)[2]  # ... and after a sync returned
