"""Exports: the seed's MCP_AUDIT lines, CSV, JSON Lines, filtered ranges, and the scheduled archive."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
from django.test import Client

from audit.models import AuditEvent
from audit.services.exports import audit_export_day, export_path
from audit.tasks import export_audit_logs
from tests.audit.conftest import event, open_session, post_events

pytestmark = pytest.mark.django_db


def download(user, url) -> str:
    c = Client()
    c.force_login(user)
    response = c.get(url)
    assert response.status_code == 200
    assert "attachment" in response["Content-Disposition"]
    return b"".join(response.streaming_content).decode()


@pytest.fixture
def sid(gateway):
    sid = open_session(gateway)
    post_events(
        gateway,
        sid,
        [
            event(1),
            event(2),
            event(3),
            event(4, status="fail", result_summary="403 forbidden"),
            event(5, server="filesystem", tool="write_file"),
        ],
    )
    return sid


def test_mcp_audit_lines_follow_the_seed_format(sid, reviewer, auditor):
    lines = download(reviewer, f"/audit/sessions/{sid}/export/?format=mcp_audit").splitlines()
    assert lines[0] == (
        f"MCP_AUDIT | 2026-11-24T09:00:00.001Z | session={sid} | server=github_api | tool=create_pr | "
        "args={title=PR 1, base=main} | result=PR#1 created | duration_ms=34.5 | status=success"
    )
    assert lines[1].endswith("| result=403 forbidden | duration_ms=34.5 | status=fail")
    assert "server=filesystem | tool=write_file" in lines[2] and lines[2].endswith("status=pending")
    assert len(lines) == 3
    full = download(auditor, f"/audit/sessions/{sid}/export/?format=mcp_audit").splitlines()
    args = full[0].split("| args={", 1)[1].split("} |", 1)[0]  # key order is the database's (jsonb sorts)
    assert sorted(args.split(", ")) == ['base: "main"', "n: 1", 'title: "PR 1"', "weight: 0.5"]


def test_csv_and_jsonl(sid, reviewer, auditor):
    rows = list(csv.DictReader(io.StringIO(download(reviewer, f"/audit/sessions/{sid}/export/?format=csv"))))
    assert [r["seq"] for r in rows] == ["1", "2", "3", "4", "5"] and "arguments" not in rows[0]
    assert (
        rows[3]["status"] == "fail" and rows[3]["hash"] == AuditEvent.objects.get(session_id=sid, seq=4).hash
    )
    rows = list(csv.DictReader(io.StringIO(download(auditor, f"/audit/sessions/{sid}/export/?format=csv"))))
    assert json.loads(rows[0]["arguments"])["title"] == "PR 1"
    records = [
        json.loads(line)
        for line in download(auditor, f"/audit/sessions/{sid}/export/?format=jsonl").splitlines()
    ]
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5] and records[1]["result"]["number"] == 1


def test_range_export_follows_the_list_filters(sid, gateway, reviewer):
    other = open_session(gateway, role="database_agent")
    post_events(gateway, other, [event(1, server="db"), event(2, server="db")])
    everything = download(reviewer, "/audit/sessions/export/?format=jsonl").splitlines()
    assert len(everything) == 7
    only_db = download(reviewer, "/audit/sessions/export/?role=database_agent&format=jsonl").splitlines()
    assert {json.loads(line)["session"] for line in only_db} == {other}
    failed = download(reviewer, "/audit/sessions/export/?status=fail&format=mcp_audit").splitlines()
    assert all(f"session={sid}" in line for line in failed) and len(failed) == 3


def test_scheduled_archive_is_written_once_per_day(sid, team, tmp_path, settings):
    settings.MCPGOV_AUDIT_EXPORT_DIR = tmp_path
    day = datetime.now(UTC).date() - timedelta(days=1)
    assert audit_export_day(team=team, day=datetime.now(UTC).date()) is None  # the day is not over
    written = export_audit_logs(days=3)
    assert len(written) == 3  # one file per complete day and team (one team here)
    path = export_path(team=team, day=day)
    assert path.exists() and path.read_text() == ""  # the events were received today, not yesterday
    assert export_audit_logs(days=3) == []  # idempotent: files exist
    checksum = (path.parent / (path.name + ".sha256")).read_text().split()[0]
    assert checksum == hashlib.sha256(path.read_bytes()).hexdigest()


def test_archive_holds_the_days_events_with_payloads(sid, team, tmp_path):
    today = datetime.now(UTC).date()
    tomorrow_noon = datetime.combine(today + timedelta(days=1), datetime.min.time(), tzinfo=UTC) + timedelta(
        hours=12
    )
    with mock.patch("django.utils.timezone.now", return_value=tomorrow_noon):
        path = audit_export_day(team=team, day=today, directory=tmp_path)
        assert audit_export_day(team=team, day=today, directory=tmp_path) is None
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5] and records[0]["arguments"]["title"] == "PR 1"
