"""MCP 2026-07-28 multi-round-trip requests (``InputRequiredResult``) through the gateway, governed.

A 2026-07-28 upstream that needs the agent's side (sampling, elicitation, roots) answers ``tools/call``,
``resources/read`` or ``prompts/get`` with an ``InputRequiredResult``; the agent retries with
``inputResponses`` and the echoed opaque ``requestState``. Each input request is decided by the same
rule as a legacy server-to-client request (:meth:`mcpgov.surface.Surface.screen_server_request`), each
round is audited, and the retry is the same logical request: the gateway wraps the upstream's
``requestState`` in its own sealed state bound to the governance session, the method, the tool, URI or
prompt name and a digest of the arguments, redeemable once (:class:`RedeemedStates`). The gateway's own
approval wait is offered to a 2026-07-28 agent the same way. See ``docs/gateway.md``.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import anyio
import mcp_types as types
from mcp.server.request_state import AESGCMRequestStateCodec, InvalidRequestState
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from mcpgov.bundle import Trigger
from mcpgov.decision import Decision, ToolCall, Verdict, decide
from mcpgov.session import CallRecord
from mcpgov.surface import POLICY_REFUSED, exposed_name
from mcpgov.upstream import CALLER, UpstreamClosed, UpstreamError

if TYPE_CHECKING:
    from mcpgov.control import AgentSession
    from mcpgov.gateway import Gateway
    from mcpgov.tracing import CallObservation
    from mcpgov.upstream import Upstream

log = logging.getLogger("mcpgov.mrtr")

STATE_TTL = 600.0  # seconds a round's state may be redeemed (the spec asks for a short expiry)
MAX_REDEEMED = 100_000  # redeemed states remembered at once (:class:`RedeemedStates`)
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


def state_ttl() -> float:
    """How long a round's state may be redeemed: ``MCPGOV_STATE_TTL`` seconds (1 to 600; shorter only,
    the record of redeemed states is sized for the default), else 600."""
    raw = os.environ.get("MCPGOV_STATE_TTL")
    if not raw:
        return STATE_TTL
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 1.0 <= value <= STATE_TTL:
        log.error(
            "MCPGOV_STATE_TTL=%r is not a number of seconds from 1 to %g: using %g", raw, STATE_TTL, STATE_TTL
        )
        return STATE_TTL
    return value


def arguments_digest(arguments: dict[str, Any] | None) -> str:
    canonical = json.dumps(arguments or {}, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


class StateRefused(Exception):
    """A retry's ``requestState`` is not one this gateway minted for this session and call (log-only reason)."""


class RedeemedStates:
    """The nonces of the sealed states redeemed in this process: each state opens once within its lifetime.

    An entry is needed only until its state's own expiry (after which the seal refuses it anyway), so
    entries leave in expiry order (a heap). Memory is bounded by ``limit``: when that many unexpired
    states are held, the one closest to expiry is dropped and :attr:`floor` rises to its expiry: every
    state expiring no later than that is then refused as expired, so a dropped entry can never be
    redeemed a second time (under a flood, older states expire early instead).
    """

    def __init__(self, limit: int = MAX_REDEEMED) -> None:
        self.limit = limit
        self.floor = 0.0
        self._heap: list[tuple[float, str]] = []
        self._nonces: set[str] = set()

    def __len__(self) -> int:
        return len(self._nonces)

    def live(self, exp: float, now: float) -> bool:
        """Whether a state expiring at ``exp`` may still be redeemed (its expiry, and the record's floor)."""
        return now < exp and exp > self.floor

    def redeem(self, nonce: str, exp: float, now: float) -> bool:
        """Record ``nonce`` as redeemed; False when it already was (a replay)."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            self._nonces.discard(heapq.heappop(heap)[1])
        if nonce in self._nonces:
            return False
        while len(self._nonces) >= self.limit:
            dropped, old = heapq.heappop(heap)
            self._nonces.discard(old)
            self.floor = max(self.floor, dropped)
        heapq.heappush(heap, (exp, nonce))
        self._nonces.add(nonce)
        return True


@dataclass(slots=True)
class _Asked:
    """What the agent was shown in one round (its INTENTs), until the retry or the state's expiry."""

    exp: float
    sess: AgentSession
    server: str
    intents: dict[str, dict[str, Any]]  # key -> INTENT of the input request


