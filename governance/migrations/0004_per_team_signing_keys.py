"""Per-team signing keys and the hash-chained key history.

Before this migration one global key set signed every team's bundles and audit digests. What
happens to it here, and why:

- Every existing team gets a **copy of each global key's public half** (same `kid`, status
  `published`, or `retired` if it was retired), so every bundle and digest already issued keeps
  verifying — with the team's new JWKS and with the JWKS file gateways pinned before. The
  global keys' **private halves are dropped**: a key shared by all teams could sign for any of
  them, so it must never sign again.
- Every existing team gets a **fresh active key of its own**, created here (not on the next
  publish) so an operator can re-pin each team's gateways (`GET /api/v1/keys/?team=<slug>`,
  which lists the fresh key and the carried-over ones) before new bundles reach them. Until a
  gateway is re-pinned it rejects new bundles (`unknown_kid`) and keeps enforcing its last
  verified bundle until that expires — the same as after any rotation. Copying the old private
  key to every team instead would have avoided the re-pin but left all teams sharing one key
  until each rotated, which is exactly what per-team keys are for.
- Each of these facts is a row of the key history, in time order: the carried-over keys with
  their original dates (created, rotated when the next key appeared, retired when retired), then
  today's rotation of the last global key and each team's fresh key.

Once gateways are re-pinned, retire the carried-over keys per team
(`manage.py rotate_signing_key --team <slug> --retire <kid>`). Reversing it (development only)
keeps one row per `kid` as a global key, at most one of them active, and drops the key history.
"""

from datetime import UTC, datetime

import django.db.models.deletion
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.db import migrations, models

from governance.keyhistory import GENESIS_HASH, key_event_hash
from mcpgov.verify import b64url_encode, jwk_thumbprint

ORDER = {"created": 0, "rotated": 1, "retired": 2}


def _fresh_key():
    private = Ed25519PrivateKey.generate()
    raw_private = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    encrypted = Fernet(settings.MCPGOV_KEY_ENCRYPTION_KEY.encode()).encrypt(raw_private).decode("ascii")
    return jwk_thumbprint(private.public_key()), b64url_encode(public), encrypted


def carry_over(apps, schema_editor):
    SigningKey = apps.get_model("governance", "SigningKey")
    SigningKeyEvent = apps.get_model("governance", "SigningKeyEvent")
    Team = apps.get_model("portal", "Team")
    legacy = list(SigningKey.objects.filter(team__isnull=True).order_by("created_at", "id"))
    teams = list(Team.objects.order_by("id"))
    if not legacy:
        return  # nothing was ever signed: each team's key is created on its first publish
    now = datetime.now(UTC)
    history = []  # (at, order, team, kid, public_key, event)
    today = []
    for team in teams:
        for i, key in enumerate(legacy):
            status = "retired" if key.status == "retired" else "published"
            row = SigningKey.objects.create(
                team=team, kid=key.kid, public_key=key.public_key, private_key_encrypted="", status=status
            )
            SigningKey.objects.filter(pk=row.pk).update(created_at=key.created_at, retired_at=key.retired_at)
            history.append((key.created_at, 0, team, key.kid, key.public_key, "created"))
            if key.status == "active":
                today.append((now, 1, team, key.kid, key.public_key, "rotated"))
            else:
                rotated_at = legacy[i + 1].created_at if i + 1 < len(legacy) else key.created_at
                history.append((max(rotated_at, key.created_at), 1, team, key.kid, key.public_key, "rotated"))
            if key.status == "retired":
                retired_at = max(key.retired_at or key.created_at, key.created_at)
                history.append((retired_at, 2, team, key.kid, key.public_key, "retired"))
        kid, public_key, encrypted = _fresh_key()
        SigningKey.objects.create(
            team=team, kid=kid, public_key=public_key, private_key_encrypted=encrypted, status="active"
        )
        today.append((now, 2, team, kid, public_key, "created"))
    SigningKey.objects.filter(team__isnull=True).delete()
    history.sort(key=lambda e: (e[0], e[1], e[2].id))
    today.sort(key=lambda e: (e[2].id, e[1]))
    prev_hash = SigningKeyEvent.objects.order_by("-seq").values_list("hash", flat=True).first() or GENESIS_HASH
    seq = SigningKeyEvent.objects.count()
    for at, _order, team, kid, public_key, event in history + today:
        seq += 1
        digest = key_event_hash(
            prev_hash=prev_hash,
            seq=seq,
            team_id=team.id,
            team_slug=team.slug,
            kid=kid,
            public_key=public_key,
            event=event,
            at=at,
        )
        SigningKeyEvent.objects.create(
            seq=seq,
            team_id=team.id,
            team_slug=team.slug,
            kid=kid,
            public_key=public_key,
            event=event,
            at=at,
            prev_hash=prev_hash,
            hash=digest,
        )
        prev_hash = digest


