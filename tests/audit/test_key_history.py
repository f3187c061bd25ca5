"""Digests verify only against keys the hash-chained key history published for the team at the time.

The attacker has the database owner's rights (triggers lifted in SQL, as in test_verify.py): they
rewrite a sealed event, re-hash the chain, rebuild every digest and re-sign it with a key of their
own, which they add to the key table — and, in the stronger variants, to the key history too.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.db import DatabaseError, connection, transaction
from django.test import override_settings
from django.utils import timezone

from audit.hashing import chain_hash, stored_event_canonical
from audit.models import AgentSession, AuditDigest, AuditEvent
from audit.services.digests import audit_chains_seal, digest_bytes
from audit.tasks import seal_audit_chains
from governance.choices import SigningKeyEventType, SigningKeyStatus
from governance.keyhistory import stored_key_event_hash
from governance.models import SigningKey, SigningKeyEvent
from governance.services.signing import (
    _decrypt,
    jwks_document,
    key_history_head,
    signing_key_retire,
    signing_key_rotate,
)
from mcpgov.verify import b64url_encode, jwk_thumbprint
from tests.audit.conftest import events, open_session, post_events
from tests.audit.test_verify import attacker, verify

pytestmark = pytest.mark.django_db


@pytest.fixture
def sealed(gateway, team):
    """A session of 10 events in two digests, signed with the team's own key."""
    sid = open_session(gateway)
    post_events(gateway, sid, events(1, 6))
    seal_audit_chains()
    post_events(gateway, sid, events(7, 10))
    seal_audit_chains()
    assert AuditDigest.objects.filter(team=team).count() == 2
    return sid


