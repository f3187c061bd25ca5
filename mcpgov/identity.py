"""Who is calling: agent access tokens (RFC 9068 JWTs signed by the portal) and static agent API keys.

Verified offline against the pinned keys file (re-read when it changes, so a rotated team key is
picked up without a restart) and the current bundle's ``agents`` list (revoked agents, revoked token
ids, API key hashes). Pure Python on ``cryptography``; no PyJWT here. See ``docs/gateway.md``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from mcpgov.verify import KeyFileError, b64url_decode, load_jwks

log = logging.getLogger("mcpgov.identity")

ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 (a JOSE typ, not a secret)
API_KEY_PREFIX = "mcpgov_agent_"
LEEWAY_SECONDS = 60
RUN_META_KEY = "io.mcpgov/run"  # the client's run id; the gateway returns the run it used under the same key
ROLE_META_KEY = "io.mcpgov/role"  # optional: the role the client asks for (must be the gateway's)


class TokenRejected(Exception):
    """A credential that does not identify an agent allowed here; ``code`` is stable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class AgentIdentity:
    """An authenticated agent. ``auth`` is ``oauth``, ``api_key`` or ``local`` (stdio: the OS user)."""

    id: str
    slug: str
    auth: str
    roles: tuple[str, ...] = ()
    environments: tuple[str, ...] = ()
    client_id: str = ""
    jti: str = ""
    expires_at: int | None = None
    claims: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def key(self) -> str:
        return f"{self.auth}:{self.id}"

    def as_meta(self) -> dict[str, str | None]:
        """The session-open ``agent`` object; a local agent has no registered id."""
        return {"id": None if self.auth == "local" else self.id, "slug": self.slug, "auth": self.auth}


def local_identity(label: str = "") -> AgentIdentity:
    """stdio: the agent is whoever started the gateway (recorded as such), or the --agent label."""
    if label:
        return AgentIdentity(id=f"local:{label}", slug=label[:100], auth="local")
    try:
        user = os.getlogin()
    except OSError:
        user = os.environ.get("USER") or str(os.getuid())
    return AgentIdentity(id=f"local:{user}", slug=user, auth="local")


