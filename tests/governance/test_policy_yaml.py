"""Import and export of policy in the seed's YAML shape: round trip, replace semantics, errors with lines."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from django.apps import apps
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from governance import models as gm
from governance.choices import ServerCategory
from governance.services.policy_yaml import (
    SERVER_LIMIT_KEYS,
    PolicyImportError,
    infer_category,
    policy_export,
    policy_import,
)
from portal.models import ChangeRecord

SEED_FILE = Path(__file__).resolve().parents[2] / "governance" / "fixtures" / "seed_policy.yaml"
SEED = SEED_FILE.read_text()
# The fixture is a comment header followed by the seed's three blocks, byte for byte.
SEED_BLOCKS = SEED[SEED.index("mcp_access:") :]
BLOCK_TEXT = {
    "mcp_access": SEED_BLOCKS[: SEED_BLOCKS.index("environments:")].rstrip("\n") + "\n",
    "environments": SEED_BLOCKS[
        SEED_BLOCKS.index("environments:") : SEED_BLOCKS.index("rate_limits:")
    ].rstrip("\n")
    + "\n",
    "rate_limits": SEED_BLOCKS[SEED_BLOCKS.index("rate_limits:") :],
}
# Every table of the governance app, and the change history.
POLICY_MODELS = (*apps.get_app_config("governance").get_models(), ChangeRecord)


def snapshot() -> dict[str, object]:
    """Row counts of every policy table and the change history, plus the policy's content."""
    counts: dict[str, object] = {model.__name__: model._default_manager.count() for model in POLICY_MODELS}
    counts["rules"] = sorted(gm.RoleServerRule.objects.values_list("role__name", "server__slug", "kind"))
    counts["bindings"] = sorted(
        gm.ServerBinding.objects.values_list(
            "environment__name", "server__slug", "permission", "target", "order"
        )
    )
    counts["environments"] = sorted(
        gm.Environment.objects.values_list("name", "requires_authorization", "forbidden_patterns", "note")
    )
    counts["limits"] = sorted(
        gm.ServerRateLimit.objects.values_list("server__slug", *SERVER_LIMIT_KEYS), key=str
    )
    counts["global"] = list(
        gm.GlobalRateLimit.objects.values_list(
            "max_calls_per_session", "max_calls_per_minute", "pause_at_percent"
        )
    )
    return counts


def canonical(doc: dict) -> dict:
    """`doc` as the canonical export writes it: roles by name, their server lists sorted (they are sets)."""
    access = doc.get("mcp_access")
    if isinstance(access, dict) and isinstance(access.get("roles"), dict):
        access["roles"] = {
            name: {key: sorted(servers) for key, servers in lists.items()}
            for name, lists in sorted(access["roles"].items())
        }
    return doc


def body(exported: str) -> str:
    """The export without its comment header."""
    return exported[exported.index("mcp_access:") :]


@pytest.fixture
def seeded(team, admin):
    policy_import(team=team, text=SEED, actor=admin)
    return team


def test_seed_round_trip_is_byte_for_byte(team, admin):
    report = policy_import(team=team, text=SEED, actor=admin)
    assert report.changed and report.blocks == ("mcp_access", "environments", "rate_limits")
    exported = policy_export(team=team)
    assert yaml.safe_load(exported) == canonical(yaml.safe_load(SEED))

    # Key order, flow lists, quoting and blank lines are the seed's own; only the order of roles, of
    # their server lists and of per-server limits is canonical (sorted by name), so the environments
    # block (already in position order) is byte for byte.
    def envs(text: str) -> str:
        return text[text.index("environments:") : text.index("rate_limits:")]

    assert envs(exported) == envs(SEED_BLOCKS)
    assert "      forbidden_servers: [cloud_infrastructure, database_write, shell_execution]\n" in exported


@pytest.mark.parametrize("block", ["mcp_access", "environments", "rate_limits"])
def test_each_block_alone_round_trips_and_leaves_the_others_alone(team, admin, block):
    before_other = {b: yaml.safe_load(policy_export(team=team))[b] for b in BLOCK_TEXT if b != block}
    report = policy_import(team=team, text=BLOCK_TEXT[block], actor=admin)
    assert report.blocks == (block,)
    exported = yaml.safe_load(policy_export(team=team))
    assert exported[block] == canonical(yaml.safe_load(BLOCK_TEXT[block]))[block]
    for other, data in before_other.items():
        assert exported[other] == data


