"""What the page crawls share (the browser's at 390 px with axe-core, the test client's time-format
check): the demo world every page has something to show in, which links to follow, the pages
behind a form, and the one-time-format rule."""

from __future__ import annotations

import io
import re
import uuid
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlsplit

from django.core.management import call_command
from django.utils import timezone

DEMO_USERS = ("demo-admin", "demo-reviewer", "demo-requester", "demo-viewer")
DEMO_PASSWORD = "demo-password-1"
MAX_PAGES = 70  # per user: every kind of page, not every object
# Not pages: downloads, the API, the Django admin, actions behind a GET that leave the page.
SKIP = ("/logout/", "/api/", "/admin/", "/metrics", "/export/", "/oauth/", "/sso/", "/.well-known/")
# Pages only a form reaches (GET forms): the crawl adds them to what the links reach.
FORM_GETS = ("/search/?q=code", "/search/?q=time", "/audit/activity/?range=30d&by=server")


def demo_world(workspace: Path) -> None:
    """The demo data plus what makes every page show something: sessions with calls, a halt, a
    refused repeat, a ticket, an incident, a gateway, a flag switched off."""
    from django.contrib.auth import get_user_model

    from audit.services import session_open, session_report_state
    from audit.services.ingest import events_ingest
    from governance.models import AgentRole, Flag, McpServer
    from governance.services.access import access_request_create
    from governance.services.clients import client_create
    from governance.services.flags import flag_disable
    from incidents.services import incident_open
    from portal.models import Team
    from tests.audit.conftest import event

    call_command(
        "seed_demo", "--no-discover", workspace=workspace, stdout=io.StringIO(), stderr=io.StringIO()
    )
    team = Team.objects.get(slug="demo")
    dev = team.environments.get(name="development")
    client = client_create(team=team, environment=dev, name="laptop").client
    users = {u.username: u for u in get_user_model().objects.filter(username__in=DEMO_USERS)}
    for halted in (False, True):
        session, _ = session_open(client=client, id=uuid.uuid4(), role="code_agent")
        batch = [event(seq, server="time", tool="get_current_time") for seq in range(1, 7)]
        batch += [
            event(seq, server="shell_execution", tool="run", status="blocked", trigger="unauthorized_server")
            for seq in range(7, 13)
        ]
        events_ingest(session_id=session.pk, client=client, events=batch)
        if halted:
            session_report_state(
                client=client,
                session_id=session.pk,
                state="halted",
                trigger="unauthorized_server",
                reason="shell_execution is not allowed",
            )
        else:
            session_report_state(client=client, session_id=session.pk, state="ended", reason="done")
    now = timezone.now()
    access_request_create(
        team=team,
        requester=users["demo-requester"],
        environment=team.environments.get(name="production"),
        role=AgentRole.objects.get(team=team, name="code_agent"),
        servers=[McpServer.objects.get(team=team, slug="github_api")],
        reason="INC-7 hotfix",
        starts_at=now,
        ends_at=now + timedelta(hours=1),
    )
    incident_open(team=team, title="Token leaked in a PR", severity="sev2", actor=users["demo-admin"])
    from governance.services.bundles import team_bundles_rebuild

    team_bundles_rebuild(team_id=team.pk, reason="crawl")  # a bundle version to show
    flag = Flag.objects.filter(team=team).order_by("pk").first()
    if flag is not None:
        flag_disable(
            flag=flag,
            environment=team.environments.get(name="staging"),
            reason="drill",
            actor=users["demo-admin"],
        )


def shape(url: str) -> str:
    """One page per path shape: ids become ID, a query string counts as one more shape."""
    path = urlsplit(url).path
    return re.sub(r"/[0-9a-f-]{8,}/|/\d+/", "/ID/", path) + ("?" if urlsplit(url).query else "")


def link_target(base: str, page_url: str, href: str) -> str | None:
    """The page a link leads to, if the crawl should visit it (same site, a page, not a download)."""
    target, _ = urldefrag(urljoin(page_url, href))
    parts = urlsplit(target)
    if f"{parts.scheme}://{parts.netloc}" != base or any(s in parts.path for s in SKIP):
        return None
    if "format=" in parts.query or parts.path.endswith((".csv", ".md", ".jsonl", ".log", ".yaml")):
        return None  # downloads (exports, the cost table), not pages
    return target


# --- the one time format ---------------------------------------------------------------------------

# Text that is a time printed raw (not through `{% when %}`): an ISO or "YYYY-MM-DD HH:MM" stamp,
# a clock with milliseconds, a bare HH:MM:SS, or Django's timesince ("3 minutes ago").
RAW_TIME = re.compile(
    r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d"
    r"|\b\d\d:\d\d:\d\d(?:\.\d+)?\b"
    r"|\b\d+[\s\xa0](?:second|minute|hour|day|week|month|year)s?(?:,[\s\xa0]\d+[\s\xa0]\w+)?[\s\xa0]+ago\b"
)
# Where a raw stamp is data, not a time shown to a person: code, payloads, the YAML editor.
NOT_PROSE = {"script", "style", "pre", "code", "textarea", "time"}
TIME_ELEMENT = re.compile(r'<time datetime="(?P<iso>[^"]*)" title="(?P<title>[^"]*)"')
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
TITLE_UTC = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")


class _Prose(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.depth = 0
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in NOT_PROSE:
            self.depth += 1

    def handle_endtag(self, tag):
        if tag in NOT_PROSE and self.depth:
            self.depth -= 1

    def handle_data(self, data):
        if not self.depth:
            self.text.append(data)


def raw_times(html: str) -> list[str]:
    """Every time on the page that is not in the one format: raw stamps in the text, and `<time>`
    elements without a UTC ISO instant or without the UTC value on hover."""
    parser = _Prose()
    parser.feed(html)
    prose = " ".join(parser.text)
    problems = [
        f"raw time {m.group(0)!r} in …{prose[max(0, m.start() - 40) : m.end() + 20]!r}…"
        for m in RAW_TIME.finditer(prose)
    ]
    for m in TIME_ELEMENT.finditer(html):
        if not ISO_UTC.fullmatch(m["iso"]) or not TITLE_UTC.fullmatch(m["title"]):
            problems.append(f"<time> not in the one format: {m.group(0)}")
    return problems
