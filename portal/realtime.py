"""Change notifications for long polls: in-process asyncio waiters per channel, woken across processes.

Async views (served by uvicorn) wait on a *channel* — any string such as ``"bundle:12"`` or
``"session-control:<uuid>"`` — without holding a thread. A waiter is woken by:

(a) ``notify(channel)`` in this process (immediately), and, when ``settings.REDIS_URL`` is
    set, in any other process through Redis pub/sub (``PUBLISH mcpgov:rt:<channel>``);
(b) a fallback poll: for channels whose prefix has a registered *source*, one sync function
    is called every ``FAST_POLL``/``MCPGOV_REALTIME_SAFETY_POLL`` seconds with ALL channels of that prefix that have waiters in
    this process (one query for all waiters, not one per waiter). It returns the current
    state token of each channel; waiters whose ``seen`` token (not None) differs are woken. The
    poll is fast (``FAST_POLL``) when there is no Redis connection and slow (``MCPGOV_REALTIME_SAFETY_POLL``, a
    safety net against a lost message) while there is one.

Wake-ups may be spurious: after waking, re-read the state and wait again if nothing changed.

API::

    from portal import realtime

    # once, in the AppConfig.ready() of the app that owns the channel family:
    realtime.register_source("bundle:", fetch_versions)   # fetch(["bundle:1", ...]) -> {"bundle:1": 7, ...}

    # in an async view — subscribe BEFORE reading the state, so no change slips in between:
    async with realtime.subscribe(f"bundle:{env_id}", seen=version) as sub:
        while not changed():
            if not await sub.wait(remaining):      # False: timed out
                break
            sub.seen = current_version              # what this waiter has now seen

    # (a stream that stays open across many changes — the streamed bundle long poll — keeps one
    # subscription for its whole life this way, and sets `sub.tokens[ch]` for each `also` channel)

    # or, the same loop written once (what the bundle, control and flag-stream endpoints use):
    state = await realtime.long_poll(f"bundle:{env_id}", read=read_state, ready=changed,
                                     token=lambda state: state.version, timeout=wait)

    # one waiter, woken by more than one channel (e.g. a long poll that must also notice the
    # revocation of its client); `also` maps each further channel to the token seen on it:
    async with realtime.subscribe(f"bundle:{env_id}", seen=version, also={"client:7": "active"}) as sub:
        ...

    # writers (sync code, e.g. a service), after commit:
    realtime.notify_on_commit(f"bundle:{env_id}", token=new_version)
    realtime.notify(channel, token)               # now (already committed / not in a transaction)

    # cheap in-process reaction to every notification of a prefix (e.g. dropping a cache entry);
    # the callback runs in the notifying thread or the event loop and must be quick and thread-safe:
    realtime.add_listener("bundle:", lambda channel, token: cache.pop(channel, None))
    # ... and such a cache may be trusted for longer only while other processes' notifications arrive:
    realtime.delivering()                         # True while this process's Redis subscription is up
    realtime.add_gap_listener(cache.clear)        # called when it starts or ends (messages may be lost)

    realtime.ensure_started()                     # (async code) start the Redis listener early

Tokens are strings or ints (JSON-serialisable, compared with ``!=``); ``None`` means unknown.
A waiter subscribed with ``seen=None`` is woken only by notifications, never by the fallback
poll — give it the token you read whenever you have one.

Holding no thread: Django's ASGI handler gives every request a thread (for its sync
``request_started`` receivers) until the response is sent, so a long poll served as an
ordinary async Django view still holds one idle thread while it waits. For an endpoint with
many concurrent waiters, answer its path in front of Django the way
``governance.api.bundle.asgi_bundle_route`` does (wired in ``config/asgi.py``), and do ORM
work with ``sync_to_async(..., thread_sensitive=True)`` — outside a Django request that is
one shared thread for the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import threading
import time
import weakref
from collections import defaultdict
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections, connection, transaction

from portal import metrics

logger = logging.getLogger(__name__)

REDIS_PREFIX = "mcpgov:rt:"


def redis_channel_prefix(url: str) -> str:
    """``mcpgov:rt:<db>:``: Redis pub/sub ignores the database number, so it is part of the channel
    name; deployments (or test workers) on one Redis server with different databases stay apart."""
    from urllib.parse import urlsplit

    path = urlsplit(url).path.strip("/")
    return f"{REDIS_PREFIX}{path if path.isdigit() else '0'}:"


FAST_POLL = 0.15  # seconds between fallback polls without Redis
# Seconds between fallback polls while Redis delivers notifications: settings.MCPGOV_REALTIME_SAFETY_POLL.

T = TypeVar("T")
Fetch = Callable[[list[str]], dict[str, Hashable]]
Listener = Callable[[str, Any], None]


@dataclass
class _Source:
    prefix: str
    fetch: Fetch


class Subscription:
    """One waiter on one channel (and optionally more, `also`), bound to the event loop it was created on.

    `seen` is the token of the main channel; `tokens` holds the token of every channel watched.
    """

    def __init__(
        self, channel: str, seen: Hashable | None, loop: asyncio.AbstractEventLoop, also=None
    ) -> None:
        self.channel = channel
        self.tokens: dict[str, Hashable | None] = {**(also or {}), channel: seen}
        self.loop = loop
        self._event = asyncio.Event()
        # when the last wake-up was delivered (time.monotonic()): a state read started after it sees
        # the change, so every waiter woken by one notification can share one read (long_poll's `fresh`)
        self.woken_at = 0.0

    @property
    def seen(self) -> Hashable | None:
        return self.tokens[self.channel]

    @seen.setter
    def seen(self, value: Hashable | None) -> None:
        self.tokens[self.channel] = value

    def _wake(self, at: float | None = None) -> None:
        self.woken_at = time.monotonic() if at is None else at
        self._event.set()

    def wake_threadsafe(self, at: float | None = None) -> None:
        self.woken_at = time.monotonic() if at is None else at
        if not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop closed between the check and the call
                self.loop.call_soon_threadsafe(self._event.set)

    async def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds; True if woken (state may have changed), False on timeout."""
        if timeout <= 0:
            woke = self._event.is_set()
        else:
            try:
                await asyncio.wait_for(self._event.wait(), timeout)
                woke = True
            except TimeoutError:
                woke = False
        self._event.clear()
        return woke


