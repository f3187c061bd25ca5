"""Template helpers every app's pages share: the change-history lines and the one time format."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from django import template
from django.utils import timezone
from django.utils.html import conditional_escape, format_html
from django.utils.safestring import mark_safe

register = template.Library()

# A recorded moment: "2026-12-01T16:20:29.684009+00:00" or "2026-12-01 16:20:29Z" (dates alone stay as they are).
ISO_MOMENT = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d")

# Keys whose value is a list of names (a discovery report, a YAML import), never an [old, new] pair.
LIST_KEYS = frozenset({"added", "removed", "updated", "changed", "unchanged", "dismissed"})


def _text(value: Any) -> str:
    """A recorded value as the page shows it; a moment (an ISO string in the JSON) in the one time format."""
    if value is None or value == "":
        return "—"
    if isinstance(value, list | tuple):
        return mark_safe(", ".join(conditional_escape(_text(v)) for v in value)) or "—"  # noqa: S308 - parts escaped
    if isinstance(value, datetime) or (isinstance(value, str) and ISO_MOMENT.match(value)):
        shown = when(value)
        if shown != "—":
            return shown
    return str(value)


def _items(value: Any) -> list[str]:
    if value is None:
        return []
    return [_text(v) for v in value] if isinstance(value, list | tuple) else [_text(value)]


def change_line(field: str, value: Any) -> dict[str, Any]:
    """One change of a ChangeRecord as the page shows it.

    kind "list": names (`added: a, b`); "diff": a list field's old and new values, shown as what
    was added and removed; "pair": `old → new`; "value": anything else, shown as it is.
    """
    if field in LIST_KEYS and isinstance(value, list):
        return {"field": field, "kind": "list", "items": [_text(v) for v in value]}
    if isinstance(value, list) and len(value) == 2:
        old, new = value
        if isinstance(old, list) or isinstance(new, list):  # a list field: what it gained and lost
            before, after = _items(old), _items(new)
            return {
                "field": field,
                "kind": "diff",
                "added": [v for v in after if v not in before],
                "removed": [v for v in before if v not in after],
            }
        return {"field": field, "kind": "pair", "old": _text(old), "new": _text(new)}
    return {"field": field, "kind": "value", "value": _text(value)}


@register.filter
def change_lines(changes: Any) -> list[dict[str, Any]]:
    if not isinstance(changes, dict):
        return []
    return [change_line(str(field), value) for field, value in changes.items()]


def _aware(value: Any) -> datetime | None:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    if timezone.is_naive(value):
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


STYLES = {"datetime": "%Y-%m-%d %H:%M:%S", "time": "%H:%M:%S", "date": "%Y-%m-%d"}


@register.simple_tag
def when(value: Any, style: str = "datetime") -> str:
    """The one time format: `<time>` in UTC (ISO in `datetime`, "UTC" on hover); portal.js shows
    it in the viewer's time zone. `style`: "datetime" (YYYY-MM-DD HH:MM:SS), "time" (HH:MM:SS),
    "date" (YYYY-MM-DD).
    """
    moment = _aware(value)
    if moment is None:
        return "—"
    shown = moment.strftime(STYLES.get(style, STYLES["datetime"]))
    return format_html(
        '<time datetime="{}" title="{} UTC" data-style="{}">{} UTC</time>',
        moment.isoformat(timespec="seconds").replace("+00:00", "Z"),
        moment.strftime("%Y-%m-%d %H:%M:%S"),
        style,
        shown,
    )


@register.filter
def get_item(mapping: Any, key: Any) -> Any:
    """`mapping|get_item:key` (a dict looked up by a variable)."""
    return mapping.get(key, "") if isinstance(mapping, dict) else ""
