"""The bundle schema and its canonical JSON: what the portal signs and the gateway reads."""

from __future__ import annotations

import hashlib
import json

import pytest
from pydantic import ValidationError

from mcpgov.bundle import Bundle, canonical_json, tool_definition_hash
from tests.mcpgov.helpers import bundle_doc, make_bundle


def test_canonical_json_sorts_keys_without_whitespace_and_keeps_utf8():
    assert (
        canonical_json({"b": 1, "a": [1, {"d": "é", "c": None}]})
        == '{"a":[1,{"c":null,"d":"é"}],"b":1}'.encode()
    )


def test_canonical_json_rejects_nan():
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_tool_definition_hash_is_sha256_of_canonical_definition():
    schema = {"type": "object", "properties": {"timezone": {"type": "string"}}}
    expected = hashlib.sha256(
        canonical_json({"name": "get_current_time", "description": "Now", "input_schema": schema})
    ).hexdigest()
    assert tool_definition_hash("get_current_time", "Now", schema) == expected
    # key order of the schema does not matter, the description does
    reordered = {"properties": {"timezone": {"type": "string"}}, "type": "object"}
    assert tool_definition_hash("get_current_time", "Now", reordered) == expected
    assert tool_definition_hash("get_current_time", "Now!", schema) != expected
    assert tool_definition_hash("t", None, None) == tool_definition_hash("t", "", {})


def test_round_trip_is_stable_and_uses_wire_names():
    b = make_bundle()
    data = json.loads(b.canonical_bytes())
    assert data["schema"] == "mcpgov.bundle/1"
    assert data["servers"]["time"]["tools"]["get_current_time"]["class"] == "read"
    assert "global" in data["rate_limits"]
    assert data["issued_at"].endswith("Z")
    again = Bundle.from_json_bytes(b.canonical_bytes())
    assert again == b
    assert again.canonical_bytes() == b.canonical_bytes()
    assert b.content_hash() == hashlib.sha256(b.canonical_bytes()).hexdigest()


def test_bundle_is_frozen():
    b = make_bundle()
    with pytest.raises(ValidationError):
        b.version = 99


@pytest.mark.parametrize(
    ("override", "where"),
    [
        ({"schema": "mcpgov.bundle/2"}, "schema"),
        ({"version": 0}, "version"),
        ({"issued_at": "2026-11-24T09:00:00"}, "issued_at"),  # naive time
        ({"expires_at": "2026-11-24T08:00:00Z"}, "expires_at must be after"),
        ({"unexpected": 1}, "unexpected"),
        ({"environment": "staging"}, "environment_policy.name"),
    ],
)
def test_invalid_documents_are_rejected(override, where):
    with pytest.raises(ValidationError) as exc:
        Bundle.model_validate(bundle_doc(**override))
    assert where in str(exc.value)


def test_misspelt_nested_key_is_rejected():
    doc = bundle_doc()
    doc["roles"]["code_agent"]["forbiden_servers"] = ["shell"]
    with pytest.raises(ValidationError):
        Bundle.model_validate(doc)


def test_flag_follows_unleash_semantics():
    b = make_bundle(
        flags=[
            {
                "name": "mcp.database.write",
                "server": "db",
                "capability": "write",
                "enabled": True,
                "constraints": [{"context_name": "role", "operator": "IN", "values": ["database_agent"]}],
            },
            {
                "name": "mcp.fs",
                "server": "filesystem",
                "enabled": True,
                "constraints": [{"context_name": "role", "operator": "NOT_IN", "values": ["docs_agent"]}],
            },
            {"name": "mcp.off", "enabled": False},
        ]
    )
    db, fs, off = b.flags
    assert db.is_on_for("database_agent") and not db.is_on_for("code_agent")
    assert fs.is_on_for("code_agent") and not fs.is_on_for("docs_agent")
    assert not off.is_on_for("code_agent")


def test_production_url_words_fall_back_to_triggers():
    assert make_bundle().production_url_words == ("prod", "production", "live", "main")
    doc = bundle_doc()
    doc["environment_policy"]["production_url_words"] = ["prd"]
    assert Bundle.model_validate(doc).production_url_words == ("prd",)


def test_agents_and_unknown_tool_policy_round_trip():
    key = hashlib.sha256(b"mcpgov_agent_secret").hexdigest()
    doc = bundle_doc(
        agents=[
            {
                "id": "7",
                "slug": "ci-bot",
                "roles": ["code_agent"],
                "environments": ["development"],
                "api_key_sha256": [key],
                "revoked_jti": ["abc"],
            },
            {"id": "8", "slug": "old-bot", "revoked": True},
        ]
    )
    doc["servers"]["time"]["allow_unknown_tools"] = "as_write"
    b = Bundle.model_validate(doc)
    data = json.loads(b.canonical_bytes())
    assert data["agents"][0] == {
        "id": "7",
        "slug": "ci-bot",
        "roles": ["code_agent"],
        "environments": ["development"],
        "revoked": False,
        "api_key_sha256": [key],
        "revoked_jti": ["abc"],
    }
    assert data["servers"]["time"]["allow_unknown_tools"] == "as_write"
    # the default is deny, and it is part of the signed payload
    assert data["servers"]["filesystem"]["allow_unknown_tools"] == "deny"
    assert b.agent("8").revoked and b.agent("7").roles == ("code_agent",) and b.agent("9") is None
    assert Bundle.from_json_bytes(b.canonical_bytes()) == b


@pytest.mark.parametrize(
    "bad",
    [
        {"id": "1", "slug": "x", "api_key_sha256": ["not-hex"]},
        {"id": "1", "slug": "x", "role": ["code_agent"]},  # misspelt key
        {"id": "", "slug": "x"},
    ],
)
def test_invalid_agent_entries_are_rejected(bad):
    with pytest.raises(ValidationError):
        Bundle.model_validate(bundle_doc(agents=[bad]))


def test_allow_unknown_tools_accepts_only_deny_or_as_write():
    doc = bundle_doc()
    doc["servers"]["time"]["allow_unknown_tools"] = "allow"
    with pytest.raises(ValidationError):
        Bundle.model_validate(doc)
