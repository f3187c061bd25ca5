"""Bundle signatures: every kind of tampering is refused with its own error code."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import jwt
import pytest

from mcpgov.bundle import canonical_json
from mcpgov.verify import (
    BadSignature,
    BundleExpired,
    BundleState,
    KeyFileError,
    MalformedBundle,
    ReplayedBundle,
    SchemaInvalid,
    UnknownKeyId,
    WrongEnvironment,
    WrongTeam,
    b64url_decode,
    b64url_encode,
    load_jwks,
    parse_jwks,
    public_jwk,
    sign_bundle,
    verify_bundle,
)
from tests.mcpgov.helpers import NOW, Signer, bundle_doc, iso


@pytest.fixture
def signer():
    return Signer()


@pytest.fixture
def keys(signer, tmp_path):
    return load_jwks(signer.write_jwks(tmp_path / "keys.json"))


def test_valid_bundle_verifies(signer, keys):
    jws = signer.sign()
    v = verify_bundle(jws, keys, team="acme", environment="development", now=NOW)
    assert v.bundle.version == 3 and v.kid == signer.kid
    header = json.loads(b64url_decode(jws.split(".")[0]))
    assert header == {"alg": "EdDSA", "kid": signer.kid, "typ": "mcpgov-bundle+jws"}


def test_one_byte_of_payload_changed_is_bad_signature(signer, keys):
    h, p, s = signer.sign().split(".")
    payload = bytearray(b64url_decode(p))
    i = payload.index(b'"version":3')
    payload[i + len('"version":')] = ord("9")
    with pytest.raises(BadSignature) as exc:
        verify_bundle(f"{h}.{b64url_encode(bytes(payload))}.{s}", keys, now=NOW)
    assert exc.value.code == "bad_signature"


def test_changed_kid_in_header_is_unknown_kid(signer, keys):
    _, p, s = signer.sign().split(".")
    header = b64url_encode(canonical_json({"alg": "EdDSA", "kid": "attacker", "typ": "mcpgov-bundle+jws"}))
    with pytest.raises(UnknownKeyId, match="attacker"):
        verify_bundle(f"{header}.{p}.{s}", keys, now=NOW)


def test_header_altered_with_pinned_kid_is_bad_signature(signer, keys):
    _, p, s = signer.sign().split(".")
    header = b64url_encode(
        json.dumps({"alg": "EdDSA", "kid": signer.kid, "typ": "mcpgov-bundle+jws"}).encode()
    )
    with pytest.raises(BadSignature):
        verify_bundle(f"{header}.{p}.{s}", keys, now=NOW)


def test_signature_by_another_key_with_the_same_kid_is_bad_signature(keys):
    impostor = Signer()  # same default kid, different key
    with pytest.raises(BadSignature):
        verify_bundle(impostor.sign(), keys, now=NOW)


def test_flipped_signature_bit_is_bad_signature(signer, keys):
    h, p, s = signer.sign().split(".")
    sig = bytearray(b64url_decode(s))
    sig[10] ^= 1
    with pytest.raises(BadSignature):
        verify_bundle(f"{h}.{p}.{b64url_encode(bytes(sig))}", keys, now=NOW)


@pytest.mark.parametrize(
    "jws",
    ["", "abc", "a.b", "a.b.c.d", "!!!.e30.AAAA", "e30.e30.AAAA+", f"{b64url_encode(b'[1]')}.e30.AAAA"],
)
def test_malformed_tokens(jws, keys):
    with pytest.raises(MalformedBundle):
        verify_bundle(jws, keys, now=NOW)


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "none", "kid": "test-key-1", "typ": "mcpgov-bundle+jws"},
        {"alg": "HS256", "kid": "test-key-1", "typ": "mcpgov-bundle+jws"},
        {"alg": "EdDSA", "kid": "test-key-1", "typ": "JWT"},
        {"alg": "EdDSA", "typ": "mcpgov-bundle+jws"},
        {"alg": "EdDSA", "kid": "test-key-1", "typ": "mcpgov-bundle+jws", "crit": ["exp"]},
    ],
)
def test_unacceptable_headers_are_malformed(header, signer, keys):
    _, p, s = signer.sign().split(".")
    with pytest.raises(MalformedBundle):
        verify_bundle(f"{b64url_encode(canonical_json(header))}.{p}.{s}", keys, now=NOW)


def test_expired(signer, keys):
    jws = signer.sign(expires_at=iso(NOW - timedelta(seconds=1)), issued_at=iso(NOW - timedelta(days=1)))
    with pytest.raises(BundleExpired):
        verify_bundle(jws, keys, now=NOW)
    # exactly at expiry is expired too
    with pytest.raises(BundleExpired):
        verify_bundle(signer.sign(expires_at=iso(NOW)), keys, now=NOW)


def test_wrong_team_and_environment(signer, keys):
    jws = signer.sign()
    with pytest.raises(WrongTeam):
        verify_bundle(jws, keys, team="globex", now=NOW)
    with pytest.raises(WrongEnvironment):
        verify_bundle(jws, keys, team="acme", environment="production", now=NOW)


def test_schema_invalid_even_when_signed(signer, keys):
    payload = canonical_json({**bundle_doc(), "version": "three"})
    with pytest.raises(SchemaInvalid, match="version"):
        verify_bundle(sign_bundle(payload, signer.key, signer.kid), keys, now=NOW)
    with pytest.raises(SchemaInvalid):
        verify_bundle(sign_bundle(b"not json", signer.key, signer.kid), keys, now=NOW)


def test_replayed_older_version(signer, keys, tmp_path):
    state = BundleState(tmp_path / "state.json")
    v5 = verify_bundle(signer.sign(version=5), keys, state=state, now=NOW)
    state.accept(v5.bundle, v5.payload_sha256)
    # the state survives a restart
    state = BundleState(tmp_path / "state.json")
    with pytest.raises(ReplayedBundle, match="older than v5"):
        verify_bundle(signer.sign(version=4), keys, state=state, now=NOW)
    # same version, same content: fine (a re-fetch); same version, other content: replayed
    assert verify_bundle(v5.jws, keys, state=state, now=NOW).version == 5
    with pytest.raises(ReplayedBundle, match="different content"):
        verify_bundle(
            signer.sign(version=5, flags=[{"name": "x", "enabled": False}]), keys, state=state, now=NOW
        )
    assert verify_bundle(signer.sign(version=6), keys, state=state, now=NOW).version == 6


def test_errors_have_distinct_codes():
    codes = {
        c.code
        for c in (
            MalformedBundle,
            UnknownKeyId,
            BadSignature,
            BundleExpired,
            WrongTeam,
            WrongEnvironment,
            ReplayedBundle,
            SchemaInvalid,
        )
    }
    assert codes == {
        "malformed",
        "unknown_kid",
        "bad_signature",
        "expired",
        "wrong_team",
        "wrong_environment",
        "replayed",
        "schema_invalid",
    }


def test_our_tokens_verify_with_pyjwt_and_pyjwt_tokens_verify_with_us(signer, keys):
    jws = signer.sign()
    payload = jwt.api_jws.PyJWS().decode(jws, signer.public_key, algorithms=["EdDSA"])
    assert json.loads(payload)["team"] == "acme"

    theirs = jwt.api_jws.PyJWS().encode(
        canonical_json(bundle_doc(version=7)),
        signer.key,
        algorithm="EdDSA",
        headers={"kid": signer.kid, "typ": "mcpgov-bundle+jws"},
    )
    assert verify_bundle(theirs, keys, now=NOW).version == 7
    # and PyJWT's own JWK loader accepts our JWK
    pyjwt_key = jwt.PyJWK(public_jwk(signer.public_key, signer.kid)).key
    assert jwt.api_jws.PyJWS().decode(jws, pyjwt_key, algorithms=["EdDSA"])


def test_pinned_key_file_rejects_private_or_foreign_keys(signer):
    jwk = public_jwk(signer.public_key, "k")
    with pytest.raises(KeyFileError, match="private"):
        parse_jwks({"keys": [{**jwk, "d": "AAAA"}]})
    with pytest.raises(KeyFileError, match="Ed25519"):
        parse_jwks({"keys": [{**jwk, "crv": "X25519"}]})
    with pytest.raises(KeyFileError, match="kid"):
        parse_jwks({"keys": [{k: v for k, v in jwk.items() if k != "kid"}]})
    with pytest.raises(KeyFileError):
        parse_jwks({"keys": []})


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "mcpgov", "verify-bundle", *args], capture_output=True, text=True, timeout=60
    )


def test_cli_verify_bundle(signer, tmp_path):
    keys_file = signer.write_jwks(tmp_path / "keys.json")
    good = tmp_path / "good.jws"
    good.write_text(signer.sign(issued_at=iso(NOW), expires_at="2099-01-01T00:00:00Z"))
    r = _cli(str(good), "--keys", str(keys_file), "--team", "acme", "--env", "development")
    assert r.returncode == 0, r.stderr
    assert "bundle ok" in r.stderr and r.stdout == ""

    r = _cli(str(good), "--keys", str(keys_file), "--env", "production")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("bundle rejected: wrong_environment:")

    state = tmp_path / "state.json"
    newer = tmp_path / "newer.jws"
    newer.write_text(signer.sign(version=10, expires_at="2099-01-01T00:00:00Z"))
    assert _cli(str(newer), "--keys", str(keys_file), "--state-file", str(state), "--accept").returncode == 0
    r = _cli(str(good), "--keys", str(keys_file), "--state-file", str(state))
    assert r.returncode == 1 and "replayed" in r.stderr
