"""SIEM sinks against real receivers: rsyslogd (imtcp, octet-counted framing) and an HTTP server.

Every event is delivered once and in order; a receiver that is down builds a backlog that drains
when it returns; the cursor survives a restart of the delivery (another process continues).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from audit.models import AuditSink
from audit.services.streaming import sink_backlog, sink_backlogs, sink_create, sink_deliver, sink_test_send
from audit.tasks import deliver_audit_sinks
from tests.audit.conftest import events, open_session, post_events
from tests.conftest import ROOT, _database_url, free_port

pytestmark = pytest.mark.django_db(transaction=True)

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"


@pytest.fixture(autouse=True)
def loopback_allowed(settings):
    settings.MCPGOV_SINK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    settings.MCPGOV_SINK_BACKOFF_SECONDS = 0.2
    settings.MCPGOV_SINK_BACKOFF_MAX_SECONDS = 1.0
    settings.MCPGOV_SINK_TIMEOUT_SECONDS = 5


# --- receivers --------------------------------------------------------------------------------------


class Rsyslog:
    """rsyslogd on a loopback port, writing MSGID and MSG of every message to a file; restartable."""

    def __init__(self, work: Path):
        self.work = work
        self.port = free_port()
        self.log = work / "events.log"
        self.conf = work / "rsyslog.conf"
        self.conf.write_text(
            f'global(workDirectory="{work}" maxMessageSize="1m")\n'
            'module(load="imtcp")\n'
            f'input(type="imtcp" address="127.0.0.1" port="{self.port}")\n'
            'template(name="line" type="string" string="%APP-NAME% %MSGID% %msg%\\n")\n'
            f'*.* action(type="omfile" file="{self.log}" template="line")\n'
        )
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(self.conf), "-i", str(self.work / "rsyslogd.pid")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        import socket

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"rsyslogd exited: {self.proc.stdout.read().decode()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        pytest.fail("rsyslogd did not listen")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None

    def records(self) -> list[dict]:
        if not self.log.exists():
            return []
        out = []
        for line in self.log.read_text(encoding="utf-8").splitlines():
            app, msgid, msg = line.split(" ", 2)
            assert (app, msgid) == ("mcpgov", "audit-event"), line  # RFC 5424 header fields parsed
            out.append(json.loads(msg[msg.index("{") :]))
        return out


@pytest.fixture
def rsyslog(tmp_path):
    if not Path(RSYSLOGD).exists():
        pytest.fail("rsyslogd is missing: apt-get install rsyslog")
    work = tmp_path / "rsyslog"
    work.mkdir()
    server = Rsyslog(work)
    server.start()
    yield server
    server.stop()


class Receiver:
    """A real HTTP server in a thread: stores each POST (headers and body); restartable on its port."""

    def __init__(self):
        self.port = free_port()
        self.posts: list[tuple[dict, bytes]] = []
        self.status = 200
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.status == 200:
                    receiver.posts.append((dict(self.headers), body))
                answer = b'{"text":"Success","code":0}'
                self.send_response(receiver.status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/services/collector/event"


@pytest.fixture
def receiver():
    r = Receiver()
    r.start()
    yield r
    r.stop()


def webhook_records(receiver: Receiver) -> list[dict]:
    return [record for _, body in receiver.posts for record in json.loads(body)]


def hec_records(receiver: Receiver) -> list[dict]:
    out = []
    for _, body in receiver.posts:
        for line in body.decode().splitlines():
            envelope = json.loads(line)
            assert set(envelope) == {"time", "host", "source", "sourcetype", "event"}
            out.append(envelope["event"])
    return out


def seqs(records: list[dict], key=lambda r: (r["session"], r["seq"])) -> list:
    return [key(r) for r in records]


def backlog(sink: AuditSink):
    sink.refresh_from_db()
    return sink_backlog(sink)


def drain(sink: AuditSink, *, until, timeout: float = 60) -> None:
    """Run the beat task until `until()` holds (the delivery runs inline: eager Celery)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deliver_audit_sinks()
        if until():
            return
        time.sleep(0.2)
    sink.refresh_from_db()
    pytest.fail(f"not delivered in time; last error: {sink.last_error!r}")


# --- tests ------------------------------------------------------------------------------------------


