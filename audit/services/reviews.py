"""The quarterly allowlist review (the seed's Layer 7): from the calls the audit trail recorded in a period,
what the policy grants and nobody uses — allowlisted servers nobody called, a role's servers it never
called, write bindings never used to write — plus tools pending classification and (from the incidents
app, registered in its ready()) servers involved in incidents. Each suggestion is accepted into the
team's policy draft (the same draft changes an admin's edits make) or dismissed with a reason; then the
review is signed off and kept. See docs/policy-lifecycle.md.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.choices import CallStatus, Phase, ReviewStatus, SuggestionKind, SuggestionStatus
from audit.models import AuditEvent, PolicyReview, ReviewSuggestion
from governance.choices import AccessClass, Permission, RuleKind
from governance.models import AgentRole, Environment, McpServer, McpTool, RoleServerRule, ServerBinding
from governance.services.common import check_policy_perm
from governance.services.drafts import draft_change_add
from portal.choices import ChangeEventType
from portal.models import Team
from portal.services import change_record, real_user

ON_DEMAND_WINDOW = timedelta(days=91)


@dataclass(frozen=True)
class Suggestion:
    kind: str
    detail: str
    role: str = ""
    server: str = ""
    tool: str = ""
    environment: str = ""


# Other apps add suggestions (incidents: servers involved in incidents) from their AppConfig.ready().
SuggestionSource = Callable[[Team, datetime, datetime], Iterable[Suggestion]]
SUGGESTION_SOURCES: list[SuggestionSource] = []


def register_suggestion_source(source: SuggestionSource) -> None:
    if source not in SUGGESTION_SOURCES:
        SUGGESTION_SOURCES.append(source)


def quarter_of(moment: datetime) -> tuple[str, datetime, datetime]:
    """("2026-Q3", its first instant, the next quarter's first instant), in UTC."""
    moment = moment.astimezone(UTC)
    index = (moment.month - 1) // 3
    start = datetime(moment.year, 3 * index + 1, 1, tzinfo=UTC)
    end = datetime(moment.year + (index == 3), (3 * index + 3) % 12 + 1, 1, tzinfo=UTC)
    return f"{moment.year}-Q{index + 1}", start, end


def previous_quarter(now: datetime) -> tuple[str, datetime, datetime]:
    _, start, _ = quarter_of(now)
    return quarter_of(start - timedelta(seconds=1))


# --- what the period's audit data says -------------------------------------------------------


def _fmt(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d")


def build_suggestions(team: Team, since: datetime, until: datetime) -> tuple[int, list[Suggestion]]:
    """(calls recorded in the period, the suggestions), each from one pass over the period's events."""
    events = AuditEvent.objects.filter(session__team=team, ts__gte=since, ts__lt=until)
    calls = events.filter(phase=Phase.INTENT).count()
    used = set(events.filter(phase=Phase.INTENT).values_list("session__role", "server").distinct())
    used_servers = {server for _, server in used}
    # forwarded calls (not refused) per environment, server and tool: what was really used to write
    forwarded = set(
        events.filter(phase=Phase.RESULT, status__in=[CallStatus.SUCCESS, CallStatus.FAIL])
        .values_list("session__environment__name", "server", "tool")
        .distinct()
    )
    period = f"{_fmt(since)} to {_fmt(until)}"
    out: list[Suggestion] = []

    allowed = defaultdict(list)
    for role, server in (
        RoleServerRule.objects.filter(role__team=team, kind=RuleKind.ALLOWED)
        .order_by("server__slug", "role__name")
        .values_list("role__name", "server__slug")
    ):
        allowed[server].append(role)
    for server, roles in allowed.items():
        if server not in used_servers:
            out.append(
                Suggestion(
                    SuggestionKind.SERVER_UNUSED,
                    f"{server} is on the allowlist of {', '.join(roles)} and nobody called it ({period}): "
                    "remove it from the allowlists.",
                    server=server,
                )
            )
            continue
        for role in roles:
            if (role, server) not in used:
                out.append(
                    Suggestion(
                        SuggestionKind.ROLE_UNUSED_SERVER,
                        f"{role} never called {server} ({period}): take it off {role}'s allowlist.",
                        role=role,
                        server=server,
                    )
                )

    write_tools = defaultdict(set)
    for tool in McpTool.objects.filter(server__team=team).select_related("server"):
        if tool.access_class == AccessClass.WRITE:
            write_tools[tool.server.slug].add(tool.name)
    for env, server in (
        ServerBinding.objects.filter(environment__team=team, permission=Permission.READ_WRITE)
        .order_by("environment__order", "environment__name", "server__slug")
        .values_list("environment__name", "server__slug")
    ):
        if not any((env, server, tool) in forwarded for tool in write_tools[server]):
            out.append(
                Suggestion(
                    SuggestionKind.WRITE_UNUSED,
                    f"{server} is read_write in {env} and no write tool of it was used there ({period}): "
                    "make it read_only.",
                    server=server,
                    environment=env,
                )
            )

    for server, tool in (
        McpTool.objects.filter(server__team=team, read_only_hint__isnull=True, access_class_override="")
        .order_by("server__slug", "name")
        .values_list("server__slug", "name")
    ):
        out.append(
            Suggestion(
                SuggestionKind.TOOL_UNCLASSIFIED,
                f"{tool} on {server} declares no readOnlyHint and no admin classified it (it counts as a "
                "write tool): confirm it as write, or dismiss and class it on the server page.",
                server=server,
                tool=tool,
            )
        )
    for source in SUGGESTION_SOURCES:
        out.extend(source(team, since, until))
    return calls, out


# --- the workflow ----------------------------------------------------------------------------


def review_open(
    *,
    team: Team,
    actor=None,
    quarter: str = "",
    period_start: datetime | None = None,
    period_end: datetime | None = None,
) -> PolicyReview:
    """Open a review of `team` over a period (default: the last 91 days up to now) with its suggestions.

    With `quarter` (the scheduled task) there is at most one per team and quarter: opening it again
    returns the one already there."""
    check_policy_perm(actor, team)
    period_end = period_end or timezone.now()
    period_start = period_start or period_end - ON_DEMAND_WINDOW
    if period_start >= period_end:
        raise ValidationError({"period_start": "The period must start before it ends."})
    if quarter:
        existing = PolicyReview.objects.filter(team=team, quarter=quarter).first()
        if existing is not None:
            return existing
    calls, suggestions = build_suggestions(team, period_start, period_end)
    try:
        with transaction.atomic():
            review = PolicyReview.objects.create(
                team=team,
                quarter=quarter,
                period_start=period_start,
                period_end=period_end,
                opened_by=real_user(actor),
                calls=calls,
            )
            ReviewSuggestion.objects.bulk_create(
                [
                    ReviewSuggestion(
                        review=review,
                        kind=s.kind,
                        detail=s.detail[:500],
                        role=s.role,
                        server=s.server,
                        tool=s.tool,
                        environment=s.environment,
                    )
                    for s in suggestions
                ]
            )
            change_record(
                team=team,
                actor=actor,
                event_type=ChangeEventType.REVIEW_OPENED,
                obj=review,
                object_type="policy review",
                summary=f"Policy review opened ({quarter or 'on demand'}, {_fmt(period_start)} to "
                f"{_fmt(period_end)}): {len(suggestions)} suggestions from {calls} calls",
            )
    except IntegrityError:  # the same quarter opened concurrently (the task ran twice): keep the first
        return PolicyReview.objects.get(team=team, quarter=quarter)
    return review


def reviews_open_quarterly(*, now: datetime | None = None) -> list[PolicyReview]:
    """Every team's review of the quarter that ended last (safe to run any number of times)."""
    quarter, start, end = previous_quarter(now or timezone.now())
    return [
        review_open(team=team, quarter=quarter, period_start=start, period_end=end)
        for team in Team.objects.order_by("pk")
    ]


def _locked(suggestion: ReviewSuggestion) -> ReviewSuggestion:
    suggestion = (
        ReviewSuggestion.objects.select_for_update().select_related("review__team").get(pk=suggestion.pk)
    )
    if suggestion.review.status != ReviewStatus.OPEN:
        raise ValidationError("This review is signed off; its suggestions are kept as they were decided.")
    if suggestion.status != SuggestionStatus.OPEN:
        raise ValidationError(f"This suggestion is already {suggestion.get_status_display().lower()}.")
    return suggestion


def _named(model, what: str, **lookup):
    obj = model.objects.filter(**lookup).first()
    if obj is None:
        raise ValidationError(f"{what} no longer exists: dismiss the suggestion.")
    return obj


def _draft_calls(suggestion: ReviewSuggestion, team: Team) -> list[tuple[str, dict[str, Any]]]:
    """The policy service calls that carry out the suggestion (the draft records them)."""
    kind, slug = suggestion.kind, suggestion.server
    if kind in (SuggestionKind.SERVER_UNUSED, SuggestionKind.ROLE_UNUSED_SERVER):
        rules = RoleServerRule.objects.filter(role__team=team, server__slug=slug, kind=RuleKind.ALLOWED)
        if kind == SuggestionKind.ROLE_UNUSED_SERVER:
            _named(AgentRole, f"Role {suggestion.role}", team=team, name=suggestion.role)
            rules = rules.filter(role__name=suggestion.role)
        return [("role_server_remove", {"rule": rule}) for rule in rules.order_by("role__name")]
    if kind in (SuggestionKind.WRITE_UNUSED, SuggestionKind.INCIDENT_SERVER):
        server = _named(McpServer, f"Server {slug}", team=team, slug=slug)
        bindings = ServerBinding.objects.filter(server=server, permission=Permission.READ_WRITE)
        if kind == SuggestionKind.WRITE_UNUSED:
            _named(
                Environment,
                f"Environment {suggestion.environment}",
                team=team,
                name=suggestion.environment,
            )
            bindings = bindings.filter(environment__name=suggestion.environment)
        return [
            (
                "binding_set",
                {"environment": b.environment, "server": server, "permission": Permission.READ_ONLY},
            )
            for b in bindings.select_related("environment").order_by(
                "environment__order", "environment__name"
            )
        ]
    if kind == SuggestionKind.TOOL_UNCLASSIFIED:
        tool = _named(
            McpTool,
            f"Tool {suggestion.tool} of {slug}",
            server__team=team,
            server__slug=slug,
            name=suggestion.tool,
        )
        return [("tool_update", {"tool": tool, "access_class_override": AccessClass.WRITE})]
    raise ValidationError(f"Unknown suggestion kind {kind}.")


def review_suggestion_accept(*, suggestion: ReviewSuggestion, actor) -> ReviewSuggestion:
    """Carry the suggestion into the team's policy draft (whatever the team's edit mode: a review's
    changes are always reviewed before they publish)."""
    with transaction.atomic():
        suggestion = _locked(suggestion)
        team = suggestion.review.team
        check_policy_perm(actor, team)
        calls = _draft_calls(suggestion, team)
        if not calls:
            raise ValidationError("The policy already says so: nothing is left to change. Dismiss it.")
        draft, positions = None, []
        for operation, kwargs in calls:
            draft, change = draft_change_add(team=team, actor=actor, operation=operation, kwargs=kwargs)
            positions.append(change.position)
        suggestion.status, suggestion.decided_by, suggestion.decided_at = (
            SuggestionStatus.ACCEPTED,
            real_user(actor),
            timezone.now(),
        )
        suggestion.draft, suggestion.draft_positions = draft, positions
        suggestion.save()
        change_record(
            team=team,
            actor=actor,
            event_type=ChangeEventType.REVIEW_SUGGESTION_ACCEPTED,
            obj=suggestion.review,
            object_type="policy review",
            summary=f"Review suggestion accepted into the draft (changes {', '.join(map(str, positions))}): "
            f"{suggestion.detail}"[:500],
        )
    return suggestion


def review_suggestion_dismiss(*, suggestion: ReviewSuggestion, actor, reason: str) -> ReviewSuggestion:
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "Say why the suggestion is dismissed (it is kept with the review)."})
    with transaction.atomic():
        suggestion = _locked(suggestion)
        check_policy_perm(actor, suggestion.review.team)
        suggestion.status, suggestion.decided_by, suggestion.decided_at = (
            SuggestionStatus.DISMISSED,
            real_user(actor),
            timezone.now(),
        )
        suggestion.reason = reason[:500]
        suggestion.save()
        change_record(
            team=suggestion.review.team,
            actor=actor,
            event_type=ChangeEventType.REVIEW_SUGGESTION_DISMISSED,
            obj=suggestion.review,
            object_type="policy review",
            summary=f"Review suggestion dismissed ({suggestion.reason}): {suggestion.detail}"[:500],
        )
    return suggestion


def review_sign_off(*, review: PolicyReview, actor, note: str = "") -> PolicyReview:
    """Close the review once every suggestion is accepted or dismissed; it is kept as signed."""
    with transaction.atomic():
        review = PolicyReview.objects.select_for_update().select_related("team").get(pk=review.pk)
        check_policy_perm(actor, review.team)
        if actor is None:
            raise ValidationError("A person signs a review off.")
        if review.status != ReviewStatus.OPEN:
            raise ValidationError("This review is already signed off.")
        undecided = review.suggestions.filter(status=SuggestionStatus.OPEN).count()
        if undecided:
            raise ValidationError(f"{undecided} suggestions are still open: accept or dismiss each first.")
        review.status, review.signed_off_by, review.signed_off_at = (
            ReviewStatus.SIGNED_OFF,
            real_user(actor),
            timezone.now(),
        )
        review.sign_off_note = (note or "").strip()[:2000]
        review.save()
        change_record(
            team=review.team,
            actor=actor,
            event_type=ChangeEventType.REVIEW_SIGNED_OFF,
            obj=review,
            object_type="policy review",
            summary=f"Policy review {review.quarter or review.pk} signed off",
        )
    return review
