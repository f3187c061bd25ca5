"""The MCP governance portal: the Django project, teams and accounts, and the web shell."""

from portal.celery import app as celery_app

__all__ = ("celery_app",)
