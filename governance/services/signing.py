"""Per-team bundle- and digest-signing keys: Ed25519, private halves Fernet-encrypted at rest, rotated
with a grace period, every change written to an append-only, hash-chained key history.

Each team has exactly one `active` key (signs its new bundles and audit digests); rotated-out keys
stay `published` (listed in the team's JWKS so bundles they signed still verify) until an operator
retires them. No key ever signs for another team. The private key is decrypted only inside
`active_signer()` and never leaves this module. Every created / rotated / retired key is a
`SigningKeyEvent` row written in the same transaction; `key_history_verify` replays that history,
which `verify_audit` trusts instead of the (mutable) key table. See docs/bundle.md, docs/audit.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import transaction
from django.utils import timezone

from governance.choices import SigningKeyEventType, SigningKeyStatus
from governance.keyhistory import GENESIS_HASH, stored_key_event_hash
from governance.models import SigningKey, SigningKeyEvent
from mcpgov.verify import JWS_TYPE, b64url_decode, b64url_encode, jwk_thumbprint, public_jwk, sign_bundle
from portal.models import Team

KEY_HISTORY_LOCK = 0x6D6370676F76  # pg_advisory_xact_lock id of the key history ("mcpgov")


@dataclass(frozen=True)
class Signer:
    """The active key, ready to sign; lives only as long as one publish."""

    kid: str
    _private_key: Ed25519PrivateKey

    def sign(self, payload: bytes, *, typ: str = JWS_TYPE) -> str:
        """A JWS compact serialization of `payload` (the bundle envelope; `typ` SHADOW_JWS_TYPE: a shadow)."""
        return sign_bundle(payload, self._private_key, self.kid, typ=typ)

    def sign_detached(self, payload: bytes) -> bytes:
        """A raw Ed25519 signature of `payload` (audit digests), verifiable with the JWKS key `kid`."""
        return self._private_key.sign(payload)


def _fernet() -> Fernet:
    try:
        return Fernet(settings.MCPGOV_KEY_ENCRYPTION_KEY.encode())
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured("MCPGOV_KEY_ENCRYPTION_KEY is not a valid Fernet key.") from exc


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _new_key_row(team: Team, status: str) -> SigningKey:
    private = Ed25519PrivateKey.generate()
    raw_private = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return SigningKey(
        team=team,
        kid=jwk_thumbprint(private.public_key()),
        public_key=b64url_encode(_raw_public(private.public_key())),
        private_key_encrypted=_fernet().encrypt(raw_private).decode("ascii"),
        status=status,
    )


def _decrypt(key: SigningKey) -> Ed25519PrivateKey:
    try:
        raw = _fernet().decrypt(key.private_key_encrypted.encode("ascii"))
    except InvalidToken as exc:
        raise ImproperlyConfigured(
            f"Signing key {key.kid} cannot be decrypted with MCPGOV_KEY_ENCRYPTION_KEY "
            "(wrong key-encryption key?). Restore it, or rotate to a new signing key."
        ) from exc
    return Ed25519PrivateKey.from_private_bytes(raw)


def _lock_key_history(connection) -> None:
    # One global chain: appenders take turns (SQLite serialises writers on its own).
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [KEY_HISTORY_LOCK])


def _key_event_append(*, key: SigningKey, event: str) -> SigningKeyEvent:
    """Append one row to the key history; call inside the transaction that changes the key."""
    _lock_key_history(transaction.get_connection())
    last = SigningKeyEvent.objects.order_by("-seq").only("seq", "hash", "at").first()
    at = timezone.now()
    if last is not None and at < last.at:  # a clock stepping back must not break the order check
        at = last.at
    row = SigningKeyEvent(
        seq=(last.seq + 1) if last else 1,
        team_id=key.team_id,
        team_slug=key.team.slug,
        kid=key.kid,
        public_key=key.public_key,
        event=event,
        at=at,
        prev_hash=last.hash if last else GENESIS_HASH,
    )
    row.hash = stored_key_event_hash(row)
    row.save(force_insert=True)
    return row


def _lock_team(team: Team) -> Team:
    # Sealing (audit_chains_seal) locks the same row, so a seal never straddles a rotation.
    return Team.objects.select_for_update().get(pk=team.pk)


def signing_key_ensure(*, team: Team) -> SigningKey:
    """The team's active key, created (and recorded in the key history) on first use."""
    key = SigningKey.objects.filter(team=team, status=SigningKeyStatus.ACTIVE).select_related("team").first()
    if key is not None:
        return key
    with transaction.atomic():
        team = _lock_team(team)
        key = SigningKey.objects.filter(team=team, status=SigningKeyStatus.ACTIVE).first()
        if key is None:  # still none once we hold the lock: we create it
            key = _new_key_row(team, SigningKeyStatus.ACTIVE)
            key.save()
            _key_event_append(key=key, event=SigningKeyEventType.CREATED)
        return key


