"""The Django project wiring: settings, URLs, ASGI/WSGI entry points, the Celery app, the dashboard."""

from config.celery import app as celery_app

__all__ = ("celery_app",)
