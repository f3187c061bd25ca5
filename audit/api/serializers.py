"""Serializers of the audit API: the session resource, events (payloads for auditors only), inputs."""

from __future__ import annotations

import json
from datetime import UTC

from rest_framework import serializers

from audit.choices import CALL_DECISIONS, SessionState, Trigger
from audit.models import Acknowledgement, AgentSession, AuditEvent, FailedCallExplanation, SessionDecision
from governance.choices import AgentAuth


def rfc3339(value) -> str | None:
    """RFC 3339 UTC, fractional seconds only when non-zero (2026-11-24T09:00:00Z)."""
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class AgentSessionSerializer(serializers.ModelSerializer):
    """The session resource of docs/enforcer-api.md (people also get review fields)."""

    team = serializers.CharField(source="team.slug")
    environment = serializers.CharField(source="environment.name")
    started_at = serializers.SerializerMethodField()
    ended_at = serializers.SerializerMethodField()
    calls = serializers.SerializerMethodField()
    agent_id = serializers.CharField(source="registered_agent_id", default=None)

    class Meta:
        model = AgentSession
        fields = [
            "id", "team", "environment", "role", "read_only", "declared_large_data", "agent", "agent_id",
            "agent_auth", "run_id", "state", "trigger", "state_reason", "control_version", "started_at", "ended_at",
            "calls",
        ]  # fmt: skip

    def get_started_at(self, obj) -> str:
        return rfc3339(obj.started_at)

    def get_ended_at(self, obj) -> str | None:
        return rfc3339(obj.ended_at)

    def get_calls(self, obj) -> dict[str, int]:
        return {"total": obj.calls_total, "blocked": obj.calls_blocked, "failed": obj.calls_failed}


class ReviewSessionSerializer(AgentSessionSerializer):
    """The session as reviewers see it through the API."""

    client = serializers.CharField(source="client.name", default=None)
    acknowledged = serializers.SerializerMethodField()
    last_calls = serializers.JSONField()
    pending_approvals = serializers.JSONField()
    last_seq = serializers.IntegerField()
    last_hash = serializers.CharField()

    class Meta(AgentSessionSerializer.Meta):
        fields = [
            *AgentSessionSerializer.Meta.fields, "client", "gate_report", "bundle_version", "acknowledged", "last_calls",
            "pending_approvals", "event_count", "last_seq", "last_hash",
        ]  # fmt: skip

    def get_acknowledged(self, obj) -> bool:
        return hasattr(obj, "acknowledgement")


class AuditEventSerializer(serializers.ModelSerializer):
    """An event. `arguments` and `result` appear only when the context allows payloads."""

    session = serializers.UUIDField(source="session_id")
    ts = serializers.SerializerMethodField()

    class Meta:
        model = AuditEvent
        fields = [
            "session", "seq", "call_id", "phase", "ts", "server", "tool", "arguments", "args_summary", "status",
            "result_summary", "bytes", "duration_ms", "trigger", "bundle_version", "result", "trace_id", "shadow",
            "prev_hash", "hash",
        ]  # fmt: skip

    def get_ts(self, obj) -> str:
        return rfc3339(obj.ts)

    def to_representation(self, instance):
        data = super().to_representation(instance)
        if not self.context.get("include_payloads"):
            data.pop("arguments", None)
            data.pop("result", None)
        return data


def acknowledgement_body(ack: Acknowledgement | None) -> dict:
    """`GET /sessions/<id>/acknowledgement/` for `mcpgov audit-check`."""
    return {
        "acknowledged": ack is not None,
        "acknowledged_by": ack.reviewer.get_username() if ack else None,
        "acknowledged_at": rfc3339(ack.at) if ack else None,
        "note": ack.note if ack else None,
        "last_seq": ack.last_seq if ack else None,
    }


class ExplanationSerializer(serializers.ModelSerializer):
    author = serializers.CharField(source="author.get_username")

    class Meta:
        model = FailedCallExplanation
        fields = ["call_id", "explanation", "author", "created_at", "updated_at"]


class DecisionSerializer(serializers.ModelSerializer):
    decided_by = serializers.CharField(source="decided_by.get_username")
    decided_at = serializers.SerializerMethodField()

    class Meta:
        model = SessionDecision
        fields = ["kind", "call_id", "reason", "decided_by", "decided_at", "control_version", "from_state"]

    def get_decided_at(self, obj) -> str:
        return rfc3339(obj.decided_at)


# --- inputs -----------------------------------------------------------------------------------------


class SessionAgentSerializer(serializers.Serializer):
    """Who the gateway established: a registered agent (oauth / api_key) or the local OS user (stdio)."""

    id = serializers.CharField(max_length=64, required=False, allow_null=True, allow_blank=True, default=None)
    slug = serializers.CharField(max_length=200)
    auth = serializers.ChoiceField(choices=AgentAuth.choices)

    def validate(self, attrs):
        if attrs["auth"] != AgentAuth.LOCAL and not attrs.get("id"):
            raise serializers.ValidationError({"id": "A registered agent needs its id."})
        return attrs


