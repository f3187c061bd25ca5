"""Sign and verify policy bundles: JWS compact serialization, EdDSA (Ed25519), pinned keys only.

Implemented on ``cryptography`` directly. The portal signs with :func:`sign_bundle`; gateways verify with
:func:`verify_bundle` against keys loaded by :func:`load_jwks` from an operator-pinned file. See
``docs/bundle.md`` for the envelope and the order of checks.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import ValidationError

from mcpgov.bundle import Bundle, FlagsUpdate, canonical_json

JWS_TYPE = "mcpgov-bundle+jws"
# A shadow bundle (a draft evaluated beside the live one, never enforced) is signed with the same key
# under its own type, so a shadow can never be installed as the live bundle: the live path accepts
# only JWS_TYPE, the shadow path only this.
SHADOW_JWS_TYPE = "mcpgov-shadow-bundle+jws"
# A flags update (every flag of the environment, sent on a toggle instead of a whole bundle) has a type
# of its own too: it can never be taken for a bundle or a shadow, nor they for it.
FLAGS_JWS_TYPE = "mcpgov-flags+jws"
JWS_ALG = "EdDSA"


class BundleVerificationError(Exception):
    """A bundle that must not be used. ``code`` is stable and machine-readable."""

    code = "invalid"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class MalformedBundle(BundleVerificationError):
    code = "malformed"


class UnknownKeyId(BundleVerificationError):
    code = "unknown_kid"


class BadSignature(BundleVerificationError):
    code = "bad_signature"


class BundleExpired(BundleVerificationError):
    code = "expired"


class WrongTeam(BundleVerificationError):
    code = "wrong_team"


class WrongEnvironment(BundleVerificationError):
    code = "wrong_environment"


class ReplayedBundle(BundleVerificationError):
    code = "replayed"


class SchemaInvalid(BundleVerificationError):
    code = "schema_invalid"


class SupersededUpdate(BundleVerificationError):
    """A flags update for an older bundle than the one enforced: that bundle already carries newer flags."""

    code = "superseded"


class KeyFileError(Exception):
    """The pinned JWKS file is missing, unreadable or holds no usable Ed25519 key."""


class StateFileError(Exception):
    """The anti-replay state file cannot be read."""


# --- base64url -----------------------------------------------------------------------------------------


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    # a regular expression, not a per-character loop: a bearer token is decoded on every HTTP request
    if not text or _B64URL.fullmatch(text) is None or len(text) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_B64URL = re.compile(r"[A-Za-z0-9_-]+")


# --- keys ------------------------------------------------------------------------------------------------


def public_jwk(public_key: Ed25519PublicKey, kid: str) -> dict[str, str]:
    """The RFC 8037 JWK of an Ed25519 public key, as served by ``GET /api/v1/keys/``."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(raw), "kid": kid, "alg": JWS_ALG, "use": "sig"}


def jwk_thumbprint(public_key: Ed25519PublicKey) -> str:
    """RFC 7638 thumbprint (sha256, base64url): a good default key id."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    members = {"crv": "Ed25519", "kty": "OKP", "x": b64url_encode(raw)}
    return b64url_encode(hashlib.sha256(canonical_json(members)).digest())


def jwks(keys: Mapping[str, Ed25519PublicKey]) -> dict[str, list[dict[str, str]]]:
    return {"keys": [public_jwk(k, kid) for kid, k in keys.items()]}


def public_key_from_jwk(jwk: Mapping[str, Any]) -> Ed25519PublicKey:
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise KeyFileError(f"key {jwk.get('kid')!r} is not an Ed25519 OKP key")
    if jwk.get("alg", JWS_ALG) != JWS_ALG or jwk.get("use", "sig") != "sig":
        raise KeyFileError(f"key {jwk.get('kid')!r} is not an EdDSA signing key")
    if "d" in jwk:
        raise KeyFileError(f"key {jwk.get('kid')!r} contains private material; pin public keys only")
    try:
        raw = b64url_decode(str(jwk.get("x", "")))
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, binascii.Error) as exc:
        raise KeyFileError(f"key {jwk.get('kid')!r} has an invalid x: {exc}") from exc


def parse_jwks(doc: Mapping[str, Any]) -> dict[str, Ed25519PublicKey]:
    keys = doc.get("keys") if isinstance(doc, Mapping) else None
    if not isinstance(keys, list):
        raise KeyFileError('a JWKS needs a "keys" list')
    out: dict[str, Ed25519PublicKey] = {}
    for jwk in keys:
        if not isinstance(jwk, Mapping) or not isinstance(jwk.get("kid"), str) or not jwk["kid"]:
            raise KeyFileError("every pinned key needs a kid")
        if jwk["kid"] in out:
            raise KeyFileError(f"duplicate kid {jwk['kid']!r}")
        out[jwk["kid"]] = public_key_from_jwk(jwk)
    if not out:
        raise KeyFileError("the JWKS holds no keys")
    return out


def load_jwks(path: str | os.PathLike[str]) -> dict[str, Ed25519PublicKey]:
    """Pinned keys from a local JWKS file (never fetched from the network)."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise KeyFileError(f"{path}:{exc.lineno}: the pinned keys are not valid JSON ({exc.msg})") from exc
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot read pinned keys from {path}: {exc}") from exc
    try:
        return parse_jwks(doc)
    except KeyFileError as exc:
        raise KeyFileError(f"{path}: {exc}") from exc


