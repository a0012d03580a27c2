"""Celery tasks: each takes ids or dates, calls one service, and owns its retry policy (STYLE.md)."""
