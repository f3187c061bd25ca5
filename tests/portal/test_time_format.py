"""One time format on every page: a crawl over every page (and the pages behind a form) as each
demo user finds no time printed raw, only `<time datetime="…Z" title="… UTC">` (portal_tags
`when`), which the browser shows in the viewer's time zone."""

from __future__ import annotations

from collections import deque

import pytest
from django.test import Client
from django.urls import reverse

from portal.templatetags.portal_tags import when
from tests.portal.crawl import DEMO_USERS, FORM_GETS, MAX_PAGES, demo_world, link_target, raw_times, shape

pytestmark = pytest.mark.django_db
BASE = "http://testserver"
HREF = r'href="([^"]+)"'


def crawl(client: Client, start: list[str]):
    """(url, html) of the pages reachable by links from `start`, one per path shape."""
    import html
    import re

    seen, queue, n = set(), deque(f"{BASE}{u}" for u in start), 0
    while queue and n < 2 * MAX_PAGES:  # the test client is quick: more of the site than the browser
        url = queue.popleft()
        if shape(url) in seen and url.split(BASE, 1)[1] not in start:
            continue
        seen.add(shape(url))
        response = client.get(url.split(BASE, 1)[1])
        if response.status_code >= 400 or "text/html" not in response.get("Content-Type", ""):
            continue
        n += 1
        text = response.content.decode()
        yield url, text
        for href in re.findall(HREF, text):
            target = link_target(BASE, url, html.unescape(href))
            if target:
                queue.append(target)


def test_the_when_tag_writes_utc_with_utc_on_hover_and_flags_what_is_not():
    from datetime import UTC, datetime, timedelta, timezone

    moment = datetime(2026, 12, 1, 17, 5, 9, tzinfo=timezone(timedelta(hours=1)))
    tag = str(when(moment))
    assert tag == (
        '<time datetime="2026-12-01T16:05:09Z" title="2026-12-01 16:05:09 UTC" data-style="datetime">'
        "2026-12-01 16:05:09 UTC</time>"
    )
    assert raw_times(f"<p>at {tag}</p>") == []
    assert str(when(moment, "date")).endswith(">2026-12-01 UTC</time>")
    assert when(None) == "—"
    # What the check catches: each way a template printed times before.
    for raw in (
        "2026-12-01T16:05:09+00:00",
        "2026-12-01 16:05",
        "16:05:09.123",
        "3\xa0minutes ago",
        "16:05:09",
    ):
        assert raw_times(f"<td>{raw}</td>"), raw
    assert raw_times(f"<pre>{datetime.now(UTC).isoformat()}</pre>") == []  # a payload is data
    assert raw_times('<time datetime="2026-12-01 16:05" title="x">x</time>')


def test_every_page_as_each_demo_user_prints_times_only_in_the_one_format(tmp_path):
    demo_world(tmp_path / "workspace")
    problems, counts = [], {}
    for username in DEMO_USERS:
        from django.contrib.auth import get_user_model

        client = Client()
        client.force_login(get_user_model().objects.get(username=username))
        n, shapes = 0, set()
        for url, text in crawl(client, ["/", *FORM_GETS]):
            n += 1
            shapes.add(shape(url))
            problems += [f"{username} {url}: {p}" for p in raw_times(text)]
        counts[username] = n
        if username == "demo-admin":  # the pages this check was written for are among them
            assert {
                "/governance/access/",
                "/governance/access/ID/",
                "/incidents/",
                "/incidents/ID/",
                "/governance/flags/",
                "/governance/bundles/",
                "/governance/bundles/ID/",
                "/audit/sessions/ID/",
                "/search/?",
            } <= shapes, sorted(shapes)
        # Pages behind a POST: the one-time client token page, the import preview.
        if username == "demo-admin":
            from governance.models import AgentRole, Environment

            dev = Environment.objects.get(team__slug="demo", name="development")
            role = AgentRole.objects.get(team__slug="demo", name="code_agent")
            r = client.post(
                reverse("governance:client-create"),
                {"name": "crawl-gw", "environment": dev.pk, "roles": [role.pk], "expires_days": 30},
            )
            assert r.status_code == 200 and b"mcp.json" in r.content, r.content[:400]
            problems += [f"{username} client created: {p}" for p in raw_times(r.content.decode())]
            yaml = client.get(reverse("governance:policy-export")).content.decode()
            r = client.post(reverse("governance:policy-import"), {"text": yaml, "action": "preview"})
            assert r.status_code == 200 and b'id="import-preview"' in r.content
            problems += [f"{username} import preview: {p}" for p in raw_times(r.content.decode())]
    assert all(n >= 20 for n in counts.values()), counts
    problems = list(dict.fromkeys(problems))  # a shared fragment repeats on every page
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:60])
