"""Production-access requests: file, review (never your own), revoke, cancel, expire.

An approved request is a grant carried in the environment's bundle with its end time,
so the gateway stops honouring it at `ends_at` even when no task runs; approval,
revocation and expiry rebuild the bundle so the grant list itself stays current.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from governance.choices import AccessRequestStatus, RuleKind
from governance.models import AccessRequest, AccessReview, AgentRole, Environment, McpServer
from governance.services import notifications
from governance.services.common import policy_changed
from governance.services.flags import bundles_publish_now
from portal.choices import ChangeEventType
from portal.models import MAX_ACCESS_WINDOW_HOURS, Team
from portal.permissions import REQUEST_ACCESS, REVIEW_ACCESS, require_team_perm
from portal.services import change_record

Status = AccessRequestStatus
Decision = AccessReview.Decision

# A request may start a little in the past: the form's default start is "now" and the
# reviewer takes a while; anything older is a mistake.
START_GRACE = timedelta(minutes=5)
# States in which a request still matters to the bundle or the review queue.
OPEN_STATES = (Status.PENDING, Status.APPROVED)


def _reason(reason: str | None, what: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": f"A reason is required to {what}."})
    return reason


def _lock(access_request: AccessRequest) -> None:
    """Lock the request's row and re-read it, so concurrent reviews of one request serialize."""
    AccessRequest.objects.select_for_update().filter(pk=access_request.pk).values_list("pk").get()
    access_request.refresh_from_db()


def _grant_changed(access_request: AccessRequest, what: str) -> None:
    """A grant went live or was taken back: its environment's bundle is published at once (no debounce)."""
    bundles_publish_now(
        team=access_request.team,
        environments=[access_request.environment],
        reason=f"production access #{access_request.pk} {what}",
    )


def _servers_label(servers: Iterable[McpServer]) -> str:
    return ", ".join(sorted(s.slug for s in servers))


@transaction.atomic
def access_request_create(
    *,
    team: Team,
    requester,
    environment: Environment,
    role: AgentRole,
    servers: Iterable[McpServer],
    reason: str,
    starts_at: datetime,
    ends_at: datetime,
) -> AccessRequest:
    """File a request for `servers` in `environment` for agents of `role`, for a bounded window."""
    require_team_perm(requester, REQUEST_ACCESS, team)
    servers = list(servers)
    errors: dict[str, str] = {}
    if not (reason or "").strip():
        errors["reason"] = "A reason is required: say what the agent will do and why it needs this access."
    if environment.team_id != team.pk:
        errors["environment"] = "The environment belongs to another team."
    elif not environment.requires_authorization:
        errors["environment"] = (
            f"{environment.name} does not need explicit authorization; requests are for environments that do "
            "(such as production)."
        )
    if role.team_id != team.pk:
        errors["role"] = "The role belongs to another team."
    if not servers:
        errors["servers"] = "Choose at least one server."
    elif any(s.team_id != team.pk for s in servers):
        errors["servers"] = "Every server must belong to this team."
    elif role.team_id == team.pk:
        rules = dict(role.rules.filter(server__in=servers).values_list("server_id", "kind"))
        not_allowed = [s.slug for s in servers if rules.get(s.pk) != RuleKind.ALLOWED]
        if not_allowed:
            errors["servers"] = (
                f"{', '.join(sorted(not_allowed))} not on the allowlist of {role.name}: a grant opens an "
                "environment, it never widens a role (ask an admin to change the role first)."
            )
    now = timezone.now()
    if starts_at is None or ends_at is None:
        errors["ends_at"] = "Give a start and an end."
    else:
        if ends_at <= starts_at:
            errors["ends_at"] = "The end must be after the start."
        elif ends_at <= now:
            errors["ends_at"] = "The window has already ended."
        if starts_at < now - START_GRACE:
            errors["starts_at"] = "The start cannot be in the past."
        max_hours = min(team.max_access_window_hours, MAX_ACCESS_WINDOW_HOURS)
        if ends_at - starts_at > timedelta(hours=max_hours):
            errors["ends_at"] = (
                f"The window is longer than this team allows ({max_hours} hours"
                + (", the 14-day maximum" if max_hours == MAX_ACCESS_WINDOW_HOURS else "")
                + ")."
            )
    if errors:
        raise ValidationError(errors)

    two = environment.is_production and team.production_requires_two_approvers
    access_request = AccessRequest(
        team=team,
        requester=requester,
        environment=environment,
        role=role,
        reason=reason.strip(),
        starts_at=starts_at,
        ends_at=ends_at,
        status=Status.PENDING,
        approvals_required=2 if two else 1,
        review_deadline=min(now + timedelta(minutes=team.access_request_review_minutes), ends_at),
    )
    access_request.full_clean()
    access_request.save()
    access_request.servers.set(servers)
    change_record(
        team=team,
        actor=requester,
        event_type=ChangeEventType.ACCESS_REQUESTED,
        obj=access_request,
        summary=f"{requester.get_username()} requested {environment.name} access for {role.name} to "
        f"{_servers_label(servers)}: {access_request.reason}",
        changes={
            "starts_at": [None, starts_at],
            "ends_at": [None, ends_at],
            "approvals_required": [None, access_request.approvals_required],
        },
    )
    notifications.access_request_filed(access_request)
    return access_request