class AgentField(serializers.Field):
    """`agent`: the object above, or (older gateways) a free-text label."""

    def to_internal_value(self, data):
        if isinstance(data, str):
            if len(data) > 500:
                raise serializers.ValidationError("At most 500 characters.")
            return data
        if isinstance(data, dict):
            inner = SessionAgentSerializer(data=data)
            inner.is_valid(raise_exception=True)
            return dict(inner.validated_data)
        raise serializers.ValidationError('Expected {"id", "slug", "auth"} or a string.')

    def to_representation(self, value):
        return value


GATE_REPORT_MAX_BYTES = 16_384


class SessionOpenSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    role = serializers.CharField(max_length=100)
    read_only = serializers.BooleanField(default=True)
    declared_large_data = serializers.BooleanField(default=False)
    agent = AgentField(required=False, default="")
    run_id = serializers.CharField(max_length=200, allow_blank=True, default="")
    started_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    bundle_version = serializers.IntegerField(
        min_value=0, max_value=2**31 - 1, required=False, allow_null=True, default=None
    )
    # "refused": the gateway's environment gate turned the start down; gate_report says why.
    state = serializers.ChoiceField(
        choices=[(SessionState.ACTIVE, "active"), (SessionState.REFUSED, "refused")],
        default=SessionState.ACTIVE,
    )
    trigger = serializers.ChoiceField(choices=Trigger.choices, required=False, allow_null=True, default=None)
    gate_report = serializers.JSONField(required=False, allow_null=True, default=None)

    def validate_gate_report(self, value):
        if value is not None:
            if not isinstance(value, dict):
                raise serializers.ValidationError("Expected an object.")
            if len(json.dumps(value)) > GATE_REPORT_MAX_BYTES:
                raise serializers.ValidationError(f"At most {GATE_REPORT_MAX_BYTES} bytes.")
        return value


class SessionStateSerializer(serializers.Serializer):
    state = serializers.ChoiceField(choices=SessionState.choices)
    trigger = serializers.ChoiceField(choices=Trigger.choices, required=False, allow_null=True, default=None)
    reason = serializers.CharField(required=False, allow_blank=True, default="")
    last_calls = serializers.ListField(
        child=serializers.DictField(), max_length=3, required=False, allow_null=True, default=None
    )

    def validate_last_calls(self, value):
        if value is not None:
            encoded = json.dumps(value)
            if "\\u0000" in encoded:  # PostgreSQL cannot store NUL in jsonb
                raise serializers.ValidationError("Must not contain NUL characters.")
            if len(encoded) > GATE_REPORT_MAX_BYTES:
                raise serializers.ValidationError(f"At most {GATE_REPORT_MAX_BYTES} bytes.")
        return value


class AcknowledgementNoteSerializer(serializers.Serializer):
    note = serializers.CharField(required=False, allow_blank=True, default="")


class ExplanationInputSerializer(serializers.Serializer):
    call_id = serializers.CharField(max_length=64)
    explanation = serializers.CharField()


class DecisionReasonSerializer(serializers.Serializer):
    reason = serializers.CharField()


class ReleaseInputSerializer(DecisionReasonSerializer):
    confirm_flag_off = serializers.BooleanField(
        default=False,
        help_text="Release even though the kill-switch flag that halted the session is still off "
        "(otherwise 409 flag_still_off).",
    )


class ApprovalInputSerializer(serializers.Serializer):
    call_id = serializers.CharField(max_length=64)
    decision = serializers.ChoiceField(choices=[(k.value, k.label) for k in CALL_DECISIONS])
    reason = serializers.CharField()


class EventBatchSerializer(serializers.Serializer):
    """Documentation of the events body; the service validates each event (docs/audit.md)."""

    events = serializers.ListField(child=serializers.DictField(), max_length=1000)


class IngestResultSerializer(serializers.Serializer):
    accepted = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    last_seq = serializers.IntegerField()


class AcknowledgementBodySerializer(serializers.Serializer):
    acknowledged = serializers.BooleanField()
    acknowledged_by = serializers.CharField(allow_null=True)
    acknowledged_at = serializers.CharField(allow_null=True)
    note = serializers.CharField(allow_null=True)
    last_seq = serializers.IntegerField(allow_null=True)


class ReviewSessionDetailSerializer(ReviewSessionSerializer):
    """What a person gets for one session: the review fields and the decisions taken on it."""

    decisions = DecisionSerializer(many=True, read_only=True)

    class Meta(ReviewSessionSerializer.Meta):
        fields = [*ReviewSessionSerializer.Meta.fields, "decisions"]


class SessionDecisionResultSerializer(serializers.Serializer):
    """The answer to release and end: the session after the decision, and the decision."""

    session = ReviewSessionSerializer()
    decision = DecisionSerializer()


class ExplanationListSerializer(serializers.Serializer):
    explanations = ExplanationSerializer(many=True)
    unexplained = serializers.ListField(
        child=serializers.CharField(), help_text="call_ids of failed calls not explained yet"
    )


class PendingApprovalsSerializer(serializers.Serializer):
    pending = serializers.ListField(child=serializers.DictField())
