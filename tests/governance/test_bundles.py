"""The bundle compiler, signing keys and verification of what the portal publishes."""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import timedelta

import jwt
import pytest
from cryptography.fernet import Fernet
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from governance.choices import (
    AccessRequestStatus,
    Permission,
    RuleKind,
    SigningKeyStatus,
    TargetKind,
    Transport,
)
from governance.models import AccessRequest, Environment, Flag, FlagState, McpTool, PolicyBundle, SigningKey
from governance.services import environments as env_services
from governance.services import limits as limit_services
from governance.services import roles as role_services
from governance.services import servers as server_services
from governance.services.bundles import (
    REFRESH_REASON,
    bundle_compile,
    bundle_diff,
    bundle_publish,
    bundles_refresh,
    team_bundles_rebuild,
)
from governance.services.signing import jwks_document, signing_key_retire, signing_key_rotate
from mcpgov.bundle import Bundle, canonical_json, tool_definition_hash
from mcpgov.verify import (
    BadSignature,
    BundleExpired,
    BundleState,
    ReplayedBundle,
    UnknownKeyId,
    WrongEnvironment,
    b64url_decode,
    b64url_encode,
    parse_jwks,
    verify_bundle,
)
from tests.factories import UserFactory

GIT_TOOLS = [
    {
        "name": "git_status",
        "description": "Show the working tree status",
        "input_schema": {"type": "object", "properties": {"repo_path": {"type": "string"}}},
        "annotations": {"readOnlyHint": True},
    },
    {
        "name": "git_commit",
        "description": "Record changes to the repository",
        "input_schema": {"type": "object", "properties": {"message": {"type": "string"}}},
        "annotations": {"readOnlyHint": False, "destructiveHint": False},
    },
    {
        "name": "git_log",
        "description": "Show the commit logs",
        "input_schema": {"type": "object"},
        "annotations": {},
    },
]


def build_policy(team):
    """A policy that touches every part of the bundle, written through the services."""
    git = server_services.server_create(
        team=team,
        slug="git",
        category="api",
        transport=Transport.STDIO,
        command="python",
        args=["-m", "mcp_server_git"],
        cost_per_call="0.0100",
    )
    github = server_services.server_create(
        team=team,
        slug="github_api",
        category="api",
        transport=Transport.HTTP,
        url="https://mcp.github.example/mcp",
    )
    shell = server_services.server_create(team=team, slug="shell", category="shell_execution", command="sh")
    server_services.server_tools_record(server=git, tools=GIT_TOOLS)
    log = git.tools.get(name="git_log")
    server_services.tool_update(tool=log, access_class_override="read")
    server_services.tool_update(tool=git.tools.get(name="git_commit"), approval_required=True)
    code = role_services.role_create(team=team, name="code_agent", description="writes code")
    role_services.role_server_add(role=code, server=git, kind=RuleKind.ALLOWED)
    role_services.role_server_add(role=code, server=github, kind=RuleKind.ALLOWED)
    role_services.role_server_add(role=code, server=shell, kind=RuleKind.FORBIDDEN)
    role_services.role_create(team=team, name="docs_agent")
    prod = Environment.objects.get(team=team, name="production")
    dev = Environment.objects.get(team=team, name="development")
    env_services.environment_update(environment=prod, forbidden_patterns=["*staging*", "*test*"])
    env_services.binding_set(
        environment=prod,
        server=github,
        target_kind=TargetKind.URL,
        target="https://api.github.com/org/prod",
        permission=Permission.READ_ONLY,
    )
    env_services.binding_set(
        environment=dev, server=git, target="/srv/repo", permission=Permission.READ_WRITE
    )
    limit_services.global_limits_set(
        team=team, max_calls_per_session=200, max_calls_per_minute=30, pause_at_percent=80
    )
    limit_services.server_limits_set(
        team=team,
        server=github,
        max_calls_per_session=50,
        max_write_calls_per_session=5,
        max_response_bytes=500_000,
    )
    limit_services.trigger_settings_set(
        team=team,
        cascade_write_threshold=4,
        large_data_bytes=2_000_000,
        production_url_words=["prod", "live"],
    )
    flag = Flag.objects.create(team=team, name="mcp.git.write", server=git, capability="write")
    FlagState.objects.create(flag=flag, environment=prod, enabled=False, reason="incident 42")
    FlagState.objects.create(
        flag=flag,
        environment=dev,
        enabled=True,
        constraints=[{"context_name": "role", "operator": "IN", "values": ["code_agent"]}],
    )
    scoped = Flag.objects.create(team=team, name="mcp.github_api.all", server=github, capability="all")
    FlagState.objects.create(
        flag=scoped,
        environment=prod,
        enabled=True,
        constraints=[{"context_name": "environment", "operator": "IN", "values": ["staging"]}],
    )
    return {"git": git, "github": github, "shell": shell, "code": code, "prod": prod, "dev": dev}