# --- signing -------------------------------------------------------------------------------------------


def sign_bundle(
    payload_bytes: bytes, private_key: Ed25519PrivateKey, kid: str, *, typ: str = JWS_TYPE
) -> str:
    """JWS compact serialization of ``payload_bytes`` (normally ``Bundle.canonical_bytes()``)."""
    if not kid:
        raise ValueError("kid is required")
    if typ not in (JWS_TYPE, SHADOW_JWS_TYPE, FLAGS_JWS_TYPE):
        raise ValueError(f"unknown bundle JWS type {typ!r}")
    header = canonical_json({"alg": JWS_ALG, "kid": kid, "typ": typ})
    signing_input = f"{b64url_encode(header)}.{b64url_encode(payload_bytes)}".encode("ascii")
    return f"{signing_input.decode('ascii')}.{b64url_encode(private_key.sign(signing_input))}"


# --- verification -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedBundle:
    bundle: Bundle
    jws: str
    kid: str
    sha256: str  # of the JWS text: the portal's ETag
    payload_sha256: str  # of the payload bytes: the bundle's content hash
    # 0: ``bundle.flags`` are the signed bundle's own; else the revision of the signed flags update
    # whose flags replaced them (``BundleManager.enforced``)
    flags_revision: int = 0

    @property
    def version(self) -> int:
        return self.bundle.version


def jws_sha256(jws: str) -> str:
    return hashlib.sha256(jws.strip().encode("ascii", "replace")).hexdigest()


def _split(jws: str) -> tuple[dict[str, Any], bytes, bytes, bytes]:
    parts = jws.strip().split(".")
    if len(parts) != 3:
        raise MalformedBundle(f"a JWS compact serialization has 3 dot-separated parts, got {len(parts)}")
    try:
        header_raw, payload, signature = (b64url_decode(p) for p in parts)
    except (ValueError, binascii.Error) as exc:
        raise MalformedBundle("a JWS part is not unpadded base64url") from exc
    try:
        header = json.loads(header_raw)
    except ValueError as exc:
        raise MalformedBundle("the JWS header is not JSON") from exc
    if not isinstance(header, dict):
        raise MalformedBundle("the JWS header is not a JSON object")
    return header, payload, signature, f"{parts[0]}.{parts[1]}".encode("ascii")


def verify_jws(jws: str, keys: Mapping[str, Ed25519PublicKey], *, typ: str = JWS_TYPE) -> tuple[str, bytes]:
    """Check the envelope and signature only; return ``(kid, payload bytes)``."""
    header, payload, signature, signing_input = _split(jws)
    if header.get("alg") != JWS_ALG:
        raise MalformedBundle(f"alg must be {JWS_ALG}, got {header.get('alg')!r}")
    if header.get("typ") != typ:
        raise MalformedBundle(f"typ must be {typ}, got {header.get('typ')!r}")
    if "crit" in header:
        raise MalformedBundle("critical header extensions are not supported")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise MalformedBundle("the JWS header has no kid")
    key = keys.get(kid)
    if key is None:
        raise UnknownKeyId(f"kid {kid!r} is not among the pinned keys ({', '.join(sorted(keys)) or 'none'})")
    if len(signature) != 64:
        raise BadSignature("an Ed25519 signature is 64 bytes")
    try:
        key.verify(signature, signing_input)
    except InvalidSignature as exc:
        raise BadSignature(
            f"the signature does not verify with key {kid!r} (payload or header altered)"
        ) from exc
    return kid, payload