@dataclass(slots=True)
class _PendingRead:
    """A ``resources/read`` or ``prompts/get`` between its rounds: its one INTENT, open until its RESULT."""

    exp: float
    sess: AgentSession
    call: ToolCall
    intent: dict[str, Any]


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

    def __init__(self, gateway: Gateway, *, ttl: float | None = None) -> None:
        self.gateway = gateway
        # AES-256-GCM (the SDK's codec): the agent can neither read nor alter the state. The key is the
        # process's own unless MCPGOV_STATE_KEY is shared by the instances behind one HTTP endpoint.
        key = os.environ.get("MCPGOV_STATE_KEY")
        self.codec = AESGCMRequestStateCodec([key.encode() if key else os.urandom(32)])
        self.ttl = ttl if ttl is not None else state_ttl()
        self.redeemed = RedeemedStates()  # each state is redeemed once
        self.asked: dict[str, _Asked] = {}  # nonce -> what the agent was asked (expiry order)
        self.reads: dict[str, _PendingRead] = {}  # call id -> a read between its rounds (expiry order)
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

    def seal(
        self,
        sess: AgentSession,
        name: str,
        arguments: dict[str, Any] | None,
        *,
        method: str = "tools/call",
        **claims: Any,
    ) -> str:
        """A state bound to the session, the request's method, its target (tool, URI or prompt name) and
        a digest of its arguments, with a nonce (redeemed once) and an expiry."""
        nonce = uuid.uuid4().hex
        body = {
            "v": 1,
            "exp": time.time() + self.ttl,
            "sid": sess.id,
            "m": method,
            "name": name,
            "args": arguments_digest(arguments),
            "n": nonce,
            **claims,
        }
        return self.codec.seal(json.dumps(body, separators=(",", ":")).encode())

    def open(
        self,
        sess: AgentSession,
        name: str,
        arguments: dict[str, Any] | None,
        token: Any,
        *,
        method: str = "tools/call",
    ) -> dict[str, Any]:
        """The claims of a retry's state; raises :class:`StateRefused` unless minted here for this very
        request (session, method, target, arguments) and not redeemed before."""
        if not isinstance(token, str):
            raise StateRefused("no requestState")
        try:
            claims = json.loads(self.codec.unseal(token))
        except (InvalidRequestState, ValueError) as exc:
            raise StateRefused(f"not sealed by this gateway ({exc})") from exc
        now = time.time()
        self.sweep(now)
        if not isinstance(claims, dict) or claims.get("v") != 1:
            raise StateRefused("not a state of this gateway's format")
        exp = float(claims.get("exp", 0))
        if not self.redeemed.live(exp, now):
            raise StateRefused("expired")
        if claims.get("sid") != sess.id:
            raise StateRefused("minted for another governance session")
        if claims.get("m") != method:
            raise StateRefused(f"minted for {claims.get('m')}, not {method}")
        if claims.get("name") != name or claims.get("args") != arguments_digest(arguments):
            raise StateRefused("minted for another tool, resource or prompt, or other arguments")
        if not self.redeemed.redeem(str(claims.get("n")), exp, now):
            raise StateRefused("already redeemed")
        return claims

    def sweep(self, now: float) -> None:
        """Rounds whose state expired unredeemed: their open INTENTs get a RESULT ``fail`` (the agent did
        not retry), and they are forgotten. Both records are in expiry order (one TTL): stops at the first live."""
        why = f"the agent did not retry within {self.ttl:g}s (its requestState expired)"
        while self.asked:
            nonce, asked = next(iter(self.asked.items()))
            if asked.exp > now:
                break
            del self.asked[nonce]
            for intent in asked.intents.values():
                with contextlib.suppress(Exception):  # a session ended meanwhile (its spool closed)
                    self.gateway.surface.server_request_failed(
                        asked.sess, intent, asked.server, intent["tool"], why, time.perf_counter()
                    )
        while self.reads:
            call_id, read = next(iter(self.reads.items()))
            if read.exp > now:
                break
            del self.reads[call_id]
            with contextlib.suppress(Exception):
                self.gateway._forward_failed(read.sess, read.intent, read.call, RuntimeError(why), 0.0)

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
        peer = self._peer(sess)
        shown, answers, refused = self._screen_round(sess, upstream.slug, requests, peer)
        if refused:
            return _refusal(refused)
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
        return self._ask_in_round(sess, upstream.slug, shown, token)

    # one round's input requests, the same for every request that may ask (tools/call, resources/read,
    # prompts/get)

    @staticmethod
    def _peer(sess: AgentSession) -> Any:
        agent = AGENT.get()
        caller = CALLER.get()
        return agent.peer if agent is not None else (caller.peer if caller is not None else sess.peer)

    def _screen_round(
        self, sess: AgentSession, server: str, requests: dict[str, Any], peer: Any
    ) -> tuple[dict[str, tuple[str, Any]], dict[str, Any], str]:
        """Each input request decided (:meth:`Surface.screen_server_request`, audited): those shown to
        the agent, the gateway's own answers (a refused question is declined), and why the request
        must end ("" if it goes on): a refused sampling or roots request."""
        surface = self.gateway.surface
        shown: dict[str, tuple[str, Any]] = {}
        answers: dict[str, Any] = {}
        refused: list[str] = []
        for key, request in requests.items():
            method = str((request or {}).get("method"))
            wire = dict((request or {}).get("params") or {})
            screened = surface.screen_server_request(sess, server, method, wire, peer)
            if screened.allowed:
                shown[key] = (method, screened)
            elif method == "elicitation/create":
                answers[key] = {
                    "action": "decline"
                }  # the spec's refusal of a question: never shown to the user
            else:
                refused.append(screened.reason)
        if refused:
            # sampling or roots refused: the spec's client that declines does not retry, so the request ends
            for method, screened in shown.values():
                surface.server_request_failed(
                    sess,
                    screened.intent,
                    server,
                    method,
                    "not asked: the request ended (a request was refused)",
                    time.perf_counter(),
                )
        return shown, answers, "; ".join(refused)

    def _ask_in_round(
        self, sess: AgentSession, server: str, shown: dict[str, tuple[str, Any]], token: str
    ) -> dict[str, Any]:
        """The agent's ``InputRequiredResult``; what it was shown is remembered until the retry or expiry."""
        claims = json.loads(self.codec.unseal(token))
        intents = {k: screened.intent for k, (_, screened) in shown.items()}
        self.asked[claims["n"]] = _Asked(float(claims["exp"]), sess, server, intents)
        return {
            "resultType": "input_required",
            "inputRequests": {k: {"method": m, "params": sc.wire} for k, (m, sc) in shown.items()},
            "requestState": token,
        }

    async def _legacy_answers(
        self,
        sess: AgentSession,
        server: str,
        shown: dict[str, tuple[str, Any]],
        answers: dict[str, Any],
        peer: Any,
    ) -> str:
        """A 2025-11-25 agent asked each shown request in the legacy form; answers added to ``answers``.
        Returns why the request must end ("" when every request was answered)."""
        caller = CALLER.get()
        for key, (method, screened) in shown.items():
            answer = await self.gateway.surface.ask_agent(sess, caller, peer, server, method, screened)
            if isinstance(answer, types.ErrorData):
                return f"the agent did not answer {method}: {answer.message}"
            answers[key] = answer.model_dump(by_alias=True, mode="json", exclude_none=True)
        return ""

    def _collect_answers(
        self, sess: AgentSession, server: str, claims: dict[str, Any], responses: dict[str, Any]
    ) -> dict[str, Any]:
        """What goes back upstream on a retry: the gateway's own answers and the agent's answers to what
        it was shown (each audited); anything else the agent sent is not passed on."""
        gw = self.gateway
        asked = self.asked.pop(str(claims["n"]), None)
        intents = asked.intents if asked is not None else {}
        answers = dict(claims.get("gw") or {})
        for key, method in (claims.get("keys") or {}).items():
            asked_intent = intents.get(key)
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
        return answers

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
        failed = await self._legacy_answers(sess, upstream.slug, shown, answers, peer)
        if failed:
            return _refusal(failed, denied=False)
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
        rounds = _upstream_round(answers, up_state)
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
        answers = self._collect_answers(sess, server, claims, responses)
        up = _upstream_round(answers, claims.get("up"))
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

    # rounds of resources/read and prompts/get (the spec's other requests that may answer
    # InputRequiredResult): one logical read per INTENT, counted once, its RESULT at its end

    async def read_asked(
        self,
        sess: AgentSession,
        intent: dict[str, Any],
        call: ToolCall,
        target: str,
        result: dict[str, Any],
        round_no: int,
        timeout: float,
        modern: bool,
        peer: Any,
    ) -> dict[str, Any]:
        """A read's upstream answered ``InputRequiredResult``: each input request decided and audited.

        ``modern``: the agent's request is 2026-07-28 (it may be answered with a round); ``peer``: its
        connection (what it declared, where a 2025-11-25 agent is asked).

        Returns the agent's ``InputRequiredResult`` (a 2026-07-28 agent), or the ``inputResponses`` /
        ``requestState`` of the next upstream round when the gateway answers itself (a 2025-11-25 agent
        asked in the legacy form, or nothing left but its own declines). Raises :class:`MCPError` when
        the read ends here (a refused sampling or roots request, too many rounds, an unanswered request),
        its RESULT written.
        """
        gw = self.gateway
        requests: dict[str, Any] = result.get("inputRequests") or {}
        up_state = result.get("requestState")
        methods = ", ".join(f"{k}: {(r or {}).get('method')}" for k, r in requests.items()) or "state only"
        log.info("%s %s asks for input (round %d; %s)", call.method, target, round_no, methods)
        if round_no >= MAX_ROUNDS:
            self._end_read(sess, intent, call, f"the server asked for input more than {MAX_ROUNDS} times")
        shown, answers, refused = self._screen_round(sess, call.server, requests, peer)
        if refused:
            self._end_read(sess, intent, call, refused)
        if not modern:
            failed = await self._legacy_answers(sess, call.server, shown, answers, peer)
            if failed:
                gw._forward_failed(sess, intent, call, RuntimeError(failed), 0.0)
                raise MCPError(types.INTERNAL_ERROR, f"MCP call failed: {failed}")
            if not answers and up_state is not None:
                await anyio.sleep(
                    min(0.05 * 2**round_no, 1.0)
                )  # state only: the server wants to be asked again
            return _upstream_round(answers, up_state)
        if not shown and answers:  # nothing for the agent: the upstream hears the refusal at once
            return _upstream_round(answers, up_state)
        token = self.seal(
            sess,
            target,
            call.arguments,
            method=call.method or "",
            kind="read",
            call=intent["call_id"],
            r=round_no,
            up=up_state,
            keys={k: m for k, (m, _) in shown.items()},
            gw=answers,
            to=timeout,
        )
        self.reads.pop(intent["call_id"], None)  # re-inserted: the records stay in expiry order
        self.reads[intent["call_id"]] = _PendingRead(time.time() + self.ttl, sess, call, intent)
        return self._ask_in_round(sess, call.server, shown, token)

    def resume_read(
        self, sess: AgentSession, call: ToolCall, target: str, rounds: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any], int, float]:
        """A 2026-07-28 retry of a read's round: (its INTENT, the next upstream round, its number, the
        timeout), under its first decision. Raises :class:`MCPError` when refused: a state not minted
        here for this session, method, target and arguments, or already redeemed (``-32602``, audited
        ``blocked`` "retry refused"); or a halt, kill switch or revocation since (its RESULT ``blocked``)."""
        gw = self.gateway
        now = time.time()
        try:
            claims = self.open(
                sess, target, call.arguments, rounds.get("requestState"), method=call.method or ""
            )
            read = self.reads.pop(str(claims.get("call")), None) if claims.get("kind") == "read" else None
            if read is None or read.sess is not sess:
                raise StateRefused("its read is no longer waiting (expired or ended)")
        except StateRefused as exc:
            intent = sess.spool.intent(
                call_id=str(uuid.uuid4()),
                server=call.server,
                tool=call.tool,
                arguments=call.arguments,
                bundle_version=gw.policy.version,
                now=now,
            )
            gw._record_blocked(
                sess, intent, call.server, call.tool, f"retry refused: requestState {exc}", None, now
            )
            log.warning("REFUSED retry of %s %s: requestState %s", call.method, target, exc)
            raise MCPError(
                INVALID_STATE["code"], INVALID_STATE["message"], {"reason": "invalid_request_state"}
            ) from exc
        decision = decide(gw.policy, sess.state, call, now)
        if decision.verdict == Verdict.REFUSE and decision.trigger in RECHECKED:
            gw._refuse(sess, read.intent, call, decision, now)
            raise MCPError(POLICY_REFUSED, decision.message, {"trigger": str(decision.trigger)})
        answers = self._collect_answers(sess, call.server, claims, rounds.get("inputResponses") or {})
        timeout = claims.get("to") or gw.options.default_timeout
        return read.intent, _upstream_round(answers, claims.get("up")), int(claims.get("r", 1)) + 1, timeout

    def _end_read(self, sess: AgentSession, intent: dict[str, Any], call: ToolCall, reason: str) -> NoReturn:
        """The read ends because its server's request was refused: RESULT ``blocked``, the agent's error."""
        message = _refusal(reason)["content"][0]["text"]
        self.gateway._record_blocked(
            sess, intent, call.server, call.tool, message, Trigger.SERVER_REQUEST_DENIED, time.time()
        )
        raise MCPError(POLICY_REFUSED, message, {"trigger": str(Trigger.SERVER_REQUEST_DENIED)})


def _valid_answer(method: str, answer: Any) -> bool:
    for model in _ANSWER_TYPES.get(method, ()):
        with contextlib.suppress(ValueError):  # pydantic's ValidationError is a ValueError
            model.model_validate(answer)
            return True
    return False


def _upstream_round(answers: dict[str, Any], up_state: str | None) -> dict[str, Any]:
    """The ``inputResponses`` (and the upstream's own ``requestState``) of the next round to the upstream."""
    out: dict[str, Any] = {"inputResponses": answers}
    if up_state is not None:
        out["requestState"] = up_state
    return out


def _refusal(reason: str, *, denied: bool = True) -> dict[str, Any]:
    """The agent's answer when the call ends because its server's question was refused (or not answered)."""
    head = (
        f"MCP request refused by governance policy ({Trigger.SERVER_REQUEST_DENIED})"
        if denied
        else "MCP call failed"
    )
    return {"content": [{"type": "text", "text": f"{head}: {reason}"}], "isError": True}


def _exposed(gateway: Gateway, server: str, tool: str) -> str:
    return exposed_name(server, tool)
