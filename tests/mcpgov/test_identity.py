"""The agent token verifier: a verified signature is remembered, every other check runs on each request."""

from __future__ import annotations

import json
import time
import uuid

import jwt
import pytest

from mcpgov.identity import AgentVerifier, PinnedKeys, TokenRejected
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
    assert len(world.verifier._verified) == 8 and tokens[0] not in world.verifier._verified
    assert world.verifier.verify(tokens[0]).id == "7"  # forgotten: verified again from scratch
