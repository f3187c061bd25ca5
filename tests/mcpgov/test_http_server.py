"""The gateway's HTTP server half (``mcpgov.serve.uvicorn_config``) and the fast path's request reading.

On a real uvicorn under the gateway's settings: a ``Date`` but no ``Server`` header, and no trust in
``X-Forwarded-*``. Then the fast path's header map and bearer backend give the answers of the
Starlette and SDK code they stand in for.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
from starlette.datastructures import Headers

from mcpgov.fast_http import _Backend, _HeaderMap
from tests.mcpgov.helpers import gateway_uvicorn
from tests.mcpgov.test_identity import RESOURCE, World, snapshot


def read_response(s: socket.socket, until: bytes) -> bytes:
    out = b""
    while until not in out:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    return out


REQUEST = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}"


async def json_app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    client = scope["client"][0] if scope.get("client") else "-"
    body = f'{{"client":"{client}","scheme":"{scope["scheme"]}"}}'.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def test_an_answer_has_a_date_and_no_server_header():
    with gateway_uvicorn(json_app) as port, socket.create_connection(("127.0.0.1", port), 30) as s:
        s.settimeout(30)
        s.sendall(REQUEST)
        head, _, body = read_response(s, b'"}').partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert b"\r\ndate: " in head.lower() and b"\r\nserver:" not in head.lower()
        assert body == b'{"client":"127.0.0.1","scheme":"http"}'


def test_forwarded_headers_from_a_local_process_are_not_trusted():
    forged = REQUEST.replace(b"Host:", b"X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\nHost:")
    with gateway_uvicorn(json_app) as port, socket.create_connection(("127.0.0.1", port), 30) as s:
        s.settimeout(30)
        s.sendall(forged)
        assert read_response(s, b'"}').endswith(b'{"client":"127.0.0.1","scheme":"http"}')


RAW_HEADERS = [
    (b"host", b"127.0.0.1:8765"),
    (b"accept", b"application/json, text/event-stream"),
    (b"authorization", b"Bearer first"),
    (b"authorization", b"Bearer second"),  # repeated: the first counts
    (
        b"Mcp-Session-Id",
        b"kept-its-case",
    ),  # never from uvicorn (it lower-cases); still looked up as Starlette does
    (b"x-latin", "caf\u00e9".encode("latin-1")),
]


@pytest.mark.parametrize(
    "name",
    [
        "host",
        "Host",
        "AUTHORIZATION",
        "authorization",
        "mcp-session-id",
        "Mcp-Session-Id",
        "x-latin",
        "absent",
    ],
)
def test_the_fast_paths_header_map_answers_as_starlettes_headers(name):
    ours, starlette = _HeaderMap(list(RAW_HEADERS)), Headers(raw=list(RAW_HEADERS))
    assert ours.get(name) == starlette.get(name)
    assert ours.get(name, "dflt") == starlette.get(name, "dflt")
    assert (name in ours) == (name in starlette)
    try:
        expected: Any = starlette[name]
    except KeyError:
        expected = KeyError
    if expected is KeyError:
        with pytest.raises(KeyError):
            ours[name]
    else:
        assert ours[name] == expected
    assert list(ours) == list(starlette) and ours.items() == starlette.items()


class _Conn:
    """What the bearer backend reads of a connection: its headers."""

    def __init__(self, authorization: str | None) -> None:
        raw = [(b"host", b"gw.example")]
        if authorization is not None:
            raw.append((b"authorization", authorization.encode()))
        self.headers = _HeaderMap(raw)


def test_the_fast_paths_bearer_backend_decides_as_the_sdks(tmp_path):
    """The same verifier behind the SDK's ``BearerAuthBackend`` and the fast path's: the same answer for
    every credential, twice (the second from what the fast path remembers), and for a token whose
    resource is another gateway's (the remembered comparison is per resource)."""
    import anyio
    from mcp.server.auth.middleware.bearer_auth import BearerAuthBackend
    from mcp.server.auth.provider import AccessToken
    from pydantic import AnyHttpUrl

    from mcpgov.serve import _SdkTokenVerifier

    world = World(tmp_path)
    world.agents = snapshot()
    verifier = _SdkTokenVerifier(world.verifier)

    class OtherResource:  # a verifier whose tokens name another resource: both backends must refuse
        async def verify_token(self, token: str) -> AccessToken | None:
            access = await verifier.verify_token(token)
            return access.model_copy(update={"resource": "https://other.example/mcp"}) if access else None

    credentials = {
        "valid": f"Bearer {world.token()}",
        "lower-case scheme": f"bearer {world.token()}",
        "expired": f"Bearer {world.token(exp=int(world.now) - 3600)}",
        # inside the verifier's leeway, past the SDK backend's own check (no leeway): refused
        "just expired": f"Bearer {world.token(exp=int(world.now) - 30)}",
        "another team": f"Bearer {world.token(team='other')}",
        "another audience": f"Bearer {world.token(aud='https://other.example/mcp')}",
        "not a JWT": "Bearer not-a-token",
        "basic": "Basic dXNlcjpwYXNz",
        "none": None,
    }

    def seen(result: Any) -> Any:
        if result is None:
            return None
        creds, user = result
        return (creds.scopes, user.display_name, user.access_token.model_dump())

    async def both(backend_verifier: Any) -> dict[str, Any]:
        url = AnyHttpUrl(RESOURCE)
        sdk = BearerAuthBackend(backend_verifier, resource_server_url=url)
        fast = _Backend(backend_verifier, resource_server_url=url)
        out = {}
        for what, header in credentials.items():
            for _ in range(2):
                expected = seen(await sdk.authenticate(_Conn(header)))
                assert seen(await fast.authenticate(_Conn(header))) == expected, what
            out[what] = expected is not None
        return out

    accepted = anyio.run(both, verifier)
    assert accepted == {what: what in ("valid", "lower-case scheme") for what in credentials}
    assert not any(anyio.run(both, OtherResource()).values())

    async def raw_name_in_capitals() -> tuple[Any, Any]:  # never from uvicorn, which lower-cases names
        raw = [(b"Authorization", f"Bearer {world.token()}".encode())]
        sdk_conn, fast_conn = _Conn(None), _Conn(None)
        sdk_conn.headers, fast_conn.headers = Headers(raw=raw), _HeaderMap(raw)  # Starlette's, ours
        url = AnyHttpUrl(RESOURCE)
        sdk = BearerAuthBackend(verifier, resource_server_url=url)
        fast = _Backend(verifier, resource_server_url=url)
        return await sdk.authenticate(sdk_conn), await fast.authenticate(fast_conn)

    assert anyio.run(raw_name_in_capitals) == (None, None)  # Starlette never finds it either


