"""GET /api/v1/bundle/ — the signed bundle for an enforcement client (see docs/enforcer-api.md).

An async Django view, served by uvicorn: a long poll (`?wait=`) holds no thread while it
waits on `portal.realtime`. A gateway that says which flags update it has
(`X-Mcpgov-Flags-Revision`) is answered a newer signed flags update (`mcpgov-flags+jws`, issued
once per toggle, its reply built once per process) instead of waiting for a whole bundle.
The hot path (an unchanged bundle, answered 304) touches the
database only through in-process caches: token → client (dropped on the client's revocation event,
so an open long poll is answered 401 as soon as its client is revoked) and environment → latest
bundle and flags update (dropped on every publish and issue notification). Each is re-read after
`CLIENT_CACHE_SECONDS` / `BUNDLE_CACHE_SECONDS` (1 s), or after 30 s while this process's Redis
subscription is up — then every notification of every process reaches the cache, and a gap in the
subscription empties it (`portal.realtime.add_gap_listener`).

A gateway that runs a bundle may ask for the same long poll streamed (`Accept: text/event-stream`):
the response stays open and carries every applicable flags update as an event, built once per process
per update like the poll's reply, until the bundle changes, the client is revoked or expires, or the
stream's lifetime is over (`_stream`; the wire contract is in docs/enforcer-api.md). A toggle then costs
each gateway one small chunk on an open response instead of a reply and a re-poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponse, StreamingHttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET

from governance.api.authentication import NOT_AUTHENTICATED, client_token
from governance.models import EnforcementClient, FlagsUpdate, PolicyBundle
from governance.services import bundles as bundle_service
from governance.services import flag_updates
from governance.services.clients import (
    CLIENT_ACTIVE,
    CLIENT_CHANNEL_PREFIX,
    SEEN_THROTTLE_SECONDS,
    TokenError,
    client_authenticate,
    client_channel,
    client_seen,
)
from portal import metrics, realtime
from portal.asgi_routes import DjangoMirror, request_headers, request_query
from portal.db import db_call

CLIENT_CACHE_SECONDS = 1.0
# While this process's Redis subscription is up, every revocation reaches the cache at once (its event
# drops the entry, and a gap in the subscription empties the cache), so a cached client may serve longer:
# a thousand gateways re-polling after a toggle are not re-authenticated one database read each.
CLIENT_CACHE_SECONDS_DELIVERING = 30.0
BUNDLE_CACHE_SECONDS = 1.0
BUNDLE_CACHE_SECONDS_DELIVERING = 30.0  # as for clients: every publish and issue drops its entry at once
MAX_WAIT_SECONDS = 30.0
_CACHE_LIMIT = 10_000


@dataclass(frozen=True)
class _Current:
    version: int
    etag: str
    jws: str
    issued_at: datetime
    expires_at: datetime
    fetched: float


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    issued_at: float | None = None  # a flags update's reply: when the update was issued (Unix time)


@dataclass(frozen=True)
class Stream:
    """A streamed answer (`text/event-stream`): the headers, then `chunks` as they come."""

    headers: dict[str, str]
    chunks: AsyncIterator[bytes]
    status: int = 200


@dataclass(frozen=True)
class _Update:
    """The latest flags update of an environment, with its reply (long poll) and its event (stream)
    ready to send to every gateway: both built once per process per update."""

    revision: int
    bundle_version: int
    expires_at: datetime
    reply: Reply
    fetched: float
    event: bytes = b""


_clients: dict[str, tuple[float, EnforcementClient | TokenError]] = {}
_bundles: dict[int, _Current | None] = {}
_updates: dict[int, _Update] = {}
_NO_UPDATE = -1  # `_updates` placeholder revision: the environment has none
_refresh_locks: dict[int, asyncio.Lock] = {}
# When a notification last dropped an entry: a read that started before it may predate the change,
# so its result is not cached (it would outlive the notification that should have replaced it).
_dropped: dict[tuple[str, int], float] = {}


@dataclass(frozen=True)
class _Flight:
    started: float
    task: asyncio.Task


# One database read per key at a time: requests that arrive while it runs share its result
# instead of queueing their own reads (every cache expiry would otherwise be a stampede).
_flights: dict[tuple[str, object], _Flight] = {}


async def _shared_read(key: tuple[str, object], fn, *args, fresh_since: float):
    """`fn(*args)` through `_db`, joining a read of the same key already running if it started
    at or after `fresh_since` (so it cannot predate what the caller needs to see)."""
    loop = asyncio.get_running_loop()
    flight = _flights.get(key)
    if (
        flight is None
        or flight.started < fresh_since
        or flight.task.get_loop() is not loop
        or flight.task.done()
    ):
        flight = _Flight(time.monotonic(), loop.create_task(_db(fn, *args)))
        _flights[key] = flight
        flight.task.add_done_callback(
            lambda _t, key=key, flight=flight: (
                _flights.pop(key, None) if _flights.get(key) is flight else None
            )
        )
    return flight.started, await asyncio.shield(flight.task)


def drop_cached_bundle(channel: str, token) -> None:
    """Listener (registered in GovernanceConfig.ready): a new bundle version empties its cache entry."""
    tail = channel[len(bundle_service.CHANNEL_PREFIX) :]
    if tail.isdigit():
        _bundles.pop(int(tail), None)
        _dropped[("bundle", int(tail))] = time.monotonic()


def drop_cached_update(channel: str, token) -> None:
    """Listener (registered in GovernanceConfig.ready): a new flags update empties its cache entry."""
    tail = channel[len(flag_updates.FLAGS_UPDATE_CHANNEL_PREFIX) :]
    if tail.isdigit():
        _updates.pop(int(tail), None)
        _dropped[("update", int(tail))] = time.monotonic()


def drop_caches() -> None:
    """Gap listener (registered in GovernanceConfig.ready): revocations, new bundles and flags
    updates may have been missed."""
    _dropped[("client", 0)] = time.monotonic()
    _clients.clear()
    _bundles.clear()
    _updates.clear()


def drop_cached_client(channel: str, token) -> None:
    """Listener (registered in GovernanceConfig.ready): a revoked or changed client is authenticated afresh."""
    tail = channel[len(CLIENT_CHANNEL_PREFIX) :]
    if tail.isdigit():
        client_id = int(tail)
        for key, (_at, result) in list(_clients.items()):
            if isinstance(result, EnforcementClient) and result.pk == client_id:
                _clients.pop(key, None)
        _dropped[("client", 0)] = time.monotonic()  # any client: entries are keyed by token, not id


async def _db(fn, /, *args, **kwargs):
    """ORM work, thread-sensitive as Django wants it. Through `asgi_bundle_route` (no Django
    request context) that is one shared thread for every request of the process, so a
    waiting long poll holds no thread of its own; under the test client, the test's thread.
    The connection goes back to the pool after each call: a waiting long poll holds none."""
    return await db_call(fn, *args, **kwargs)


def _clear_caches() -> None:
    """For tests: forget cached clients and bundles."""
    _clients.clear()
    _bundles.clear()
    _updates.clear()
    _flights.clear()
    _dropped.clear()


def _authenticate_or_error(token: str) -> EnforcementClient | TokenError:
    try:
        return client_authenticate(token)
    except TokenError as exc:
        return exc


def _client_max_age() -> float:
    return CLIENT_CACHE_SECONDS_DELIVERING if realtime.delivering() else CLIENT_CACHE_SECONDS


async def _authenticate(
    token: str, *, fresh_since: float | None = None, max_age: float | None = None
) -> EnforcementClient:
    """The token's client, from the cache (at most `max_age` seconds old, by default as long as
    revocations are known to reach it: `_client_max_age`) or — with `fresh_since` — read no earlier
    than that."""
    key = hashlib.sha256(token.encode()).hexdigest()
    now = time.monotonic()
    max_age = _client_max_age() if max_age is None else max_age
    needed = now - max_age if fresh_since is None else fresh_since
    cached = _clients.get(key)
    if cached is None or cached[0] < needed:
        started, result = await _shared_read(
            ("client", key), _authenticate_or_error, token, fresh_since=needed
        )
        if len(_clients) >= _CACHE_LIMIT:
            _clients.clear()
        cached = (started, result)
        # a read that started before a revocation dropped its entries may predate the revocation:
        # this caller may use it (it asked for nothing newer), but it is not kept for later ones
        if started >= _dropped.get(("client", 0), 0.0):
            _clients[key] = cached
    result = cached[1]
    if isinstance(result, TokenError):
        raise result
    if result.expires_at is not None and result.expires_at <= timezone.now():
        raise TokenError("This enforcement-client token has expired.", "token_expired")
    return result


def _read_latest(environment_id: int) -> dict | None:
    return (
        PolicyBundle.objects.filter(environment_id=environment_id)
        .order_by("-version")
        .values("version", "etag", "jws", "issued_at", "expires_at")
        .first()
    )


def _state_max_age() -> float:
    return BUNDLE_CACHE_SECONDS_DELIVERING if realtime.delivering() else BUNDLE_CACHE_SECONDS


async def _current(environment_id: int, *, fresh_since: float | None = None) -> _Current | None:
    """The latest bundle: from the cache (at most BUNDLE_CACHE_SECONDS old, dropped on every
    publish notification), or — with `fresh_since` — read no earlier than that instant."""
    now = time.monotonic()
    needed = now - _state_max_age() if fresh_since is None else fresh_since
    cached = _bundles.get(environment_id)
    if cached is not None and cached.fetched >= needed:
        return cached
    started, row = await _shared_read(
        ("bundle", environment_id), _read_latest, environment_id, fresh_since=needed
    )
    return _cache_bundle(environment_id, row, started)


def _read_latest_update(environment_id: int) -> dict | None:
    return (
        FlagsUpdate.objects.filter(environment_id=environment_id)
        .order_by("-revision")
        .values("revision", "bundle_version", "jws", "issued_at", "expires_at")
        .first()
    )


def _read_latest_both(environment_id: int) -> tuple[dict | None, dict | None]:
    """The latest bundle and flags update in one trip to the ORM thread (a long poll's wake-up)."""
    return _read_latest(environment_id), _read_latest_update(environment_id)


def _update_reply(revision: int, jws: str, issued_at: datetime) -> Reply:
    headers = {
        "Content-Type": "application/jose",
        "X-Mcpgov-Flags-Revision": str(revision),
        "Cache-Control": "no-cache",
    }
    return Reply(200, headers, jws.encode("ascii"), issued_at.timestamp())


def _cache_bundle(environment_id: int, row: dict | None, started: float) -> _Current | None:
    if row is None:
        return None
    current = _Current(fetched=started, **row)
    if len(_bundles) >= _CACHE_LIMIT:
        _bundles.clear()
    previous = _bundles.get(environment_id)
    if started < _dropped.get(("bundle", environment_id), 0.0):
        return current  # this caller may use it (it asked for no newer); later ones read again
    if previous is None or previous.fetched <= started:
        _bundles[environment_id] = current
    return current


def _cache_update(environment_id: int, row: dict | None, started: float) -> _Update:
    if row is None:
        cached = _Update(_NO_UPDATE, 0, timezone.now(), Reply(404, {}), started)
    else:
        reply = _update_reply(row["revision"], row["jws"], row["issued_at"])
        cached = _Update(
            row["revision"],
            row["bundle_version"],
            row["expires_at"],
            reply,
            started,
            _sse_event("flags", row["jws"], event_id=row["revision"]),
        )
    if len(_updates) >= _CACHE_LIMIT:
        _updates.clear()
    previous = _updates.get(environment_id)
    if started < _dropped.get(("update", environment_id), 0.0):
        return cached
    if previous is None or previous.fetched <= started:
        _updates[environment_id] = cached
    return cached


async def _current_and_update(
    environment_id: int, *, fresh_since: float
) -> tuple[_Current | None, _Update | None]:
    """`_current` and `_update`, both read no earlier than `fresh_since`: one shared read for
    every waiter of the process that one notification woke (not one per waiter, nor two)."""
    bundle, update = _bundles.get(environment_id), _updates.get(environment_id)
    if bundle is None or bundle.fetched < fresh_since or update is None or update.fetched < fresh_since:
        started, (bundle_row, update_row) = await _shared_read(
            ("both", environment_id), _read_latest_both, environment_id, fresh_since=fresh_since
        )
        bundle = _cache_bundle(environment_id, bundle_row, started)
        update = _cache_update(environment_id, update_row, started)
    return bundle, (None if update.revision == _NO_UPDATE else update)


async def _update(environment_id: int, *, fresh_since: float | None = None) -> _Update | None:
    """The latest flags update, as `_current` reads the latest bundle (cache dropped on every issue)."""
    now = time.monotonic()
    needed = now - _state_max_age() if fresh_since is None else fresh_since
    cached = _updates.get(environment_id)
    if cached is None or cached.fetched < needed:
        started, row = await _shared_read(
            ("update", environment_id), _read_latest_update, environment_id, fresh_since=needed
        )
        cached = _cache_update(environment_id, row, started)
    return None if cached.revision == _NO_UPDATE else cached


def _applicable(update: _Update | None, current: _Current, flags_seen: int) -> _Update | None:
    """The flags update if the gateway lacks it and it applies to the bundle it runs (`current`)."""
    if update is None or update.revision <= flags_seen or update.bundle_version < current.version:
        return None
    if update.expires_at <= timezone.now():
        return None
    return update


def _update_for(update: _Update | None, current: _Current, flags_seen: int) -> Reply | None:
    """The flags update's reply if the gateway lacks it and it applies to the bundle it runs (`current`)."""
    update = _applicable(update, current, flags_seen)
    return None if update is None else update.reply


def _needs_reissue(client: EnforcementClient, current: _Current) -> bool:
    return bundle_service.bundle_needs_reissue(
        issued_at=current.issued_at,
        expires_at=current.expires_at,
        ttl_seconds=client.team.bundle_ttl_seconds,
        now=timezone.now(),
    )


async def _fresh(client: EnforcementClient, current: _Current | None) -> _Current | None:
    """Re-issue a bundle past half its lifetime here too, so gateways never fail closed
    while the portal is up, even if the periodic refresh (Celery beat) is not running."""
    if current is None or not _needs_reissue(client, current):
        return current
    lock = _refresh_locks.setdefault(client.environment_id, asyncio.Lock())
    async with lock:
        current = await _current(client.environment_id, fresh_since=time.monotonic())
        if current is not None and _needs_reissue(client, current):
            await _db(
                bundle_service.bundle_publish,
                environment=client.environment,
                reason=bundle_service.REFRESH_REASON,
            )
            current = await _current(client.environment_id, fresh_since=time.monotonic())
    return current


def _matches(if_none_match: str, etag: str) -> bool:
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*":
            return True
        candidate = candidate.removeprefix("W/").strip('"')
        if candidate == etag:
            return True
    return False


def _seen_needed(client: EnforcementClient, address: str | None, version: int | None) -> bool:
    # Mirrors client_seen's throttle so the common case needs no thread hop.
    if (
        client.last_seen_at is None
        or (timezone.now() - client.last_seen_at).total_seconds() >= SEEN_THROTTLE_SECONDS
    ):
        return True
    return bool(address and address != client.last_seen_address) or (
        version is not None and version != client.bundle_version
    )


def _reported_revision(header: str | None) -> int | None:
    """The gateway's flags revision; None when absent (a gateway that takes whole bundles only); -1 malformed."""
    if header is None or not header.strip(" \t"):
        return None
    value = _reported_version(header)
    return -1 if value is None else value


def _reported_version(header: str) -> int | None:
    """The header's version, or None unless it is ASCII digits within the stored integer's range."""
    value = header.strip(" \t")
    if not (value.isascii() and value.isdigit() and len(value) <= 10):
        return None
    return int(value) if int(value) <= 2**31 - 1 else None


def _error(status: int, detail: str, code: str, **headers: str) -> Reply:
    body = json.dumps({"detail": detail, "code": code}).encode()
    return Reply(status, {"Content-Type": "application/json", **headers}, body)


def _unauthorized(detail: str, code: str) -> Reply:
    return _error(401, detail, code, **{"WWW-Authenticate": 'Bearer realm="mcpgov"'})


def _bundle_headers(current: _Current) -> dict[str, str]:
    return {
        "ETag": f'"{current.etag}"',
        "X-Bundle-Version": str(current.version),
        "Cache-Control": "no-cache",
    }


def _bundle_reply(current: _Current) -> Reply:
    return Reply(
        200, {"Content-Type": "application/jose", **_bundle_headers(current)}, current.jws.encode("ascii")
    )


def _not_modified(current: _Current) -> Reply:
    return Reply(304, _bundle_headers(current))


# --- the streamed long poll (Accept: text/event-stream) --------------------------------------------


def _sse_event(event: str, data: str, *, event_id: int | None = None) -> bytes:
    """One server-sent event; `data` is one line of ASCII (a JWS or compact JSON)."""
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id is not None else "")
    return f"{head}data: {data}\n\n".encode("ascii")