class BundleState:
    """Last accepted bundle version per (team, environment), kept in a small JSON file (anti-replay)."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path else None
        self._data: dict[str, dict[str, Any]] = {}
        if self.path and self.path.exists():
            try:
                self._data = json.loads(self.path.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise StateFileError(f"state file {self.path} is corrupt: {exc}") from exc

    @staticmethod
    def _key(team: str, environment: str) -> str:
        return f"{team}/{environment}"

    def last(self, team: str, environment: str) -> tuple[int, str | None]:
        entry = self._data.get(self._key(team, environment)) or {}
        return int(entry.get("version", 0)), entry.get("payload_sha256")

    @staticmethod
    def _flags_key(team: str, environment: str) -> str:
        # its own entry, merged like a bundle's ("version" is the flags revision)
        return f"{team}/{environment}#flags"

    def last_flags(self, team: str, environment: str) -> tuple[int, str | None]:
        """The last accepted flags update revision (0: none) and its payload sha256."""
        entry = self._data.get(self._flags_key(team, environment)) or {}
        return int(entry.get("version", 0)), entry.get("payload_sha256")

    def _merge_from_disk(self) -> None:
        """Keep the newer entries other gateways sharing this file wrote since we read it (callers lock)."""
        assert self.path is not None
        try:
            disk = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if not isinstance(disk, dict):
            return
        for key, entry in disk.items():
            if not isinstance(entry, dict):
                continue
            ours = self._data.get(key) or {}
            if int(entry.get("version", 0)) > int(ours.get("version", 0)):
                self._data[key] = entry

    def accept(self, bundle: Bundle, payload_sha256: str) -> bool:
        """Record ``bundle`` as accepted; False when a newer version is already recorded (here or on disk).

        Gateways sharing a state directory call this under :class:`mcpgov.bundle_manager.BundleManager`'s
        lock, so re-reading the file first never loses a sibling's newer entry.
        """
        return self._accept(self._key(bundle.team, bundle.environment), bundle.version, payload_sha256)

    def accept_flags(self, update: FlagsUpdate, payload_sha256: str) -> bool:
        """Record a flags update's revision; False when a newer one is already recorded (here or on disk)."""
        return self._accept(self._flags_key(update.team, update.environment), update.revision, payload_sha256)

    def _accept(self, key: str, version: int, payload_sha256: str) -> bool:
        if self.path and self.path.exists():
            self._merge_from_disk()
        entry = self._data.get(key) or {}
        if version < int(entry.get("version", 0)):
            return False
        self._data[key] = {"version": version, "payload_sha256": payload_sha256}
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".bundle-state-")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(self._data, fh, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        return True


def _signed_document(
    jws: str,
    keys: Mapping[str, Ed25519PublicKey],
    *,
    typ: str,
    parse: Callable[[bytes], Any],
    what: str,
    label: Callable[[Any], str],
    team: str | None,
    environment: str | None,
    now: datetime | None,
    allow_expired: bool = False,
) -> tuple[str, bytes, Any]:
    """The steps a bundle and a flags update share, in order: envelope with ``typ`` (malformed) → key
    (unknown_kid) → signature (bad_signature) → schema (schema_invalid) → team (wrong_team) →
    environment (wrong_environment) → expiry (expired). Returns the kid, the payload and the document."""
    if not isinstance(jws, str):
        raise MalformedBundle("a JWS compact serialization is text")
    kid, payload = verify_jws(jws, keys, typ=typ)
    try:
        doc = parse(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "(root)"
        raise SchemaInvalid(
            f"{exc.error_count()} schema error(s) in the {what}; first at {where}: {first.get('msg')}"
        ) from exc
    if team is not None and doc.team != team:
        raise WrongTeam(f"{what} is for team {doc.team!r}, this gateway serves {team!r}")
    if environment is not None and doc.environment != environment:
        raise WrongEnvironment(
            f"{what} is for environment {doc.environment!r}, this gateway enforces {environment!r}"
        )
    if not allow_expired and doc.expires_at <= (now or datetime.now(UTC)):
        raise BundleExpired(f"{what} {label(doc)} expired at {doc.expires_at.isoformat()}")
    return kid, payload, doc


def _not_replayed(
    last: tuple[int, str | None],
    number: int,
    payload_sha: str,
    *,
    what: str,
    label: str,
    done: str,
    scope: str,
) -> None:
    """The anti-replay step of a bundle and a flags update: ``last`` is the (version or revision, payload
    sha256) recorded in :class:`BundleState`; an older number, or the same one with other content, is
    :class:`ReplayedBundle`."""
    last_number, last_sha = last
    if number < last_number:
        raise ReplayedBundle(f"{what} is older than {label}{last_number}, already {done} for {scope}")
    if number == last_number and last_sha and last_sha != payload_sha:
        raise ReplayedBundle(f"{what} was already {done} with different content")


def verify_bundle(
    jws: str,
    keys: Mapping[str, Ed25519PublicKey],
    *,
    team: str | None = None,
    environment: str | None = None,
    state: BundleState | None = None,
    now: datetime | None = None,
    allow_expired: bool = False,
    typ: str = JWS_TYPE,
) -> VerifiedBundle:
    """Verify ``jws`` and return the bundle; raise a :class:`BundleVerificationError` subclass otherwise.

    Order: envelope (malformed) → key (unknown_kid) → signature (bad_signature) → schema
    (schema_invalid) → team (wrong_team) → environment (wrong_environment) → expiry (expired) →
    anti-replay against ``state`` (replayed). ``state`` is read, not updated: call
    ``state.accept(...)`` once the bundle is actually installed.
    """
    kid, payload, bundle = _signed_document(
        jws,
        keys,
        typ=typ,
        parse=Bundle.from_json_bytes,
        what="bundle",
        label=lambda b: f"v{b.version}",
        team=team,
        environment=environment,
        now=now,
        allow_expired=allow_expired,
    )
    payload_sha = hashlib.sha256(payload).hexdigest()
    if state is not None:
        _not_replayed(
            state.last(bundle.team, bundle.environment),
            bundle.version,
            payload_sha,
            what=f"bundle v{bundle.version}",
            label="v",
            done="accepted",
            scope=f"{bundle.team}/{bundle.environment}",
        )
    return VerifiedBundle(
        bundle=bundle, jws=jws.strip(), kid=kid, sha256=jws_sha256(jws), payload_sha256=payload_sha
    )


@dataclass(frozen=True)
class VerifiedFlagsUpdate:
    update: FlagsUpdate
    jws: str
    kid: str
    payload_sha256: str

    @property
    def revision(self) -> int:
        return self.update.revision


def verify_flags_update(
    jws: str,
    keys: Mapping[str, Ed25519PublicKey],
    *,
    team: str | None = None,
    environment: str | None = None,
    state: BundleState | None = None,
    bundle_version: int | None = None,
    now: datetime | None = None,
) -> VerifiedFlagsUpdate:
    """Verify a flags update; raise a :class:`BundleVerificationError` subclass otherwise.

    The bundle's steps with the flags type, in the same order — envelope with ``typ``
    ``mcpgov-flags+jws`` (malformed) → key (unknown_kid) → signature (bad_signature) → schema
    (schema_invalid) → team (wrong_team) → environment (wrong_environment) → expiry (expired) →
    revision against ``state`` (replayed: older, or the same revision with other content) — then
    ``bundle_version`` below the enforced bundle's version (superseded: that bundle is newer).
    ``state`` is read, not updated: call ``state.accept_flags(...)`` once the update is applied.
    """
    kid, payload, update = _signed_document(
        jws,
        keys,
        typ=FLAGS_JWS_TYPE,
        parse=FlagsUpdate.from_json_bytes,
        what="flags update",
        label=lambda u: f"r{u.revision}",
        team=team,
        environment=environment,
        now=now,
    )
    payload_sha = hashlib.sha256(payload).hexdigest()
    if state is not None:
        _not_replayed(
            state.last_flags(update.team, update.environment),
            update.revision,
            payload_sha,
            what=f"flags update r{update.revision}",
            label="r",
            done="applied",
            scope=f"{update.team}/{update.environment}",
        )
    if bundle_version is not None and update.bundle_version < bundle_version:
        raise SupersededUpdate(
            f"flags update r{update.revision} applies to bundle v{update.bundle_version}; "
            f"v{bundle_version} is enforced and carries newer flags"
        )
    return VerifiedFlagsUpdate(update=update, jws=jws.strip(), kid=kid, payload_sha256=payload_sha)


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()
