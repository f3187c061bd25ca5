"""The gateway's shadow evaluation (mcpgov/shadow.py), no Django: a shadow bundle is verified against the
pinned keys under its own JWS type, decided with decide() on its own per-session state, and never
touches the live session; a live bundle offered as a shadow, another team's shadow, or a shadow offered
to the live path are refused."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import anyio
import pytest

from mcpgov.bundle import Bundle
from mcpgov.bundle_manager import BundleManager
from mcpgov.decision import ToolCall
from mcpgov.session import SessionState, SessionStatus
from mcpgov.shadow import Shadow
from mcpgov.verify import SHADOW_JWS_TYPE, MalformedBundle, parse_jwks, sign_bundle
from tests.mcpgov.helpers import Signer, bundle_doc, iso


class AnsweringPortal:
    """Answers GET /api/v1/bundle/shadow/ with the given (status, jws, etag) in turn, as PortalClient does."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.asked_with: list[str | None] = []

    async def fetch_shadow(self, *, etag):
        self.asked_with.append(etag)
        return self.answers.pop(0)


def fresh_doc(**overrides):
    now = datetime.now(UTC)
    return bundle_doc(
        issued_at=iso(now - timedelta(minutes=1)), expires_at=iso(now + timedelta(hours=1)), **overrides
    )


def read_only_filesystem():
    doc = fresh_doc()
    doc["environment_policy"]["bindings"]["filesystem"]["permission"] = "read_only"
    return doc


def shadow_jws(signer: Signer, doc) -> str:
    return sign_bundle(
        Bundle.model_validate(doc).canonical_bytes(), signer.key, signer.kid, typ=SHADOW_JWS_TYPE
    )


@pytest.fixture
def signer():
    return Signer()


@pytest.fixture
def bundles(signer):
    manager = BundleManager(parse_jwks(signer.jwks()), environment="development", team="acme")
    manager.install(signer.sign_doc(fresh_doc()), source="test")
    return manager


def refresh(shadow: Shadow) -> bool:
    return anyio.run(shadow.refresh)


def test_shadow_verdicts_follow_their_own_state_and_leave_the_live_session_alone(signer, bundles):
    portal = AnsweringPortal((200, shadow_jws(signer, read_only_filesystem()), '"e1"'), (304, None, '"e1"'))
    shadow = Shadow(bundles, "code_agent", portal)
    assert refresh(shadow) is True and shadow.verified.version == 3
    live = SessionState(session_id="s1", role="code_agent", read_only=False)
    now = time.time()
    read = ToolCall("filesystem", "read_text_file", {"path": "/tmp/work/a"})
    write = ToolCall("filesystem", "write_file", {"path": "/tmp/work/a", "content": "x"})
    assert shadow.verdict(live, read, now, forwarded=True) == {
        "decision": "allow",
        "trigger": None,
        "bundle_version": 3,
    }
    assert shadow.verdict(live, write, now, forwarded=True)["trigger"] == "write_in_read_session"
    after = shadow.verdict(live, read, now, forwarded=True)
    assert (after["decision"], after["trigger"]) == ("refuse", "session_halted")
    assert live.state == SessionStatus.ACTIVE and live.total_calls == 0  # the live session is untouched
    # another session starts with its own shadow state
    other = SessionState(session_id="s2", role="code_agent", read_only=False)
    assert shadow.verdict(other, read, now, forwarded=True)["decision"] == "allow"
    # unchanged on the portal: 304 with the etag, nothing reset
    assert refresh(shadow) is False and portal.asked_with == [None, '"e1"']
    assert shadow.verdict(live, read, now, forwarded=True)["trigger"] == "session_halted"


def test_a_live_bundle_another_teams_shadow_and_a_drop_give_no_verdicts(signer, bundles):
    live_jws = signer.sign_doc(read_only_filesystem())  # signed as a live bundle: not a shadow
    portal = AnsweringPortal(
        (200, live_jws, '"l"'),
        (200, shadow_jws(signer, fresh_doc(team="globex")), '"g"'),
        (200, shadow_jws(signer, read_only_filesystem()), '"s"'),
        (404, None, None),
    )
    shadow = Shadow(bundles, "code_agent", portal)
    state = SessionState(session_id="s", role="code_agent", read_only=False)
    call = ToolCall("filesystem", "write_file", {"path": "/tmp/work/a"})
    for _ in range(2):  # refused: the wrong type, then the wrong team
        refresh(shadow)
        assert shadow.verdict(state, call, time.time(), forwarded=True) is None
    refresh(shadow)
    assert shadow.verdict(state, call, time.time(), forwarded=True)["decision"] == "refuse"
    assert refresh(shadow) is True  # dropped by the portal
    assert shadow.verdict(state, call, time.time(), forwarded=True) is None


def test_the_live_path_never_installs_a_shadow(signer, bundles):
    with pytest.raises(MalformedBundle, match="typ must be mcpgov-bundle"):
        bundles.install(shadow_jws(signer, read_only_filesystem()), source="portal")
    assert bundles.current.bundle.environment_policy.bindings["filesystem"].permission == "read_write"
