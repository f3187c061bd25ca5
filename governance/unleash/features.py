"""MCP flags as Unleash client features (`GET /api/client/features`, format version 2).

A flag is on for a context when its environment state is on and every constraint matches
(`mcpgov.bundle.Flag.is_on_for`). The portal's constraints name the agent **role**; an SDK
passes it as the context field `role` (a custom property: `{"properties": {"role": …}}`) or,
as in the seed's example, as the `userId`. Only standard constraints are served — `IN` /
`NOT_IN` on `role` and `userId`, in `default` strategies — because SDKs differ in what else
they keep (the Node SDK drops empty constraint values, so a presence test such as
`STR_STARTS_WITH [""]` silently changes the answer there).

Unleash ANDs the constraints of one strategy and ORs strategies, and a constraint on a field
the context does not give is `IN` → false, `NOT_IN` → true. So, for a flag whose role
constraints are `IN A₁ … IN Aₘ` and `NOT_IN B₁ … NOT_IN Bₙ`:

- every `NOT_IN Bⱼ` is put on **both** fields, in every strategy: a role excluded through
  either field is off;
- without `IN`: one strategy (on unless excluded; no role at all: on, as in the gateway);
- with `IN`: two strategies, one requiring every `IN Aᵢ` of `role`, one of `userId` — "off
  for everyone except Aᵢ" (no role at all: off, as in the gateway).

Given one way (or the same value both ways), every official SDK answers exactly as the
gateway; given two different values, an exclusion through either wins (fail closed).
"""

from __future__ import annotations

import hashlib
from typing import Any

from governance.services.bundles import flag_constraints_resolve
from governance.services.flags import ResolvedFlag
from mcpgov.bundle import canonical_json

FEATURE_TYPE = "kill-switch"
PROJECT = "default"
ROLE_FIELDS = ("role", "userId")  # where an SDK's context may carry the agent role


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


def _strategies(role_rules: list[tuple[str, list[str]]]) -> list[dict[str, Any]]:
    allow = [values for op, values in role_rules if op == "IN"]
    deny = [values for op, values in role_rules if op != "IN"]
    exclusions = [_constraint(field, "NOT_IN", v) for v in deny for field in ROLE_FIELDS]
    if not allow:
        return [_strategy(exclusions)]
    return [_strategy([*[_constraint(field, "IN", v) for v in allow], *exclusions]) for field in ROLE_FIELDS]


def feature_for(resolved: ResolvedFlag) -> dict[str, Any]:
    """One flag, resolved for the client's environment, as an Unleash feature."""
    flag = resolved.flag
    # What the portal can decide (constraints on anything but the role) is decided here, as
    # in the bundle; the role constraints are left for the SDK, as for the gateway.
    passes, role_constraints = flag_constraints_resolve(list(resolved.constraints), resolved.environment.name)
    enabled = resolved.enabled and passes
    role_rules = [(c["operator"], c["values"]) for c in role_constraints]
    return {
        "name": flag.name,
        "type": FEATURE_TYPE,
        "description": flag.description or f"{flag.get_capability_display()} calls to {flag.server.slug}",
        "project": PROJECT,
        "enabled": enabled,
        "stale": False,
        "impressionData": False,
        "strategies": _strategies(role_rules),
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
