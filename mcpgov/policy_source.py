"""Where the gateway and the gate get their bundle: a signed file (offline) or the portal, always verified."""

from __future__ import annotations

import argparse
import logging

import anyio
import httpx2

from mcpgov.bundle_manager import BundleManager
from mcpgov.portal_client import PortalClient, PortalError
from mcpgov.verify import BundleVerificationError, KeyFileError, StateFileError, VerifiedBundle, load_jwks

log = logging.getLogger("mcpgov.policy")


class PolicySourceError(Exception):
    """No verified bundle could be obtained."""


def read_token(args: argparse.Namespace) -> None:
    """``--token-file PATH`` (or ``MCPGOV_TOKEN_FILE``): the token read from a file, so it never shows in ``ps``.

    Sets ``args.token``; raises :class:`PolicySourceError` for an unreadable or empty file, or both flags.
    """
    path = getattr(args, "token_file", None)
    if not path:
        return
    if getattr(args, "token_given", False):  # --token on the command line (MCPGOV_TOKEN yields to the file)
        raise PolicySourceError("give --token or --token-file, not both")
    try:
        with open(path, encoding="utf-8") as fh:
            token = fh.read().strip()
    except FileNotFoundError:
        raise PolicySourceError(f"--token-file {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicySourceError(f"--token-file {path}: cannot read it ({exc})") from exc
    if not token or "\n" in token:
        raise PolicySourceError(f"--token-file {path}: expected the token alone on one line")
    args.token = token


def make_manager(args: argparse.Namespace, client: PortalClient | None = None) -> BundleManager:
    if not args.keys:
        raise PolicySourceError(
            "--keys (a pinned JWKS file) is required: bundles are only trusted against pinned keys"
        )
    if not args.env:
        raise PolicySourceError("--env is required")
    try:
        keys = load_jwks(args.keys)
        return BundleManager(
            keys, environment=args.env, team=args.team, state_dir=args.state_dir, client=client
        )
    except (KeyFileError, StateFileError) as exc:
        raise PolicySourceError(str(exc)) from exc


def _apply_cached_flags(manager: BundleManager) -> None:
    """The flags update cached in ``--state-dir`` (``flags.jws``), verified and applied when it applies
    to the bundle in force (a kill switch thrown after that bundle was built); refused ones are logged."""
    path = manager.flags_cache_path
    if path is None or not path.exists():
        return
    try:
        manager.install_flags(path.read_text(encoding="ascii", errors="replace"), source=str(path))
    except (BundleVerificationError, OSError) as exc:
        log.info("cached flags update %s not applied: %s", path, exc)


def load_policy_once(args: argparse.Namespace) -> VerifiedBundle:
    """One verified bundle from ``--bundle-file`` or from ``--portal`` (for the CI gate), with the
    newest verified flags update applied to it as a gateway would: the one cached in ``--state-dir``,
    then (from a portal) any newer one the portal has."""
    if args.bundle_file:
        manager = make_manager(args)
        try:
            manager.load_file(args.bundle_file)
        except BundleVerificationError as exc:
            raise PolicySourceError(f"bundle rejected: {exc.code}: {exc.message}") from exc
        except OSError as exc:
            raise PolicySourceError(f"cannot read {args.bundle_file}: {exc}") from exc
        _apply_cached_flags(manager)
        assert manager.enforced is not None
        return manager.enforced
    if not args.portal or not args.token:
        raise PolicySourceError("give --bundle-file, or --portal and --token (or --token-file)")

    async def fetch() -> VerifiedBundle:
        client = PortalClient(args.portal, args.token)
        manager = make_manager(args, client)
        try:
            status, jws, _ = await client.fetch_bundle(etag=None, current_version=0)
            if status == 404 or jws is None:
                raise PolicySourceError("the portal has no bundle published for this client's environment")
            try:
                manager.install(jws, source="portal")
            except BundleVerificationError as exc:
                raise PolicySourceError(f"bundle rejected: {exc.code}: {exc.message}") from exc
            _apply_cached_flags(manager)
            await (
                manager.refresh()
            )  # a newer flags update than the bundle's flags, as a gateway asks at start
        finally:
            await client.aclose()
        assert manager.enforced is not None
        return manager.enforced

    try:
        return anyio.run(fetch)
    except PortalError as exc:
        if exc.is_auth_failure:
            raise PolicySourceError(exc.auth_failure(args.portal)) from exc
        raise PolicySourceError(f"cannot fetch the bundle from {args.portal}: {exc}") from exc
    except httpx2.HTTPError as exc:
        raise PolicySourceError(f"cannot fetch the bundle from {args.portal}: {exc}") from exc
