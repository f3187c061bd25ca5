"""factory_boy factories for the portal's objects."""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model

from governance import models as gm
from governance.choices import ServerCategory, Transport
from governance.services.teams import team_bootstrap
from portal.choices import TeamRole
from portal.services import membership_set

PASSWORD = "correct-horse-battery-staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.com")
    password = factory.django.Password(PASSWORD)


def make_team(slug: str = "acme", name: str | None = None, **settings):
    """A team with the default environments (development, staging, production)."""
    return team_bootstrap(slug=slug, name=name or slug.title(), **settings)


def make_member(team, role: str = TeamRole.ADMIN, username: str | None = None, is_auditor: bool = False):
    user = UserFactory(username=username or f"{team.slug}-{role}")
    membership_set(team=team, user=user, role=role, is_auditor=is_auditor)
    return user


class ServerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = gm.McpServer

    slug = factory.Sequence(lambda n: f"server_{n}")
    category = ServerCategory.OTHER
    transport = Transport.STDIO
    command = "python"


class ToolFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = gm.McpTool

    server = factory.SubFactory(ServerFactory)
    name = factory.Sequence(lambda n: f"tool_{n}")
    description = "A tool."
    input_schema = factory.LazyFunction(lambda: {"type": "object", "properties": {}})
    read_only_hint = True


class RoleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = gm.AgentRole

    name = factory.Sequence(lambda n: f"role_{n}")
