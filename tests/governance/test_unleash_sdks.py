"""The served Unleash features, evaluated by two official SDKs, agree with the gateway in every cell.

The matrix: agent roles (and no role) by the team's environments (one enforcement-client token
each; the flag states differ per environment) by flags with IN / NOT_IN strategies (among them the
seed's `mcp.database.write`: on in development, only for database_agent and master_agent in
staging, switched off in production) by the ways an SDK context can carry the role. The Python
`UnleashClient` and the Node `unleash-client` (npm) both fetch the features from the live portal;
every answer is compared with the portal's own: the published bundle's `Flag.is_on_for(role)`,
which is what the gateway enforces.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from governance.models import Environment, PolicyBundle
from governance.services.clients import client_create
from governance.services.flags import flag_create, flag_set_state
from governance.services.servers import server_create
from mcpgov.bundle import Flag as BundleFlag

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
NODE_SCRIPT = Path(__file__).with_name("node") / "unleash_eval.js"

ROLES = ["database_agent", "master_agent", "code_agent", None]
ENVIRONMENTS = ["development", "staging", "production"]


def _in(*roles):
    return {"context_name": "role", "operator": "IN", "values": list(roles)}


def _not_in(*roles):
    return {"context_name": "role", "operator": "NOT_IN", "values": list(roles)}


# (enabled, constraints); each flag gets a different one in each environment.
STRATEGIES = [
    (True, []),
    (True, [_in("database_agent", "master_agent")]),
    (True, [_not_in("database_agent")]),
    (True, [_in("database_agent", "code_agent"), _not_in("code_agent")]),
    (True, [_not_in("database_agent"), _not_in("master_agent")]),
    (True, [_in("code_agent")]),
    (True, [_in("database_agent"), _in("master_agent")]),  # never on: off for everyone, explicitly
    (False, [_not_in("database_agent")]),
]
SEED_DATABASE_WRITE = {
    "development": (True, []),
    "staging": (True, [_in("database_agent", "master_agent")]),
    "production": (False, []),
}


def contexts_for(role: str | None) -> list[dict]:
    """The documented ways to give an SDK the role (docs/flags.md)."""
    if role is None:
        return [{}]
    return [
        {"properties": {"role": role}},
        {"role": role},  # a top-level field: Node reads it there, Python moves it to properties
        {"userId": role},  # the seed's example
        {"userId": role, "properties": {"role": role}},
    ]


@pytest.fixture
def matrix(team):
    """{environment name: token}, flags set up in every environment; returns (tokens, flag names)."""
    environments = {name: Environment.objects.get(team=team, name=name) for name in ENVIRONMENTS}
    names = []
    database = server_create(team=team, slug="database", category="database")
    seed_flag = flag_create(team=team, server=database, capability="write", name="mcp.database.write")
    for env_name, (enabled, constraints) in SEED_DATABASE_WRITE.items():
        flag_set_state(
            flag=seed_flag,
            environment=environments[env_name],
            enabled=enabled,
            constraints=constraints,
            reason="seed",
        )
    names.append(seed_flag.name)
    for k in range(len(STRATEGIES)):
        server = server_create(team=team, slug=f"server_{k}", category="api")
        flag = flag_create(team=team, server=server, capability="write", name=f"mcp.server{k}.write")
        for i, env_name in enumerate(ENVIRONMENTS):
            enabled, constraints = STRATEGIES[(k + i) % len(STRATEGIES)]
            flag_set_state(
                flag=flag,
                environment=environments[env_name],
                enabled=enabled,
                constraints=constraints,
                reason=f"matrix {k}/{i}",
            )
        names.append(flag.name)
    tokens = {
        env_name: client_create(team=team, environment=env, name=f"gw-{env_name}").token
        for env_name, env in environments.items()
    }
    return tokens, names


def gateway_flags(team, env_name: str) -> dict[str, BundleFlag]:
    bundle = PolicyBundle.objects.filter(team=team, environment__name=env_name).order_by("-version").first()
    return {f["name"]: BundleFlag.model_validate(f) for f in bundle.content["flags"]}


def python_sdk_answers(base_url: str, token: str, flags: list[str], contexts: list[dict]) -> list[list[bool]]:
    from UnleashClient import UnleashClient

    sdk = UnleashClient(
        url=f"{base_url}/api",
        app_name="mcp-governance-check",
        instance_id=f"py-{uuid.uuid4().hex[:8]}",
        custom_headers={"Authorization": token},
        refresh_interval=60,
        disable_metrics=True,
        disable_registration=True,
        cache_directory=None,
    )
    sdk.initialize_client()
    try:
        assert sdk.is_initialized
        return [[sdk.is_enabled(name, ctx) for name in flags] for ctx in contexts]
    finally:
        sdk.destroy()


def node_sdk_answers(base_url: str, token: str, flags: list[str], contexts: list[dict]) -> list[list[bool]]:
    request = {"url": f"{base_url}/api/", "token": token, "flags": flags, "contexts": contexts}
    done = subprocess.run(
        ["node", str(NODE_SCRIPT)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("sdk", ["python", "node"])
def test_official_sdks_agree_with_the_gateway_on_every_cell(portal_server, team, matrix, sdk):
    tokens, flags = matrix
    answers_of = python_sdk_answers if sdk == "python" else node_sdk_answers
    cells = mismatches = 0
    mismatch_list = []
    for env_name, token in tokens.items():
        expected_flags = gateway_flags(team, env_name)
        assert set(expected_flags) == set(flags)
        cases = [(role, ctx) for role in ROLES for ctx in contexts_for(role)]
        answers = answers_of(portal_server, token, flags, [ctx for _role, ctx in cases])
        for (role, ctx), row in zip(cases, answers, strict=True):
            for name, got in zip(flags, row, strict=True):
                cells += 1
                expected = expected_flags[name].is_on_for(role or "")
                if got is not expected:
                    mismatches += 1
                    mismatch_list.append((env_name, name, ctx, got, expected))
    assert mismatches == 0, mismatch_list[:10]
    assert cells == len(ENVIRONMENTS) * len(flags) * sum(len(contexts_for(r)) for r in ROLES)
    # The seed's example, spelled out: the kill switch holds for both SDKs.
    staging = answers_of(
        portal_server,
        tokens["staging"],
        ["mcp.database.write"],
        [{"userId": "database_agent"}, {"properties": {"role": "code_agent"}}],
    )
    production = answers_of(
        portal_server,
        tokens["production"],
        ["mcp.database.write"],
        [{"properties": {"role": "database_agent"}}],
    )
    assert staging == [[True], [False]] and production == [[False]]


@pytest.mark.parametrize("sdk", ["python", "node"])
def test_a_role_given_two_different_ways_fails_closed(portal_server, team, matrix, sdk):
    """Given different roles as `role` and `userId`, an exclusion (NOT_IN) through either wins."""
    tokens, flags = matrix
    answers_of = python_sdk_answers if sdk == "python" else node_sdk_answers
    pairs = [("database_agent", "code_agent"), ("code_agent", "database_agent")]
    contexts = [{"userId": a, "properties": {"role": b}} for a, b in pairs]
    for env_name, token in tokens.items():
        expected_flags = gateway_flags(team, env_name)
        # flags without an IN constraint: on only if neither role is excluded
        deny_only = [n for n in flags if all(c.operator == "NOT_IN" for c in expected_flags[n].constraints)]
        answers = answers_of(portal_server, token, deny_only, contexts)
        for (a, b), row in zip(pairs, answers, strict=True):
            for name, got in zip(deny_only, row, strict=True):
                flag = expected_flags[name]
                assert got is (flag.is_on_for(a) and flag.is_on_for(b)), (env_name, name, a, b)
