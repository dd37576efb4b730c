"""Celery app and thin tasks. ``celery -A workers worker`` finds ``workers.app``."""

from workers import tasks  # noqa: F401  (registers the tasks)
from workers.celery_app import app

__all__ = ["app", "tasks"]
