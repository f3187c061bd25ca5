"""Signed flags updates (mcpgov.flags/1): verified with the pinned keys like a bundle, every kind of
tampering refused with its own code, and applied by the bundle manager to the enforced policy at once."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest

from mcpgov.bundle import FlagsUpdate, Trigger, canonical_json
from mcpgov.bundle_manager import BundleManager
from mcpgov.decision import ToolCall, Verdict, compile_policy, decide
from mcpgov.session import SessionState
from mcpgov.verify import (
    FLAGS_JWS_TYPE,
    JWS_TYPE,
    SHADOW_JWS_TYPE,
    BadSignature,
    BundleExpired,
    BundleState,
    MalformedBundle,
    ReplayedBundle,
    SchemaInvalid,
    SupersededUpdate,
    UnknownKeyId,
    WrongEnvironment,
    WrongTeam,
    b64url_decode,
    b64url_encode,
    load_jwks,
    sign_bundle,
    verify_bundle,
    verify_flags_update,
)
from tests.mcpgov.helpers import NOW, Signer, flags_doc, iso

CALL = ToolCall("time", "get_current_time", {"timezone": "UTC"})


@pytest.fixture
def signer():
    return Signer()


@pytest.fixture
def keys(signer, tmp_path):
    return load_jwks(signer.write_jwks(tmp_path / "keys.json"))


def verify(jws, keys, **kwargs):
    kwargs.setdefault("team", "acme")
    kwargs.setdefault("environment", "development")
    kwargs.setdefault("now", NOW)
    return verify_flags_update(jws, keys, **kwargs)


def test_valid_update_verifies_with_its_own_type(signer, keys):
    jws = signer.sign_flags()
    v = verify(jws, keys, bundle_version=3)
    assert v.revision == 1 and v.kid == signer.kid and v.update.bundle_version == 3
    assert [(f.name, f.enabled) for f in v.update.flags] == [("mcp.time.all", False)]
    header = json.loads(b64url_decode(jws.split(".")[0]))
    assert header == {"alg": "EdDSA", "kid": signer.kid, "typ": "mcpgov-flags+jws"}


def test_an_update_is_never_a_bundle_nor_a_shadow_and_they_are_never_an_update(signer, keys):
    update = signer.sign_flags()
    for typ in (JWS_TYPE, SHADOW_JWS_TYPE):
        with pytest.raises(MalformedBundle, match="typ must be"):
            verify_bundle(update, keys, now=NOW, typ=typ)
    with pytest.raises(MalformedBundle, match="typ must be mcpgov-flags"):
        verify(signer.sign(), keys)  # a bundle offered as an update
    # the update's payload signed as a bundle: refused by type before anything else
    payload = FlagsUpdate.model_validate(flags_doc()).canonical_bytes()
    with pytest.raises(MalformedBundle, match="typ must be mcpgov-flags"):
        verify(sign_bundle(payload, signer.key, signer.kid), keys)


def test_one_byte_of_payload_changed_is_bad_signature(signer, keys):
    h, p, s = signer.sign_flags().split(".")
    payload = b64url_decode(p).replace(b'"enabled":false', b'"enabled":true ')
    assert payload != b64url_decode(p)
    with pytest.raises(BadSignature):
        verify(f"{h}.{b64url_encode(payload)}.{s}", keys)


def test_signature_of_another_key_under_the_pinned_kid_is_bad_signature(keys):
    with pytest.raises(BadSignature):
        verify(Signer(kid="test-key-1").sign_flags(), keys)


def test_unknown_kid_and_malformed_envelopes(signer, keys):
    with pytest.raises(UnknownKeyId):
        verify(Signer(kid="attacker").sign_flags(), keys)
    h, p, s = signer.sign_flags().split(".")
    for bad in (f"{h}.{p}", f"{h}.{p}.{s}.x", f"{h}.{p}.{s}==", "", f"{h}.@@.{s}"):
        with pytest.raises(MalformedBundle):
            verify(bad, keys)
    for header in (
        {"alg": "none", "kid": signer.kid, "typ": FLAGS_JWS_TYPE},
        {"alg": "EdDSA", "kid": signer.kid, "typ": FLAGS_JWS_TYPE, "crit": ["exp"]},
        {"alg": "EdDSA", "typ": FLAGS_JWS_TYPE},
    ):
        with pytest.raises(MalformedBundle):
            verify(f"{b64url_encode(canonical_json(header))}.{p}.{s}", keys)


def test_a_signed_payload_that_is_not_a_flags_update_is_schema_invalid(signer, keys):
    for payload in (
        canonical_json({**flags_doc(), "extra": 1}),  # unknown key: fail closed
        canonical_json({**flags_doc(), "revision": 0}),
        canonical_json({**flags_doc(), "schema": "mcpgov.bundle/1"}),
        canonical_json({**flags_doc(), "expires_at": flags_doc()["issued_at"]}),
        b"not json",
    ):
        with pytest.raises(SchemaInvalid):
            verify(sign_bundle(payload, signer.key, signer.kid, typ=FLAGS_JWS_TYPE), keys)


def test_wrong_team_wrong_environment_expired(signer, keys):
    with pytest.raises(WrongTeam):
        verify(signer.sign_flags(team="other"), keys)
    with pytest.raises(WrongEnvironment):
        verify(signer.sign_flags(environment="production"), keys)
    with pytest.raises(BundleExpired):
        verify(signer.sign_flags(), keys, now=NOW + timedelta(hours=2))


def test_older_or_altered_replays_are_refused_and_a_newer_bundle_supersedes(signer, keys, tmp_path):
    state = BundleState(tmp_path / "state.json")
    r2 = verify(signer.sign_flags(revision=2), keys, state=state)
    state.accept_flags(r2.update, r2.payload_sha256)
    with pytest.raises(ReplayedBundle, match="older than r2"):
        verify(signer.sign_flags(revision=1), keys, state=state)
    with pytest.raises(ReplayedBundle, match="different content"):
        verify(signer.sign_flags(revision=2, flags=[]), keys, state=state)
    assert verify(signer.sign_flags(revision=2), keys, state=state).revision == 2  # the same again: fine
    # the state survives a restart (a fresh BundleState on the same file)
    with pytest.raises(ReplayedBundle):
        verify(signer.sign_flags(revision=1), keys, state=BundleState(tmp_path / "state.json"))
    with pytest.raises(SupersededUpdate):
        verify(signer.sign_flags(revision=3, bundle_version=3), keys, state=state, bundle_version=4)
    # an update for a newer bundle than the gateway's applies (its flags are the newest state)
    assert verify(signer.sign_flags(revision=3, bundle_version=5), keys, bundle_version=4).revision == 3


# --- the bundle manager applies it ----------------------------------------------------------------


def live(**overrides):
    now = datetime.now(UTC)
    return {
        "issued_at": iso(now - timedelta(minutes=1)),
        "expires_at": iso(now + timedelta(hours=1)),
        **overrides,
    }


def verdict(verified) -> str:
    policy = compile_policy(verified.bundle, "code_agent")
    decision = decide(
        policy, SessionState(session_id="s", role="code_agent"), CALL, datetime.now(UTC).timestamp()
    )
    return decision.trigger or decision.verdict


@pytest.fixture
def manager(keys, tmp_path):
    return BundleManager(keys, environment="development", state_dir=tmp_path / "state")


def test_an_update_switches_the_enforced_flags_at_once_on_the_same_bundle(signer, manager, caplog):
    manager.install(signer.sign(**live()), source="test")
    seen = []
    manager.listeners.append(seen.append)
    assert verdict(manager.enforced) == Verdict.ALLOW
    with caplog.at_level(logging.WARNING, "mcpgov.portal"):
        manager.install_flags(signer.sign_flags(**live()), source="test")
    assert verdict(manager.enforced) == Trigger.KILL_SWITCH_FLAG
    assert seen == [manager.enforced] and manager.enforced.flags_revision == 1
    # the signed bundle is the same one: version, JWS and hash
    assert manager.enforced.version == manager.current.version == 3
    assert manager.enforced.sha256 == manager.current.sha256 and manager.current.bundle.flags == ()
    assert "applying flags update r1" in caplog.text and "mcp.time.all" in caplog.text
    # on again (revision 2, every flag's state): allowed again
    manager.install_flags(signer.sign_flags(**live(revision=2, flags=[])), source="test")
    assert verdict(manager.enforced) == Verdict.ALLOW


@pytest.mark.parametrize(
    "tamper",
    ["signature", "typ", "team", "environment", "expired", "replayed", "kid", "schema"],
)
def test_a_bad_update_is_refused_loudly_and_changes_nothing(signer, manager, caplog, tamper):
    manager.install(signer.sign(**live()), source="test")
    manager.install_flags(signer.sign_flags(**live(revision=2, flags=[])), source="test")
    before = manager.enforced
    off = live(revision=3)
    jws = {
        "signature": lambda: Signer(kid=signer.kid).sign_flags(**off),
        "typ": lambda: sign_bundle(
            FlagsUpdate.model_validate(flags_doc(**off)).canonical_bytes(), signer.key, signer.kid
        ),
        "team": lambda: signer.sign_flags(**off, team="other"),
        "environment": lambda: signer.sign_flags(**off, environment="staging"),
        "expired": lambda: signer.sign_flags(
            revision=3,
            issued_at=iso(datetime.now(UTC) - timedelta(hours=2)),
            expires_at=iso(datetime.now(UTC) - timedelta(hours=1)),
        ),
        "replayed": lambda: signer.sign_flags(**live(revision=1)),
        "kid": lambda: Signer(kid="stranger").sign_flags(**off),
        "schema": lambda: sign_bundle(
            canonical_json({**flags_doc(**off), "flags": [{"name": "x"}]}),
            signer.key,
            signer.kid,
            typ=FLAGS_JWS_TYPE,
        ),
    }[tamper]()
    seen = []
    manager.listeners.append(seen.append)
    with caplog.at_level(logging.ERROR, "mcpgov.portal"), pytest.raises(Exception) as exc:
        manager.install_flags(jws, source="portal")
    assert manager.enforced is before and seen == []
    assert verdict(manager.enforced) == Verdict.ALLOW  # the kill switch of the bad update is not applied
    assert f"REJECTED flags update from portal: {exc.value.code}" in caplog.text


def test_a_newer_bundle_supersedes_the_update_an_older_one_keeps_it(signer, manager):
    manager.install(signer.sign(**live()), source="test")
    manager.install_flags(signer.sign_flags(**live(bundle_version=4)), source="test")
    manager.install(signer.sign(**live(version=4)), source="test")  # built before the update
    assert manager.flags is not None and verdict(manager.enforced) == Trigger.KILL_SWITCH_FLAG
    manager.install(signer.sign(**live(version=5)), source="test")  # built after: its own flags win
    assert manager.flags is None and manager.enforced is manager.current
    assert verdict(manager.enforced) == Verdict.ALLOW
    with pytest.raises(SupersededUpdate):
        manager.install_flags(signer.sign_flags(**live(revision=2, bundle_version=4)), source="test")


def test_a_restarted_gateway_keeps_the_kill_switch_and_refuses_its_replay(signer, keys, tmp_path):
    first = BundleManager(keys, environment="development", state_dir=tmp_path / "state")
    first.install(signer.sign(**live()), source="portal")
    first.install_flags(signer.sign_flags(**live(revision=2)), source="portal")
    again = BundleManager(keys, environment="development", state_dir=tmp_path / "state")
    again.load_cache()
    assert again.enforced.flags_revision == 2 and verdict(again.enforced) == Trigger.KILL_SWITCH_FLAG
    with pytest.raises(ReplayedBundle):
        again.install_flags(signer.sign_flags(**live(revision=1, flags=[])), source="portal")
    assert verdict(again.enforced) == Trigger.KILL_SWITCH_FLAG


# --- applied on the compiled policy: the same decisions as a full compile -----------------------------


def _flag(name, server, capability="all", enabled=False, constraints=()):
    return {
        "name": name,
        "server": server,
        "capability": capability,
        "enabled": enabled,
        "reason": f"{name} off",
        "constraints": [
            {"context_name": "role", "operator": op, "values": list(values)} for op, values in constraints
        ],
    }


FLAG_SETS = {
    "none": [],
    "global all": [_flag("mcp.all", None)],
    "global write only": [_flag("mcp.writes", None, "write")],
    "one server read": [_flag("mcp.filesystem.read", "filesystem", "read")],
    "one server write, another all": [
        _flag("mcp.filesystem.write", "filesystem", "write"),
        _flag("mcp.git.all", "git", "all"),
    ],
    "on only for docs_agent (IN)": [
        _flag("mcp.time.all", "time", enabled=True, constraints=[("IN", ["docs_agent"])])
    ],
    "off only for code_agent (NOT_IN)": [
        _flag("mcp.git.write", "git", "write", enabled=True, constraints=[("NOT_IN", ["code_agent"])])
    ],
    "a server the bundle does not have, and an enabled flag": [
        _flag("mcp.ghost.all", "ghost"),
        _flag("mcp.time.read", "time", "read", enabled=True),
    ],
    "every kind at once": [
        _flag(
            "mcp.time.read", "time", "read", enabled=True, constraints=[("IN", ["docs_agent", "code_agent"])]
        ),
        _flag("mcp.filesystem.all", "filesystem", enabled=True, constraints=[("NOT_IN", ["docs_agent"])]),
        _flag("mcp.git.write", "git", "write"),
        _flag("mcp.shell.all", "shell"),
        _flag("mcp.late", None, "read", enabled=True, constraints=[("IN", ["nobody"])]),
    ],
}
CALLS = [
    ToolCall(server, tool, {})
    for server, tools in {
        "time": ["get_current_time", "not_approved"],
        "filesystem": ["read_text_file", "write_file"],
        "git": ["git_status", "git_commit"],
        "shell": ["run"],
        "ghost": ["anything"],
    }.items()
    for tool in tools
] + [ToolCall("filesystem", "", method="resources/read", uri="file:///tmp/work/a")]


def _decisions(policy, role, now):
    out = []
    for call in CALLS:
        d = decide(policy, SessionState(session_id="s", role=role), call, now)
        out.append((call.server, call.tool, d.verdict, d.trigger, d.message, d.new_state))
    return out


@pytest.mark.parametrize("bundle_flags", ["none", "every kind at once"])
@pytest.mark.parametrize("update_flags", list(FLAG_SETS))
def test_an_update_on_the_compiled_policy_decides_as_a_full_compile(
    signer, manager, bundle_flags, update_flags
):
    """The flags swapped into the compiled policy (no recompile) give exactly the decisions of the same
    bundle compiled from scratch with the update's flags, for every role, server and kind of call."""
    from mcpgov.bundle import Bundle
    from mcpgov.decision import Policy, _flags_base
    from tests.mcpgov.helpers import bundle_doc

    manager.install(signer.sign(**live(flags=FLAG_SETS[bundle_flags])), source="test")
    roles = ["code_agent", "docs_agent", "undefined_agent"]
    for role in roles:  # compiled before the update arrives, as a running gateway's are
        compile_policy(manager.current.bundle, role)
    manager.install_flags(signer.sign_flags(**live(flags=FLAG_SETS[update_flags])), source="test")
    enforced = manager.enforced.bundle
    assert _flags_base(enforced) is manager.current.bundle  # the swap, not a recompile, was used
    full = Bundle.model_validate(bundle_doc(**live(flags=FLAG_SETS[update_flags])))
    assert full.flags == enforced.flags
    now = datetime.now(UTC).timestamp()
    for role in roles:
        swapped = compile_policy(enforced, role)
        assert swapped is not compile_policy(manager.current.bundle, role)
        assert _decisions(swapped, role, now) == _decisions(Policy(full, role), role, now), role


def test_a_policy_is_only_derived_from_a_bundle_differing_in_its_flags_alone(signer, manager):
    """A bundle that is not the flags-only copy it claims to be (another field changed) is compiled in full."""
    from mcpgov.decision import _flags_base, with_flags

    manager.install(signer.sign(**live()), source="test")
    base = manager.current.bundle
    derived = with_flags(base, ())
    assert _flags_base(derived) is base
    other = with_flags(base, ())
    object.__setattr__(other, "roles", {})  # not possible through the API; the check must still hold
    assert _flags_base(other) is None
    assert compile_policy(other, "code_agent").rules["time"].role_violation is not None
