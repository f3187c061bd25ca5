"""A forwarded call's RESULT event: its result text and one-line summary are redacted, short or long."""

from __future__ import annotations

import anyio
import pytest
from mcp import Client

from mcpgov.redact import REDACTED
from tests.mcpgov.test_intent_order import record_world

pytestmark = [pytest.mark.slow]

SECRET = "ghp_abcdefghijklmnopqrstuvwxyz0123456789"
SHORT = f"token {SECRET} done"  # one line, under the summary's 200 characters: the summary is the text
# the summary is the first 200 characters on one line; the secret after them is only in the text
LONG = f"first {SECRET}\n" + "x" * 250 + f"\nlast sk-{'a' * 30}"


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "sdk-path"])
def test_result_text_and_summary_are_redacted(world, fast_path):
    record_world(world, world.base / "received.txt")

    async def scenario() -> list[str]:
        async with Client(world.gateway(fast_path=fast_path), mode="legacy") as c:
            out = []
            for n, text in enumerate((SHORT, LONG)):
                result = await c.call_tool("rec__record", {"n": n, "echo": text})
                assert not result.is_error, result
                out.append(result.content[0].text)
            return out

    answers = anyio.run(scenario)
    assert answers == [SHORT, LONG]  # the agent gets the upstream's answer unchanged
    results = [e for e in world.events() if e["phase"] == "result"]
    short, long = results
    assert short["result"]["text"] == short["result_summary"] == f"token {REDACTED} done"
    assert long["result"]["text"] == LONG.replace(SECRET, REDACTED).replace(f"sk-{'a' * 30}", REDACTED)
    assert long["result_summary"] == (f"first {REDACTED} " + "x" * 250)[: 200 - len(SECRET) + len(REDACTED)]
    for event in results + [e for e in world.events() if e["phase"] == "intent"]:
        assert SECRET not in str(event) and "sk-aaaa" not in str(event)
