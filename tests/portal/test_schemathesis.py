"""schemathesis against the live schema, as a team admin (session cookie plus the CSRF token, which
is how people authenticate to the API) over the whole schema: every documented operation, tried
against the portal running under uvicorn, answers with a documented status, content type and body,
and never 500. The run itself is tests/portal/schemathesis_cli.py; the enforcement client's run is
test_schemathesis_gateway.py.
"""

from __future__ import annotations

import pytest

from tests.portal.schemathesis_cli import assert_clean, schemathesis_world, session_headers, st_run

pytestmark = [pytest.mark.slow]


def test_whole_schema_as_team_admin(portal_server, team, admin, requester, tmp_path):
    schemathesis_world(team, requester)
    run = st_run(portal_server, session_headers(admin), report=tmp_path / "admin.xml")
    assert_clean(run)
