"""The schemathesis runs the portal's API tests share (tests/portal/test_schemathesis_*.py): the
`st` CLI (pinned in pyproject.toml) against the live schema of a portal under uvicorn, the objects
for the operations to find, and the session headers a team admin's browser sends.

Each run is bounded per operation (--max-examples; MCPGOV_SCHEMATHESIS_EXAMPLES overrides it), not in
time: under `--max-time` schemathesis repeats the fuzzing phase until the budget is spent, so each
run took the whole budget (120 s, ~1 core) even when every operation had had its examples, and on
a loaded machine the share per operation shrank instead. One pass of examples + fuzzing sends the
same number of cases on any machine (2234 for 20 examples for each of 115 operations: 747 s at load 11; 5
examples are ~575). MCPGOV_SCHEMATHESIS_SECONDS, if set, adds the time budget back for a longer
exploratory run. The two runs are in files of their own so that, with `--dist loadfile`, they can
run on different xdist workers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from django.conf import settings
from django.middleware.csrf import _get_new_csrf_string
from django.test import Client

from audit.choices import SessionState
from audit.services import session_open
from governance.services.bundles import bundle_publish
from governance.services.clients import client_create
from tests.governance.access_helpers import file_request, policy

ST = Path(sys.executable).with_name("st")
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
MAX_EXAMPLES = os.environ.get("MCPGOV_SCHEMATHESIS_EXAMPLES", "5")


def st_run(
    base: str, headers: dict[str, str], *extra: str, report: Path, examples: str = MAX_EXAMPLES
) -> subprocess.CompletedProcess:
    # The live schema, fetched with a patient timeout (building it can take > 10 s on a loaded machine).
    request = urllib.request.Request(f"{base}/api/v1/schema/?format=json", headers=headers)  # noqa: S310
    with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 - the local test portal
        schema = report.with_suffix(".schema.json")
        schema.write_bytes(response.read())
    cmd = [
        str(ST),
        "run",
        str(schema),
        "--url",
        base,
        "--checks",
        CHECKS,
        "--mode",
        "positive",
        "--max-examples",
        examples,
        "--seed",
        "9",
        # Examples and fuzzing, bounded per operation (the coverage phase's boundary cases are not
        # bounded by --max-examples and took > 15 min on a loaded 2-core machine); one pass, no
        # --max-time (which repeats fuzzing until it is spent: see the module docstring).
        "--phases",
        "examples,fuzzing",
        *(["--max-time", seconds] if (seconds := os.environ.get("MCPGOV_SCHEMATHESIS_SECONDS")) else []),
        "--request-timeout",
        "40",
        "--workers",
        "1",
        "--no-color",
        "--report",
        "junit",
        "--report-junit-path",
        str(report),
        *extra,
    ]
    for name, value in headers.items():
        cmd += ["--header", f"{name}: {value}"]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": ""}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, check=False)


def schemathesis_world(team, requester) -> dict:
    """Objects for the operations to find: servers, a role, an access request, bundles, a session."""
    p = policy(team)
    file_request(team, requester, p)
    dev = team.environments.get(name="development")
    bundle_publish(environment=dev, reason="schemathesis")
    issued = client_create(team=team, environment=dev, name="schemathesis-gw")
    session, _ = session_open(
        client=issued.client, id="7f9c1f52-8d2c-4c8e-9d65-1e2d3c4b5a69", role="database_agent"
    )
    assert session.state == SessionState.ACTIVE
    return {"token": issued.token}


def session_headers(admin) -> dict[str, str]:
    browser = Client()
    browser.force_login(admin)
    csrf = _get_new_csrf_string()
    cookie = f"{settings.SESSION_COOKIE_NAME}={browser.cookies[settings.SESSION_COOKIE_NAME].value}; csrftoken={csrf}"
    return {"Cookie": cookie, "X-CSRFToken": csrf}


def assert_clean(run: subprocess.CompletedProcess) -> None:
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-12000:]
    assert "No issues found" in output or " passed" in output, output[-4000:]
