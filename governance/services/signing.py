"""Bundle-signing keys: Ed25519, private halves Fernet-encrypted at rest, rotated with a grace period.

Exactly one key is `active` (signs new bundles); rotated-out keys stay `published` (listed
in the JWKS so bundles they signed still verify) until an operator retires them. The
private key is decrypted only inside `active_signer()` and never leaves this module.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from governance.choices import SigningKeyStatus
from governance.models import SigningKey
from mcpgov.verify import b64url_decode, b64url_encode, jwk_thumbprint, public_jwk, sign_bundle


@dataclass(frozen=True)
class Signer:
    """The active key, ready to sign; lives only as long as one publish."""

    kid: str
    _private_key: Ed25519PrivateKey

    def sign(self, payload: bytes) -> str:
        """A JWS compact serialization of `payload` (the bundle envelope)."""
        return sign_bundle(payload, self._private_key, self.kid)

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


def _new_key_row(status: str) -> SigningKey:
    private = Ed25519PrivateKey.generate()
    raw_private = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return SigningKey(
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


def signing_key_ensure() -> SigningKey:
    """The active key, created on first use. Safe when two publishers race to create it."""
    key = SigningKey.objects.filter(status=SigningKeyStatus.ACTIVE).first()
    if key is not None:
        return key
    try:
        with transaction.atomic():
            key = _new_key_row(SigningKeyStatus.ACTIVE)
            key.save()
            return key
    except IntegrityError:  # another process created it first (one_active_signing_key)
        return SigningKey.objects.get(status=SigningKeyStatus.ACTIVE)


def active_signer() -> Signer:
    key = signing_key_ensure()
    return Signer(kid=key.kid, _private_key=_decrypt(key))


@transaction.atomic
def signing_key_rotate() -> SigningKey:
    """A new active key; the previous active key becomes published (it still verifies old bundles)."""
    SigningKey.objects.select_for_update().filter(status=SigningKeyStatus.ACTIVE).update(
        status=SigningKeyStatus.PUBLISHED
    )
    key = _new_key_row(SigningKeyStatus.ACTIVE)
    key.save()
    return key


@transaction.atomic
def signing_key_retire(*, kid: str) -> SigningKey:
    """Stop publishing a rotated-out key: bundles it signed no longer verify anywhere that re-pins."""
    key = SigningKey.objects.select_for_update().filter(kid=kid).first()
    if key is None:
        raise ValidationError(f"No signing key {kid!r}.")
    if key.status == SigningKeyStatus.ACTIVE:
        raise ValidationError(f"Key {kid} is the active signing key; rotate first, then retire it.")
    if key.status != SigningKeyStatus.RETIRED:
        key.status = SigningKeyStatus.RETIRED
        key.retired_at = timezone.now()
        key.save(update_fields=["status", "retired_at"])
    return key


def public_key_of(key: SigningKey) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(b64url_decode(key.public_key))


def jwks_document() -> dict[str, list[dict[str, str]]]:
    """The JWKS of every key that is not retired (active first, then published, newest first)."""
    keys = SigningKey.objects.exclude(status=SigningKeyStatus.RETIRED).order_by("status", "-created_at")
    return {"keys": [public_jwk(public_key_of(k), k.kid) for k in keys]}


__all__ = [
    "Signer",
    "active_signer",
    "jwks_document",
    "public_key_of",
    "signing_key_ensure",
    "signing_key_retire",
    "signing_key_rotate",
]
