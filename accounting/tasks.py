"""Celery tasks of the ledger side: each calls one service and owns its retry policy (STYLE.md)."""

from celery import shared_task

from accounting import alerts
from core.tasks import retried_when_database_away


# Budget alerts every minute (beat). A rerun is harmless: an alert exists once per budget, period and
# threshold (a unique constraint), and a delivery in flight is row-locked. The run's deliveries are
# bounded (alerts.DELIVERIES_PER_RUN) so it fits the minute; `expires` in the beat entry drops a backlog.
@shared_task(
    acks_late=True,
    soft_time_limit=50,
    time_limit=60,
    **retried_when_database_away(5),
)
def send_budget_alerts() -> dict:
    return alerts.send_budget_alerts()
