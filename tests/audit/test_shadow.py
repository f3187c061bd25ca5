"""Shadow bundles on the portal side: signed with the team's key under the shadow JWS type (so the live
path refuses them), served to the team's own gateways only, published and dropped by admins (page and
API), dropped with the draft when it is promoted or discarded; shadow verdicts in the audit events are
validated and inside the hash chain."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from audit.hashing import event_canonical
from governance.choices import DraftStatus, RuleKind
from governance.models import AgentRole, Environment, PolicyBundle, PolicyDraft, ShadowBundle
from governance.services import drafts
from governance.services import environments as env_services
from governance.services import roles as role_services
from governance.services import servers as server_services
from governance.services.bundles import team_bundles_rebuild
from governance.services.clients import client_create, client_revoke
from governance.services.signing import jwks_document, signing_key_ensure
from governance.services.teams import team_policy_settings_set
from mcpgov.bundle import canonical_json
from mcpgov.verify import SHADOW_JWS_TYPE, MalformedBundle, UnknownKeyId, parse_jwks, verify_bundle
from tests.audit.conftest import event, issue_client, open_session, post_events


@pytest.fixture
def drafted(team, admin):
    git = server_services.server_create(team=team, slug="git", command="python")
    server_services.server_tools_record(
        server=git, tools=[{"name": "write_file", "annotations": {"readOnlyHint": False}}]
    )
    role = role_services.role_create(team=team, name="code_agent")
    role_services.role_server_add(role=role, server=git, kind=RuleKind.ALLOWED)
    for env in Environment.objects.filter(team=team):
        env_services.binding_set(environment=env, server=git, target="/srv", permission="read_write")
    team_bundles_rebuild(team_id=team.pk)
    team_policy_settings_set(team=team, policy_edits_immediate=False)
    dev = Environment.objects.get(team=team, name="development")
    with pytest.raises(drafts.DraftChangeRecorded):
        env_services.binding_set(environment=dev, server=git, permission="read_only", actor=admin)
    return drafts.draft_open(team=team)


def gateway_api(token: str) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return api


def test_the_shadow_is_signed_by_the_team_key_and_never_verifies_as_a_live_bundle(
    team, other_team, admin, drafted
):
    made = drafts.draft_shadow_publish(draft=drafted, actor=admin)
    assert {s.environment.name for s in made} == {"development", "staging", "production"}
    shadow = ShadowBundle.objects.get(environment__team=team, environment__name="development")
    keys = parse_jwks(jwks_document(team=team))
    verified = verify_bundle(shadow.jws, keys, team="acme", environment="development", typ=SHADOW_JWS_TYPE)
    assert verified.bundle.environment_policy.bindings["git"].permission == "read_only"
    live = PolicyBundle.objects.filter(environment=shadow.environment).order_by("-version").first()
    assert verified.version == live.version == shadow.version
    assert live.content["environment_policy"]["bindings"]["git"]["permission"] == "read_write"
    with pytest.raises(MalformedBundle, match="typ must be mcpgov-bundle"):
        verify_bundle(shadow.jws, keys, team="acme", environment="development")  # the live path
    with pytest.raises(MalformedBundle):  # and a live bundle is not a shadow
        verify_bundle(live.jws, keys, team="acme", environment="development", typ=SHADOW_JWS_TYPE)
    signing_key_ensure(team=other_team)
    other_keys = parse_jwks(jwks_document(team=other_team))
    with pytest.raises(UnknownKeyId):
        verify_bundle(shadow.jws, other_keys, typ=SHADOW_JWS_TYPE)


def test_the_shadow_endpoint_serves_the_clients_own_environment_only(
    team, other_team, admin, viewer, drafted
):
    dev = Environment.objects.get(team=team, name="development")
    mine = issue_client(team, dev, "gw-dev")
    theirs = issue_client(other_team, other_team.environments.get(name="development"), "gw-other")
    url = "/api/v1/bundle/shadow/"
    assert gateway_api(mine.token).get(url).json()["code"] == "no_shadow"
    drafts.draft_shadow_publish(draft=drafted, actor=admin)
    shadow = ShadowBundle.objects.get(environment=dev)
    response = gateway_api(mine.token).get(url)
    assert response.status_code == 200 and response["Content-Type"] == "application/jose"
    assert response.content.decode() == shadow.jws and response["ETag"] == f'"{shadow.etag}"'
    assert gateway_api(mine.token).get(url, HTTP_IF_NONE_MATCH=f'"{shadow.etag}"').status_code == 304
    assert gateway_api(theirs.token).get(url).status_code == 404  # another team's gateway: its own (none)
    person = APIClient()
    person.force_login(viewer)
    assert person.get(url).status_code in (401, 403)  # people do not fetch bundles
    assert APIClient().get(url).status_code in (401, 403)
    client_revoke(client=mine.client)
    assert gateway_api(mine.token).get(url).status_code == 401
    # the live bundle endpoint still serves the live bundle
    fresh = client_create(team=team, environment=dev, name="gw-dev-2")
    live = gateway_api(fresh.token).get("/api/v1/bundle/")
    assert live.status_code == 200 and live.content.decode() != shadow.jws


def test_shadow_steps_need_change_policy_and_go_with_the_draft(team, admin, viewer, outsider, drafted):
    url = f"/api/v1/policy-drafts/{drafted.pk}/shadow/"

    def as_(user):
        api = APIClient()
        api.force_login(user)
        return api

    assert as_(viewer).post(url).status_code == 403
    assert as_(outsider).post(url).status_code == 404
    assert not ShadowBundle.objects.exists()
    response = as_(admin).post(url)
    assert response.status_code == 200, response.content
    assert response.json()["shadow_environments"] == ["development", "production", "staging"]
    assert as_(viewer).delete(url).status_code == 403 and ShadowBundle.objects.count() == 3
    assert as_(admin).delete(url).status_code == 200 and not ShadowBundle.objects.exists()
    assert as_(admin).delete(url).status_code == 400  # nothing to drop
    # promoted: the draft publishes and its shadow goes
    drafts.draft_shadow_publish(draft=drafted, actor=admin)
    drafts.draft_publish(draft=drafted, actor=admin)
    assert not ShadowBundle.objects.exists()
    assert PolicyDraft.objects.get(pk=drafted.pk).status == DraftStatus.PUBLISHED


def test_discarding_the_draft_drops_its_shadow_and_the_pages(client, team, admin, viewer, drafted):
    client.force_login(viewer)
    assert client.post("/governance/draft/shadow/").status_code == 403
    assert not ShadowBundle.objects.exists()
    client.force_login(admin)
    page = client.post("/governance/draft/shadow/", follow=True).content.decode()
    assert "Published as a shadow" in page and ShadowBundle.objects.count() == 3
    shadow_page = client.get("/audit/shadow/").content.decode()
    assert "Promote: publish the draft" in shadow_page and "Drop the shadow" in shadow_page
    assert "The draft has changed since" not in shadow_page
    with pytest.raises(drafts.DraftChangeRecorded):
        role_services.role_update(
            role=AgentRole.objects.get(team=team, name="code_agent"), description="more", actor=admin
        )
    assert "The draft has changed since" in client.get("/audit/shadow/").content.decode()
    client.force_login(viewer)
    viewer_page = client.get("/audit/shadow/").content.decode()
    assert "No difference yet." in viewer_page and "Drop the shadow" not in viewer_page
    drafts.draft_discard(draft=drafted, actor=admin)
    assert not ShadowBundle.objects.exists()


def test_shadow_verdicts_are_validated_and_hashed(team, gateway):
    sid = open_session(gateway)
    good = {"decision": "refuse", "trigger": "write_in_read_session", "bundle_version": 3}
    for bad in (
        {"decision": "maybe", "trigger": None, "bundle_version": 3},
        {"decision": "refuse", "trigger": "no_such_trigger", "bundle_version": 3},
        {"decision": "allow", "trigger": None},
        {**good, "extra": 1},
        "refuse",
        {**good, "bundle_version": -1},
    ):
        response = post_events(gateway, sid, [event(1, shadow=bad)])
        assert response.status_code == 400, bad
        assert "shadow" in response.content.decode()
    assert post_events(gateway, sid, [event(1, shadow=good), event(2, shadow=good)]).status_code == 200
    fields = dict(
        session=sid,
        seq=1,
        call_id="c",
        phase="intent",
        ts="t",
        server="s",
        tool="t",
        arguments_json="{}",
        args_summary="",
        status=None,
        result_summary="",
        bytes_=None,
        duration_ms=None,
        trigger=None,
        bundle_version=None,
        result_json="null",
    )
    assert '"shadow"' not in event_canonical(**fields)  # events without a shadow hash as before
    doc = {
        "args_summary": "",
        "arguments": {},
        "bundle_version": None,
        "bytes": None,
        "call_id": "c",
        "duration_ms": None,
        "phase": "intent",
        "result": None,
        "result_summary": "",
        "seq": 1,
        "server": "s",
        "session": sid,
        "shadow": good,
        "status": None,
        "tool": "t",
        "trigger": None,
        "ts": "t",
    }
    assert event_canonical(**fields, shadow=good).encode() == canonical_json(doc)
    # stored and exported with the shadow, and the chain verifies
    from audit.exports import event_record
    from audit.models import AuditEvent
    from audit.services.digests import audit_verify

    stored = AuditEvent.objects.get(session_id=sid, seq=1)
    assert stored.shadow == good and event_record(stored, include_payloads=False)["shadow"] == good
    assert audit_verify(team=team)[2] == []