def test_import_creates_missing_servers_with_categories_from_their_names(seeded):
    categories = dict(gm.McpServer.objects.filter(team=seeded).values_list("slug", "category"))
    assert categories == {
        "filesystem_read_only": "filesystem",
        "github_api": "api",
        "shell_execution": "shell_execution",
        "database_write": "database",
        "cloud_infrastructure": "cloud_infrastructure",
        "database_read_only": "database",
        "filesystem_write": "filesystem",
        "local_filesystem": "filesystem",
        "local_database": "database",
        "staging_filesystem": "filesystem",
        "staging_database": "database",
        "filesystem": "filesystem",
    }


@pytest.mark.parametrize(
    ("name", "category"),
    [
        ("filesystem", ServerCategory.FILESYSTEM),
        ("shell", ServerCategory.SHELL_EXECUTION),
        ("database_read_only", ServerCategory.DATABASE),
        ("github_api", ServerCategory.API),
        ("cloud_infrastructure", ServerCategory.CLOUD_INFRASTRUCTURE),
        ("staging_database", ServerCategory.DATABASE),
        ("time", ServerCategory.OTHER),
        ("apis", ServerCategory.OTHER),
    ],
)
def test_category_inferred_from_the_name(name, category):
    assert infer_category(name) == category


def test_existing_servers_keep_their_catalogue_entry(team, admin):
    from governance.services.servers import server_create

    server = server_create(team=team, actor=admin, slug="github_api", category="web", description="GitHub")
    policy_import(team=team, text=SEED, actor=admin)
    server.refresh_from_db()
    assert (server.category, server.description) == ("web", "GitHub")


def test_import_goes_through_the_services_and_adds_one_import_record(team, admin):
    report = policy_import(team=team, text=SEED, actor=admin)
    records = ChangeRecord.objects.filter(team=team)
    imports = records.filter(action="import")
    assert imports.count() == 1
    record = imports.get()
    assert record.actor == admin
    assert record.object_repr == "mcp_access, environments, rate_limits"
    assert f"{report.count('added')} added" in record.summary
    assert "role code_agent" in record.changes["added"]
    # One history row per object the services wrote, by the importing admin.
    assert records.filter(object_type="MCP server", action="create").count() == 12
    assert records.filter(object_type="agent role", action="create", actor=admin).count() == 3
    assert records.filter(object_type="server binding").count() == 4
    assert records.filter(object_type="server rate limit").count() == 4


def test_report_lists_every_object(team, admin):
    report = policy_import(team=team, text=SEED, actor=admin)
    lines = report.lines
    assert lines[0] == "Imported mcp_access, environments, rate_limits into team acme."
    assert (
        "+ role code_agent: allowed_servers [filesystem_read_only, github_api]; "
        "forbidden_servers [shell_execution, database_write, cloud_infrastructure]"
    ) in lines
    assert "+ server github_api: new in the catalogue (category api)" in lines
    assert (
        "+ binding staging/staging_database: url postgresql://staging-db.internal:5432/staging_db, read_only"
        in lines
    )
    assert "~ environment development: forbidden_patterns [] -> [*prod*, *production*, *live*]" in lines
    assert (
        "~ environment production: note none -> No agent may connect to production MCP servers without "
        "documented authorization and a bounded time window."
    ) in lines
    assert (
        "~ global rate limits: max_calls_per_session none -> 200; max_calls_per_minute none -> 30; "
        "pause_at_percent none -> 80" in lines
    )
    assert (
        "+ server rate limits filesystem: max_write_calls_per_session 30, max_read_calls_per_session 200"
        in lines
    )
    assert lines[-1] == "In all: 23 added, 4 changed, 0 removed."
    assert str(report) == "\n".join(lines)


def test_second_import_of_the_same_file_reports_no_changes_and_writes_nothing(seeded, admin):
    before = snapshot()
    report = policy_import(team=seeded, text=SEED, actor=admin)
    assert not report.changed
    assert report.lines == [
        "Imported mcp_access, environments, rate_limits into team acme.",
        "No changes: the team's policy already matches the file.",
    ]
    assert snapshot() == before