def make_grant(team, policy, *, status=AccessRequestStatus.APPROVED, starts=-1, ends=2, revoked=False):
    now = timezone.now()
    requester = UserFactory()
    grant = AccessRequest.objects.create(
        team=team,
        requester=requester,
        environment=policy["prod"],
        role=policy["code"],
        reason="hotfix",
        starts_at=now + timedelta(hours=starts),
        ends_at=now + timedelta(hours=ends),
        status=status,
        review_deadline=now + timedelta(hours=1),
        revoked_at=now if revoked else None,
    )
    grant.servers.set([policy["github"]])
    return grant


@pytest.fixture
def policy(team):
    return build_policy(team)


def pinned_keys(team):
    return parse_jwks(jwks_document(team=team))


# --- the compiled content ---------------------------------------------------------------------------


def test_bundle_holds_everything_the_gateway_needs(team, policy):
    grant = make_grant(team, policy)
    make_grant(team, policy, starts=-5, ends=-1)  # ended
    make_grant(team, policy, status=AccessRequestStatus.DENIED)
    make_grant(team, policy, status=AccessRequestStatus.REVOKED, revoked=True)
    compiled = bundle_compile(environment=policy["prod"])
    c = compiled.content
    assert c["team"] == "acme" and c["environment"] == "production" and c["schema"] == "mcpgov.bundle/1"
    assert c["roles"] == {
        "code_agent": {"allowed_servers": ["git", "github_api"], "forbidden_servers": ["shell"]},
        "docs_agent": {"allowed_servers": [], "forbidden_servers": []},
    }
    tools = c["servers"]["git"]["tools"]
    assert tools["git_status"]["class"] == "read"
    assert tools["git_commit"] == {
        "class": "write",
        "approval_required": True,
        "definition_hash": tool_definition_hash(
            "git_commit", GIT_TOOLS[1]["description"], GIT_TOOLS[1]["input_schema"]
        ),
    }
    assert tools["git_log"]["class"] == "read"  # the admin's override beats the missing hint
    assert (
        c["servers"]["git"]["args"] == ["-m", "mcp_server_git"]
        and c["servers"]["git"]["cost_per_call"] == 0.01
    )
    assert c["servers"]["github_api"]["url"] == "https://mcp.github.example/mcp"
    env = c["environment_policy"]
    assert env["requires_authorization"] is True
    assert env["forbidden_patterns"] == ["*staging*", "*test*"]
    assert env["bindings"] == {
        "github_api": {"target": "https://api.github.com/org/prod", "permission": "read_only"}
    }
    assert c["rate_limits"]["global"] == {
        "max_calls_per_session": 200,
        "max_calls_per_minute": 30,
        "pause_at_percent": 80,
    }
    assert c["rate_limits"]["per_server"]["github_api"]["max_write_calls_per_session"] == 5
    assert c["triggers"] == {
        "cascade_write_threshold": 4,
        "large_data_bytes": 2_000_000,
        "production_url_words": ["prod", "live"],
    }
    flags = {f["name"]: f for f in c["flags"]}
    assert flags["mcp.git.write"]["enabled"] is False and flags["mcp.git.write"]["reason"] == "incident 42"
    # An environment constraint is resolved by the portal: this flag is on only in staging.
    assert (
        flags["mcp.github_api.all"]["enabled"] is False and flags["mcp.github_api.all"]["constraints"] == []
    )
    assert [g["id"] for g in c["grants"]] == [str(grant.pk)]
    assert c["grants"][0]["servers"] == ["github_api"] and c["grants"][0]["role"] == "code_agent"
    assert c["grants"][0]["ends_at"].endswith("Z")
    for field in ("version", "issued_at", "expires_at"):
        assert field not in c