def active_signer(*, team: Team) -> Signer:
    key = signing_key_ensure(team=team)
    return Signer(kid=key.kid, _private_key=_decrypt(key))


@transaction.atomic
def signing_key_rotate(*, team: Team) -> SigningKey:
    """A new active key for `team`; its previous active key becomes published (still verifies old bundles).

    Only `team`'s keys change: other teams' keys, bundles and JWKS are untouched.
    """
    team = _lock_team(team)
    for old in SigningKey.objects.select_for_update().filter(team=team, status=SigningKeyStatus.ACTIVE):
        old.status = SigningKeyStatus.PUBLISHED
        old.save(update_fields=["status"])
        _key_event_append(key=old, event=SigningKeyEventType.ROTATED)
    key = _new_key_row(team, SigningKeyStatus.ACTIVE)
    key.save()
    _key_event_append(key=key, event=SigningKeyEventType.CREATED)
    return key


@transaction.atomic
def signing_key_retire(*, team: Team, kid: str) -> SigningKey:
    """Stop publishing one of `team`'s rotated-out keys: bundles it signed no longer verify anywhere that re-pins."""
    team = _lock_team(team)
    key = SigningKey.objects.select_for_update().filter(team=team, kid=kid).first()
    if key is None:
        raise ValidationError(f"Team {team.slug} has no signing key {kid!r}.")
    if key.status == SigningKeyStatus.ACTIVE:
        raise ValidationError(f"Key {kid} is {team.slug}'s active signing key; rotate first, then retire it.")
    if key.status != SigningKeyStatus.RETIRED:
        key.status = SigningKeyStatus.RETIRED
        key.retired_at = timezone.now()
        key.save(update_fields=["status", "retired_at"])
        _key_event_append(key=key, event=SigningKeyEventType.RETIRED)
    return key


def public_key_of(key: SigningKey | str) -> Ed25519PublicKey:
    """The public key of a key row, or of a raw base64url public key (as the key history stores it)."""
    return Ed25519PublicKey.from_public_bytes(b64url_decode(key if isinstance(key, str) else key.public_key))


def jwks_document(*, team: Team) -> dict[str, list[dict[str, str]]]:
    """The JWKS of `team`'s keys that are not retired (active first, then published, newest first)."""
    keys = (
        SigningKey.objects.filter(team=team)
        .exclude(status=SigningKeyStatus.RETIRED)
        .order_by("status", "-created_at", "kid")
    )
    return {"keys": [public_jwk(public_key_of(k), k.kid) for k in keys]}


# --- the key history, replayed ---------------------------------------------------------------------


@dataclass(frozen=True)
class KeyWindow:
    """When a key was published for a team, as the key history tells it: [created_at, retired_at)."""

    team_id: int
    kid: str
    public_key: str
    created_at: datetime
    retired_at: datetime | None = None

    def published_at(self, when: datetime) -> bool:
        return self.created_at <= when and (self.retired_at is None or when < self.retired_at)


@dataclass(frozen=True)
class KeyHistoryProblem:
    kind: str  # key_history_altered | key_history_removed | key_history_order | key_history_unpinned | key_unrecorded
    message: str
    seq: int | None = None


@dataclass
class KeyHistory:
    """The replayed history: each key's window, the head hash, and what does not add up."""

    windows: dict[tuple[int, str], KeyWindow] = field(default_factory=dict)
    problems: list[KeyHistoryProblem] = field(default_factory=list)
    head: str = GENESIS_HASH
    events: int = 0


def key_history_head() -> str:
    """The hash of the newest key-history row (64 zeros for an empty history): what operators pin."""
    return SigningKeyEvent.objects.order_by("-seq").values_list("hash", flat=True).first() or GENESIS_HASH