@dataclass
class _LoopState:
    poll_task: asyncio.Task | None = None
    redis_task: asyncio.Task | None = None
    redis_connected: bool = False


class _Hub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: dict[str, set[Subscription]] = defaultdict(set)
        self._sources: dict[str, _Source] = {}
        self._listeners: dict[str, list[Listener]] = defaultdict(list)
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )
        self._redis_pub = None
        self._gap_listeners: list[Callable[[], None]] = []

    # --- registration ------------------------------------------------------------------------
    def register_source(self, prefix: str, fetch: Fetch) -> None:
        self._sources[prefix] = _Source(prefix, fetch)

    def add_listener(self, prefix: str, callback: Listener) -> None:
        self._listeners[prefix].append(callback)

    def add_gap_listener(self, callback: Callable[[], None]) -> None:
        """`callback()` whenever this process's Redis subscription starts or ends: notifications from
        other processes may have been missed in between, so caches kept fresh by listeners must go."""
        self._gap_listeners.append(callback)

    def delivering(self) -> bool:
        """True while a Redis subscription of this process is up: other processes' notifications arrive."""
        return any(state.redis_connected for state in list(self._loops.values()))

    def _gap(self) -> None:
        for callback in self._gap_listeners:
            try:
                callback()
            except Exception:
                logger.exception("realtime: gap listener failed")

    # --- waiting -------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def subscribe(
        self, channel: str, *, seen: Hashable | None = None, also: dict[str, Hashable | None] | None = None
    ):
        """Wait on `channel`; `also` maps further channels (e.g. the client's revocation channel)
        to their seen tokens: a change on any of them wakes the same waiter."""
        loop = asyncio.get_running_loop()
        sub = Subscription(channel, seen, loop, also)
        with self._lock:
            for ch in sub.tokens:
                self._subs[ch].add(sub)
        self._ensure_loop_tasks(loop, polling=True)
        metrics.waiter_added(channel, 1)
        try:
            yield sub
        finally:
            metrics.waiter_added(channel, -1)
            with self._lock:
                for ch in sub.tokens:
                    subs = self._subs.get(ch)
                    if subs is not None:
                        subs.discard(sub)
                        if not subs:
                            del self._subs[ch]

    def ensure_started(self) -> None:
        """Start the Redis listener on the running loop (no-op without Redis or outside a loop)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._ensure_loop_tasks(loop, polling=False)

    def waiting_channels(self) -> list[str]:
        with self._lock:
            return sorted(self._subs)

    # --- notifying -----------------------------------------------------------------------------
    def notify(self, channel: str, token: Any = None) -> None:
        """Wake this process's waiters on `channel` and publish to other processes (Redis)."""
        self._deliver(channel, token)
        url = getattr(settings, "REDIS_URL", "")
        if url:
            try:
                self._publisher(url).publish(redis_channel_prefix(url) + channel, json.dumps(token))
            except Exception:  # the fallback poll still wakes other processes' waiters
                logger.warning("realtime: could not publish %s to Redis", channel, exc_info=True)
                self._redis_pub = None

    def _publisher(self, url: str):
        if self._redis_pub is None:
            import redis

            self._redis_pub = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        return self._redis_pub

    def connect_publisher(self) -> None:
        """Open the Redis connection notifications are published on, ahead of the first one.

        Called when a web process starts (portal.warmup): otherwise the first kill switch a process
        handles pays for importing the client and connecting (~100 ms) before any gateway hears of it.
        A failure here is only logged; `notify` connects again when it must.
        """
        url = getattr(settings, "REDIS_URL", "")
        if not url:
            return
        try:
            self._publisher(url).ping()
        except Exception:
            logger.warning("realtime: Redis is not reachable yet (%s); will retry on the first notify", url)
            self._redis_pub = None

    def notify_on_commit(self, channel: str, token: Any = None) -> None:
        transaction.on_commit(lambda: self.notify(channel, token))

    def _deliver(self, channel: str, token: Any) -> None:
        for prefix, callbacks in self._listeners.items():
            if channel.startswith(prefix):
                for callback in callbacks:
                    try:
                        callback(channel, token)
                    except Exception:
                        logger.exception("realtime: listener for %s failed", prefix)
        with self._lock:
            subs = list(self._subs.get(channel, ()))
        at = time.monotonic()
        for sub in subs:
            sub.wake_threadsafe(at)

    # --- background work per event loop ------------------------------------------------------
    def _ensure_loop_tasks(self, loop: asyncio.AbstractEventLoop, *, polling: bool) -> None:
        state = self._loops.get(loop)
        if state is None:
            state = self._loops[loop] = _LoopState()
        if getattr(settings, "REDIS_URL", "") and (state.redis_task is None or state.redis_task.done()):
            # A fresh context: the task outlives the request that started it.
            state.redis_task = loop.create_task(self._redis_listener(state), context=contextvars.Context())
        if polling and (state.poll_task is None or state.poll_task.done()):
            state.poll_task = loop.create_task(self._poller(loop, state), context=contextvars.Context())

    def _loop_subs(self, loop) -> dict[str, list[Subscription]]:
        with self._lock:
            return {
                ch: [s for s in subs if s.loop is loop]
                for ch, subs in self._subs.items()
                if any(s.loop is loop for s in subs)
            }

    async def _poller(self, loop, state: _LoopState) -> None:
        idle_rounds = 0
        while True:
            interval = settings.MCPGOV_REALTIME_SAFETY_POLL if state.redis_connected else FAST_POLL
            await asyncio.sleep(interval)
            subs = self._loop_subs(loop)
            if not subs:
                idle_rounds += 1
                if idle_rounds > 20:  # nothing to watch for a while: stop; the next waiter restarts it
                    return
                continue
            idle_rounds = 0
            for source in list(self._sources.values()):
                channels = [ch for ch in subs if ch.startswith(source.prefix)]
                if not channels:
                    continue
                try:
                    states = await sync_to_async(_call_fetch, thread_sensitive=True)(source.fetch, channels)
                except Exception:
                    logger.exception("realtime: fallback poll of %s failed", source.prefix)
                    continue
                for ch in channels:
                    current = states.get(ch)
                    for sub in subs[ch]:
                        seen = sub.tokens.get(ch)
                        if current is not None and seen is not None and current != seen:
                            sub._wake()

    async def _redis_listener(self, state: _LoopState) -> None:
        import redis.asyncio as aioredis

        delay = 0.5
        while True:
            client = aioredis.Redis.from_url(settings.REDIS_URL)
            pubsub = client.pubsub()
            prefix = redis_channel_prefix(settings.REDIS_URL)
            try:
                await pubsub.psubscribe(prefix + "*")
                self._gap()  # anything published before the subscription took effect was missed
                state.redis_connected = True
                delay = 0.5
                async for message in pubsub.listen():
                    if message.get("type") != "pmessage":
                        continue
                    channel = message["channel"].decode()[len(prefix) :]
                    try:
                        token = json.loads(message["data"])
                    except (ValueError, TypeError):
                        token = None
                    self._deliver(channel, token)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("realtime: Redis listener lost its connection; retrying", exc_info=True)
            finally:
                if state.redis_connected:
                    state.redis_connected = False
                    self._gap()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                    await client.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)


