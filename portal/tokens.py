"""Bearer secrets the portal hands out once and keeps only as a SHA-256: enforcement-client tokens, agent
API keys and invitation links. One helper, so each kind is issued and looked up the same way."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass


@dataclass(frozen=True)
class NewToken:
    prefix: str  # stored in clear: finds the row
    token: str  # shown once
    sha256: str  # all that is stored of the secret


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_issue(marker: str) -> NewToken:
    """A bearer secret `<marker>_<prefix>_<random>`: enforcement-client tokens and agent API keys."""
    prefix = secrets.token_hex(6)
    token = f"{marker}_{prefix}_{secrets.token_urlsafe(32)}"
    return NewToken(prefix=prefix, token=token, sha256=token_sha256(token))
