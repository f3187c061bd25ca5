"""The activity page's hourly rollup: RESULT events counted per team, UTC hour, environment, role,
server, tool, status and trigger (`ActivityHour`), advanced by a periodic task behind a watermark.

Why a rollup: the 30- and 90-day views counted hundreds of thousands of raw events per request.
Why a task and not the ingestion transaction: ingestion is the hot path; the rollup reads what it
stored, afterwards, and ingestion never waits for it.

The watermark is per team and uses the SIEM stream's order (audit/services/streaming.py): under
the team's stream lock, taken exclusively for one statement, every team event with `xact` below
the next transaction id is committed and no later one can get a smaller `xact`. One run adds the
team's events in [watermark, horizon) to the rollup and moves the watermark to the horizon, in one
transaction, so the rollup holds exactly the events below the watermark. Readers
(audit/activity.py) add the events at or above it from the raw table, in one snapshot, so a figure
never depends on how recently the task ran. On SQLite (writers serialised, `xact` 0) the watermark
is an event id instead.

The rollup is derived data, not evidence: it can be dropped and rebuilt from the events
(`activity_rollup_rebuild`).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection, transaction
from django.utils import timezone

from audit.models import ActivityHour, ActivityRollupWatermark
from audit.services.streaming import _horizon
from portal.models import Team

_HOUR = {
    "postgresql": "date_trunc('hour', e.ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
    "sqlite": "strftime('%%Y-%%m-%%d %%H:00:00', e.ts)",
}
_GREATEST = {"postgresql": "GREATEST", "sqlite": "MAX"}

_ADVANCE_SQL = """
INSERT INTO audit_activityhour
    (team_id, hour, environment_id, role, server, tool, status, "trigger", calls, bytes, last_ts)
SELECT s.team_id, {hour}, s.environment_id, s.role, e.server, e.tool,
       COALESCE(e.status, ''), COALESCE(e."trigger", ''), COUNT(*), COALESCE(SUM(e.bytes), 0), MAX(e.ts)
FROM audit_auditevent e JOIN audit_agentsession s ON s.id = e.session_id
WHERE s.team_id = %s AND e.phase = 'result' AND {window}
GROUP BY s.team_id, {hour}, s.environment_id, s.role, e.server, e.tool,
         COALESCE(e.status, ''), COALESCE(e."trigger", '')
ON CONFLICT (team_id, hour, environment_id, role, server, tool, status, "trigger") DO UPDATE SET
    calls = audit_activityhour.calls + excluded.calls,
    bytes = audit_activityhour.bytes + excluded.bytes,
    last_ts = {greatest}(audit_activityhour.last_ts, excluded.last_ts)
"""


@dataclass(frozen=True)
class RollupAdvance:
    team_id: int
    rows: int  # rollup rows inserted or updated
    xact: int
    event_id: int


def _watermark(team_id: int) -> ActivityRollupWatermark:
    """The team's watermark row, locked for this transaction (a second run waits, then goes on)."""
    ActivityRollupWatermark.objects.get_or_create(team_id=team_id)
    return ActivityRollupWatermark.objects.select_for_update().get(team_id=team_id)


def activity_rollup_advance(*, team: Team) -> RollupAdvance:
    """Add the team's events stored since the last run to the hourly rollup; safe to run twice."""
    vendor = connection.vendor
    with transaction.atomic():
        mark = _watermark(team.pk)
        if vendor == "postgresql":
            horizon = _horizon(team.pk)
            window, params = "e.xact >= %s AND e.xact < %s", [mark.xact, horizon]
            new_xact, new_id = horizon, mark.event_id
        else:
            last = team_last_event_id(team.pk)
            window, params = "e.id > %s AND e.id <= %s", [mark.event_id, last]
            new_xact, new_id = mark.xact, last
        sql = _ADVANCE_SQL.format(hour=_HOUR[vendor], window=window, greatest=_GREATEST[vendor])
        with connection.cursor() as cursor:
            cursor.execute(sql, [team.pk, *params])
            rows = max(cursor.rowcount, 0)
        ActivityRollupWatermark.objects.filter(pk=mark.pk).update(
            xact=new_xact, event_id=new_id, updated_at=timezone.now()
        )
    return RollupAdvance(team_id=team.pk, rows=rows, xact=new_xact, event_id=new_id)


def team_last_event_id(team_id: int) -> int:
    from audit.models import AuditEvent

    last = (
        AuditEvent.objects.filter(session__team_id=team_id)
        .order_by("-id")
        .values_list("id", flat=True)
        .first()
    )
    return last or 0


def activity_rollup_advance_all() -> list[RollupAdvance]:
    """Every team's rollup brought up to date (the beat task `audit.roll_up_activity`)."""
    return [activity_rollup_advance(team=team) for team in Team.objects.order_by("pk")]


def activity_rollup_rebuild(*, team: Team) -> RollupAdvance:
    """Drop the team's rollup and count it again from the events (after a restore, say)."""
    with transaction.atomic():
        _watermark(team.pk)
        ActivityHour.objects.filter(team=team).delete()
        ActivityRollupWatermark.objects.filter(team_id=team.pk).update(xact=0, event_id=0)
        return activity_rollup_advance(team=team)