def _call_fetch(fetch: Fetch, channels: list[str]) -> dict[str, Hashable]:
    if not connection.in_atomic_block:  # never inside a test's transaction (same thread as the test)
        close_old_connections()  # drop a broken or expired connection, as Django does per request
    try:
        return fetch(channels)
    finally:
        if not connection.in_atomic_block:
            connection.close()  # back to the pool: the poller sleeps between rounds


_hub = _Hub()

register_source = _hub.register_source
add_listener = _hub.add_listener
add_gap_listener = _hub.add_gap_listener
delivering = _hub.delivering
subscribe = _hub.subscribe
notify = _hub.notify
notify_on_commit = _hub.notify_on_commit
connect_publisher = _hub.connect_publisher
ensure_started = _hub.ensure_started
waiting_channels = _hub.waiting_channels


async def long_poll(
    channel: str,
    *,
    read: Callable[..., Awaitable[T]],
    ready: Callable[[T], bool],
    token: Callable[[T], Hashable | None],
    timeout: float,
    also: dict[str, Hashable | None] | None = None,
    fresh: bool = False,
) -> T:
    """The long-poll loop, once: subscribe to `channel` (and the `also` channels), then `read()`
    the state; until `ready(state)` or `timeout` seconds have passed, wait for a wake-up and
    read again. Returns the last state read.

    Subscribing before the first read means a change committed in between still wakes the
    waiter; every wake-up re-reads, so spurious ones are harmless. `token(state)` is what the
    waiter has seen, for the fallback poll. What `read` raises (say, the revoked client's
    TokenError) propagates to the caller. Do ORM work in `read` through `portal.db.db_call`,
    so no connection is held while waiting.

    With `fresh`, `read(since)` is told the instant (time.monotonic()) its state must be no older
    than: the subscription for the first read, then the delivery of the wake-up. Every waiter woken
    by one notification gets the same instant, so they can share one read of the state instead of
    making one each (`governance.api.bundle._shared_read`).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with subscribe(channel, also=also) as sub:
        since = time.monotonic()
        while True:
            state = await (read(since) if fresh else read())
            remaining = deadline - loop.time()
            if ready(state) or remaining <= 0:
                return state
            sub.seen = token(state)
            woke = await sub.wait(remaining)
            since = sub.woken_at if woke and sub.woken_at else time.monotonic()


def channel_ids(channels: Iterable[str], prefix: str) -> dict[int, str]:
    """{id: channel} for channels named `<prefix><int>` (helper for sources keyed by a row id)."""
    out = {}
    for ch in channels:
        tail = ch[len(prefix) :]
        if tail.isdigit():
            out[int(tail)] = ch
    return out