def test_a_remembered_access_token_is_dropped_with_the_identity_it_was_built_for(tmp_path):
    import anyio

    from mcpgov.serve import _SdkTokenVerifier

    world = World(tmp_path)
    world.agents = snapshot()
    verifier = _SdkTokenVerifier(world.verifier)
    token = world.token()
    first = anyio.run(verifier.verify_token, token)
    assert anyio.run(verifier.verify_token, token) is first  # the same identity: the same model
    world.agents = snapshot(revoked=True)  # a new bundle revokes the agent
    assert anyio.run(verifier.verify_token, token) is None
    world.agents = snapshot(roles=["dev", "ops"])  # and another one restores it, with a new role
    again = anyio.run(verifier.verify_token, token)
    assert again is not first and again.claims["mcpgov_identity"].roles == ("dev",)


def test_an_api_keys_access_token_is_built_for_each_request_and_not_remembered(tmp_path):
    import hashlib

    import anyio

    from mcpgov.identity import API_KEY_PREFIX
    from mcpgov.serve import _SdkTokenVerifier

    key = API_KEY_PREFIX + "k" * 32
    world = World(tmp_path)
    world.agents = snapshot(api_key_sha256=[hashlib.sha256(key.encode()).hexdigest()])
    verifier = _SdkTokenVerifier(world.verifier)
    first, second = anyio.run(verifier.verify_token, key), anyio.run(verifier.verify_token, key)
    assert first is not None and first.subject == second.subject == "agent:7"
    assert first is not second and not verifier._tokens  # a new identity each time: nothing held
    world.agents = snapshot(api_key_sha256=[hashlib.sha256(key.encode()).hexdigest()], revoked=True)
    assert anyio.run(verifier.verify_token, key) is None