class PinnedKeys:
    """The pinned JWKS file, re-read when its mtime or size changes (key rotation without a restart)."""

    def __init__(self, path: str | os.PathLike[str] | None, keys: dict[str, Ed25519PublicKey]) -> None:
        self.path = Path(path) if path else None
        self.keys = dict(keys)
        self._stamp = self._stat()

    def _stat(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def current(self) -> dict[str, Ed25519PublicKey]:
        stamp = self._stat()
        if stamp is not None and stamp != self._stamp:
            self._stamp = stamp
            try:
                self.keys = load_jwks(self.path)  # type: ignore[arg-type]
                log.warning("pinned keys reloaded from %s: %s", self.path, ", ".join(sorted(self.keys)))
            except KeyFileError as exc:  # a half-written file: keep the keys we had
                log.error("pinned keys file changed but cannot be read (%s); keeping the previous keys", exc)
        return self.keys


def _jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenRejected("malformed", "not a JWT")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        signature = b64url_decode(parts[2])
    except ValueError as exc:
        raise TokenRejected("malformed", "a JWT part is not base64url JSON") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise TokenRejected("malformed", "JWT header and claims must be objects")
    return header, claims, signature, f"{parts[0]}.{parts[1]}".encode("ascii")


def _str_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    return ()


# how many verified tokens an AgentVerifier remembers (a few hundred bytes each)
VERIFIED_TOKENS_KEPT = 4096


def token_digest(token: str) -> bytes:
    """The key a verified token is remembered under: its SHA-256, so no bearer token is kept in memory."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


@dataclass(slots=True)
class _Verified:
    """What verifying one token left: the pinned key that verified its signature, its claims, and the
    identity the full check gave against one snapshot of the bundle's agents and team."""

    key: Ed25519PublicKey
    kid: str
    claims: dict[str, Any]
    identity: AgentIdentity | None = None
    agents: Any = None
    team: Any = None


def _out_of_time(claims: dict[str, Any], now: float) -> TokenRejected | None:
    """Expired or not yet valid (with the leeway): the one time rule, on both the full and the remembered check."""
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or now > exp + LEEWAY_SECONDS:
        return TokenRejected("expired", "the token has expired")
    nbf = claims.get("nbf", claims.get("iat"))
    if isinstance(nbf, int | float) and now < nbf - LEEWAY_SECONDS:
        return TokenRejected("not_yet_valid", "the token is not valid yet")
    return None


class AgentVerifier:
    """Turns a bearer credential into an :class:`AgentIdentity`, or raises :class:`TokenRejected`.

    ``agents`` returns the current bundle's agent list (a callable, so a new bundle — an agent or a
    token revoked — applies to the very next request). When it returns a tuple of non-dict entries
    (an immutable snapshot: the gateway passes the frozen bundle's own ``agents``), a token's identity
    is remembered against that very object and reused while the same object comes back, the team is
    the same, the pinned key still verifies and the token is in its time window; a new bundle is
    another object, so a revocation applies to the very next request. A list is never remembered
    against (it may be changed in place): the full check runs every time, the signature excepted.
    """

    def __init__(
        self,
        *,
        keys: PinnedKeys,
        issuer: str,
        resource: str,
        team: Callable[[], str],
        agents: Callable[[], Any],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys
        self.issuer = issuer.rstrip("/")
        self.resource = resource
        self.team = team
        self.agents = agents
        self.clock = clock
        # sha256(token) -> _Verified: the Ed25519 check is the costly step of every authenticated
        # request, and a token's signature does not change; a key rotated out of the pinned file
        # (another key object) makes the token verify from scratch. Bounded: the oldest is forgotten.
        self._verified: dict[bytes, _Verified] = {}

    def verify(self, credential: str) -> AgentIdentity:
        if credential.startswith(API_KEY_PREFIX):
            return self._api_key(credential)
        return self._jwt(credential)

    def _api_key(self, key: str) -> AgentIdentity:
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        for entry in self.agents() or ():
            if digest in (_get(entry, "api_key_sha256") or ()):
                if _get(entry, "revoked"):
                    raise TokenRejected("agent_revoked", f"agent {_get(entry, 'slug')} is revoked")
                return AgentIdentity(
                    id=str(_get(entry, "id")),
                    slug=str(_get(entry, "slug")),
                    auth="api_key",
                    roles=tuple(_get(entry, "roles") or ()),
                    environments=tuple(_get(entry, "environments") or ()),
                )
        raise TokenRejected("unknown_api_key", "this API key belongs to no agent of the current bundle")

    def _signed(self, token: str, keys: dict[str, Ed25519PublicKey]) -> _Verified:
        """The token, remembered, when its header is acceptable and a pinned key verifies its signature."""
        digest = token_digest(token)
        known = self._verified.get(digest)
        if known is not None and keys.get(known.kid) is known.key:
            return known
        header, claims, signature, signing_input = _jwt_parts(token)
        if header.get("alg") != "EdDSA":
            raise TokenRejected("malformed", f"alg must be EdDSA, got {header.get('alg')!r}")
        if header.get("typ") != ACCESS_TOKEN_TYPE:
            raise TokenRejected("malformed", f"typ must be {ACCESS_TOKEN_TYPE}")
        if "crit" in header:
            raise TokenRejected("malformed", "critical header extensions are not supported")
        kid = str(header.get("kid"))
        key = keys.get(kid)
        if key is None:
            raise TokenRejected("unknown_kid", f"kid {header.get('kid')!r} is not among the pinned keys")
        try:
            key.verify(signature, signing_input)
        except InvalidSignature as exc:
            raise TokenRejected("bad_signature", "the token signature does not verify") from exc
        self._verified.pop(digest, None)
        if len(self._verified) >= VERIFIED_TOKENS_KEPT:  # bounded: forget the oldest
            del self._verified[next(iter(self._verified))]
        known = self._verified[digest] = _Verified(key=key, kid=kid, claims=claims)
        return known

    def _jwt(self, token: str) -> AgentIdentity:
        known = self._signed(token, self.keys.current())
        agents, team = self.agents(), self.team()
        claims = known.claims
        if (
            known.identity is not None
            and known.agents is agents
            and known.team == team
            and _out_of_time(claims, self.clock()) is None
        ):
            return known.identity  # the same token against the same bundle snapshot: the same answer
        identity = self._check(claims, agents or (), team)
        if type(agents) is tuple and not any(isinstance(e, dict) for e in agents):
            known.identity, known.agents, known.team = identity, agents, team
        return identity

    def _check(self, claims: dict[str, Any], agents: Any, team: str) -> AgentIdentity:
        """Every claim of a signed token against this gateway and the bundle's agents."""
        if str(claims.get("iss", "")).rstrip("/") != self.issuer:
            raise TokenRejected("wrong_issuer", f"iss {claims.get('iss')!r} is not {self.issuer!r}")
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if self.resource not in audiences:
            raise TokenRejected("wrong_audience", f"aud {aud!r} is not this gateway ({self.resource})")
        problem = _out_of_time(claims, self.clock())
        if problem is not None:
            raise problem
        if claims.get("team") != team:
            raise TokenRejected("wrong_team", f"team {claims.get('team')!r} is not this gateway's team")
        sub = str(claims.get("sub", ""))
        if not sub.startswith("agent:"):
            raise TokenRejected("malformed", "sub must be agent:<id>")
        agent_id = sub.removeprefix("agent:")
        entry = next((e for e in agents if str(_get(e, "id")) == agent_id), None)
        if entry is None:
            raise TokenRejected("unknown_agent", f"agent {agent_id} is not in the current bundle")
        if _get(entry, "revoked"):
            raise TokenRejected("agent_revoked", f"agent {_get(entry, 'slug')} is revoked")
        jti = str(claims.get("jti", ""))
        if jti and jti in (_get(entry, "revoked_jti") or ()):
            raise TokenRejected("token_revoked", "this token has been revoked")
        # the bundle is the newer word on what the agent may do: intersect with the token's claims
        roles = tuple(r for r in _str_list(claims.get("roles")) if r in (_get(entry, "roles") or ()))
        envs = tuple(
            e for e in _str_list(claims.get("environments")) if e in (_get(entry, "environments") or ())
        )
        return AgentIdentity(
            id=agent_id,
            slug=str(claims.get("agent") or _get(entry, "slug")),
            auth="oauth",
            roles=roles,
            environments=envs,
            client_id=str(claims.get("client_id", "")),
            jti=jti,
            expires_at=int(claims["exp"]),
            claims=claims,
        )


def _get(entry: Any, name: str) -> Any:
    return entry.get(name) if isinstance(entry, dict) else getattr(entry, name, None)


def check_role(identity: AgentIdentity, *, role: str, environment: str, requested: str | None) -> None:
    """The role and environment this gateway enforces must be ones the agent's credential allows."""
    if identity.auth == "local":
        return
    if requested is not None and requested != role:
        raise TokenRejected(
            "role_not_allowed", f"this gateway enforces role {role!r}; the request asks for {requested!r}"
        )
    if role not in identity.roles:
        raise TokenRejected(
            "role_not_allowed",
            f"agent {identity.slug} may not act as {role!r} (its roles: {', '.join(identity.roles) or 'none'})",
        )
    if environment not in identity.environments:
        raise TokenRejected(
            "environment_not_allowed",
            f"agent {identity.slug} may not work in {environment!r} "
            f"(its environments: {', '.join(identity.environments) or 'none'})",
        )
