"""The audit trail: an append-only JSONL spool per session, a human-readable log, and the shipper.

Every call gets an INTENT event before it is forwarded (on disk first: group commit, one ``fdatasync``
for every call in flight together) and a RESULT event after. The shipper sends spooled events, in
order, to the portal (``POST /api/v1/gateway/sessions/<id>/events/``) from its own thread and event loop
(:class:`ShipperThread`), batching by time and count, and keeps a cursor of what the portal
acknowledged; the cursor is not fsynced (after an OS crash a stale cursor resends events the portal
already holds, and it drops those by ``(session, seq)``), so an outage or a restart loses nothing.
Choices and their costs are explained in ``docs/gateway.md``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import fcntl
import json
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio

from mcpgov.decision import iso_ts
from mcpgov.redact import MAX_STRING, redact, summarize_arguments
from mcpgov.retry import retry

log = logging.getLogger("mcpgov.audit")

MAX_BATCH = 1000
RESULT_PAYLOAD_LIMIT = 16_384  # characters of result text kept in the RESULT event
DURABILITY_PROCESS = "process"  # write(2) only: survives a gateway crash, not an OS crash / power loss
DURABILITY_INTENT = "intent"  # fsync INTENT before forwarding; RESULTs ride on the next fsync
DURABILITY_ALL = "all"  # fsync every event
# The spool file is preallocated ahead of the writer (docs/gateway.md, "Losing none"): records are
# written with pwrite(2) into space the file already has, so a sync flushes data only, not a new file
# size (ext4/xfs then need no journal commit). The writer grows the file by SPOOL_CHUNK in a worker
# thread when fewer than SPOOL_LOW_WATER bytes are left; readers stop at the first NUL byte (an event
# line never holds one: JSON escapes it).
SPOOL_CHUNK = 256 * 1024
SPOOL_LOW_WATER = 64 * 1024
# one thread grows every spool of the process: a growth is a fallocate + fsync, rare (every few hundred
# events of a session) and never awaited by a call
_GROWER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="mcpgov-spool-grow")
# the group commits' fdatasync calls: handed to a thread with one queue put and answered with one
# call_soon_threadsafe (anyio's to_thread adds a capacity limiter, a cancel scope and a token lookup to
# every INTENT, ~30 % of the call's gateway CPU); several threads, so sessions' spools sync in parallel
_SYNCER = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="mcpgov-spool-sync")

SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start writing dirty pages back, do not wait for them


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """Linux's ``sync_file_range(2)`` (not in the os module), or None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_WRITE_BACK = _sync_file_range()

NUL_STANDIN = "\u2400"  # ␀ (SYMBOL FOR NULL)