def _end_event(reason: str, **fields: str | int) -> bytes:
    return _sse_event("end", json.dumps({"reason": reason, **fields}, separators=(",", ":")))


_HEARTBEAT = b": heartbeat\n\n"
_END_BUNDLE_CHANGED = _end_event("bundle_changed")
_END_MAX_LIFETIME = _end_event("max_lifetime")


def wants_stream(accept: str | None) -> bool:
    """True when the request's Accept header names `text/event-stream` (the gateway's opt-in)."""
    if not accept:
        return False
    return any(part.split(";", 1)[0].strip().lower() == "text/event-stream" for part in accept.split(","))


async def _stream(
    client: EnforcementClient, token: str, if_none_match: str, flags_seen: int
) -> AsyncIterator[bytes]:
    """The events of one streamed long poll: every applicable flags update as it is issued, a heartbeat
    comment when nothing happened for a while, and a final `end` event when the bundle changed, the
    client was revoked or expired, or the stream's lifetime is over.

    One subscription for the stream's whole life (a long poll subscribes once per answer); each
    wake-up re-reads the state exactly as the long poll does (`serve_bundle`'s `read`), so every stream
    woken by one toggle shares one read per process, and sends the update's event bytes, built once.
    A cancelled stream (the client went away) leaves the subscription on the way out."""
    environment_id = client.environment_id
    flags_channel = flag_updates.flags_update_channel(environment_id)
    heartbeat = settings.MCPGOV_BUNDLE_STREAM_HEARTBEAT_SECONDS
    lifetime = settings.MCPGOV_BUNDLE_STREAM_MAX_SECONDS * random.uniform(0.75, 1.0)  # noqa: S311 (spread)
    deadline = time.monotonic() + lifetime
    also = {client_channel(client.pk): CLIENT_ACTIVE, flags_channel: None}
    async with realtime.subscribe(bundle_service.bundle_channel(environment_id), also=also) as sub:
        since, woken = time.monotonic(), False
        while True:
            if woken:
                current, update = await _current_and_update(environment_id, fresh_since=since)
            else:  # right after subscribing, or a heartbeat: the caches will do (as the poll's first read)
                current, update = await _current(environment_id), await _update(environment_id)
            if current is None or not _matches(if_none_match, current.etag):
                # no authentication needed to end a stream: the request that follows is authenticated
                # (a read per stream here would be one per gateway on every bundle the portal publishes)
                yield _END_BUNDLE_CHANGED  # the gateway fetches the bundle with its next request
                return
            sending = _applicable(update, current, flags_seen)
            try:
                # as the poll's `read`: with something to send, the cached client will do (its
                # revocation drops it); woken with nothing to send, read afresh since the wake-up
                if sending is not None:
                    await _authenticate(token, max_age=heartbeat + CLIENT_CACHE_SECONDS_DELIVERING + 5)
                elif woken:
                    await _authenticate(token, fresh_since=since)
                else:
                    await _authenticate(token)  # a heartbeat: notices an expiry, which has no event
            except TokenError as exc:
                yield _end_event("unauthorized", status=401, code=exc.code, detail=str(exc))
                return
            if sending is not None:
                flags_seen = sending.revision
                yield sending.event
                metrics.flags_update_delivered(sending.reply.issued_at)  # the event was handed over
            # what this waiter has seen, for the fallback poll (a lost notification still wakes it)
            sub.seen = current.version
            sub.tokens[flags_channel] = update.revision if update else 0
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                yield _END_MAX_LIFETIME
                return
            woken = await sub.wait(min(heartbeat, remaining))
            if woken:
                since = sub.woken_at or time.monotonic()
            elif time.monotonic() < deadline:
                yield _HEARTBEAT


