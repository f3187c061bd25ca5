"""The key history's chain format: what each row of `SigningKeyEvent` hashes (docs/audit.md).

    hash = sha256_hex( prev_hash_hex + canonical_json(row) )      (prev of seq 1 = 64 zeros)

Pure functions, shared by the signing service, its migration and `verify_audit`. The format
is pinned by operators (the head hash), so it never changes.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from mcpgov.bundle import canonical_json

KEY_EVENT_SCHEMA = "mcpgov.key-event/1"
GENESIS_HASH = "0" * 64


def format_at(value: datetime) -> str:
    """RFC 3339 UTC with exactly six fractional digits, as audit timestamps are written."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond:06d}Z"


def key_event_hash(
    *,
    prev_hash: str,
    seq: int,
    team_id: int,
    team_slug: str,
    kid: str,
    public_key: str,
    event: str,
    at: datetime,
) -> str:
    row = {
        "schema": KEY_EVENT_SCHEMA,
        "seq": seq,
        "team_id": team_id,
        "team": team_slug,
        "kid": kid,
        "x": public_key,
        "event": event,
        "at": format_at(at),
    }
    return hashlib.sha256(prev_hash.encode("ascii") + canonical_json(row)).hexdigest()


def stored_key_event_hash(row) -> str:
    """The hash a stored SigningKeyEvent row (or anything with its attributes) should carry."""
    return key_event_hash(
        prev_hash=row.prev_hash,
        seq=row.seq,
        team_id=row.team_id,
        team_slug=row.team_slug,
        kid=row.kid,
        public_key=row.public_key,
        event=row.event,
        at=row.at,
    )