def test_flags_resolve_per_environment_and_keep_role_constraints(team, policy):
    dev = bundle_compile(environment=policy["dev"]).content
    flag = next(f for f in dev["flags"] if f["name"] == "mcp.git.write")
    assert flag["enabled"] is True
    assert flag["constraints"] == [{"context_name": "role", "operator": "IN", "values": ["code_agent"]}]
    # No state in staging: the switch is on there.
    staging = Environment.objects.get(team=team, name="staging")
    flag = next(
        f for f in bundle_compile(environment=staging).content["flags"] if f["name"] == "mcp.git.write"
    )
    assert flag["enabled"] is True and flag["constraints"] == []
    assert bundle_compile(environment=staging).content["environment_policy"]["bindings"] == {}


def test_same_policy_gives_byte_identical_content_and_the_same_hash(team, policy):
    first = bundle_compile(environment=policy["prod"])
    second = bundle_compile(environment=policy["prod"], now=timezone.now() + timedelta(minutes=5))
    assert canonical_json(first.content) == canonical_json(second.content)
    assert (
        first.content_hash == second.content_hash == hashlib.sha256(canonical_json(first.content)).hexdigest()
    )
    one = bundle_publish(environment=policy["prod"])
    again = bundle_publish(environment=policy["prod"])
    assert one.created and not again.created
    assert (
        again.bundle.pk == one.bundle.pk
        and PolicyBundle.objects.filter(environment=policy["prod"]).count() == 1
    )
    assert one.bundle.content_hash == first.content_hash


def test_one_changed_field_makes_a_new_version(team, policy):
    v1 = bundle_publish(environment=policy["prod"]).bundle
    server_services.tool_update(tool=policy["git"].tools.get(name="git_status"), approval_required=True)
    v2 = bundle_publish(environment=policy["prod"]).bundle
    assert v2.version == v1.version + 1 and v2.content_hash != v1.content_hash
    diff = bundle_diff(v1.content, v2.content)
    assert [(d.kind, d.path, d.old, d.new) for d in diff] == [
        ("changed", "servers.git.tools.git_status.approval_required", False, True)
    ]
    # Old versions are kept.
    assert list(
        PolicyBundle.objects.filter(environment=policy["prod"]).values_list("version", flat=True)
    ) == [2, 1]


def test_a_change_to_one_environment_does_not_version_the_others(team, policy):
    team_bundles_rebuild(team_id=team.pk)
    before = dict(PolicyBundle.objects.filter(team=team).values_list("environment__name", "version"))
    env_services.binding_set(environment=policy["prod"], server=policy["git"], target="/srv/prod-repo")
    results = {
        r.bundle.environment.name: r.created for r in team_bundles_rebuild(team_id=team.pk, reason="x")
    }
    assert results == {"development": False, "staging": False, "production": True}
    latest = PolicyBundle.objects.filter(environment=policy["prod"]).order_by("-version").first()
    assert latest.version == before["production"] + 1 and latest.reason == "x"


