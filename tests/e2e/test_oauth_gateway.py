"""The interactive agent journey across all three parts, each real: the SDK's OAuth client
(`mcp.client.auth.OAuthClientProvider`) meets `mcpgov gateway --http`'s 401, discovers the portal from
the gateway's Protected Resource Metadata, sends a person through the portal's real login and consent
pages in headless Chromium (authorization code + PKCE S256), exchanges the code at the portal (uvicorn,
PostgreSQL), and calls `mcp-server-time` through the gateway over streamable HTTP with the token. The
portal then records the session as that agent, on that client, in that role; revoking the agent in the
portal stops the same token at the running gateway.

tests/mcpgov/test_gateway_identity.py proves the gateway's side against the portal double with
PyJWT-minted tokens, tests/governance/test_agents.py the portal's authorize and token endpoints; this
is the one journey where the token the portal signs is the one the gateway verifies.
"""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import anyio
import httpx2
import pytest
from django.db import connection
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)

from audit.models import AgentSession
from governance.services.agents import GRANT_AUTHORIZATION_CODE, agent_create, agent_revoke
from tests.conftest import CHROMIUM, free_port, run_portal, wait_for_port
from tests.e2e.portal_world import PY, ROLE, ROOT, build_world, gateway_args, write_gateway_files
from tests.factories import PASSWORD

pytestmark = [pytest.mark.slow, pytest.mark.browser]

NOW_UTC = ("time__get_current_time", {"timezone": "UTC"})


class MemoryStorage:
    """The SDK's TokenStorage: the agent's pre-registered client (the Agents page) and its tokens."""

    def __init__(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info, self.tokens = client_info, None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


class LoopbackCallback:
    """The agent's redirect URI, served as real MCP clients do (a loopback HTTP listener): the port is
    bound before the agent is registered, so no other process can take it, and the query is kept."""

    def __init__(self) -> None:
        queries: list[dict[str, str]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                if url.path == "/callback":  # not the browser's /favicon.ico
                    queries.append(dict(urllib.parse.parse_qsl(url.query)))
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"You can close this window.")

            def log_message(self, *args):
                pass

        self.queries = queries
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}/callback"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class BrowserConsent:
    """redirect_handler + callback_handler: a person signs in and consents in Chromium, which follows the
    portal's redirect to the agent's loopback callback; its query goes to the SDK."""

    def __init__(self, callback: LoopbackCallback, username: str) -> None:
        self.callback_server, self.username = callback, username
        self.authorize_urls: list[str] = []
        self.refusals: list[str] = []

    async def redirect(self, url: str) -> None:
        from playwright.async_api import async_playwright

        self.authorize_urls.append(url)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=CHROMIUM,
                headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-quic"],
            )
            try:
                page = await browser.new_page()
                page.set_default_timeout(60_000)  # a loaded machine: the first portal page can be slow
                await page.goto(url)
                assert "/login/" in page.url, page.url  # the portal asks who this is first
                await page.fill("#id_username", self.username)
                await page.fill("#id_password", PASSWORD)
                await page.click("button[type=submit]")
                await page.wait_for_load_state()
                if not await page.locator("input[name=allow]").count():
                    # The portal will not authorize this client (e.g. its agent was revoked): no code.
                    self.refusals.append(await page.inner_text("body"))
                    raise RuntimeError(f"the portal refused to authorize: {self.refusals[-1]}")
                await page.click("input[name=allow]")
                for _ in range(600):
                    if self.callback_server.queries:
                        break
                    await page.wait_for_timeout(100)
                assert self.callback_server.queries, f"{page.url}: {await page.inner_text('body')}"
            finally:
                await browser.close()

    async def callback(self) -> AuthorizationCodeResult:
        query = self.callback_server.queries[-1]
        assert "code" in query, f"the portal redirected back without a code: {query}"
        return AuthorizationCodeResult(code=query["code"], state=query.get("state"), iss=query.get("iss"))


@pytest.fixture
def workdir():
    # a neutral prefix: pytest's tmp_path carries the test name, and words such as "production" in a
    # path are what the gateway refuses
    base = Path(tempfile.mkdtemp(prefix="mcpgov-oauth-"))
    yield base
    shutil.rmtree(base, ignore_errors=True)


def text(result) -> str:
    return "\n".join(getattr(c, "text", "") for c in result.content)