def _check_reviewable(access_request: AccessRequest, reviewer) -> None:
    require_team_perm(reviewer, REVIEW_ACCESS, access_request.team)
    if access_request.requester_id == reviewer.pk:
        raise PermissionDenied("You cannot review your own access request; another reviewer must decide it.")
    if access_request.status != Status.PENDING:
        raise ValidationError(
            f"This request is {access_request.get_status_display().lower()}, not pending review."
        )
    now = timezone.now()
    if access_request.review_deadline <= now or access_request.ends_at <= now:
        raise ValidationError("The review deadline has passed; the request has expired.")
    if access_request.reviews.filter(reviewer=reviewer).exists():
        raise ValidationError("You have already decided on this request; a reviewer decides once.")


@transaction.atomic
def access_request_approve(*, access_request: AccessRequest, reviewer, reason: str) -> AccessRequest:
    """Approve as one reviewer; the grant goes live once enough distinct reviewers approved."""
    _lock(access_request)
    _check_reviewable(access_request, reviewer)
    reason = _reason(reason, "approve")
    AccessReview.objects.create(
        request=access_request, reviewer=reviewer, decision=Decision.APPROVE, reason=reason
    )
    approvals = access_request.reviews.filter(decision=Decision.APPROVE).count()
    done = approvals >= access_request.approvals_required
    if done:
        access_request.status = Status.APPROVED
        access_request.decided_at = timezone.now()
        access_request.save(update_fields=["status", "decided_at"])
    change_record(
        team=access_request.team,
        actor=reviewer,
        event_type=ChangeEventType.ACCESS_APPROVED,
        obj=access_request,
        summary=(
            f"Approved ({approvals} of {access_request.approvals_required})"
            + (
                "; the grant is live until " + access_request.ends_at.strftime("%Y-%m-%d %H:%M UTC")
                if done
                else "; waiting for another reviewer"
            )
            + f": {reason}"
        ),
        changes={"status": [Status.PENDING, Status.APPROVED]}
        if done
        else {"approvals": [approvals - 1, approvals]},
    )
    if done:
        _grant_changed(access_request, "approved")
    notifications.access_request_decided(
        access_request, event="approved" if done else "partially_approved", actor=reviewer, reason=reason
    )
    return access_request


@transaction.atomic
def access_request_deny(*, access_request: AccessRequest, reviewer, reason: str) -> AccessRequest:
    """One reviewer's denial ends the request."""
    _lock(access_request)
    _check_reviewable(access_request, reviewer)
    reason = _reason(reason, "deny")
    AccessReview.objects.create(
        request=access_request, reviewer=reviewer, decision=Decision.DENY, reason=reason
    )
    access_request.status = Status.DENIED
    access_request.decided_at = timezone.now()
    access_request.save(update_fields=["status", "decided_at"])
    change_record(
        team=access_request.team,
        actor=reviewer,
        event_type=ChangeEventType.ACCESS_DENIED,
        obj=access_request,
        summary=f"Denied: {reason}",
        changes={"status": [Status.PENDING, Status.DENIED]},
    )
    notifications.access_request_decided(access_request, event="denied", actor=reviewer, reason=reason)
    return access_request