def test_syslog_sink_delivers_every_event_once_in_order_through_rsyslog(gateway, team, admin, rsyslog):
    sink = sink_create(
        team=team, actor=admin, name="siem", kind="syslog", host="127.0.0.1", port=rsyslog.port
    )
    first, second = open_session(gateway), open_session(gateway)
    assert post_events(gateway, first, events(1, 6)).status_code == 200
    assert post_events(gateway, second, events(1, 4)).status_code == 200
    assert post_events(gateway, first, events(7, 8)).status_code == 200
    drain(sink, until=lambda: len(rsyslog.records()) >= 12)
    got = seqs(rsyslog.records())
    expected = (
        [(first, s) for s in range(1, 7)] + [(second, s) for s in range(1, 5)] + [(first, 7), (first, 8)]
    )
    assert got == expected
    assert backlog(sink).events == 0
    record = rsyslog.records()[1]
    assert record["event_id"] == f"{first}:2" and record["team"] == "acme" and record["role"] == "code_agent"
    assert "arguments" not in record and "result" not in record  # payloads never leave through a sink


@pytest.mark.slow
def test_syslog_down_for_30_seconds_loses_nothing_and_the_backlog_drains(gateway, team, admin, rsyslog):
    sink = sink_create(
        team=team, actor=admin, name="siem", kind="syslog", host="127.0.0.1", port=rsyslog.port
    )
    sid = open_session(gateway)
    post_events(gateway, sid, events(1, 10))
    drain(sink, until=lambda: len(rsyslog.records()) >= 10)
    rsyslog.stop()
    down_until = time.monotonic() + 30
    seq = 10
    while time.monotonic() < down_until:  # the gateway keeps shipping while the SIEM is down
        assert post_events(gateway, sid, events(seq + 1, seq + 10)).status_code == 200
        seq += 10
        deliver_audit_sinks()
        time.sleep(3)
    sink.refresh_from_db()
    pending = backlog(sink)
    assert pending.events == seq - 10 and pending.oldest_age_seconds >= 25
    assert sink.failures >= 1 and sink.last_error
    rsyslog.start()
    drain(sink, until=lambda: len(rsyslog.records()) >= seq)
    assert seqs(rsyslog.records()) == [(sid, s) for s in range(1, seq + 1)]
    sink.refresh_from_db()
    assert backlog(sink).events == 0 and sink.failures == 0 and sink.delivered_count == seq


def test_webhook_batches_are_json_arrays_with_the_secret_header(gateway, team, admin, receiver):
    sink = sink_create(
        team=team,
        actor=admin,
        name="hook",
        kind="webhook",
        url=receiver.url,
        secret="s3cret-value",
        secret_header="X-Siem-Token",
    )
    assert "s3cret-value" not in sink.secret_encrypted
    sid = open_session(gateway)
    post_events(gateway, sid, events(1, 6))
    drain(sink, until=lambda: len(webhook_records(receiver)) >= 6)
    assert seqs(webhook_records(receiver)) == [(sid, s) for s in range(1, 7)]
    headers, _ = receiver.posts[0]
    assert headers["X-Siem-Token"] == "s3cret-value"
    assert headers["Content-Type"] == "application/json"
    cursor = (backlog(sink), sink.cursor_id)
    assert sink_test_send(sink=sink, actor=admin) == ""  # the page's and the API's test-send
    assert webhook_records(receiver)[-1]["tool"] == "test_send"
    assert (backlog(sink), sink.cursor_id) == cursor  # a test event moves no cursor


