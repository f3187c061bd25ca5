"""Portal (uvicorn) + real mcpgov gateways (subprocesses on stdio, real `time` MCP upstream):
a kill switch reaches every gateway within a second, a grant stops at its end on the gateway's own
clock, and a revocation reaches the gateway."""

from __future__ import annotations

import concurrent.futures
import contextlib
import shutil
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
from django.db import connections
from django.utils import timezone
from mcp import Client, StdioServerParameters

from governance.choices import AccessRequestStatus
from governance.models import AccessRequest, PolicyBundle
from governance.services.access import access_request_approve, access_request_create
from tests.e2e.portal_world import PY, ROOT, PortalBrowser, build_world, gateway_args, write_gateway_files
from tests.factories import PASSWORD

pytestmark = [pytest.mark.slow]

CALL = ("time__get_current_time", {"timezone": "UTC"})


def text(result) -> str:
    return "\n".join(getattr(c, "text", "") for c in result.content)


def run_async(fn, *args):
    """anyio.run in a thread of its own: Playwright's sync API may already run a loop in this one."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(anyio.run, fn, *args).result()


async def in_thread(fn, *args, **kwargs):
    """ORM work off the event loop (its own connection, closed after), so gateways keep being polled."""

    def run():
        try:
            return fn(*args, **kwargs)
        finally:
            connections.close_all()

    return await anyio.to_thread.run_sync(run)


@pytest.fixture
def workdir():
    # mkdtemp with a neutral prefix: pytest's tmp_path carries the test name, and words such as
    # "production" in a path are exactly what the gateway refuses.
    base = Path(tempfile.mkdtemp(prefix="mcpgov-ks-"))
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def world(transactional_db, workdir):
    world = build_world()
    write_gateway_files(workdir)  # the pinned keys and the MCP config, read by every gateway
    return world


def gateway(portal_server, world, workdir, env: str, token: str, name: str) -> StdioServerParameters:
    keys, config = workdir / "keys.json", workdir / "mcp.json"  # written by the `world` fixture
    gw_dir = workdir / name
    gw_dir.mkdir()
    args = gateway_args(portal=portal_server, token=token, keys=keys, config=config, env=env, workdir=gw_dir)
    return StdioServerParameters(command=PY, args=args, cwd=str(ROOT), env={"MCPGOV_LOG_LEVEL": "ERROR"})


async def refused_after(
    client: Client, start: float, marker: str, timeout: float = 15.0
) -> tuple[float, str]:
    """Call until the gateway refuses with `marker` in the message; seconds from `start` and the message."""
    while True:
        result = await client.call_tool(*CALL)
        if result.is_error:
            message = text(result)
            assert marker in message, message
            return time.monotonic() - start, message
        assert time.monotonic() - start < timeout, f"still allowed {timeout}s after the change"
        await anyio.sleep(0.01)


def test_flag_disabled_in_the_portal_stops_every_gateway(portal_server, world, workdir):
    tokens = world.issue("development", 4)
    admin = PortalBrowser(portal_server, world.admin.username, PASSWORD)
    servers = [
        gateway(portal_server, world, workdir, "development", t, f"gw{i}") for i, t in enumerate(tokens)
    ]
    reason = "INC-77: time server suspended pending investigation"

    async def scenario():
        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(Client(s, mode="legacy")) for s in servers]
            for c in clients:  # every gateway works before the change
                result = await c.call_tool(*CALL)
                assert not result.is_error, text(result)
            start = time.monotonic()
            # The admin throws the switch in the portal (the disable form of the kill-switch panel).
            await anyio.to_thread.run_sync(
                admin.post,
                f"/governance/flags/{world.flag.pk}/{world.env('development').pk}/disable/",
                {"reason": reason},
            )
            results = [None] * len(clients)

            async def watch(i, c):
                results[i] = await refused_after(
                    c, start, "MCP_KILL_SWITCH: mcp.time.all disabled by governance flag"
                )

            async with anyio.create_task_group() as tg:
                for i, c in enumerate(clients):
                    tg.start_soon(watch, i, c)
            return results

    results = run_async(scenario)
    delays = [d for d, _ in results]
    print(
        f"\nkill switch → refusal on {len(delays)} gateways: "
        f"median {statistics.median(delays) * 1000:.0f} ms, max {max(delays) * 1000:.0f} ms"
    )
    for _, message in results:
        assert f"reason: {reason}" in message and "since " in message
    # refused_after bounds each wait (a lost change fails); the speed goal is bench/killswitch_propagation.py's.


def test_a_kill_switch_reaches_a_running_gateway_as_a_flags_update_without_a_new_bundle(
    portal_server, world, workdir, settings
):
    """No rebuild runs (queued, no worker): the running gateway refuses the next call on the signed
    flags update alone, and the portal still serves the bundle it had."""
    from governance.models import EnforcementClient, FlagsUpdate
    from governance.services.flags import flag_disable
    from tests.conftest import rebuilds_queued_not_run

    [token] = world.issue("development", 1)
    dev = world.env("development")
    PortalBrowser(portal_server, world.admin.username, PASSWORD).close()  # the portal has served a page
    server = gateway(portal_server, world, workdir, "development", token, "gw-flags")
    reason = "INC-81: time server suspended"

    async def scenario():
        async with Client(server, mode="legacy") as client:
            result = await client.call_tool(*CALL)
            assert not result.is_error, text(result)
            versions = await in_thread(
                lambda: list(PolicyBundle.objects.filter(environment=dev).values_list("version", flat=True))
            )
            with rebuilds_queued_not_run(settings):
                await in_thread(
                    flag_disable, flag=world.flag, environment=dev, reason=reason, actor=world.admin
                )
                _, message = await refused_after(
                    client, time.monotonic(), "MCP_KILL_SWITCH: mcp.time.all disabled by governance flag"
                )
                after = await in_thread(
                    lambda: list(
                        PolicyBundle.objects.filter(environment=dev).values_list("version", flat=True)
                    )
                )
                reported = await in_thread(
                    lambda: EnforcementClient.objects.get(environment=dev).bundle_version
                )
                revision = await in_thread(
                    lambda: FlagsUpdate.objects.filter(environment=dev).latest().revision
                )
            return versions, after, reported, revision, message

    versions, after, reported, revision, message = run_async(scenario)
    assert f"reason: {reason}" in message
    assert after == versions and reported == max(versions)  # no bundle built, none downloaded
    assert revision >= 1


def test_grant_stops_at_its_end_on_the_gateway_and_revocation_reaches_it(portal_server, world, workdir):
    [token_a, token_b] = world.issue("production", 2)
    reviewer = PortalBrowser(portal_server, world.reviewer.username, PASSWORD)
    prod = world.env("production")

    def file_and_approve(seconds: float) -> AccessRequest:
        now = timezone.now()
        req = access_request_create(
            team=world.team,
            requester=world.requester,
            environment=prod,
            role=world.role,
            servers=[world.server],
            reason="e2e: read the production clock",
            starts_at=now,
            ends_at=now + timedelta(seconds=seconds),
        )
        return access_request_approve(access_request=req, reviewer=world.reviewer, reason="ok for the test")

    def latest_version() -> int:
        return (
            PolicyBundle.objects.filter(environment=prod)
            .order_by("-version")
            .values_list("version", flat=True)[0]
        )

    # The gateway's environment gate refuses to start in production without a live grant, so each
    # grant is approved first and its gateway started after.
    async def scenario():
        # 1. Revocation: a live grant, then a reviewer revokes it; the gateway refuses from its next call.
        grant = await in_thread(file_and_approve, 3600)
        async with Client(
            gateway(portal_server, world, workdir, "production", token_a, "gwa"), mode="legacy"
        ) as a:
            result = await a.call_tool(*CALL)
            assert not result.is_error, text(result)
            start = time.monotonic()
            await anyio.to_thread.run_sync(
                reviewer.post, f"/governance/access/{grant.pk}/revoke/", {"reason": "done early"}
            )
            revoke_delay, message = await refused_after(a, start, "production_environment")
            assert "no live production-access grant" in message

        # 2. Expiry: a grant ending a few seconds from now; nothing in the portal runs when it ends.
        grant = await in_thread(file_and_approve, 15)
        version = await in_thread(latest_version)
        async with Client(
            gateway(portal_server, world, workdir, "production", token_b, "gwb"), mode="legacy"
        ) as b:
            result = await b.call_tool(*CALL)
            assert not result.is_error, text(result)
            left = (grant.ends_at - timezone.now()).total_seconds()
            assert left > 0.5, "the gateway took too long to start for this check"
            await anyio.sleep(left + 0.2)
            result = await b.call_tool(*CALL)
            assert result.is_error and "production_environment" in text(result), text(result)
            return revoke_delay, grant, version

    revoke_delay, grant, version = run_async(scenario)
    print(f"\nrevocation → refusal: {revoke_delay * 1000:.0f} ms")
    # No task ran: the grant is still "approved" in the portal and still in the newest bundle.
    grant.refresh_from_db()
    assert grant.status == AccessRequestStatus.APPROVED
    latest = PolicyBundle.objects.filter(environment=prod).order_by("-version").first()
    assert latest.version == version
    assert [g["id"] for g in latest.content["grants"]] == [str(grant.pk)]
