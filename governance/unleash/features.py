"""MCP flags as Unleash client features (`GET /api/client/features`, format version 2).

A flag is on for a context when its environment state is on and every constraint
matches. The portal's constraints name the agent **role**; Unleash SDKs pass it either
as a custom property (`{"properties": {"role": "database_agent"}}`) or, as in the
seed's example, as the `userId` (`{"userId": "database_agent"}`). Unleash ANDs the
constraints of one strategy and ORs strategies, so a role-constrained flag becomes two
strategies:

1. the `role` property is present, and it satisfies every constraint;
2. the `role` property is absent, and `userId` satisfies every constraint
   (no `userId` either: `IN` fails and `NOT_IN` passes, as in the gateway).

Presence is tested with `STR_STARTS_WITH [""]` (every present string starts with ""),
absence with the same constraint inverted. Stock SDKs evaluate this unchanged.
"""

from __future__ import annotations

import hashlib
from typing import Any

from governance.services.flags import ResolvedFlag
from mcpgov.bundle import canonical_json

FEATURE_TYPE = "kill-switch"
PROJECT = "default"
ROLE_PROPERTY = "role"

_PRESENT = {
    "contextName": ROLE_PROPERTY,
    "operator": "STR_STARTS_WITH",
    "values": [""],
    "inverted": False,
    "caseInsensitive": False,
}
_ABSENT = {**_PRESENT, "inverted": True}


def _constraint(context_name: str, operator: str, values) -> dict[str, Any]:
    return {
        "contextName": context_name,
        "operator": operator,
        "values": sorted(values),
        "inverted": False,
        "caseInsensitive": False,
    }


def _strategy(constraints: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": "default", "parameters": {}, "constraints": constraints, "variants": []}


def feature_for(resolved: ResolvedFlag) -> dict[str, Any]:
    """One flag, resolved for the client's environment, as an Unleash feature."""
    flag = resolved.flag
    enabled = resolved.enabled
    role_rules, other = [], []
    for c in resolved.constraints:
        name, operator, values = c.get("context_name"), c.get("operator"), c.get("values") or []
        if name == "role":
            role_rules.append((operator, values))
        elif name == "environment":
            # The client's environment is fixed by its token: decide here, as the bundle does.
            inside = resolved.environment.name in values
            enabled = enabled and (operator == "IN") == inside
        else:  # userId, appName: native Unleash context fields
            other.append(_constraint(name, operator, values))
    if role_rules:
        strategies = [
            _strategy([_PRESENT, *[_constraint(ROLE_PROPERTY, op, v) for op, v in role_rules], *other]),
            _strategy([_ABSENT, *[_constraint("userId", op, v) for op, v in role_rules], *other]),
        ]
    else:
        strategies = [_strategy(other)]
    return {
        "name": flag.name,
        "type": FEATURE_TYPE,
        "description": flag.description or f"{flag.get_capability_display()} calls to {flag.server.slug}",
        "project": PROJECT,
        "enabled": enabled,
        "stale": False,
        "impressionData": False,
        "strategies": strategies,
        "variants": [],
        "dependencies": [],
    }


def features_document(flags: list[ResolvedFlag], *, environment: str) -> dict[str, Any]:
    """The `GET /api/client/features` body (Unleash client features, format version 2)."""
    return {
        "version": 2,
        "features": [feature_for(f) for f in flags],
        "segments": [],
        "query": {"environment": environment, "inlineSegmentConstraints": True},
    }


def etag_of(document: dict[str, Any]) -> str:
    """A strong ETag over the canonical JSON: the same flags always give the same tag."""
    return '"' + hashlib.sha256(canonical_json(document)).hexdigest()[:40] + '"'


def etag_matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 weak comparison, as caches and SDKs send it back (`W/` prefixes and lists allowed)."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == bare for tag in if_none_match.split(","))
