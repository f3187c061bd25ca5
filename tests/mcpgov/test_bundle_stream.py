"""The gateway's side of the streamed bundle long poll against a portal that misbehaves: bad framing, a
huge line, NUL or non-ASCII bytes, unknown fields and events, a silent or cut stream are refused and
logged, never applied, and never crash the manager; an older portal's plain answer is taken as the poll's.
The well-behaved portal (uvicorn) is tests/governance/test_bundle_stream.py."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anyio
import pytest

from mcpgov import portal_client
from mcpgov.bundle import Trigger
from mcpgov.bundle_manager import BundleManager
from mcpgov.decision import ToolCall, Verdict, compile_policy, decide
from mcpgov.portal_client import STREAM_MAX_LINE, EventParser, PortalClient, StreamError, StreamEvent
from mcpgov.session import SessionState
from mcpgov.verify import load_jwks
from tests.mcpgov.helpers import Signer, iso


def live(**overrides):
    now = datetime.now(UTC)
    return {
        "issued_at": iso(now - timedelta(minutes=1)),
        "expires_at": iso(now + timedelta(hours=1)),
        **overrides,
    }


def event(name: str, data: str, event_id: int | None = None) -> bytes:
    return (
        f"event: {name}\n" + (f"id: {event_id}\n" if event_id is not None else "") + f"data: {data}\n\n"
    ).encode()


END = event("end", '{"reason":"bundle_changed"}')


class HostilePortal:
    """Answers a bundle request without Accept: text/event-stream with the bundle (200, then 304 for its
    ETag); a stream request with `stream_body` as a text/event-stream (then holds it open while
    `hold`), or with `plain` = (status, headers, body) when set (a portal without streams)."""

    def __init__(self, bundle_jws: str) -> None:
        self.bundle_jws = bundle_jws
        self.stream_body = b""
        self.hold = False
        self.plain: tuple[int, dict[str, str], bytes] | None = None
        self.stream_requests = 0
        self.released = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                if "text/event-stream" not in self.headers.get("Accept", ""):
                    etag = '"the-etag"'
                    if self.headers.get("If-None-Match") == etag:
                        self.send_response(304)
                        self.send_header("ETag", etag)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    body = outer.bundle_jws.encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/jose")
                    self.send_header("ETag", etag)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                outer.stream_requests += 1
                if outer.plain is not None:
                    status, headers, body = outer.plain
                    self.send_response(status)
                    for name, value in {**headers, "Content-Length": str(len(body))}.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("X-Mcpgov-Stream-Heartbeat", "1")
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(outer.stream_body)
                self.wfile.flush()
                if outer.hold:
                    outer.released.wait(30)
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> HostilePortal:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def signer():
    return Signer()


@pytest.fixture
def portal(signer):
    with HostilePortal(signer.sign(**live())) as p:
        yield p


def verdict(manager: BundleManager) -> str:
    policy = compile_policy(manager.enforced.bundle, "code_agent")
    call = ToolCall("time", "get_current_time", {"timezone": "UTC"})
    decision = decide(
        policy, SessionState(session_id="s", role="code_agent"), call, datetime.now(UTC).timestamp()
    )
    return decision.trigger or decision.verdict


def follow_once(signer, portal, tmp_path):
    """A gateway that fetched its bundle, then one streamed long poll: (manager, outcome)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    keys = load_jwks(signer.write_jwks(tmp_path / "keys.json"))
    manager = BundleManager(
        keys,
        environment="development",
        state_dir=tmp_path / "state",
        client=PortalClient(portal.url, "t", timeout=5),
    )

    async def go():
        try:
            assert await manager.refresh()
            with anyio.fail_after(20):
                return await manager.follow()
        except StreamError as exc:
            return exc
        finally:
            await manager.client.aclose()

    return manager, anyio.run(go)


def test_updates_split_anywhere_across_chunks_are_applied_and_the_end_returns(signer):
    r1 = event("flags", signer.sign_flags(**live()), 1)
    parser = EventParser()
    events = [e for byte in r1 + b": heartbeat\n\n" + END for e in parser.feed(bytes([byte]))]
    assert [e.event for e in events] == ["flags", "end"] and events[0].id == "1"
    crlf = EventParser().feed(r1.replace(b"\n", b"\r\n"))
    assert crlf == [StreamEvent("flags", events[0].data, "1")]


def test_an_update_on_the_stream_switches_the_gateway_then_the_bundle_change_ends_it(
    signer, portal, tmp_path
):
    portal.stream_body = b": heartbeat\n\n" + event("flags", signer.sign_flags(**live()), 1) + END
    manager, outcome = follow_once(signer, portal, tmp_path)
    assert outcome is True
    assert verdict(manager) == Trigger.KILL_SWITCH_FLAG and manager.flags_seen == 1


