"""A team's outgoing webhook: one Slack-compatible JSON message (`{"text": …}`, which Slack,
Mattermost, Rocket.Chat and Teams workflows accept) for halts, calls waiting for approval, access
approvals and incidents.

`webhook_notify` runs inside the event's transaction and enqueues the delivery on commit;
the Celery task (`governance.tasks.deliver_team_webhook`) retries a failed delivery with backoff.
A team admin chooses the URL, so the delivery goes through the discovery SSRF guard (netguard):
no loopback, private or metadata addresses unless the operator allows the network
(`MCPGOV_DISCOVERY_ALLOWED_NETWORKS`), the resolved address pinned, no redirects.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import httpx2
from django.conf import settings
from django.db import transaction

from governance.services import netguard
from portal.choices import ChangeEventType
from portal.models import Team

logger = logging.getLogger(__name__)

TIMEOUT_SECONDS = 10.0


class WebhookFailed(Exception):
    """The receiver did not take the message (connection error, 429 or 5xx): worth retrying."""


class WebhookRefused(Exception):
    """Never worth retrying: the URL is refused by the guard, or the receiver answered 4xx."""


def slack_escape(text: str) -> str:
    """Slack's three control characters escaped: a gateway-reported name or reason (an agent's
    words) cannot make a link or a mention (`<https://evil|Approve here>`, `<!channel>`)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def webhook_payload(*, team: Team, text: str, url: str = "") -> dict[str, Any]:
    """The message: the team's name, what happened and, when the portal's address is known, a link."""
    base = getattr(settings, "MCPGOV_PORTAL_URL", "").rstrip("/")
    link = f" <{base}{url}|Open in the portal>" if base and url else ""
    return {"text": slack_escape(f"[{team.name}] {text}") + link}


def webhook_notify(*, team: Team, kind: str, text: str, url: str = "") -> bool:
    """Send the team's webhook once the current transaction commits; False when it has none."""
    if not team.webhook_url:
        return False
    payload = webhook_payload(team=team, text=text, url=url)

    def enqueue() -> None:
        from governance.tasks import deliver_team_webhook

        try:
            queue = getattr(settings, "MCPGOV_WEBHOOK_QUEUE", "") or None  # None: the default queue
            deliver_team_webhook.apply_async(args=(team.pk, kind, payload), queue=queue)
        except Exception:  # a broker outage must not fail the committed write
            logger.exception("Could not enqueue the %s webhook of team %s", kind, team.slug)

    transaction.on_commit(enqueue)
    return True


async def _post(url: str, payload: dict[str, Any]) -> int:
    try:
        target = netguard.check_url(url)
    except netguard.TargetRefused as exc:
        raise WebhookRefused(
            str(exc).replace(
                "Discover this server from the enforcement side (mcpgov discover), or ask", "Ask"
            )
        ) from exc
    async with netguard.pinned_client(target, timeout=TIMEOUT_SECONDS) as client:
        try:
            response = await client.post(url, json=payload)
        except netguard.TargetRefused as exc:
            raise WebhookRefused(str(exc)) from exc
        except httpx2.HTTPError as exc:
            raise WebhookFailed(f"{type(exc).__name__}: {exc}") from exc
    if response.status_code == 429 or response.status_code >= 500:
        raise WebhookFailed(f"the receiver answered {response.status_code}")
    if response.status_code >= 300:
        raise WebhookRefused(f"the receiver answered {response.status_code}: {response.text[:200]}")
    return response.status_code


def webhook_deliver(*, team_id: int, payload: dict[str, Any]) -> int | None:
    """POST `payload` to the team's current webhook URL; its HTTP status, or None when the team
    has none any more. Raises WebhookFailed (retry) or WebhookRefused (give up)."""
    team = Team.objects.filter(pk=team_id).first()
    if team is None or not team.webhook_url:
        return None
    return anyio.run(_post, team.webhook_url, payload)


def webhook_shown(url: str) -> str:
    """The URL as pages show it: scheme and host only (an incoming-webhook URL's path is its secret)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}/…" if url else ""


@transaction.atomic
def team_webhook_set(*, team: Team, actor, webhook_url: str = "", clear: bool = False) -> Team:
    """A team admin sets or clears the team's webhook. The URL must pass the SSRF guard now (it is
    checked again at every delivery); the history records that it changed, never the URL."""
    from django.core.exceptions import ValidationError

    from portal.permissions import MANAGE_MEMBERS, require_team_perm
    from portal.services import change_record

    require_team_perm(actor, MANAGE_MEMBERS, team)
    webhook_url = (webhook_url or "").strip()
    if clear:
        new = ""
    elif webhook_url:
        try:
            netguard.check_url(webhook_url)
        except netguard.TargetRefused as exc:
            raise ValidationError({"webhook_url": str(exc).split(" Discover this server")[0]}) from exc
        new = webhook_url
    else:
        return team  # nothing given: keep the current URL
    if new == team.webhook_url:
        return team
    was = webhook_shown(team.webhook_url) or "(none)"
    team.webhook_url = new
    team.full_clean(validate_unique=False, validate_constraints=False)
    team.save(update_fields=["webhook_url"])
    change_record(
        team=team,
        actor=actor,
        event_type=ChangeEventType.TEAM_SETTINGS_UPDATED,
        obj=team,
        summary="Team webhook " + ("removed" if not new else "set"),
        changes={"webhook": [was, webhook_shown(new) or "(none)"]},
    )
    return team
