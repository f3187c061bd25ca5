"""Digests written outside the database (directory and syslog sinks) and verify_audit against them."""

from __future__ import annotations

import json
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from audit.models import AuditDigest, AuditDigestCopy
from audit.services.sinks import DirectorySink, SinkError, digest_record
from audit.tasks import seal_audit_chains
from tests.audit.conftest import events, open_session, post_events
from tests.audit.test_sealing import rewrite_consistently
from tests.audit.test_verify import _uuid_param, attacker, verify
from tests.conftest import free_port

pytestmark = pytest.mark.django_db


@pytest.fixture
def copy_dir(tmp_path, settings):
    folder = tmp_path / "digests"
    settings.MCPGOV_DIGEST_SINKS = [f"dir:{folder}"]
    return folder


@pytest.fixture
def sealed(gateway, copy_dir, django_capture_on_commit_callbacks):
    """A session with two digests, each copied to the directory after its commit."""
    sid = open_session(gateway)
    post_events(gateway, sid, events(1, 4))
    with django_capture_on_commit_callbacks(execute=True):
        assert seal_audit_chains() == [1]
    post_events(gateway, sid, events(5, 8))
    with django_capture_on_commit_callbacks(execute=True):
        assert seal_audit_chains() == [2]
    return sid


def test_each_digest_is_one_read_only_file_holding_its_record(sealed, copy_dir, team):
    files = sorted(p.name for p in (copy_dir / team.slug).iterdir())
    assert files == ["00000001.json", "00000002.json"]  # no temporary file left behind
    for digest in AuditDigest.objects.order_by("number"):
        file = copy_dir / team.slug / f"{digest.number:08d}.json"
        assert json.loads(file.read_bytes()) == json.loads(json.dumps(digest_record(digest, team.slug)))
        assert stat.S_IMODE(file.stat().st_mode) == 0o444
    assert set(AuditDigestCopy.objects.values_list("digest__number", "sink")) == {
        (1, f"dir:{copy_dir}"),
        (2, f"dir:{copy_dir}"),
    }
    code, out = verify("--against-dir", str(copy_dir))
    assert code == 0 and "2 digest(s): all intact" in out


def test_an_existing_copy_is_never_rewritten(sealed, copy_dir, team):
    digest = AuditDigest.objects.get(number=1)
    file = copy_dir / team.slug / "00000001.json"
    before = file.read_bytes()
    sink = DirectorySink(name="dir", path=copy_dir)
    sink.write(digest_record(digest, team.slug))  # the same record again: fine (a retried write)
    forged = digest_record(digest, team.slug) | {"signature": "forged"}
    with pytest.raises(SinkError, match="never rewritten"):
        sink.write(forged)
    assert file.read_bytes() == before


def test_a_failed_sink_write_is_retried_by_the_next_seal(gateway, copy_dir, settings, team):
    copy_dir.parent.mkdir(exist_ok=True)
    copy_dir.write_text("not a directory")  # the sink is broken: every write fails
    sid = open_session(gateway)
    post_events(gateway, sid, events(1, 2))
    assert seal_audit_chains() == [1]  # sealing itself goes on
    assert not AuditDigestCopy.objects.exists()
    settings.MCPGOV_SEAL_GRACE_SECONDS = 0
    code, out = verify()
    assert code == 1 and f"COPY_PENDING: digest #1: not yet written to dir:{copy_dir}." in out
    copy_dir.unlink()  # the sink is back
    assert seal_audit_chains() == []  # nothing new to seal, but the pending copy is written
    assert (copy_dir / team.slug / "00000001.json").exists()
    assert verify("--against-dir", str(copy_dir))[0] == 0


def test_a_digest_removed_from_the_database_is_reported(sealed, copy_dir):
    with attacker() as cursor:
        cursor.execute("DELETE FROM audit_auditdigestcopy")
        cursor.execute("DELETE FROM audit_auditdigest WHERE number = 2")
        cursor.execute("UPDATE audit_agentsession SET sealed_seq = 4")
    assert verify()[0] == 0  # fresh events within the grace: the database alone cannot tell
    code, out = verify("--against-dir", str(copy_dir))
    assert code == 1
    assert f"DIGEST_REMOVED: digest #2: in the copy in {copy_dir} but not in the database." in out


def test_a_digest_missing_from_the_copy_is_reported(sealed, copy_dir, team):
    (copy_dir / team.slug / "00000002.json").unlink()
    code, out = verify("--against-dir", str(copy_dir))
    assert code == 1 and "COPY_MISSING: digest #2: in the database but not in the copy" in out


