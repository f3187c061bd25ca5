"""Sealing audit chains into signed digests, and verifying chains and digests (`verify_audit`).

A digest (like a CloudTrail digest file) lists, for every session of a team with events newer
than the team's previous digest, the chain head (seq, hash) and the previous digest's hash, so
digests form their own chain. Its canonical payload is signed with the team's active Ed25519
signing key (governance.services.signing), and verified only with a key the verified key
history shows as published for that team when the digest was made. See docs/audit.md.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from audit.choices import GENESIS_HASH
from audit.hashing import chain_hash, format_ts, stored_event_canonical
from audit.models import AgentSession, AuditDigest, AuditEvent
from governance.services.signing import KeyHistory, active_signer, key_history_verify, public_key_of
from mcpgov.bundle import canonical_json
from mcpgov.verify import b64url_decode, b64url_encode
from portal.choices import ChangeEventType
from portal.models import Team
from portal.services import change_record

DIGEST_SCHEMA = "mcpgov.audit-digest/1"


def digest_payload(digest: AuditDigest, team_slug: str) -> dict[str, Any]:
    return {
        "schema": DIGEST_SCHEMA,
        "team": team_slug,
        "number": digest.number,
        "created_at": format_ts(digest.created_at),
        "prev_digest_hash": digest.prev_digest_hash,
        "heads": digest.heads,
    }


def digest_bytes(digest: AuditDigest, team_slug: str) -> bytes:
    return canonical_json(digest_payload(digest, team_slug))


def audit_chains_seal(*, team: Team) -> AuditDigest | None:
    """Seal the heads of `team`'s sessions that grew since its last digest. None when nothing grew.

    Safe to run twice (a second run finds nothing new) and concurrently (the team row is locked).
    """
    with transaction.atomic():
        Team.objects.select_for_update().filter(pk=team.pk).first()
        sessions = list(
            AgentSession.objects.select_for_update()
            .filter(team=team, last_seq__gt=F("sealed_seq"))
            .order_by("id")
            .values_list("id", "last_seq")
        )
        if not sessions:
            return None
        heads = []
        for session_id, last_seq in sessions:
            event_hash = (
                AuditEvent.objects.filter(session_id=session_id, seq=last_seq)
                .values_list("hash", flat=True)
                .first()
            )
            if event_hash is None:  # the head row is gone: verify_audit will say so; seal what is there
                continue
            heads.append({"session": str(session_id), "seq": last_seq, "hash": event_hash})
        if not heads:
            return None
        previous = AuditDigest.objects.filter(team=team).order_by("-number").first()
        signer = active_signer(team=team)
        digest = AuditDigest(
            team=team,
            number=(previous.number + 1) if previous else 1,
            created_at=timezone.now(),
            heads=heads,
            prev_digest_hash=previous.digest_hash if previous else GENESIS_HASH,
            kid=signer.kid,
        )
        payload = digest_bytes(digest, team.slug)
        digest.digest_hash = hashlib.sha256(payload).hexdigest()
        # A detached Ed25519 signature over the canonical payload (the bundle JWS format is for bundles).
        digest.signature = b64url_encode(signer.sign_detached(payload))
        digest.save()
        for head in heads:
            AgentSession.objects.filter(pk=head["session"]).update(sealed_seq=head["seq"])
        change_record(
            team=team,
            actor=None,
            actor_label="seal_audit_chains",
            event_type=ChangeEventType.DIGEST_SEALED,
            obj=digest,
            summary=f"Audit digest #{digest.number} sealed {len(heads)} session chain(s)",
        )
        transaction.on_commit(_copy_digests_after_commit)
    return digest


def _copy_digests_after_commit() -> None:
    """Write the new digest to the external sinks (audit.services.sinks); failures are retried later."""
    from audit.services.sinks import configured_sinks
    from audit.tasks import copy_digests

    if configured_sinks():
        copy_digests.delay()


# --- verification ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    kind: str  # altered | removed | inserted | renumbered | digest_altered | digest_removed | digest_inserted | ...
    message: str
    session: str = ""
    seq: int | None = None
    digest: int | None = None
    key_event: int | None = None  # a row of the signing-key history

    def __str__(self) -> str:
        where = [f"key history row #{self.key_event}"] if self.key_event is not None else []
        if self.digest is not None:
            where.append(f"digest #{self.digest}")
        if self.session:
            where.append(f"session {self.session}")
        if self.seq is not None:
            where.append(f"seq {self.seq}")
        return (
            f"{self.kind.upper()}: {' '.join(where)}: {self.message}"
            if where
            else f"{self.kind.upper()}: {self.message}"
        )


def _hash_with_seq(event, seq: int) -> str:
    return chain_hash(event.prev_hash, stored_event_canonical(event, seq=seq))


def verify_session_chain(session: AgentSession) -> list[Problem]:
    """Recompute one session's chain; name every event altered, removed, inserted or renumbered."""
    sid = str(session.pk)
    problems: list[Problem] = []
    hashes: list[str] = [GENESIS_HASH]  # stored hashes in stored order, genesis first
    prev_original = 0
    shift = 0  # stored seq minus original seq, as learnt from renumbered events
    last = None
    for event in (
        AuditEvent.objects.filter(session_id=session.pk).order_by("seq", "id").iterator(chunk_size=2000)
    ):
        content_ok = chain_hash(event.prev_hash, stored_event_canonical(event)) == event.hash
        original_seq = event.seq
        if not content_ok:
            for candidate in dict.fromkeys((event.seq - shift, event.seq - 1, event.seq + 1)):
                if (
                    candidate >= 1
                    and candidate != event.seq
                    and _hash_with_seq(event, candidate) == event.hash
                ):
                    original_seq = candidate
                    break
            if original_seq != event.seq:
                shift = event.seq - original_seq
                problems.append(
                    Problem(
                        "renumbered",
                        f"stored as seq {event.seq}, chained as seq {original_seq}.",
                        sid,
                        event.seq,
                    )
                )
            else:
                problems.append(
                    Problem("altered", "its stored fields do not match its hash.", sid, event.seq)
                )
        linked = event.prev_hash == hashes[-1]
        if not linked:
            if len(hashes) >= 2 and event.prev_hash == hashes[-2] and last is not None:
                problems.append(
                    Problem("inserted", "the next event chains past it to its predecessor.", sid, last.seq)
                )
            elif event.prev_hash not in hashes:
                expected_original = prev_original + 1
                if original_seq > expected_original:
                    missing = range(expected_original, original_seq)
                    label = f"seq {missing[0]}" if len(missing) == 1 else f"seqs {missing[0]}..{missing[-1]}"
                    problems.append(
                        Problem(
                            "removed",
                            f"{label} missing: this event chains to an event that is gone.",
                            sid,
                            missing[0],
                        )
                    )
                elif last is not None and content_ok:
                    problems.append(
                        Problem(
                            "altered",
                            "re-hashed: the next event's prev_hash no longer matches its hash.",
                            sid,
                            last.seq,
                        )
                    )
                else:
                    problems.append(
                        Problem("altered", "prev_hash does not match the previous event.", sid, event.seq)
                    )
        hashes.append(event.hash)
        prev_original = original_seq
        last = event
    head_seq = last.seq if last else 0
    if head_seq < session.last_seq:
        problems.append(
            Problem(
                "removed",
                f"the chain head is seq {session.last_seq} but events stop at {head_seq}.",
                sid,
                head_seq + 1,
            )
        )
    elif head_seq > session.last_seq:
        problems.append(
            Problem(
                "inserted",
                f"events after the recorded chain head (seq {session.last_seq}).",
                sid,
                session.last_seq + 1,
            )
        )
    elif last is not None and last.hash != session.last_hash:
        problems.append(
            Problem("altered", "the last event's hash differs from the recorded chain head.", sid, head_seq)
        )
    return problems


