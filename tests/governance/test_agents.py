"""Agent identity, portal side: agents as OAuth clients (django-oauth-toolkit), JWT access tokens that verify
with the team's JWKS (checked with PyJWT, an independent implementation), agents in the signed bundle,
revocation republishing it, and the interactive authorization code + PKCE flow in a real browser.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import urllib.parse

import jwt
import pytest
import requests
from django.test import Client

from governance.models import Agent, AgentRole, Environment, PolicyBundle
from governance.services.agents import (
    GRANT_AUTHORIZATION_CODE,
    agent_api_key_create,
    agent_create,
    api_key_sha256,
)
from governance.services.bundles import bundle_publish
from governance.services.signing import signing_key_ensure
from mcpgov.bundle import Bundle
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db

GATEWAY = "http://127.0.0.1:8765/mcp"


def _roles(team, *names):
    return [AgentRole.objects.get_or_create(team=team, name=n)[0] for n in names]


def _env(team, name="development"):
    return Environment.objects.get(team=team, name=name)


def headless_agent(team, slug="ci-bot", roles=("code_agent",)):
    return agent_create(
        team=team, name=slug, slug=slug, roles=_roles(team, *roles), environments=[_env(team)]
    )


def token_request(client, issued, **params):
    body = {"grant_type": "client_credentials", "resource": GATEWAY, **params}
    return client.post(
        "/oauth/token/",
        urllib.parse.urlencode(body),
        content_type="application/x-www-form-urlencoded",
        HTTP_AUTHORIZATION="Basic "
        + base64.b64encode(f"{issued.client_id}:{issued.client_secret}".encode()).decode(),
    )


def verify_with_jwks(token: str, jwks: dict, *, issuer: str, audience: str = GATEWAY) -> dict:
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt" and header["alg"] == "EdDSA"
    (jwk,) = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    return jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["EdDSA"], audience=audience, issuer=issuer)


def current_bundle(team, env_name="development") -> Bundle:
    row = PolicyBundle.objects.filter(environment=_env(team, env_name)).order_by("-version").first()
    payload = row.jws.split(".")[1]
    return Bundle.from_json_bytes(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_client_credentials_token_is_a_jwt_the_team_jwks_verifies(team, settings):
    settings.MCPGOV_PORTAL_URL = "https://portal.example.test/"
    issued = headless_agent(team, roles=("code_agent", "docs_agent"))
    web = Client()
    response = token_request(web, issued)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] <= 3600
    jwks = web.get("/api/v1/keys/?team=acme").json()
    claims = verify_with_jwks(body["access_token"], jwks, issuer="https://portal.example.test")
    agent = issued.agent
    assert claims["sub"] == f"agent:{agent.pk}"
    assert claims["client_id"] == issued.client_id
    assert (claims["team"], claims["agent"]) == ("acme", "ci-bot")
    assert claims["roles"] == ["code_agent", "docs_agent"]
    assert claims["environments"] == ["development"]
    assert claims["scope"] == "mcp"
    assert 0 < claims["exp"] - claims["iat"] <= 3600 and len(claims["jti"]) == 32
    # Audience-bound: the same token is not for another gateway.
    with pytest.raises(jwt.InvalidAudienceError):
        verify_with_jwks(
            body["access_token"], jwks, issuer="https://portal.example.test", audience="http://x/mcp"
        )


def test_another_teams_keys_do_not_verify_the_token(team, other_team):
    issued = headless_agent(team)
    web = Client()
    token = token_request(web, issued).json()["access_token"]
    signing_key_ensure(team=other_team)
    with pytest.raises(ValueError):  # no key with this kid in globex's JWKS
        verify_with_jwks(token, web.get("/api/v1/keys/?team=globex").json(), issuer="x")


def test_token_request_needs_exactly_one_resource_and_a_live_agent(team):
    issued = headless_agent(team)
    web = Client()
    response = token_request(web, issued, resource="")
    assert response.status_code == 400 and json.loads(response.content)["error"] == "invalid_target"
    wrong = token_request(
        web, type(issued)(agent=issued.agent, client_id=issued.client_id, client_secret="nope")
    )
    assert wrong.status_code == 401
    from governance.services.agents import agent_revoke

    agent_revoke(agent=issued.agent)
    assert token_request(web, issued).status_code == 401


def test_metadata_names_the_endpoints_and_s256(team, settings):
    settings.MCPGOV_PORTAL_URL = ""
    data = Client().get("/.well-known/oauth-authorization-server").json()
    assert data["issuer"] == "http://testserver"
    assert data["token_endpoint"].endswith("/oauth/token/")
    assert data["authorization_endpoint"].endswith("/oauth/authorize/")
    assert data["revocation_endpoint"].endswith("/oauth/revoke_token/")
    assert data["code_challenge_methods_supported"] == ["S256"]
    assert {"authorization_code", "client_credentials"} <= set(data["grant_types_supported"])
    assert "password" not in data["grant_types_supported"] and "implicit" not in data["grant_types_supported"]


def test_bundle_carries_agents_keys_and_revocation_republishes_at_once(
    team, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        issued = headless_agent(team)
        key = agent_api_key_create(agent=issued.agent)
    bundle = current_bundle(team)
    spec = bundle.agent(str(issued.agent.pk))
    assert spec is not None and spec.slug == "ci-bot" and not spec.revoked
    assert spec.roles == ("code_agent",) and spec.environments == ("development",)
    assert spec.api_key_sha256 == (api_key_sha256(key.key),)
    assert key.key.startswith("mcpgov_agent_")
    # An agent not allowed in staging is not in staging's bundle.
    bundle_publish(environment=_env(team, "staging"))
    assert current_bundle(team, "staging").agent(str(issued.agent.pk)) is None

    version = bundle.version
    from governance.services.agents import agent_revoke

    with django_capture_on_commit_callbacks(execute=True):
        agent_revoke(agent=issued.agent)
    after = current_bundle(team)
    assert after.version == version + 1
    revoked = after.agent(str(issued.agent.pk))
    assert revoked.revoked and revoked.api_key_sha256 == ()


def test_revoking_a_token_lists_its_jti_in_the_next_bundle(team, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        issued = headless_agent(team)
    web = Client()
    token = token_request(web, issued).json()["access_token"]
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    before = current_bundle(team).version
    with django_capture_on_commit_callbacks(execute=True):
        response = web.post(
            "/oauth/revoke_token/",
            urllib.parse.urlencode(
                {"token": token, "client_id": issued.client_id, "client_secret": issued.client_secret}
            ),
            content_type="application/x-www-form-urlencoded",
        )
    assert response.status_code == 200
    bundle = current_bundle(team)
    assert bundle.version == before + 1
    assert bundle.agent(str(issued.agent.pk)).revoked_jti == (jti,)


def test_an_agent_cannot_be_bound_to_another_teams_role(team, other_team):
    from django.core.exceptions import ValidationError

    theirs = AgentRole.objects.create(team=other_team, name="code_agent")
    with pytest.raises(ValidationError):
        agent_create(team=team, name="x", slug="x", roles=[theirs], environments=[_env(team)])
    assert not Agent.objects.filter(slug="x").exists()


@pytest.mark.parametrize(
    "uri",
    [
        "http://evil.example/callback",  # plaintext to a remote host: the code would travel in clear
        "http://localhost.evil.example/cb",  # a name that merely starts like the loopback one
        "http://10.0.0.5/cb",
        "javascript:alert(1)",
        "https://app.example/cb#frag",
        "https:///no-host",
    ],
)
def test_an_interactive_agent_refuses_redirect_uris_other_than_https_or_loopback(team, uri):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as refused:
        interactive_agent(team, f"https://app.example/ok {uri}")
    assert uri in str(refused.value)
    assert not Agent.objects.filter(slug="claude-code").exists()


@pytest.mark.parametrize(
    "uri", ["https://app.example/cb", "http://127.0.0.1/cb", "http://[::1]:9/cb", "http://localhost:6274/cb"]
)
def test_https_and_loopback_redirect_uris_are_accepted(team, uri):
    assert interactive_agent(team, uri).agent.application.redirect_uris == uri


# --- the interactive flow: authorization code + PKCE S256 through the real login and consent pages ----


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _post_form(url: str, data: dict) -> tuple[int, dict]:
    response = requests.post(url, data=data, timeout=30)
    return response.status_code, json.loads(response.content)


def interactive_agent(team, redirect_uri: str):
    return agent_create(
        team=team,
        name="Claude Code",
        slug="claude-code",
        roles=_roles(team, "code_agent"),
        environments=[_env(team)],
        grant=GRANT_AUTHORIZATION_CODE,
        public=True,
        redirect_uris=redirect_uri,
    )


def authorize_in_browser(page, base: str, client_id: str, redirect_uri: str, username: str) -> str:
    """Drive the real login and consent pages; returns the code the portal redirects back with."""
    verifier, challenge = _pkce()
    state = secrets.token_urlsafe(8)
    captured: list[str] = []
    page.route(
        f"{redirect_uri}**", lambda route: (captured.append(route.request.url), route.fulfill(body="ok"))
    )
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "scope": "mcp"}
    params |= {
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "resource": GATEWAY,
    }
    query = urllib.parse.urlencode(params)
    page.set_default_timeout(60_000)  # a loaded machine: the first portal page can be slow
    page.goto(f"{base}/oauth/authorize/?{query}")
    if "/login/" in page.url:  # the second time round the person is still signed in
        page.fill("#id_username", username)
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/oauth/authorize/**")
    page.click("input[name=allow]")
    page.wait_for_timeout(200)
    for _ in range(100):
        if captured:
            break
        page.wait_for_timeout(100)
    assert captured, page.content()
    params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(captured[0]).query))
    assert params["state"] == state
    return params["code"], verifier


@pytest.mark.slow
def test_authorization_code_with_pkce_through_login_and_consent_ends_in_a_token(
    portal_server, page, team, admin, outsider
):
    redirect_uri = "http://127.0.0.1:9/callback"
    issued = interactive_agent(team, redirect_uri)
    code, verifier = authorize_in_browser(page, portal_server, issued.client_id, redirect_uri, admin.username)
    # Without the verifier the code is refused (PKCE), with it the public client gets its token.
    status, body = _post_form(
        f"{portal_server}/oauth/token/",
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": issued.client_id,
            "code_verifier": "x" * 50,
        },
    )
    assert status == 400, body
    code, verifier = authorize_in_browser(page, portal_server, issued.client_id, redirect_uri, admin.username)
    status, body = _post_form(
        f"{portal_server}/oauth/token/",
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": issued.client_id,
            "code_verifier": verifier,
        },
    )
    assert status == 200, body
    jwks = requests.get(f"{portal_server}/api/v1/keys/?team=acme", timeout=30).json()
    issuer = requests.get(f"{portal_server}/.well-known/oauth-authorization-server", timeout=30).json()[
        "issuer"
    ]
    unverified = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert unverified["iss"] == issuer, (unverified["iss"], issuer)
    claims = verify_with_jwks(body["access_token"], jwks, issuer=issuer)
    assert claims["sub"] == f"agent:{issued.agent.pk}" and claims["roles"] == ["code_agent"]
    assert claims["aud"] == GATEWAY and claims["exp"] > time.time()


@pytest.mark.slow
def test_a_member_of_another_team_cannot_authorize_the_agent(portal_server, page, team, outsider):
    redirect_uri = "http://127.0.0.1:9/callback"
    issued = interactive_agent(team, redirect_uri)
    code, verifier = authorize_in_browser(
        page, portal_server, issued.client_id, redirect_uri, outsider.username
    )
    status, body = _post_form(
        f"{portal_server}/oauth/token/",
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": issued.client_id,
            "code_verifier": verifier,
        },
    )
    assert status in (400, 401) and "access_token" not in body