def test_a_rewrite_hidden_by_deleting_every_digest_is_found_through_the_copy(sealed, copy_dir):
    """The owner rewrites sealed events, deletes all digests and resets every mark; the copy remains."""
    rewrite_consistently(sealed, 3)
    with attacker() as cursor:
        cursor.execute("DELETE FROM audit_auditdigestcopy")
        cursor.execute("DELETE FROM audit_auditdigest")
        cursor.execute("UPDATE audit_agentsession SET sealed_seq = 0")
    assert verify()[0] == 0  # received_at is recent: only the external copy can tell
    code, out = verify("--against-dir", str(copy_dir))
    assert code == 1
    assert "DIGEST_REMOVED: digest #1" in out and "DIGEST_REMOVED: digest #2" in out
    assert f"ALTERED: digest #1 session {sealed} seq 4: does not match the head sealed in digest #1" in out
    assert f"ALTERED: digest #2 session {sealed} seq 8" in out


def test_a_digest_altered_in_the_database_is_reported(sealed, copy_dir):
    digest = AuditDigest.objects.get(number=2)
    with attacker() as cursor:
        cursor.execute(
            "UPDATE audit_auditdigest SET heads = %s WHERE id = %s",
            [json.dumps([{"session": sealed, "seq": 8, "hash": "0" * 64}]), digest.pk],
        )
    code, out = verify("--against-dir", str(copy_dir))
    assert code == 1 and "DIGEST_ALTERED: digest #2: differs from the copy" in out and "(heads)" in out


def test_against_dir_needs_a_directory(sealed, tmp_path):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="is not a directory"):
        call_command("verify_audit", "--against-dir", str(tmp_path / "missing"))


# --- syslog, received by a real rsyslogd ------------------------------------------------------------

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"


@pytest.fixture
def rsyslog(tmp_path):
    """rsyslogd (Debian's package) on a free loopback TCP port, writing every message to a file."""
    if not Path(RSYSLOGD).exists():
        pytest.fail("rsyslogd is missing: apt-get install rsyslog")
    work = tmp_path / "rsyslog"
    work.mkdir()
    port = free_port()
    log = work / "digests.log"
    conf = work / "rsyslog.conf"
    conf.write_text(
        f'global(workDirectory="{work}" maxMessageSize="1m")\n'
        'module(load="imtcp")\n'
        f'input(type="imtcp" address="127.0.0.1" port="{port}")\n'
        'template(name="line" type="string" string="%TIMESTAMP:::date-rfc3339% %HOSTNAME% '
        '%APP-NAME% %PROCID% %MSGID% %msg%\\n")\n'
        f'*.* action(type="omfile" file="{log}" template="line")\n'
    )
    proc = subprocess.Popen(
        [RSYSLOGD, "-n", "-f", str(conf), "-i", str(work / "rsyslogd.pid")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"rsyslogd exited: {proc.stdout.read().decode()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    yield port, log
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _wait_for_lines(log: Path, count: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if log.exists() and log.read_text().count(" audit-digest ") >= count:
            return
        time.sleep(0.1)
    pytest.fail(f"rsyslog wrote {log.read_text() if log.exists() else 'nothing'}")


def test_digests_reach_rsyslog_and_verify_checks_against_its_file(
    gateway, rsyslog, settings, django_capture_on_commit_callbacks
):
    port, log = rsyslog
    sink = f"syslog+tcp://127.0.0.1:{port}"
    settings.MCPGOV_DIGEST_SINKS = [sink]
    sid = open_session(gateway)
    post_events(gateway, sid, events(1, 4))
    with django_capture_on_commit_callbacks(execute=True):
        seal_audit_chains()
    post_events(gateway, sid, events(5, 6))
    with django_capture_on_commit_callbacks(execute=True):
        seal_audit_chains()
    _wait_for_lines(log, 2)
    assert AuditDigestCopy.objects.filter(sink=sink).count() == 2
    line = log.read_text().splitlines()[0]
    assert " mcpgov " in line and " audit-digest " in line  # RFC 5424 APP-NAME and MSGID parsed
    code, out = verify("--against-syslog", str(log))
    assert code == 0, out

    with attacker() as cursor:
        cursor.execute("DELETE FROM audit_auditdigestcopy")
        cursor.execute("DELETE FROM audit_auditdigest WHERE number = 2")
        cursor.execute("UPDATE audit_agentsession SET sealed_seq = 4 WHERE id = %s", [_uuid_param(sid)])
    code, out = verify("--against-syslog", str(log))
    assert (
        code == 1 and f"DIGEST_REMOVED: digest #2: in the syslog copy {log} but not in the database." in out
    )
