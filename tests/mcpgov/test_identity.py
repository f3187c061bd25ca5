"""The agent token verifier: a verified signature is remembered; so is the identity it gave against one
immutable snapshot of the bundle's agents (the gateway's), never against a list that may change."""

from __future__ import annotations

import json
import time
import uuid

import jwt
import pytest

from mcpgov.bundle import AgentSpec
from mcpgov.identity import AgentVerifier, PinnedKeys, TokenRejected, token_digest
from tests.mcpgov.helpers import Signer

ISSUER = "https://portal.example"
RESOURCE = "https://gw.example/mcp"


class World:
    def __init__(self, tmp_path) -> None:
        self.signer = Signer()
        self.keys_path = self.signer.write_jwks(tmp_path / "keys.json")
        self.agents = [{"id": "7", "slug": "bot", "roles": ["dev"], "environments": ["development"]}]
        self.now = time.time()
        self.verifier = AgentVerifier(
            keys=PinnedKeys(self.keys_path, {self.signer.kid: self.signer.public_key}),
            issuer=ISSUER,
            resource=RESOURCE,
            team=lambda: "acme",
            agents=lambda: self.agents,
            clock=lambda: self.now,
        )

    def token(self, signer: Signer | None = None, **claims) -> str:
        signer = signer or self.signer
        now = int(self.now)
        body = {
            "iss": ISSUER,
            "aud": RESOURCE,
            "sub": "agent:7",
            "team": "acme",
            "roles": ["dev"],
            "environments": ["development"],
            "iat": now,
            "exp": now + 600,
            "jti": uuid.uuid4().hex,
            **claims,
        }
        return jwt.encode(body, signer.key, algorithm="EdDSA", headers={"kid": signer.kid, "typ": "at+jwt"})


@pytest.fixture
def world(tmp_path) -> World:
    return World(tmp_path)


def test_a_remembered_token_is_still_refused_once_revoked_or_expired(world):
    token = world.token()
    first = world.verifier.verify(token)
    assert world.verifier.verify(token) == first and first.roles == ("dev",)  # the second from memory
    world.agents = [{**world.agents[0], "revoked_jti": [first.jti]}]  # a new bundle revokes the token
    with pytest.raises(TokenRejected) as exc:
        world.verifier.verify(token)
    assert exc.value.code == "token_revoked"
    other = world.token()
    world.verifier.verify(other)
    world.now += 3600  # past its expiry (and the leeway)
    with pytest.raises(TokenRejected) as exc:
        world.verifier.verify(other)
    assert exc.value.code == "expired"


def test_a_key_rotated_out_of_the_pinned_file_refuses_a_remembered_token(world):
    token = world.token()
    world.verifier.verify(token)
    successor = Signer(kid=world.signer.kid)  # the same kid, another key: the old one is no longer pinned
    world.keys_path.write_text(json.dumps(successor.jwks()) + " ", encoding="utf-8")  # size changes too
    with pytest.raises(TokenRejected) as exc:
        world.verifier.verify(token)
    assert exc.value.code == "bad_signature"
    assert world.verifier.verify(world.token(successor)).id == "7"


def test_a_forged_signature_is_never_taken_from_memory(world):
    token = world.token()
    world.verifier.verify(token)
    head, body, sig = token.split(".")
    forged = f"{head}.{body}.{sig[:-4]}{'AAAA' if sig[-4:] != 'AAAA' else 'BBBB'}"
    with pytest.raises(TokenRejected) as exc:
        world.verifier.verify(forged)
    assert exc.value.code in ("bad_signature", "malformed")
    attacker = Signer(kid=world.signer.kid)
    with pytest.raises(TokenRejected) as exc:
        world.verifier.verify(world.token(attacker))
    assert exc.value.code == "bad_signature"


def test_memory_is_bounded(world, monkeypatch):
    monkeypatch.setattr("mcpgov.identity.VERIFIED_TOKENS_KEPT", 8)
    tokens = [world.token() for _ in range(12)]
    for token in tokens:
        world.verifier.verify(token)
    remembered = world.verifier._verified
    assert len(remembered) == 8 and token_digest(tokens[0]) not in remembered
    assert (
        token_digest(tokens[-1]) in remembered and tokens[-1] not in remembered
    )  # the hash, never the token
    assert world.verifier.verify(tokens[0]).id == "7"  # forgotten: verified again from scratch


def snapshot(**fields) -> tuple[AgentSpec, ...]:
    """The agents of one bundle as the gateway holds them: a tuple of frozen specs (a new bundle, a new one)."""
    spec = {"id": "7", "slug": "bot", "roles": ["dev"], "environments": ["development"], **fields}
    return (AgentSpec.model_validate(spec),)


def test_an_identity_is_remembered_against_one_bundle_snapshot_only(world):
    world.agents = snapshot()
    token = world.token()
    first = world.verifier.verify(token)
    assert world.verifier.verify(token) is first  # from memory: the same snapshot, team, key and window
    world.agents = snapshot(revoked_jti=[first.jti])  # a new bundle revokes the token: a new object
    with pytest.raises(TokenRejected) as exc:
        world.verifier.verify(token)
    assert exc.value.code == "token_revoked"
    world.agents = snapshot()
    world.verifier.verify(token)
    world.agents = snapshot(revoked=True)  # the agent revoked
    with pytest.raises(TokenRejected) as exc:
        world.verifier.verify(token)
    assert exc.value.code == "agent_revoked"
    world.agents = snapshot(roles=[])  # the bundle narrows the agent's roles: the narrower identity
    assert world.verifier.verify(token).roles == ()


def test_a_remembered_identity_still_expires_and_follows_the_team_and_the_keys(world):
    world.agents = snapshot()
    token = world.token()
    world.verifier.verify(token)
    world.now += 600 + 61  # past its expiry and the leeway, the same snapshot
    with pytest.raises(TokenRejected) as exc:
        world.verifier.verify(token)
    assert exc.value.code == "expired"
    world.now -= 661
    assert world.verifier.verify(token).id == "7"
    world.verifier.team = lambda: "other"  # the gateway's bundle now belongs to another team
    with pytest.raises(TokenRejected) as exc:
        world.verifier.verify(token)
    assert exc.value.code == "wrong_team"
    world.verifier.team = lambda: "acme"
    world.verifier.verify(token)
    successor = Signer(kid=world.signer.kid)  # the key rotated out of the pinned file
    world.keys_path.write_text(json.dumps(successor.jwks()) + " ", encoding="utf-8")
    with pytest.raises(TokenRejected) as exc:
        world.verifier.verify(token)
    assert exc.value.code == "bad_signature"


def test_agents_that_may_change_in_place_are_never_remembered_against(world):
    token = world.token()
    world.verifier.verify(token)
    world.agents[0]["revoked"] = True  # the same list, changed in place
    with pytest.raises(TokenRejected) as exc:
        world.verifier.verify(token)
    assert exc.value.code == "agent_revoked"
    entry = {"id": "7", "slug": "bot", "roles": ["dev"], "environments": ["development"]}
    world.agents = (entry,)  # a tuple, but of dicts: still not an immutable snapshot
    world.verifier.verify(token)
    entry["revoked_jti"] = [world.verifier.verify(token).jti]
    with pytest.raises(TokenRejected) as exc:
        world.verifier.verify(token)
    assert exc.value.code == "token_revoked"