def test_dry_run_writes_nothing_and_previews_the_real_import(team, admin):
    before = snapshot()
    preview = policy_import(team=team, text=SEED, actor=admin, dry_run=True)
    assert snapshot() == before
    assert preview.dry_run and preview.changed
    assert preview.lines[0].startswith(
        "Dry run of an import of mcp_access, environments, rate_limits into team acme"
    )
    assert preview.lines[-1] == "Would be: 23 added, 4 changed, 0 removed."
    real = policy_import(team=team, text=SEED, actor=admin)
    assert real.changes == preview.changes


def test_import_replaces_the_blocks_it_holds(seeded, admin):
    text = textwrap.dedent("""\
        mcp_access:
          default: deny
          roles:
            code_agent:
              allowed_servers: [github_api, filesystem_read_only]
              forbidden_servers: [shell_execution]
            review_agent:
              allowed_servers: [github_api]
              forbidden_servers: []
            database_agent:
              allowed_servers: [filesystem_write]
              forbidden_servers: [database_read_only]
        environments:
          development:
            allowed_servers:
              - name: local_filesystem
                path: ./src
                permissions: read_only
            forbidden_patterns: ["*prod*"]
          qa:
            access: explicit_human_authorization_required
            allowed_servers:
              - name: qa_api
                url: https://qa.example.com/mcp
                permissions: read_only
          production:
            access: explicit_human_authorization_required
            allowed_servers: []
        rate_limits:
          per_server:
            github_api:
              max_calls_per_session: 60
            shell_execution:
              max_calls_per_session: 20
              max_execution_time_seconds: 30
              max_response_bytes: 65536
        """)
    report = policy_import(team=seeded, text=text, actor=admin)
    lines = report.lines
    assert "- role documentation_agent" in lines
    assert "+ role review_agent: allowed_servers [github_api]; forbidden_servers []" in lines
    assert (
        "~ role code_agent: forbidden_servers [cloud_infrastructure, database_write, "
        "shell_execution] -> [shell_execution]"
    ) in lines
    # A server moves from one list to the other.
    assert (
        "~ role database_agent: allowed_servers [database_read_only] -> [filesystem_write]; "
        "forbidden_servers [cloud_infrastructure, filesystem_write, shell_execution] -> [database_read_only]"
    ) in lines
    assert "- environment staging" in lines
    assert "+ environment qa: access explicit_human_authorization_required" in lines
    assert "+ server qa_api: new in the catalogue (category api)" in lines
    assert "- binding development/local_database" in lines
    assert (
        "~ binding development/local_filesystem: target ./ -> ./src; permissions read_write -> read_only"
        in lines
    )
    assert "~ production note" not in lines
    assert (
        "~ global rate limits: max_calls_per_session 200 -> none; max_calls_per_minute 30 -> none; "
        "pause_at_percent 80 -> none" in lines
    )
    assert "- server rate limits filesystem" in lines
    assert "~ server rate limits shell_execution: max_response_bytes none -> 65536" in lines
    assert (
        "~ server rate limits github_api: max_calls_per_session 50 -> 60; max_calls_per_minute 10 -> none"
        in lines
    )

    exported = yaml.safe_load(policy_export(team=seeded))
    assert exported == canonical(yaml.safe_load(text))
    assert not policy_import(team=seeded, text=text, actor=admin).changed
    # Servers are catalogue entries, not part of any block: none is removed.
    assert gm.McpServer.objects.filter(team=seeded, slug="database_write").exists()


def test_blocks_not_in_the_file_are_untouched(seeded, admin):
    before = yaml.safe_load(policy_export(team=seeded))
    policy_import(team=seeded, text="mcp_access:\n  default: deny\n  roles: {}\n", actor=admin)
    after = yaml.safe_load(policy_export(team=seeded))
    assert after["mcp_access"] == {"default": "deny", "roles": {}}
    assert after["environments"] == before["environments"]
    assert after["rate_limits"] == before["rate_limits"]


def test_names_that_yaml_would_misread_are_quoted_on_export(team, admin):
    text = textwrap.dedent("""\
        mcp_access:
          default: deny
          roles:
            "yes":
              allowed_servers: ["null", "123", "on"]
              forbidden_servers: []
        environments:
          development:
            allowed_servers:
              - name: "true"
                path: "#not-a-comment: really"
                permissions: read_only
            forbidden_patterns: ["*prod*", "[live]", "it's \\"quoted\\"", "ünïcode"]
            note: "Line one\\nline two # not a comment"
          production:
            access: explicit_human_authorization_required
            allowed_servers: []
        """)
    policy_import(team=team, text=text, actor=admin)
    exported = policy_export(team=team)
    data = yaml.safe_load(exported)
    assert {k: data[k] for k in ("mcp_access", "environments")} == canonical(yaml.safe_load(text))
    assert 'allowed_servers: ["123", "null", "on"]' in exported


