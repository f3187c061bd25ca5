"""Policy as code: `manage.py policy_diff` exit codes for a GitOps job, and the canonical YAML export
(the same policy always exports to the same bytes, whatever order it was entered in)."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from governance.choices import RuleKind
from governance.models import AgentRole, Environment
from governance.services import environments as env_services
from governance.services import limits as limit_services
from governance.services import policy_yaml
from governance.services import roles as role_services
from governance.services import servers as server_services


def _policy(team, order):
    """The same policy entered in a given order of servers and roles."""
    servers = {slug: server_services.server_create(team=team, slug=slug, command="python") for slug in order}
    roles = {
        name: role_services.role_create(team=team, name=name) for name in reversed(["code_agent", "db_agent"])
    }
    for slug in order:
        role_services.role_server_add(role=roles["code_agent"], server=servers[slug], kind=RuleKind.ALLOWED)
    role_services.role_server_add(role=roles["db_agent"], server=servers["zeta_db"], kind=RuleKind.FORBIDDEN)
    staging = Environment.objects.get(team=team, name="staging")
    for slug in order:
        env_services.binding_set(
            environment=staging, server=servers[slug], target=f"/srv/{slug}", permission="read_only"
        )
    for slug in order:
        limit_services.server_limits_set(team=team, server=servers[slug], max_calls_per_session=5)
    limit_services.global_limits_set(team=team, max_calls_per_session=100)


def test_export_is_canonical_whatever_the_entry_order(team, other_team):
    _policy(team, ["zeta_db", "alpha_api", "mid_fs"])
    _policy(other_team, ["mid_fs", "zeta_db", "alpha_api"])
    one = policy_yaml.policy_export(team=team)
    two = policy_yaml.policy_export(team=other_team).replace("team globex", "team acme")
    assert one == two
    assert "allowed_servers: [alpha_api, mid_fs, zeta_db]" in one
    assert one.index("code_agent:") < one.index("db_agent:")


def test_export_import_export_is_byte_identical(team, other_team):
    _policy(team, ["zeta_db", "alpha_api", "mid_fs"])
    exported = policy_yaml.policy_export(team=team)
    report = policy_yaml.policy_import(team=other_team, text=exported)
    assert report.changed
    again = policy_yaml.policy_export(team=other_team).replace("team globex", "team acme")
    assert again.encode() == exported.encode()
    # and importing it back into the source team changes nothing
    assert not policy_yaml.policy_import(team=team, text=exported, dry_run=True).changed


def test_reordered_lists_are_not_a_difference(team):
    _policy(team, ["zeta_db", "alpha_api", "mid_fs"])
    exported = policy_yaml.policy_export(team=team)
    shuffled = exported.replace("[alpha_api, mid_fs, zeta_db]", "[zeta_db, alpha_api, mid_fs]")
    assert shuffled != exported
    assert not policy_yaml.policy_import(team=team, text=shuffled, dry_run=True).changed


def _diff(path, team="acme"):
    with pytest.raises(SystemExit) as exit_info:
        call_command("policy_diff", str(path), "--team", team)
    return exit_info.value.code


def test_policy_diff_exit_codes(team, tmp_path, capsys):
    _policy(team, ["zeta_db", "alpha_api"])
    same = tmp_path / "policy.yaml"
    same.write_text(policy_yaml.policy_export(team=team), encoding="utf-8")
    call_command("policy_diff", str(same), "--team", "acme")  # returns: exit 0
    assert "No difference" in capsys.readouterr().out

    changed = tmp_path / "changed.yaml"
    changed.write_text(same.read_text().replace("code_agent:", "review_agent:"), encoding="utf-8")
    assert _diff(changed) == 1
    out = capsys.readouterr().out
    assert "- role code_agent" in out and "+ role review_agent" in out
    # a diff writes nothing
    assert set(AgentRole.objects.filter(team=team).values_list("name", flat=True)) == {
        "code_agent",
        "db_agent",
    }

    broken = tmp_path / "broken.yaml"
    broken.write_text("mcp_access:\n  default: allow\n", encoding="utf-8")
    with pytest.raises(CommandError) as error:
        call_command("policy_diff", str(broken), "--team", "acme")
    assert error.value.returncode == 2 and "line" in str(error.value)
    with pytest.raises(CommandError) as error:
        call_command("policy_diff", str(tmp_path / "missing.yaml"), "--team", "acme")
    assert error.value.returncode == 2
    with pytest.raises(CommandError) as error:
        call_command("policy_diff", str(same), "--team", "nope")
    assert error.value.returncode == 2