def digest_signature_problem(
    digest: AuditDigest, team: Team, payload: bytes, history: KeyHistory
) -> Problem | None:
    """None when `digest` is signed by a key of `team` that the key history shows published at the time.

    The public key comes from the (verified) history, not from the key table, so a key row
    inserted, re-dated or marked retired/published by someone with database access is not trusted.
    """
    window = history.windows.get((team.pk, digest.kid))
    if window is None:
        return Problem(
            "signature_untrusted",
            f"signed with key {digest.kid!r}, which the verified key history never published for team {team.slug}.",
            digest=digest.number,
        )
    if not window.published_at(digest.created_at):
        return Problem(
            "signature_untrusted",
            f"signed with key {digest.kid!r}, which was not published for team {team.slug} at "
            f"{format_ts(digest.created_at)} (published from {format_ts(window.created_at)}"
            + (f" to {format_ts(window.retired_at)}" if window.retired_at else "")
            + ").",
            digest=digest.number,
        )
    try:
        public_key_of(window.public_key).verify(b64url_decode(digest.signature), payload)
    except (InvalidSignature, ValueError):
        return Problem(
            "signature_invalid", f"signature does not verify with key {digest.kid!r}.", digest=digest.number
        )
    return None


def key_history_problems(history: KeyHistory) -> list[Problem]:
    return [Problem(p.kind, p.message, key_event=p.seq) for p in history.problems]


