"""When audit chains are sealed, and what verify_audit checks about sealing (coverage, copies).

Sealing runs (1) on the Celery beat schedule every MCPGOV_SEAL_INTERVAL_SECONDS, (2) when a
session ends, and (3) opportunistically after an ingestion batch or a gateway's state report
commits, when the team's oldest unsealed event is older than the interval. (3) is what makes
sealing work without beat (`make run`: SQLite, eager Celery) and is a backstop when beat is
down; it costs one indexed query per batch. A background thread in the web process was the
other option; it would run once per process (several per uvicorn deployment, two under
runserver's autoreloader) and die silently with it, while this needs no process of its own.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Max, Min
from django.utils import timezone

from audit.models import AuditDigest, AuditEvent
from audit.services.digests import Problem
from audit.services.sinks import digest_record, record_bytes
from portal.models import Team

logger = logging.getLogger(__name__)


def seal_interval() -> timedelta:
    return timedelta(seconds=settings.MCPGOV_SEAL_INTERVAL_SECONDS)


def seal_grace() -> timedelta:
    return timedelta(seconds=settings.MCPGOV_SEAL_GRACE_SECONDS)


def oldest_unsealed_at(team_id: int):
    """received_at of the team's oldest event past its session's sealed mark (None: all sealed)."""
    return AuditEvent.objects.filter(
        session__team_id=team_id,
        session__last_seq__gt=F("session__sealed_seq"),
        seq=F("session__sealed_seq") + 1,
    ).aggregate(oldest=Min("received_at"))["oldest"]


def seal_is_due(team_id: int) -> bool:
    oldest = oldest_unsealed_at(team_id)
    return oldest is not None and oldest <= timezone.now() - seal_interval()


# The ingestion backstop (3) asks "is a seal due?" after every batch. The answer can only move
# later between two seals (new events are newer than the oldest unsealed one), so each process
# remembers, per team, what the last check found and skips the query until a seal can be due:
# the earlier of `oldest` (the oldest unsealed event's received_at) and the check time - _IN_FLIGHT,
# plus the interval (an event still in a transaction at the check time, invisible to it, was
# received at most _IN_FLIGHT before it). Only `only_if_due` callers use it; a seal drops it.
_IN_FLIGHT = timedelta(seconds=10)
_due_checks: dict[int, tuple[Any, Any]] = {}  # team id -> (oldest unsealed or None, check time)


def _not_due_yet(team_id: int, now) -> bool:
    cached = _due_checks.get(team_id)
    if cached is None:
        return False
    oldest, checked_at = cached
    basis = checked_at - _IN_FLIGHT if oldest is None else min(oldest, checked_at - _IN_FLIGHT)
    return now < basis + seal_interval()


def _seal_now(team_id: int, *, only_if_due: bool) -> None:
    from audit.tasks import seal_audit_chains

    try:
        if only_if_due:
            now = timezone.now()
            if _not_due_yet(team_id, now):
                return
            oldest = oldest_unsealed_at(team_id)
            if oldest is None or oldest > now - seal_interval():
                _due_checks[team_id] = (oldest, now)
                return
        _due_checks.pop(team_id, None)
        seal_audit_chains.delay(team_id)
    except Exception:  # the caller's data is committed; beat or the next batch seals instead
        logger.exception("Sealing team %s after commit failed; the next run will seal.", team_id)


def seal_on_commit(*, team_id: int, only_if_due: bool) -> None:
    """After the current transaction commits: seal the team's chains (or only if a seal is due)."""
    transaction.on_commit(lambda: _seal_now(team_id, only_if_due=only_if_due))


# --- verification ----------------------------------------------------------------------------------


def _covered_seqs(digests) -> dict[str, int]:
    covered: dict[str, int] = {}
    for digest in digests:
        for head in digest.heads if isinstance(digest.heads, list) else []:
            if isinstance(head, dict) and isinstance(head.get("seq"), int):
                sid = str(head.get("session"))
                covered[sid] = max(covered.get(sid, 0), head["seq"])
    return covered


