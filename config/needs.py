"""What needs this person: the counters of the home page and the nav's badges, each a link to its queue.

Above every app (it reads sessions, tickets, gateways, tool reports and the inbox), so it lives in
`config/`. One `needs_for` call is at most five aggregate queries; the nav calls it on every page and
the live poll (`needs_poll`) every few seconds, answering 204 when nothing changed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

from django.db.models import Count, Exists, OuterRef, Q
from django.urls import reverse
from django.utils import timezone

from audit.selectors import waiting_counts
from governance.choices import AccessRequestStatus, ToolReportStatus
from governance.models import AccessRequest, AccessReview, EnforcementClient, ToolReport
from governance.services.notifications import stale_after_minutes
from portal.models import Notification
from portal.permissions import (
    ACKNOWLEDGE_SESSION,
    CHANGE_POLICY,
    MANAGE_CLIENTS,
    RELEASE_SESSION,
    REQUEST_ACCESS,
    REVIEW_ACCESS,
    TOGGLE_FLAGS,
)

EXPIRING_WITHIN = timedelta(hours=1)  # "my tickets expiring": live grants that end within this


@dataclass(frozen=True)
class Need:
    key: str
    label: str
    count: int
    url: str
    nav: str  # the nav link (URL name) whose badge adds this count; "" for none


def needs_for(*, user, team, perms: set[str]) -> list[Need]:
    """The queues this person works on in `team` (only those their permissions reach), with counts.

    At most five queries: sessions, tickets, gateways, tool reports, the inbox (one aggregate each).
    """
    now = timezone.now()
    out: list[Need] = []
    if RELEASE_SESSION in perms or ACKNOWLEDGE_SESSION in perms:
        counts = waiting_counts(team=team)
        if RELEASE_SESSION in perms:
            halted = reverse("audit:halted-queue")
            out += [
                Need("halted", "Halted sessions", counts["halted"], halted, "audit:halted-queue"),
                Need("paused", "Paused sessions", counts["paused"], halted, "audit:halted-queue"),
                Need(
                    "approvals",
                    "Calls waiting for approval",
                    counts["approvals"],
                    halted,
                    "audit:halted-queue",
                ),
            ]
        if ACKNOWLEDGE_SESSION in perms:
            out.append(
                Need(
                    "acknowledge",
                    "Sessions to acknowledge",
                    counts["acknowledge"],
                    reverse("audit:session-list") + "?state=ended&acknowledged=no",
                    "audit:session-list",
                )
            )
    if REVIEW_ACCESS in perms or REQUEST_ACCESS in perms:
        reviewed = Exists(AccessReview.objects.filter(request=OuterRef("pk"), reviewer=user))
        counts = AccessRequest.objects.for_team(team).aggregate(
            tickets=Count(
                "pk",
                filter=Q(status=AccessRequestStatus.PENDING, review_deadline__gt=now)
                & ~Q(requester=user)
                & ~reviewed,
            ),
            expiring=Count(
                "pk",
                filter=Q(
                    requester=user,
                    status=AccessRequestStatus.APPROVED,
                    ends_at__gt=now,
                    ends_at__lte=now + EXPIRING_WITHIN,
                ),
            ),
        )
        access = reverse("governance:access-list")
        if REVIEW_ACCESS in perms:
            out.append(
                Need(
                    "tickets",
                    "Tickets to review",
                    counts["tickets"],
                    access + "#pending-requests",
                    "governance:access-list",
                )
            )
        if REQUEST_ACCESS in perms:
            out.append(
                Need(
                    "expiring",
                    "My grants ending within the hour",
                    counts["expiring"],
                    access + "#live-grants",
                    "governance:access-list",
                )
            )
    if MANAGE_CLIENTS in perms or TOGGLE_FLAGS in perms:
        stale = (
            EnforcementClient.objects.for_team(team)
            .filter(revoked_at__isnull=True, last_seen_at__lt=now - timedelta(minutes=stale_after_minutes()))
            .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        )
        where = "governance:client-list" if MANAGE_CLIENTS in perms else "governance:flag-list"
        out.append(Need("stale", "Stale gateways", stale.count(), reverse(where), where))
    if CHANGE_POLICY in perms:
        per_server = dict(
            ToolReport.objects.filter(server__team=team, status=ToolReportStatus.PENDING)
            .values_list("server_id")
            .annotate(n=Count("pk"))
            .order_by()
        )
        url = (
            reverse("governance:server-detail", args=[next(iter(per_server))])
            if len(per_server) == 1
            else reverse("governance:server-list")
        )
        out.append(
            Need(
                "tools",
                "Tool definitions to approve",
                sum(per_server.values()),
                url,
                "governance:server-list",
            )
        )
    unread = Notification.objects.filter(team=team, user=user, read_at__isnull=True).count()
    out.append(Need("inbox", "Unread notifications", unread, reverse("inbox"), "inbox"))
    return out


def needs_token(needs: list[Need]) -> str:
    """Changes whenever a count does: the live poll answers 204 while the page's token is current."""
    raw = ";".join(f"{n.key}={n.count}" for n in needs)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def nav_badges(needs: list[Need]) -> dict[str, int]:
    """Per nav link (URL name): the sum of its queues' counts."""
    badges: dict[str, int] = {}
    for need in needs:
        if need.nav:
            badges[need.nav] = badges.get(need.nav, 0) + need.count
    return badges
