"""The client side of the portal⇄gateway contract (``docs/enforcer-api.md``), on httpx2, and ``mcpgov audit-check``.

What the gateway does with the bundles it fetches is :mod:`mcpgov.bundle_manager`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2

from mcpgov import __version__
from mcpgov.audit import ShipError

log = logging.getLogger("mcpgov.portal")

API = "/api/v1"
LONG_POLL_SECONDS = 25  # the portal caps wait at 30
# The streamed long poll: the longest line of an event taken (a flags update's JWS is a few kB; this
# bounds what a broken or hostile peer can make the gateway buffer), and how long past the portal's
# heartbeat interval a silent stream is taken for dead.
STREAM_MAX_LINE = 1 << 20
STREAM_HEARTBEAT_SECONDS = 15.0  # when the portal does not say (X-Mcpgov-Stream-Heartbeat)
STREAM_IDLE_MARGIN = 10.0


class PortalError(Exception):
    """The portal answered with an error (``status``, ``code``, ``detail``)."""

    def __init__(self, status: int, code: str, detail: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(f"portal answered {status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.body = body or {}

    @property
    def is_auth_failure(self) -> bool:
        return self.status in (401, 403)

    def auth_failure(self, portal_url: str) -> str:
        """The one message for a refused enforcement-client token (gateway, gate, verify)."""
        return (
            f"authentication failed: the portal at {portal_url} refused the enforcement client's token "
            f"({self.status} {self.code}: {self.detail}): the token is revoked or wrong; check --token / --token-file"
        )


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


class StreamError(PortalError):
    """The bundle stream broke its framing, went silent, or was cut without an ``end`` event."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(200, code, detail)


@dataclass(frozen=True)
class StreamEvent:
    """One server-sent event of the bundle stream (``event``, ``data``, ``id``), ASCII only."""

    event: str
    data: str
    id: str | None = None


_FIELDS = (b"event", b"data", b"id")
_PRINTABLE = bytes(range(0x20, 0x7F))


class EventParser:
    """The bundle stream's framing, strictly: ``event``, ``id`` and one ``data`` line per event, comments,
    blank lines between events; lines end in LF (CRLF taken). Anything else — an unknown or repeated
    field, a byte outside printable ASCII (NUL, non-ASCII), a line longer than ``max_line`` — raises
    :class:`StreamError`: the stream cannot be trusted to be in step any more."""

    def __init__(self, max_line: int = STREAM_MAX_LINE) -> None:
        self.max_line = max_line
        self._buffer = bytearray()
        self._fields: dict[bytes, str] = {}

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        self._buffer += chunk
        events = []
        start = 0
        while True:
            end = self._buffer.find(b"\n", start)
            if end < 0:
                break
            if end - start > self.max_line + 1:
                raise StreamError("malformed_stream", f"a line of the stream is over {self.max_line} bytes")
            event = self._line(bytes(self._buffer[start:end]).removesuffix(b"\r"))
            if event is not None:
                events.append(event)
            start = end + 1
        del self._buffer[:start]
        if len(self._buffer) > self.max_line:
            raise StreamError("malformed_stream", f"a line of the stream is over {self.max_line} bytes")
        return events

    def _line(self, line: bytes) -> StreamEvent | None:
        if not line:
            fields, self._fields = self._fields, {}
            if not fields:
                return None
            if b"event" not in fields or b"data" not in fields:
                raise StreamError("malformed_stream", "an event of the stream lacks its event or data field")
            return StreamEvent(fields[b"event"], fields[b"data"], fields.get(b"id"))
        if line.translate(None, _PRINTABLE):  # what is left is outside printable ASCII (at C speed)
            raise StreamError("malformed_stream", "the stream carries a byte outside printable ASCII")
        if line.startswith(b":"):
            return None  # a comment: the heartbeat
        name, colon, value = line.partition(b":")
        if not colon or name not in _FIELDS or name in self._fields:
            raise StreamError("malformed_stream", f"unexpected line in the stream: {line[:80]!r}")
        self._fields[name] = value.removeprefix(b" ").decode("ascii")
        return None


