"""The gateway's sealed ``requestState`` (``mcpgov.mrtr.Rounds``) and its redeemed-state record, without I/O:
what a state binds and what is refused."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from mcpgov.mrtr import RedeemedStates, Rounds, StateRefused, arguments_digest


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


@pytest.mark.parametrize(
    ("method", "name", "args"),
    [
        ("tools/call", "srv+mrtr://greeting/bob", {"uri": "mrtr://greeting/bob"}),  # a call
        ("prompts/get", "srv+mrtr://greeting/bob", {"uri": "mrtr://greeting/bob"}),  # a prompt
        ("resources/read", "srv+mrtr://greeting/eve", {"uri": "mrtr://greeting/eve"}),  # another URI
    ],
)
def test_a_reads_state_opens_only_for_its_method_and_uri(method: str, name: str, args: dict) -> None:
    rounds = Rounds(gateway=None)  # type: ignore[arg-type]
    uri, target = {"uri": "mrtr://greeting/bob"}, "srv+mrtr://greeting/bob"
    token = rounds.seal(Sess("s1"), target, uri, method="resources/read", kind="read")
    with pytest.raises(StateRefused, match="minted for"):
        rounds.open(Sess("s1"), name, args, token, method=method)
    assert rounds.open(Sess("s1"), target, uri, token, method="resources/read")["kind"] == "read"
    with pytest.raises(StateRefused, match="already redeemed"):
        rounds.open(Sess("s1"), target, uri, token, method="resources/read")


def test_another_gateway_process_with_the_same_key_refuses_the_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """MCPGOV_STATE_KEY shared: the seal opens, but the governance session id is the minting process's own."""
    monkeypatch.setenv("MCPGOV_STATE_KEY", "k" * 32)
    here, there = Rounds(gateway=None), Rounds(gateway=None)  # type: ignore[arg-type]
    token = here.seal(Sess("session-of-process-1"), "t", ARGS)
    with pytest.raises(StateRefused, match="another governance session"):
        there.open(Sess("session-of-process-2"), "t", ARGS, token)


def test_the_redeemed_record_forgets_in_expiry_order_and_never_lets_a_dropped_state_in() -> None:
    record = RedeemedStates(limit=3)
    assert record.redeem("a", 10.0, 0.0) and record.redeem("b", 20.0, 0.0) and record.redeem("c", 30.0, 0.0)
    assert not record.redeem("b", 20.0, 5.0)  # a replay within its lifetime
    # full: the entry closest to expiry leaves, and every state expiring no later is refused from now on
    assert record.redeem("d", 40.0, 5.0) and len(record) == 3
    assert record.floor == 10.0
    assert not record.live(10.0, 5.0) and record.live(20.0, 5.0)
    # expired entries leave by themselves as time passes (the seal refuses those states anyway)
    assert record.redeem("e", 50.0, 25.0) and len(record) == 3  # b expired at 20: dropped, not c
    assert record.floor == 10.0
    assert not record.redeem("c", 30.0, 25.0) and not record.redeem("d", 40.0, 25.0)
    assert not record.live(30.0, 31.0)


def test_a_flood_of_redeemed_states_keeps_the_record_bounded() -> None:
    record = RedeemedStates(limit=100)
    for i in range(10_000):
        assert record.redeem(f"n{i}", 1000.0 + i, 0.0)
    assert len(record) == 100
    # the states still remembered cannot be redeemed again; all older ones count as expired
    assert not record.redeem("n9999", 10_999.0, 1.0)
    assert not record.live(1000.0 + 9899, 1.0) and record.live(1000.0 + 9900, 1.0)


def test_a_state_older_than_the_records_floor_is_refused_as_expired() -> None:
    rounds = Rounds(gateway=None)  # type: ignore[arg-type]
    old = rounds.seal(Sess("s1"), "t", ARGS)
    rounds.redeemed.floor = time.time() + rounds.ttl + 1  # as after a flood
    with pytest.raises(StateRefused, match="expired"):
        rounds.open(Sess("s1"), "t", ARGS, old)