def test_payload_is_the_schema_and_expires_after_the_team_ttl(team, policy):
    team.bundle_ttl_seconds = 3600
    team.save()
    bundle = bundle_publish(environment=policy["prod"]).bundle
    payload = b64url_decode(bundle.jws.split(".")[1])
    parsed = Bundle.from_json_bytes(payload)
    assert parsed.canonical_bytes() == payload  # canonical JSON, byte for byte
    assert parsed.version == bundle.version and parsed.expires_at - parsed.issued_at == timedelta(hours=1)
    assert bundle.expires_at - bundle.issued_at == timedelta(hours=1)
    assert bundle.etag == hashlib.sha256(bundle.jws.encode()).hexdigest()
    content = {
        k: v for k, v in json.loads(payload).items() if k not in ("version", "issued_at", "expires_at")
    }
    assert hashlib.sha256(canonical_json(content)).hexdigest() == bundle.content_hash


def test_reissue_after_half_the_lifetime_keeps_the_content(team, policy):
    v1 = bundle_publish(environment=policy["prod"]).bundle
    ttl = team.bundle_ttl_seconds
    early = bundle_publish(environment=policy["prod"], now=v1.issued_at + timedelta(seconds=ttl / 2 - 5))
    assert not early.created
    assert not any(
        r.created and r.bundle.environment_id == policy["prod"].pk
        for r in bundles_refresh(now=v1.issued_at + timedelta(seconds=ttl / 2 - 5))
    )
    later = v1.issued_at + timedelta(seconds=ttl / 2 + 5)
    refreshed = [r for r in bundles_refresh(now=later) if r.bundle.environment_id == policy["prod"].pk]
    assert len(refreshed) == 1 and refreshed[0].created
    v2 = refreshed[0].bundle
    assert v2.version == v1.version + 1 and v2.content_hash == v1.content_hash and v2.reason == REFRESH_REASON
    assert v2.expires_at == later + timedelta(seconds=ttl) > v1.expires_at
    assert not bundle_publish(environment=policy["prod"], now=later + timedelta(seconds=1)).created


def test_refresh_drops_a_grant_that_ended(team, policy):
    grant = make_grant(team, policy, starts=-1, ends=1)
    v1 = bundle_publish(environment=policy["prod"]).bundle
    assert [g["id"] for g in v1.content["grants"]] == [str(grant.pk)]
    after_end = grant.ends_at + timedelta(seconds=1)
    refreshed = [r for r in bundles_refresh(now=after_end) if r.bundle.environment_id == policy["prod"].pk]
    assert refreshed and refreshed[0].created and refreshed[0].bundle.content["grants"] == []


def test_compiling_a_large_policy_uses_a_fixed_number_of_queries(team, django_assert_max_num_queries):
    from tests.factories import RoleFactory, ServerFactory, ToolFactory

    servers = [ServerFactory(team=team) for _ in range(60)]
    for s in servers:
        ToolFactory.create_batch(3, server=s)
    for i in range(20):
        role = RoleFactory(team=team)
        for s in servers[i : i + 10]:
            role.rules.create(server=s, kind=RuleKind.ALLOWED)
    env = Environment.objects.select_related("team").get(team=team, name="development")
    with django_assert_max_num_queries(13):
        compiled = bundle_compile(environment=env)
    assert len(compiled.content["servers"]) == 60 and len(compiled.content["roles"]) == 20