def start_gateway(portal: str, token: str, workdir: Path) -> tuple[subprocess.Popen, str]:
    keys, config = write_gateway_files(workdir)
    port = free_port()
    args = gateway_args(
        portal=portal, token=token, keys=keys, config=config, env="development", workdir=workdir
    )
    proc = subprocess.Popen(
        [PY, *args, "--http", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env={**os.environ, "MCPGOV_LOG_LEVEL": "WARNING"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    wait_for_port(proc, port, "gateway", timeout=90)
    return proc, f"http://127.0.0.1:{port}/mcp"


def stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err.decode()


def test_authorization_code_pkce_through_the_portal_ends_in_a_tool_call_through_the_gateway(
    transactional_db, workdir
):
    world = build_world()
    [client_token] = world.issue("development")
    callback = LoopbackCallback()
    redirect_uri = callback.uri
    agent = agent_create(
        team=world.team,
        name="Claude Code (admin)",
        slug="claude-code",
        roles=[world.role],
        environments=[world.env("development")],
        grant=GRANT_AUTHORIZATION_CODE,
        public=True,
        redirect_uris=redirect_uri,
    )
    with run_portal() as portal:
        proc, gateway_url = start_gateway(portal, client_token, workdir)
        try:
            consent = BrowserConsent(callback, world.admin.username)
            storage = MemoryStorage(
                OAuthClientInformationFull(
                    client_id=agent.client_id,
                    redirect_uris=[redirect_uri],
                    token_endpoint_auth_method="none",
                    grant_types=["authorization_code", "refresh_token"],
                    response_types=["code"],
                )
            )
            provider = OAuthClientProvider(
                server_url=gateway_url,
                client_metadata=OAuthClientMetadata(
                    redirect_uris=[redirect_uri], token_endpoint_auth_method="none", client_name="Claude Code"
                ),
                storage=storage,
                redirect_handler=consent.redirect,
                callback_handler=consent.callback,
            )
            outcome: dict = {}

            def revoke() -> None:
                try:
                    agent_revoke(agent=agent.agent)
                finally:
                    connection.close()  # this worker thread's own connection (the test database is dropped later)

            async def journey() -> None:
                # Without credentials: the gateway's 401 names its metadata (what the SDK follows).
                async with httpx2.AsyncClient(timeout=30) as bare:
                    r = await bare.post(gateway_url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
                    outcome["bare"] = (r.status_code, r.headers.get("www-authenticate", ""))
                http = httpx2.AsyncClient(auth=provider, timeout=60)
                try:
                    async with Client(
                        streamable_http_client(gateway_url, http_client=http), mode="2026-07-28"
                    ) as c:
                        tools = await c.list_tools()
                        outcome["tools"] = sorted(t.name for t in tools.tools)
                        outcome["call"] = await c.call_tool(*NOW_UTC)
                        outcome["token"] = storage.tokens.access_token
                        # The portal revokes the agent: the bundle long poll brings it to the gateway, the
                        # very token that just worked gets a 401 there, and the SDK's attempt to sign in
                        # again is refused by the portal (generous bound: a loaded machine).
                        await anyio.to_thread.run_sync(revoke)
                        outcome["revoked"] = True
                        deadline = time.monotonic() + 30
                        while time.monotonic() < deadline:
                            await c.call_tool(*NOW_UTC)
                            await anyio.sleep(0.2)
                except Exception as exc:  # which layer surfaces the refusal is the SDK's business
                    if not outcome.get("revoked"):
                        raise
                    outcome["after_revoke"] = repr(exc)
                finally:
                    await http.aclose()

            anyio.run(journey)
        finally:
            err = stop(proc)
            callback.close()
    status, challenge = outcome["bare"]
    assert status == 401 and "resource_metadata=" in challenge, (status, challenge, err[-2000:])
    # The SDK went to the portal's authorize endpoint, with PKCE S256 and the gateway as the resource.
    authorize = consent.authorize_urls[0]
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(authorize).query))
    assert authorize.startswith(f"{portal}/oauth/authorize/")
    assert query["code_challenge_method"] == "S256" and query["resource"] == gateway_url
    assert outcome["token"].count(".") == 2  # the portal's JWT, verified by the gateway offline
    assert outcome["tools"] == ["time__convert_time", "time__get_current_time"], err[-2000:]
    call = outcome["call"]
    assert not call.is_error and '"timezone": "UTC"' in text(call), text(call)
    assert "after_revoke" in outcome, ("the revoked agent's token still works", err[-2000:])
    # After the revocation the SDK tried to sign in again; the portal no longer knows the client.
    assert len(consent.authorize_urls) == 2 and len(consent.refusals) == 1, consent.refusals
    assert "Invalid client_id" in consent.refusals[0]
    # The portal recorded who (the agent, by OAuth), where (the client), as what (the role).
    [session] = AgentSession.objects.filter(registered_agent=agent.agent)
    assert (session.agent, session.agent_auth, session.role) == ("claude-code", "oauth", ROLE)
    assert session.client.name == "gw-dev-0000" and session.environment.name == "development"