def key_history_verify(*, pinned_head: str | None = None) -> KeyHistory:
    """Recompute the key-history chain and replay it into key windows.

    A row whose hash, link, number or time does not fit is reported, and the keys it describes
    are not trusted. With `pinned_head`, the chain must contain it and end there: a row after
    the pinned head (e.g. a key added by someone with database access) is reported, so an
    operator re-pins after checking every key event (`manage.py signing_keys --head`).
    """
    result = KeyHistory()
    prev_hash, prev_at, expected_seq = GENESIS_HASH, None, 1
    pinned_seq: int | None = None
    untrusted: set[tuple[int, str]] = set()
    for row in SigningKeyEvent.objects.order_by("seq").iterator(chunk_size=2000):
        result.events += 1
        key = (row.team_id, row.kid)
        bad = False
        if row.seq != expected_seq:
            result.problems.append(
                KeyHistoryProblem(
                    "key_history_removed", f"rows #{expected_seq}..#{row.seq - 1} missing.", row.seq
                )
            )
        if stored_key_event_hash(row) != row.hash:
            result.problems.append(
                KeyHistoryProblem("key_history_altered", "its fields do not match its hash.", row.seq)
            )
            bad = True
        if row.prev_hash != prev_hash:
            result.problems.append(
                KeyHistoryProblem(
                    "key_history_altered", "prev_hash does not match the row before it.", row.seq
                )
            )
            bad = True
        if prev_at is not None and row.at < prev_at:
            result.problems.append(
                KeyHistoryProblem(
                    "key_history_order", "dated before the row before it (back-dated?).", row.seq
                )
            )
            bad = True
        window = result.windows.get(key)
        if row.event == SigningKeyEventType.CREATED:
            if window is not None:
                result.problems.append(
                    KeyHistoryProblem("key_history_order", f"key {row.kid} created twice.", row.seq)
                )
                bad = True
            else:
                result.windows[key] = KeyWindow(row.team_id, row.kid, row.public_key, row.at)
        elif window is None or window.public_key != row.public_key:
            result.problems.append(
                KeyHistoryProblem(
                    "key_history_order",
                    f"{row.event} event for key {row.kid} before it was created.",
                    row.seq,
                )
            )
            bad = True
        elif row.event == SigningKeyEventType.RETIRED and window.retired_at is None:
            result.windows[key] = replace(window, retired_at=row.at)
        if bad:
            untrusted.add(key)
        if pinned_head and row.hash == pinned_head:
            pinned_seq = row.seq
        prev_hash, prev_at, expected_seq = row.hash, row.at, row.seq + 1
    result.head = prev_hash
    last_seq = expected_seq - 1
    if pinned_head == GENESIS_HASH:  # pinned while the history was empty
        pinned_seq = 0
    if pinned_head and pinned_seq is None:
        result.problems.append(
            KeyHistoryProblem(
                "key_history_unpinned",
                f"the pinned head {pinned_head} is not in the key history (its head is {result.head}): "
                "the history was rewritten, or the pin is wrong.",
            )
        )
    elif pinned_head and pinned_seq < last_seq:
        result.problems.append(
            KeyHistoryProblem(
                "key_history_unpinned",
                f"{last_seq - pinned_seq} key event(s) after the pinned head (rows #{pinned_seq + 1}..#{last_seq}); "
                f"check them with `manage.py signing_keys`, then pin {result.head}.",
                pinned_seq + 1,
            )
        )
        untrusted.update(SigningKeyEvent.objects.filter(seq__gt=pinned_seq).values_list("team_id", "kid"))
    # The key table must agree with the history: a key row the history does not describe is foreign.
    for key_row in SigningKey.objects.only("team_id", "kid", "public_key", "status").order_by(
        "team_id", "kid"
    ):
        window = result.windows.get((key_row.team_id, key_row.kid))
        if window is None or window.public_key != key_row.public_key:
            result.problems.append(
                KeyHistoryProblem(
                    "key_unrecorded",
                    f"signing key {key_row.kid} (team id {key_row.team_id}, {key_row.status}) is not in the key history.",
                )
            )
    for key in untrusted:
        result.windows.pop(key, None)
    return result
