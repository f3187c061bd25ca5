"""PortalTestDouble: a small real HTTP server that speaks the portal side of docs/enforcer-api.md.

A test double of the Django portal for the enforcer's own tests, until end-to-end tests against the
real portal exist (the portal team owns those). It implements the documented semantics the gateway
depends on: bundle ETag / If-None-Match / long poll, idempotent session open, PATCH with the
needs_release rule, the control long poll, and event ingestion idempotent by (session, seq) with
sequence_gap. It can be told to fail (``outage``) or to drop a response after storing a batch.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

TOKEN = "test-token"


def _gateway_parts(parts: list[str]) -> list[str]:
    """Sessions are served on the gateway-facing set (/api/v1/gateway/sessions/…), as by the portal; the
    people-facing /api/v1/sessions/… is not for gateways, and matches nothing here (404)."""
    if parts[:4] == ["api", "v1", "gateway", "sessions"]:
        return ["api", "v1", "sessions", *parts[4:]]
    if parts[:3] == ["api", "v1", "sessions"]:
        return ["api", "v1", "people", *parts[3:]]
    return parts


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # a gateway hanging up mid long poll is normal
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class PortalTestDouble:
    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.jws: str | None = None
        self.version = 0
        self.sessions: dict[str, dict[str, Any]] = {}
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self.posts = 0
        self.duplicates = 0
        self.outage = False  # every request answers 503
        self.drop_next_event_response = False  # store the batch, then close the connection without answering
        # a slow portal: while cleared, every event POST waits (unstored, unanswered) until it is set
        self.events_flowing = threading.Event()
        self.events_flowing.set()
        self.event_posts_waiting = 0
        self.acknowledged: dict[str, dict[str, Any]] = {}
        self.reported_versions: list[int] = []
        # GET /api/v1/client/ (whoami): the roles this enforcement client may enforce
        self.client_roles = ["code_agent", "docs_agent", "nobody"]
        # the client's token revoked: every call answers 401 (long polls at once), except event delivery
        # for sessions opened before the revocation
        self.revoked = False
        self.tool_reports: list[dict[str, Any]] = []
        self.server = _Server(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> PortalTestDouble:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # what a person or the portal's services would do

    def publish(self, jws: str, version: int) -> None:
        with self.lock:
            self.jws, self.version = jws, version
            self.lock.notify_all()

    def release(self, session_id: str, by: str = "reviewer", state: str = "active") -> None:
        with self.lock:
            s = self.sessions[session_id]
            s["state"] = state
            s["control_version"] += 1
            s["decided_by"] = by
            self.lock.notify_all()

    def approve(self, session_id: str, call_id: str, decision: str = "approve") -> None:
        with self.lock:
            s = self.sessions[session_id]
            s["approvals"].append(
                {"call_id": call_id, "decision": decision, "by": "reviewer", "reason": "ok"}
            )
            s["control_version"] += 1
            self.lock.notify_all()

    def revoke(self) -> None:
        with self.lock:
            self.revoked = True
            self.lock.notify_all()

    def wait_for(self, predicate, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        with self.lock:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.lock.wait(left)
        return True

    # HTTP

    def _handler(self):
        portal = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(
                self,
                status: int,
                body: Any = None,
                headers: dict[str, str] | None = None,
                raw: str | None = None,
            ):
                data = (
                    raw.encode()
                    if raw is not None
                    else (json.dumps(body).encode() if body is not None else b"")
                )
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                if body is not None and raw is None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> Any:
                n = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(n) or b"{}")

            def _auth(self, delivery: bool = False) -> bool:
                if portal.outage:
                    self._send(503, {"detail": "down for maintenance", "code": "unavailable"})
                    return False
                if portal.revoked and not delivery:
                    self._send(401, {"detail": "client revoked", "code": "authentication_failed"})
                    return False
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self._send(401, {"detail": "bad token", "code": "not_authenticated"})
                    return False
                return True

            def do_GET(self):
                u = urlparse(self.path)
                q = {k: v[0] for k, v in parse_qs(u.query).items()}
                if not self._auth():
                    return
                parts = _gateway_parts([p for p in u.path.split("/") if p])
                if u.path == "/api/v1/client/":
                    return self._send(
                        200,
                        {
                            "client": {"name": "double"},
                            "team": "acme",
                            "environment": "development",
                            "roles": list(portal.client_roles),
                            "revoked": False,
                        },
                    )
                if u.path == "/api/v1/bundle/":
                    portal.reported_versions.append(int(self.headers.get("X-Mcpgov-Bundle-Version", "-1")))
                    inm = self.headers.get("If-None-Match")
                    wait = min(30, int(q.get("wait", "0")))
                    deadline = time.monotonic() + wait
                    with portal.lock:
                        while True:
                            if portal.revoked:
                                return self._send(
                                    401, {"detail": "client revoked", "code": "authentication_failed"}
                                )
                            if portal.jws is None:
                                return self._send(404, {"detail": "nothing published", "code": "no_bundle"})
                            etag = f'"{hashlib.sha256(portal.jws.encode()).hexdigest()}"'
                            if inm != etag:
                                return self._send(
                                    200,
                                    headers={
                                        "ETag": etag,
                                        "X-Bundle-Version": str(portal.version),
                                        "Content-Type": "application/jose",
                                    },
                                    raw=portal.jws,
                                )
                            left = deadline - time.monotonic()
                            if left <= 0:
                                return self._send(304, headers={"ETag": etag})
                            portal.lock.wait(left)
                if len(parts) == 5 and parts[:3] == ["api", "v1", "sessions"] and parts[4] == "control":
                    sid = parts[3]
                    since = int(q.get("since", "0"))
                    deadline = time.monotonic() + min(30, int(q.get("wait", "0")))
                    with portal.lock:
                        s = portal.sessions.get(sid)
                        if s is None:
                            return self._send(404, {"detail": "no such session", "code": "not_found"})
                        while (
                            s["control_version"] <= since
                            and time.monotonic() < deadline
                            and not portal.revoked
                        ):
                            portal.lock.wait(max(0.0, deadline - time.monotonic()))
                        if portal.revoked:
                            return self._send(
                                401, {"detail": "client revoked", "code": "authentication_failed"}
                            )
                        body = {
                            "state": s["state"],
                            "control_version": s["control_version"],
                            "decided_by": s.get("decided_by"),
                            "reason": "",
                            "decided_at": None,
                            "approvals": list(s["approvals"]),
                        }
                    return self._send(200, body)
                if len(parts) == 5 and parts[4] == "acknowledgement":
                    ack = portal.acknowledged.get(parts[3])
                    if parts[3] not in portal.sessions:
                        return self._send(404, {"detail": "no such session", "code": "not_found"})
                    return self._send(
                        200,
                        ack
                        or {
                            "acknowledged": False,
                            "acknowledged_by": None,
                            "acknowledged_at": None,
                            "note": "",
                        },
                    )
                self._send(404, {"detail": "not found", "code": "not_found"})

            def do_POST(self):
                parts = _gateway_parts([p for p in urlparse(self.path).path.split("/") if p])
                delivery = len(parts) == 5 and parts[4] == "events" and parts[3] in portal.sessions
                if not self._auth(delivery=delivery):
                    return
                body = self._body()
                if parts == ["api", "v1", "tool-reports"]:
                    with portal.lock:
                        portal.tool_reports.append(body)
                        portal.lock.notify_all()
                    return self._send(200, {"accepted": True})
                if parts == ["api", "v1", "sessions"]:
                    with portal.lock:
                        sid = body["id"]
                        if sid in portal.sessions:
                            return self._send(200, portal.sessions[sid])
                        portal.sessions[sid] = {
                            **body,
                            "state": "refused" if body.get("state") == "refused" else "active",
                            "control_version": 0,
                            "approvals": [],
                            "trigger": None,
                        }
                        portal.events.setdefault(sid, [])
                        portal.lock.notify_all()
                        return self._send(201, portal.sessions[sid])
                if len(parts) == 5 and parts[4] == "events":
                    sid = parts[3]
                    events = body.get("events", [])
                    if not portal.events_flowing.is_set():
                        with portal.lock:
                            portal.event_posts_waiting += 1
                            portal.lock.notify_all()
                        portal.events_flowing.wait()
                        with portal.lock:
                            portal.event_posts_waiting -= 1
                    with portal.lock:
                        portal.posts += 1
                        if sid not in portal.sessions:
                            return self._send(404, {"detail": "no such session", "code": "not_found"})
                        if len(events) > 1000:
                            return self._send(413, {"detail": "too many", "code": "batch_too_large"})
                        stored = portal.events[sid]
                        last = stored[-1]["seq"] if stored else 0
                        accepted = dups = 0
                        new = []
                        for ev in events:
                            if ev["seq"] <= last:
                                if stored[ev["seq"] - 1] != ev:
                                    return self._send(
                                        400, {"detail": f"seq {ev['seq']} differs", "code": "conflict"}
                                    )
                                dups += 1
                                continue
                            expected = (new[-1]["seq"] if new else last) + 1
                            if ev["seq"] != expected:
                                return self._send(
                                    409, {"detail": "gap", "code": "sequence_gap", "last_seq": last}
                                )
                            new.append(ev)
                        stored.extend(new)
                        accepted = len(new)
                        portal.duplicates += dups
                        portal.lock.notify_all()
                        if portal.drop_next_event_response:
                            portal.drop_next_event_response = False
                            self.close_connection = True
                            self.connection.shutdown(2)
                            return None
                        return self._send(
                            200,
                            {
                                "accepted": accepted,
                                "duplicates": dups,
                                "last_seq": stored[-1]["seq"] if stored else 0,
                            },
                        )
                self._send(404, {"detail": "not found", "code": "not_found"})

            def do_PATCH(self):
                if not self._auth():
                    return
                parts = _gateway_parts([p for p in urlparse(self.path).path.split("/") if p])
                body = self._body()
                with portal.lock:
                    s = portal.sessions.get(parts[3]) if len(parts) == 4 else None
                    if s is None:
                        return self._send(404, {"detail": "no such session", "code": "not_found"})
                    if s["state"] in ("halted", "paused") and body.get("state") == "active":
                        return self._send(
                            409, {"detail": "a person must release it", "code": "needs_release"}
                        )
                    portal.patches.append((parts[3], body))
                    s["state"] = body["state"]
                    s["trigger"] = body.get("trigger")
                    portal.lock.notify_all()
                    return self._send(200, s)

        return Handler
