"""Secret redaction and short argument summaries for audit events, logs and refusal messages."""

from __future__ import annotations

import json
import re
from typing import Any

REDACTED = "[REDACTED]"
SECRET_KEY_RE = re.compile(
    r"(pass(word|wd|phrase)?|secret|token|api[-_]?key|apikey|authori[sz]ation|auth|credential|private[-_]?key|"
    r"access[-_]?key|session[-_]?key|cookie|bearer|signature|client[-_]?secret)",
    re.IGNORECASE,
)
SECRET_VALUE_RES = (
    re.compile(r"\bBearer\s+[A-Za-z0-9\-._~+/]{8,}=*", re.IGNORECASE),
    re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key id
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),  # JWT
    re.compile(r"\b(ghp|gho|ghu|ghs|ghr|github_pat)_[A-Za-z0-9_]{20,}"),  # GitHub tokens
    re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),  # Slack tokens
    re.compile(r"\bsk-[A-Za-z0-9_-]{20,}"),  # API secret keys (OpenAI-style)
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(-----END [A-Z ]*PRIVATE KEY-----|$)"),
    re.compile(r"(?i)\baws_secret_access_key\s*[=:]\s*\S+"),
)
MAX_DEPTH = 8
MAX_STRING = 4096  # audit events keep at most this much of any one string argument


# one pass over the text for all of them (this runs on every argument of every call)
def _scoped(rx: re.Pattern[str]) -> str:
    if rx.pattern.startswith("(?i)"):
        return f"(?i:{rx.pattern[4:]})"
    return f"(?i:{rx.pattern})" if rx.flags & re.IGNORECASE else f"(?:{rx.pattern})"


SECRET_VALUE_RE = re.compile("|".join(_scoped(rx) for rx in SECRET_VALUE_RES))
# What every match of SECRET_VALUE_RES[i] contains, in its order: (case-sensitive literals, literals
# matched ignoring case). For ASCII text a few substring tests then say "no secret" about 15x faster than
# the regex, whose word boundaries classify every character (~12 µs for a 100-character result, twice
# per call); a text containing one of them, or any non-ASCII text (Unicode case folding: U+017F, the long
# s, matches ``s``), gets the regex as before, so the outcome is the regex's in every case.
SECRET_VALUE_NEEDLES: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    ((), ("bearer",)),
    (("AKIA", "ASIA"), ()),
    (("eyJ",), ()),
    (("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"), ()),
    (("xox",), ()),
    (("sk-",), ()),
    (("-----BEGIN ",), ()),
    ((), ("aws_secret_access_key",)),
)
assert len(SECRET_VALUE_NEEDLES) == len(SECRET_VALUE_RES)
_CASED = tuple(n for cased, _ in SECRET_VALUE_NEEDLES for n in cased)
_UNCASED = tuple(n for _, uncased in SECRET_VALUE_NEEDLES for n in uncased)


def may_hold_secret(text: str) -> bool:
    """False only when no SECRET_VALUE_RES pattern can match ``text`` (a prefilter; True: ask the regex)."""
    if not text.isascii():
        return True
    for needle in _CASED:
        if needle in text:
            return True
    lowered = text.lower()
    for needle in _UNCASED:  # noqa: SIM110 (a loop: any() and its generator cost more than the test)
        if needle in lowered:
            return True
    return False


def redact_text(text: str) -> str:
    if not may_hold_secret(text) or SECRET_VALUE_RE.search(text) is None:
        return text
    for rx in SECRET_VALUE_RES:
        text = rx.sub(REDACTED, text)
    return text


def redact(value: Any, _depth: int = 0, *, max_string: int | None = None) -> Any:
    """A copy of ``value`` with secret-named keys and secret-looking strings replaced by ``[REDACTED]``.

    With ``max_string``, longer strings are cut (before scanning) and marked with how much was left out.
    """
    if isinstance(value, str):
        if max_string is not None and len(value) > max_string:
            return redact_text(value[:max_string]) + f"…(+{len(value) - max_string} chars)"
        return redact_text(value)
    if _depth >= MAX_DEPTH:
        return "…"
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            key = str(k)
            if SECRET_KEY_RE.search(key) and v not in (None, "", False):
                out[key] = REDACTED
            else:
                out[key] = redact(v, _depth + 1, max_string=max_string)
        return out
    if isinstance(value, list | tuple):
        return [redact(v, _depth + 1, max_string=max_string) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact_text(str(value))


def _short(value: Any, limit: int) -> str:
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def summarize_arguments(
    arguments: dict[str, Any] | None,
    *,
    value_limit: int = 80,
    total_limit: int = 400,
    already_redacted: bool = False,
) -> str:
    """``{path: "docs/a.md", content: <4821 chars>}`` — redacted, long values shortened."""
    if not arguments:
        return "{}"
    parts = []
    for k, v in (arguments if already_redacted else redact(arguments)).items():
        if isinstance(v, str) and len(v) > value_limit:
            cut = re.search(r"…\(\+(\d+) chars\)$", v) if already_redacted else None
            n = len(v) if cut is None else len(v) - len(cut.group(0)) + int(cut.group(1))
            parts.append(f"{k}: <{n} chars>")
        else:
            parts.append(f"{k}: {_short(v, value_limit)}")
    text = "{" + ", ".join(parts) + "}"
    if len(text) > total_limit:
        text = text[: total_limit - 2] + "…}"
    return text
