"""Write-once copies of audit digests outside the database, and checking the database against them.

Sinks come from `MCPGOV_DIGEST_SINKS` (comma-separated):

- `dir:/path` — one file per digest, `<path>/<team>/<number, 8 digits>.json`, created exclusively
  (a temporary file opened with O_EXCL, then hard-linked into place, which fails if the name
  exists) and never rewritten; read-only mode 0444.
- `syslog+tcp://host:port` — RFC 5424 messages, octet-counted framing (RFC 6587), one per digest.
- `syslog+udp://host:port` — the same message in one datagram (no delivery guarantee: prefer TCP).

A copy is recorded as an `AuditDigestCopy` row once the sink accepted it; digests without one are
written again at every sealing run, so a sink that is down loses nothing. The copy is the digest's
canonical record (`digest_record`): its payload, digest_hash, kid and signature.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import ssl
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.utils import timezone

from audit.models import AuditDigest, AuditDigestCopy
from mcpgov.bundle import canonical_json

logger = logging.getLogger(__name__)

RECORD_SCHEMA = "mcpgov.audit-digest-copy/1"
SYSLOG_MSGID = "audit-digest"
SYSLOG_APP = "mcpgov"
# Facility local0 (16), severity notice (5).
SYSLOG_PRI = 16 * 8 + 5


class SinkError(Exception):
    """A sink refused or could not take a copy (the digest stays pending for that sink)."""


def digest_record(digest: AuditDigest, team_slug: str) -> dict[str, Any]:
    """What every sink stores for one digest (the payload is what the signature covers)."""
    from audit.services.digests import digest_payload

    return {
        "schema": RECORD_SCHEMA,
        "digest": digest_payload(digest, team_slug),
        "digest_hash": digest.digest_hash,
        "kid": digest.kid,
        "signature": digest.signature,
    }


def record_bytes(record: dict[str, Any]) -> bytes:
    return canonical_json(record)


@dataclass(frozen=True)
class DirectorySink:
    name: str
    path: Path

    def write(self, record: dict[str, Any]) -> None:
        data = record_bytes(record)
        team = record["digest"]["team"]
        number = int(record["digest"]["number"])
        folder = self.path / team
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"{number:08d}.json"
        if final.exists():
            self._check_existing(final, data)
            return
        tmp = folder / f".{number:08d}.{uuid.uuid4().hex}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(tmp, final)  # atomic and exclusive: never replaces an existing copy
            except FileExistsError:
                self._check_existing(final, data)
        finally:
            tmp.unlink(missing_ok=True)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @staticmethod
    def _check_existing(final: Path, data: bytes) -> None:
        if final.read_bytes() != data:
            raise SinkError(f"{final} already holds a different digest; it is never rewritten.")


def syslog_message(body: bytes, *, msgid: str, pri: int = SYSLOG_PRI, ts: datetime | None = None) -> bytes:
    """One RFC 5424 message: <PRI>1 TIMESTAMP HOST APP PROCID MSGID - MSG (no structured data)."""
    stamp = (
        (ts or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    )
    hostname = (socket.gethostname() or "-").split(".")[0][:255] or "-"
    header = f"<{pri}>1 {stamp} {hostname} {SYSLOG_APP} {os.getpid()} {msgid} - "
    return header.encode("ascii") + body


def octet_frame(message: bytes) -> bytes:
    """RFC 6587 octet counting: "<length> <message>", so a message may hold newlines."""
    return str(len(message)).encode("ascii") + b" " + message


def syslog_tcp_send(
    host: str,
    port: int,
    data: bytes,
    *,
    address: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 5.0,
) -> None:
    """Send framed messages over one TCP (or TLS) connection and wait until the server has read them.

    Connects to `address` when given (an address already checked), else to `host`; TLS verifies
    `host`. Plain syslog has no acknowledgement; the strongest signal is the server closing the
    connection after our end of stream (it read every byte). Raises OSError (ssl.SSLError too).
    """
    with socket.create_connection((address or host, port), timeout=timeout) as raw:
        sock = ssl_context.wrap_socket(raw, server_hostname=host) if ssl_context is not None else raw
        sock.settimeout(timeout)
        sock.sendall(data)
        if ssl_context is not None:
            try:
                sock = sock.unwrap()  # close_notify: the server reads up to it, then closes
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError):
                return  # the server closed after our close_notify: it read the stream
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(4096):
            pass


@dataclass(frozen=True)
class SyslogSink:
    name: str
    host: str
    port: int
    transport: str  # tcp | udp

    def message(self, record: dict[str, Any]) -> bytes:
        """One RFC 5424 message whose MSG is the record's canonical JSON."""
        return syslog_message(record_bytes(record), msgid=SYSLOG_MSGID)

    def write(self, record: dict[str, Any]) -> None:
        msg = self.message(record)
        try:
            if self.transport == "udp":
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                    sock.sendto(msg, (self.host, self.port))
                return
            syslog_tcp_send(self.host, self.port, octet_frame(msg))
        except OSError as exc:
            raise SinkError(f"{self.name}: {exc}") from exc


