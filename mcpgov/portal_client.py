"""The client side of the portal⇄gateway contract (``docs/enforcer-api.md``), on httpx2.

Also the bundle manager: the last verified bundle cached on disk, the long poll that installs new
ones within a second, and the rule that a bundle failing verification is never used.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx2

from mcpgov import __version__
from mcpgov.audit import ShipError
from mcpgov.verify import (
    BundleExpired,
    BundleState,
    BundleVerificationError,
    VerifiedBundle,
    jws_sha256,
    verify_bundle,
)

log = logging.getLogger("mcpgov.portal")

API = "/api/v1"
LONG_POLL_SECONDS = 25  # the portal caps wait at 30


class PortalError(Exception):
    """The portal answered with an error (``status``, ``code``, ``detail``)."""

    def __init__(self, status: int, code: str, detail: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(f"portal answered {status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.body = body or {}


def _error(resp: httpx2.Response) -> PortalError:
    try:
        body = resp.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    return PortalError(
        resp.status_code, str(body.get("code", "http_error")), str(body.get("detail", resp.text[:200])), body
    )


class PortalClient:
    """Async client for one enforcement client token (one team, one environment)."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 10.0,
                 transport: httpx2.AsyncBaseTransport | None = None) -> None:  # fmt: skip
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.http = httpx2.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}", "User-Agent": f"mcpgov/{__version__}"},
            timeout=httpx2.Timeout(timeout, read=timeout + LONG_POLL_SECONDS + 5),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    # bundle

    async def fetch_bundle(
        self, *, etag: str | None, current_version: int, wait: int = 0
    ) -> tuple[int, str | None, str | None]:
        """``(status, jws, etag)``: 200 with a new bundle, 304 unchanged, 404 none published."""
        headers = {"X-Mcpgov-Bundle-Version": str(current_version)}
        params = {}
        if etag:
            headers["If-None-Match"] = etag
            if wait:
                params["wait"] = str(max(0, min(30, int(wait))))
        resp = await self.http.get(f"{API}/bundle/", headers=headers, params=params)
        if resp.status_code == 304:
            return 304, None, etag
        if resp.status_code == 200:
            return 200, resp.text, resp.headers.get("ETag")
        if resp.status_code == 404:
            return 404, None, None
        raise _error(resp)

    # sessions

    async def open_session(self, meta: dict[str, Any]) -> dict[str, Any]:
        resp = await self.http.post(f"{API}/sessions/", json=meta)
        if resp.status_code in (200, 201):
            return resp.json()
        raise _error(resp)

    async def patch_session(self, session_id: str, *, state: str, trigger: str | None, reason: str,
                            last_calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:  # fmt: skip
        body = {"state": state, "trigger": trigger, "reason": reason, "last_calls": (last_calls or [])[-3:]}
        resp = await self.http.patch(f"{API}/sessions/{session_id}/", json=body)
        if resp.status_code == 200:
            return resp.json()
        raise _error(resp)

    async def control(self, session_id: str, *, since: int, wait: int = LONG_POLL_SECONDS) -> dict[str, Any]:
        resp = await self.http.get(
            f"{API}/sessions/{session_id}/control/",
            params={"since": str(since), "wait": str(max(0, min(30, wait)))},
        )
        if resp.status_code == 200:
            return resp.json()
        raise _error(resp)

    async def post_events(self, session_id: str, events: list[dict[str, Any]]) -> int:
        """Post one batch; returns the portal's ``last_seq``. Raises :class:`ShipError` when not taken."""
        try:
            resp = await self.http.post(f"{API}/sessions/{session_id}/events/", json={"events": events})
        except httpx2.HTTPError as exc:
            raise ShipError(f"portal unreachable: {exc.__class__.__name__}: {exc}") from exc
        if resp.status_code == 200:
            return int(resp.json()["last_seq"])
        err = _error(resp)
        if resp.status_code == 409 and err.code == "sequence_gap":
            return_seq = err.body.get("last_seq")
            raise ShipError(str(err), last_seq=int(return_seq) if return_seq is not None else None)
        if resp.status_code == 404:
            raise ShipError(str(err), missing_session=True)
        raise ShipError(str(err))

    async def acknowledgement(self, session_id: str) -> dict[str, Any]:
        resp = await self.http.get(f"{API}/sessions/{session_id}/acknowledgement/")
        if resp.status_code == 200:
            return resp.json()
        raise _error(resp)


class BundleManager:
    """Holds the bundle being enforced; installs only bundles that verify against the pinned keys.

    The last verified JWS is cached in ``state_dir/bundle.jws`` (with the anti-replay state), so a
    gateway restarted while the portal is down keeps enforcing it until it expires; after that every
    call is refused (``bundle_expired``) until a fresh bundle verifies.
    """

    def __init__(self, keys: dict[str, Any], *, environment: str, team: str | None = None,
                 state_dir: str | os.PathLike[str] | None = None, client: PortalClient | None = None) -> None:  # fmt: skip
        self.keys = keys
        self.environment = environment
        self.team = team
        self.client = client
        self.state_dir = Path(state_dir) if state_dir else None
        if self.state_dir:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state = BundleState(self.state_dir / "bundle-state.json" if self.state_dir else None)
        self.current: VerifiedBundle | None = None
        self.etag: str | None = None
        self.listeners: list[Callable[[VerifiedBundle], None]] = []
        self.rejected = 0

    @property
    def cache_path(self) -> Path | None:
        return self.state_dir / "bundle.jws" if self.state_dir else None

    def install(self, jws: str, *, source: str, allow_expired: bool = False) -> VerifiedBundle:
        """Verify and enforce ``jws``; on failure the current bundle stays and the error is raised."""
        try:
            verified = verify_bundle(
                jws, self.keys, team=self.team, environment=self.environment, state=self.state,
                allow_expired=allow_expired,
            )  # fmt: skip
        except BundleVerificationError as exc:
            self.rejected += 1
            keep = f"keeping v{self.current.version}" if self.current else "no bundle in force"
            log.error("REJECTED bundle from %s: %s: %s (%s)", source, exc.code, exc.message, keep)
            raise
        self.state.accept(verified.bundle, verified.payload_sha256)
        self.team = verified.bundle.team
        if self.cache_path and source != "cache":
            tmp = self.cache_path.with_suffix(".tmp")
            tmp.write_text(verified.jws, encoding="ascii")
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, self.cache_path)
        changed = self.current is None or self.current.sha256 != verified.sha256
        self.current = verified
        self.etag = f'"{verified.sha256}"'
        if changed:
            log.warning("enforcing bundle v%d of %s/%s from %s (expires %s)", verified.version, verified.bundle.team,
                        verified.bundle.environment, source, verified.bundle.expires_at.isoformat())  # fmt: skip
            for listener in self.listeners:
                listener(verified)
        return verified

    def load_file(self, path: str | os.PathLike[str]) -> VerifiedBundle:
        """Offline mode: a signed bundle file (still verified; an expired one is loaded and fails closed)."""
        jws = Path(path).read_text(encoding="ascii", errors="replace")
        return self.install(jws, source=str(path), allow_expired=True)

    def load_cache(self) -> VerifiedBundle | None:
        if not self.cache_path or not self.cache_path.exists():
            return None
        try:
            return self.install(
                self.cache_path.read_text(encoding="ascii"), source="cache", allow_expired=True
            )
        except BundleVerificationError:
            return None

    async def refresh(self, *, wait: int = 0) -> bool:
        """One (long-poll) request; True when a new bundle was installed."""
        assert self.client is not None
        version = self.current.version if self.current else 0
        status, jws, etag = await self.client.fetch_bundle(etag=self.etag, current_version=version, wait=wait)
        if status != 200 or jws is None:
            return False
        if self.current and jws_sha256(jws) == self.current.sha256:
            self.etag = etag or self.etag
            return False
        try:
            self.install(jws, source="portal")
        except BundleExpired:
            return False
        except BundleVerificationError:
            # never used; ask again only when the portal has something else
            self.etag = etag or f'"{jws_sha256(jws)}"'
            return False
        return True

    async def run(self, *, min_backoff: float = 1.0, max_backoff: float = 30.0) -> None:
        """Long-poll the portal forever; changes are installed as soon as the portal answers."""
        backoff = 0.0
        while True:
            try:
                await self.refresh(wait=LONG_POLL_SECONDS if self.etag else 0)
                backoff = 0.0
                if self.etag is None:  # nothing published yet
                    await anyio.sleep(min_backoff)
            except (httpx2.HTTPError, PortalError) as exc:
                backoff = min(max_backoff, max(min_backoff, backoff * 2))
                log.warning("bundle poll failed (%s); retrying in %.0fs", exc, backoff)
                await anyio.sleep(backoff * (0.5 + random.random() / 2))  # noqa: S311 (jitter, not crypto)


# --- audit-check CLI -----------------------------------------------------------------------------------------


def run_audit_check_cli(args: argparse.Namespace) -> int:
    if not args.portal or not args.token:
        print("audit-check needs --portal and --token (or MCPGOV_PORTAL / MCPGOV_TOKEN)", file=sys.stderr)
        return 2

    async def check() -> dict[str, Any]:
        client = PortalClient(args.portal, args.token)
        try:
            return await client.acknowledgement(args.session)
        finally:
            with contextlib.suppress(Exception):
                await client.aclose()

    try:
        ack = anyio.run(check)
    except PortalError as exc:
        print(f"audit-check: session {args.session}: {exc.detail} ({exc.code})", file=sys.stderr)
        return 1
    except httpx2.HTTPError as exc:
        print(f"audit-check: portal unreachable: {exc}", file=sys.stderr)
        return 2
    if ack.get("acknowledged"):
        print(f"audit-check: session {args.session} acknowledged by {ack.get('acknowledged_by')} at "
              f"{ack.get('acknowledged_at')}", file=sys.stderr)  # fmt: skip
        return 0
    print(f"audit-check: session {args.session} has NOT been acknowledged by a reviewer", file=sys.stderr)
    return 1
