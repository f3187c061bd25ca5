"""``mcpgov gate`` applies a cached, verified flags update (``state/flags.jws``) newer than the bundle, as
the gateway does: a kill switch thrown after the bundle was built fails the CI gate too. An update for an
older bundle, or one that does not verify against the pinned keys, changes nothing."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta

import pytest

from tests.mcpgov.conftest import run_mcpgov
from tests.mcpgov.helpers import Signer, iso

pytestmark = pytest.mark.slow  # each case starts a gate process

FLAG_OFF = "disabled by governance flag mcp.time.all: INC-9: clock drift"


def _gate(world) -> subprocess.CompletedProcess[str]:
    return run_mcpgov(world.gate_args())


def _flags(signer: Signer, *, bundle_version: int, revision: int = 1) -> str:
    now = datetime.now(UTC)
    return signer.sign_flags(
        bundle_version=bundle_version,
        revision=revision,
        issued_at=iso(now - timedelta(seconds=5)),
        expires_at=iso(now + timedelta(hours=1)),
        flags=[
            {
                "name": "mcp.time.all",
                "server": "time",
                "capability": "all",
                "enabled": False,
                "reason": "INC-9: clock drift",
                "changed_at": iso(now - timedelta(seconds=5)),
            }
        ],
    )


@pytest.fixture
def gate_world(world):
    world.version = 3
    world.write_bundle(world.doc())
    world.write_config(servers=("time",))
    world.state.mkdir()
    return world


def test_without_a_cached_update_the_bundle_passes(gate_world):
    r = _gate(gate_world)
    assert r.returncode == 0, r.stderr
    assert "MCP environment gate passed" in r.stderr


def test_a_cached_update_newer_than_the_bundle_fails_the_gate(gate_world):
    (gate_world.state / "flags.jws").write_text(_flags(gate_world.signer, bundle_version=3))
    r = _gate(gate_world)
    assert r.returncode == 1, r.stderr
    assert "MCP environment gate FAILED" in r.stderr
    assert f"time: {FLAG_OFF}" in r.stderr


def test_an_update_superseded_by_the_bundle_is_not_applied(gate_world):
    # issued when v2 was the latest bundle: v3 was built after it and carries its flags or newer ones
    (gate_world.state / "flags.jws").write_text(_flags(gate_world.signer, bundle_version=2))
    r = _gate(gate_world)
    assert r.returncode == 0, r.stderr
    assert FLAG_OFF not in r.stderr


def test_an_update_signed_by_an_unpinned_key_changes_nothing(gate_world):
    stranger = Signer(kid=gate_world.signer.kid)  # the pinned key id, another key
    (gate_world.state / "flags.jws").write_text(_flags(stranger, bundle_version=3))
    r = _gate(gate_world)
    assert r.returncode == 0, r.stderr
    assert "REJECTED flags update" in r.stderr and "bad_signature" in r.stderr
    assert FLAG_OFF not in r.stderr
