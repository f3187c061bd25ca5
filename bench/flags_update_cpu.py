"""CPU of one gateway applying one signed flags update, and where it goes (no portal, no network).

    .venv/bin/python bench/flags_update_cpu.py [--iterations 2000] [--profile]

A gateway (``BundleManager`` + the decision for its next call, as ``bench/killswitch_propagation.py``'s
gateways and ``mcpgov.gateway.Gateway.on_bundle`` do) holds a verified bundle; it is handed signed flags
updates that switch ``mcp.time.all`` off and on again, each with the next revision. Reported: process
time per update for the whole step and for its parts alone (the Ed25519 verification, the JSON/pydantic
parse, the policy for the new flags), then with ``--profile`` the cProfile of the whole step.
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import pstats
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mcpgov.bundle import FlagsUpdate  # noqa: E402
from mcpgov.bundle_manager import BundleManager  # noqa: E402
from mcpgov.decision import ToolCall, compile_policy, decide  # noqa: E402
from mcpgov.session import SessionState  # noqa: E402
from mcpgov.verify import FLAGS_JWS_TYPE, _split, load_jwks, verify_jws  # noqa: E402
from tests.mcpgov.helpers import NOW, Signer, flags_doc, iso  # noqa: E402

CALL = ToolCall("time", "get_current_time", {"timezone": "UTC"})
ROLE = "code_agent"
FAR = NOW + timedelta(days=3650)  # the updates must not expire while the bench runs


def per_op_us(fn, n: int) -> float:
    t0 = time.process_time()
    for i in range(n):
        fn(i)
    return (time.process_time() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    n = args.iterations
    logging.getLogger("mcpgov").setLevel(logging.ERROR)  # as in bench/killswitch_propagation.py
    signer = Signer()
    keys = load_jwks(signer.write_jwks(Path(tempfile.mkdtemp()) / "keys.json"))
    manager = BundleManager(keys, environment="development", team="acme")
    manager.install(signer.sign(expires_at=iso(FAR)), source="bench")
    verdicts: list[str] = []

    def on_bundle(verified) -> None:  # what a gateway does with the new enforced bundle
        policy = compile_policy(verified.bundle, ROLE)
        decision = decide(policy, SessionState(session_id="b", role=ROLE), CALL, NOW.timestamp())
        verdicts.append(decision.trigger or decision.verdict)

    manager.listeners.append(on_bundle)

    def update(revision: int) -> str:
        flags = flags_doc()["flags"]
        flags[0]["enabled"] = revision % 2 == 0  # odd revisions switch it off
        return signer.sign_flags(revision=revision, flags=flags, expires_at=iso(FAR))

    # every update signed beforehand: the gateway's side only
    total = 2 * n + 1
    jwss = [update(r) for r in range(1, total + 1)]
    i = iter(jwss)

    def apply(_: int) -> None:
        manager.install_flags(next(i), source="bench")

    whole = per_op_us(apply, n)
    assert verdicts[-2:] in (["kill_switch_flag", "allow"], ["allow", "kill_switch_flag"]), verdicts[-2:]
    sample = jwss[0]
    header, payload, signature, signing_input = _split(sample)
    key = keys[header["kid"]]
    parts = {
        "the whole step (verify + apply + decide)": whole,
        "  JWS envelope + Ed25519 verify (verify_jws)": per_op_us(
            lambda _: verify_jws(sample, keys, typ=FLAGS_JWS_TYPE), n
        ),
        "    of which the raw Ed25519 verify": per_op_us(lambda _: key.verify(signature, signing_input), n),
        "  FlagsUpdate.model_validate_json (pydantic)": per_op_us(
            lambda _: FlagsUpdate.from_json_bytes(payload), n
        ),
    }

    # the policy part alone, over many bundles as _enforce makes them
    def enforce_and_decide(_: int) -> None:
        manager._enforce()

    parts["  _enforce: flags into the bundle, policy, one decision"] = per_op_us(enforce_and_decide, n)
    for what, us in parts.items():
        print(f"{what:58s} {us:8.1f} µs per update")
    if args.profile:
        rest = iter(jwss[n:])
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(n):
            manager.install_flags(next(rest), source="bench")
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(30)


if __name__ == "__main__":
    main()