def test_a_new_team_exports_a_file_that_imports_cleanly(team, other_team, admin):
    exported = policy_export(team=team)
    assert "  roles: {}" in exported and "rate_limits: {}" in exported
    report = policy_import(team=other_team, text=exported)
    assert not report.changed
    assert policy_export(team=other_team).replace("globex", "acme") == exported


def test_only_policy_editors_may_import(seeded, reviewer):
    before = snapshot()
    with pytest.raises(PermissionDenied):
        policy_import(team=seeded, text=SEED.replace("200", "300"), actor=reviewer)
    with pytest.raises(PermissionDenied):
        policy_import(team=seeded, text=SEED.replace("200", "300"), actor=reviewer, dry_run=True)
    assert snapshot() == before


# --- bad files: the message names the line, and nothing is written ---------------------------

ACCESS = "mcp_access:\n  default: deny\n  roles:\n"


def replace_line(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def seed_line(fragment: str) -> int:
    """The 1-based line of the seed fixture holding `fragment`."""
    return next(i for i, line in enumerate(SEED.splitlines(), 1) if fragment in line)


BAD_FILES = [
    pytest.param(
        replace_line(SEED, "[database_read_only]", "[database_read_only"),
        seed_line("forbidden_servers: [shell_execution, filesystem_write"),
        "YAML syntax error",
        id="yaml-syntax",
    ),
    pytest.param(
        SEED + "kill_switch:\n  enabled: true\n",
        seed_line("max_execution_time_seconds") + 1,
        "unknown key 'kill_switch'; expected mcp_access, environments, rate_limits",
        id="unknown-top-key",
    ),
    pytest.param(
        replace_line(
            SEED,
            "      forbidden_servers: [shell_execution, database_write, cloud_infrastructure]\n\n"
            "    documentation_agent:",
            "      forbidden_servers: [shell_execution, database_write, cloud_infrastructure]\n"
            "      denied_servers: [github_api]\n\n    documentation_agent:",
        ),
        seed_line("documentation_agent:") - 1,
        "code_agent.denied_servers: unknown key 'denied_servers'",
        id="unknown-role-key",
    ),
    pytest.param(
        replace_line(SEED, "max_calls_per_session: 200", 'max_calls_per_session: "200"'),
        seed_line("max_calls_per_session: 200"),
        "rate_limits.global.max_calls_per_session: expected a whole number, got the text '200'",
        id="string-limit",
    ),
    pytest.param(
        replace_line(SEED, "allowed_servers: [database_read_only]", "allowed_servers: database_read_only"),
        seed_line("allowed_servers: [database_read_only]"),
        "database_agent.allowed_servers: expected a list, got the text 'database_read_only'",
        id="scalar-for-list",
    ),
    pytest.param(
        replace_line(
            SEED,
            "        permissions: read_only\n      - name: staging_database",
            "        permissions: admin\n      - name: staging_database",
        ),
        seed_line("name: staging_filesystem") + 2,
        "environments.staging.allowed_servers[0].permissions: unknown permission 'admin'; "
        "use read_only or read_write",
        id="unknown-permission",
    ),
    pytest.param(
        replace_line(
            SEED,
            "allowed_servers: [database_read_only]",
            "allowed_servers: [database_read_only, shell_execution]",
        ),
        seed_line("forbidden_servers: [shell_execution, filesystem_write"),
        "shell_execution is both in allowed_servers and forbidden_servers of database_agent",
        id="allowed-and-forbidden",
    ),
    pytest.param(
        replace_line(SEED, "default: deny", "default: allow"),
        seed_line("default: deny"),
        "mcp_access.default: the default must be deny",
        id="default-allow",
    ),
    pytest.param(
        replace_line(SEED, "max_calls_per_minute: 10", "max_calls_per_minute: 0"),
        seed_line("max_calls_per_minute: 10"),
        "per_server.github_api.max_calls_per_minute: 0 is not valid: Ensure this value is greater than or "
        "equal to 1.",
        id="zero-limit",
    ),
    pytest.param(
        replace_line(SEED, "max_rows_returned: 10000", "max_rows_returned: -5"),
        seed_line("max_rows_returned: 10000"),
        "-5 is not valid",
        id="negative-limit",
    ),
    pytest.param(
        replace_line(SEED, "pause_at_percent: 80", "pause_at_percent: 150"),
        seed_line("pause_at_percent: 80"),
        "pause_at_percent: 150 is not valid: Ensure this value is less than or equal to 100.",
        id="pause-over-100",
    ),
    pytest.param(
        replace_line(SEED, "pause_at_percent: 80", "pause_at_percent: 0"),
        seed_line("pause_at_percent: 80"),
        "greater than or equal to 1",
        id="pause-zero",
    ),
    pytest.param(
        replace_line(SEED, "    access: explicit_human_authorization_required\n", ""),
        seed_line("  production:"),
        "environments.production: Production always requires explicit human authorization; it cannot be "
        "switched off. Add `access: explicit_human_authorization_required`.",
        id="production-no-authorization",
    ),
    pytest.param(
        replace_line(SEED, "access: explicit_human_authorization_required", "access: open"),
        seed_line("access: explicit_human_authorization_required"),
        "unknown access 'open'",
        id="unknown-access",
    ),
    pytest.param(
        replace_line(
            SEED,
            "    github_api:\n      max_calls_per_session: 50",
            "    github_api:\n      max_calls_per_session: 50\n      max_calls_per_session: 60",
        ),
        seed_line("max_calls_per_session: 50") + 1,
        "max_calls_per_session' appears twice (first on line",
        id="duplicate-key",
    ),
    pytest.param(
        replace_line(SEED, "[filesystem_read_only, github_api]", "[filesystem_read_only, GitHub API]"),
        seed_line("allowed_servers: [filesystem_read_only, github_api]"),
        "code_agent.allowed_servers[1]: 'GitHub API' is not valid: Use lowercase letters",
        id="bad-server-name",
    ),
    pytest.param(
        replace_line(
            SEED,
            "        path: ./\n        permissions: read_write",
            "        path: ./\n        url: file:///srv\n        permissions: read_write",
        ),
        seed_line("path: ./") + 1,
        "url: give a path or a url, not both",
        id="path-and-url",
    ),
    pytest.param(
        replace_line(
            SEED,
            "        url: postgresql://localhost:5432/dev_db\n        permissions: read_write\n",
            "        url: postgresql://localhost:5432/dev_db\n",
        ),
        seed_line("name: local_database"),
        "allowed_servers[1]: permissions is missing",
        id="missing-permissions",
    ),
    pytest.param(
        replace_line(SEED, "url: postgresql://localhost:5432/dev_db", "url: localhost:5432/dev_db"),
        seed_line("url: postgresql://localhost:5432/dev_db"),
        "development.allowed_servers[1].url: A URL target needs a scheme",
        id="url-without-scheme",
    ),
    pytest.param(
        SEED[: SEED.index("\n  production:")] + "\n" + SEED[SEED.index("rate_limits:") - 1 :],
        seed_line("environments:"),
        "environments: production is not in the file, but cannot be removed: The production environment "
        "cannot be deleted.",
        id="production-removed",
    ),
    pytest.param(
        replace_line(SEED, '      - "*prod*"\n      - "*live*"\n', "").replace(
            "    forbidden_patterns:\n\n  production", "    forbidden_patterns: []\n\n  production"
        ),
        seed_line("staging:") + 8,
        "an empty list; leave forbidden_patterns out",
        id="empty-patterns",
    ),
    pytest.param(
        ACCESS + "    code_agent:\n      allowed_servers: [github_api]\n      forbidden_servers: []\n"
        "rate_limits:\n  global: {}\n",
        8,
        "rate_limits.global: no limits",
        id="empty-global",
    ),
    pytest.param("# nothing here\n", None, "the file is empty", id="empty-file"),
    pytest.param(
        "mcp_access:\n  default: !!python/name:os.system\n  roles: {}\n",
        2,
        "cannot read '' (tag:yaml.org,2002:python/name:os.system)",
        id="python-tag",
    ),
    pytest.param(
        "mcp_access:\n  default: deny\n  roles: {}\nrate_limits:\n  global:\n    pause_at_percent: 5\x07\n",
        6,
        "YAML syntax error: unacceptable character #x0007",
        id="control-character",
    ),
    pytest.param(
        "rate_limits:\n  global:\n    max_calls_per_session: yes\n",
        3,
        "max_calls_per_session: expected a whole number, got the boolean yes",
        id="boolean-limit",
    ),
    pytest.param(
        ACCESS + "    123:\n      allowed_servers: []\n      forbidden_servers: []\n",
        4,
        "mcp_access.roles: keys must be names, got the number 123",
        id="number-as-role-name",
    ),
    pytest.param(
        "environments:\n  development:\n  production:\n    access: explicit_human_authorization_required\n",
        2,
        "environments.development: expected a mapping, got nothing (null)",
        id="null-environment",
    ),
    pytest.param("- mcp_access\n", 1, "expected a mapping, got a list", id="top-level-list"),
]


@pytest.mark.parametrize(("text", "line", "message"), BAD_FILES)
def test_bad_file_names_the_line_and_writes_nothing(seeded, admin, text, line, message):
    before = snapshot()
    with pytest.raises(PolicyImportError) as raised:
        policy_import(team=seeded, text=text, actor=admin)
    error = raised.value
    assert message in str(error)
    assert error.line == line
    if line is not None:
        assert str(error).startswith(f"line {line}: ")
    assert snapshot() == before
    with pytest.raises(PolicyImportError):
        policy_import(team=seeded, text=text, actor=admin, dry_run=True)
    assert snapshot() == before


def test_a_service_refusal_late_in_the_file_undoes_the_earlier_writes(seeded, admin):
    """The new role and server are written before production is reached; the refusal rolls them back."""
    text = replace_line(
        SEED,
        "    code_agent:",
        "    new_agent:\n      allowed_servers: [brand_new_api]\n"
        "      forbidden_servers: []\n    code_agent:",
    )
    text = replace_line(text, "    access: explicit_human_authorization_required\n", "")
    before = snapshot()
    with pytest.raises(PolicyImportError, match="Production always requires"):
        policy_import(team=seeded, text=text, actor=admin)
    assert snapshot() == before
    assert not gm.McpServer.objects.filter(slug="brand_new_api").exists()


def test_the_error_is_a_validation_error_with_one_message_per_problem(seeded, admin):
    text = replace_line(SEED, "default: deny", "default: allow")
    text = replace_line(text, "pause_at_percent: 80", "pause_at_percent: 101")
    with pytest.raises(ValidationError) as raised:
        policy_import(team=seeded, text=text, actor=admin)
    assert isinstance(raised.value, PolicyImportError)
    assert raised.value.messages == [
        f"line {seed_line('default: deny')}: mcp_access.default: the default must be deny (anything not allowed "
        "is refused), got 'allow'",
        f"line {seed_line('pause_at_percent')}: rate_limits.global.pause_at_percent: 101 is not valid: Ensure this "
        "value is less than or equal to 100.",
    ]
    assert str(raised.value) == "\n".join(raised.value.messages)


def test_every_problem_in_the_file_is_reported(seeded, admin):
    text = replace_line(SEED, "default: deny", "default: allow")
    text = replace_line(text, "pause_at_percent: 80", "pause_at_percent: 101")
    text = replace_line(
        text,
        "        permissions: read_only\n      - name: staging_database",
        "        permissions: write\n      - name: staging_database",
    )
    with pytest.raises(PolicyImportError) as raised:
        policy_import(team=seeded, text=text, actor=admin)
    assert [p.line for p in raised.value.problems] == [
        seed_line("default: deny"),
        seed_line("name: staging_filesystem") + 2,
        seed_line("pause_at_percent"),
    ]


def test_a_role_in_use_cannot_be_removed_by_an_import(seeded, admin, requester):
    now = timezone.now()
    gm.AccessRequest.objects.create(
        team=seeded,
        requester=requester,
        reason="incident 42",
        environment=gm.Environment.objects.get(team=seeded, name="production"),
        role=gm.AgentRole.objects.get(team=seeded, name="database_agent"),
        starts_at=now,
        ends_at=now + timedelta(hours=1),
        review_deadline=now + timedelta(hours=1),
    )
    text = SEED[: SEED.index("\n    database_agent:")] + "\n\n" + SEED[SEED.index("environments:") :]
    before = snapshot()
    with pytest.raises(PolicyImportError) as raised:
        policy_import(team=seeded, text=text, actor=admin)
    assert str(raised.value) == (
        f"line {seed_line('  roles:')}: mcp_access.roles: database_agent is not in the file, but cannot be "
        "removed: it is still used by 1 production-access requests"
    )
    assert snapshot() == before