def verify_digests(team: Team, history: KeyHistory | None = None) -> list[Problem]:
    """Check a team's digest chain, each signature, and that every sealed head is still in place."""
    problems: list[Problem] = []
    history = history if history is not None else key_history_verify()
    expected_number = 1
    prev_hash = GENESIS_HASH
    sealed: dict[str, int] = {}
    for digest in AuditDigest.objects.filter(team=team).order_by("number"):
        if digest.number > expected_number:
            problems.append(
                Problem(
                    "digest_removed",
                    f"digest(s) #{expected_number}..#{digest.number - 1} missing.",
                    digest=expected_number,
                )
            )
        payload = digest_bytes(digest, team.slug)
        if hashlib.sha256(payload).hexdigest() != digest.digest_hash:
            problems.append(
                Problem("digest_altered", "its contents do not match its digest hash.", digest=digest.number)
            )
        if digest.prev_digest_hash != prev_hash:
            problems.append(
                Problem(
                    "digest_altered",
                    "prev_digest_hash does not match the digest before it: a digest was altered, inserted or removed.",
                    digest=digest.number,
                )
            )
        signature_problem = digest_signature_problem(digest, team, payload, history)
        if signature_problem is not None:
            problems.append(signature_problem)
        for head in digest.heads if isinstance(digest.heads, list) else []:
            session_id, seq, head_hash = head.get("session"), head.get("seq"), head.get("hash")
            stored = (
                AuditEvent.objects.filter(session_id=session_id, seq=seq)
                .values_list("hash", flat=True)
                .first()
            )
            if stored is None:
                problems.append(
                    Problem(
                        "removed",
                        f"sealed in digest #{digest.number} but no longer stored.",
                        session_id,
                        seq,
                        digest.number,
                    )
                )
            elif stored != head_hash:
                problems.append(
                    Problem(
                        "altered",
                        f"does not match the head sealed in digest #{digest.number}.",
                        session_id,
                        seq,
                        digest.number,
                    )
                )
            sealed[session_id] = max(sealed.get(session_id, 0), seq or 0)
        prev_hash = digest.digest_hash
        expected_number = max(expected_number, digest.number + 1)
    for session_id, sealed_seq in AgentSession.objects.filter(team=team, sealed_seq__gt=0).values_list(
        "id", "sealed_seq"
    ):
        if sealed.get(str(session_id), 0) < sealed_seq:
            problems.append(
                Problem(
                    "digest_removed",
                    f"the session was sealed up to seq {sealed_seq} but no digest holds that head.",
                    str(session_id),
                )
            )
    return problems


def audit_verify(
    *,
    team: Team | None = None,
    copies: dict[str, dict[str, dict[int, Any]]] | None = None,
    pinned_key_head: str | None = None,
) -> tuple[int, int, list[Problem]]:
    """(sessions checked, digests checked, problems) for one team or all teams.

    The key history is verified first (against `pinned_key_head` when given); digests are then
    checked only against the keys it describes. `copies` maps a source name (e.g. "the copy in
    /var/lib/mcpgov/digests") to that external copy's digests {team slug: {number: record}}
    (audit.services.sinks.load_*_copy).
    """
    from audit.services.sealing import verify_against_copy, verify_copies_written, verify_seal_coverage
    from audit.services.sinks import configured_sinks

    teams = [team] if team is not None else list(Team.objects.order_by("slug"))
    history = key_history_verify(pinned_head=pinned_key_head or None)
    problems: list[Problem] = key_history_problems(history)
    sessions = digests = 0
    sinks = [sink.name for sink in configured_sinks()]
    for t in teams:
        for session in AgentSession.objects.filter(team=t).order_by("started_at", "id").iterator():
            sessions += 1
            problems += verify_session_chain(session)
        digests += AuditDigest.objects.filter(team=t).count()
        problems += verify_digests(t, history)
        problems += verify_seal_coverage(t)
        problems += verify_copies_written(t, sinks)
        for source, copy in (copies or {}).items():
            problems += verify_against_copy(t, copy.get(t.slug, {}), source=source)
    if team is None:
        known = {t.slug for t in teams}
        for source, copy in (copies or {}).items():
            for slug in sorted(set(copy) - known):
                problems.append(
                    Problem(
                        "digest_removed", f"{source} holds digests of team {slug!r}, unknown to the database."
                    )
                )
    return sessions, digests, problems