def _stream_headers(current: _Current) -> dict[str, str]:
    return {
        "Content-Type": "text/event-stream",
        **_bundle_headers(current),
        "X-Accel-Buffering": "no",  # proxies must not buffer the stream
        "X-Mcpgov-Stream-Heartbeat": f"{settings.MCPGOV_BUNDLE_STREAM_HEARTBEAT_SECONDS:g}",
    }


async def serve_bundle(
    *,
    authorization: str,
    if_none_match: str,
    wait: str | None,
    reported_version: str | None,
    address: str | None,
    flags_revision: str | None = None,
    accept: str | None = None,
) -> Reply | Stream:
    """The endpoint's logic, independent of how the request arrived (Django view or raw ASGI).

    A `Stream` only for a gateway that asks for one (`Accept: text/event-stream`) with a matching
    `If-None-Match` and `X-Mcpgov-Flags-Revision`; every other answer, every error included, is the
    long poll's `Reply`."""
    try:
        token = client_token(authorization)
        if token is None:
            return _unauthorized(NOT_AUTHENTICATED, "not_authenticated")
        client = await _authenticate(token)
    except TokenError as exc:
        return _unauthorized(str(exc), exc.code)

    wait_seconds = 0.0
    if wait is not None:
        try:
            wait_seconds = float(wait)
        except ValueError:
            wait_seconds = -1.0
        if not 0 <= wait_seconds <= MAX_WAIT_SECONDS:
            return _error(400, "wait must be a number of seconds between 0 and 30.", "invalid_wait")

    running = None
    if reported_version is not None and reported_version.strip(" \t"):
        running = _reported_version(reported_version)
        if running is None:
            return _error(
                400,
                "X-Mcpgov-Bundle-Version must be the bundle version the gateway runs (ASCII digits).",
                "invalid_bundle_version",
            )
    flags_seen = _reported_revision(flags_revision)
    if flags_seen == -1:
        return _error(
            400,
            "X-Mcpgov-Flags-Revision must be the flags update revision the gateway has (ASCII digits).",
            "invalid_flags_revision",
        )
    if _seen_needed(client, address, running):
        await _db(client_seen, client=client, address=address, bundle_version=running)

    realtime.ensure_started()
    current = await _fresh(client, await _current(client.environment_id))
    if current is None:
        return _error(404, "No bundle has been published for this environment yet.", "no_bundle")
    if not if_none_match or not _matches(if_none_match, current.etag):
        return _bundle_reply(current)
    if flags_seen is not None and wants_stream(accept):
        return Stream(_stream_headers(current), _stream(client, token, if_none_match, flags_seen))
    also: dict = {client_channel(client.pk): CLIENT_ACTIVE}  # revocation wakes the poll too
    if flags_seen is not None:
        update = await _update(client.environment_id)
        reply = _update_for(update, current, flags_seen)
        if reply is not None:
            return reply
        also[flag_updates.flags_update_channel(client.environment_id)] = update.revision if update else 0
    if wait_seconds <= 0:
        return _not_modified(current)

    def answer(state: tuple[_Current | None, _Update | None]) -> Reply | None:
        current, update = state
        if current is None:
            return _error(404, "No bundle has been published for this environment yet.", "no_bundle")
        if not _matches(if_none_match, current.etag):
            return _bundle_reply(current)
        return None if flags_seen is None else _update_for(update, current, flags_seen)

    woken = False  # the first read follows the subscription; every later one, a wake-up

    async def read(since: float) -> tuple[_Current | None, _Update | None]:
        # `since`: subscribed, or the wake-up delivered; every waiter woken by one change shares one read
        nonlocal woken
        if not woken:
            # Right after subscribing: the cache will do. Every publish and issue drops its entry as its
            # notification arrives (in every process, through Redis), so an entry still there predates no
            # change notified before the subscription, and a later change wakes this waiter; a lost
            # notification is caught by the fallback poll (its token is what this read returns).
            state = (
                await _current(client.environment_id),
                await _update(client.environment_id) if flags_seen is not None else None,
            )
        elif flags_seen is None:
            state = (await _current(client.environment_id, fresh_since=since), None)
        else:
            state = await _current_and_update(client.environment_id, fresh_since=since)
        # Still a valid client? Its revocation drops the cached answer (and wakes this poll), so with
        # something to send the answer cached when this poll began will do: a thousand gateways woken
        # by one toggle are not re-authenticated one database read each. Woken with nothing to send
        # (the revocation's fallback poll, a spurious wake-up): read afresh, since the wake-up.
        if answer(state):
            await _authenticate(token, max_age=MAX_WAIT_SECONDS + 5)
        elif woken:
            await _authenticate(token, fresh_since=since)
        else:
            await _authenticate(token)  # authenticated a moment ago, at the request's start
        woken = True
        return state

    try:
        current, update = await realtime.long_poll(
            bundle_service.bundle_channel(client.environment_id),
            read=read,
            ready=lambda state: answer(state) is not None,
            token=lambda state: state[0].version if state[0] else None,
            timeout=wait_seconds,
            also=also,
            fresh=True,
        )
    except TokenError as exc:
        return _unauthorized(str(exc), exc.code)
    return answer((current, update)) or _not_modified(current)