def back_to_global(apps, schema_editor):
    SigningKey = apps.get_model("governance", "SigningKey")
    kept: set[str] = set()
    active_kept = False
    # Keys that can still sign first, newest first: the newest of them stays the one active key.
    for key in sorted(
        SigningKey.objects.all(), key=lambda k: (not k.private_key_encrypted, k.status != "active", -k.pk)
    ):
        if key.kid in kept:
            key.delete()
            continue
        kept.add(key.kid)
        if key.status == "active":
            if active_kept or not key.private_key_encrypted:
                key.status = "published"
            active_kept = active_kept or key.status == "active"
        key.team = None
        key.save(update_fields=["team", "status"])


class Migration(migrations.Migration):
    dependencies = [
        ("portal", "0001_initial"),
        ("governance", "0003_tool_reports"),
    ]

    operations = [
        migrations.RemoveConstraint(model_name="signingkey", name="one_active_signing_key"),
        migrations.AlterField(model_name="signingkey", name="kid", field=models.CharField(max_length=64)),
        migrations.AlterField(
            model_name="signingkey",
            name="private_key_encrypted",
            field=models.TextField(
                blank=True, help_text="Fernet token of the raw private key; empty for a verify-only key."
            ),
        ),
        migrations.AddField(
            model_name="signingkey",
            name="team",
            field=models.ForeignKey(
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="signing_keys",
                to="portal.team",
            ),
        ),
        migrations.CreateModel(
            name="SigningKeyEvent",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("seq", models.PositiveBigIntegerField(help_text="1, 2, 3… over the whole portal.", unique=True)),
                ("team_slug", models.CharField(max_length=64)),
                ("kid", models.CharField(max_length=64)),
                ("public_key", models.CharField(help_text="Raw public key, base64url.", max_length=100)),
                (
                    "event",
                    models.CharField(
                        choices=[
                            ("created", "Created (active, published in the team's JWKS)"),
                            ("rotated", "Rotated out (still published)"),
                            ("retired", "Retired (no longer published)"),
                        ],
                        max_length=16,
                    ),
                ),
                ("at", models.DateTimeField()),
                ("prev_hash", models.CharField(max_length=64)),
                ("hash", models.CharField(max_length=64, unique=True)),
                (
                    "team",
                    models.ForeignKey(
                        db_constraint=False,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="+",
                        to="portal.team",
                    ),
                ),
            ],
            options={"ordering": ["seq"]},
        ),
        migrations.RunPython(carry_over, back_to_global, elidable=False),
        migrations.AlterField(
            model_name="signingkey",
            name="team",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE, related_name="signing_keys", to="portal.team"
            ),
        ),
        migrations.AddConstraint(
            model_name="signingkey",
            constraint=models.UniqueConstraint(fields=("team", "kid"), name="signing_key_unique_team_kid"),
        ),
        migrations.AddConstraint(
            model_name="signingkey",
            constraint=models.UniqueConstraint(
                condition=models.Q(("status", "active")), fields=("team",), name="one_active_signing_key_per_team"
            ),
        ),
    ]