def _attacker_key():
    private = Ed25519PrivateKey.generate()
    public = b64url_encode(
        private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return private, jwk_thumbprint(private.public_key()), public


def _insert_key_row(team, kid, public, status):
    with attacker() as cursor:
        cursor.execute(
            "INSERT INTO governance_signingkey (team_id, kid, public_key, private_key_encrypted, status, "
            "created_at, retired_at) VALUES (%s, %s, %s, '', %s, %s, %s)",
            [team.pk, kid, public, status, timezone.now() - timedelta(days=365), timezone.now()],
        )


def _append_history_row(team, kid, public, *, at):
    """What an attacker who knows the (keyless) chain format can append: a well-formed row."""
    last = SigningKeyEvent.objects.order_by("-seq").first()
    row = SigningKeyEvent(
        seq=last.seq + 1,
        team_id=team.pk,
        team_slug=team.slug,
        kid=kid,
        public_key=public,
        event=SigningKeyEventType.CREATED,
        at=at,
        prev_hash=last.hash,
    )
    row.hash = stored_key_event_hash(row)
    row.save(force_insert=True)


def _forge(sid, team, private, kid, *, created_at_shift: timedelta = timedelta(0)):
    """Rewrite sealed event 4, re-hash the chain, rebuild and re-sign every digest with `private`."""
    with attacker():
        prev = AuditEvent.objects.get(session_id=sid, seq=4).prev_hash
        for event in AuditEvent.objects.filter(session_id=sid, seq__gte=4).order_by("seq"):
            if event.seq == 4:
                event.result_summary = "nothing happened"
            event.prev_hash = prev
            event.hash = prev = chain_hash(prev, stored_event_canonical(event))
            event.save()
        AgentSession.objects.filter(pk=sid).update(last_hash=prev)
        prev_digest = "0" * 64
        for digest in AuditDigest.objects.filter(team=team).order_by("number"):
            digest.heads = [
                {**h, "hash": AuditEvent.objects.get(session_id=h["session"], seq=h["seq"]).hash}
                for h in digest.heads
            ]
            digest.created_at += created_at_shift
            digest.prev_digest_hash = prev_digest
            digest.kid = kid
            payload = digest_bytes(digest, team.slug)
            digest.digest_hash = prev_digest = hashlib.sha256(payload).hexdigest()
            digest.signature = b64url_encode(private.sign(payload))
            digest.save()


def test_intact_history_with_the_pinned_head_passes(sealed, team):
    head = key_history_head()
    assert head == SigningKeyEvent.objects.order_by("-seq").first().hash
    code, out = verify("--pinned-key-head", head)
    assert code == 0 and "all intact" in out
    with override_settings(MCPGOV_PINNED_KEY_HEAD=head):
        assert verify()[0] == 0


def test_digests_are_signed_with_the_teams_own_key(sealed, team, other_team):
    own = {k["kid"] for k in jwks_document(team=team)["keys"]}
    assert set(AuditDigest.objects.filter(team=team).values_list("kid", flat=True)) <= own
    signing_key_rotate(team=other_team)
    assert not own & {k["kid"] for k in jwks_document(team=other_team)["keys"]}


@pytest.mark.parametrize("status", [SigningKeyStatus.RETIRED, SigningKeyStatus.PUBLISHED])
def test_resigning_with_a_key_added_to_the_key_table_is_reported(sealed, team, status):
    private, kid, public = _attacker_key()
    _insert_key_row(team, kid, public, status)
    _forge(sealed, team, private, kid)
    code, out = verify()
    assert code == 1
    assert (
        f"SIGNATURE_UNTRUSTED: digest #1: signed with key '{kid}', which the verified key history never"
        in out
    )
    assert "SIGNATURE_UNTRUSTED: digest #2" in out
    assert (
        f"KEY_UNRECORDED: signing key {kid} (team id {team.pk}, {status}) is not in the key history." in out
    )
    # Nothing else gives it away: the chain and digests are consistent, only the key is foreign.
    assert "ALTERED" not in out and "DIGEST_" not in out


def test_a_key_appended_to_the_history_does_not_cover_earlier_digests(sealed, team):
    private, kid, public = _attacker_key()
    _insert_key_row(team, kid, public, SigningKeyStatus.RETIRED)
    _append_history_row(team, kid, public, at=timezone.now())
    _forge(sealed, team, private, kid)
    code, out = verify()
    assert code == 1
    assert (
        f"SIGNATURE_UNTRUSTED: digest #1: signed with key '{kid}', which was not published for team acme at"
        in out
    )


def test_a_back_dated_history_row_is_reported(sealed, team):
    private, kid, public = _attacker_key()
    _insert_key_row(team, kid, public, SigningKeyStatus.PUBLISHED)
    _append_history_row(team, kid, public, at=timezone.now() - timedelta(days=365))
    _forge(sealed, team, private, kid)
    code, out = verify()
    assert code == 1
    assert "KEY_HISTORY_ORDER: key history row #" in out and "back-dated" in out
    assert "SIGNATURE_UNTRUSTED: digest #1" in out


def test_a_consistent_forgery_is_caught_only_by_the_pinned_head(sealed, team):
    """History row appended in order, digests re-dated after it: only the pin tells."""
    pinned = key_history_head()
    private, kid, public = _attacker_key()
    _insert_key_row(team, kid, public, SigningKeyStatus.PUBLISHED)
    _append_history_row(team, kid, public, at=timezone.now())
    _forge(sealed, team, private, kid, created_at_shift=timedelta(hours=1))
    assert verify()[0] == 0  # without a pin, this forgery is self-consistent (documented limit)
    code, out = verify("--pinned-key-head", pinned)
    assert code == 1
    assert "KEY_HISTORY_UNPINNED: key history row #" in out and "1 key event(s) after the pinned head" in out
    assert f"SIGNATURE_UNTRUSTED: digest #1: signed with key '{kid}'" in out


def test_a_tampered_history_row_is_reported(sealed, team):
    pinned = key_history_head()
    private, _kid, public = _attacker_key()
    row = SigningKeyEvent.objects.get(team=team, event=SigningKeyEventType.CREATED)
    with attacker() as cursor:  # swap the team's real key for the attacker's, in the history itself
        cursor.execute(
            "UPDATE governance_signingkeyevent SET public_key = %s WHERE id = %s", [public, row.pk]
        )
        cursor.execute(
            "UPDATE governance_signingkey SET public_key = %s WHERE team_id = %s", [public, team.pk]
        )
    _forge(sealed, team, private, row.kid)
    code, out = verify()
    assert code == 1
    assert f"KEY_HISTORY_ALTERED: key history row #{row.seq}: its fields do not match its hash." in out
    assert "SIGNATURE_UNTRUSTED: digest #1" in out
    # Re-hashing the row (and every later one) keeps the chain consistent, but not the pinned head.
    with attacker():
        prev = None
        for r in SigningKeyEvent.objects.order_by("seq"):
            if prev is not None:
                r.prev_hash = prev
            r.hash = prev = stored_key_event_hash(r)
            r.save()
    assert verify()[0] == 0
    code, out = verify("--pinned-key-head", pinned)
    assert code == 1 and f"KEY_HISTORY_UNPINNED: the pinned head {pinned} is not in the key history" in out


def test_a_wrong_pin_is_reported(sealed):
    code, out = verify("--pinned-key-head", "ab" * 32)
    assert (
        code == 1
        and "KEY_HISTORY_UNPINNED" in out
        and "the history was rewritten, or the pin is wrong" in out
    )


def test_rotation_and_retirement_keep_earlier_digests_valid_and_are_recorded(sealed, team, gateway):
    old = SigningKey.objects.get(team=team, status=SigningKeyStatus.ACTIVE)
    new = signing_key_rotate(team=team)
    post_events(gateway, sealed, events(11, 12))
    digest = audit_chains_seal(team=team)
    assert digest.kid == new.kid
    signing_key_retire(team=team, kid=old.kid)
    assert [(e.kid, e.event) for e in SigningKeyEvent.objects.filter(team=team)] == [
        (old.kid, "created"),
        (old.kid, "rotated"),
        (new.kid, "created"),
        (old.kid, "retired"),
    ]
    code, out = verify("--pinned-key-head", key_history_head())
    assert code == 0, out
    # A digest dated after the retirement, signed with the retired key (its real private half), is not trusted.
    digest.created_at, digest.kid = timezone.now() + timedelta(minutes=1), old.kid
    payload = digest_bytes(digest, team.slug)
    digest.digest_hash = hashlib.sha256(payload).hexdigest()
    digest.signature = b64url_encode(_decrypt(old).sign(payload))
    with attacker():
        digest.save()
    code, out = verify()
    assert (
        code == 1
        and "SIGNATURE_UNTRUSTED: digest #3" in out
        and "which was not published for team acme" in out
    )
    assert "SIGNATURE_INVALID" not in out and "DIGEST_" not in out


def test_the_key_history_is_append_only(sealed, team):
    row = SigningKeyEvent.objects.first()
    for statement in (
        "UPDATE governance_signingkeyevent SET team_slug = 'x' WHERE id = %s",
        "DELETE FROM governance_signingkeyevent WHERE id = %s",
    ):
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(statement, [row.pk])
    assert SigningKeyEvent.objects.get(pk=row.pk).hash == stored_key_event_hash(row)
