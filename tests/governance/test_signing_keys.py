"""Per-team signing keys: each team's bundles signed with its own key, its JWKS listing only its keys,
rotation per team, and migration 0002 carrying the old global keys over."""

from __future__ import annotations

import hashlib
import io
import itertools
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from audit.models import AuditDigest
from audit.services.digests import audit_verify, digest_bytes
from governance.choices import SigningKeyStatus
from governance.models import PolicyBundle, SigningKey, SigningKeyEvent
from governance.services.bundles import bundle_publish
from governance.services.signing import (
    jwks_document,
    key_history_head,
    key_history_verify,
    signing_key_ensure,
    signing_key_rotate,
)
from mcpgov.bundle import Bundle
from mcpgov.verify import (
    UnknownKeyId,
    b64url_encode,
    generate_key,
    jwk_thumbprint,
    parse_jwks,
    public_jwk,
    sign_bundle,
    verify_bundle,
)
from tests.factories import make_team
from tests.mcpgov.helpers import NOW, bundle_doc


def _prod(team):
    return team.environments.get(name="production")


@pytest.mark.django_db
def test_each_teams_bundles_are_signed_with_its_own_key_and_never_verify_with_another_teams(team, other_team):
    acme = bundle_publish(environment=_prod(team)).bundle
    globex = bundle_publish(environment=_prod(other_team)).bundle
    acme_keys, globex_keys = parse_jwks(jwks_document(team=team)), parse_jwks(jwks_document(team=other_team))
    assert set(acme_keys) == {acme.kid} and set(globex_keys) == {globex.kid} and acme.kid != globex.kid
    assert verify_bundle(acme.jws, acme_keys, team="acme", environment="production").version == acme.version
    # Without --team on the gateway too: the other team's keys do not know the kid.
    with pytest.raises(UnknownKeyId):
        verify_bundle(acme.jws, globex_keys, environment="production")
    with pytest.raises(UnknownKeyId):
        verify_bundle(globex.jws, acme_keys, environment="production")


@pytest.mark.django_db
def test_one_teams_rotation_never_touches_another_team(team, other_team):
    bundle_publish(environment=_prod(team))
    globex_v1 = bundle_publish(environment=_prod(other_team)).bundle
    globex_keys_before = jwks_document(team=other_team)
    globex_rows_before = list(SigningKey.objects.filter(team=other_team).values_list("kid", "status"))
    out = io.StringIO()
    call_command("rotate_signing_key", team="acme", stdout=out)
    assert f"Key history head (pin it for verify_audit): {key_history_head()}" in out.getvalue()
    assert jwks_document(team=other_team) == globex_keys_before
    assert list(SigningKey.objects.filter(team=other_team).values_list("kid", "status")) == globex_rows_before
    assert SigningKey.objects.filter(team=team, status=SigningKeyStatus.ACTIVE).count() == 1
    assert SigningKey.objects.filter(team=team).count() == 2
    # Globex's bundle is not re-issued (nothing of globex changed), and it still verifies with globex's keys.
    assert not bundle_publish(environment=_prod(other_team)).created
    assert verify_bundle(globex_v1.jws, parse_jwks(globex_keys_before), environment="production")
    assert PolicyBundle.objects.filter(team=other_team).latest().pk == globex_v1.pk
    with pytest.raises(CommandError, match="active signing key"):
        call_command("rotate_signing_key", team="globex", retire=globex_v1.kid, stdout=io.StringIO())
    with pytest.raises(CommandError, match="has no signing key"):  # acme's old key is not globex's to retire
        call_command(
            "rotate_signing_key", team="globex", retire=SigningKey.objects.filter(team=team).last().kid
        )
    with pytest.raises(CommandError, match="No team"):
        call_command("rotate_signing_key", team="nope")


@pytest.mark.django_db
def test_jwks_endpoint_is_per_team(client, team, other_team):
    acme_key = signing_key_ensure(team=team)
    globex_key = signing_key_ensure(team=other_team)
    response = client.get("/api/v1/keys/?team=globex")
    assert response.status_code == 200 and [k["kid"] for k in response.json()["keys"]] == [globex_key.kid]
    assert acme_key.kid not in response.content.decode()
    missing = client.get("/api/v1/keys/")
    assert missing.status_code == 400 and missing.json()["code"] == "team_required"
    assert client.get("/api/v1/keys/?team=").json()["code"] == "team_required"
    assert client.get("/api/v1/keys/?team=nobody").status_code == 404
    assert client.get("/api/v1/keys/?team=a%00b").status_code == 400  # NUL: refused before any lookup
    # The query is declared (a serializer with the shared TeamField), so the schema says so.
    schema = client.get("/api/v1/schema/", HTTP_ACCEPT="application/json").json()
    [param] = schema["paths"]["/api/v1/keys/"]["get"]["parameters"]
    assert (param["name"], param["in"], param["required"]) == ("team", "query", True)


