"""What every periodic job of both apps does when the database is briefly away."""

from django.db import OperationalError


def retried_when_database_away(backoff_seconds: int) -> dict:
    """Celery task options: a run that meets an OperationalError (the database restarting, a failover, a
    dropped connection) is retried up to three times, backoff_seconds later and doubling each time (with
    Celery's jitter); any other error fails the run, and the JobRun row shows it to the operator."""
    return {"autoretry_for": (OperationalError,), "retry_backoff": backoff_seconds, "max_retries": 3}
