"""Change-history rows name what happened (ChangeEventType): the services write specific types, the
back-fill of migration portal 0004 gives old rows the same types, and the page and the API filter by them."""

from __future__ import annotations

import importlib
import re

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client
from rest_framework.test import APIClient

from governance.choices import RuleKind
from governance.services import environments as env_services
from governance.services import flags as flag_services
from governance.services import roles as role_services
from governance.services import servers as server_services
from governance.services.clients import client_create, client_revoke
from portal.choices import ChangeEventType as E
from portal.choices import TeamRole
from portal.models import ChangeRecord, Membership
from portal.services import membership_remove
from tests.factories import make_member

backfill = importlib.import_module("portal.migrations.0004_changerecord_event_type")


def _write_a_bit_of_everything(team, admin):
    server = server_services.server_create(team=team, slug="git", command="python", actor=admin)
    server_services.server_update(server=server, actor=admin, description="the repo")
    role = role_services.role_create(team=team, name="coder", actor=admin)
    rule = role_services.role_server_add(role=role, server=server, kind=RuleKind.ALLOWED, actor=admin)
    role_services.role_server_remove(rule=rule, actor=admin)
    dev = team.environments.get(name="development")
    env_services.binding_set(environment=dev, server=server, target="/srv/repo", actor=admin)
    flag = flag_services.flag_create(team=team, server=server, actor=admin)
    flag_services.flag_set_state(flag=flag, environment=dev, enabled=False, reason="leak", actor=admin)
    flag_services.flag_set_state(flag=flag, environment=dev, enabled=True, actor=admin)
    issued = client_create(team=team, environment=dev, name="laptop", actor=admin)
    client_revoke(client=issued.client, actor=admin)
    gone = make_member(team, TeamRole.VIEWER, username="leaver")
    membership_remove(membership=Membership.objects.get(team=team, user=gone), actor=admin)


@pytest.mark.django_db
def test_services_write_specific_event_types_and_the_verb_follows(team, admin):
    _write_a_bit_of_everything(team, admin)
    rows = list(ChangeRecord.objects.filter(team=team).order_by("id"))
    types = [r.event_type for r in rows]
    for expected in (
        E.SERVER_CREATED,
        E.SERVER_UPDATED,
        E.ROLE_CREATED,
        E.ROLE_SERVER_ADDED,
        E.ROLE_SERVER_REMOVED,
        E.BINDING_CREATED,
        E.FLAG_CREATED,
        E.FLAG_DISABLED,
        E.FLAG_ENABLED,
        E.CLIENT_CREATED,
        E.CLIENT_REVOKED,
        E.MEMBER_ADDED,
        E.MEMBER_REMOVED,
    ):
        assert expected in types, expected
    assert E.OTHER not in types and "" not in types
    for row in rows:
        assert row.action == E(row.event_type).action
        # what the back-fill infers from the row's old columns is what the service wrote
        assert backfill.event_type_of(row.object_type, row.action, row.summary) == row.event_type, row


@pytest.mark.django_db(transaction=True)
def test_the_migration_back_fills_rows_written_before_event_types(team, admin):
    _write_a_bit_of_everything(team, admin)
    written = dict(ChangeRecord.objects.filter(team=team).values_list("pk", "event_type"))
    ChangeRecord.objects.create(
        team=team, event_type=E.OTHER, action="action", object_type="gadget", object_repr="g"
    )
    executor = MigrationExecutor(connection)
    executor.migrate([("portal", "0003_invitations_auditor_only_payloads")])
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM portal_changerecord")
        assert cursor.fetchone()[0] == len(written) + 1
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    after = dict(ChangeRecord.objects.filter(team=team).values_list("pk", "event_type"))
    assert {pk: after[pk] for pk in written} == written
    assert ChangeRecord.objects.get(object_type="gadget").event_type == E.OTHER


@pytest.mark.django_db
def test_history_page_and_api_filter_by_event_type(team, other_team, admin, outsider):
    _write_a_bit_of_everything(team, admin)
    server_services.server_create(team=other_team, slug="theirs", command="python")
    page = Client()
    page.force_login(admin)
    html = page.get(
        "/governance/history/", {"event_type": ["flag_disabled", "flag_enabled"]}
    ).content.decode()
    shown = set(re.findall(r'data-event-type="(\w+)"', html))
    assert shown == {"flag_disabled", "flag_enabled"}
    assert page.get("/governance/history/", {"event_type": "flag_melted"}).status_code == 400

    api = APIClient()
    api.force_authenticate(admin)
    rows = api.get("/api/v1/changes/?event_type=server_created").json()["results"]
    assert [(r["team"], r["event_type"], r["object_repr"], r["action"]) for r in rows] == [
        ("acme", "server_created", "git", "create")
    ]  # globex's server is not listed to acme's admin
    both = api.get("/api/v1/changes/?event_type=client_created&event_type=client_revoked").json()["results"]
    assert sorted(r["event_type"] for r in both) == ["client_created", "client_revoked"]
    bad = api.get("/api/v1/changes/?event_type=flag_melted")
    assert bad.status_code == 400 and bad.json()["detail"].startswith("event_type: ")
    api.force_authenticate(outsider)
    assert {r["team"] for r in api.get("/api/v1/changes/").json()["results"]} <= {"globex"}
    assert api.get(f"/api/v1/changes/{rows[0]['id']}/").status_code == 404
    api.force_authenticate(None)
    assert api.get("/api/v1/changes/").status_code in (401, 403)