@pytest.mark.django_db
def test_every_key_event_is_a_chained_history_row_and_the_head_is_printed(team, other_team):
    a1 = signing_key_ensure(team=team)
    g1 = signing_key_ensure(team=other_team)
    a2 = signing_key_rotate(team=team)
    rows = list(SigningKeyEvent.objects.order_by("seq"))
    assert [(r.seq, r.team_slug, r.kid, r.event) for r in rows] == [
        (1, "acme", a1.kid, "created"),
        (2, "globex", g1.kid, "created"),
        (3, "acme", a1.kid, "rotated"),
        (4, "acme", a2.kid, "created"),
    ]
    assert rows[0].prev_hash == "0" * 64 and all(b.prev_hash == a.hash for a, b in itertools.pairwise(rows))
    history = key_history_verify(pinned_head=rows[-1].hash)
    assert history.problems == [] and history.head == rows[-1].hash
    out = io.StringIO()
    call_command("signing_keys", head=True, stdout=out)
    assert out.getvalue().strip() == rows[-1].hash
    out = io.StringIO()
    call_command("signing_keys", team="globex", stdout=out)
    assert g1.kid in out.getvalue() and a1.kid not in out.getvalue() and "4 key event(s)" in out.getvalue()


# --- migration 0002: the global keys carried over -----------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_migration_carries_the_global_keys_over_and_gives_each_team_its_own():
    acme, globex = make_team("acme"), make_team("globex")
    executor = MigrationExecutor(connection)
    executor.migrate([("governance", "0001_initial")])
    try:
        old_apps = executor.loader.project_state([("governance", "0001_initial")]).apps
        OldKey = old_apps.get_model("governance", "SigningKey")
        OldKey.objects.all().delete()  # the teams' own keys from set-up, made global by the reverse migration
        # Two global keys: one rotated out, one active. A bundle and a digest signed with the active one.
        keys = {}
        for status in ("published", "active"):
            private = generate_key()
            kid = jwk_thumbprint(private.public_key())
            raw = private.public_key().public_bytes_raw()
            OldKey.objects.create(
                kid=kid, public_key=b64url_encode(raw), private_key_encrypted="x", status=status
            )
            keys[status] = (kid, private)
        kid, private = keys["active"]
        legacy_jws = sign_bundle(Bundle.model_validate(bundle_doc()).canonical_bytes(), private, kid)
        pinned_before = {"keys": [public_jwk(p.public_key(), k) for k, p in keys.values()]}
        digest = AuditDigest(
            team=acme,
            number=1,
            created_at=datetime.now(UTC) + timedelta(seconds=1),
            heads=[],
            prev_digest_hash="0" * 64,
            kid=kid,
        )
        payload = digest_bytes(digest, "acme")
        digest.digest_hash = hashlib.sha256(payload).hexdigest()
        digest.signature = b64url_encode(private.sign(payload))
        digest.save()
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())

    for team in (acme, globex):
        rows = {k.kid: k for k in SigningKey.objects.filter(team=team)}
        fresh = [k for k in rows.values() if k.status == SigningKeyStatus.ACTIVE]
        assert len(fresh) == 1 and fresh[0].kid not in (keys["active"][0], keys["published"][0])
        # Carried over: public half only, published, never able to sign again.
        for legacy_kid, _ in keys.values():
            assert (
                rows[legacy_kid].status == SigningKeyStatus.PUBLISHED
                and rows[legacy_kid].private_key_encrypted == ""
            )
        team_keys = parse_jwks(jwks_document(team=team))
        assert set(team_keys) == set(rows)
    # The bundle issued before keeps verifying: with the team's new JWKS and with the file pinned before.
    acme_keys = parse_jwks(jwks_document(team=acme))
    assert verify_bundle(legacy_jws, acme_keys, team="acme", now=NOW).version == 3
    assert verify_bundle(legacy_jws, parse_jwks(pinned_before), team="acme", now=NOW).version == 3
    # New bundles are signed with each team's own fresh key, which the other team does not publish.
    reissue_at = datetime.now(UTC) + timedelta(
        seconds=acme.bundle_ttl_seconds * 0.75
    )  # past half the lifetime
    published = bundle_publish(environment=_prod(acme), now=reissue_at)
    assert published.created
    new = published.bundle
    assert new.kid == SigningKey.objects.get(team=acme, status=SigningKeyStatus.ACTIVE).kid
    with pytest.raises(UnknownKeyId):
        verify_bundle(new.jws, parse_jwks(jwks_document(team=globex)), environment="production")
    # The old digest still verifies against the history, which records the carried-over keys.
    _, digests, problems = audit_verify(pinned_key_head=key_history_head())
    assert digests == 1 and problems == [], problems
    assert SigningKeyEvent.objects.filter(team=acme, kid=kid, event="created").count() == 1
    assert SigningKey.objects.filter(team__isnull=True).count() == 0