def verify_seal_coverage(team: Team, *, now=None) -> list[Problem]:
    """Events that no digest covers although they are older than the seal interval plus grace.

    Catches digests deleted from the end of the chain, or all of them, with the sessions' sealed
    marks reset (which the digest chain alone cannot see). The age comes from `received_at`,
    which the hash does not cover: an owner who also rewrites it is caught by the external copy.
    """
    now = now or timezone.now()
    cutoff = now - seal_interval() - seal_grace()
    covered = _covered_seqs(AuditDigest.objects.filter(team=team).only("heads"))
    problems: list[Problem] = []
    stored = (
        AuditEvent.objects.filter(session__team=team)
        .values("session_id")
        .annotate(top=Max("seq"))
        .order_by("session_id")
    )
    for row in stored:
        sid = str(row["session_id"])
        first = covered.get(sid, 0) + 1
        if row["top"] < first:
            continue
        oldest = AuditEvent.objects.filter(session_id=row["session_id"], seq__gte=first).aggregate(
            oldest=Min("received_at")
        )["oldest"]
        if oldest is not None and oldest < cutoff:
            span = f"seq {first}" if first == row["top"] else f"seqs {first}..{row['top']}"
            problems.append(
                Problem(
                    "unsealed",
                    f"{span} stored since {oldest:%Y-%m-%dT%H:%M:%SZ} but no digest covers them "
                    f"(seal interval {settings.MCPGOV_SEAL_INTERVAL_SECONDS} s + grace "
                    f"{settings.MCPGOV_SEAL_GRACE_SECONDS} s): digests were removed or sealing stopped.",
                    sid,
                    first,
                )
            )
    return problems


def _check_heads(heads: Any, number: int, source: str) -> list[Problem]:
    problems = []
    for head in heads if isinstance(heads, list) else []:
        if not isinstance(head, dict):
            continue
        session_id, seq, head_hash = head.get("session"), head.get("seq"), head.get("hash")
        stored = (
            AuditEvent.objects.filter(session_id=session_id, seq=seq).values_list("hash", flat=True).first()
        )
        if stored is None:
            problems.append(
                Problem(
                    "removed",
                    f"sealed in digest #{number} ({source}) but no longer stored.",
                    session_id,
                    seq,
                    number,
                )
            )
        elif stored != head_hash:
            problems.append(
                Problem(
                    "altered",
                    f"does not match the head sealed in digest #{number} ({source}).",
                    session_id,
                    seq,
                    number,
                )
            )
    return problems


def verify_against_copy(team: Team, copy: dict[int, dict[str, Any]], *, source: str) -> list[Problem]:
    """Compare the team's digests with an external copy ({number: record}); check the copy's heads.

    Missing from the database, present only in the database, or different: each is reported, and
    every head the copy sealed is checked against the stored events, so a rewrite of sealed events
    is found even when the database's digests were removed or replaced.
    """
    problems: list[Problem] = []
    in_db = {d.number: d for d in AuditDigest.objects.filter(team=team).order_by("number")}
    for number in sorted(set(in_db) | set(copy)):
        digest, record = in_db.get(number), copy.get(number)
        if record is None:
            problems.append(
                Problem(
                    "copy_missing",
                    f"in the database but not in {source}: inserted, or its copy is still pending.",
                    digest=number,
                )
            )
            continue
        if digest is None:
            problems.append(Problem("digest_removed", f"in {source} but not in the database.", digest=number))
        elif record_bytes(digest_record(digest, team.slug)) != record_bytes(record):
            theirs = record.get("digest", {}) if isinstance(record.get("digest"), dict) else {}
            ours = digest_record(digest, team.slug)
            fields = sorted(
                {k for k in ours["digest"] if ours["digest"].get(k) != theirs.get(k)}
                | {k for k in ("digest_hash", "kid", "signature") if ours[k] != record.get(k)}
            )
            problems.append(
                Problem(
                    "digest_altered",
                    f"differs from {source} ({', '.join(fields) or 'encoding'}).",
                    digest=number,
                )
            )
        if digest is None or record_bytes(digest_record(digest, team.slug)) != record_bytes(record):
            problems += _check_heads(record.get("digest", {}).get("heads"), number, source)
    return problems


def verify_copies_written(team: Team, sinks: list[str], *, now=None) -> list[Problem]:
    """Digests older than the grace that a configured sink still lacks (a sink down for long)."""
    now = now or timezone.now()
    cutoff = now - seal_grace()
    problems = []
    for sink in sinks:
        for number in (
            AuditDigest.objects.filter(team=team, created_at__lt=cutoff)
            .exclude(copies__sink=sink)
            .values_list("number", flat=True)
        ):
            problems.append(Problem("copy_pending", f"not yet written to {sink}.", digest=number))
    return problems