# --- the two ways in ----------------------------------------------------------------------------


@require_GET
async def bundle_view(request):
    """The Django view (URL name governance-api:bundle); used by the test client and any server.

    Streams only under ASGI. A WSGI server (`manage.py runserver`, gunicorn with config.wsgi) would
    serve an asynchronous stream by reading it to its end first (Django's StreamingHttpResponse does
    so): a flags update would reach the gateway when the stream's lifetime is over, minutes late.
    There the gateway is given the plain long poll's answer, which it takes as such.
    """
    reply = await serve_bundle(
        authorization=request.headers.get("Authorization", ""),
        if_none_match=request.headers.get("If-None-Match", ""),
        wait=request.GET.get("wait"),
        reported_version=request.headers.get("X-Mcpgov-Bundle-Version"),
        address=request.META.get("REMOTE_ADDR") or None,
        flags_revision=request.headers.get("X-Mcpgov-Flags-Revision"),
        accept=request.headers.get("Accept") if isinstance(request, ASGIRequest) else None,
    )
    if isinstance(reply, Stream):
        response = StreamingHttpResponse(reply.chunks, content_type=reply.headers.pop("Content-Type"))
        for name, value in reply.headers.items():
            response[name] = value
        return response
    response = HttpResponse(
        reply.body, status=reply.status, content_type=reply.headers.pop("Content-Type", None)
    )
    for name, value in reply.headers.items():
        response[name] = value
    if reply.issued_at is not None:
        metrics.flags_update_delivered(reply.issued_at)
    return response


