"""MCP 2026-07-28 multi-round-trip requests (``InputRequiredResult``) through the gateway, governed.

A 2026-07-28 upstream that needs the agent's side (sampling, elicitation, roots) answers ``tools/call``
with an ``InputRequiredResult``; the agent retries with ``inputResponses`` and the echoed opaque
``requestState``. Each input request is decided by the same rule as a legacy server-to-client request
(:meth:`mcpgov.surface.Surface.screen_server_request`), each round is audited, and the retry is the
same logical call: the gateway wraps the upstream's ``requestState`` in its own sealed state bound to
the governance session, the tool name and a digest of the arguments, redeemable once. The gateway's
own approval wait is offered to a 2026-07-28 agent the same way. See ``docs/gateway.md``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import mcp_types as types
from mcp.server.request_state import AESGCMRequestStateCodec, InvalidRequestState
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from mcpgov.bundle import Trigger
from mcpgov.decision import Decision, ToolCall, Verdict, decide
from mcpgov.session import CallRecord
from mcpgov.upstream import CALLER, UpstreamClosed, UpstreamError

if TYPE_CHECKING:
    from mcpgov.control import AgentSession
    from mcpgov.gateway import Gateway
    from mcpgov.tracing import CallObservation
    from mcpgov.upstream import Upstream

log = logging.getLogger("mcpgov.mrtr")

STATE_TTL = 600.0  # seconds a round's state may be redeemed (the spec asks for a short expiry)
MAX_ROUNDS = 10  # rounds of one logical call (the SDK clients' own default cap)
APPROVAL_KEY = "io.mcpgov/approval"  # the input request of the gateway's own approval round
APPROVAL_ROUND_WAIT = 20.0  # a retry of an approval round waits this long for the decision, then asks again
INVALID_STATE = {"code": types.INVALID_PARAMS, "message": "Invalid or expired requestState"}
# what a retry is checked against again (a halt, a kill switch, a revoked server since the first round);
# rate limits, the cascade and the approval were decided once, for the call, in its first round
RECHECKED = frozenset(
    {
        Trigger.BUNDLE_EXPIRED,
        Trigger.SESSION_HALTED,
        Trigger.TOOL_DEFINITION_CHANGED,
        Trigger.KILL_SWITCH_FLAG,
        Trigger.UNAUTHORIZED_SERVER,
        Trigger.PRODUCTION_ENVIRONMENT,
        Trigger.WRITE_IN_READ_SESSION,
    }
)
_ANSWER_TYPES: dict[str, Any] = {
    "sampling/createMessage": (types.CreateMessageResult, types.CreateMessageResultWithTools),
    "elicitation/create": (types.ElicitResult,),
    "roots/list": (types.ListRootsResult,),
}


@dataclass(slots=True)
class AgentRequest:
    """The agent request being served: its connection, and whether it may be answered with a round."""

    peer: Any
    modern: bool  # 2026-07-28: an InputRequiredResult is an answer it understands


AGENT: ContextVar[AgentRequest | None] = ContextVar("mcpgov_agent_request", default=None)


@contextlib.contextmanager
def agent_rounds(ctx: Any) -> Iterator[None]:
    """Within an SDK handler: whether this agent request speaks 2026-07-28 (:data:`AGENT`)."""
    token = AGENT.set(AgentRequest(ctx.session, ctx.protocol_version in MODERN_PROTOCOL_VERSIONS))
    try:
        yield
    finally:
        AGENT.reset(token)


def retry_params(params: types.CallToolRequestParams) -> dict[str, Any] | None:
    """The agent's ``inputResponses`` / ``requestState`` as wire values, or None for a first call."""
    if params.request_state is None and not params.input_responses:
        return None
    responses = {
        str(k): v.model_dump(by_alias=True, mode="json", exclude_none=True)
        for k, v in (params.input_responses or {}).items()
    }
    return {"inputResponses": responses, "requestState": params.request_state}


