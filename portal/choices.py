"""Enumerations for teams and memberships."""

from django.db import models


class TeamRole(models.TextChoices):
    ADMIN = "admin", "Admin"
    REVIEWER = "reviewer", "Reviewer"
    REQUESTER = "requester", "Requester"
    VIEWER = "viewer", "Viewer"