def asgi_bundle_route(django_app, path: str = "/api/v1/bundle/"):
    """Wrap the Django ASGI app: GET `path` is answered by `serve_bundle` directly.

    Why this bypass exists: Django's ASGI handler gives every request its own thread for its
    sync signal receivers and holds it until the response is sent, so a thousand gateways
    long-polling for the next bundle would hold a thousand idle threads; answered here, a
    waiting long poll holds none (and no database connection), and the hot `304` path (every
    gateway's poll) skips the middleware stack — `bench/bundle_serve.py --through-django`
    measures the difference. The price is that this route must behave like the Django path for
    every setting that path applies to it, and it does so by handing over, not re-implementing:
    a host not in ALLOWED_HOSTS (Django answers 400), plain HTTP under SECURE_SSL_REDIRECT
    (Django redirects) and a NUL byte in the query (RejectNulMiddleware answers 400) go to
    Django; the response headers of SecurityMiddleware (HSTS, nosniff, referrer and opener
    policies) and django-csp are made by running that middleware (`portal.asgi_routes.DjangoMirror`,
    shared with the audit batch route).
    The session, CSRF, authentication and clickjacking middleware do not apply to a bearer-token
    endpoint that answers JOSE or JSON. `tests/governance/test_bundle_route.py` checks the two
    paths answer alike for each of these settings. Everything else goes to Django unchanged.
    A streamed answer is sent here chunk by chunk (`_send_stream`) while the client's disconnect is
    watched, so a gateway that goes away ends its stream and leaves its subscription at once.
    """
    mirror = DjangoMirror(path, "GET")

    async def application(scope, receive, send):
        if (
            scope["type"] != "http"
            or scope["path"] != scope.get("root_path", "") + path
            or scope["method"] != "GET"
        ):
            return await django_app(scope, receive, send)
        headers = request_headers(scope)
        query = request_query(scope)
        if mirror.handled_by_django(scope, headers, query):
            return await django_app(scope, receive, send)
        started = time.perf_counter()
        client = scope.get("client")
        work = asyncio.ensure_future(
            serve_bundle(
                authorization=headers.get("authorization", ""),
                if_none_match=headers.get("if-none-match", ""),
                wait=query["wait"][-1] if "wait" in query else None,
                reported_version=headers.get("x-mcpgov-bundle-version"),
                address=client[0] if client else None,
                flags_revision=headers.get("x-mcpgov-flags-revision"),
                accept=headers.get("accept"),
            )
        )
        disconnected = asyncio.ensure_future(_until_disconnect(receive))
        await asyncio.wait({work, disconnected}, return_when=asyncio.FIRST_COMPLETED)
        if not work.done():  # the client went away mid long poll
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
            return
        reply = work.result()
        if isinstance(reply, Stream):
            return await _send_stream(reply, send, disconnected, mirror.security_headers(scope, headers, 200))
        disconnected.cancel()
        response_headers = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()
        ]
        response_headers += [
            (b"content-length", str(len(reply.body)).encode()),
            *mirror.security_headers(scope, headers, reply.status),
        ]
        await send({"type": "http.response.start", "status": reply.status, "headers": response_headers})
        await send({"type": "http.response.body", "body": reply.body})
        if reply.issued_at is not None:
            metrics.flags_update_delivered(reply.issued_at)
        metrics.request_observed(
            "governance-api:bundle", "GET", reply.status, started
        )  # Django's name for it

    return application


async def _send_stream(stream: Stream, send, disconnected: asyncio.Future, security_headers) -> None:
    """Send a streamed answer chunk by chunk until it ends or the client goes away; either way the
    stream's generator is closed (its subscription left) before this returns."""
    response_headers = [
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in stream.headers.items()
    ] + list(security_headers)

    async def pump() -> None:
        await send({"type": "http.response.start", "status": stream.status, "headers": response_headers})
        async for chunk in stream.chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    pumping = asyncio.ensure_future(pump())
    try:
        await asyncio.wait({pumping, disconnected}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pumping, disconnected):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await stream.chunks.aclose()  # its `finally` (leaving the subscription) has run by now
    if pumping.done() and not pumping.cancelled() and pumping.exception() is not None:
        exc = pumping.exception()
        if not isinstance(exc, OSError):  # the client went away mid-send: nothing to report
            raise exc


async def _until_disconnect(receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
