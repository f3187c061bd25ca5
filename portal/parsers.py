"""The one front door for JSON and YAML bodies: nesting depth and lone surrogates refused before use.

CPython's json and PyYAML's composer recurse once per nesting level, so a body nested
100,000 deep ends in RecursionError (a 500) instead of a 400. Every JSON body the portal
reads goes through `json_loads` (DRF's default parser is `SafeJSONParser`; audit ingestion
and the other non-DRF readers call it directly), and every YAML text through
`yaml_check_depth` before it is composed. A string holding a lone UTF-16 surrogate
(`"\\ud800"`) is refused too: PostgreSQL cannot store it, and no client means one.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from rest_framework import parsers
from rest_framework.exceptions import ParseError

# Far deeper than any real document (policy objects nest < 15 levels; tool arguments rarely 20), far
# shallower than the interpreter's recursion limit.
MAX_DEPTH = 100

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class InputError(ValueError):
    """A body refused before use; `str(exc)` is the sentence shown to the client."""


def json_depth_check(value: Any, max_depth: int = MAX_DEPTH) -> None:
    """Raise InputError when a parsed JSON `value` nests arrays/objects deeper than `max_depth`.

    Walks the containers level by level, without recursion; strings are never scanned."""
    level = [value] if isinstance(value, _CONTAINERS) else []
    depth = 0
    while level:
        depth += 1
        if depth > max_depth:
            raise InputError(f"The JSON document nests deeper than {max_depth} levels.")
        level = [
            child
            for item in level
            for child in (item.values() if isinstance(item, dict) else item)
            if isinstance(child, _CONTAINERS)
        ]


_CONTAINERS = (dict, list)


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def surrogate_check(value: Any) -> None:
    if _has_lone_surrogate(value):
        raise InputError("The document holds a lone UTF-16 surrogate (such as \\ud800), which is not text.")


def json_loads(data: bytes | str, *, max_depth: int = MAX_DEPTH, **kwargs) -> Any:
    """json.loads, then the depth check; lone surrogates refused. Raises ValueError (InputError
    for depth and surrogates, json.JSONDecodeError or UnicodeDecodeError for the rest)."""
    text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
    try:
        # the C parser guards its own recursion (RecursionError, caught here, long before the
        # interpreter's stack is at risk); the limit itself is checked on what it built
        value = json.loads(text, **kwargs)
    except RecursionError:
        raise InputError(f"The JSON document nests deeper than {max_depth} levels.") from None
    if isinstance(value, dict | list) and text.count("[") + text.count("{") > max_depth:
        json_depth_check(value, max_depth)  # else it cannot be deeper (the common case, no walk)
    # A lone surrogate can only come from a \uD8xx..\uDFxx escape (UTF-8 cannot encode one).
    if _SURROGATE_ESCAPE.search(text):
        surrogate_check(value)
    return value


def yaml_check_depth(text: str, max_depth: int = MAX_DEPTH) -> None:
    """Raise InputError when YAML `text` nests deeper than `max_depth`; yaml.YAMLError on bad syntax.

    Reads the event stream (PyYAML's parser is iterative), so nothing recurses per level."""
    if _SURROGATE.search(text):
        raise InputError("The document holds a lone UTF-16 surrogate, which is not text.")
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > max_depth:
                line = event.start_mark.line + 1 if event.start_mark else None
                raise InputError(
                    f"The YAML document nests deeper than {max_depth} levels"
                    + (f" (line {line})." if line else ".")
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        elif isinstance(event, yaml.ScalarEvent) and "\\" in text and _SURROGATE.search(event.value):
            # "\ud800" written as an escape in a double-quoted scalar
            raise InputError(
                "The document holds a lone UTF-16 surrogate (such as \\ud800), which is not text."
            )


class SafeJSONParser(parsers.JSONParser):
    """DRF's JSON parser behind the depth and surrogate checks (the project's default parser)."""

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", "utf-8")
        raw = stream.read() if stream is not None else b""
        try:
            return json_loads(raw.decode(encoding), parse_constant=_reject_constant)
        except InputError as exc:
            raise ParseError(str(exc)) from None
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")