@pytest.mark.parametrize(
    "bad",
    [
        b"event: flags\nid: 1\ndata: eyJ\x00hbGc\n\n",  # NUL
        "event: flags\nid: 1\ndata: eyJhbGc\u00e9.x.y\n\n".encode(),  # non-ASCII
        b"event: flags\nid: 1\ndata: " + b"A" * (STREAM_MAX_LINE + 1),  # a line without end
        b"event: flags\nid: 1\ndata: " + b"A" * (STREAM_MAX_LINE + 1) + b"\n\n",  # one too long
        b"event: flags\nretry: 10\ndata: x\n\n",  # a field outside the contract
        b"event: flags\nid: 1\ndata: a\ndata: b\n\n",  # a repeated field (multi-line data)
        b"event: flags\nid: 1\n\n",  # no data
        b"data: x\n\n",  # no event
        b"event flags\n\n",  # no colon
        b"event: end\ndata: not json\n\n",  # an end that is not {"reason": ...}
    ],
    ids=[
        "nul",
        "non-ascii",
        "endless-line",
        "long-line",
        "unknown-field",
        "repeated",
        "no-data",
        "no-event",
        "no-colon",
        "bad-end",
    ],
)
def test_bad_framing_ends_the_stream_and_nothing_on_it_is_applied(signer, portal, tmp_path, bad, caplog):
    portal.stream_body = bad + event("flags", signer.sign_flags(**live()), 1) + END
    manager, outcome = follow_once(signer, portal, tmp_path)
    assert isinstance(outcome, StreamError) and outcome.code == "malformed_stream"
    assert manager.flags is None and verdict(manager) == Verdict.ALLOW  # the good event after it too


def test_unknown_events_bad_ids_and_bad_updates_are_refused_and_the_stream_goes_on(
    signer, portal, tmp_path, caplog
):
    good = signer.sign_flags(**live(revision=4))
    portal.stream_body = (
        event("surprise", "x")
        + event("flags", good, None)  # no id
        + event("flags", good, "4x")  # not a revision
        + event("flags", good[:-4] + "AAAA", 3)  # tampered
        + event("flags", good, 4)
        + END
    )
    manager, outcome = follow_once(signer, portal, tmp_path)
    assert outcome is True
    assert (
        manager.rejected == 4 and manager.flags.revision == 4 and verdict(manager) == Trigger.KILL_SWITCH_FLAG
    )
    assert "REFUSED event 'surprise'" in caplog.text and "REJECTED flags update" in caplog.text


def test_a_silent_stream_is_taken_for_dead_and_a_cut_one_for_broken(signer, portal, tmp_path, monkeypatch):
    monkeypatch.setattr(portal_client, "STREAM_IDLE_MARGIN", 0.5)
    portal.stream_body, portal.hold = b": heartbeat\n\n", True
    _, outcome = follow_once(signer, portal, tmp_path)
    assert isinstance(outcome, StreamError) and outcome.code == "stream_idle"
    portal.hold = False
    _, outcome = follow_once(signer, portal, tmp_path / "again")
    assert isinstance(outcome, StreamError) and outcome.code == "stream_cut"


def test_run_survives_a_hostile_stream_and_keeps_reconnecting_with_backoff(signer, portal, tmp_path):
    portal.stream_body = b"event: flags\nid: 1\ndata: \xff\n\n"
    keys = load_jwks(signer.write_jwks(tmp_path / "keys.json"))
    manager = BundleManager(keys, environment="development", client=PortalClient(portal.url, "t", timeout=5))

    async def go():
        await manager.refresh()
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: manager.run(min_backoff=0.05, max_backoff=0.1))
            with anyio.fail_after(20):
                while portal.stream_requests < 3:
                    await anyio.sleep(0.02)
            tg.cancel_scope.cancel()
        await manager.client.aclose()

    anyio.run(go)
    assert manager.flags is None and verdict(manager) == Verdict.ALLOW


def test_a_portal_without_streams_is_answered_as_the_long_poll(signer, portal, tmp_path):
    portal.plain = (304, {"ETag": '"the-etag"'}, b"")
    manager, outcome = follow_once(signer, portal, tmp_path)
    assert outcome is False and manager.flags is None
    update = signer.sign_flags(**live())
    portal.plain = (
        200,
        {"Content-Type": "application/jose", "X-Mcpgov-Flags-Revision": "1"},
        update.encode(),
    )
    manager, outcome = follow_once(signer, portal, tmp_path / "again")
    assert outcome is True and verdict(manager) == Trigger.KILL_SWITCH_FLAG


def test_anything_after_the_end_event_is_refused(signer, portal, tmp_path):
    portal.stream_body = END + event("flags", signer.sign_flags(**live()), 1)
    manager, outcome = follow_once(signer, portal, tmp_path)
    assert isinstance(outcome, StreamError) and outcome.code == "malformed_stream"
    assert manager.flags is None
