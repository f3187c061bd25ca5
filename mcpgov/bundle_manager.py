"""The bundle manager: the bundle being enforced, and the only door a new bundle comes in through.

The last verified bundle is cached on disk, the long poll installs new ones within a second, and a
bundle failing verification is never used. A signed flags update (a toggle, delivered on the same long
poll without a new bundle) replaces the flags of the bundle in force until a newer bundle arrives.
While it has a bundle, the manager holds the streamed long poll (one open response carrying every
flags update as an event, `docs/enforcer-api.md`) and falls back to the plain one when the portal
answers without a stream.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2

from mcpgov.decision import with_flags
from mcpgov.portal_client import (
    LONG_POLL_SECONDS,
    BundlePoll,
    PortalClient,
    PortalError,
    StreamError,
    StreamEvent,
)
from mcpgov.retry import retry
from mcpgov.verify import (
    BundleExpired,
    BundleState,
    BundleVerificationError,
    SupersededUpdate,
    VerifiedBundle,
    VerifiedFlagsUpdate,
    jws_sha256,
    verify_bundle,
    verify_flags_update,
)

log = logging.getLogger("mcpgov.portal")


class BundleManager:
    """Holds the bundle being enforced; installs only bundles that verify against the pinned keys.

    The last verified JWS is cached in ``state_dir/bundle.jws`` (with the anti-replay state), so a
    gateway restarted while the portal is down keeps enforcing it until it expires; after that every
    call is refused (``bundle_expired``) until a fresh bundle verifies.
    """

    def __init__(
        self,
        keys: dict[str, Any],
        *,
        environment: str,
        team: str | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        client: PortalClient | None = None,
        flags_updates: bool = True,
        stream: bool = True,
    ) -> None:
        self.keys = keys
        # False: ask the portal for whole bundles only (what a gateway predating flags updates does)
        self.flags_updates = flags_updates
        # False: the plain long poll only, one request per answer (what a gateway predating streams does)
        self.stream = stream
        self.environment = environment
        self.team = team
        self.client = client
        self.state_dir = Path(state_dir) if state_dir else None
        if self.state_dir:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state = BundleState(self.state_dir / "bundle-state.json" if self.state_dir else None)
        self.current: VerifiedBundle | None = None  # the signed bundle, as verified
        self.flags: VerifiedFlagsUpdate | None = None  # the flags update applied on top of it, if any
        self.enforced: VerifiedBundle | None = None  # `current` with the update's flags: what is enforced
        self.flags_seen = 0  # the newest flags revision the portal sent (applied or refused): not asked again
        self.etag: str | None = None
        # called with `enforced` whenever it changes (a new bundle, or new flags on the same bundle)
        self.listeners: list[Callable[[VerifiedBundle], None]] = []
        self.rejected = 0

    @property
    def cache_path(self) -> Path | None:
        return self.state_dir / "bundle.jws" if self.state_dir else None

    @property
    def flags_cache_path(self) -> Path | None:
        return self.state_dir / "flags.jws" if self.state_dir else None

    @contextlib.contextmanager
    def _cache_lock(self) -> Iterator[None]:
        """Several gateways may share ``state_dir`` (started alike in one working directory): one writer at a time.

        Held for a state-file write and a cache write (a few milliseconds), so blocking the loop is fine.
        """
        if self.state_dir is None:
            yield
            return
        fd = os.open(self.state_dir / "cache.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _write_cache(self, jws: str, path: Path | None = None) -> None:
        """Atomic replace through a temporary file of this process's own (never a shared fixed name)."""
        path = path or self.cache_path
        assert path is not None
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".bundle-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(jws)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def install(self, jws: str, *, source: str, allow_expired: bool = False) -> VerifiedBundle:
        """Verify and enforce ``jws``; on failure the current bundle stays and the error is raised."""
        try:
            verified = verify_bundle(
                jws,
                self.keys,
                team=self.team,
                environment=self.environment,
                state=self.state,
                allow_expired=allow_expired,
            )
        except BundleVerificationError as exc:
            self.rejected += 1
            keep = f"keeping v{self.current.version}" if self.current else "no bundle in force"
            log.error("REJECTED bundle from %s: %s: %s (%s)", source, exc.code, exc.message, keep)
            raise
        with self._cache_lock():
            newest = self.state.accept(verified.bundle, verified.payload_sha256)
            if self.cache_path and source != "cache" and newest:
                self._write_cache(verified.jws)
        self.team = verified.bundle.team
        changed = self.current is None or self.current.sha256 != verified.sha256
        self.current = verified
        self.etag = f'"{verified.sha256}"'
        if self.flags is not None and self.flags.update.bundle_version < verified.version:
            # built after the update was issued: the bundle's own flags are at least as new
            log.info("flags update r%d superseded by bundle v%d", self.flags.revision, verified.version)
            self.flags = None
        if changed:
            log.warning(
                "enforcing bundle v%d of %s/%s from %s (expires %s)",
                verified.version,
                verified.bundle.team,
                verified.bundle.environment,
                source,
                verified.bundle.expires_at.isoformat(),
            )
            self._enforce()
        return verified

    def _enforce(self) -> None:
        """`enforced` = the bundle in force with the flags of the update in force; tell the listeners."""
        assert self.current is not None
        if self.flags is None:
            self.enforced = self.current
        else:
            bundle = with_flags(self.current.bundle, self.flags.update.flags)
            self.enforced = dataclasses.replace(
                self.current, bundle=bundle, flags_revision=self.flags.revision
            )
        for listener in self.listeners:
            listener(self.enforced)

    def install_flags(self, jws: str, *, source: str) -> VerifiedFlagsUpdate | None:
        """Verify a signed flags update and apply its flags to the bundle in force at once.

        Returns the update, or None when it was already applied. On failure nothing changes, the
        error is logged and raised (``superseded``: the bundle in force is newer than the update).
        """
        if self.current is None:
            raise SupersededUpdate("no bundle in force to apply a flags update to")
        try:
            verified = verify_flags_update(
                jws,
                self.keys,
                team=self.current.bundle.team,
                environment=self.environment,
                state=self.state,
                bundle_version=self.current.version,
            )
        except SupersededUpdate as exc:
            log.info("flags update from %s not applied: %s", source, exc.message)
            raise
        except BundleVerificationError as exc:
            self.rejected += 1
            keep = (
                f"keeping the flags of r{self.flags.revision}" if self.flags else "keeping the bundle's flags"
            )
            log.error(
                "REJECTED flags update from %s: %s: %s (%s, bundle v%d)",
                source,
                exc.code,
                exc.message,
                keep,
                self.current.version,
            )
            raise
        self.flags_seen = max(self.flags_seen, verified.revision)
        if self.flags is not None and self.flags.payload_sha256 == verified.payload_sha256:
            return None
        with self._cache_lock():
            newest = self.state.accept_flags(verified.update, verified.payload_sha256)
            if self.flags_cache_path and source != "cache" and newest:
                self._write_cache(verified.jws, self.flags_cache_path)
        self.flags = verified
        off = [f.name for f in verified.update.flags if not f.enabled]
        log.warning(
            "applying flags update r%d of %s/%s from %s on bundle v%d (off: %s)",
            verified.revision,
            verified.update.team,
            verified.update.environment,
            source,
            self.current.version,
            ", ".join(off) or "none",
        )
        self._enforce()
        return verified

    def load_file(self, path: str | os.PathLike[str]) -> VerifiedBundle:
        """Offline mode: a signed bundle file (still verified; an expired one is loaded and fails closed)."""
        jws = Path(path).read_text(encoding="ascii", errors="replace")
        return self.install(jws, source=str(path), allow_expired=True)

    def load_cache(self) -> VerifiedBundle | None:
        """The cached bundle, and the cached flags update on top of it (a kill switch survives a restart)."""
        if not self.cache_path or not self.cache_path.exists():
            return None
        try:
            self.install(self.cache_path.read_text(encoding="ascii"), source="cache", allow_expired=True)
        except BundleVerificationError:
            return None
        if self.flags_cache_path and self.flags_cache_path.exists():
            with contextlib.suppress(BundleVerificationError, OSError):
                self.install_flags(self.flags_cache_path.read_text(encoding="ascii"), source="cache")
        return self.current

    async def refresh(self, *, wait: int = 0) -> bool:
        """One (long-poll) request; True when a new bundle or flags update was installed."""
        assert self.client is not None
        version = self.current.version if self.current else 0
        answer = await self.client.poll_bundle(
            etag=self.etag,
            current_version=version,
            wait=wait,
            flags_revision=self.flags_seen if self.flags_updates and self.current else None,
        )
        return self._take(answer)

    def _take(self, answer: BundlePoll) -> bool:
        """Install what one answer of the (long) poll carries; True when something new was installed."""
        status, jws, etag = answer.status, answer.jws, answer.etag
        if status != 200 or jws is None:
            return False
        if answer.flags_revision is not None:
            try:
                return self.install_flags(jws, source="portal") is not None
            except BundleVerificationError:
                # never used; ask again only when the portal has a newer revision
                self.flags_seen = max(self.flags_seen, answer.flags_revision)
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

    def _streams(self) -> bool:
        return bool(self.stream and self.flags_updates and self.current and self.etag)

    async def follow(self) -> bool:
        """One streamed long poll: every flags update on it is verified and installed as it arrives,
        until the stream ends — its bundle changed (the next request fetches the new one), its lifetime
        is over, or its client was revoked (raised as the poll's 401 would be). A portal answering
        without a stream is taken as one long poll's answer. True when something new was installed."""
        assert self.client is not None and self.current is not None and self.etag is not None
        installed = False
        async with self.client.bundle_stream(
            etag=self.etag, current_version=self.current.version, flags_revision=self.flags_seen
        ) as stream:
            if stream.answer is not None:
                return self._take(stream.answer)
            async with contextlib.aclosing(stream.events()) as events:
                async for event in events:
                    if event.event == "flags":
                        installed = self._take_event(event) or installed
                    elif event.event == "end":
                        self._ended(event)  # then the response is read to its end: nothing may follow
                    else:
                        self.rejected += 1
                        log.error(
                            "REFUSED event %r on the bundle stream: not part of the contract", event.event
                        )
        return installed

    def _take_event(self, event: StreamEvent) -> bool:
        """A flags update event: verified and installed exactly as one from the long poll."""
        if not (event.id and event.id.isascii() and event.id.isdigit() and len(event.id) <= 10):
            self.rejected += 1
            log.error(
                "REFUSED flags update event on the bundle stream: its id %r is not a revision", event.id
            )
            return False
        try:
            return self.install_flags(event.data, source="portal") is not None
        except BundleVerificationError:
            # never used; the portal sends only newer revisions on this stream, and none again after it
            self.flags_seen = max(self.flags_seen, int(event.id))
            return False

    def _ended(self, event: StreamEvent) -> None:
        """The stream's final event: a revoked or expired client is the poll's 401; any other reason
        (the bundle changed, the stream's lifetime is over) just means: ask again."""
        try:
            end = json.loads(event.data)
        except ValueError:
            end = None
        if not isinstance(end, dict) or not isinstance(end.get("reason"), str):
            raise StreamError("malformed_stream", 'the bundle stream\'s end event is not {"reason": …}')
        if end["reason"] == "unauthorized":
            assert self.client is not None
            self.client.mark_revoked()
            raise PortalError(401, str(end.get("code", "unauthorized")), str(end.get("detail", "")), end)
        log.debug("bundle stream ended: %s", end["reason"])

    async def _next(self) -> bool:
        if self._streams():
            return await self.follow()
        return await self.refresh(wait=LONG_POLL_SECONDS if self.etag else 0)

    async def run(self, *, min_backoff: float = 1.0, max_backoff: float = 30.0) -> None:
        """Follow the portal forever (the stream, else the long poll); changes are installed as soon
        as they arrive. A broken stream (bad framing, silence past the heartbeat, a cut) is retried
        with the same backoff as a failed poll."""
        while True:
            await retry(
                self._next,
                what="bundle stream" if self._streams() else "bundle poll",
                retry_on=(httpx2.HTTPError, PortalError),
                first=min_backoff,
                cap=max_backoff,
                logger=log,
            )
            if self.etag is None:  # nothing published yet
                await anyio.sleep(min_backoff)