@pytest.mark.slow
def test_hec_mode_with_ocsf_and_the_receiver_down_for_30_seconds(gateway, team, admin, receiver):
    sink = sink_create(
        team=team,
        actor=admin,
        name="splunk",
        kind="webhook",
        url=receiver.url,
        hec=True,
        format="ocsf",
        secret="hec-token-1",
    )
    sid = open_session(gateway)
    post_events(gateway, sid, events(1, 4))
    drain(sink, until=lambda: len(hec_records(receiver)) >= 4)
    receiver.stop()
    down_until = time.monotonic() + 30
    seq = 4
    while time.monotonic() < down_until:
        post_events(gateway, sid, events(seq + 1, seq + 4))
        seq += 4
        deliver_audit_sinks()
        time.sleep(3)
    assert backlog(sink).events == seq - 4
    receiver.start()
    drain(sink, until=lambda: len(hec_records(receiver)) >= seq)
    records = hec_records(receiver)
    assert [r["metadata"]["uid"] for r in records] == [f"{sid}:{s}" for s in range(1, seq + 1)]
    assert all(headers["Authorization"] == "Splunk hec-token-1" for headers, _ in receiver.posts)
    intent, result = records[0], records[1]
    assert intent["class_uid"] == 6003 and intent["type_uid"] == 600399 and intent["category_uid"] == 6
    assert intent["api"]["operation"] == "create_pr" and intent["api"]["service"]["name"] == "github_api"
    assert intent["status_id"] == 0 and result["status_id"] == 1 and result["status"] == "Success"
    assert result["actor"]["user"]["name"] == "test" and result["actor"]["app_name"] == "gw-dev"
    assert result["actor"]["authorizations"] == [{"policy": {"name": "code_agent"}}]
    assert result["unmapped"]["hash"] and result["time"] > 0 and result["duration"] == 34


def test_a_refusing_receiver_keeps_the_cursor(gateway, team, admin, receiver, settings):
    settings.MCPGOV_SINK_BACKOFF_SECONDS = 600  # no retry during the checks, however loaded the machine
    sink = sink_create(team=team, actor=admin, name="hook", kind="webhook", url=receiver.url)
    receiver.status = 503
    sid = open_session(gateway)
    assert post_events(gateway, sid, events(1, 4)).status_code == 200  # the ingestion is not held up
    sink.refresh_from_db()
    assert sink.failures == 1 and "503" in sink.last_error and sink.next_attempt_at is not None
    assert backlog(sink).events == 4 and receiver.posts == []
    assert [(s.name, b.events) for s, b in sink_backlogs(team=team)] == [
        ("hook", 4)
    ]  # the metrics gauge's source
    assert sink_deliver(sink_id=sink.pk).outcome == "backing_off"
    receiver.status = 200
    AuditSink.objects.filter(pk=sink.pk).update(next_attempt_at=None)  # the backoff has passed
    drain(sink, until=lambda: len(webhook_records(receiver)) >= 4)
    assert seqs(webhook_records(receiver)) == [(sid, s) for s in range(1, 5)]
    sink.refresh_from_db()
    assert sink.failures == 0 and sink.delivered_count == 4


DELIVER_ONCE = """
import django, sys
django.setup()
from audit.services.streaming import sink_deliver
print(sink_deliver(sink_id=int(sys.argv[1]), max_batches=1).delivered)
"""


@pytest.fixture
def live_env():
    return {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_DEBUG": "1",
        "CELERY_BROKER_URL": "",
    }