@transaction.atomic
def access_request_revoke(*, access_request: AccessRequest, reviewer, reason: str) -> AccessRequest:
    """End an approved grant early (a reviewer; the requester cancels instead)."""
    _lock(access_request)
    require_team_perm(reviewer, REVIEW_ACCESS, access_request.team)
    if access_request.status != Status.APPROVED:
        raise ValidationError(
            f"Only an approved grant can be revoked; this one is "
            f"{access_request.get_status_display().lower()}."
        )
    if access_request.ends_at <= timezone.now():
        raise ValidationError("This grant has already ended.")
    reason = _reason(reason, "revoke")
    access_request.status = Status.REVOKED
    access_request.revoked_by = reviewer
    access_request.revoked_at = timezone.now()
    access_request.revoke_reason = reason
    access_request.save(update_fields=["status", "revoked_by", "revoked_at", "revoke_reason"])
    change_record(
        team=access_request.team,
        actor=reviewer,
        event_type=ChangeEventType.ACCESS_REVOKED,
        obj=access_request,
        summary=f"Revoked: {reason}",
        changes={"status": [Status.APPROVED, Status.REVOKED]},
    )
    _grant_changed(access_request, "revoked")
    notifications.access_request_decided(access_request, event="revoked", actor=reviewer, reason=reason)
    return access_request


@transaction.atomic
def access_request_cancel(*, access_request: AccessRequest, requester, reason: str = "") -> AccessRequest:
    """The requester withdraws a pending request or gives back an approved grant."""
    _lock(access_request)
    if requester is None or access_request.requester_id != requester.pk:
        raise PermissionDenied("Only the requester can cancel a request.")
    require_team_perm(requester, REQUEST_ACCESS, access_request.team)
    if access_request.status not in OPEN_STATES:
        raise ValidationError(f"This request is already {access_request.get_status_display().lower()}.")
    was = access_request.status
    access_request.status = Status.CANCELLED
    access_request.save(update_fields=["status"])
    reason = (reason or "").strip()
    change_record(
        team=access_request.team,
        actor=requester,
        event_type=ChangeEventType.ACCESS_CANCELLED,
        obj=access_request,
        summary="Cancelled by the requester" + (f": {reason}" if reason else ""),
        changes={"status": [was, Status.CANCELLED]},
    )
    if was == Status.APPROVED:
        _grant_changed(access_request, "given back")
    notifications.access_request_decided(access_request, event="cancelled", actor=requester, reason=reason)
    return access_request


def access_requests_expire(*, now: datetime | None = None) -> int:
    """Expire pending requests past their review deadline and grants past their end.

    Safe to run twice or concurrently (rows are locked and skipped, statuses re-checked).
    Returns how many requests it expired.
    """
    now = now or timezone.now()
    expired = 0
    with transaction.atomic():
        due = (
            AccessRequest.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("team", "requester", "environment", "role")
            .filter(
                Q(status=Status.PENDING, review_deadline__lte=now)
                | Q(status=Status.PENDING, ends_at__lte=now)
                | Q(status=Status.APPROVED, ends_at__lte=now)
            )
            .order_by("pk")
        )
        teams_with_grants: dict[int, Team] = {}
        for access_request in due:
            was = access_request.status
            access_request.status = Status.EXPIRED
            access_request.save(update_fields=["status"])
            what = "grant ended" if was == Status.APPROVED else "not reviewed in time"
            change_record(
                team=access_request.team,
                actor_label="expiry task",
                event_type=ChangeEventType.ACCESS_EXPIRED,
                obj=access_request,
                summary=f"Expired ({what})",
                changes={"status": [was, Status.EXPIRED]},
            )
            if was == Status.APPROVED:
                teams_with_grants[access_request.team_id] = access_request.team
            notifications.access_request_decided(access_request, event="expired")
            expired += 1
        for team in teams_with_grants.values():
            policy_changed(team=team, reason="production-access grants expired")
    return expired


def live_grants(*, environment: Environment, now: datetime | None = None):
    """Approved grants of `environment` that have not ended (what the bundle carries)."""
    now = now or timezone.now()
    return (
        AccessRequest.objects.filter(environment=environment, status=Status.APPROVED, ends_at__gt=now)
        .select_related("role")
        .prefetch_related("servers")
        .order_by("starts_at", "pk")
    )