def _storable_text(value: str) -> str:
    """NUL as ␀ and lone surrogates as U+FFFD: what the portal can store (PostgreSQL text cannot
    hold NUL, and UTF-8 cannot encode a lone surrogate; the portal refuses both with a 400)."""
    value = value.replace("\x00", NUL_STANDIN)
    return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def storable(value: Any) -> Any:
    """``value`` with every string (keys too) made storable: an agent or an upstream that puts NUL or a
    lone surrogate into arguments, a tool name or a result must not make its events undeliverable."""
    if isinstance(value, str):
        return _storable_text(value)
    if isinstance(value, dict):
        return {storable(str(k)): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    return value


def _event_line(event: dict[str, Any]) -> bytes:
    text = json.dumps(event, ensure_ascii=False, separators=(",", ":"), default=str)
    try:
        line = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        line = None
    if line is None or b"\\u0000" in line:
        for key, value in event.items():  # in place: the open INTENT and the state report reuse it
            event[key] = storable(value)
        line = json.dumps(event, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")
    return line + b"\n"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_json(path: Path, data: Any, *, fsync: bool = True) -> None:
    """Replace ``path`` with ``data`` in one rename; ``fsync=False`` where a stale or lost copy is harmless."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, sort_keys=True)
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_events(
    path: Path, *, start_offset: int = 0, end: int | None = None
) -> tuple[list[tuple[int, dict[str, Any]]], int]:
    """Complete events from ``start_offset`` as ``[(end offset, event)]`` and the offset after the last one.

    Reading stops at the first NUL byte (the spool's preallocated, not yet written space) and before a
    torn last line; ``end`` (the writer's own end of data, when known) bounds the read.
    """
    out: list[tuple[int, dict[str, Any]]] = []
    try:
        with open(path, "rb") as fh:
            fh.seek(start_offset)
            data = fh.read() if end is None else fh.read(max(end - start_offset, 0))
    except FileNotFoundError:
        return out, start_offset
    nul = data.find(b"\0")
    if nul >= 0:
        data = data[:nul]
    offset = start_offset
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            event = json.loads(line)
        except ValueError:
            break
        offset += len(line)
        out.append((offset, event))
    return out, offset


# spools this process holds open (and locked), by path: a shipper ships these and orphans, never a spool
# another live gateway holds (several gateways may share one spool directory)
_OPEN_SPOOLS: dict[Path, AuditSpool] = {}


def end_marker_path(directory: Path, session_id: str) -> Path:
    return directory / f"{session_id}.end.json"


def read_end_marker(directory: Path, session_id: str) -> dict[str, Any] | None:
    try:
        data = json.loads(end_marker_path(directory, session_id).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class AuditSpool:
    """One session's append-only event file ``<dir>/<session>.jsonl`` (+ ``.log`` for humans).

    Events are written one ``pwrite`` each at the end of the data, into space preallocated ahead of the
    writer (``preallocate=False`` for a spool only opened to be closed, such as an orphan); the unwritten
    rest reads as NUL bytes and is cut off when the spool is closed or reopened. The writer holds an
    exclusive ``flock`` on the file for its lifetime, so a shipper can tell a live spool from one left
    behind by a gateway that stopped. When the session ends, ``<session>.end.json``
    records why (``mark_end``) until the portal has the end report (``reported: true``); a spool whose
    session never got that far is ended by the next gateway that ships it (restart recovery).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        session_id: str,
        *,
        durability: str = DURABILITY_INTENT,
        meta: dict[str, Any] | None = None,
        human_log: str | os.PathLike[str] | None = None,
        preallocate: bool = True,
    ) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.session_id = session_id
        self.durability = durability
        self.path = self.dir / f"{session_id}.jsonl"
        new_file = not self.path.exists()
        # not O_APPEND: Linux's pwrite(2) ignores the offset on an O_APPEND descriptor
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise RuntimeError(f"audit spool {self.path} is in use by another gateway") from None
        self.seq, self.open_intents, self.end = self._recover()
        self.allocated = self.end  # the file's size: data up to ``end``, NUL bytes after it
        self._grow: concurrent.futures.Future[None] | None = None
        self.preallocate = preallocate
        if preallocate:
            self._extend(self.end + SPOOL_CHUNK)  # at session start, before any call
        if new_file:
            _fsync_dir(self.dir)
        if meta is not None:
            atomic_write_json(self.dir / f"{session_id}.session.json", meta)
        self.human_path = Path(human_log) if human_log else self.dir / f"{session_id}.log"
        # the human-readable log is a view of the spool, not the record: buffered, flushed with the spool
        self.human = open(self.human_path, "a", encoding="utf-8")  # noqa: SIM115
        self.unsynced = False
        self.written_at = 0.0  # time.monotonic() of the last event written (the shipper's linger reads it)
        self.synced = self.seq  # every event up to this seq is on disk (fdatasync returned after it)
        self._commit: asyncio.Future[int] | None = None  # the group commit in progress, if any
        self.listeners: list[Callable[[], None]] = []
        self.on_result: Callable[[dict[str, Any]], None] | None = None  # the call's span and metrics
        _OPEN_SPOOLS[self.path] = self

    def _recover(self) -> tuple[int, dict[str, dict[str, Any]], int]:
        """Last seq, INTENTs without a RESULT and the end of the data; what follows it is cut off.

        That is the preallocated space a writer left (NUL bytes), and a torn record of a crash mid-write
        (or records after an unsynced gap, which a power loss can leave: none was synced, so none had
        been forwarded or promised).
        """
        events, good = read_events(self.path)
        size = os.fstat(self.fd).st_size
        if good < size:
            if os.pread(self.fd, size - good, good).strip(b"\0"):
                log.warning("audit spool %s: cutting a torn record (%d bytes)", self.path, size - good)
            os.ftruncate(self.fd, good)
            os.fsync(self.fd)
        seq = 0
        intents: dict[str, dict[str, Any]] = {}
        for _, ev in events:
            seq = ev["seq"]
            if ev.get("phase") == "intent":
                intents[ev["call_id"]] = ev
            else:
                intents.pop(ev.get("call_id"), None)
        return seq, intents, good

    def _extend(self, size: int) -> None:
        """Make the file ``size`` bytes long (NUL-filled past the data) and put that on disk, so the syncs of
        the records written into it flush data only. Runs in ``_GROWER`` except at open."""
        try:
            os.posix_fallocate(self.fd, self.allocated, size - self.allocated)
            os.fsync(self.fd)
        except OSError as exc:  # no space, or a filesystem without it: records extend the file instead
            log.warning("audit spool %s: cannot preallocate (%s); appending instead", self.path, exc)
            self.preallocate = False
        else:
            self.allocated = max(self.allocated, size)

    def _grown(self, _: concurrent.futures.Future[None]) -> None:
        self._grow = None

    def _write(self, line: bytes) -> None:
        # one writer (the flock) and one pwrite per record at the end of the data: records never
        # interleave; a reader sees a record whole or a prefix of it followed by NUL bytes
        grow = self._grow
        if grow is not None and self.end + len(line) > self.allocated:
            # the writer outran a growth in flight: never write into the range it is allocating (a
            # filesystem without fallocate gets glibc's emulation, which writes zeros there)
            with contextlib.suppress(Exception):
                grow.result()
        view = memoryview(line)
        while view:
            n = os.pwrite(self.fd, view, self.end)
            self.end += n
            view = view[n:]
        if self.end > self.allocated:  # written past the preallocated space (growth not done, or none)
            self.allocated = self.end
        if self.preallocate and self._grow is None and self.allocated - self.end < SPOOL_LOW_WATER:
            self._grow = _GROWER.submit(self._extend, self.allocated + SPOOL_CHUNK)
            self._grow.add_done_callback(self._grown)

    def _append(self, event: dict[str, Any], sync: bool) -> int:
        self.seq += 1
        event["seq"] = self.seq
        self._write(_event_line(event))
        self.written_at = time.monotonic()
        if sync:
            os.fdatasync(self.fd)
            self.synced = self.seq
            self.unsynced = False
        else:
            self.unsynced = True
        for notify in self.listeners:
            notify()
        return self.seq

    def flush(self) -> None:
        self.human.flush()
        if self.unsynced:
            seq = self.seq
            os.fdatasync(self.fd)
            self.synced = max(self.synced, seq)
            self.unsynced = self.seq > self.synced

    def write_back(self) -> None:
        """Start writing the spool's dirty pages to the disk, without waiting and without syncing.

        A head start only: the ``fdatasync`` that follows (:meth:`commit_in_place`) is what makes the
        events durable; it then finds the data write under way or done and only waits for it and flushes
        the disk's cache. ``sync_file_range(2)`` makes no durability promise, and none is taken from it.
        """
        if _WRITE_BACK is not None:
            _WRITE_BACK(self.fd, 0, 0, SYNC_FILE_RANGE_WRITE)  # an error only loses the head start

    def lone_commit(self, seq: int) -> bool:
        """True when event ``seq`` still needs a sync and none is running: the only call in flight may then
        make it in place (:meth:`commit_in_place`), as late as right before its request leaves."""
        return self.durability != DURABILITY_PROCESS and self._commit is None and self.synced < seq

    def commit_in_place(self, seq: int) -> None:
        """Every event up to ``seq`` on disk when this returns: one ``fdatasync`` on the calling thread."""
        if self.durability == DURABILITY_PROCESS or self.synced >= seq:
            return
        target = self.seq
        os.fdatasync(self.fd)
        self.synced = max(self.synced, target)
        self.unsynced = self.seq > self.synced

    async def commit(self, seq: int | None = None, *, alone: bool = False) -> None:
        """Return once every event up to ``seq`` (default: all written so far) is on disk.

        Group commit: one ``fdatasync`` in a worker thread covers every event written before it started,
        so calls in flight together share it, and the event loop keeps serving while the disk works.
        A caller whose event came after the running sync started waits for it, then starts the next.
        ``alone``: the caller's call is the only one in flight in the gateway, so nothing could share
        the sync or needs the loop meanwhile; it is made right here, without the two thread hand-offs
        (docs/gateway.md, "How the hot path stays cheap").
        ``durability=process`` never syncs (a gateway crash loses nothing; an OS crash may).
        """
        seq = self.seq if seq is None else seq
        if self.durability == DURABILITY_PROCESS:
            return
        if alone and self._commit is None and self.synced < seq:
            self.commit_in_place(seq)
            return
        await self._sync_through(seq)

    async def _sync_through(self, seq: int) -> None:
        while self.synced < seq:
            commit = self._commit
            if commit is None:
                commit = asyncio.get_running_loop().run_in_executor(_SYNCER, self._sync, self.seq)
                commit.add_done_callback(self._committed)
                self._commit = commit
            # shielded: a waiter cancelled meanwhile leaves the sync (and the calls sharing it) alone
            await asyncio.shield(commit)
            self._committed(commit)  # already done by its callback, unless this waiter resumed first

    def _sync(self, target: int) -> int:  # in a _SYNCER thread
        os.fdatasync(self.fd)
        return target

    def _committed(self, done: asyncio.Future[int]) -> None:
        """A group commit's sync returned: every event up to its target is on disk."""
        if self._commit is done:
            self._commit = None
        if not done.cancelled() and done.exception() is None:
            self.synced = max(self.synced, done.result())
            self.unsynced = self.seq > self.synced

    async def flush_async(self) -> None:
        """:meth:`flush` with the disk work off the event loop: the periodic flush (every 0.5 s) that bounds
        what an OS crash can take to the last half second of RESULTs, in every durability mode."""
        self.human.flush()
        if self.unsynced:
            await self._sync_through(self.seq)

    def intent(
        self,
        *,
        call_id: str,
        server: str,
        tool: str,
        arguments: dict[str, Any] | None,
        bundle_version: int,
        trigger: str | None = None,
        now: float | None = None,
        trace_id: str | None = None,
        defer_sync: bool = False,
        shadow: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Record (durably) that a call is about to be decided/forwarded. Returns the event.

        ``trace_id`` (32 hex digits, the call's OpenTelemetry trace) is written only when there is one, so
        a portal that predates the field keeps accepting events from untraced gateways.
        ``defer_sync``: written but not yet synced; the caller must ``await spool.commit(event["seq"])``
        before it forwards the call (group commit). Without it the INTENT is on disk when this returns.
        """
        now = time.time() if now is None else now
        redacted = redact(arguments or {}, max_string=MAX_STRING)
        event = {
            "seq": 0,
            "call_id": call_id,
            "phase": "intent",
            "ts": iso_ts(now),
            "server": server,
            "tool": tool,
            "arguments": redacted,
            "args_summary": summarize_arguments(redacted, already_redacted=True),
            "status": None,
            "result_summary": "",
            "bytes": 0,
            "duration_ms": 0.0,
            "trigger": trigger,
            "bundle_version": bundle_version,
            "result": None,
        }
        if trace_id:
            event["trace_id"] = trace_id
        if shadow is not None:  # what a shadow bundle would have decided (mcpgov/shadow.py); only then
            event["shadow"] = shadow
        self._append(event, sync=self.durability != DURABILITY_PROCESS and not defer_sync)
        self.open_intents[call_id] = event
        return event

    def result(
        self,
        intent: dict[str, Any],
        *,
        status: str,
        result_summary: str,
        nbytes: int,
        duration_ms: float,
        trigger: str | None = None,
        result: Any = None,
        bundle_version: int | None = None,
        now: float | None = None,
    ) -> dict[str, Any]:
        now = time.time() if now is None else now
        event = {
            "seq": 0,
            "call_id": intent["call_id"],
            "phase": "result",
            "ts": iso_ts(now),
            "server": intent["server"],
            "tool": intent["tool"],
            "arguments": intent["arguments"],
            "args_summary": intent["args_summary"],
            "status": status,
            "result_summary": result_summary,
            "bytes": nbytes,
            "duration_ms": round(duration_ms, 3),
            "trigger": trigger,
            "bundle_version": intent["bundle_version"] if bundle_version is None else bundle_version,
            "result": result,
        }
        if "trace_id" in intent:
            event["trace_id"] = intent["trace_id"]
        if "shadow" in intent:
            event["shadow"] = intent["shadow"]
        self._append(event, sync=self.durability == DURABILITY_ALL)
        if self.on_result is not None:
            self.on_result(event)
        self.open_intents.pop(intent["call_id"], None)
        self.human.write(
            f"MCP_AUDIT | {event['ts']} | session={self.session_id} | server={event['server']} | "
            f"tool={event['tool']} | args={event['args_summary']} | result={result_summary} | "
            f"duration_ms={event['duration_ms']:.0f} | status={status}"
            + (f" | trigger={trigger}" if trigger else "")
            + "\n"
        )
        return event

    def close_open_intents(self, reason: str) -> None:
        """Give every INTENT without a RESULT an honest one (the outcome is unknown)."""
        for intent in list(self.open_intents.values()):
            self.result(
                intent, status="fail", result_summary=f"outcome unknown: {reason}", nbytes=0, duration_ms=0.0
            )
        self.flush()

    def mark_end(
        self, reason: str, *, trigger: str | None = None, last_calls: list[dict[str, Any]] | None = None
    ) -> None:
        """Record durably that the session ended (the shipper reports it once its events are delivered)."""
        self.flush()
        if read_end_marker(self.dir, self.session_id) is not None:
            return
        atomic_write_json(
            end_marker_path(self.dir, self.session_id),
            {
                "reason": reason,
                "trigger": trigger,
                "last_calls": last_calls,
                "ended_at": iso_ts(time.time()),
                "reported": False,
            },
        )

    def close(self) -> None:
        if _OPEN_SPOOLS.get(self.path) is self:
            del _OPEN_SPOOLS[self.path]
        grow = self._grow
        if grow is not None:
            with contextlib.suppress(Exception):
                grow.result()
        self.preallocate = False
        if self.allocated > self.end:  # a closed spool is its data only (a crash leaves NULs: also read fine)
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.end)
                self.allocated = self.end
        with contextlib.suppress(OSError):
            self.flush()
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.human.close()


def spool_is_live(path: Path) -> bool:
    """True when a gateway still holds the spool's lock."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def claim_orphan(directory: Path, session_id: str) -> AuditSpool | None:
    """Take the lock of a spool left behind by a gateway that stopped; None when a gateway holds it.

    Its INTENTs without RESULT get one (outcome unknown). The caller ships it and closes it.
    """
    try:
        spool = AuditSpool(directory, session_id, preallocate=False)
    except RuntimeError:
        return None
    try:
        if spool.open_intents:
            spool.close_open_intents("the gateway stopped before recording the result")
    except BaseException:
        spool.close()
        raise
    return spool


def recover_orphan(directory: Path, session_id: str) -> None:
    """Close the INTENTs of a spool left behind by a gateway that stopped (it lost its lock)."""
    spool = claim_orphan(directory, session_id)
    if spool is not None:
        spool.close()


# --- the shipper -----------------------------------------------------------------------------------------------


@dataclass
class Cursor:
    """What the portal acknowledged: the last seq and the byte offset just after it."""

    seq: int = 0
    offset: int = 0

    @classmethod
    def load(cls, path: Path) -> Cursor:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(int(data["seq"]), int(data["offset"]))
        except FileNotFoundError:
            return cls()
        except (ValueError, KeyError, TypeError):
            log.error(
                "audit cursor %s is corrupt; shipping from the start (the portal ignores duplicates)", path
            )
            return cls()

    def save(self, path: Path) -> None:
        # not fsynced: the cursor is a hint; behind after an OS crash, it resends what the portal
        # already holds and the portal drops those duplicates by (session, seq)
        atomic_write_json(path, {"seq": self.seq, "offset": self.offset}, fsync=False)


class ShipError(Exception):
    """The portal did not take a batch; ``retry_after`` hints when to try again."""

    def __init__(self, message: str, *, last_seq: int | None = None, missing_session: bool = False) -> None:
        super().__init__(message)
        self.last_seq = last_seq
        self.missing_session = missing_session


# (session_id, events) -> last_seq stored by the portal; raises ShipError
PostBatch = Callable[[str, list[dict[str, Any]]], Awaitable[int]]
OpenSession = Callable[[dict[str, Any]], Awaitable[None]]
# (session_id, end marker) -> None once the portal has the end report; raises ShipError
EndSession = Callable[[str, dict[str, Any]], Awaitable[None]]
RESTART_REASON = "gateway restarted"


class Shipper:
    """Ships every spool in ``directory`` to the portal, oldest unacknowledged event first.

    ``post_batch`` and ``open_session`` come from the portal client. Backoff doubles from
    ``min_backoff`` to ``max_backoff`` (with jitter) while the portal is unreachable.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        post_batch: PostBatch,
        open_session: OpenSession,
        *,
        min_backoff: float = 0.5,
        max_backoff: float = 30.0,
        batch_size: int = MAX_BATCH,
        poll_interval: float = 1.0,
        end_session: EndSession | None = None,
        linger: float = 0.0,
        max_linger: float | None = None,
        cursor_interval: float = 0.0,
    ) -> None:
        self.end_session = end_session
        # time batching: after a nudge the shipper waits until no event was written for ``linger``
        # seconds, or ``max_linger`` passed since the nudge, or ``batch_size`` events wait (count
        # batching): a lone call ships ``linger`` after it, a busy session every ``max_linger``
        self.linger = linger
        self.max_linger = linger if max_linger is None else max(max_linger, linger)
        # what the portal acknowledged, per spool this process holds (an orphan's is read from disk:
        # another gateway may have shipped it meanwhile)
        self.cursors: dict[str, Cursor] = {}
        # a held spool's cursor file is rewritten at most every ``cursor_interval`` seconds (and when
        # the spool is let go, drained or the shipper stops): it is a hint, and after a kill -9 a stale
        # one only resends events the portal drops by (session, seq)
        self.cursor_interval = cursor_interval
        self._cursor_saved: dict[str, float] = {}
        self._cursor_dirty: set[str] = set()
        # called at the start of every shipping pass (ShipperThread re-arms its coalesced nudge there)
        self.before_pass: Callable[[], None] | None = None
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.post_batch = post_batch
        self.open_session = open_session
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.batch_size = min(batch_size, MAX_BATCH)
        self.poll_interval = poll_interval
        self.wakeup = anyio.Event()
        self.opened: set[str] = set()
        self.finished: set[str] = set()  # orphans delivered and ended: not looked at again
        self.failures = 0
        self.lock = anyio.Lock()  # one shipping pass at a time, or a batch would be sent twice

    def nudge(self) -> None:
        self.wakeup.set()

    def cursor_path(self, session_id: str) -> Path:
        return self.dir / f"{session_id}.ack"

    def pending(self) -> dict[str, int]:
        """Unacknowledged events per session (for status and tests)."""
        out = {}
        for path in sorted(self.dir.glob("*.jsonl")):
            sid = path.stem
            cur = Cursor.load(self.cursor_path(sid))
            events, _ = read_events(path, start_offset=cur.offset)
            if events:
                out[sid] = len(events)
        return out

    def cursor(self, session_id: str) -> Cursor:
        cursor = self.cursors.get(session_id)
        if cursor is None:
            cursor = Cursor.load(self.cursor_path(session_id))
            if _OPEN_SPOOLS.get(self.dir / f"{session_id}.jsonl") is not None:
                self.cursors[session_id] = cursor
        return cursor

    def _save_cursor(self, session_id: str, cursor: Cursor) -> None:
        if session_id in self.cursors:
            self.cursors[session_id] = cursor
            now = time.monotonic()
            if now - self._cursor_saved.get(session_id, -1e9) < self.cursor_interval:
                self._cursor_dirty.add(session_id)
                return
            self._cursor_saved[session_id] = now
        self._cursor_dirty.discard(session_id)
        cursor.save(self.cursor_path(session_id))

    def flush_cursors(self, *, due_only: bool = False) -> None:
        """Write the held spools' cursors not yet on disk (``due_only``: those last written
        ``cursor_interval`` ago or more)."""
        now = time.monotonic()
        for sid in list(self._cursor_dirty):
            if due_only and now - self._cursor_saved.get(sid, -1e9) < self.cursor_interval:
                continue
            cursor = self.cursors.get(sid)
            self._cursor_dirty.discard(sid)
            if cursor is not None:
                self._cursor_saved[sid] = now
                cursor.save(self.cursor_path(sid))

    def _written(self) -> tuple[int, float]:
        """Events written so far to the spools of this directory this process holds, and when the last
        one was (from the writers in memory: no disk access)."""
        held = [sp for sp in list(_OPEN_SPOOLS.values()) if sp.dir == self.dir]
        return sum(sp.seq for sp in held), max((sp.written_at for sp in held), default=0.0)

    async def ship_session(self, session_id: str) -> int:
        """Ship one session's unacknowledged events; returns how many the portal accepted."""
        path = self.dir / f"{session_id}.jsonl"
        cursor = self.cursor(session_id)
        sent = 0
        # ours: read up to its end as this pass starts, not through its preallocated space, and not
        # chasing the writer (events written during a POST wait for the next pass, lingering with
        # those that follow, instead of going out a few at a time)
        own = _OPEN_SPOOLS.get(path)
        end = own.end if own is not None else None
        while True:
            events, _ = read_events(path, start_offset=cursor.offset, end=end)
            if not events:
                return sent
            batch = events[: self.batch_size]
            payload = [ev for _, ev in batch]
            if session_id not in self.opened:
                await self._open(session_id)
            try:
                last_seq = await self.post_batch(session_id, payload)
            except ShipError as exc:
                if exc.missing_session:
                    self.opened.discard(session_id)
                    await self._open(session_id)
                    continue
                if exc.last_seq is not None:
                    # sequence gap: the portal holds up to last_seq; move our cursor there and resend
                    cursor = self._cursor_at(path, exc.last_seq)
                    self._save_cursor(session_id, cursor)
                    log.warning(
                        "portal reports last_seq=%s for session %s; resuming from there",
                        exc.last_seq,
                        session_id,
                    )
                    continue
                raise
            cursor = self._cursor_at(path, last_seq, hint=batch)
            self._save_cursor(session_id, cursor)
            sent += len(batch)

    @staticmethod
    def _cursor_at(path: Path, seq: int, hint: list[tuple[int, dict[str, Any]]] | None = None) -> Cursor:
        if seq <= 0:
            return Cursor()
        for end, ev in hint or ():
            if ev["seq"] == seq:
                return Cursor(seq, end)
        events, _ = read_events(path)
        for end, ev in events:
            if ev["seq"] == seq:
                return Cursor(seq, end)
        last_end, last_ev = events[-1] if events else (0, {"seq": 0})
        return Cursor(int(last_ev["seq"]), last_end)

    async def _open(self, session_id: str) -> None:
        meta_path = self.dir / f"{session_id}.session.json"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            meta = {"id": session_id}
        await self.open_session(meta)
        self.opened.add(session_id)

    async def ship_all(self) -> int:
        async with self.lock:
            try:
                return await self._ship_all()
            finally:
                self.flush_cursors(due_only=True)

    async def _ship_all(self) -> int:
        """Ship this process's spools and the orphans (no gateway holds their lock), never another's live one."""
        total = 0
        paths = []
        for path in self.dir.glob("*.jsonl"):
            with contextlib.suppress(FileNotFoundError):
                paths.append((path.stat().st_mtime, path))
        for _, path in sorted(paths):
            sid = path.stem
            own = _OPEN_SPOOLS.get(path)
            if own is not None:
                total += await self._ship_and_end(sid, path, own)
                continue
            if sid in self._cursor_dirty:  # let go since the last pass: its cursor goes to disk first
                self.flush_cursors()
            self.cursors.pop(sid, None)  # no longer ours (ended): its cursor is read from disk again
            self._cursor_saved.pop(sid, None)
            if sid in self.finished:
                continue
            # left behind by a gateway that stopped: hold its lock while shipping it, so that of several
            # gateways sharing this directory exactly one recovers it
            orphan = await anyio.to_thread.run_sync(claim_orphan, self.dir, sid)
            if orphan is None:
                continue  # another live gateway's spool: its owner ships it
            try:
                marker = read_end_marker(self.dir, sid)
                if marker is None and self.end_session is not None:
                    # the gateway stopped without ending it (killed, or crashed): the end is reported now
                    orphan.mark_end(RESTART_REASON)
                total += await self._ship_and_end(sid, path)
                marker = read_end_marker(self.dir, sid)
                ended = self.end_session is None or (marker is not None and marker.get("reported"))
                if ended and Cursor.load(self.cursor_path(sid)).offset >= path.stat().st_size:
                    self.finished.add(sid)
            finally:
                orphan.close()
        return total

    async def _ship_and_end(self, sid: str, path: Path, own: AuditSpool | None = None) -> int:
        sent = 0
        cursor = self.cursor(sid)
        # a spool we hold: its seq says whether there is anything new, without touching the disk
        behind = own.seq > cursor.seq if own is not None else cursor.offset < path.stat().st_size
        if behind:
            sent = await self.ship_session(sid)
        marker = read_end_marker(self.dir, sid)
        if marker is not None and not marker.get("reported") and self.end_session is not None:
            if sid not in self.opened:
                await self._open(sid)
            try:
                await self.end_session(sid, marker)
            except ShipError as exc:
                if not exc.missing_session:
                    raise
                self.opened.discard(sid)
                await self._open(sid)
                await self.end_session(sid, marker)
            atomic_write_json(end_marker_path(self.dir, sid), {**marker, "reported": True})
            log.warning("session %s ended on the portal (%s)", sid, marker.get("reason"))
        return sent

    async def drain(self, within: float) -> bool:
        """Ship until a pass delivers everything of ours (events and end reports); False if time ran out."""
        try:
            with anyio.move_on_after(within):
                await retry(self.ship_all, what="delivering the audit spool", first=0.2, cap=2.0, logger=log)
                return True
            return False
        finally:
            with contextlib.suppress(OSError):
                self.flush_cursors()

    async def run(self) -> None:
        """Ship forever: promptly after each nudge, at least every ``poll_interval``, backing off on errors."""
        try:
            while True:
                self.wakeup = anyio.Event()
                if self.before_pass is not None:
                    self.before_pass()
                # keep shipping whatever goes wrong; never drop events
                await retry(
                    self.ship_all,
                    what="audit shipping",
                    first=self.min_backoff,
                    cap=self.max_backoff,
                    on_failure=self._failed,
                )
                if self.failures:
                    log.warning("audit shipping resumed after %d failed attempt(s)", self.failures)
                self.failures = 0
                with anyio.move_on_after(self.poll_interval):
                    await self.wakeup.wait()
                if self.linger and self.wakeup.is_set():
                    await self._linger()
        finally:
            with contextlib.suppress(OSError):
                self.flush_cursors()

    async def _linger(self) -> None:
        """Wait while events keep coming: until none came for ``linger`` s, ``max_linger`` s passed or
        ``batch_size`` events were written (the next pass ships them as one or a few POSTs)."""
        deadline = time.monotonic() + self.max_linger
        first, _ = self._written()
        while True:
            count, last = self._written()
            wait = min(last + self.linger, deadline) - time.monotonic()
            if wait <= 0 or count - first >= self.batch_size:
                return
            await anyio.sleep(wait)

    def _failed(self, exc: BaseException, delay: float) -> None:
        self.failures += 1
        log.warning("audit shipping failed (%s); retrying in %.1fs", exc, delay)


T = TypeVar("T")
# runs on the shipper's own event loop: (the shipper, an async close for what it opened, e.g. its client)
ShipperFactory = Callable[[], tuple[Shipper, Callable[[], Awaitable[None]]]]
# the threaded shipper's time batching (Shipper.linger/max_linger): a lone call's events leave ~50 ms
# after it, a busy session's every 250 ms (or every MAX_BATCH events), so the portal gets one POST (one
# transaction) per ~100+ calls instead of per ~15; its cursor file is rewritten at most once a second
SHIPPER_LINGER = 0.05
SHIPPER_MAX_LINGER = 0.25
SHIPPER_CURSOR_INTERVAL = 1.0


class ShipperThread:
    """A :class:`Shipper` on its own event loop in its own thread: shipping is off the call path.

    The gateway's event loop only writes the spool; reading it back, JSON, HTTP to the portal, cursor
    files and retries with backoff while the portal is slow or away all happen here. ``factory`` runs on
    the shipper's loop (the portal client's connections belong to that loop). :meth:`nudge` is safe from
    any thread and cheap enough for every spooled event: wake-ups are coalesced (one per shipping pass),
    and after one the shipper lingers while events keep coming (``Shipper.linger``/``max_linger``) so they
    ship as one batch (at most ``MAX_BATCH``).
    ``ship_all`` and ``drain`` run on the shipper's loop and are awaited from the caller's.
    """

    def __init__(self, factory: ShipperFactory) -> None:
        self._factory = factory
        self._loop: asyncio.AbstractEventLoop | None = None
        self._shipper: Shipper | None = None
        self._close: Callable[[], Awaitable[None]] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._woken = False
        self._thread = threading.Thread(target=self._main, name="mcpgov-audit-shipper", daemon=True)

    @property
    def failures(self) -> int:
        return self._shipper.failures if self._shipper is not None else 0

    @property
    def shipper(self) -> Shipper:
        assert self._shipper is not None, "ShipperThread.start() first"
        return self._shipper

    def start(self) -> None:
        """Start the thread and its shipper (not yet running: :meth:`run` does that)."""
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:

            async def setup() -> None:
                self._shipper, self._close = self._factory()
                self._shipper.before_pass = self._rearm

            loop.run_until_complete(setup())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _wake(self) -> None:  # on the shipper's loop
        if self._shipper is not None:
            self._shipper.nudge()

    def _rearm(self) -> None:  # on the shipper's loop, as a pass starts: what is written from now on wakes it
        self._woken = False

    def nudge(self) -> None:
        """Ship soon (thread-safe). One loop wake-up per shipping pass, however many events are written
        meanwhile (the pass reads the spools after re-arming, so none is left behind)."""
        if self._woken or self._loop is None or self._loop.is_closed():
            return
        self._woken = True
        with contextlib.suppress(RuntimeError):  # the loop is stopping
            self._loop.call_soon_threadsafe(self._wake)

    async def _on_loop(self, make: Callable[[Shipper], Awaitable[T]]) -> T:
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(make(self.shipper), self._loop)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()
            raise

    def run(self) -> None:
        """Ship forever on the shipper's loop (:meth:`Shipper.run`), until :meth:`stop`."""
        assert self._loop is not None

        def begin() -> None:
            self._runner = asyncio.ensure_future(self.shipper.run())

        self._loop.call_soon_threadsafe(begin)

    async def ship_all(self) -> int:
        return await self._on_loop(lambda s: s.ship_all())

    async def drain(self, within: float) -> bool:
        return await self._on_loop(lambda s: s.drain(within))

    def stop(self, timeout: float = 5.0) -> None:
        """Stop shipping (what is not delivered stays in the spool), close the client, end the thread."""
        loop = self._loop
        if loop is None or loop.is_closed() or not self._thread.is_alive():
            return

        async def finish() -> None:
            if self._runner is not None:
                self._runner.cancel()
                with contextlib.suppress(BaseException):
                    await self._runner
            if self._close is not None:
                with contextlib.suppress(Exception):
                    await self._close()

        def begin() -> None:
            task = asyncio.ensure_future(finish())
            task.add_done_callback(lambda _: loop.stop())

        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(begin)
        self._thread.join(timeout)