def test_the_cursor_survives_a_restart_of_the_delivery(gateway, team, admin, receiver, settings, live_env):
    """Another process delivers one batch and exits; this one continues where it stopped."""
    sid = open_session(gateway)
    post_events(gateway, sid, events(1, 12))
    sink = sink_create(team=team, actor=admin, name="hook", kind="webhook", url=receiver.url, from_start=True)
    env = {**live_env, "MCPGOV_SINK_BATCH_SIZE": "5", "MCPGOV_SINK_ALLOWED_NETWORKS": "127.0.0.0/8"}
    out = subprocess.run(
        [sys.executable, "-c", DELIVER_ONCE, str(sink.pk)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "5"
    assert backlog(sink).events == 7
    drain(sink, until=lambda: len(webhook_records(receiver)) >= 12)
    assert seqs(webhook_records(receiver)) == [(sid, s) for s in range(1, 13)]


def test_two_deliveries_at_once_send_each_event_once(gateway, team, admin, receiver, settings):
    settings.MCPGOV_SINK_BATCH_SIZE = 3
    sid = open_session(gateway)
    post_events(gateway, sid, events(1, 30))
    sink = sink_create(team=team, actor=admin, name="hook", kind="webhook", url=receiver.url, from_start=True)
    from django.db import connection

    def run():
        try:
            sink_deliver(sink_id=sink.pk, max_batches=20)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    drain(sink, until=lambda: len(webhook_records(receiver)) >= 30)
    assert seqs(webhook_records(receiver)) == [(sid, s) for s in range(1, 31)]


def test_ingestion_kicks_the_delivery_on_commit(gateway, team, admin, receiver):
    """Without beat (eager Celery, `make run`) the ingestion request itself delivers, one batch."""
    sink_create(team=team, actor=admin, name="hook", kind="webhook", url=receiver.url)
    sid = open_session(gateway)
    assert post_events(gateway, sid, events(1, 4)).status_code == 200
    assert seqs(webhook_records(receiver)) == [(sid, s) for s in range(1, 5)]


def test_a_new_sink_starts_after_the_stored_events_unless_asked(gateway, team, admin, receiver):
    sid = open_session(gateway)
    post_events(gateway, sid, events(1, 4))
    fresh = sink_create(team=team, actor=admin, name="new", kind="webhook", url=receiver.url)
    full = sink_create(team=team, actor=admin, name="all", kind="webhook", url=receiver.url, from_start=True)
    assert backlog(fresh).events == 0 and backlog(full).events == 4
    post_events(gateway, sid, events(5, 6))
    assert backlog(fresh).events == 0  # delivered on commit
    assert seqs(webhook_records(receiver)).count((sid, 5)) == 2  # both sinks got seq 5


def test_a_sink_never_reaches_loopback_unless_the_operator_allows_it(
    gateway, team, admin, receiver, settings
):
    settings.MCPGOV_SINK_ALLOWED_NETWORKS = []
    sink = sink_create(team=team, actor=admin, name="hook", kind="webhook", url=receiver.url, from_start=True)
    sid = open_session(gateway)
    post_events(gateway, sid, events(1, 2))  # its delivery after the commit is refused
    sink.refresh_from_db()
    assert sink.failures == 1 and "a loopback address" in sink.last_error
    assert receiver.posts == []
    assert backlog(sink).events == 2


# --- syslog over TLS: rsyslog's gtls driver with a test CA ------------------------------------------

GTLS = Path("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so")


def make_ca_and_server_cert(folder: Path) -> tuple[Path, Path, Path]:
    """A test CA (cryptography) and a server certificate for 127.0.0.1 signed by it."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mcpgov test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return ca_file, cert_file, key_file


def test_syslog_over_tls_through_rsyslog_gtls(gateway, team, admin, tmp_path):
    if not GTLS.exists():
        pytest.fail("rsyslog's TLS driver is missing: apt-get install rsyslog-gnutls (make system-deps)")
    work = tmp_path / "rsyslog-tls"
    work.mkdir()
    ca_file, cert_file, key_file = make_ca_and_server_cert(work)
    server = Rsyslog(work)
    server.conf.write_text(
        f'global(workDirectory="{work}" maxMessageSize="1m" DefaultNetstreamDriver="gtls" '
        f'DefaultNetstreamDriverCAFile="{ca_file}" DefaultNetstreamDriverCertFile="{cert_file}" '
        f'DefaultNetstreamDriverKeyFile="{key_file}")\n'
        'module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")\n'
        f'input(type="imtcp" address="127.0.0.1" port="{server.port}")\n'
        'template(name="line" type="string" string="%APP-NAME% %MSGID% %msg%\\n")\n'
        f'*.* action(type="omfile" file="{server.log}" template="line")\n'
    )
    server.start()
    try:
        untrusted = sink_create(
            team=team, actor=admin, name="no-ca", kind="syslog", host="127.0.0.1", port=server.port, tls=True
        )
        sink = sink_create(
            team=team,
            actor=admin,
            name="tls",
            kind="syslog",
            host="127.0.0.1",
            port=server.port,
            tls=True,
            ca_file=str(ca_file),
            format="ocsf",
        )
        sid = open_session(gateway)
        post_events(gateway, sid, events(1, 6))
        drain(sink, until=lambda: len(server.records()) >= 6)
        assert [r["metadata"]["uid"] for r in server.records()] == [f"{sid}:{s}" for s in range(1, 7)]
        untrusted.refresh_from_db()
        assert untrusted.failures >= 1 and "CERTIFICATE_VERIFY_FAILED" in untrusted.last_error
        assert backlog(untrusted).events == 6  # a certificate the sink does not trust gets nothing
    finally:
        server.stop()
