"""schemathesis against the live schema, as an enforcement client (bearer token) over the gateway
operations: each answers with a documented status, content type and body, and never 500. The run
itself is tests/portal/schemathesis_cli.py; the team admin's run is test_schemathesis.py.
"""

from __future__ import annotations

import pytest

from tests.portal.schemathesis_cli import assert_clean, schemathesis_world, st_run

pytestmark = [pytest.mark.slow]


def test_gateway_operations_as_enforcement_client(portal_server, team, admin, requester, tmp_path):
    world = schemathesis_world(team, requester)
    run = st_run(
        portal_server,
        {"Authorization": f"Bearer {world['token']}"},
        "--include-path-regex",
        "^/api/v1/(bundle|gateway/sessions)",
        report=tmp_path / "client.xml",
        examples="8",  # the long polls (?wait= up to 30 s) make each example slow
    )
    assert_clean(run)
