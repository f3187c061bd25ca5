"""Bundle build time: compile, validate, sign and store one environment's bundle for a large team.

Builds a team with 1,000 servers (5 tools each) x 200 roles (20 allowed + 5 forbidden servers
each), 300 bindings, 200 per-server limits, 100 flags and 20 live grants in a throwaway database,
then times `bundle_compile` (read + validate + canonical JSON + content hash) and
`bundle_publish` (the same, plus signing and the INSERT) and prints the figures. Goal: < 1 s.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/mcpgov .venv/bin/python bench/bundle_build.py

Uses a separate database `<name>_bench_<pid>` (PostgreSQL) or a temporary SQLite file, dropped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


@contextlib.contextmanager
def bench_database():
    """A fresh, migrated database for the benchmark; yields a DATABASE_URL other processes can use."""
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection

    db = settings.DATABASES["default"]

    tmpdir = None
    if "sqlite" in db["ENGINE"]:
        tmpdir = tempfile.mkdtemp(prefix="mcpgov-bench-")
        db["TEST"] = {**db.get("TEST", {}), "NAME": str(Path(tmpdir) / "bench.sqlite3")}
    else:
        db["TEST"] = {**db.get("TEST", {}), "NAME": f"{db['NAME']}_bench_{os.getpid()}"}
    old_name = db["NAME"]
    name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    if "sqlite" in db["ENGINE"]:
        url = f"sqlite:///{name}"
    else:
        url = f"postgres://{db.get('USER') or 'postgres'}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{name}"
        if db.get("PASSWORD"):
            url = url.replace("@", f":{db['PASSWORD']}@", 1)
    try:
        yield url
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


def populate(
    *,
    slug="bench",
    servers=1000,
    tools_per_server=5,
    roles=200,
    allowed=20,
    forbidden=5,
    bindings=300,
    limits=200,
    flags=100,
    grants=20,
):
    """A large team written with bulk inserts (the build, not the writes, is what is measured)."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from governance.choices import AccessRequestStatus, RuleKind
    from governance.models import (
        AccessRequest,
        AgentRole,
        Environment,
        Flag,
        FlagState,
        GlobalRateLimit,
        McpServer,
        McpTool,
        RoleServerRule,
        ServerBinding,
        ServerRateLimit,
    )
    from governance.services.teams import team_bootstrap

    now = timezone.now()
    team = team_bootstrap(slug=slug, name=slug.title())
    McpServer.objects.bulk_create(
        [
            McpServer(
                team=team,
                slug=f"server_{i:04d}",
                category="api",
                transport="stdio",
                command="python",
                args=["-m", f"server_{i}"],
                cost_per_call="0.0010",
            )
            for i in range(servers)
        ],
        batch_size=1000,
    )
    server_ids = list(McpServer.objects.filter(team=team).order_by("slug").values_list("id", flat=True))
    McpTool.objects.bulk_create(
        [
            McpTool(
                server_id=sid,
                name=f"tool_{t}",
                description=f"Tool {t} of server {n}",
                input_schema={
                    "type": "object",
                    "properties": {"path": {"type": "string"}, "limit": {"type": "integer"}},
                },
                read_only_hint=t % 2 == 0,
                approval_required=t == 4,
                discovered_at=now,
            )
            for n, sid in enumerate(server_ids)
            for t in range(tools_per_server)
        ],
        batch_size=2000,
    )
    AgentRole.objects.bulk_create([AgentRole(team=team, name=f"role_{r:03d}") for r in range(roles)])
    role_ids = list(AgentRole.objects.filter(team=team).order_by("name").values_list("id", flat=True))
    rules = []
    for r, rid in enumerate(role_ids):
        chosen = [server_ids[(r * 7 + k) % len(server_ids)] for k in range(allowed + forbidden)]
        rules += [
            RoleServerRule(
                role_id=rid, server_id=sid, kind=RuleKind.ALLOWED if k < allowed else RuleKind.FORBIDDEN
            )
            for k, sid in enumerate(chosen)
        ]
    RoleServerRule.objects.bulk_create(rules, batch_size=5000)
    prod = Environment.objects.get(team=team, name="production")
    prod.forbidden_patterns = ["*staging*", "*test*", "*dev*"]
    prod.save()
    ServerBinding.objects.bulk_create(
        [
            ServerBinding(
                environment=prod,
                server_id=sid,
                target=f"https://api.example.com/{i}",
                target_kind="url",
                permission="read_write" if i % 3 == 0 else "read_only",
            )
            for i, sid in enumerate(server_ids[:bindings])
        ]
    )
    ServerRateLimit.objects.bulk_create(
        [
            ServerRateLimit(
                team=team, server_id=sid, max_calls_per_session=100, max_write_calls_per_session=10
            )
            for sid in server_ids[:limits]
        ]
    )
    GlobalRateLimit.objects.create(
        team=team, max_calls_per_session=1000, max_calls_per_minute=60, pause_at_percent=80
    )
    Flag.objects.bulk_create(
        [
            Flag(team=team, name=f"mcp.server_{i:04d}.write", server_id=sid, capability="write")
            for i, sid in enumerate(server_ids[:flags])
        ]
    )
    FlagState.objects.bulk_create(
        [
            FlagState(
                flag=flag,
                environment=prod,
                enabled=i % 10 != 0,
                reason="bench",
                constraints=[{"context_name": "role", "operator": "IN", "values": ["role_001", "role_002"]}],
            )
            for i, flag in enumerate(Flag.objects.filter(team=team))
        ]
    )
    user = get_user_model().objects.create(username=f"{slug}-requester")
    for g in range(grants):
        req = AccessRequest.objects.create(
            team=team,
            requester=user,
            environment=prod,
            role_id=role_ids[g],
            reason="bench",
            starts_at=now - timedelta(minutes=5),
            ends_at=now + timedelta(hours=4),
            status=AccessRequestStatus.APPROVED,
            review_deadline=now + timedelta(hours=1),
        )
        req.servers.set(server_ids[g * 3 : g * 3 + 3])
    return team, prod


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--roles", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    with bench_database() as url:
        from django.db import connection

        from governance.models import GlobalRateLimit, PolicyBundle, RoleServerRule
        from governance.services.bundles import bundle_compile, bundle_publish

        t0 = time.perf_counter()
        team, prod = populate(servers=args.servers, roles=args.roles)
        print(f"database        {connection.vendor} ({url.split('@')[-1] if '@' in url else url})")
        print(
            f"policy          {args.servers} servers x 5 tools, {args.roles} roles "
            f"({RoleServerRule.objects.count()} allow/forbid rules), 300 bindings, 200 limits, 100 flags, 20 grants"
            f" — written in {time.perf_counter() - t0:.1f}s"
        )

        compile_times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            compiled = bundle_compile(environment=prod)
            compile_times.append(time.perf_counter() - t)
        publish_times = []
        for i in range(args.repeat):
            # a changed field each time, so every publish makes (and signs) a new version
            GlobalRateLimit.objects.filter(team=team).update(max_calls_per_session=1000 + i + 1)
            t = time.perf_counter()
            result = bundle_publish(environment=prod, reason="bench")
            publish_times.append(time.perf_counter() - t)
            assert result.created
        t = time.perf_counter()
        unchanged = bundle_publish(environment=prod)
        noop = time.perf_counter() - t
        assert not unchanged.created
        latest = PolicyBundle.objects.filter(environment=prod).order_by("-version").first()
        size = len(latest.jws)

        def ms(values):
            return f"median {statistics.median(values) * 1000:7.1f} ms   max {max(values) * 1000:7.1f} ms"

        print(
            f"payload         {len(compiled.content['servers'])} servers, {len(compiled.content['roles'])} roles, "
            f"JWS {size / 1024:.0f} KiB"
        )
        print(f"compile         {ms(compile_times)}   (read + validate + canonical JSON + content hash)")
        print(f"publish (new)   {ms(publish_times)}   (compile + sign + store, new version)")
        print(f"publish (same)  {noop * 1000:7.1f} ms   (content unchanged: no new version)")
        goal = statistics.median(publish_times) < 1.0
        print(f"goal < 1 s per build: {'met' if goal else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
