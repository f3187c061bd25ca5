"""Enumerations for teams and memberships."""

from django.db import models


class TeamRole(models.TextChoices):
    ADMIN = "admin", "Admin"
    REVIEWER = "reviewer", "Reviewer"
    REQUESTER = "requester", "Requester"
    VIEWER = "viewer", "Viewer"


class MembershipSource(models.TextChoices):
    """Who manages a membership: a team admin in the portal, or the identity provider at each SSO login."""

    LOCAL = "local", "Local"
    SSO = "sso", "Single sign-on"
