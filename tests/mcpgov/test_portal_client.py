"""The bundle manager against PortalTestDouble: ETag long poll, the on-disk cache, failing closed."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import anyio
import pytest

from mcpgov.bundle_manager import BundleManager
from mcpgov.decision import ToolCall, compile_policy, decide
from mcpgov.portal_client import PortalClient
from mcpgov.session import SessionState
from mcpgov.verify import BadSignature, load_jwks
from tests.mcpgov.helpers import Signer, bundle_doc, iso
from tests.mcpgov.portal_double import TOKEN


def fresh_doc(version: int, **kw):
    now = datetime.now(UTC)
    return bundle_doc(
        version=version,
        issued_at=iso(now - timedelta(minutes=1)),
        expires_at=iso(now + timedelta(hours=1)),
        **kw,
    )


@pytest.fixture
def signer():
    return Signer()


def refresh_once(m: BundleManager) -> bool:
    """One poll and a clean close, in one event loop (a client's connections belong to their loop)."""

    async def go():
        try:
            return await m.refresh()
        finally:
            await m.client.aclose()

    return anyio.run(go)


def manager(tmp_path, signer, url):
    keys = load_jwks(signer.write_jwks(tmp_path / "keys.json"))
    return BundleManager(
        keys,
        environment="development",
        state_dir=tmp_path / "state",
        client=PortalClient(url, TOKEN, timeout=2),
    )


def test_long_poll_installs_new_bundles_and_reports_its_version(tmp_path, signer, portal):
    portal.publish(signer.sign_doc(fresh_doc(1)), 1)
    m = manager(tmp_path, signer, portal.url)
    seen = []
    m.listeners.append(lambda v: seen.append(v.version))

    async def go():
        try:
            assert await m.refresh() is True
            t0 = time.monotonic()
            assert await m.refresh(wait=1) is False  # unchanged: 304 after the wait
            assert time.monotonic() - t0 >= 0.9
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: m.refresh(wait=20))
                await anyio.sleep(0.2)
                t0 = time.monotonic()
                portal.publish(signer.sign_doc(fresh_doc(2)), 2)
            assert time.monotonic() - t0 < 10  # woken by v2, not by its 20 s wait
        finally:
            await m.client.aclose()

    anyio.run(go)
    assert seen == [1, 2] and m.current.version == 2
    assert portal.reported_versions[:3] == [0, 1, 1]
    assert (tmp_path / "state" / "bundle.jws").read_text() == m.current.jws


def test_restart_with_the_portal_down_uses_the_cached_bundle_until_it_expires(tmp_path, signer, portal):
    now = datetime.now(UTC)
    short = bundle_doc(
        version=4, issued_at=iso(now - timedelta(minutes=1)), expires_at=iso(now + timedelta(seconds=2))
    )
    portal.publish(signer.sign_doc(short), 4)
    m = manager(tmp_path, signer, portal.url)
    refresh_once(m)
    portal.stop()

    restarted = manager(tmp_path, signer, portal.url)  # same state dir, portal unreachable
    assert restarted.load_cache().version == 4

    with pytest.raises(Exception):  # noqa: B017 - connection refused
        refresh_once(restarted)
    assert restarted.current.version == 4
    policy = compile_policy(restarted.current.bundle, "code_agent")
    st = SessionState(session_id="s", role="code_agent")
    call = ToolCall("time", "get_current_time", {})
    assert decide(policy, st, call, time.time()).allowed
    d = decide(policy, st, call, now.timestamp() + 2)
    assert d.trigger == "bundle_expired" and "fails closed" in d.message


def test_a_bad_bundle_is_never_used_and_the_previous_one_stays(tmp_path, signer, portal):
    portal.publish(signer.sign_doc(fresh_doc(1)), 1)
    m = manager(tmp_path, signer, portal.url)

    async def go():
        try:
            await m.refresh()
            portal.publish(Signer().sign_doc(fresh_doc(2)), 2)  # signed by a key nobody pinned
            assert await m.refresh() is False
            # the same version with other content is a replay
            portal.publish(signer.sign_doc(fresh_doc(1, flags=[{"name": "x", "enabled": False}])), 1)
            assert await m.refresh() is False
        finally:
            await m.client.aclose()

    anyio.run(go)
    assert m.current.version == 1 and m.rejected == 2
    assert m.current.bundle.flags == ()
    cached = tmp_path / "state" / "bundle.jws"
    assert cached.read_text() == m.current.jws


def test_tampered_cache_is_not_used(tmp_path, signer, portal):
    portal.publish(signer.sign_doc(fresh_doc(1)), 1)
    m = manager(tmp_path, signer, portal.url)
    refresh_once(m)
    cached = tmp_path / "state" / "bundle.jws"
    h, p, s = cached.read_text().split(".")
    cached.write_text(f"{h}.{p}.{s[:-4]}AAAA")
    again = manager(tmp_path, signer, portal.url)
    assert again.load_cache() is None and again.current is None
    with pytest.raises(BadSignature):
        again.install(cached.read_text(), source="test")
