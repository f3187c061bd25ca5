"""Setting up a team's policy: the default environments and trigger settings."""

from __future__ import annotations

from django.db import transaction

from governance.choices import DEFAULT_ENVIRONMENTS, PRODUCTION
from governance.models import Environment, TriggerSettings
from governance.services.environments import environment_create
from portal.models import Team
from portal.services import team_create


@transaction.atomic
def team_bootstrap(*, slug: str, name: str, actor=None, **settings) -> Team:
    """Create a team with development, staging and production, and default trigger settings."""
    team = team_create(slug=slug, name=name, actor=actor, **settings)
    for order, env_name in enumerate(DEFAULT_ENVIRONMENTS):
        if not Environment.objects.filter(team=team, name=env_name).exists():
            environment_create(
                team=team,
                name=env_name,
                order=order,
                is_production=env_name == PRODUCTION,
                requires_authorization=env_name == PRODUCTION,
            )
    TriggerSettings.objects.get_or_create(team=team)
    return team