def parse_sink(spec: str) -> DirectorySink | SyslogSink:
    if spec.startswith("dir:"):
        path = spec[len("dir:") :]
        if not path:
            raise ValueError("dir: sink needs a path")
        return DirectorySink(name=spec, path=Path(path))
    parts = urlsplit(spec)
    if parts.scheme in ("syslog+tcp", "syslog+udp") and parts.hostname and parts.port:
        return SyslogSink(name=spec, host=parts.hostname, port=parts.port, transport=parts.scheme[7:])
    raise ValueError(
        f"Unknown digest sink {spec!r} (dir:/path, syslog+tcp://host:port, syslog+udp://host:port)."
    )


def configured_sinks() -> list[DirectorySink | SyslogSink]:
    return [parse_sink(spec) for spec in getattr(settings, "MCPGOV_DIGEST_SINKS", [])]


def digest_copies_write(*, limit: int = 1000) -> dict[str, int]:
    """Write every digest a configured sink lacks, oldest first. Never raises for a sink failure.

    Returns {sink: copies written}. A failing sink is logged and left for the next run (it keeps
    its order: later digests wait for the earlier one). Safe to run twice and concurrently.
    """
    written: dict[str, int] = {}
    for sink in configured_sinks():
        written[sink.name] = 0
        pending = (
            AuditDigest.objects.exclude(copies__sink=sink.name).select_related("team").order_by("id")[:limit]
        )
        for digest in pending:
            try:
                sink.write(digest_record(digest, digest.team.slug))
            except (SinkError, OSError) as exc:
                logger.warning("Digest %s not copied to %s yet (will retry): %s", digest, sink.name, exc)
                break
            AuditDigestCopy.objects.bulk_create(
                [AuditDigestCopy(digest=digest, sink=sink.name, written_at=timezone.now())],
                ignore_conflicts=True,
            )
            written[sink.name] += 1
    return written


def load_directory_copy(path: Path) -> dict[str, dict[int, dict[str, Any]]]:
    """{team slug: {number: record}} from a directory sink. Unreadable files raise ValueError."""
    copies: dict[str, dict[int, dict[str, Any]]] = {}
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"{root} is not a directory.")
    for team_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for file in sorted(team_dir.glob("*.json")):
            try:
                record = json.loads(file.read_bytes())
                number = int(record["digest"]["number"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{file}: not a digest copy ({exc}).") from exc
            copies.setdefault(team_dir.name, {})[number] = record
    return copies


def load_syslog_copy(path: Path) -> dict[str, dict[int, dict[str, Any]]]:
    """{team slug: {number: record}} from a syslog file: each line's JSON after the MSGID field."""
    copies: dict[str, dict[int, dict[str, Any]]] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        at = line.find(f" {SYSLOG_MSGID} ")
        start = line.find("{", at) if at >= 0 else -1
        if start < 0:
            continue
        try:
            record = json.loads(line[start:])
            copies.setdefault(record["digest"]["team"], {})[int(record["digest"]["number"])] = record
        except (ValueError, KeyError, TypeError):
            continue
    return copies


__all__ = [
    "DirectorySink",
    "SinkError",
    "SyslogSink",
    "configured_sinks",
    "digest_copies_write",
    "digest_record",
    "load_directory_copy",
    "load_syslog_copy",
    "octet_frame",
    "parse_sink",
    "syslog_message",
    "syslog_tcp_send",
]
