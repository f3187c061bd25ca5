"""The gateway's sealed ``requestState`` (``mcpgov.mrtr.Rounds``), without I/O: what it binds and refuses."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from mcpgov.mrtr import Rounds, StateRefused, arguments_digest


@dataclass
class Sess:
    id: str


ARGS = {"question": "a", "n": 1}


def test_a_state_opens_once_for_its_session_tool_and_arguments() -> None:
    rounds = Rounds(gateway=None)  # type: ignore[arg-type]
    token = rounds.seal(Sess("s1"), "srv__tool", ARGS, kind="upstream", up="opaque")
    claims = rounds.open(
        Sess("s1"), "srv__tool", {"n": 1, "question": "a"}, token
    )  # key order does not matter
    assert claims["up"] == "opaque" and claims["kind"] == "upstream"
    with pytest.raises(StateRefused, match="already redeemed"):
        rounds.open(Sess("s1"), "srv__tool", ARGS, token)


@pytest.mark.parametrize(
    ("sess", "name", "args", "why"),
    [
        ("s2", "srv__tool", ARGS, "another governance session"),
        ("s1", "srv__other", ARGS, "another tool"),
        ("s1", "srv__tool", {"question": "b", "n": 1}, "other arguments"),
    ],
)
def test_a_state_is_refused_elsewhere(sess: str, name: str, args: dict, why: str) -> None:
    rounds = Rounds(gateway=None)  # type: ignore[arg-type]
    token = rounds.seal(Sess("s1"), "srv__tool", ARGS, kind="upstream")
    with pytest.raises(StateRefused, match=why):
        rounds.open(Sess(sess), name, args, token)
    assert rounds.open(Sess("s1"), "srv__tool", ARGS, token)  # a refused attempt does not burn it


def test_tampered_foreign_and_expired_states_are_refused() -> None:
    rounds, other = Rounds(gateway=None), Rounds(gateway=None)  # type: ignore[arg-type]
    token = rounds.seal(Sess("s1"), "t", ARGS)
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    for bad in (flipped, other.seal(Sess("s1"), "t", ARGS), "v1.garbage", "", None, 12):
        with pytest.raises(StateRefused):
            rounds.open(Sess("s1"), "t", ARGS, bad)
    expired = Rounds(gateway=None, ttl=-1.0)  # type: ignore[arg-type]
    with pytest.raises(StateRefused, match="expired"):
        expired.open(Sess("s1"), "t", ARGS, expired.seal(Sess("s1"), "t", ARGS))


def test_the_agent_cannot_read_the_upstreams_state_and_the_digest_is_canonical() -> None:
    rounds = Rounds(gateway=None)  # type: ignore[arg-type]
    token = rounds.seal(Sess("s1"), "t", ARGS, up="secret-upstream-state")
    assert "secret" not in token
    assert arguments_digest({"a": 1, "b": 2}) == arguments_digest({"b": 2, "a": 1})
    assert arguments_digest(None) == arguments_digest({})