class BundleStream:
    """An open answer of the streamed bundle long poll: either ``answer`` (the portal answered without a
    stream: an older portal, a changed bundle, an error) or :meth:`events` as they arrive."""

    def __init__(self, resp: httpx2.Response, answer: BundlePoll | None) -> None:
        self.response = resp
        self.answer = answer
        try:
            heartbeat = float(resp.headers.get("X-Mcpgov-Stream-Heartbeat", STREAM_HEARTBEAT_SECONDS))
        except ValueError:
            heartbeat = STREAM_HEARTBEAT_SECONDS
        self.idle_timeout = min(max(heartbeat, 1.0), 120.0) + STREAM_IDLE_MARGIN

    async def events(self) -> AsyncIterator[StreamEvent]:
        """The stream's events, until the response ends after its ``end`` event (read to the end, so the
        connection is kept for the next request); raises :class:`StreamError` on bad framing, after
        ``idle_timeout`` seconds without a byte (a dead stream), when the stream ends without an ``end``
        event, or when anything follows it."""
        parser = EventParser()
        chunks = self.response.aiter_raw()
        ended = False
        while True:
            try:
                with anyio.fail_after(self.idle_timeout):
                    chunk = await chunks.__anext__()
            except StopAsyncIteration:
                if ended:
                    return
                raise StreamError("stream_cut", "the bundle stream ended without an end event") from None
            except TimeoutError:
                raise StreamError(
                    "stream_idle", f"nothing on the bundle stream for {self.idle_timeout:.0f} s"
                ) from None
            for event in parser.feed(chunk):
                if ended:
                    raise StreamError("malformed_stream", "an event follows the bundle stream's end event")
                ended = event.event == "end"
                yield event


def _jws_answer(resp: httpx2.Response, etag: str | None) -> tuple[int, str | None, str | None]:
    """A bundle endpoint's answer: 200 with the JWS and its ETag, 304 unchanged, 404 none."""
    if resp.status_code == 304:
        return 304, None, etag
    if resp.status_code == 200:
        return 200, resp.text, resp.headers.get("ETag")
    if resp.status_code == 404:
        return 404, None, None
    raise _error(resp)


def _poll_answer(resp: httpx2.Response, etag: str | None) -> BundlePoll:
    revision = resp.headers.get("X-Mcpgov-Flags-Revision") if resp.status_code == 200 else None
    if revision is not None:
        return BundlePoll(200, resp.text, None, int(revision) if revision.isdigit() else 0)
    return BundlePoll(*_jws_answer(resp, etag))


@dataclass(frozen=True)
class BundlePoll:
    """One answer of the bundle endpoint: ``status`` 200 (``jws``), 304 unchanged, 404 none.

    ``flags_revision`` is set when the 200 carries a signed flags update instead of a bundle (the
    portal's ``X-Mcpgov-Flags-Revision``; routing only: the JWS type is checked when it is verified).
    """

    status: int
    jws: str | None
    etag: str | None
    flags_revision: int | None = None