def arguments_digest(arguments: dict[str, Any] | None) -> str:
    canonical = json.dumps(arguments or {}, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


class StateRefused(Exception):
    """A retry's ``requestState`` is not one this gateway minted for this session and call (log-only reason)."""


@dataclass(slots=True)
class _Waiting:
    """An approval-required call of a 2026-07-28 agent, between its rounds."""

    intent: dict[str, Any]
    event: anyio.Event
    answer: list[str]
    deadline: float


@dataclass(slots=True)
class FlightRound:
    """What the agent is answered while its call is still in flight upstream: an ``InputRequiredResult``."""

    answer: dict[str, Any]


class Flight:
    """A 2026-07-28 agent's call to a 2025-11-25 upstream that asks (sampling, elicitation, roots) mid-call.

    The legacy request cannot ride a stateless agent request, so the upstream call runs on in the
    gateway's task group, its request is parked and put to the agent as a round; the agent's retry
    brings the answer and waits for the call's result (or the next question) again.
    """

    def __init__(self, rounds: Rounds, sess: AgentSession, intent: dict[str, Any]) -> None:
        self.rounds, self.sess, self.intent = rounds, sess, intent
        self.id = uuid.uuid4().hex
        self.events_in, self.events = anyio.create_memory_object_stream[tuple[str, Any]](16)
        # key -> (server, method, screened, the event the parked request waits on, where its answer goes)
        self.parked: dict[str, tuple[str, str, Any, anyio.Event, list[Any]]] = {}
        self.name = ""
        self.arguments: dict[str, Any] | None = None
        self.scope = anyio.CancelScope()

    async def start(self, forward: Any) -> Any:
        caller = CALLER.get()
        if caller is not None:
            caller.flight = self  # the parked requests find their flight through the upstream's caller
        gw = self.rounds.gateway
        assert gw.tg is not None

        async def run() -> None:
            outcome: tuple[str, Any] = ("failed", UpstreamClosed("cancelled before the upstream answered"))
            with self.scope:
                try:
                    outcome = ("done", await forward())
                except Exception as exc:  # handed to the agent request that waits for the result
                    outcome = ("failed", exc)
            self.rounds.flights.pop(self.id, None)
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await self.events_in.send(outcome)

        self.rounds.flights[self.id] = self
        gw.tg.start_soon(run)
        return await self.next()

    async def next(self) -> Any:
        try:
            kind, value = await self.events.receive()
        except anyio.get_cancelled_exc_class():
            if not self.parked:  # the agent cancelled its call (not a round): the upstream is told, as before
                self.scope.cancel()
            raise
        if kind == "failed":
            raise value
        if kind == "done":
            return value
        key, _server, method, screened = value
        token = self.rounds.seal(
            self.sess, self.name, self.arguments, kind="flight", flight=self.id, keys={key: method}
        )
        return FlightRound(
            {
                "resultType": "input_required",
                "inputRequests": {key: {"method": method, "params": screened.wire}},
                "requestState": token,
            }
        )

    async def ask(self, server: str, method: str, screened: Any) -> Any:
        """A parked request of the upstream: answered by the agent's retry, or refused when none comes."""
        key = f"{method}#{len(self.parked) + 1}"
        event, answer = anyio.Event(), []
        self.parked[key] = (server, method, screened, event, answer)
        await self.events_in.send(("ask", (key, server, method, screened)))
        with anyio.move_on_after(self.rounds.ttl):
            await event.wait()
        surface = self.rounds.gateway.surface
        if not answer:
            surface.server_request_failed(
                self.sess, screened.intent, server, method, "the agent did not retry", time.perf_counter()
            )
            return types.ErrorData(code=types.INVALID_REQUEST, message=f"{method}: the agent did not answer")
        surface.answered(self.sess, screened.intent, server, method, answer[0], 0.0)
        model = _ANSWER_TYPES[method][
            -1 if method == "sampling/createMessage" and screened.wire.get("tools") else 0
        ]
        return model.model_validate(answer[0])

    async def resume(self, keys: dict[str, str], responses: dict[str, Any]) -> Any:
        for key, method in keys.items():
            parked = self.parked.pop(key, None)
            if parked is None:
                continue
            answer = responses.get(key)
            if answer is not None and _valid_answer(method, answer):
                parked[4].append(answer)
            parked[3].set()
        return await self.next()


class Rounds:
    """The gateway's side of multi-round-trip requests: its sealed state, the rounds, their audit."""

    def __init__(self, gateway: Gateway, *, ttl: float = STATE_TTL) -> None:
        self.gateway = gateway
        # AES-256-GCM (the SDK's codec): the agent can neither read nor alter the state. The key is the
        # process's own unless MCPGOV_STATE_KEY is shared by the instances behind one HTTP endpoint.
        key = os.environ.get("MCPGOV_STATE_KEY")
        self.codec = AESGCMRequestStateCodec([key.encode() if key else os.urandom(32)])
        self.ttl = ttl
        self.redeemed: dict[str, float] = {}  # nonce -> expiry: each state is redeemed once
        self.asked: dict[
            str, dict[str, dict[str, Any]]
        ] = {}  # nonce -> key -> INTENT of what the agent was asked
        self.waiting: dict[str, _Waiting] = {}  # call id -> an approval wait between rounds
        self.flights: dict[str, Flight] = {}  # a 2026-07-28 agent's call in flight to a legacy upstream

    def flight(self, sess: AgentSession, intent: dict[str, Any], upstream: Upstream) -> Flight | None:
        """A flight for this call when a 2026-07-28 agent calls a legacy upstream that may ask it something."""
        agent = AGENT.get()
        if agent is None or not agent.modern or upstream.modern or self.gateway.tg is None:
            return None
        sr = self.gateway.policy.rule(upstream.slug).server_requests
        if not (sr.sampling or sr.elicitation or sr.elicitation_url_domains or sr.roots):
            return None
        flight = Flight(self, sess, intent)
        flight.name, flight.arguments = (
            _exposed(self.gateway, upstream.slug, intent["tool"]),
            intent["arguments"],
        )
        return flight

    # the sealed state

    def seal(self, sess: AgentSession, name: str, arguments: dict[str, Any] | None, **claims: Any) -> str:
        nonce = uuid.uuid4().hex
        body = {
            "v": 1,
            "exp": time.time() + self.ttl,
            "sid": sess.id,
            "name": name,
            "args": arguments_digest(arguments),
            "n": nonce,
            **claims,
        }
        return self.codec.seal(json.dumps(body, separators=(",", ":")).encode())

    def open(
        self, sess: AgentSession, name: str, arguments: dict[str, Any] | None, token: Any
    ) -> dict[str, Any]:
        """The claims of a retry's state; raises :class:`StateRefused` unless minted here for this very call."""
        if not isinstance(token, str):
            raise StateRefused("no requestState")
        try:
            claims = json.loads(self.codec.unseal(token))
        except (InvalidRequestState, ValueError) as exc:
            raise StateRefused(f"not sealed by this gateway ({exc})") from exc
        now = time.time()
        self._prune(now)
        if not isinstance(claims, dict) or claims.get("v") != 1 or not now < float(claims.get("exp", 0)):
            raise StateRefused("expired")
        if claims.get("sid") != sess.id:
            raise StateRefused("minted for another governance session")
        if claims.get("name") != name or claims.get("args") != arguments_digest(arguments):
            raise StateRefused("minted for another tool or other arguments")
        nonce = str(claims.get("n"))
        if nonce in self.redeemed:
            raise StateRefused("already redeemed")
        self.redeemed[nonce] = float(claims["exp"])
        return claims

    def _prune(self, now: float) -> None:
        for nonce in [n for n, exp in self.redeemed.items() if exp <= now]:
            del self.redeemed[nonce]

    # an upstream asked for input

    async def upstream_asked(
        self,
        sess: AgentSession,
        intent: dict[str, Any],
        name: str,
        call: ToolCall,
        upstream: Upstream,
        result: dict[str, Any],
        ms: float,
        round_no: int,
        obs: CallObservation,
        timeout: float | None,
    ) -> dict[str, Any]:
        """This round's RESULT; then each input request decided, and the agent asked (or told the refusal)."""
        gw = self.gateway
        requests: dict[str, Any] = result.get("inputRequests") or {}
        up_state = result.get("requestState")
        methods = ", ".join(f"{k}: {(r or {}).get('method')}" for k, r in requests.items()) or "state only"
        sess.spool.result(
            intent,
            status="success",
            result_summary=f"input required (round {round_no}; {methods}): the call continues on the retry",
            nbytes=0,
            duration_ms=ms,
        )
        sess.state.record_outcome(
            CallRecord(intent["ts"], call.server, call.tool, intent["args_summary"], "input required")
        )
        if round_no >= MAX_ROUNDS:
            return _refusal(f"the server asked for input more than {MAX_ROUNDS} times in one call")
        agent = AGENT.get()
        caller = CALLER.get()
        peer = agent.peer if agent is not None else (caller.peer if caller is not None else sess.peer)
        shown: dict[str, Any] = {}
        answers: dict[str, Any] = {}  # the gateway's own answers (a refused question is declined)
        refused: list[str] = []
        for key, request in requests.items():
            method = str((request or {}).get("method"))
            wire = dict((request or {}).get("params") or {})
            screened = gw.surface.screen_server_request(sess, upstream.slug, method, wire, peer)
            if screened.allowed:
                shown[key] = (method, screened)
            elif method == "elicitation/create":
                answers[key] = {
                    "action": "decline"
                }  # the spec's refusal of a question: never shown to the user
            else:
                refused.append(screened.reason)
        if refused:
            # sampling or roots refused: the spec's client that declines does not retry, so the call ends
            for method, screened in shown.values():
                gw.surface.server_request_failed(
                    sess,
                    screened.intent,
                    upstream.slug,
                    method,
                    "not asked: the call ended (a request was refused)",
                    time.perf_counter(),
                )
            return _refusal("; ".join(refused))
        if agent is None or not agent.modern:
            return await self._ask_legacy_agent(
                sess, name, call, upstream, shown, answers, up_state, round_no, obs, timeout, peer
            )
        if not shown and answers:  # nothing for the agent: the upstream hears the refusal at once
            return await self._retry(sess, name, call, answers, up_state, round_no, obs, timeout)
        token = self.seal(
            sess,
            name,
            call.arguments,
            kind="upstream",
            r=round_no,
            up=up_state,
            keys={k: m for k, (m, _) in shown.items()},
            gw=answers,
            to=timeout,
        )
        claims = json.loads(self.codec.unseal(token))
        self.asked[claims["n"]] = {k: s.intent for k, (_, s) in shown.items()}
        return {
            "resultType": "input_required",
            "inputRequests": {k: {"method": m, "params": s.wire} for k, (m, s) in shown.items()},
            "requestState": token,
        }

    async def _ask_legacy_agent(
        self,
        sess: AgentSession,
        name: str,
        call: ToolCall,
        upstream: Upstream,
        shown: dict[str, Any],
        answers: dict[str, Any],
        up_state: str | None,
        round_no: int,
        obs: CallObservation,
        timeout: float | None,
        peer: Any,
    ) -> dict[str, Any]:
        """A 2025-11-25 agent: the gateway asks it in the legacy form and retries the upstream itself."""
        caller = CALLER.get()
        for key, (method, screened) in shown.items():
            answer = await self.gateway.surface.ask_agent(sess, caller, peer, upstream.slug, method, screened)
            if isinstance(answer, types.ErrorData):
                return _refusal(f"the agent did not answer {method}: {answer.message}", denied=False)
            answers[key] = answer.model_dump(by_alias=True, mode="json", exclude_none=True)
        if not answers and up_state is not None:
            await anyio.sleep(min(0.05 * 2**round_no, 1.0))  # state only: the server wants to be asked again
        return await self._retry(sess, name, call, answers, up_state, round_no, obs, timeout)

    async def _retry(
        self,
        sess: AgentSession,
        name: str,
        call: ToolCall,
        answers: dict[str, Any],
        up_state: str | None,
        round_no: int,
        obs: CallObservation,
        timeout: float | None,
    ) -> dict[str, Any]:
        """The next round to the upstream: its own INTENT, not counted again (the same call)."""
        gw = self.gateway
        intent = self._round_intent(sess, call, obs)
        rounds: dict[str, Any] = {"inputResponses": answers}
        if up_state is not None:
            rounds["requestState"] = up_state
        return await gw.forward(sess, intent, name, call, timeout, obs, rounds=rounds, round_no=round_no + 1)

    def _round_intent(self, sess: AgentSession, call: ToolCall, obs: CallObservation) -> dict[str, Any]:
        return sess.spool.intent(
            call_id=str(uuid.uuid4()),
            server=call.server,
            tool=call.tool,
            arguments=call.arguments,
            bundle_version=self.gateway.policy.version,
            trace_id=obs.trace_id,
            defer_sync=True,
        )

    # the agent's retry

    async def resume(
        self,
        sess: AgentSession,
        name: str,
        arguments: dict[str, Any] | None,
        rounds: dict[str, Any],
        obs: CallObservation,
    ) -> dict[str, Any]:
        """A 2026-07-28 retry: the same call under its first decision, or refused (tampered, replayed, halted)."""
        gw = self.gateway
        _, call = gw.call_of(name, arguments)
        now = time.time()
        try:
            claims = self.open(sess, name, arguments, rounds.get("requestState"))
        except StateRefused as exc:
            intent = self._round_intent(sess, call, obs)
            gw._record_blocked(
                sess, intent, call.server, call.tool, f"retry refused: requestState {exc}", None, now
            )
            log.warning("REFUSED retry of %s: requestState %s", name, exc)
            raise UpstreamError({**INVALID_STATE, "data": {"reason": "invalid_request_state"}}) from exc
        if claims.get("kind") == "flight":
            return await self._flight_retry(sess, name, call, claims, rounds, obs, now)
        waiting = self.waiting.get(str(claims.get("call"))) if claims.get("kind") == "approval" else None
        if claims.get("kind") == "approval" and waiting is None:
            raise UpstreamError({**INVALID_STATE, "data": {"reason": "invalid_request_state"}})
        intent = waiting.intent if waiting is not None else self._round_intent(sess, call, obs)
        decision = decide(gw.policy, sess.state, call, now)
        if decision.verdict == Verdict.REFUSE and decision.trigger in RECHECKED:
            if waiting is not None:
                self._stop_waiting(sess, str(claims["call"]))
            return gw._refuse(sess, intent, call, decision, now)
        responses: dict[str, Any] = rounds.get("inputResponses") or {}
        if waiting is not None:
            return await self._approval_retry(sess, name, call, claims, waiting, responses, obs)
        upstream = gw.index[name].upstream if name in gw.index else gw.upstreams.get(call.server)
        server = upstream.slug if upstream is not None else call.server
        asked = self.asked.pop(str(claims["n"]), {})
        answers = dict(claims.get("gw") or {})
        for key, method in (claims.get("keys") or {}).items():
            asked_intent = asked.get(key)
            answer = responses.get(key)
            if answer is None or not _valid_answer(method, answer):
                if asked_intent is not None:
                    why = "no answer in the retry" if answer is None else "not a valid answer"
                    gw.surface.server_request_failed(
                        sess, asked_intent, server, method, why, time.perf_counter()
                    )
                continue
            if asked_intent is not None:
                gw.surface.answered(sess, asked_intent, server, method, answer, 0.0)
            answers[key] = answer
        # anything else the agent sent (an answer to a question it was never shown) is not passed on
        up: dict[str, Any] = {"inputResponses": answers}
        if claims.get("up") is not None:
            up["requestState"] = claims["up"]
        return await gw.forward(
            sess, intent, name, call, claims.get("to"), obs, rounds=up, round_no=int(claims.get("r", 1)) + 1
        )

    async def _flight_retry(
        self,
        sess: AgentSession,
        name: str,
        call: ToolCall,
        claims: dict[str, Any],
        rounds: dict[str, Any],
        obs: CallObservation,
        now: float,
    ) -> dict[str, Any]:
        gw = self.gateway
        flight = self.flights.get(str(claims.get("flight")))
        if flight is None:  # the call ended meanwhile (its timeout): nothing to continue
            raise UpstreamError({**INVALID_STATE, "data": {"reason": "invalid_request_state"}})
        decision = decide(gw.policy, sess.state, call, now)
        if decision.verdict == Verdict.REFUSE and decision.trigger in RECHECKED:
            for parked in flight.parked.values():
                parked[3].set()  # unanswered: the upstream is told no
            return gw._refuse(sess, flight.intent, call, decision, now)
        responses = rounds.get("inputResponses") or {}
        return await gw.forward(
            sess,
            flight.intent,
            name,
            call,
            None,
            obs,
            relay=lambda: flight.resume(dict(claims.get("keys") or {}), responses),
        )

    # the gateway's own approval wait, as rounds

    def approval_as_round(self, sess: AgentSession) -> bool:
        agent = AGENT.get()
        return agent is not None and agent.modern and self.gateway.portal is not None

    async def approval_round(
        self, sess: AgentSession, intent: dict[str, Any], name: str, call: ToolCall, decision: Decision
    ) -> dict[str, Any]:
        """First round of an approval-required call of a 2026-07-28 agent: the portal is asked, the agent told."""
        gw = self.gateway
        event, answer = anyio.Event(), []
        call_id = intent["call_id"]
        sess.approvals[call_id] = (event, answer)
        waiting = _Waiting(intent, event, answer, time.time() + gw.options.approval_timeout)
        self.waiting[call_id] = waiting
        if gw.shipper is not None:
            gw.shipper.nudge()  # the portal sees the INTENT (trigger approval_required) at once
        log.warning("call %s (%s.%s) waits for approval (asked as rounds)", call_id, call.server, call.tool)
        return self._approval_answer(sess, name, call, waiting, decision.timeout)

    def _approval_answer(
        self, sess: AgentSession, name: str, call: ToolCall, waiting: _Waiting, timeout: float | None
    ) -> dict[str, Any]:
        call_id = waiting.intent["call_id"]
        token = self.seal(sess, name, call.arguments, kind="approval", call=call_id, to=timeout)
        out: dict[str, Any] = {"resultType": "input_required", "requestState": token}
        agent = AGENT.get()
        try:
            asks = agent is not None and agent.peer.check_client_capability(
                types.ClientCapabilities(elicitation=types.ElicitationCapability())
            )
        except Exception:
            asks = False
        if asks:
            out["inputRequests"] = {
                APPROVAL_KEY: {
                    "method": "elicitation/create",
                    "params": {
                        "mode": "form",
                        "message": (
                            f"{name} needs the approval of a person in the governance portal (call {call_id}). "
                            "Accept to check again; decline or cancel to withdraw the call."
                        ),
                        "requestedSchema": {"type": "object", "properties": {}},
                    },
                }
            }
        return out

    async def _approval_retry(
        self,
        sess: AgentSession,
        name: str,
        call: ToolCall,
        claims: dict[str, Any],
        waiting: _Waiting,
        responses: dict[str, Any],
        obs: CallObservation,
    ) -> dict[str, Any]:
        gw = self.gateway
        call_id = waiting.intent["call_id"]
        base = f"{name} needs approval: waited for a person in the governance portal (call {call_id})."
        said = responses.get(APPROVAL_KEY)
        if isinstance(said, dict) and said.get("action") in ("decline", "cancel"):
            self._stop_waiting(sess, call_id)
            return gw._refuse(
                sess,
                waiting.intent,
                call,
                Decision(
                    Verdict.REFUSE, Trigger.APPROVAL_REQUIRED, f"{base}\nWithdrawn by the agent's user."
                ),
                time.time(),
            )
        with anyio.move_on_after(max(0.0, min(APPROVAL_ROUND_WAIT, waiting.deadline - time.time()))):
            await waiting.event.wait()
        if waiting.answer:
            self._stop_waiting(sess, call_id)
            if waiting.answer[0] == "approve":
                # forwarded now, for the first time: it counts now (its one decision was made in round 1)
                return await gw.forward(
                    sess, waiting.intent, name, call, claims.get("to"), obs, now=time.time()
                )
            return gw._refuse(
                sess,
                waiting.intent,
                call,
                Decision(
                    Verdict.REFUSE,
                    Trigger.APPROVAL_REQUIRED,
                    f"{base}\nApproval denied by {waiting.answer[1]}.",
                ),
                time.time(),
            )
        if time.time() >= waiting.deadline:
            self._stop_waiting(sess, call_id)
            why = f"no decision within {gw.options.approval_timeout:g}s"
            return gw._refuse(
                sess,
                waiting.intent,
                call,
                Decision(Verdict.REFUSE, Trigger.APPROVAL_REQUIRED, f"{base}\nApproval: {why}."),
                time.time(),
            )
        return self._approval_answer(sess, name, call, waiting, claims.get("to"))

    def _stop_waiting(self, sess: AgentSession, call_id: str) -> None:
        self.waiting.pop(call_id, None)
        sess.approvals.pop(call_id, None)


def _valid_answer(method: str, answer: Any) -> bool:
    for model in _ANSWER_TYPES.get(method, ()):
        with contextlib.suppress(ValueError):  # pydantic's ValidationError is a ValueError
            model.model_validate(answer)
            return True
    return False


def _refusal(reason: str, *, denied: bool = True) -> dict[str, Any]:
    """The agent's answer when the call ends because its server's question was refused (or not answered)."""
    head = (
        f"MCP request refused by governance policy ({Trigger.SERVER_REQUEST_DENIED})"
        if denied
        else "MCP call failed"
    )
    return {"content": [{"type": "text", "text": f"{head}: {reason}"}], "isError": True}


def _exposed(gateway: Gateway, server: str, tool: str) -> str:
    from mcpgov.surface import exposed_name

    return exposed_name(server, tool)
