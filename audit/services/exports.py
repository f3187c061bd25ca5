"""Scheduled audit archive: one JSON Lines file per team and UTC day, written once.

`<MCPGOV_AUDIT_EXPORT_DIR>/<team slug>/<YYYY-MM-DD>.jsonl` holds every event the portal
received that day (by `received_at`, so late events never land in a closed file), with
payloads: the archive is server-side evidence, not a download. A period whose file exists is
skipped, so the task is safe to run any number of times; files appear atomically (rename).
"""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from audit.choices import ExportFormat
from audit.exports import export_chunks
from audit.models import AuditEvent
from portal.models import Team


def export_path(*, team: Team, day: date, directory: Path | None = None) -> Path:
    base = Path(directory or settings.MCPGOV_AUDIT_EXPORT_DIR)
    return base / team.slug / f"{day.isoformat()}.jsonl"


def audit_export_day(*, team: Team, day: date, directory: Path | None = None) -> Path | None:
    """Write the team's archive file for `day` (UTC). None if it exists already or the day is not over."""
    start = datetime.combine(day, time.min, tzinfo=UTC)
    end = start + timedelta(days=1)
    if end > timezone.now():
        return None
    path = export_path(team=team, day=day, directory=directory)
    if path.exists():
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    events = (
        AuditEvent.objects.filter(session__team=team, received_at__gte=start, received_at__lt=end)
        .order_by("session_id", "seq")
        .iterator(chunk_size=2000)
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    digest = hashlib.sha256()
    with tmp.open("w", encoding="utf-8") as fh:
        for chunk in export_chunks(events, ExportFormat.JSONL, include_payloads=True):
            fh.write(chunk)
            digest.update(chunk.encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    path.with_name(path.name + ".sha256").write_text(f"{digest.hexdigest()}  {path.name}\n", encoding="utf-8")
    return path


def audit_export_recent(*, days: int = 7, directory: Path | None = None) -> list[Path]:
    """Archive the last `days` complete UTC days of every team (missing files only)."""
    today = timezone.now().astimezone(UTC).date()
    written = []
    for team in Team.objects.order_by("slug"):
        for back in range(days, 0, -1):
            path = audit_export_day(team=team, day=today - timedelta(days=back), directory=directory)
            if path is not None:
                written.append(path)
    return written
