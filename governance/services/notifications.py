"""Notifications for access requests, incidents and stale enforcement clients: an email, a notice in
each recipient's in-app inbox (portal.Notification, the subject line and a link), and for the
events a team's channel should hear of, its outgoing webhook (governance/services/webhooks.py).

Services call these inside their transaction; the inbox rows commit with the write and the mail
goes out once it commits, so a rolled-back write never notifies anyone. Templates live in
templates/email/.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMessage, get_connection
from django.db import transaction
from django.db.models import Q
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from governance.services.webhooks import webhook_notify
from portal.choices import ChangeEventType
from portal.models import Membership, Team
from portal.permissions import MANAGE_INCIDENTS, RELEASE_SESSION, REVIEW_ACCESS, ROLE_PERMISSIONS
from portal.services import notifications_add

logger = logging.getLogger(__name__)

SUBJECT_PREFIX = "[MCP Governance] "


def team_users_with_perm(team: Team, perm: str, *, exclude=None) -> list:
    """Active members of `team` whose role holds `perm` (the email goes to those with an address)."""
    roles = [role for role, perms in ROLE_PERMISSIONS.items() if perm in perms]
    user_ids = Membership.objects.filter(team=team, role__in=roles).values_list("user_id", flat=True)
    users = get_user_model().objects.filter(pk__in=user_ids, is_active=True).order_by("pk")
    if exclude is not None:
        users = users.exclude(pk=exclude.pk)
    return list(users)


def _render(template: str, context: dict) -> tuple[str, str]:
    text = render_to_string(f"email/{template}.txt", context).strip()
    subject, _, body = text.partition("\n")
    return subject.strip().removeprefix("Subject:").strip(), body.strip() + "\n"


def _send(template: str, context: dict, recipients: Iterable, *, team: Team, url: str = "") -> None:
    """Render now (the objects are at hand): the inbox notices now, the mail after commit, one
    message per recipient. `url` is the page the notice links to (a path)."""
    recipients = list(recipients)
    if not recipients:
        return
    portal_url = getattr(settings, "MCPGOV_PORTAL_URL", "").rstrip("/")
    subject, body = _render(template, {**context, "portal_url": portal_url})
    notifications_add(team=team, users=recipients, kind=template, text=subject, url=url)
    addresses = sorted({u.email for u in recipients if getattr(u, "email", "")})
    if not addresses:
        return

    def deliver() -> None:
        messages = [
            EmailMessage(subject=f"{SUBJECT_PREFIX}{subject}", body=body, to=[address])
            for address in addresses
        ]
        try:
            get_connection().send_messages(messages)
        except Exception:  # a mail outage must not undo or fail the committed write
            logger.exception("Could not send %s notification to %s", template, ", ".join(addresses))

    transaction.on_commit(deliver)


# --- production access --------------------------------------------------------


def access_request_filed(access_request) -> None:
    reviewers = team_users_with_perm(access_request.team, REVIEW_ACCESS, exclude=access_request.requester)
    _send(
        "access_request_filed",
        {"req": access_request},
        reviewers,
        team=access_request.team,
        url=_access_url(access_request),
    )
    webhook_notify(
        team=access_request.team,
        kind="approval_requested",
        text=f"{access_request.requester} asks for {access_request.environment.name} access "
        f"(ticket #{access_request.pk}); it needs a reviewer's approval.",
        url=_access_url(access_request),
    )


def _access_url(access_request) -> str:
    return reverse("governance:access-detail", args=[access_request.pk])


ACCESS_EVENT_LABELS = {
    "approved": "approved",
    "partially_approved": "approved once (another approval needed)",
    "denied": "denied",
    "revoked": "revoked",
    "expired": "expired",
    "cancelled": "cancelled",
}


def access_request_decided(access_request, *, event: str, actor=None, reason: str = "") -> None:
    """`event`: approved, partially_approved, denied, revoked, expired, cancelled."""
    recipients = [access_request.requester]
    if event == "cancelled":
        recipients = team_users_with_perm(
            access_request.team, REVIEW_ACCESS, exclude=access_request.requester
        )
    _send(
        "access_request_decided",
        {
            "req": access_request,
            "event": event,
            "event_label": ACCESS_EVENT_LABELS[event],
            "actor": actor,
            "reason": reason,
        },
        recipients,
        team=access_request.team,
        url=_access_url(access_request),
    )
    if event in ("approved", "denied", "revoked"):
        webhook_notify(
            team=access_request.team,
            kind=f"access_{event}",
            text=f"Ticket #{access_request.pk} ({access_request.environment.name} access for "
            f"{access_request.requester}) {ACCESS_EVENT_LABELS[event]}"
            + (f" by {actor}" if actor else "")
            + ".",
            url=_access_url(access_request),
        )


# --- incidents ----------------------------------------------------------------


def incident_event(incident, *, event: str, actor=None, detail: str = "") -> None:
    """`event`: opened, contained, resolved. Goes to everyone who handles incidents."""
    _send(
        "incident_event",
        {"incident": incident, "event": event, "actor": actor, "detail": detail},
        team_users_with_perm(incident.team, MANAGE_INCIDENTS),
        team=incident.team,
        url=reverse("incidents:incident-detail", args=[incident.pk]),
    )
    webhook_notify(
        team=incident.team,
        kind=f"incident_{event}",
        text=f"Incident #{incident.pk} {event}: {incident}" + (f" ({actor})" if actor else "") + ".",
        url=reverse("incidents:incident-detail", args=[incident.pk]),
    )


# --- calls waiting for approval -----------------------------------------------


def call_approvals_waiting(session, *, before: list[dict], after: list[dict]) -> int:
    """The gateway holds back calls that need a person's approval (trigger approval_required):
    for each one new in `after` (the session's pending approvals; `before`: as they were), an
    inbox notice to those who may approve and one team-webhook message, linking to the approval
    queue. Called by ingestion inside its transaction. Returns how many calls were announced."""
    known = {p.get("call_id") for p in before}
    new = [p for p in after if p.get("call_id") not in known]
    if not new:
        return 0
    team = session.team
    queue = reverse("audit:halted-queue")
    calls = ", ".join(f"{p.get('server')}.{p.get('tool')}" for p in new[:5]) + (
        f" and {len(new) - 5} more" if len(new) > 5 else ""
    )
    what = f"{len(new)} call{'s' if len(new) > 1 else ''}" if len(new) > 1 else "A call"
    text = (
        f"{what} waiting for approval in session {str(session.pk)[:8]} "
        f"({session.role} in {session.environment.name}): {calls}"
    )
    notifications_add(
        team=team,
        users=team_users_with_perm(team, RELEASE_SESSION),
        kind="call_approval",
        text=text,
        url=queue,
    )
    # Only names: the arguments stay in the portal (a channel may be wider than the team).
    webhook_notify(
        team=team,
        kind="call_approval",
        text=text + ". The gateway holds it until someone decides.",
        url=queue,
    )
    return len(new)


# --- enforcement clients ------------------------------------------------------

STALE_SUMMARY = "Gateway went quiet"


def stale_after_minutes() -> int:
    return int(getattr(settings, "MCPGOV_STALE_CLIENT_MINUTES", 10))


def stale_clients(team: Team, clients: list, *, minutes: int) -> None:
    _send(
        "stale_clients",
        {"team": team, "clients": clients, "minutes": minutes},
        team_users_with_perm(team, REVIEW_ACCESS),
        team=team,
        url=reverse("governance:flag-list"),
    )


def stale_clients_notify(*, now: datetime | None = None, minutes: int | None = None) -> int:
    """Email each team's reviewers about gateways not seen for `minutes`, once per quiet spell.

    A gateway that has never connected is not stale (it is not deployed yet); a revoked or
    expired one is gone. The notification is remembered as a ChangeRecord on the client, so
    it is sent again only after the gateway has been seen and has gone quiet once more.
    Safe to run twice. Returns how many gateways were reported.
    """
    from governance.models import EnforcementClient
    from portal.models import ChangeRecord
    from portal.services import change_record

    now = now or timezone.now()
    minutes = minutes or stale_after_minutes()
    limit = now - timedelta(minutes=minutes)
    reported = 0
    with transaction.atomic():
        quiet = (
            EnforcementClient.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(revoked_at__isnull=True, last_seen_at__lt=limit)
            .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
            .select_related("team", "environment")
            .order_by("team_id", "name")
        )
        by_team: dict[int, list] = {}
        for client in quiet:
            already = ChangeRecord.objects.filter(
                team_id=client.team_id,
                object_type=client._meta.verbose_name,
                object_id=str(client.pk),
                summary__startswith=STALE_SUMMARY,
                created_at__gte=client.last_seen_at,
            ).exists()
            if not already:
                by_team.setdefault(client.team_id, []).append(client)
        for clients in by_team.values():
            team = clients[0].team
            for client in clients:
                change_record(
                    team=team,
                    actor_label="stale-gateway check",
                    event_type=ChangeEventType.CLIENT_STALE,
                    obj=client,
                    summary=f"{STALE_SUMMARY}: not seen for {minutes} minutes (last seen "
                    f"{client.last_seen_at:%Y-%m-%d %H:%M} UTC); reviewers emailed",
                )
            stale_clients(team, clients, minutes=minutes)
            reported += len(clients)
    return reported
