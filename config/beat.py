"""CELERY_BEAT_SCHEDULE: the reviewed source of truth for periodic jobs (django-celery-beat mirrors it
into the admin). Any day boundary is TIME_ZONE's (CELERY_TIMEZONE)."""

from datetime import timedelta

from celery.schedules import crontab

# The jobs that run through the day, whatever the hour of the nightly ones.
THROUGH_THE_DAY = {
    # Every 5 minutes: stats read hourly rollups for closed hours, so each hour is built soon after
    # it settles (10 minutes past its end) and hours that late records landed in are rebuilt within
    # minutes.
    "build_usage_rollups": {
        "task": "llmlog.tasks.build_usage_rollups",
        "schedule": crontab(minute="*/5"),
    },
    # Every minute: post pending usage to the ledger (ingest also asks for a run a few seconds after
    # new records). Expires before the next tick, so a worker that was down finds one run, not a
    # pile of them.
    "account_pending_usage": {
        "task": "llmlog.tasks.account_pending_usage",
        "schedule": 60.0,
        "options": {"expires": 55},
    },
    # Every 15 minutes: retry failed postings whose backoff has passed (2^attempts minutes, at most
    # 6 h).
    "retry_failed_accounting": {
        "task": "llmlog.tasks.retry_failed_accounting",
        "schedule": crontab(minute="*/15"),
        "options": {"expires": 14 * 60},
    },
    # Hourly on the 1st and 2nd of the month: close the month that has ended in each org's time zone
    # into its statement (llmlog.statements). Every zone's month has ended by the 2nd; a closed
    # month is a no-op.
    "close_ended_periods": {
        "task": "llmlog.tasks.close_ended_periods",
        "schedule": crontab(day_of_month="1,2", minute=15),
        "options": {"expires": 50 * 60},
    },
    # Every minute: budgets whose spent crossed a threshold get their alert (one per budget, period
    # and threshold), webhooks due for a retry are sent again, expired holds are marked. Expires
    # before the next tick: a backlog runs it once.
    "send_budget_alerts": {
        "task": "accounting.tasks.send_budget_alerts",
        "schedule": 60.0,
        "options": {"expires": 55},
    },
}


def beat_schedule(*, backup_hour: int, clickhouse: bool) -> dict[str, dict]:
    schedule = {**_nightly(backup_hour), **THROUGH_THE_DAY}
    if clickhouse:
        # Every 5 minutes, with CLICKHOUSE_URL set: history moved since the last sync goes to ClickHouse,
        # and its copy of the hourly rollups is made equal to PostgreSQL's (the nightly move syncs at its
        # end too; this catches up after ClickHouse was away).
        schedule["clickhouse_sync"] = {
            "task": "llmlog.tasks.clickhouse_sync",
            "schedule": timedelta(minutes=5),
        }
    return schedule


def _nightly(backup_hour: int) -> dict[str, dict]:
    return {
        # In the quiet hour: yesterday's accounted records leave the hot table, so ingest and the day's
        # queries work on a small llmusage.
        "backup_accounted_llmusage": {
            "task": "llmlog.tasks.backup_accounted_llmusage",
            "schedule": crontab(hour=backup_hour, minute=0),
        },
        # Half an hour after the backup starts (it touches other rows, so an overlap is harmless):
        # history older than LLMLOG_HISTORY_RETENTION_DAYS goes; while that is unset the run does nothing.
        "purge_history": {
            "task": "llmlog.tasks.purge_history",
            "schedule": crontab(hour=backup_hour, minute=30),
        },
    }
