"""OpenTelemetry traces of the gateway, and the per-call observer that feeds both traces and metrics.

Tracing is on only when the standard ``OTEL_*`` variables ask for an exporter (``OTEL_TRACES_EXPORTER``,
or an ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``); the OpenTelemetry SDK reads the rest itself (endpoint,
headers, sampler, batch settings, resource). Each ``tools/call`` is a SERVER span ``tools/call {tool}``
following the MCP semantic conventions, continuing the agent's trace from ``_meta.traceparent`` (W3C);
the forwarded call is a CLIENT span whose context goes to the upstream in ``_meta.traceparent``. The trace
id is written into the call's INTENT and RESULT audit events (``trace_id``), and the span carries the
audit ``mcpgov.session.id`` and ``mcpgov.call.id``, so each finds the other. With tracing off, an
incoming traceparent is still recorded and passed on unchanged. See ``docs/operations.md`` ("Tracing").
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from mcpgov.control import AgentSession
    from mcpgov.decision import Decision
    from mcpgov.gateway import Gateway
    from mcpgov.metrics import GatewayMetrics
    from mcpgov.upstream import Upstream

log = logging.getLogger("mcpgov.tracing")

TRACER_NAME = "mcpgov.gateway"
_propagator = TraceContextTextMapPropagator()
_current: contextvars.ContextVar[CallObservation | None] = contextvars.ContextVar("mcpgov_call", default=None)


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def exporter_from_env() -> Any | None:
    """The span exporter the standard OTEL_* variables ask for, or None (tracing off)."""
    if _env("OTEL_SDK_DISABLED").lower() == "true":
        return None
    names = [n.strip() for n in _env("OTEL_TRACES_EXPORTER").lower().split(",") if n.strip()]
    if not names:
        if not (_env("OTEL_EXPORTER_OTLP_ENDPOINT") or _env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
            return None
        names = ["otlp"]
    if names == ["none"]:
        return None
    name = names[0]
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter(out=sys.stderr)  # stdout is the JSON-RPC wire on stdio
    if name != "otlp":
        log.error("OTEL_TRACES_EXPORTER=%s is not supported (otlp, console, none); tracing is off", name)
        return None
    protocol = (
        _env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or _env("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    )
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
        except ImportError:
            log.error("OTLP over gRPC needs opentelemetry-exporter-otlp-proto-grpc installed; tracing is off")
            return None
        return GrpcExporter()
    if protocol != "http/protobuf":
        log.error("OTLP protocol %s is not supported (http/protobuf, grpc); tracing is off", protocol)
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # endpoint, headers, timeout, compression: from OTEL_EXPORTER_OTLP_*


def configure_from_env() -> TracerProvider | None:
    """Install a TracerProvider with a batch exporter when OTEL_* asks for one; None when tracing is off."""
    exporter = exporter_from_env()
    if exporter is None:
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from mcpgov import __version__

    attributes = {"service.version": __version__}
    if not _env("OTEL_SERVICE_NAME") and "service.name=" not in _env("OTEL_RESOURCE_ATTRIBUTES"):
        attributes["service.name"] = "mcpgov-gateway"
    # sampler (OTEL_TRACES_SAMPLER), batch settings (OTEL_BSP_*), resource (OTEL_RESOURCE_ATTRIBUTES): the SDK's
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # also records the SDK's own client spans to HTTP upstreams
    log.warning("tracing on: spans exported with %s", type(exporter).__name__)
    return provider


def trace_id_hex(span_context: trace.SpanContext) -> str | None:
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


def incoming_context(meta: Mapping[str, Any] | None) -> Any | None:
    """The OTel context of ``_meta.traceparent`` (W3C), or None when absent or malformed."""
    if not meta or "traceparent" not in meta:
        return None
    carrier = {k: v for k, v in meta.items() if k in ("traceparent", "tracestate") and isinstance(v, str)}
    ctx = _propagator.extract(carrier)
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


def call_context(ctx: Any) -> dict[str, Any]:
    """From an SDK request context: the ``_meta``, JSON-RPC id and (legacy HTTP) MCP session id of a call."""
    transport_session = None
    request = getattr(ctx, "request", None)
    headers = getattr(request, "headers", None)
    if headers is not None:
        transport_session = headers.get("mcp-session-id")
    return {"meta": ctx.meta, "request_id": ctx.request_id, "transport_session": transport_session}


class CallObserver:
    """One per gateway: opens a :class:`CallObservation` per ``tools/call``. ``metrics`` is set by ``--metrics``."""

    def __init__(self, gateway: Gateway, tracer_provider: Any | None = None) -> None:
        self.gateway = gateway
        self.metrics: GatewayMetrics | None = None
        provider = tracer_provider or trace.get_tracer_provider()
        self.tracer = provider.get_tracer(TRACER_NAME)
        # no provider installed (tracing off): skip the span work on the hot path
        self.tracing = not isinstance(provider, trace.NoOpTracerProvider | trace.ProxyTracerProvider)

    @contextlib.contextmanager
    def call(
        self,
        sess: AgentSession,
        name: str,
        *,
        meta: Mapping[str, Any] | None = None,
        request_id: Any = None,
        transport_session: str | None = None,
    ) -> Iterator[CallObservation]:
        obs = CallObservation(self, sess, name, meta)
        token = _current.set(obs)
        try:
            if not self.tracing:
                yield obs
                return
            attributes: dict[str, Any] = {
                "mcp.method.name": "tools/call",
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": name,
                "mcpgov.session.id": sess.state.session_id,
            }
            if request_id is not None:
                attributes["jsonrpc.request.id"] = str(request_id)
            if transport_session:
                attributes["mcp.session.id"] = transport_session
            with self.tracer.start_as_current_span(
                f"tools/call {name}",
                context=obs.parent,
                kind=SpanKind.SERVER,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                obs.span = span
                obs.trace_id = trace_id_hex(span.get_span_context()) or obs.trace_id
                try:
                    yield obs
                except Exception as exc:
                    code = getattr(exc, "code", None)
                    span.set_attribute(
                        "error.type", str(code) if code is not None else type(exc).__qualname__
                    )
                    span.set_status(StatusCode.ERROR, str(exc))
                    raise
        finally:
            _current.reset(token)


class CallObservation:
    """What the gateway learns about one call, for its span and its metrics."""

    __slots__ = ("meta", "name", "observer", "parent", "sess", "span", "t0", "trace_id", "verdict")

    def __init__(
        self, observer: CallObserver, sess: AgentSession, name: str, meta: Mapping[str, Any] | None
    ) -> None:
        self.observer = observer
        self.sess = sess
        self.name = name
        self.meta = meta
        self.t0 = time.perf_counter()
        self.parent = incoming_context(meta)
        self.trace_id = (
            trace_id_hex(trace.get_current_span(self.parent).get_span_context()) if self.parent else None
        )
        self.span: Any = None
        self.verdict = "allow"

    def decided(self, decision: Decision) -> None:
        """The policy decision is made (allow, refuse, or approval: wait for a person)."""
        self.verdict = str(decision.verdict)
        m = self.observer.metrics
        if m is not None:
            m.decision_seconds.labels(self.verdict).observe(time.perf_counter() - self.t0)

    async def forward(
        self,
        upstream: Upstream,
        tool: str,
        arguments: dict[str, Any] | None,
        timeout: float,
        task: dict[str, Any] | None = None,
        rounds: dict[str, Any] | None = None,
        ready: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """``upstream.call_raw`` inside a CLIENT span, its context passed on in ``_meta.traceparent``.

        ``ready``: run by the upstream channel right before the request is sent (the INTENT's sync); the
        upstream time of the metrics starts after it.
        """
        t0 = time.perf_counter()

        def timed_ready() -> None:
            nonlocal t0
            assert ready is not None
            ready()
            t0 = time.perf_counter()

        sent = timed_ready if ready is not None else None
        try:
            if not self.observer.tracing:
                meta = None
                if self.parent is not None and self.meta is not None:  # pass the agent's context on unchanged
                    meta = {k: self.meta[k] for k in ("traceparent", "tracestate") if k in self.meta}
                return await upstream.call_raw(
                    tool, arguments, timeout, meta=meta, task=task, rounds=rounds, ready=sent
                )
            with self.observer.tracer.start_as_current_span(
                f"tools/call {tool}",
                kind=SpanKind.CLIENT,
                attributes={
                    "mcp.method.name": "tools/call",
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": tool,
                    "mcpgov.server": upstream.slug,
                },
            ) as span:
                meta = {}
                _propagator.inject(meta)
                result = await upstream.call_raw(
                    tool, arguments, timeout, meta=meta, task=task, rounds=rounds, ready=sent
                )
                if result.get("isError"):
                    span.set_attribute("error.type", "tool_error")
                    span.set_status(StatusCode.ERROR)
                return result
        finally:
            m = self.observer.metrics
            if m is not None:
                m.upstream_seconds.labels(m.known_server(upstream.slug)).observe(time.perf_counter() - t0)

    def result(self, event: dict[str, Any]) -> None:
        outcome, trigger = event["status"], event.get("trigger") or ""
        m = self.observer.metrics
        if m is not None:
            server = m.known_server(event["server"])
            tool = m.known_tool(self.name, server, event["tool"]) if server != "(unknown)" else "(unknown)"
            m.calls.labels(server, tool, self.verdict, outcome, trigger).inc()
        span = self.span
        if span is not None:
            span.set_attributes(
                {
                    "mcpgov.verdict": self.verdict,
                    "mcpgov.outcome": outcome,
                    "mcpgov.call.id": event["call_id"],
                }
            )
            if trigger:
                span.set_attribute("mcpgov.trigger", trigger)
            if outcome != "success":  # a refusal or a tool error is an isError result: an error (semconv)
                span.set_attribute("error.type", "tool_error")
                span.set_status(StatusCode.ERROR)


def on_result(event: dict[str, Any]) -> None:
    """AuditSpool hook: a RESULT written inside a call's context belongs to that call."""
    obs = _current.get()
    if obs is not None:
        try:
            obs.result(event)
        except Exception:  # observing must never break the audit trail
            log.exception("recording the call's metrics or span failed")


def on_state_change(metrics: GatewayMetrics | None, state: str, trigger: str | None) -> None:
    if metrics is not None:
        metrics.state_changes.labels(state, trigger or "").inc()