class PortalClient:
    """Async client for one enforcement client token (one team, one environment)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 10.0,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._token = token
        self._transport = transport
        # set on the first 401 from any portal call: the token was revoked (or is wrong); the gateway
        # refuses every call from then on (a kill switch), while events already recorded still ship
        self.revoked = False
        self.revoked_listeners: list[Callable[[], None]] = []
        self.http = httpx2.AsyncClient(
            event_hooks={"response": [self._on_response]},
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}", "User-Agent": f"mcpgov/{__version__}"},
            timeout=httpx2.Timeout(timeout, read=timeout + LONG_POLL_SECONDS + 5),
            transport=transport,
        )

    async def _on_response(self, resp: httpx2.Response) -> None:
        if resp.status_code == 401:
            self.mark_revoked()

    def mark_revoked(self) -> None:
        if self.revoked:
            return
        self.revoked = True
        if self.revoked_listeners:  # a running gateway; at start the caller reports the refusal
            log.error("the portal answered 401: this enforcement client is revoked or its token is wrong")
        for listener in list(self.revoked_listeners):
            listener()

    def sibling(self, on_revoked: Callable[[], None]) -> PortalClient:
        """A second client for the same token, for another event loop (the audit shipper's thread).

        Its connections belong to the loop that first uses it; a 401 it sees calls ``on_revoked``
        (which hands the kill switch to this client's loop).
        """
        other = PortalClient(self.base_url, self._token, timeout=self.timeout, transport=self._transport)
        other.revoked_listeners.append(on_revoked)
        return other

    async def whoami(self) -> dict[str, Any]:
        """``GET /api/v1/client/``: this client's team, environment and the roles it may enforce."""
        resp = await self.http.get(f"{API}/client/")
        if resp.status_code == 200:
            return resp.json()
        raise _error(resp)

    async def aclose(self) -> None:
        await self.http.aclose()

    # bundle

    async def fetch_bundle(
        self, *, etag: str | None, current_version: int, wait: int = 0
    ) -> tuple[int, str | None, str | None]:
        """``(status, jws, etag)``: 200 with a new bundle, 304 unchanged, 404 none published."""
        answer = await self.poll_bundle(etag=etag, current_version=current_version, wait=wait)
        return answer.status, answer.jws, answer.etag

    async def poll_bundle(
        self, *, etag: str | None, current_version: int, wait: int = 0, flags_revision: int | None = None
    ) -> BundlePoll:
        """The bundle (long) poll. With ``flags_revision`` (the last flags update revision this gateway
        has, 0 for none) the portal may answer a newer signed flags update instead of a whole bundle."""
        headers = {"X-Mcpgov-Bundle-Version": str(current_version)}
        if flags_revision is not None:
            headers["X-Mcpgov-Flags-Revision"] = str(flags_revision)
        params = {}
        if etag:
            headers["If-None-Match"] = etag
            if wait:
                params["wait"] = str(max(0, min(30, int(wait))))
        resp = await self.http.get(f"{API}/bundle/", headers=headers, params=params)
        return _poll_answer(resp, etag)

    @contextlib.asynccontextmanager
    async def bundle_stream(
        self, *, etag: str, current_version: int, flags_revision: int, wait: int = LONG_POLL_SECONDS
    ) -> AsyncIterator[BundleStream]:
        """The streamed bundle long poll (``Accept: text/event-stream``): while the bundle is unchanged
        the portal sends every flags update newer than ``flags_revision`` as an event on one open
        response. The request is the long poll's too (``wait``), so a portal without streams answers it
        as one: then ``answer`` is set, as :meth:`poll_bundle` would return it."""
        headers = {
            "Accept": "text/event-stream",
            "If-None-Match": etag,
            "X-Mcpgov-Bundle-Version": str(current_version),
            "X-Mcpgov-Flags-Revision": str(flags_revision),
        }
        params = {"wait": str(max(0, min(30, int(wait))))}
        async with self.http.stream("GET", f"{API}/bundle/", headers=headers, params=params) as resp:
            content_type = resp.headers.get("Content-Type", "")
            if resp.status_code == 200 and content_type.split(";")[0].strip() == "text/event-stream":
                yield BundleStream(resp, None)
            else:
                await resp.aread()
                yield BundleStream(resp, _poll_answer(resp, etag))

    async def fetch_shadow(self, *, etag: str | None) -> tuple[int, str | None, str | None]:
        """``GET /api/v1/bundle/shadow/``: ``(status, jws, etag)``; 404 when no shadow is published
        (also from a portal that predates shadows)."""
        headers = {"If-None-Match": etag} if etag else {}
        resp = await self.http.get(f"{API}/bundle/shadow/", headers=headers)
        return _jws_answer(resp, etag)

    # sessions

    async def open_session(self, meta: dict[str, Any]) -> dict[str, Any]:
        resp = await self.http.post(f"{API}/gateway/sessions/", json=meta)
        if resp.status_code in (200, 201):
            return resp.json()
        raise _error(resp)

    async def patch_session(
        self,
        session_id: str,
        *,
        state: str,
        trigger: str | None,
        reason: str,
        last_calls: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"state": state, "trigger": trigger, "reason": reason}
        if last_calls is not None:  # absent: the portal keeps the last calls it has
            body["last_calls"] = last_calls[-3:]
        resp = await self.http.patch(f"{API}/gateway/sessions/{session_id}/", json=body)
        if resp.status_code == 200:
            return resp.json()
        raise _error(resp)

    async def control(self, session_id: str, *, since: int, wait: int = LONG_POLL_SECONDS) -> dict[str, Any]:
        resp = await self.http.get(
            f"{API}/gateway/sessions/{session_id}/control/",
            params={"since": str(since), "wait": str(max(0, min(30, wait)))},
        )
        if resp.status_code == 200:
            return resp.json()
        raise _error(resp)

    async def post_events(self, session_id: str, events: list[dict[str, Any]]) -> int:
        """Post one batch; returns the portal's ``last_seq``. Raises :class:`ShipError` when not taken."""
        try:
            resp = await self.http.post(
                f"{API}/gateway/sessions/{session_id}/events/", json={"events": events}
            )
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
        resp = await self.http.get(f"{API}/gateway/sessions/{session_id}/acknowledgement/")
        if resp.status_code == 200:
            return resp.json()
        raise _error(resp)


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
        print(
            f"audit-check: session {args.session} acknowledged by {ack.get('acknowledged_by')} at "
            f"{ack.get('acknowledged_at')}",
            file=sys.stderr,
        )
        return 0
    print(f"audit-check: session {args.session} has NOT been acknowledged by a reviewer", file=sys.stderr)
    return 1