@pytest.mark.django_db(transaction=True)
def test_concurrent_publishers_make_one_version(team, policy):
    PolicyBundle.objects.filter(environment=policy["prod"]).delete()
    barrier = threading.Barrier(4)
    created = []

    def publish():
        try:
            barrier.wait()
            created.append(bundle_publish(environment=policy["prod"]).created)
        finally:
            connection.close()

    threads = [threading.Thread(target=publish) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(created) == [False, False, False, True]
    assert list(
        PolicyBundle.objects.filter(environment=policy["prod"]).values_list("version", flat=True)
    ) == [1]


# --- keys, signatures, verification ----------------------------------------------------------------


def test_private_key_is_encrypted_at_rest_and_never_published(team, policy):
    bundle = bundle_publish(environment=policy["prod"]).bundle
    key = SigningKey.objects.get(kid=bundle.kid)
    assert key.status == SigningKeyStatus.ACTIVE
    raw = Fernet(settings.MCPGOV_KEY_ENCRYPTION_KEY.encode()).decrypt(key.private_key_encrypted.encode())
    assert len(raw) == 32 and b64url_encode(raw) not in key.private_key_encrypted
    jwks = jwks_document(team=team)
    assert [k["kid"] for k in jwks["keys"]] == [key.kid]
    assert all("d" not in k for k in jwks["keys"])
    assert b64url_encode(raw) not in json.dumps(jwks)


def test_bundle_verifies_with_a_stock_jws_library_against_the_jwks(team, policy):
    bundle = bundle_publish(environment=policy["prod"]).bundle
    jwk = next(k for k in jwks_document(team=team)["keys"] if k["kid"] == bundle.kid)
    key = jwt.PyJWK(jwk)
    decoded = jwt.api_jws.PyJWS().decode_complete(bundle.jws, key=key.key, algorithms=["EdDSA"])
    assert decoded["header"] == {"alg": "EdDSA", "kid": bundle.kid, "typ": "mcpgov-bundle+jws"}
    assert json.loads(decoded["payload"])["version"] == bundle.version
    tampered = bundle.jws[:-3] + ("AAA" if not bundle.jws.endswith("AAA") else "BBB")
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.api_jws.PyJWS().decode_complete(tampered, key=key.key, algorithms=["EdDSA"])


def _swap_payload(jws: str, mutate) -> str:
    header, payload, signature = jws.split(".")
    return ".".join([header, b64url_encode(mutate(b64url_decode(payload))), signature])


def test_tampering_is_rejected_with_distinct_errors(team, policy, tmp_path):
    v1 = bundle_publish(environment=policy["prod"]).bundle
    keys = pinned_keys(team)
    server_services.tool_update(tool=policy["git"].tools.get(name="git_status"), approval_required=True)
    v2 = bundle_publish(environment=policy["prod"]).bundle
    dev = bundle_publish(environment=policy["dev"]).bundle
    ok = verify_bundle(v2.jws, keys, team="acme", environment="production")
    assert ok.version == v2.version and ok.sha256 == v2.etag

    errors = {}
    # a payload byte
    flipped = _swap_payload(v2.jws, lambda p: p[:10] + bytes([p[10] ^ 1]) + p[11:])
    with pytest.raises(BadSignature) as exc:
        verify_bundle(flipped, keys, team="acme", environment="production")
    errors["payload"] = exc.value.code
    # the header's kid
    header, payload, sig = v2.jws.split(".")
    other_kid = b64url_encode(
        canonical_json({"alg": "EdDSA", "kid": "someone-else", "typ": "mcpgov-bundle+jws"})
    )
    with pytest.raises(UnknownKeyId) as exc:
        verify_bundle(f"{other_kid}.{payload}.{sig}", keys, team="acme", environment="production")
    errors["kid"] = exc.value.code
    # the signature
    bad_sig = b64url_encode(bytes(64))
    with pytest.raises(BadSignature) as exc:
        verify_bundle(f"{header}.{payload}.{bad_sig}", keys, team="acme", environment="production")
    errors["signature"] = exc.value.code
    # expired
    with pytest.raises(BundleExpired) as exc:
        verify_bundle(
            v2.jws, keys, team="acme", environment="production", now=v2.expires_at + timedelta(seconds=1)
        )
    errors["expired"] = exc.value.code
    # the wrong environment
    with pytest.raises(WrongEnvironment) as exc:
        verify_bundle(dev.jws, keys, team="acme", environment="production")
    errors["environment"] = exc.value.code
    # an older version replayed
    state = BundleState(tmp_path / "state.json")
    state.accept(ok.bundle, ok.payload_sha256)
    with pytest.raises(ReplayedBundle) as exc:
        verify_bundle(v1.jws, keys, team="acme", environment="production", state=state)
    errors["replay"] = exc.value.code
    assert errors == {
        "payload": "bad_signature",
        "kid": "unknown_kid",
        "signature": "bad_signature",
        "expired": "expired",
        "environment": "wrong_environment",
        "replay": "replayed",
    }
    # signature and payload tampering are both "bad_signature", and are told apart from the rest:
    assert len(set(errors.values())) == 5


def test_key_rotation_keeps_old_bundles_verifiable(team, policy):
    v1 = bundle_publish(environment=policy["prod"]).bundle
    old_kid = v1.kid
    call_command("rotate_signing_key", team="acme", stdout=open("/dev/null", "w"))  # noqa: SIM115
    new = SigningKey.objects.get(status=SigningKeyStatus.ACTIVE)
    assert new.kid != old_kid and SigningKey.objects.get(kid=old_kid).status == SigningKeyStatus.PUBLISHED
    server_services.tool_update(tool=policy["git"].tools.get(name="git_status"), approval_required=True)
    v2 = bundle_publish(environment=policy["prod"]).bundle
    assert v2.kid == new.kid
    keys = pinned_keys(team)
    assert set(keys) == {old_kid, new.kid}
    assert verify_bundle(v1.jws, keys, environment="production").version == v1.version
    assert verify_bundle(v2.jws, keys, environment="production").version == v2.version
    # Retired: no longer published, so the old bundle no longer verifies against a re-pinned JWKS.
    call_command("rotate_signing_key", team="acme", retire=old_kid, stdout=open("/dev/null", "w"))  # noqa: SIM115
    keys = pinned_keys(team)
    assert set(keys) == {new.kid}
    with pytest.raises(UnknownKeyId):
        verify_bundle(v1.jws, keys, environment="production")
    with pytest.raises(Exception, match="active signing key"):
        signing_key_retire(team=team, kid=new.kid)


def test_rotation_then_publish_signs_with_the_new_key_only(team, policy):
    bundle_publish(environment=policy["prod"])
    key = signing_key_rotate(team=team)
    assert SigningKey.objects.filter(status=SigningKeyStatus.ACTIVE).get() == key
    result = team_bundles_rebuild(team_id=team.pk)
    assert all(r.bundle.kid == key.kid for r in result if r.created)


# --- the bundle versions UI ------------------------------------------------------------------------


def test_versions_page_lists_versions_with_why_and_who(client, team, admin, policy):
    prod = policy["prod"]
    v1 = bundle_publish(environment=prod).bundle
    server_services.tool_update(
        tool=policy["git"].tools.get(name="git_status"), approval_required=True, actor=admin
    )
    v2 = bundle_publish(environment=prod, reason="tool git.git_status changed").bundle
    client.force_login(admin)
    html = client.get(f"/governance/bundles/?environment={prod.pk}").content.decode()
    assert f"v{v1.version}" in html and f"v{v2.version}" in html
    assert "tool git.git_status changed" in html
    assert f"{admin.username}: updated MCP tool git.git_status" in html
    assert v2.kid[:8] in html


def test_diff_page_shows_changed_paths(client, team, viewer, policy):
    prod = policy["prod"]
    v1 = bundle_publish(environment=prod).bundle
    role_services.role_create(team=team, name="ops_agent")
    limit_services.global_limits_set(team=team, max_calls_per_session=300)
    v2 = bundle_publish(environment=prod).bundle
    client.force_login(viewer)
    html = client.get(f"/governance/bundles/diff/?a={v2.pk}&b={v1.pk}").content.decode()
    assert "roles.ops_agent" in html and "added" in html
    assert "rate_limits.global.max_calls_per_session" in html and "200" in html and "300" in html
    detail = client.get(f"/governance/bundles/{v2.pk}/")
    assert detail.status_code == 200 and "ops_agent" in detail.content.decode()


def test_bundle_pages_are_team_scoped(client, team, outsider, viewer, policy):
    bundle = bundle_publish(environment=policy["prod"]).bundle
    assert client.get("/governance/bundles/").status_code == 302
    client.force_login(outsider)
    assert client.get(f"/governance/bundles/{bundle.pk}/").status_code == 404
    assert client.get(f"/governance/bundles/diff/?a={bundle.pk}&b={bundle.pk}").status_code == 404
    assert "mcp.git.write" not in client.get("/governance/bundles/").content.decode()
    client.force_login(viewer)
    count = PolicyBundle.objects.count()
    assert client.post("/governance/bundles/rebuild/").status_code == 403
    assert PolicyBundle.objects.count() == count


def test_rebuild_now_publishes_only_what_changed(client, team, admin, policy):
    client.force_login(admin)
    client.post("/governance/bundles/rebuild/")
    assert PolicyBundle.objects.filter(team=team).count() == 3
    response = client.post("/governance/bundles/rebuild/", follow=True)
    assert "Every bundle is up to date." in response.content.decode()
    assert PolicyBundle.objects.filter(team=team).count() == 3
    assert PolicyBundle.objects.filter(team=team).first().created_by == admin


def test_a_rediscovered_definition_changes_its_pinned_hash(team, policy):
    before = bundle_compile(environment=policy["prod"]).content["servers"]["git"]["tools"]["git_status"]
    changed = [dict(t) for t in GIT_TOOLS]
    changed[0]["description"] = "Show the working tree status (now also deletes things)"
    server_services.server_tools_record(server=policy["git"], tools=changed)
    after = bundle_compile(environment=policy["prod"]).content["servers"]["git"]["tools"]["git_status"]
    assert (
        before["definition_hash"]
        != after["definition_hash"]
        == tool_definition_hash("git_status", changed[0]["description"], changed[0]["input_schema"])
    )
    # An edit that does not go through discovery is seen too (the fingerprint is computed by the database).
    McpTool.objects.filter(server=policy["git"], name="git_status").update(input_schema={"type": "object"})
    again = bundle_compile(environment=policy["prod"]).content["servers"]["git"]["tools"]["git_status"]
    assert again["definition_hash"] == tool_definition_hash(
        "git_status", changed[0]["description"], {"type": "object"}
    )


def test_server_requests_policy_reaches_the_bundle_only_when_it_differs_from_the_default(team, policy):
    """A server's server-to-client policy is in the signed bundle as the gateway reads it; the default is
    left out, so servers without one keep the payload (and hash) gateways that predate the field accept."""
    v1 = bundle_publish(environment=policy["prod"]).bundle
    assert all("server_requests" not in s for s in v1.content["servers"].values())
    server_services.server_update(
        server=policy["git"],
        sampling_allowed=True,
        sampling_max_tokens=256,
        elicitation_url_domains=["login.example.com", "example.org"],
        roots_allowed=False,
    )
    v2 = bundle_publish(environment=policy["prod"]).bundle
    assert v2.version == v1.version + 1
    assert v2.content["servers"]["git"]["server_requests"] == {
        "sampling": True,
        "sampling_max_tokens": 256,
        "sampling_tools": False,
        "elicitation": True,
        "elicitation_url_domains": ["example.org", "login.example.com"],
        "roots": False,
    }
    signed = Bundle.from_json_bytes(b64url_decode(v2.jws.split(".")[1]))  # what the gateway enforces
    spec = signed.servers["git"].server_requests
    assert spec.sampling and spec.sampling_max_tokens == 256 and not spec.roots
    assert "server_requests" not in v2.content["servers"]["github_api"]
