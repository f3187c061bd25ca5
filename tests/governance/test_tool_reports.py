"""Tool definitions reported from the enforcement side: `mcpgov discover` against a real portal (uvicorn)
with a real stdio server (mcp-server-time), the client endpoint's bounds and team scoping, and an
admin's review (approve records the tools like discovery; dismiss keeps them out)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from django.urls import reverse

from governance.models import McpTool, ToolReport
from governance.services.clients import client_create
from governance.services.environments import environment_create
from governance.services.servers import server_create, tool_update
from governance.services.tool_reports import tool_report_approve
from mcpgov.discover import MAX_DEPTH, MAX_TOOLS
from portal.models import ChangeRecord

URL = "/api/v1/tool-reports/"


def tool(name: str, read_only: bool | None = None, description: str = "") -> dict:
    annotations = {} if read_only is None else {"readOnlyHint": read_only}
    return {
        "name": name,
        "description": description,
        "inputSchema": {"type": "object"},
        "annotations": annotations,
    }


@pytest.fixture
def gateway_token(team, admin):
    env = environment_create(team=team, name="dev_env")
    return client_create(team=team, environment=env, name="laptop-gw").token


@pytest.fixture
def other_token(other_team):
    env = environment_create(team=other_team, name="globex_env")
    return client_create(team=other_team, environment=env, name="globex-gw").token


def post(client, token, body, **extra):
    raw = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(
        URL, raw, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}", **extra
    )


def policy_state():
    return (
        list(McpTool.objects.order_by("pk").values()),
        list(ChangeRecord.objects.order_by("pk").values_list("summary", flat=True)),
    )


def test_a_report_is_stored_pending_and_changes_no_policy(
    client, team, admin, gateway_token, django_capture_on_commit_callbacks
):
    server = server_create(team=team, slug="time", command="uvx", args=["mcp-server-time"])
    before = policy_state()
    body = {
        "source": "gateway",
        "servers": [{"server": "time", "tools": [tool("get_current_time", True), tool("set_time")]}],
    }
    with django_capture_on_commit_callbacks() as callbacks:
        response = post(client, gateway_token, body)
    assert response.status_code == 200, response.content
    [outcome] = response.json()["servers"]
    assert outcome["status"] == "pending" and outcome["changes"]["added"] == ["get_current_time", "set_time"]
    assert policy_state() == before and callbacks == []  # no tool, no change record, no bundle rebuild
    # The same definitions again: one report, counted twice.
    assert post(client, gateway_token, body).json()["servers"][0]["report"] == outcome["report"]
    report = ToolReport.objects.get()
    assert (report.times_reported, report.client_name, report.status) == (2, "laptop-gw", "pending")

    changes = tool_report_approve(report=report, actor=admin)
    assert changes["added"] == ["get_current_time", "set_time"]
    classes = {t.name: t.access_class for t in server.tools.all()}
    assert classes == {"get_current_time": "read", "set_time": "write"}
    # Approved definitions reported again are "unchanged"; an admin's override survives a later approval.
    assert post(client, gateway_token, body).json()["servers"][0]["status"] == "unchanged"
    tool_update(tool=server.tools.get(name="set_time"), actor=admin, access_class_override="read")
    body["servers"][0]["tools"].append(tool("new_tool", True))
    report = ToolReport.objects.get(pk=post(client, gateway_token, body).json()["servers"][0]["report"])
    tool_report_approve(report=report, actor=admin)
    assert server.tools.get(name="set_time").access_class == "read"
    assert server.tools.filter(name="new_tool").exists()


def test_a_client_reports_only_for_its_own_team(client, team, other_team, other_token):
    server_create(team=team, slug="time", command="uvx")
    before = policy_state()
    response = post(
        client, other_token, {"source": "discover", "servers": [{"server": "time", "tools": [tool("x")]}]}
    )
    assert response.status_code == 200
    assert response.json()["servers"][0]["status"] == "unknown_server"
    assert ToolReport.objects.count() == 0 and policy_state() == before


@pytest.mark.parametrize(
    "make_body, code",
    [
        (lambda: "[" * 100_000 + "]" * 100_000, "report_too_deep"),
        (
            lambda: json.dumps(
                {
                    "source": "gateway",
                    "servers": [{"server": "time", "tools": [tool("t", description="x" * 5_000_000)]}],
                }
            ),
            "report_too_large",
        ),
        (
            lambda: {
                "source": "gateway",
                "servers": [{"server": "time", "tools": [tool(f"t{i}") for i in range(MAX_TOOLS + 1)]}],
            },
            "invalid",
        ),
        (
            lambda: {
                "source": "gateway",
                "servers": [{"server": "time", "tools": [{**tool("t"), "inputSchema": _nested(MAX_DEPTH)}]}],
            },
            "report_too_deep",
        ),
        (
            lambda: {"source": "gateway", "servers": [{"server": "time", "tools": [tool("t"), tool("t")]}]},
            "invalid",
        ),
        (lambda: {"source": "portal", "servers": [{"server": "time", "tools": []}]}, "invalid"),
    ],
    ids=["deep-json", "too-large", "too-many-tools", "deep-schema", "duplicate-tool", "bad-source"],
)
def test_oversized_or_malformed_reports_are_refused_and_store_nothing(
    client, team, gateway_token, make_body, code
):
    server_create(team=team, slug="time", command="uvx")
    response = post(client, gateway_token, make_body())
    assert response.status_code in (400, 413), response.content[:300]
    assert response.json()["code"] == code
    assert ToolReport.objects.count() == 0


def _nested(depth: int) -> dict:
    value: dict = {"type": "object"}
    for _ in range(depth):
        value = {"properties": {"a": value}}
    return value


def test_people_and_revoked_clients_cannot_report(client, team, admin, password, gateway_token):
    from governance.models import EnforcementClient
    from governance.services.clients import client_revoke

    server_create(team=team, slug="time", command="uvx")
    body = {"source": "gateway", "servers": [{"server": "time", "tools": [tool("x")]}]}
    assert client.post(URL, body, content_type="application/json").status_code == 401
    client.force_login(admin)
    assert client.post(URL, body, content_type="application/json").status_code in (401, 403)
    client.logout()
    client_revoke(client=EnforcementClient.objects.get(name="laptop-gw"))
    assert post(client, gateway_token, body).status_code == 401
    assert ToolReport.objects.count() == 0


def test_the_admin_reviews_on_the_server_page(client, team, admin, reviewer, password, gateway_token):
    server = server_create(team=team, slug="time", command="uvx")
    body = {"source": "discover", "servers": [{"server": "time", "tools": [tool("get_current_time", True)]}]}
    report_id = post(client, gateway_token, body).json()["servers"][0]["report"]
    client.force_login(reviewer)
    page = client.get(reverse("governance:server-detail", args=[server.pk])).content.decode()
    assert (
        "Reported tool definitions" in page
        and "get_current_time" in page
        and "Approve these tools" not in page
    )
    assert client.post(reverse("governance:tool-report-approve", args=[report_id])).status_code == 403
    assert not server.tools.exists()
    client.force_login(admin)
    page = client.get(reverse("governance:server-detail", args=[server.pk])).content.decode()
    assert "Approve these tools" in page and "laptop-gw" in page
    response = client.post(reverse("governance:tool-report-approve", args=[report_id]), follow=True)
    assert "Reported tools approved on time: added get_current_time" in response.content.decode()
    assert server.tools.get().access_class == "read"
    # Dismissed definitions stay dismissed when reported again.
    body["servers"][0]["tools"].append(tool("drop_table"))
    second = post(client, gateway_token, body).json()["servers"][0]["report"]
    client.post(reverse("governance:tool-report-dismiss", args=[second]))
    assert post(client, gateway_token, body).json()["servers"][0]["status"] == "dismissed"
    assert not server.tools.filter(name="drop_table").exists()


@pytest.mark.slow
def test_mcpgov_discover_reports_a_real_stdio_server_to_a_real_portal(portal_server, team, tmp_path):
    env = environment_create(team=team, name="dev_env")
    token = client_create(team=team, environment=env, name="ci-gw").token
    server_create(team=team, slug="time", command=sys.executable, args=["-m", "mcp_server_time"])
    config = tmp_path / ".mcp.json"
    config.write_text(
        json.dumps({"mcpServers": {"time": {"command": sys.executable, "args": ["-m", "mcp_server_time"]}}})
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mcpgov",
            "discover",
            "--portal",
            portal_server,
            "--token",
            token,
            "--config",
            str(config),
            "--server",
            "time",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (
        "time: 2 tools reported, waiting for an admin's review (added: get_current_time, convert_time)"
        in done.stderr
    )
    report = ToolReport.objects.get()
    assert report.source == "discover" and report.client_name == "ci-gw"
    assert {t["name"] for t in report.tools} == {"get_current_time", "convert_time"}
    assert not McpTool.objects.exists()  # nothing recorded until an admin approves
